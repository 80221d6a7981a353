"""The D3Net music-source-separation part of ``make demo``: train the smoke configuration (a
tiny network, vocals) on the bundled MUSDB18 track, separate the track with the trained weights
(nnabla backend, and ONNX Runtime when ``d3net_mss.onnx_backend`` exists), score it with
museval, and add the results to the demo report. Runs the real entry scripts as a user would."""
import importlib.util
import shutil
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from common.data.bundled import bundled_musdb_root
from common.report import markdown_table, plot_curves, run_entry_script
from common.train.monitor import read_series

MSS = Path(__file__).resolve().parents[1]
TITLE = "D3Net music source separation"
TARGET = "vocals"  # the smoke configuration's target


def _run(script, *args):
    return run_entry_script("d3net/music-source-separation", script, *args)


def _backends():
    have_onnx = importlib.util.find_spec("d3net_mss.onnx_backend") is not None
    return ("nnabla", "onnx") if have_onnx else ("nnabla",)


def run(report, out_dir):
    out = Path(out_dir) / "d3net-mss"
    shutil.rmtree(out, ignore_errors=True)
    wav_root = bundled_musdb_root(is_wav=True)
    track = next((bundled_musdb_root() / "test").glob("*.stem.mp4"))
    backends = _backends()
    start = time.time()
    commands = [_run("train.py", "--output", out / "train")]
    model = out / "train"  # the run folder holds vocals.h5 + vocals.yaml (tiny network)
    for backend in backends:
        commands.append(_run("separate.py", track, "--model", model, "--residual",
                             "--backend", backend, "--out-dir", out / f"separated-{backend}"))
    commands.append(_run("eval.py", "--model", model, "--residual", "--root", wav_root,
                         "--is-wav", "--out-dir", out / "eval"))
    elapsed = time.time() - start

    run_dir = out / "train" / TARGET
    curves = {name: read_series(run_dir, name) for name in ("training loss", "validation loss")}
    plot = plot_curves(curves, out / "loss.png", title="D3Net (tiny) smoke training, vocals",
                       xlabel="epoch", ylabel="spectrogram MSE")
    valid = curves["validation loss"][1]
    report.add(f"## {TITLE}\n\n"
               f"Smoke pipeline on the bundled 6 s MUSDB18 track ({elapsed:.0f} s on this "
               "machine). The network is tiny (configs/smoke_network.yaml: n_fft 1024, growth "
               "rates 2-4, one down-sampling level, 64-frame patches), is trained for the vocals "
               "only, for a few iterations, on the same track it is scored on; the scores show "
               "that training, separation and museval scoring work end to end, not what D3Net "
               "achieves (see d3net/README.md for the published numbers). The second scored "
               "target is the residual (`--residual`: mixture minus the vocals estimate).\n\n"
               f"Validation loss: {valid[0]:.3f} (epoch 0) -> {valid[-1]:.3f} "
               f"(epoch {len(valid) - 1}).")
    report.image(plot, "D3Net smoke training loss")
    report.add("museval scores of the trained smoke model on the bundled track "
               "(median over 1 s frames):\n\n" + (out / "eval" / "scores_test.md").read_text())
    report.image(out / "eval" / "sdr_test.png", "SDR per target")
    stem = track.name[:-len(".stem.mp4")]
    if len(backends) > 1:
        diffs = []
        for target in (TARGET, "accompaniment"):
            a, _ = sf.read(str(out / "separated-nnabla" / stem / f"{target}.wav"))
            b, _ = sf.read(str(out / "separated-onnx" / stem / f"{target}.wav"))
            diffs.append([target, f"{np.abs(a - b).max():.2e}"])
        report.add("Max abs difference between the nnabla and the ONNX Runtime backend, per "
                   "separated target:\n\n" + markdown_table(["target", "max abs diff"], diffs))
    else:
        report.add("ONNX Runtime backend: not available yet (no `d3net_mss/onnx_backend.py`); "
                   "separated with nnabla only.")
    report.add("Commands:\n\n```\n" + "\n".join(commands) + "\n```")
