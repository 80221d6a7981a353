"""train.py / score.py / sweep.py end to end on a tiny slice of the bundled real MNIST subset,
bit-exact resume, and one-line errors for bad input."""
import csv
import json
from pathlib import Path

import numpy as np

from common.dev.testing import run_script
from common.runtime.params_io import read_param_file
from datacleansing.cli import build_train_parser

FOLDER = Path(__file__).resolve().parent.parent
TRAIN, SCORE, SWEEP = FOLDER / "train.py", FOLDER / "score.py", FOLDER / "sweep.py"


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_smoke_configs_parse():
    args = build_train_parser().parse_args([])
    assert (args.dataset, args.model, args.cache) == ("mnist5k", "cnn", "final")
    assert args.epochs <= 3 and 0 < args.train_samples <= 2000
    args = build_train_parser().parse_args(["--config", str(FOLDER / "configs" / "mlp.yaml")])
    assert (args.model, args.cache, args.flip_labels) == ("mlp", "all", 0.1)


def test_train_score_sweep(tiny_run):
    with np.load(tiny_run / "labels.npz") as z:
        labels, flipped, clean = z["labels"], z["flipped"], z["clean"]
    assert len(labels) == 160 and len(flipped) == 16
    assert np.all(labels[flipped] != clean[flipped])
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["all_steps_files"] == summary["traced_steps"] == 5
    assert summary["all_steps_bytes"] > 4 * summary["final_bytes"]

    for method in ("final", "hara", "random"):
        proc = run_script(SCORE, tiny_run, "--method", method)
        assert "flipped labels among the 10% most harmful" in proc.stdout
        rows = _rows(tiny_run / f"influence_{method}.csv")
        assert list(rows[0]) == ["rank", "index", "path", "label", "influence"]
        assert [int(r["rank"]) for r in rows] == list(range(1, 161))
        assert sorted(int(r["index"]) for r in rows) == list(range(160))
        scores = [float(r["influence"]) for r in rows]
        assert scores == sorted(scores)          # most harmful (most negative) first
        assert all(int(r["label"]) == labels[int(r["index"])] for r in rows)
        assert rows[0]["path"].startswith("mnist5k:")

    args = [tiny_run, "--methods", "final", "hara", "random", "--counts", "0", "5", "20",
            "--trials", "2", "--mode", "replay"]
    run_script(SWEEP, *args)
    rows = _rows(tiny_run / "summary.csv")
    assert len(rows) == 3 * 3 * 2
    assert {(r["method"], r["trial"], r["removed"]) for r in rows} == {
        (m, str(t), str(k)) for m in ("final", "hara", "random") for t in (0, 1)
        for k in (0, 5, 20)}
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in rows)
    # removing nothing is the same retraining for every method
    assert len({r["test_accuracy"] for r in rows if r["removed"] == "0" and r["trial"] == "0"}) == 1
    assert (tiny_run / "summary.png").stat().st_size > 0
    assert (tiny_run / "trials" / "1" / "summary.json").is_file()
    # a second call finds every row done and appends nothing
    before = (tiny_run / "summary.csv").read_text()
    proc = run_script(SWEEP, *args)
    assert proc.stdout.count("skipped") == 2
    assert (tiny_run / "summary.csv").read_text() == before


def test_resume_after_stop_is_bit_exact(tmp_path):
    args = ["--dataset", "mnist5k", "--train-samples", "96", "--model", "mlp", "--epochs", "3",
            "--trace-epochs", "2", "--batch-size", "32", "--cache", "all", "--seed", "3"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    run_script(TRAIN, "--output", whole, *args)
    proc = run_script(TRAIN, "--output", split, "--stop-at-epoch", "1", *args)
    assert "continue with --resume" in proc.stdout
    assert not (split / "params" / "final.h5").exists()
    # an unfinished run cannot be scored yet
    proc = run_script(SCORE, split, check=False)
    assert proc.returncode == 2 and "--resume" in proc.stderr
    run_script(TRAIN, "--output", split, "--resume", *args)
    names = ["final.h5"] + [f"steps/{p.name}" for p in (whole / "params" / "steps").glob("*.h5")]
    assert len(names) == 1 + 6
    for name in names:
        ref, got = (read_param_file(r / "params" / name)[0] for r in (whole, split))
        assert sorted(ref) == sorted(got)
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{name} {key}")
    with np.load(whole / "trace.npz") as a, np.load(split / "trace.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "[nnabla][INFO]" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_bad_input_is_one_line_error(tmp_path, tiny_run, tiny_args):
    _one_line_error(run_script(TRAIN, "--dataset", "imagenet", "--output", tmp_path / "a",
                               check=False), "unknown dataset 'imagenet'")
    _one_line_error(run_script(SCORE, tmp_path / "missing", check=False), "does not exist")
    _one_line_error(run_script(SCORE, tiny_run, "--method", "bogus", check=False), "bogus")
    _one_line_error(run_script(SWEEP, tiny_run, "--methods", "final", "--counts", "100000",
                               check=False), "--counts")
    # an existing run is never overwritten silently; --resume must use the same options
    _one_line_error(run_script(TRAIN, "--output", tiny_run, *tiny_args, check=False), "--resume")
    _one_line_error(run_script(TRAIN, "--output", tiny_run, *tiny_args, "--resume", "--seed",
                               "5", check=False), "seed")


def test_influence_functions_and_confident_learning_through_the_scripts(tiny_run, tmp_path):
    """The registry's other methods score every sample through score.py (reused on a second
    call) and drive sweep.py; confident learning finds flipped labels above chance."""
    import shutil
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("summary.csv", "sweep.yaml",
                                                                 "trials", "influence_*"))
    with np.load(run / "labels.npz") as z:
        flipped = set(z["flipped"].tolist())
    for method in ("influence-functions", "confident-learning"):
        proc = run_script(SCORE, run, "--method", method)
        assert "160 samples scored (computed" in proc.stdout
        rows = _rows(run / f"influence_{method}.csv")
        assert sorted(int(r["index"]) for r in rows) == list(range(160))
        scores = [float(r["influence"]) for r in rows]
        assert scores == sorted(scores) and len(set(scores)) > 100
        record = json.loads((run / f"influence_{method}.json").read_text())
        assert record["method"] == method and record["flipped"] == 16
        if method == "confident-learning":
            found = sum(int(r["index"]) in flipped for r in rows[:16])
            assert found == record["flipped_in_top"] and found >= 5   # chance: 1.6
        assert "(reused)" in run_script(SCORE, run, "--method", method).stdout
    run_script(SWEEP, run, "--methods", "influence-functions", "confident-learning",
               "--counts", "0", "8")
    rows = _rows(run / "summary.csv")
    assert {(r["method"], r["removed"]) for r in rows} == {
        (m, k) for m in ("influence-functions", "confident-learning") for k in ("0", "8")}
