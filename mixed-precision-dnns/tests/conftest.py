"""Fixtures shared by the quantizer tests (official parity and fused = graph)."""
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
