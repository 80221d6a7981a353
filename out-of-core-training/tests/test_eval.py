"""eval.py, the paper's in-core vs out-of-core comparison: a tiny CPU run under an emulated
card produces the table with an in-core and an out-of-core row (each limited where the
planner says it must be), continues from its measurements when run again, refuses another
setting's folder, and every user error is one line before anything is measured. The sweep
and bisection logic and the plot's zero-based y axis are checked in process."""
import csv
from pathlib import Path

import pytest

from common.dev.testing import assert_one_line_error, run_script
from ooctrain import throughput
from ooctrain.planner import plan_spec

EVAL = Path(__file__).resolve().parents[1] / "eval.py"
ENV = {"NNABLA_RESEARCH_NO_PROGRESS": "1"}
NET = {"arch": "resnet50", "overrides": {"blocks": [1], "width": 4}, "image_size": 16,
       "num_classes": 3, "small_input": True}
NET_ARGS = ["--blocks", "1", "--width", "4", "--image-size", "16", "--small-input",
            "--num-classes", "3"]
# The emulated card: the planner puts this network's allocator peak at 1 MiB for batch 8
# and 2 MiB for 16, and the smallest out-of-core budget at 0.77 MiB for 16 and 1.50 MiB for
# 32; the default budget is 90 % of the card, 1.35 MiB.
CARD = "1.5MiB"
TINY = [*NET_ARGS, "--device-memory", CARD, "--batches", "8", "16", "32", "--refine", "0",
        "--iterations", "1"]


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_card_sizes_behind_the_tiny_run_hold():
    """What TINY relies on, from the planner (the eval run below measures it for real)."""
    card, budget = 1.5 * 2 ** 20, 1.35 * 2 ** 20
    used = {b: plan_spec(dict(NET, batch_size=b), iterations=1) for b in (8, 16, 32)}
    assert used[8].allocator_used <= card < used[16].allocator_used
    assert used[16].min_budget <= budget < used[32].min_budget


def test_tiny_cpu_run_gives_in_core_and_out_of_core_rows(tmp_path):
    out = tmp_path / "eval"
    proc = run_script(EVAL, *TINY, "--out-dir", out, env=ENV)
    assert sorted(p.name for p in out.iterdir()) == [
        "evaluation.json", "measurements.csv", "results.csv", "results.md", "throughput.png"]
    results = {r["variant"]: r for r in _csv(out / "results.csv")}
    assert list(results) == ["in-core", "out-of-core"]
    assert results["in-core"]["largest_batch"] == "8"
    assert "needs 2.00 MiB > device memory 1.50 MiB" in results["in-core"]["limit"]
    assert results["out-of-core"]["largest_batch"] == "16"
    assert "budget too small" in results["out-of-core"]["limit"]
    assert float(results["out-of-core"]["batch_vs_in_core"]) == 2
    assert float(results["out-of-core"]["images_per_s"]) > 0
    # in core stops at its first failure; out of core goes on to 32
    measured = [(r["variant"], int(r["batch"]), r["fits"]) for r in
                _csv(out / "measurements.csv")]
    assert measured == [("in-core", 8, "True"), ("in-core", 16, "False"),
                        ("out-of-core", 8, "True"), ("out-of-core", 16, "True"),
                        ("out-of-core", 32, "False")]
    md = (out / "results.md").read_text()
    assert "| in-core | 8 |" in md and "| out-of-core | 16 |" in md
    assert "2.00x the batch" in md and "Published (Hayakawa & Narihira 2020" in md
    assert (out / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Largest batch: in core 8" in proc.stdout

    # run again with the same settings: nothing is measured again
    again = run_script(EVAL, *TINY, "--out-dir", out, env=ENV)
    assert "reusing 5 measurement(s)" in again.stdout
    assert "img/s" not in again.stdout and "does not fit" not in again.stdout
    assert {r["variant"]: r["largest_batch"] for r in _csv(out / "results.csv")} == \
        {"in-core": "8", "out-of-core": "16"}

    # another card is another evaluation: refused, the folder left alone
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = run_script(EVAL, *NET_ARGS, "--device-memory", "3MiB", "--batches", "8",
                       "--iterations", "1", "--out-dir", out, check=False, env=ENV)
    assert_one_line_error(other, "holds scores of another evaluation", "budget",
                          "device_memory")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("extra, fragments", [
    (["--context", "cpu"], ("on cpu give --device-memory",)),
    (["--context", "cudnn", "--device-memory", "1GiB"], ("emulates a card on the CPU",)),
    (["--device-memory", "lots"], ("--device-memory", "cannot read 'lots'")),
    (["--device-memory", "1MiB", "--ooc-window", "0"], ("--ooc-window", "must be positive")),
    (["--device-memory", "1MiB", "--margin", "1"], ("--margin must be below 1",)),
    (["--device-memory", "1MiB", "--batches", "64", "--max-batch", "32"],
     ("above --max-batch 32",)),
    (["--device-memory", "1MiB", "--refine", "-1"], ("--refine",)),
], ids=["no-card", "card-on-gpu", "bad-size", "zero-window", "margin", "batches", "refine"])
def test_bad_input_is_one_line_before_anything_is_written(tmp_path, extra, fragments):
    proc = run_script(EVAL, *NET_ARGS, *extra, "--out-dir", tmp_path / "eval", check=False,
                      env=ENV)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "eval").exists()


def test_out_dir_is_checked_before_measuring(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = run_script(EVAL, *TINY, "--out-dir", tmp_path / "file" / "eval", check=False,
                      env=ENV)
    assert_one_line_error(proc, "--out-dir", "lies under the file")
    assert "img/s" not in proc.stdout and "does not fit" not in proc.stdout


# --------------------------------------------------------------------------- in process
def _fake_measure(limits, calls):
    """A measure() where a variant fits up to ``limits[variant]``."""
    def measure(setup, variant, batch):
        calls.append((variant, batch))
        fits = batch <= limits[variant]
        return {"batch": batch, "variant": variant, "fits": fits,
                "images_per_s": 1000.0 / batch if fits else None, "allocator_used": None,
                "error": "" if fits else "too big"}
    return measure


def test_sweep_stops_each_variant_at_its_first_failure_and_bisects(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(throughput, "measure",
                        _fake_measure({"in-core": 190, "out-of-core": 1440}, calls))
    rows = throughput.sweep({}, [32, 64, 128, 256, 512, 1024, 2048, 4096], refine=10)
    assert ("in-core", 512) not in calls and ("out-of-core", 4096) not in calls
    largest, _ = throughput.summarize(rows)
    assert largest["in-core"]["batch"] == 190 and largest["out-of-core"]["batch"] == 1440
    assert len(calls) == len(set(calls))                      # nothing measured twice
    # measured rows are reused, not measured again
    calls.clear()
    again = throughput.sweep({}, [32, 64, 128, 256, 512, 1024, 2048, 4096], refine=10,
                             known=rows)
    assert calls == [] and again == rows
    # refine=0: the sweep's own batches only
    calls.clear()
    throughput.sweep({}, [100, 200, 400], refine=0)
    assert calls == [("in-core", 100), ("out-of-core", 100), ("in-core", 200),
                     ("out-of-core", 200), ("out-of-core", 400)]


def test_plot_starts_its_y_axis_at_zero(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    seen = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (seen.append(fig.axes[0].get_ylim()),
                                                   close(fig)))
    rows = [{"batch": b, "variant": v, "fits": True, "images_per_s": 400.0 + b,
             "allocator_used": None, "error": ""} for b in (8, 16) for v in throughput.VARIANTS]
    throughput.plot_throughput(rows, tmp_path / "t.png", "t")
    assert seen and seen[0][0] == 0 and seen[0][1] >= 416
