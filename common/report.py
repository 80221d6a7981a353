"""Small markdown reports with PNG plots (the `make demo` report, training summaries)."""
import os
from pathlib import Path


def markdown_table(headers, rows, float_format="{:.3f}"):
    """Render ``rows`` (sequences) under ``headers`` as a GitHub markdown table."""
    def cell(value):
        if isinstance(value, float):
            return float_format.format(value)
        return str(value)

    lines = ["| " + " | ".join(map(str, headers)) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_curves(curves, path, title="", xlabel="iteration", ylabel="", logx=False):
    """Plot ``{label: (xs, ys)}`` into a PNG at ``path`` (headless matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


class Report:
    """Collects markdown sections and writes them to ``<out_dir>/README.md``.

    Image paths are stored relative to ``out_dir`` so the report can be moved.
    """

    def __init__(self, out_dir, title):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.parts = [f"# {title}\n"]

    def add(self, markdown):
        self.parts.append(markdown.rstrip() + "\n")

    def image(self, path, caption=""):
        rel = os.path.relpath(path, self.out_dir)
        self.parts.append(f"![{caption}]({rel})\n")

    def write(self, name="README.md"):
        path = self.out_dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(self.parts))
        os.replace(tmp, path)
        return path


def run_entry_script(folder, script, *args, save_output=None):
    """Run ``python folder/script args...`` (echoed), as a demo does for a user; return the
    command as a user would type it from the repository root (``folder`` relative to it).
    ``save_output``: also write the script's standard output to that file."""
    import shlex
    import subprocess
    import sys

    from common.paths import REPO_ROOT

    path = Path(REPO_ROOT) / folder / script
    cmd = [sys.executable, str(path), *map(str, args)]
    print("$", " ".join(cmd[1:]), flush=True)
    if save_output is None:
        subprocess.run(cmd, check=True)
    else:
        proc = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
        print(proc.stdout, end="", flush=True)
        Path(save_output).parent.mkdir(parents=True, exist_ok=True)
        Path(save_output).write_text(proc.stdout)
    return shlex.join(["python", f"{folder}/{script}", *map(str, args)])
