"""The report of a run (``mpdnn/report.py``) and the training-loop checks behind it: every
reported bitwidth within the experiment's bounds (the projection of ``mpdnn/training.py``
keeps the bitwidth U3 and P3 imply there), "constraints met" only when the experiment has
constraints, the memory plot's target lines and title, layer names in the bitwidth plot
and table, and the stuck-training warning in the log and the report."""
import csv
import json
from pathlib import Path

import nnabla as nn
import numpy as np
import pytest
import yaml

from common.dev.testing import run_script
from mpdnn import report
from mpdnn.experiments import build_experiment, get_experiment
from mpdnn.memory import NetworkMemory
from mpdnn.resnet_cifar import resnet_cifar
from mpdnn.training import project_quantizer_parameters, quantizer_parameters

EVAL = Path(__file__).resolve().parent.parent / "eval.py"


def _network(name, **overrides):
    nn.clear_parameters()
    exp = get_experiment(name, **overrides)
    resnet_cifar(nn.Variable((2, 3, 32, 32)), 10, exp, test=False)
    return exp, NetworkMemory(exp)


def _experiment(run):
    return build_experiment("run", yaml.safe_load((run / "experiment.yaml").read_text()))


def _layers(run):
    with open(run / "layers.csv", newline="") as f:
        return [dict(r, bits=float(r["bits"]), count=int(r["count"]))
                for r in csv.DictReader(f)]


def _summary(run):
    return json.loads((run / "summary.json").read_text())


# ----------------------------------------------------------------------------- bounds

@pytest.mark.parametrize("b_max", [8, 5, 3])
@pytest.mark.parametrize("name", ["PARAMETRIC_FP_WAQ_DELTA_XMAX",      # U3
                                  "PARAMETRIC_POW2_WAQ_XMIN_XMAX"])    # P3
def test_projection_keeps_every_implied_bitwidth_within_bounds(name, b_max):
    exp, memory = _network(name, w_bitwidth=min(4, b_max), a_bitwidth=min(4, b_max),
                           w_bitwidth_max=b_max, a_bitwidth_max=b_max)
    groups = quantizer_parameters()
    rng = np.random.default_rng(b_max)
    outside_before = 0
    for _ in range(8):
        for params in groups.values():
            for var in params.values():   # anywhere, also far outside every range
                var.d = np.float32(2.0 ** rng.uniform(-18, 9))
        outside_before += any(r["bits"] > b_max for r in memory.layer_table())
        project_quantizer_parameters(exp, groups)
        for row in memory.layer_table():
            lo, hi = report.bitwidth_bounds(exp, row["kind"])
            assert lo <= row["bits"] <= hi, (row["name"], row["bits"])
    # the random values did leave the bounds (P3 needs b_max < 6 for that: its ranges alone
    # allow at most 6 bits)
    assert outside_before or (name.startswith("PARAMETRIC_POW2") and b_max >= 6)


def test_the_smoke_runs_nine_bit_layer_is_projected_to_eight_bits():
    """A smoke run reported conv1's weights at 9 bits with w_bitwidth_max 8: d at its minimum
    2^-8 (+1e-5) and q_max 0.874 make 224 steps, 449 levels: the displayed bitwidth was the
    quantizer's real one, the parameters were what was out of bounds."""
    exp, memory = _network("PARAMETRIC_FP_WAQ_DELTA_XMAX")
    groups = quantizer_parameters()
    d = groups["weights"]["conv1/quantized_conv/Wquant/parametric_fp_d_xmax/d"]
    xmax = groups["weights"]["conv1/quantized_conv/Wquant/parametric_fp_d_xmax/xmax"]

    def conv1_bits():
        return next(r["bits"] for r in memory.layer_table()
                    if r["name"] == "conv1/quantized_conv/W")

    d.d, xmax.d = 2.0 ** -8 + 1e-5, 0.8741858
    assert conv1_bits() == 9
    project_quantizer_parameters(exp, groups)
    assert conv1_bits() == 8 and float(xmax.d) == 127 * 2.0 ** -8
    xmax.d = 0.25                     # 64 steps, 8 bits: left as it is
    project_quantizer_parameters(exp, groups)
    assert float(xmax.d) == np.float32(0.25) and conv1_bits() == 8


def test_every_reported_bitwidth_lies_within_the_experiments_bounds(tiny_runs):
    for name in ("bounded", "stuck"):
        run, _ = tiny_runs[name]
        exp = _experiment(run)
        for row in _layers(run):
            lo, hi = report.bitwidth_bounds(exp, row["kind"])
            assert lo <= row["bits"] <= hi, (name, row["name"], row["bits"])
        assert not any("bounds" in w for w in _summary(run)["warnings"])
    exp = _experiment(tiny_runs["bounded"][0])
    assert (exp.w_bitwidth_max, exp.a_bitwidth_max) == (4, 4)


def test_bitwidths_outside_the_bounds_are_reported():
    """Parameters trained elsewhere (an official .h5) may imply more bits than allowed."""
    exp = get_experiment("PARAMETRIC_FP_WAQ_DELTA_XMAX")
    rows = [{"name": "conv1/quantized_conv/W", "kind": "weight", "bits": 9.0},
            {"name": "fc/quantized_affine/W", "kind": "weight", "bits": 8.0},
            {"name": "conv1", "kind": "activation", "bits": 4.0}]
    warnings = report.bitwidth_bound_warnings(exp, rows)
    assert len(warnings) == 1 and "1 weight bitwidths" in warnings[0]
    assert "[2, 8]" in warnings[0] and "conv1/W" in warnings[0]
    assert report.bitwidth_bound_warnings(exp, rows[1:]) == []


# ----------------------------------------------------------------------------- constraints

def test_constraints_met_only_when_the_experiment_has_constraints(tiny_runs):
    float_run, stdout = tiny_runs["float"]
    assert _summary(float_run)["constraints_met"] is None
    text = (float_run / "report.md").read_text()
    assert "constraints met" not in text
    assert "- bitwidths: weights float (32 bits), activations float (32 bits)" in text
    assert "- bitwidths: weights 2-4 bits, activations 1-4 bits" in (
        tiny_runs["bounded"][0] / "report.md").read_text()
    assert "constraints" not in stdout
    proc = run_script(EVAL, "--model", float_run, "--loader-threads", "0", quiet=True)
    assert "validation error" in proc.stdout and "constraints" not in proc.stdout
    for name in ("bounded", "stuck"):
        run, _ = tiny_runs[name]
        met = _summary(run)["constraints_met"]
        assert met in (True, False)
        assert f"- constraints met: {'yes' if met else 'no'}" in (run / "report.md").read_text()
    assert _summary(tiny_runs["stuck"][0])["constraints_met"] is False   # 1 kB: unreachable


# ----------------------------------------------------------------------------- plots

@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the report would save (nothing is written)."""
    saved = []
    monkeypatch.setattr(report, "_save", lambda fig, path: saved.append(fig))
    return saved


def _dashed(ax):
    return sorted(float(line.get_ydata()[0]) for line in ax.lines
                  if line.get_linestyle() == "--")


def test_memory_plot_shows_the_targets_and_a_readable_title(tiny_runs, figures, tmp_path):
    run, _ = tiny_runs["bounded"]
    assert (run / report.MEMORY_PLOT).is_file()
    assert f"]({report.MEMORY_PLOT})" in (run / "report.md").read_text()
    exp = _experiment(run)
    assert report.plot_memory(run, exp, tmp_path / "memory.png")
    weights, activations = figures[0].axes
    assert _dashed(weights) == [70.1] and _dashed(activations) == [8.1]
    assert (weights.get_title(), activations.get_title()) == (
        "Weight memory", "Largest activation memory")
    title = figures[0]._suptitle.get_text()
    assert exp.name in title and "weights U3, activations U3" in title
    # one point per epoch, in kB as logged
    epochs, kbytes = weights.lines[0].get_data()
    assert list(epochs) == [1, 2] and np.all(np.asarray(kbytes) > 0)
    # no constraint, no line
    float_run, _ = tiny_runs["float"]
    assert report.plot_memory(float_run, _experiment(float_run), tmp_path / "float.png")
    assert [_dashed(ax) for ax in figures[1].axes] == [[], []]
    # nothing before the first epoch
    assert report.plot_memory(tmp_path, exp, tmp_path / "none.png") is False


def test_bitwidth_plot_and_table_name_the_layers(tiny_runs, figures, tmp_path):
    run, _ = tiny_runs["bounded"]
    exp, rows = _experiment(run), _layers(run)
    report.plot_bitwidths(exp, rows, tmp_path / "bits.png", "title")
    weights, activations = figures[0].axes
    names = [t.get_text() for t in weights.get_xticklabels()]
    assert names[0] == "conv1/W" and names[-2:] == ["fc/W", "fc/b"]
    assert "res1/layer1/basicblock1/W" in names and len(names) == 21
    acts = [t.get_text() for t in activations.get_xticklabels()]
    assert acts[0] == "conv1" and "res3/layer3" in acts and len(acts) == 19
    assert not any(n.isdigit() for n in names + acts)
    assert _dashed(weights) == [2, 4] and _dashed(activations) == [1, 4]   # min, max
    assert "| res1/layer1/basicblock1/W | weight |" in (run / "report.md").read_text()
    # float activations are left out of the plot of a weights-only experiment
    exp = get_experiment("PARAMETRIC_FP_WQ_DELTA_XMAX")
    report.plot_bitwidths(exp, [dict(r, bits=32.0) if r["kind"] == "activation" else r
                                for r in rows], tmp_path / "w.png", "title")
    assert len(figures[1].axes) == 1
    # a fixed quantizer's bitwidth does not move: no bounds drawn
    report.plot_bitwidths(get_experiment("FP_W2A4Q_INIT"), rows, tmp_path / "f.png", "title")
    assert [_dashed(ax) for ax in figures[2].axes] == [[], []]


# ----------------------------------------------------------------------------- stuck

def test_stuck_training_is_one_warning_in_the_log_and_the_report(tiny_runs):
    run, stdout = tiny_runs["stuck"]
    warnings = [line for line in stdout.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "lowest bitwidth" in warnings[0], stdout
    text = warnings[0][len("warning: "):]
    assert _summary(run)["warnings"] == [text]
    assert f"**Warning:** {text}" in (run / "report.md").read_text()
    for name in ("float", "bounded"):
        run, stdout = tiny_runs[name]
        assert "warning:" not in stdout and _summary(run)["warnings"] == []


def test_stuck_warning_rules():
    exp = get_experiment("PARAMETRIC_FP_WAQ_DELTA_XMAX")   # weights 2-8, activations 1-8 bits
    rows = [{"name": "a/quantized_conv/W", "kind": "weight", "bits": 4.0, "d": 0.1, "xmax": 1},
            {"name": "a", "kind": "activation", "bits": 3.0, "d": 0.1, "xmax": 1}]
    learning = [2.5, 2.1, 1.9, 1.7]
    assert report.stuck_warning(exp, learning, rows) is None
    flat = [2.5, 2.3026, 2.3030, 2.3026]
    assert "loss stayed at 2.3026 for 3 epochs" in report.stuck_warning(exp, flat, rows)
    assert report.stuck_warning(exp, flat[-2:], rows) is None       # not several epochs yet
    lowest = [dict(rows[0], bits=2.0), dict(rows[1], bits=1.0)]
    assert "lowest bitwidth (weights 2 bits, activations 1 bits)" in report.stuck_warning(
        exp, learning, lowest)
    assert report.stuck_warning(exp, learning, [lowest[0], rows[1]]) is None
    # a bitwidth fixed by the experiment (min = max) is no sign of anything
    fixed = get_experiment("PARAMETRIC_FP_W2Q_B_XMAX_CON_INIT")
    assert report.stuck_warning(fixed, learning, [dict(rows[0], bits=2.0, n=2.0)]) is None
    # float layers carry no quantizer parameters
    assert report.stuck_warning(get_experiment("DEFAULT"), learning,
                                [{"name": "x", "kind": "weight", "bits": 32.0}]) is None
