"""The X-UMX part of ``make demo``: train the smoke configuration on the bundled MUSDB18
track, separate the track with the trained weights on both backends, score it with museval,
and add the results to the demo report. Runs the real entry scripts as a user would."""
import shutil
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from common.data.bundled import bundled_musdb_root
from common.report import markdown_table, plot_curves, run_entry_script
from common.train.monitor import read_series

X_UMX = Path(__file__).resolve().parents[1]
TITLE = "X-UMX (CrossNet-Open-Unmix)"


def _run(script, *args):
    return run_entry_script("x-umx", script, *args)


def run(report, out_dir):
    out = Path(out_dir) / "x-umx"
    shutil.rmtree(out, ignore_errors=True)
    root = bundled_musdb_root()
    track = next((root / "test").glob("*.stem.mp4"))
    start = time.time()
    commands = [_run("train.py", "--output", out / "train")]
    weights = out / "train" / "xumx.h5"
    for backend in ("nnabla", "onnx"):
        commands.append(_run("separate.py", track, "--model", weights, "--backend", backend,
                             "--out-dir", out / f"separated-{backend}"))
    commands.append(_run("eval.py", "--model", weights, "--root", root, "--out-dir",
                         out / "eval", "--backend", "onnx"))
    elapsed = time.time() - start

    curves = {name: read_series(out / "train", name)
              for name in ("training loss", "validation loss")}
    plot = plot_curves(curves, out / "loss.png", title="X-UMX smoke training", xlabel="epoch",
                       ylabel="loss (10 x SDR-comb. + MSE-comb.)")
    stem = track.name[:-len(".stem.mp4")]
    diffs = []
    for target in ("bass", "drums", "vocals", "other"):
        a, _ = sf.read(str(out / "separated-nnabla" / stem / f"{target}.wav"))
        b, _ = sf.read(str(out / "separated-onnx" / stem / f"{target}.wav"))
        diffs.append([target, f"{np.abs(a - b).max():.2e}"])
    valid = curves["validation loss"][1]
    report.add(f"## {TITLE}\n\n"
               f"Smoke pipeline on the bundled 6 s MUSDB18 track ({elapsed:.0f} s on this machine). "
               "The network is tiny (hidden size 16, one LSTM layer, n_fft 1024) and trains a few "
               "iterations on the same track it is scored on, so the scores show that training, "
               "separation and museval scoring work end to end, not what X-UMX achieves "
               "(see x-umx/README.md for the published numbers).\n\n"
               f"Validation loss: {valid[0]:.3f} (epoch 0) -> {valid[-1]:.3f} "
               f"(epoch {len(valid) - 1}).")
    report.image(plot, "X-UMX smoke training loss")
    report.add("museval scores of the trained smoke model on the bundled track "
               "(median over 1 s frames):\n\n" + (out / "eval" / "scores_test.md").read_text())
    report.image(out / "eval" / "sdr_test.png", "SDR per target")
    report.add("Max abs difference between the nnabla and the ONNX Runtime backend, per "
               "separated target:\n\n" + markdown_table(["target", "max abs diff"], diffs))
    report.add("Commands:\n\n```\n" + "\n".join(commands) + "\n```")
