"""The memory planner against nnabla's own CPU allocator and swap scheduler.

* prediction vs measurement: for a tiny ResNet, a tiny DenseNet, an MLP and a plain conv
  net (built here), two batch sizes each, the planner's simulated allocator high-water mark
  must be within TOLERANCE of the ``used`` bytes nnabla's caching allocator reports after
  each of 3 training iterations in a fresh process. Measured while writing this: 50 of 52
  configurations (these and others, momentum/adam/sgd) matched to the byte, two were off
  by exactly one 1 MiB small-pool chunk (which of two equally large free blocks nnabla's
  allocator picks depends on heap addresses the planner cannot know). The networks below
  use >= 20 MiB so that one chunk stays below the 5 % tolerance;
* the smallest out-of-core budget: 2 % above the prediction trains with
  ``common.train.out_of_core.OutOfCore`` on the CPU, 5 % below and half fail with the one-line
  budget error (the scheduler's real threshold was within 1 KiB of the prediction). The
  same bytes are the smallest prefetch window (``--ooc-window``): with ten times the budget,
  a window 2 % above trains and one 5 % below fails; a window never raises the budget needed;
* the command line's one-line errors.
"""
import re
from pathlib import Path

import pytest

from common.dev.testing import run_script
from common.errors import UserError
from ooctrain import plan_cli
from ooctrain.allocator_model import CachingAllocatorModel, round_size
from ooctrain.graph import build_training_graph, run_iterations, solver_state_count
from ooctrain.measure import measure, parse_cache_map
from ooctrain.planner import plan, plan_spec

PLAN = Path(__file__).resolve().parent.parent / "plan.py"
TOLERANCE = 0.05
MIB = 1 << 20

RESNET = {"arch": "resnet50", "overrides": {"blocks": [1, 1, 1, 1], "width": 8},
          "image_size": 32, "num_classes": 10, "small_input": True}
DENSENET = {"arch": "densenet121", "overrides": {"blocks": [2, 2, 2, 2], "growth": 8,
                                                  "stem": 16},
            "image_size": 32, "num_classes": 10, "small_input": True}


# Networks built here (the child process of the measurement loads this file by path).
def mlp(batch_size, features=3072, hidden=(1024, 512), classes=10):
    import nnabla as nn
    import nnabla.functions as F
    import nnabla.parametric_functions as PF

    x = nn.Variable((batch_size, features))
    t = nn.Variable((batch_size, 1))
    h = x
    for i, n in enumerate(hidden):
        h = F.relu(PF.affine(h, n, name=f"fc{i}"))
    loss = F.mean(F.softmax_cross_entropy(PF.affine(h, classes, name="out"), t))
    return loss, [(x, "float32"), (t, "int32", classes)]


def convnet(batch_size, size=32, maps=32, classes=10):
    """Conv + bias, max/average pooling, an in-place reshape, sigmoid, two affines."""
    import nnabla as nn
    import nnabla.functions as F
    import nnabla.parametric_functions as PF

    x = nn.Variable((batch_size, 3, size, size))
    t = nn.Variable((batch_size, 1))
    h = F.relu(PF.convolution(x, maps, (3, 3), pad=(1, 1), name="c1"))
    h = F.max_pooling(h, (2, 2))
    h = F.relu(PF.convolution(h, 2 * maps, (3, 3), pad=(1, 1), name="c2"))
    h = F.average_pooling(h, (2, 2))
    h = F.reshape(h, (batch_size, -1))
    h = F.sigmoid(PF.affine(h, 64, name="fc1"))
    loss = F.mean(F.softmax_cross_entropy(PF.affine(h, classes, name="fc2"), t))
    return loss, [(x, "float32"), (t, "int32", classes)]


MLP = {"builder": f"{Path(__file__).resolve()}:mlp"}
CONVNET = {"builder": f"{Path(__file__).resolve()}:convnet"}

CASES = [("resnet", RESNET, 16, "momentum"), ("resnet", RESNET, 24, "adam"),
         ("densenet", DENSENET, 16, "momentum"), ("densenet", DENSENET, 24, "momentum"),
         ("mlp", MLP, 32, "sgd"), ("mlp", MLP, 256, "adam"),
         ("convnet", CONVNET, 32, "momentum"), ("convnet", CONVNET, 48, "adam")]


@pytest.mark.parametrize("name,base,batch,solver", CASES,
                         ids=[f"{c[0]}-b{c[2]}-{c[3]}" for c in CASES])
def test_prediction_matches_allocator(name, base, batch, solver):
    spec = dict(base, batch_size=batch, solver=solver, iterations=3)
    predicted = plan_spec(spec, solver=solver, iterations=3)
    measured = measure(spec)
    assert measured["used"] >= 20 * MIB          # one 1 MiB chunk is < TOLERANCE
    for it, (p, m) in enumerate(zip(predicted.allocator_used_history, measured["history"])):
        error = (p["used"] - m["used"]) / m["used"]
        assert abs(error) <= TOLERANCE, (f"iteration {it + 1}: predicted {p['used']:,} B, "
                                         f"measured {m['used']:,} B ({error:+.1%})")
    # the logical peak (live bytes) is below what the allocator obtained, never above
    assert 0 < predicted.peak <= measured["used"]
    assert predicted.activations > 0 and predicted.peak >= predicted.activations


def _trains(spec, budget, solver="momentum", window=None):
    import nnabla as nn

    from common.context import get_context
    from common.train.out_of_core import OutOfCore

    ooc = OutOfCore(int(budget), get_context("cpu"), None if window is None else int(window))
    with nn.context_scope(ooc.device_ctx):
        graph = build_training_graph(spec)
        try:
            run_iterations(graph, solver, iterations=3, ooc=ooc)
        except UserError as exc:
            assert "too small" in str(exc) and "\n" not in str(exc)
            return False
    return True


@pytest.mark.parametrize("spec,solver,where", [
    (dict(RESNET, batch_size=8), "momentum", "backward"),   # limited by one function
    (dict(DENSENET, batch_size=8), "momentum", "backward"),
    (dict(MLP, batch_size=16), "adam", "update"),            # by one parameter's update
], ids=["resnet-function", "densenet-function", "mlp-update"])
def test_smallest_budget_is_what_the_scheduler_needs(spec, solver, where):
    result = plan(build_training_graph(spec), solver=solver)
    assert result.min_budget_at.startswith(where)
    assert _trains(spec, result.min_budget * 1.02, solver)
    assert not _trains(spec, result.min_budget * 0.95, solver)
    assert not _trains(spec, result.min_budget * 0.5, solver)
    # the prefetch window: the same threshold whatever the budget, and a wide window does
    # not raise the budget needed
    assert _trains(spec, result.min_budget * 10, solver, window=result.min_budget * 1.02)
    assert not _trains(spec, result.min_budget * 10, solver, window=result.min_budget * 0.95)
    assert _trains(spec, result.min_budget * 1.02, solver, window=result.min_budget * 100)


def test_solver_states_are_asked_from_nnabla():
    assert [solver_state_count(s) for s in ("sgd", "momentum", "adam", "amsgrad")] == \
        [0, 1, 2, 3]


def test_allocator_model_rounding_chunks_split_and_merge():
    assert [round_size(n) for n in (1, 512, 513, MIB - 1, MIB, MIB + 1)] == \
        [512, 512, 1024, MIB, MIB, MIB + (128 << 10)]
    model = CachingAllocatorModel()
    a, b = model.alloc(100), model.alloc(600)         # one 1 MiB chunk for both
    assert model.used == {"small": MIB, "large": 0}
    model.release(a)
    model.release(b)                                   # merged back into one free chunk
    assert [item[0] for item in model.free["small"]] == [MIB]
    big = model.alloc(3 * MIB)
    model.release(big)
    model.alloc(int(2.5 * MIB))     # reuses the 3 MiB block, rest < 1 MiB + 1: not split
    assert model.used == {"small": MIB, "large": 3 * MIB}
    model.alloc(MIB + 1)            # needs a block of its own
    assert model.used["large"] == 3 * MIB + MIB + (128 << 10)


def test_cache_map_parsing_recovers_exact_bytes():
    text = ("cache_map(device_id: , mem_type: small, used: 26.12MB, free: 3.50MB): \n"
            " [512.00B, 3.50MB]\n\n"
            "cache_map(device_id: , mem_type: large, used: 26.12MB, free: 1.12MB): \n"
            " [1.12MB]\n\n")
    parsed = parse_cache_map(text)
    assert parsed[("", "small")]["used"] == 26 * MIB + (128 << 10)
    assert parsed[("", "large")]["free"] == int(round(1.12 * MIB))


def _args(*extra, batch=8):
    return ["--arch", "resnet50", "--blocks", "1", "1", "1", "1", "--width", "8",
            "--small-input", "--batch-size", str(batch), "--image-size", "32",
            "--num-classes", "10", *extra]


def test_cli_says_whether_it_fits_and_which_budget(capsys):
    assert plan_cli.main(_args("--gpu-memory", "1GiB")) == 0
    out = capsys.readouterr().out
    assert "fits in 1.00 GiB" in out and "peak working set" in out
    assert "also the smallest --ooc-window" in out
    assert plan_cli.main(_args("--gpu-memory", "8MiB")) == 0
    out = capsys.readouterr().out
    assert "does not fit in 8.00 MiB" in out and "--ooc-budget 7.2MiB" in out
    assert plan_cli.main(_args("--gpu-memory", "2MiB")) == 0
    assert "even out of core the smallest budget" in capsys.readouterr().out
    assert plan_cli.main(_args("--type-config", "half", "--gpu-memory", "1GiB")) == 0
    assert "estimate" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["--gpu-memory", "lots"], "memory size"),
    (["--arch", "vgg16"], "invalid choice"),
    (["--arch", "resnet50", "--growth", "8"], "no size parameter 'growth'"),
    (["--batch-size", "0"], "--batch-size"),
    (["--blocks", "1", "0", "1", "1"], "--blocks"),
    (["--margin", "1.5"], "--margin"),
    (["--type-config", "half", "--measure"], "float"),
    (["--batch-size", "100000", "--image-size", "512", "--measure"], "RAM"),
])
def test_cli_bad_input_is_one_line_user_error(argv, needle):
    with pytest.raises(UserError) as info:
        plan_cli.main(argv)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_plan_script_end_to_end():
    proc = run_script(PLAN, *_args("--measure", "--gpu-memory", "1GiB", batch=16))
    assert "allocator used after each iteration" in proc.stdout
    error = re.search(r"measured [^:]*: error ([-+][0-9.]+)%", proc.stdout)
    assert error and abs(float(error.group(1))) <= 100 * TOLERANCE, proc.stdout
    bad = run_script(PLAN, "--gpu-memory", "lots", check=False)
    lines = [ln for ln in bad.stderr.splitlines() if "[nnabla][INFO]" not in ln]
    assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in bad.stderr


def test_builder_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="FILE.py:FUNCTION"):
        build_training_graph({"builder": "nothing", "batch_size": 2})
    with pytest.raises(UserError, match="does not exist"):
        build_training_graph({"builder": f"{tmp_path}/missing.py:f", "batch_size": 2})
    with pytest.raises(UserError, match="batch size"):
        build_training_graph(dict(RESNET, batch_size=0))
