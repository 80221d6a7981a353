"""Parity of the six quantizers with the official implementation's outputs and gradients.

Every case (function, sign, with_zero, parameter values) is read from
``$FIXTURES_DIR/mixed-precision-dnns/*quantizers.json``; the arrays from the npz
beside it. Both of our implementations (graph-composed and fused CPU) are checked.
"""
import json

import numpy as np
import pytest

from common.dev.testing import fixtures_root
from mpdnn import quantizers as Q


def _fixture_sets():
    root = fixtures_root() / "mixed-precision-dnns"
    files = sorted(root.glob("*quantizers.json"))
    if not files:
        raise FileNotFoundError(f"no *quantizers.json under {root} (set FIXTURES_DIR)")
    return files


def _cases():
    out = []
    for path in _fixture_sets():
        meta = json.loads(path.read_text())
        for case in meta["cases"]:
            out.append(pytest.param(path, case, id=f"{path.stem}:{case['key']}"))
    return out


_ARRAYS = {}


def _arrays(path):
    if path not in _ARRAYS:
        with np.load(path.with_suffix(".npz")) as z:
            _ARRAYS[path] = {k: z[k] for k in z.files}
    return _ARRAYS[path]


def run_quantizer(quantizer_step, case, x, dy, fused):
    """Forward + backward of our quantizer for one fixture case; returns y, dx, param grads
    (by official parameter name) and the parameter names."""
    kind = Q.parametrization(case["function"])
    kwargs = case["kwargs"]
    init = {name.split("/")[-1]: value for name, value in case["param_values"].items()}
    y, dx, grads = quantizer_step(x, dy, kind.kind, kwargs["sign"],
                                  kwargs.get("with_zero", False), init, fused)
    return y, dx, {name.split("/")[-1]: float(g) for name, g in grads.items()}, sorted(grads)


@pytest.mark.parametrize("fused", [False, True], ids=["graph", "fused"])
@pytest.mark.parametrize("path,case", _cases())
def test_quantizer_matches_official(path, case, fused, quantizer_step):
    a = _arrays(path)
    key = case["key"]
    x, dy = a[f"{key}__x"], a[f"{key}__dy"]
    y, dx, grads, names = run_quantizer(quantizer_step, case, x, dy, fused)

    assert names == sorted(case["param_names"])  # official parameter names
    np.testing.assert_array_equal(y, a[f"{key}__y"])
    ref_dx = a[f"{key}__dx"]
    assert np.array_equal(np.isnan(dx), np.isnan(ref_dx))
    assert int(np.isnan(dx).sum()) == int(np.isnan(ref_dx).sum())
    finite = ~np.isnan(ref_dx)
    np.testing.assert_array_equal(dx[finite], ref_dx[finite])
    for name in grads:
        ref = a[f"{key}__grad_{name}"]
        np.testing.assert_allclose(grads[name], ref, rtol=1e-5, atol=1e-6 * max(1.0, abs(ref)),
                                   err_msg=f"grad of {name}")
