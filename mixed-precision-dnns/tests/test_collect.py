"""``collect.py RUN_DIR...``: the results table of training runs (best validation error,
weight memory, largest activation), sorted as in the paper's tables, written atomically to
``--out-dir`` after checking it first; a folder that is not a run is one error line."""
import csv
import json
import random
import shutil
from pathlib import Path

import pytest

from common.dev.testing import (ReadOnlyDir, SmallDisk, assert_one_line_error, files_under,
                                run_script)
from common.train.monitor import read_series
from mpdnn import collect
from mpdnn.experiments import get_experiment

COLLECT = Path(__file__).resolve().parent.parent / "collect.py"


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_table_of_two_runs(tiny_runs, tmp_path):
    float_run, bounded = tiny_runs["float"][0], tiny_runs["bounded"][0]
    out = tmp_path / "results"
    proc = run_script(COLLECT, bounded, float_run, "--out-dir", out, quiet=True)
    assert files_under(out) == ["results.csv", "results.md"]   # no temporary file left
    rows = _csv(out / "results.csv")
    # the float baseline first, as in the paper's tables, whatever the order given
    assert [r["run"] for r in rows] == [str(float_run), str(bounded)]
    assert [(r["weights"], r["activations"]) for r in rows] == [("float", "float"),
                                                                ("U3", "U3")]
    for row, run in zip(rows, (float_run, bounded)):
        summary = json.loads((run / "summary.json").read_text())
        for key in ("val_error", "weight_kbytes", "max_activation_kbytes"):
            assert float(row[key]) == pytest.approx(summary[key]), key
        assert (row["status"], row["epochs_done"]) == ("finished", row["epochs"])
    met = json.loads((bounded / "summary.json").read_text())["constraints_met"]
    assert [r["constraints_met"] for r in rows] == ["", "yes" if met else "no"]
    assert (rows[1]["target_weight_kbytes"], rows[1]["target_activation_kbytes"]) == (
        "70.1", "8.1")
    # the markdown table is what was printed
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 4 and table[0].startswith("| experiment | run | W / A |")
    assert "\n".join(table) in (out / "results.md").read_text()
    float_row = table[2].split(" | ")
    assert float_row[0] == "| DEFAULT"
    assert float_row[4] == f"{float(rows[0]['val_error']) * 100:.2f}"
    # the same call again replaces the files with the same content
    before = {p: (out / p).read_bytes() for p in files_under(out)}
    run_script(COLLECT, float_run, bounded, "--out-dir", out, quiet=True)
    assert {p: (out / p).read_bytes() for p in files_under(out)} == before


def test_an_unfinished_run_is_read_from_its_curves(tiny_runs, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(tiny_runs["bounded"][0], unfinished)
    (unfinished / "summary.json").unlink()
    [(_, exp, result)], _ = collect.collect([unfinished])
    assert result["status"] == f"unfinished, 2 of {exp.epochs} epochs"
    epochs, errors = read_series(unfinished, "val error")
    weights = dict(zip(*read_series(unfinished, "weight kbytes")))
    largest = dict(zip(*read_series(unfinished, "max activation kbytes")))
    met = [(err, e) for e, err in zip(epochs, errors)
           if weights[e] <= exp.target_weight_kbytes and largest[e] <= exp.target_activation_kbytes]
    # this run met the targets in its second epoch only: the first, at the same or a lower
    # error, may not be chosen
    assert [e for _, e in met] == [2] and weights[1] > exp.target_weight_kbytes
    assert (result["val_error"], result["weight_kbytes"]) == (met[0][0], weights[2])
    assert result["constraints_met"] is True
    # no epoch met the targets (1 kB of weights): no values, shown as dashes
    stuck = tmp_path / "stuck"
    shutil.copytree(tiny_runs["stuck"][0], stuck)
    (stuck / "summary.json").unlink()
    rows, _ = collect.collect([stuck])
    assert rows[0][2]["val_error"] is None
    assert "| – | – | – |" in collect.markdown(rows)


def test_rows_follow_the_papers_table_order():
    """Network; float, fixed, learned with a fixed bitwidth, constrained, unconstrained
    (Table 4); weights only before weights and activations; U1..U3, P1..P3 (get_res.py)."""
    expected = [
        "DEFAULT",                                      # float baseline
        "FP_W2Q_INIT", "POW2_W2Q_INIT", "FP_W2A4Q_INIT",    # fixed quantizers
        "PARAMETRIC_FP_W2Q_B_XMAX_CON_INIT",            # learned, bitwidth fixed to 2
        "PARAMETRIC_FP_WQ_DELTA_XMAX_CON_INIT",         # constrained, weights only
        "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT",       # constrained, weights + activations
        "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT",
        "PARAMETRIC_FP_WQ_DELTA_B_INIT",                # unconstrained: U1, U2, U3, P1..P3
        "PARAMETRIC_FP_WQ_B_XMAX_INIT", "PARAMETRIC_FP_WQ_DELTA_XMAX_INIT",
        "PARAMETRIC_POW2_WQ_B_XMAX_INIT", "PARAMETRIC_POW2_WQ_B_XMIN_INIT",
        "PARAMETRIC_POW2_WQ_XMIN_XMAX_INIT",
        "PARAMETRIC_FP_WAQ_DELTA_B_INIT", "PARAMETRIC_FP_WAQ_DELTA_XMAX_INIT",
        "RESNET18_FLOAT", "RESNET18_FP_W4A4Q_INIT",     # the next network, same order
        "RESNET18_PARAMETRIC_FP_W4A4Q_B_XMAX_CON_INIT",
        "RESNET18_PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT",
        "RESNET18_PARAMETRIC_FP_WAQ_DELTA_XMAX_INIT",
        "MOBILENETV2_FLOAT",
    ]
    shuffled = expected[:]
    random.Random(0).shuffle(shuffled)
    got = sorted(shuffled, key=lambda n: collect.sort_key(get_experiment(n), "run"))
    assert got == expected
    assert [collect.CATEGORIES[collect.category(get_experiment(n))] for n in
            ("DEFAULT", "FP_W2Q_INIT", "PARAMETRIC_FP_W2Q_B_XMAX_CON_INIT",
             "PARAMETRIC_FP_WQ_DELTA_XMAX_CON_INIT", "PARAMETRIC_FP_WQ_DELTA_XMAX_INIT")] == list(
        collect.CATEGORIES)
    assert collect.quantizer_label(get_experiment("FP_W2A4Q_INIT"), "a") == "fp 4 bit"
    assert collect.quantizer_label(get_experiment("PARAMETRIC_FP_W2Q_B_XMAX_CON_INIT"),
                                   "w") == "U2, 2 bit"


def test_a_folder_that_is_not_a_run_is_one_line(tiny_runs, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("x")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for bad, words in ((plain, ["not a training run"]), (tmp_path / "missing", ["no such"]),
                       (a_file, ["no such folder"])):
        out = tmp_path / f"out-{bad.name}"
        proc = run_script(COLLECT, tiny_runs["float"][0], bad, "--out-dir", out, check=False)
        assert_one_line_error(proc, str(bad), *words)
        assert not out.exists()
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_runs["float"][0], damaged)
    (damaged / "summary.json").write_text("{")
    proc = run_script(COLLECT, damaged, check=False)
    assert_one_line_error(proc, "summary.json", "damaged")


def test_the_output_location_is_checked_before_any_run_is_read(tiny_runs, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    proc = run_script(COLLECT, tmp_path / "not-a-run", "--out-dir", a_file / "sub",
                      check=False)
    assert_one_line_error(proc, "--out-dir", "file")
    with ReadOnlyDir(tmp_path / "ro") as ro:
        proc = run_script(COLLECT, tiny_runs["float"][0], "--out-dir", Path(ro.path) / "x",
                          check=False)
        assert_one_line_error(proc, "--out-dir")
        assert files_under(ro.path) == []


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(tiny_runs, tmp_path):
    with SmallDisk(tmp_path / "disk", 200) as disk:
        disk.fill()
        out = Path(disk.path) / "results"
        proc = run_script(COLLECT, tiny_runs["float"][0], tiny_runs["bounded"][0],
                          "--out-dir", out, check=False, preexec_fn=disk.preexec_fn())
        assert_one_line_error(proc, "cannot write")
        assert not [p for p in files_under(out) if ".tmp." in p or p == "results.md"]
