"""train.py / eval.py end to end on a tiny slice of the bundled real MNIST subset, resume,
errors, and the memory constraints."""
import json
from pathlib import Path

import nnabla as nn
import numpy as np
import pytest

from common.dev.testing import run_script
from common.train.checkpoint import CheckpointManager
from mpdnn.experiments import get_experiment
from mpdnn.memory import NetworkMemory
from mpdnn.resnet_cifar import resnet_cifar
from mpdnn.training import (clip_quantizer_gradients, project_quantizer_parameters,
                            quantizer_parameters)

FOLDER = Path(__file__).resolve().parent.parent
TRAIN, EVAL = FOLDER / "train.py", FOLDER / "eval.py"
TINY = ["--dataset", "mnist5k", "--train-samples", "96", "--val-samples", "40",
        "--set", "batch_size=32", "--set", "lr_milestones=[1]", "--loader-threads", "0"]


def _final_params(run):
    ckpt = CheckpointManager(Path(run) / "checkpoints", clean=False).load_latest()
    return ckpt.step, ckpt.params


@pytest.fixture(scope="module")
def float_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("float") / "run"
    run_script(TRAIN, "--experiment", "DEFAULT", "--output", out, "--set", "epochs=1", *TINY)
    return out


def test_smoke_training_writes_report(float_run, tmp_path):
    out = tmp_path / "u3"
    proc = run_script(TRAIN, "--experiment", "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT",
                      "--init-from", float_run, "--output", out, "--set", "epochs=2", *TINY)
    assert "initialised" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["val_error"] <= 1.0
    assert summary["target_weight_kbytes"] == 70.1
    for name in ("report.md", "layers.csv", "bitwidths.png", "config.yaml", "experiment.yaml"):
        assert (out / name).is_file(), name
    rows = (out / "layers.csv").read_text().splitlines()
    assert len(rows) == 1 + 21 + 19   # header, 20 conv/fc weights + fc bias, 19 activations
    # eval.py on the run reproduces the training report's numbers
    ev = tmp_path / "eval"
    run_script(EVAL, "--model", out, "--out-dir", ev, "--loader-threads", "0")
    again = json.loads((ev / "summary.json").read_text())
    assert again["val_error"] == summary["val_error"]
    assert again["weight_kbytes"] == pytest.approx(summary["weight_kbytes"])


def test_resume_is_bit_exact(float_run, tmp_path):
    args = ["--experiment", "PARAMETRIC_POW2_WAQ_XMIN_XMAX_INIT", "--init-from", float_run,
            "--set", "epochs=2", "--checkpoint-interval", "2", "--keep-last", "10", *TINY]
    whole = tmp_path / "whole"
    run_script(TRAIN, "--output", whole, *args)
    step, ref = _final_params(whole)

    split = tmp_path / "split"
    proc = run_script(TRAIN, "--output", split, "--stop-at-epoch", "1", *args)
    assert "continue with --resume" in proc.stdout
    # keep only the mid-epoch checkpoint (iteration 2 of 3): the run resumes inside epoch 1
    manager = CheckpointManager(split / "checkpoints", clean=False)
    assert [step for step, _ in manager.checkpoints()] == [2, 3]
    manager.path_for(3).unlink()
    run_script(TRAIN, "--output", split, "--resume", *args)
    step2, got = _final_params(split)
    assert step2 == step
    assert sorted(got) == sorted(ref)
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)


def test_missing_init_and_bad_input_are_one_line_errors(tmp_path):
    proc = run_script(TRAIN, "--experiment", "PARAMETRIC_FP_WAQ_DELTA_XMAX_INIT", "--output",
                      tmp_path / "x", *TINY, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: experiment "
                                                          "PARAMETRIC_FP_WAQ_DELTA_XMAX_INIT")
    assert "Traceback" not in proc.stderr
    for bad in (["--experiment", "PARAMETRIC_FP_WAQ_DELTA_XMAXX"], ["--set", "epochs"],
                ["--set", "not_a_field=3"], ["--set", "w_quantize=bogus"]):
        proc = run_script(TRAIN, "--output", tmp_path / "y", *TINY, *bad, check=False)
        assert proc.returncode == 2, bad
        assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1, bad
    proc = run_script(EVAL, tmp_path / "nothing-here", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def _network(name, **overrides):
    nn.clear_parameters()
    exp = get_experiment(name, **overrides)
    x = nn.Variable((2, 3, 32, 32))
    resnet_cifar(x, 10, exp, test=False)
    return exp, NetworkMemory(exp)


def test_memory_of_float_and_initial_quantized_resnet20():
    exp, mem = _network("DEFAULT")
    n_weights = sum(int(np.prod(v.shape)) for k, v in nn.get_parameters().items()
                    if k.endswith(("quantized_conv/W", "quantized_affine/W", "quantized_affine/b")))
    sizes = mem.evaluate()
    assert sizes["weight_kbytes"] == pytest.approx(32 * n_weights / 8 / 1024)
    assert sizes["max_activation_kbytes"] == pytest.approx(32 * 16 * 32 * 32 / 8 / 1024)
    # U3 from its initial values (d = 2^-3, q_max = 7 d for weights, 15 d for activations)
    exp, mem = _network("PARAMETRIC_FP_WAQ_DELTA_XMAX", w_bitwidth=4, a_bitwidth=4)
    sizes = mem.evaluate()
    assert sizes["weight_kbytes"] == pytest.approx(4 * n_weights / 8 / 1024)
    assert sizes["max_activation_kbytes"] == pytest.approx(4 * 16 * 32 * 32 / 8 / 1024)
    assert sizes["total_activation_kbytes"] == pytest.approx(
        sum(4 * r["count"] / 8 / 1024 for r in mem.layer_table() if r["kind"] == "activation"))
    # P3 implies b = ceil(log2(log2(q_max / q_min) + 1) + 1)
    exp, mem = _network("PARAMETRIC_POW2_WAQ_XMIN_XMAX", w_bitwidth=3)
    for row in mem.layer_table():
        if row["kind"] == "weight":
            ratio = 2 ** np.round(np.log2(row["xmax"])) / 2 ** np.round(np.log2(row["xmin"]))
            assert row["bits"] == max(np.ceil(np.log2(np.log2(ratio) + 1) + 1), 2)


@pytest.mark.parametrize("name", ["PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT",
                                  "PARAMETRIC_POW2_WAMQ_XMIN_XMAX_CON_INIT"])
def test_memory_penalty_reaches_quantizer_parameters(name):
    # a target far below the initial size: the penalty alone must push the ranges down
    exp, mem = _network(name, init_from=None, target_weight_kbytes=1.0,
                        target_activation_kbytes=0.5)
    penalty = mem.penalty()
    assert penalty is not None
    for p in nn.get_parameters().values():
        p.grad.zero()
    penalty.forward()
    assert float(penalty.d) > 0
    penalty.backward()
    groups = quantizer_parameters()
    grads = {group: [float(v.g) for k, v in groups[group].items() if k.endswith("/xmax")]
             for group in groups}
    assert grads["weights"] and all(g > 0 for g in grads["weights"])  # shrinking q_max helps
    # the activation constraint is on the largest activation: only that layer gets a gradient
    assert exp.target_activation_type == "max"
    assert sum(g > 0 for g in grads["activations"]) == 1
    assert all(g >= 0 for g in grads["activations"])
    # the official gradient clipping under constraints: |grad| <= d (U3) or q_min (P3)
    clip_quantizer_gradients(groups)
    for group in groups.values():
        for k, v in group.items():
            small = group.get(k.rsplit("/", 1)[0] + "/d") or group.get(
                k.rsplit("/", 1)[0] + "/xmin")
            assert abs(float(v.g)) <= float(small.d) + 1e-12


def test_projection_keeps_parameters_in_range():
    exp, _ = _network("PARAMETRIC_FP_WAQ_DELTA_XMAX")
    groups = quantizer_parameters()
    names = sorted(groups["weights"])
    d = groups["weights"][names[0]]          # .../d
    xmax = groups["weights"][names[1]]       # .../xmax
    assert names[0].endswith("/d") and names[1].endswith("/xmax")
    d.d, xmax.d = 5.0, 0.01                  # d above its bound and above q_max
    project_quantizer_parameters(exp, groups)
    assert exp.w_stepsize_min < float(d.d) < exp.w_stepsize_max
    assert exp.w_xmax_min < float(xmax.d) < exp.w_xmax_max
    assert float(d.d) < float(xmax.d)
