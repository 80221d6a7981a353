"""Fixtures shared by the quantizer tests (official parity and fused = graph) and by the
report and results-table tests (tiny training runs)."""
from pathlib import Path

import nnabla as nn
import pytest

from mpdnn import quantizers as Q


def _forward_backward(x, dy, kind, sign, with_zero, init, fused, bounds=None):
    """One quantizer call on ``x`` (fresh parameters ``init``), backward with ``dy``: returns
    the output, the input gradient and {parameter name: gradient}, all copies."""
    nn.clear_parameters()
    xv = nn.Variable.from_numpy_array(x, need_grad=True)
    y = Q.quantize(xv, kind, sign=sign, with_zero=with_zero, init=init, bounds=bounds,
                   fused=fused)
    params = nn.get_parameters()
    for p in params.values():
        p.grad.zero()
    xv.grad.zero()
    y.forward(clear_no_need_grad=True)
    y.backward(dy)
    out = y.d.copy(), xv.g.copy(), {k: p.g.copy() for k, p in params.items()}
    nn.clear_parameters()
    return out


@pytest.fixture
def quantizer_step():
    """``(x, dy, kind, sign, with_zero, init, fused, bounds=None) -> (y, dx, grads)``."""
    return _forward_backward


# ----------------------------------------------------------------------------- tiny runs

FOLDER = Path(__file__).resolve().parent.parent
TINY = ["--dataset", "mnist5k", "--train-samples", "32", "--val-samples", "16",
        "--loader-threads", "0", "--set", "batch_size=16"]
# Three finished runs of a few iterations each (shared by the report and collect tests):
TINY_RUNS = {
    # a float baseline: no quantizer, no constraint
    "float": ["--experiment", "DEFAULT", "--set", "epochs=1", "--set", "lr_milestones=[1]"],
    # U3 weights and activations under the paper's targets, pushed hard (learning rate 0.5)
    # with a maximum of 4 bits that the learned parameters would exceed without the
    # projection of mpdnn.training (they start at exactly 4 bits)
    "bounded": ["--experiment", "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT", "--set", "epochs=2",
                "--set", "lr_milestones=[2]", "--set", "init_from=null",
                "--set", "w_bitwidth_max=4", "--set", "a_bitwidth_max=4",
                "--set", "initial_learning_rate=0.5"],
    # every quantizer starts at its lowest bitwidth under unreachable targets: stuck
    "stuck": ["--experiment", "PARAMETRIC_FP_WAMQ_DELTA_XMAX_CON_INIT", "--set", "epochs=1",
              "--set", "lr_milestones=[1]", "--set", "init_from=null",
              "--set", "w_bitwidth=2", "--set", "a_bitwidth=1",
              "--set", "target_weight_kbytes=1", "--set", "target_activation_kbytes=0.1"],
}


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """{name: (run folder, train.py's standard output)} of :data:`TINY_RUNS`."""
    from common.dev.testing import run_script

    root = tmp_path_factory.mktemp("tiny-runs")
    out = {}
    for name, args in TINY_RUNS.items():
        proc = run_script(FOLDER / "train.py", "--output", root / name, *TINY, *args,
                          quiet=True)
        out[name] = (root / name, proc.stdout)
    return out
