"""Reports: markdown with PNG plots (the `make demo` report, training summaries) and
self-contained HTML pages (:class:`HtmlReport`: images and audio embedded as data URIs, so the
one file can be mailed or opened offline)."""
import base64
import html
import io
import os
import subprocess
from pathlib import Path

from common.errors import UserError
from common.fileio import atomic_write


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


_HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.5em; }
table { border-collapse: collapse; } td, th { padding: .2em .6em; border-bottom: 1px solid #ddd; }
th { text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figcaption { font-size: .9em; color: #555; } img { max-width: 100%; }
"""


class HtmlReport:
    """A self-contained HTML page built from sections; :meth:`write` stores it atomically.

    Images (PNG bytes, a PNG file or a matplotlib figure) and audio (float samples, encoded to
    MP3 by ffmpeg) are embedded as data URIs: the page needs no other file."""

    def __init__(self, title):
        self.title = title
        self.parts = [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text):
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text):
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def table(self, headers, rows, float_format="{:.3f}"):
        def cell(value):
            if isinstance(value, float):
                return f'<td class="num">{float_format.format(value)}</td>'
            return f"<td>{html.escape(str(value))}</td>"
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
        body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def image(self, image, caption=""):
        """``image``: PNG bytes, the path of a PNG file, or a matplotlib figure."""
        if hasattr(image, "savefig"):
            buffer = io.BytesIO()
            image.savefig(buffer, format="png")
            data = buffer.getvalue()
        elif isinstance(image, (bytes, bytearray)):
            data = bytes(image)
        else:
            data = Path(image).read_bytes()
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        self._figure(f'<img src="{uri}" alt="{html.escape(caption)}">', caption)

    def audio(self, samples, sample_rate, caption="", bitrate="128k"):
        """An audio player for ``samples`` (float, ``(samples,)`` or ``(samples, channels)``)."""
        data = encode_mp3(samples, sample_rate, bitrate)
        uri = "data:audio/mpeg;base64," + base64.b64encode(data).decode("ascii")
        self._figure(f'<audio controls preload="metadata" src="{uri}"></audio>', caption)

    def _figure(self, element, caption):
        text = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f"<figure>{element}{text}</figure>")

    def render(self):
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_HTML_STYLE}</style></head>"
                "<body>\n" + "\n".join(self.parts) + "\n</body></html>\n")

    def write(self, path):
        with atomic_write(path, "w") as f:
            f.write(self.render())
        return Path(path)


def encode_mp3(samples, sample_rate, bitrate="128k"):
    """MP3 bytes of float ``samples`` (clipped to [-1, 1]) through ffmpeg."""
    import numpy as np

    audio = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "f32le", "-ar", str(int(sample_rate)),
           "-ac", str(channels), "-i", "pipe:0", "-b:a", bitrate, "-f", "mp3", "pipe:1"]
    try:
        proc = subprocess.run(cmd, input=audio.tobytes(), capture_output=True, check=False)
    except FileNotFoundError:
        raise UserError("ffmpeg is needed to put audio into a report; install it "
                        "(tools/setup.sh does)") from None
    if proc.returncode != 0:
        raise UserError(f"ffmpeg could not encode the report's audio: "
                        f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
    return proc.stdout


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
