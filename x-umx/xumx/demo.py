"""The X-UMX part of ``make demo``: train the smoke configuration on the bundled MUSDB18
track, separate the track with the trained weights on the nnabla reference and with
separate.py's default ``--backend auto``, score it with museval, and add the results (with the
runtime each script used) to the demo report. Runs the real entry scripts as a user would."""
import shutil
import time
from pathlib import Path

from common.data.bundled import bundled_musdb_root
from common.mss.demo import report_smoke_pipeline, run_separation
from common.report import run_entry_script

from .model import SOURCES

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
    separations = []
    for name, backend_args in (("separated-nnabla", ("--backend", "nnabla")),
                               ("separated-default", ())):
        command, used = run_separation("x-umx", "separate.py", track, "--model", weights,
                                       *backend_args, "--out-dir", out / name)
        commands.append(command)
        separations.append((name, used))
    commands.append(_run("eval.py", "--model", weights, "--root", root, "--out-dir",
                         out / "eval", "--backend", "onnx"))
    elapsed = time.time() - start

    report_smoke_pipeline(
        report, title=TITLE, out=out, run_dir=out / "train", commands=commands,
        loss_label="loss (10 x SDR-comb. + MSE-comb.)",
        track_stem=track.name[:-len(".stem.mp4")], targets=SOURCES, separations=separations,
        intro=f"Smoke pipeline on the bundled 6 s MUSDB18 track ({elapsed:.0f} s on this "
              "machine). The network is tiny (hidden size 16, one LSTM layer, n_fft 1024) and "
              "trains a few iterations on the same track it is scored on, so the scores show "
              "that training, separation and museval scoring work end to end, not what X-UMX "
              "achieves (see x-umx/README.md for the published numbers).")
