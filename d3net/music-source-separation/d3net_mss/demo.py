"""The D3Net music-source-separation part of ``make demo``: train the smoke configuration (a
tiny network, vocals) on the bundled MUSDB18 track, separate the track with the trained weights
on the nnabla reference and with separate.py's default ``--backend auto``, score it with
museval, and add the results (with the runtime each script used) to the demo report. Runs the
real entry scripts as a user would."""
import shutil
import time
from pathlib import Path

from common.data.bundled import bundled_musdb_root
from common.mss.demo import report_smoke_pipeline, run_separation
from common.report import run_entry_script

TITLE = "D3Net music source separation"
TARGET = "vocals"  # the smoke configuration's target
FOLDER = "d3net/music-source-separation"


def _run(script, *args):
    return run_entry_script(FOLDER, script, *args)


def run(report, out_dir):
    out = Path(out_dir) / "d3net-mss"
    shutil.rmtree(out, ignore_errors=True)
    wav_root = bundled_musdb_root(is_wav=True)
    track = next((bundled_musdb_root() / "test").glob("*.stem.mp4"))
    start = time.time()
    commands = [_run("train.py", "--output", out / "train")]
    model = out / "train"  # the run folder holds vocals.h5 + vocals.yaml (tiny network)
    separations = []
    for name, backend_args in (("separated-nnabla", ("--backend", "nnabla")),
                               ("separated-default", ())):
        command, used = run_separation(FOLDER, "separate.py", track, "--model", model,
                                       "--residual", *backend_args, "--out-dir", out / name)
        commands.append(command)
        separations.append((name, used))
    commands.append(_run("eval.py", "--model", model, "--residual", "--root", wav_root,
                         "--is-wav", "--out-dir", out / "eval"))
    elapsed = time.time() - start

    report_smoke_pipeline(
        report, title=TITLE, out=out, run_dir=out / "train" / TARGET, commands=commands,
        loss_label="spectrogram MSE", track_stem=track.name[:-len(".stem.mp4")],
        targets=(TARGET, "accompaniment"), separations=separations,
        intro=f"Smoke pipeline on the bundled 6 s MUSDB18 track ({elapsed:.0f} s on this "
              "machine). The network is tiny (configs/smoke_network.yaml: n_fft 1024, growth "
              "rates 2-4, one down-sampling level, 64-frame patches), is trained for the "
              "vocals only, for a few iterations, on the same track it is scored on; the "
              "scores show that training, separation and museval scoring work end to end, not "
              "what D3Net achieves (see d3net/README.md for the published numbers). The second "
              "scored target is the residual (`--residual`: mixture minus the vocals "
              "estimate).")
