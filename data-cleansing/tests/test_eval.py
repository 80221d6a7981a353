"""eval.py, the reference's experiment in one command: a tiny end-to-end run with every
method and two trials, and its resumability (Ctrl-C during training, then the same command
again; a finished experiment is reused; other options are refused in one line)."""
import csv
from pathlib import Path

from common.dev.testing import assert_one_line_error, interrupt_script, run_script
from datacleansing.influence import METHODS

EVAL = Path(__file__).resolve().parent.parent / "eval.py"
QUIET = {"NNABLA_RESEARCH_NO_PROGRESS": "1"}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_method_two_trials_end_to_end(tmp_path):
    out = tmp_path / "exp"
    args = ["--output", out, "--train-samples", "96", "--model", "logreg", "--epochs", "2",
            "--batch-size", "32", "--cache", "all", "--flip-labels", "0.1", "--trials", "2",
            "--counts", "0", "5", "100000"]
    proc = run_script(EVAL, *args, env=QUIET)
    assert "--counts above the 96 training samples left out: 100000" in proc.stdout
    rows = _rows(out / "summary.csv")
    assert {(r["method"], r["trial"], r["removed"]) for r in rows} == {
        (m, t, k) for m in METHODS for t in ("0", "1") for k in ("0", "5")}
    assert len(rows) == len(METHODS) * 2 * 2
    assert (out / "summary.png").stat().st_size > 0
    for run in (out, out / "trials" / "1"):
        assert (run / "summary.json").is_file()
        for method in METHODS:
            assert len(_rows(run / f"influence_{method}.csv")) == 96
    for method in METHODS:       # the table of mean accuracies names every method
        assert f"{method} acc. %" in proc.stdout
    again = run_script(EVAL, *args, env=QUIET)
    assert "training finished before, reused" in again.stdout
    assert again.stdout.count("skipped") == 2
    assert _rows(out / "summary.csv") == rows


def test_ctrl_c_then_the_same_command_continues(tmp_path):
    out = tmp_path / "exp"
    args = ["--output", out, "--train-samples", "320", "--model", "mlp", "--epochs", "60",
            "--batch-size", "32", "--methods", "final", "random", "--counts", "0", "10"]
    proc = interrupt_script(EVAL, *args, env=QUIET,
                            ready=lambda _: any((out / "checkpoints").glob("ckpt_*.npz")))
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "run the same eval.py command again" in last
    assert not (out / "summary.json").exists()
    resumed = run_script(EVAL, *args, env=QUIET)
    assert f"continuing the run in {out}" in resumed.stdout
    assert "resuming at iteration" in resumed.stdout
    assert len(_rows(out / "summary.csv")) == 4
    # the same folder with other training options: one line, nothing changed
    before = (out / "summary.csv").read_text()
    assert_one_line_error(run_script(EVAL, *args[:-4], "--seed", "3", "--methods", "final",
                                     "--counts", "0", check=False, env=QUIET), "seed")
    assert (out / "summary.csv").read_text() == before
    # hara by name needs the per-step cache
    assert_one_line_error(run_script(EVAL, *args[:-6], "--methods", "hara", check=False,
                                     env=QUIET), "--cache all")
