"""ImageNet ResNet-18 and MobileNetV2 (paper Table 4): architecture, quantizers, gradients.

Forward/backward checks run on tiny inputs (batch 2, 3x64x64) so the file stays fast on
one CPU core; the architecture checks build the 224x224 / 1000-class networks without
running them.
"""
from types import SimpleNamespace

import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest

from mpdnn import quantizers as Q
from mpdnn.imagenet_models import MODELS, mobilenet_v2

# The official defaults of the experiment fields (train_resnet_quant_*.cfg [DEFAULT]).
BASE_CFG = dict(
    num_layers=None, shortcut_type="", scale_layer=False,
    w_quantize=None, w_bitwidth=4, w_bitwidth_min=2, w_bitwidth_max=8,
    w_stepsize=2 ** -3, w_stepsize_min=2 ** -8, w_stepsize_max=1.0,
    w_xmin_min=2 ** -16, w_xmin_max=127.0, w_xmax_min=2 ** -8, w_xmax_max=127.0,
    a_quantize=None, a_bitwidth=4, a_bitwidth_min=1, a_bitwidth_max=8,
    a_stepsize=2 ** -3, a_stepsize_min=2 ** -8, a_stepsize_max=1.0,
    a_xmin_min=2 ** -14, a_xmin_max=255.0, a_xmax_min=2 ** -8, a_xmax_max=255.0,
)
QUANTIZATIONS = {
    "float": (None, None),
    "U3": ("parametric_fp_d_xmax", "parametric_fp_d_xmax_relu"),
    "P3": ("parametric_pow2_xmin_xmax", "parametric_pow2_xmin_xmax_relu"),
}
NUM_CLASSES = 10
INPUT_SHAPE = (2, 3, 64, 64)

# Table 4 of the paper, float networks: weight memory (conv/fc W and b, 32 bit) and the
# largest activation tensor, in MB (= MiB, 1 MB = 2**20 bytes) at 224x224.
TABLE4_FLOAT_MB = {"resnet18": (44.56, 3.04), "mobilenetv2": (13.23, 4.59)}

# Published float parameter counts (conv/fc weights and biases + BN scale and shift) at
# 1000 classes; the input size does not change them.
PUBLISHED_PARAMETERS = {"resnet18": 11_689_512, "mobilenetv2": 3_504_872}


def count_parameters(names=("W", "b", "gamma", "beta")):
    """Values in nnabla's parameters whose last name component is in ``names``: by default
    what the published counts count (not BN statistics, ``W_q``, quantizer parameters or
    ``Asize``); ``("W", "b")`` gives the weights the memory constraints count."""
    return int(sum(int(np.prod(v.shape)) for k, v in nn.get_parameters(grad_only=False).items()
                   if k.rsplit("/", 1)[-1] in names))


def _cfg(quantization):
    w, a = QUANTIZATIONS[quantization]
    return SimpleNamespace(**dict(BASE_CFG, w_quantize=w, a_quantize=a))


def _params():
    return nn.get_parameters(grad_only=False)


@pytest.fixture(autouse=True)
def _clean_parameters():
    nn.clear_parameters()
    yield
    nn.clear_parameters()


def _expected_weight_scopes(model):
    """Scopes holding a quantized_conv, in creation order, then the classifier."""
    if model == "resnet18":
        scopes = ["conv1"]
        for s in range(1, 5):
            for b in (1, 2):
                block = f"layer{s}/block{b}"
                scopes += [f"{block}/conv1", f"{block}/conv2"]
                if s > 1 and b == 1:
                    scopes.append(f"{block}/shortcut")
    else:
        scopes = ["features/0", "features/1/depthwise", "features/1/project"]
        for i in range(2, 18):
            scopes += [f"features/{i}/{part}" for part in ("expand", "depthwise", "project")]
        scopes.append("features/18")
    return [f"{s}/quantized_conv/W" for s in scopes] + ["fc/quantized_affine/W"]


@pytest.mark.parametrize("model", list(MODELS))
def test_published_parameter_count_and_scopes(model):
    """At 1000 classes the float network has exactly the published number of parameters
    (conv/fc W and b, BN gamma and beta): ResNet-18 11,689,512, MobileNetV2 3,504,872.
    Built at 224x224 without a forward pass."""
    x = nn.Variable((1, 3, 224, 224))
    y = MODELS[model](x, 1000, _cfg("float"), test=True)
    assert y.shape == (1, 1000)
    assert count_parameters() == PUBLISHED_PARAMETERS[model]
    weights = [k for k in _params() if k.endswith(("quantized_conv/W", "quantized_affine/W"))]
    assert weights == _expected_weight_scopes(model)

    # Table 4's float sizes: weight memory counts W and b (no BN), activations the largest
    # Asize; both in float32 MiB. (3.0625 MiB for ResNet-18's 64x112x112 stem output, which
    # the table prints as 3.04.)
    w_mb, a_mb = TABLE4_FLOAT_MB[model]
    assert count_parameters(names=("W", "b")) * 4 / 2 ** 20 == pytest.approx(w_mb, rel=1e-3)
    largest = max(float(v.d) for k, v in _params().items() if k.endswith("Asize"))
    assert largest * 4 / 2 ** 20 == pytest.approx(a_mb, rel=1e-2)


@pytest.mark.parametrize("model", list(MODELS))
def test_quantization_keeps_the_parameter_count(model):
    """Quantizers add W_q copies and scalars only; the counted weights are the same."""
    MODELS[model](nn.Variable((1, 3, 32, 32)), 1000, _cfg("U3"), test=True, fused=True)
    assert count_parameters() == PUBLISHED_PARAMETERS[model]


def _check_quantizers(quantization):
    params = _params()
    w_kind, a_kind = QUANTIZATIONS[quantization]
    weights = [k for k in params if k.endswith(("quantized_conv/W", "quantized_affine/W"))]
    sizes = [k for k in params if k.endswith("/Asize") or k == "Asize"]
    assert weights and sizes
    quantizer_names = [k for k in params if "quant/" in k]
    if w_kind is None:
        assert not quantizer_names and not any(k.endswith("_q") for k in params)
        return
    w_params = Q.parametrization(w_kind).params
    a_params = Q.parametrization(a_kind[:-len("_relu")]).params
    for name in weights:
        layer = name[:-len("W")]
        assert layer + "W_q" in params, name
        for p in w_params:
            assert f"{layer}Wquant/{w_kind}/{p}" in params, name
    for name in sizes:
        scope = name[:-len("Asize")]
        for p in a_params:
            assert f"{scope}Aquant/{a_kind[:-len('_relu')]}/{p}" in params, name
    # nothing else is quantized: one weight quantizer per W/b, one activation quantizer per Asize
    n_biases = sum(k.endswith("quantized_affine/b") for k in params)
    expected = (len(weights) + n_biases) * len(w_params) + len(sizes) * len(a_params)
    assert len(quantizer_names) == expected


def _build(model, quantization, x, fused, test=False):
    """Logits of ``model``; a quantized network is built over the float one's parameters, as
    a quantized run starts from a trained float network (``init_from``): the weight
    quantizers then take their initial step from the weights' range. (Fresh U3 quantizers
    with the default 1/8 step would round every fc weight, |W| < 0.05, to 0.)"""
    if quantization != "float":
        MODELS[model](x, NUM_CLASSES, _cfg("float"), test=test)
    return MODELS[model](x, NUM_CLASSES, _cfg(quantization), test=test, fused=fused)


def _forward_backward(model, quantization, fused, seed=0):
    rng = np.random.RandomState(seed)
    x = nn.Variable.from_numpy_array(rng.randn(*INPUT_SHAPE).astype(np.float32))
    t = nn.Variable.from_numpy_array(rng.randint(0, NUM_CLASSES, (INPUT_SHAPE[0], 1)))
    y = _build(model, quantization, x, fused)
    y.persistent = True   # keep the logits through backward(clear_buffer=True)
    loss = F.mean(F.softmax_cross_entropy(y, t))
    for v in _params().values():
        v.grad.zero()
    loss.forward(clear_no_need_grad=True)
    loss.backward(clear_buffer=True)
    return y


@pytest.mark.parametrize("quantization", list(QUANTIZATIONS))
@pytest.mark.parametrize("model", list(MODELS))
def test_forward_backward(model, quantization):
    """Tiny input: logits shape, every W has a Wquant and every Asize an Aquant, and a
    training step gives finite gradients everywhere (non-zero for the quantizers as a set)."""
    y = _forward_backward(model, quantization, fused=None)
    assert y.shape == (INPUT_SHAPE[0], NUM_CLASSES)
    assert np.all(np.isfinite(y.d)) and np.any(y.d != 0)
    _check_quantizers(quantization)
    params = nn.get_parameters()   # need_grad only
    for name, v in params.items():
        assert np.all(np.isfinite(v.g)), name
    quantizer_grads = [float(np.abs(v.g).sum()) for k, v in params.items() if "quant/" in k]
    if quantization != "float":
        assert sum(quantizer_grads) > 0


@pytest.mark.parametrize("quantization", ["U3", "P3"])
@pytest.mark.parametrize("model", list(MODELS))
def test_graph_and_fused_quantizers_agree(model, quantization):
    """Same parameters, same input: the graph-composed and the fused quantizers give
    identical logits (their gradients are compared in test_quantizer_parity.py)."""
    x = nn.Variable.from_numpy_array(
        np.random.RandomState(0).randn(*INPUT_SHAPE).astype(np.float32))
    logits = {}
    for fused in (False, True):   # the second build reuses the first one's parameters
        y = _build(model, quantization, x, fused)
        y.forward(clear_no_need_grad=True)
        logits[fused] = y.d.copy()
    assert np.all(np.isfinite(logits[True])) and np.any(logits[True] != 0)
    np.testing.assert_array_equal(logits[True], logits[False])


def test_mobilenet_width_multiplier():
    """Width 0.5: channels stay multiples of 8, the last 1x1 conv keeps 1280 channels."""
    x = nn.Variable((1, 3, 32, 32))
    y = mobilenet_v2(x, NUM_CLASSES, _cfg("float"), test=True, width=0.5)
    assert y.shape == (1, NUM_CLASSES)
    params = _params()
    for k, v in params.items():
        if k.endswith("quantized_conv/W"):
            assert v.shape[0] % 8 == 0, k
    assert params["features/0/quantized_conv/W"].shape[0] == 16
    assert params["features/18/quantized_conv/W"].shape[0] == 1280
