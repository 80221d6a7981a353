"""The part of ``make demo`` that both separation papers report the same way: the smoke
training curves, the museval scores of the trained model on the bundled track, which runtime
each separation ran on and how far the separations differ from the nnabla reference, with the
commands that produced them."""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from common.mss.audio import load_audio
from common.report import markdown_table, plot_curves
from common.runtime.backends import DISPLAY_NAMES
from common.train.monitor import read_series

__all__ = ["run_separation", "backend_used", "report_smoke_pipeline"]

# what the scripts print on stderr when --backend auto decides (common.runtime.backends)
_AUTO_LINE = re.compile(r"^backend: (\S+) \(auto\)$", re.MULTILINE)


def backend_used(args, stderr):
    """The runtime a ``separate.py`` / ``eval.py`` run used: the one ``--backend auto``
    announced on its ``stderr`` (``"openvino (auto)"``), else the one ``--backend`` named in
    ``args`` (an explicit choice runs exactly that runtime or fails), else ``None``."""
    found = _AUTO_LINE.findall(stderr)
    if found:
        return f"{found[-1]} (auto)"
    args = [str(a) for a in args]
    for flag, value in zip(args, args[1:]):
        if flag == "--backend":
            return DISPLAY_NAMES.get(value, value)
    return None


def run_separation(folder, script, *args):
    """Run ``python folder/script args...`` as ``common.report.run_entry_script`` does
    (echoed, its output shown) and return ``(command, backend)``: the command as a user
    would type it and the runtime the script used (:func:`backend_used`)."""
    from common.paths import REPO_ROOT

    cmd = [sys.executable, str(Path(REPO_ROOT) / folder / script), *map(str, args)]
    print("$", " ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
    print(proc.stderr, end="", file=sys.stderr, flush=True)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd, stderr=proc.stderr)
    return shlex.join(["python", f"{folder}/{script}", *map(str, args)]), \
        backend_used(args, proc.stderr)


def report_smoke_pipeline(report, *, title, intro, out, run_dir, loss_label, track_stem,
                          targets, commands, separations):
    """Add the section of one paper to ``report``: ``intro`` (markdown), the training and
    validation loss of the run in ``run_dir`` (y axis ``loss_label``), ``out/eval``'s scores
    and plot with the runtime ``eval.py`` recorded, the runtime of every separation and the
    largest difference per target of each from the first (the reference), and the
    ``commands``. ``separations``: ``[(folder name in out, runtime used)]``; each folder holds
    ``<track_stem>/<target>.wav``."""
    out = Path(out)
    curves = {name: read_series(run_dir, name) for name in ("training loss", "validation loss")}
    plot = plot_curves(curves, out / "loss.png", title=f"{title}: smoke training",
                       xlabel="epoch", ylabel=loss_label)
    valid = curves["validation loss"][1]
    report.add(f"## {title}\n\n{intro}\n\n"
               f"Validation loss: {valid[0]:.3f} (epoch 0) -> {valid[-1]:.3f} "
               f"(epoch {len(valid) - 1}).")
    report.image(plot, f"{title}: smoke training loss")
    record = json.loads((out / "eval" / "evaluation.json").read_text())
    report.add(f"museval scores of the trained smoke model on the bundled track (median over "
               f"1 s frames; separated on {DISPLAY_NAMES.get(record['backend'], '?')}, the "
               "runtime eval.py recorded):\n\n" + (out / "eval" / "scores_test.md").read_text())
    report.image(out / "eval" / "sdr_test.png", "SDR per target")
    (ref_folder, ref_backend), others = separations[0], separations[1:]
    header = ["target"] + [f"{folder}: {backend} vs {ref_backend}" for folder, backend in others]
    rows = []
    for target in targets:
        ref, _ = load_audio(out / ref_folder / track_stem / f"{target}.wav")
        row = [target]
        for folder, _ in others:
            est, _ = load_audio(out / folder / track_stem / f"{target}.wav")
            row.append(f"{np.abs(est - ref).max():.2e}")
        rows.append(row)
    report.add("Runtime of each separation (as the script chose it):\n\n"
               + markdown_table(["output folder", "runtime"],
                                [[f, b or "unknown"] for f, b in separations])
               + "\n\nMax abs difference of the separated audio from the reference "
               f"({ref_folder}), per target:\n\n" + markdown_table(header, rows))
    report.add("Commands:\n\n```\n" + "\n".join(commands) + "\n```")
