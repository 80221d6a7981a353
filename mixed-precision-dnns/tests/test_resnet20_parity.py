"""ResNet-20 parity with the official network, one fixture set per config section found.

For every ``$FIXTURES_DIR/mixed-precision-dnns/resnet20_*.json``: its ``cfg`` is the
configuration (quantizers, bitwidths, ranges), its ``parameters`` the official names,
shapes, need_grad flags and initial values in creation order; the ``.h5`` beside it
holds the parameters and ``_forward.npz`` the input and the official logits.
"""
import json
from types import SimpleNamespace

import nnabla as nn
import numpy as np
import pytest

from common.dev.testing import fixtures_root
from common.runtime.params_io import read_param_file, set_nnabla_parameters
from mpdnn.resnet_cifar import resnet_cifar


def _sections():
    root = fixtures_root() / "mixed-precision-dnns"
    files = sorted(root.glob("resnet20_*.json"))
    if not files:
        raise FileNotFoundError(f"no resnet20_*.json under {root} (set FIXTURES_DIR)")
    return [pytest.param(p, id=p.stem) for p in files]


def _load(meta_path):
    meta = json.loads(meta_path.read_text())
    stem = meta_path.with_suffix("")
    with np.load(f"{stem}_forward.npz") as z:
        forward = {k: z[k] for k in z.files}
    return meta, SimpleNamespace(**meta["cfg"]), forward, stem.with_suffix(".h5")


def _num_classes(meta):
    return [p["shape"] for p in meta["parameters"] if p["name"].endswith("affine/b")][0][0]


@pytest.mark.parametrize("fused", [False, True], ids=["graph", "fused"])
@pytest.mark.parametrize("meta_path", _sections())
def test_fresh_network_has_official_parameters(meta_path, fused):
    """Names, order, shapes, need_grad and initial scalar values of a freshly built network."""
    meta, cfg, forward, _ = _load(meta_path)
    nn.clear_parameters()
    x = nn.Variable(forward["input"].shape)
    resnet_cifar(x, _num_classes(meta), cfg, test=True, fused=fused)
    ours = nn.get_parameters(grad_only=False)
    assert list(ours) == [p["name"] for p in meta["parameters"]]
    for spec in meta["parameters"]:
        var = ours[spec["name"]]
        assert list(var.shape) == spec["shape"], spec["name"]
        assert var.need_grad == spec["need_grad"], spec["name"]
        if spec["initial_value"] is not None:
            assert float(var.d) == pytest.approx(spec["initial_value"], rel=1e-6), spec["name"]
    nn.clear_parameters()


@pytest.mark.parametrize("fused", [False, True], ids=["graph", "fused"])
@pytest.mark.parametrize("meta_path", _sections())
def test_logits_and_quantized_weights_match_official(meta_path, fused):
    meta, cfg, forward, h5 = _load(meta_path)
    stored, need_grad = read_param_file(h5)
    nn.clear_parameters()
    set_nnabla_parameters(stored, need_grad=need_grad)
    x = nn.Variable.from_numpy_array(forward["input"])
    logits = resnet_cifar(x, _num_classes(meta), cfg, test=True, fused=fused)
    assert sorted(nn.get_parameters(grad_only=False)) == sorted(stored)
    logits.forward(clear_buffer=False)

    ref = forward["logits"]
    scale = float(np.max(np.abs(ref)))
    quantized = [k for k in stored if k.endswith(("/W_q", "/b_q"))]
    params = nn.get_parameters(grad_only=False)
    for name in quantized:   # buffers shared with the quantizer outputs
        np.testing.assert_allclose(params[name].d, stored[name], rtol=0, atol=1e-6, err_msg=name)
    tol = 2e-2 if quantized else 1e-4
    assert np.max(np.abs(logits.d - ref)) <= tol * scale
    nn.clear_parameters()
