"""The fused CPU quantizers (:mod:`mpdnn.fused`) against the graph-composed reference.

For every quantizer kind, sign and (pow2) with_zero, on a 4-D tensor whose values span well
beyond the quantization range and include the exact grid points, the exact rounding
boundaries (half steps and their neighbours; for pow2 2^k * sqrt(2) with the float32
neighbours where nnabla's float32 log decides, and the zero threshold xmin/sqrt(2)), the
range ends and exact zeros, with raw parameters inside, outside and exactly on their clip
bounds: outputs and input gradients are bit-identical (the same NaNs, the same signs of
zero), and so are the parameter gradients (checked at rtol 1e-6 as asked, then at 0 ulp).
Also: parameters and inputs that leave the fused fast paths (tiny/huge steps, overlapping
pow2 ranges, NaN/inf inputs, subnormal levels), gradient accumulation when tensors are
shared, a whole quantized ResNet-20 training step, and the CPU-only availability rule.
"""
import zlib

import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest

from mpdnn import fused
from mpdnn import quantizers as Q
from mpdnn.experiments import get_experiment
from mpdnn.resnet_cifar import resnet_cifar

SHAPE = (8, 16, 16, 16)
KINDS = list(Q.PARAMETRIZATIONS)
DRAWS = ("inside", "first_outside", "second_outside", "on_bounds")


def _cases():
    out = []
    for kind in KINDS:
        zeros = (False, True) if Q.PARAMETRIZATIONS[kind].family == "pow2" else (False,)
        for sign in (True, False):
            for with_zero in zeros:
                for draw in DRAWS:
                    cid = f"{Q.PARAMETRIZATIONS[kind].paper}-{'signed' if sign else 'relu'}"
                    cid += "-zero" if with_zero else ""
                    out.append(pytest.param(kind, sign, with_zero, draw, id=f"{cid}-{draw}"))
    return out


def _raw_values(kind, draw, rng):
    """Raw parameter values: inside their default bounds, one of them outside, or the first
    exactly on its lower and the second on its upper bound (zero gradient there)."""
    p = Q.PARAMETRIZATIONS[kind]
    values = {}
    for i, name in enumerate(p.params):
        _, lo, hi = p.defaults[name]
        outside = (draw == "first_outside" and i == 0) or (draw == "second_outside" and i == 1)
        below = rng.random() < 0.5
        if draw == "on_bounds":
            values[name] = float(lo if i == 0 else hi)
        elif name == "n":
            if outside:
                values[name] = rng.uniform(lo - 3, lo - 0.2) if below else \
                    rng.uniform(hi + 0.2, hi + 4)
            else:
                values[name] = rng.uniform(lo, hi)
        elif outside:
            values[name] = lo * rng.uniform(0.01, 0.9) if below else hi * rng.uniform(1.1, 8)
        else:
            values[name] = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return values


def _derived(kind, init, sign, with_zero):
    """The derived scalars (float32) the quantizer will use for these raw values."""
    nn.clear_parameters()
    raw, bounds = Q.quantizer_parameters(kind, init)
    derived = Q.derive(kind, raw, bounds, sign, with_zero)
    F.sink(*derived.values()).forward()
    out = {k: np.float32(v.d) for k, v in derived.items()}
    nn.clear_parameters()
    return out


def _neighbours(v, k=1):
    """The positive float32s ``v`` and their ``k`` float32 neighbours on either side."""
    bits = np.asarray(v, np.float32).view(np.int32)[:, None] + np.arange(-k, k + 1)
    return bits.astype(np.int32).view(np.float32).ravel()


def _input(kind, derived, rng):
    """A SHAPE tensor: wide random values plus the special points of this quantizer."""
    n = int(np.prod(SHAPE))
    special = [np.zeros(64, np.float32)]
    if Q.PARAMETRIZATIONS[kind].family == "fp":
        d, xmax = derived["d"], derived["xmax"]
        scale = max(float(xmax), float(d))
        levels = max(int(xmax / d), 1)
        k = rng.integers(-levels - 2, levels + 2, 2000).astype(np.float32)
        half = (k + np.float32(0.5)) * d
        special += [k * d, half, _neighbours(np.abs(half)) * np.sign(half).repeat(3),
                    _neighbours(np.array([xmax, d], np.float32)),
                    -_neighbours(np.array([xmax, d], np.float32))]
    else:
        xmin, xmax = derived["xmin"], derived["xmax"]
        ends = [float(v) for v in (xmin, xmax) if np.isfinite(v) and v > 0]
        scale = max(ends) if ends else 1.0
        exps = [np.log2(v) for v in ends] or [0.0]
        lo_e = int(np.clip(np.floor(min(exps)), -149, 127)) - 2
        hi_e = int(np.clip(np.ceil(max(exps)), -149, 127)) + 2
        e = np.arange(max(lo_e, -149), min(hi_e, 127) + 1)
        powers = np.ldexp(np.float32(1), e).astype(np.float32)
        mids = (powers * np.float32(np.sqrt(2.0))).astype(np.float32)
        mids = mids[np.isfinite(mids) & (mids > 0)]
        # every rounding boundary nearby, and the whole window where the float32 log decides
        # for up to 24 exponents
        wide = rng.permutation(mids)[:24]
        thr = np.float32(xmin * np.float32(1.0 / np.sqrt(2.0)))
        ends = np.array([v for v in (xmin, xmax, thr) if np.isfinite(v) and v > 0], np.float32)
        pts = np.concatenate([powers, _neighbours(mids, 2), _neighbours(wide, 80),
                              _neighbours(ends, 2)])
        pts = pts[np.isfinite(pts) & (pts >= 0)]
        mags = np.exp2(rng.uniform(lo_e - 4, hi_e + 4, 4000)).astype(np.float32)
        special += [pts, -pts, np.float32(2.0 ** -149) * np.arange(1, 9, dtype=np.float32),
                    mags * rng.choice(np.array([-1, 1], np.float32), mags.size)]
    special = np.concatenate(special).astype(np.float32)
    special = special[np.isfinite(special)]
    with np.errstate(over="ignore"):
        wide = (rng.standard_normal(n) * 2.5 * scale).astype(np.float32)
    assert special.size <= n
    wide[rng.permutation(n)[:special.size]] = special
    return wide.reshape(SHAPE)


def _assert_bit_identical(actual, expected, what):
    assert actual.shape == expected.shape, what
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    assert np.array_equal(nan_a, nan_e), f"{what}: NaN positions differ"
    a, e = actual[~nan_a], expected[~nan_e]
    diff = a.view(np.uint32) != e.view(np.uint32)   # also tells +0 from -0
    assert not diff.any(), (f"{what}: {int(diff.sum())} elements differ, e.g. "
                            f"{a[diff][:5]} vs {e[diff][:5]}")


@pytest.mark.parametrize("kind,sign,with_zero,draw", _cases())
def test_fused_matches_graph(kind, sign, with_zero, draw, quantizer_step):
    seed = zlib.crc32(f"{kind}/{sign}/{with_zero}/{draw}".encode())
    rng = np.random.default_rng(seed)
    init = _raw_values(kind, draw, rng)
    x = _input(kind, _derived(kind, init, sign, with_zero), rng)
    dy = rng.standard_normal(SHAPE).astype(np.float32)
    dy.flat[rng.permutation(dy.size)[:100]] = 0

    y_g, dx_g, g_g = quantizer_step(x, dy, kind, sign, with_zero, init, fused=False)
    y_f, dx_f, g_f = quantizer_step(x, dy, kind, sign, with_zero, init, fused=True)

    _assert_bit_identical(y_f, y_g, "y")
    _assert_bit_identical(dx_f, dx_g, "dx")
    assert sorted(g_f) == sorted(g_g)
    for name in g_g:
        np.testing.assert_allclose(g_f[name], g_g[name], rtol=1e-6, atol=0, err_msg=name)
        _assert_bit_identical(g_f[name], g_g[name], name)   # stronger: 0 ulp


@pytest.mark.parametrize("kind,sign,with_zero,init,bounds,special", [
    # steps far outside the default bounds: 1/d is not a normal float
    ("parametric_fp_d_xmax", True, False, {"d": 2.0 ** -75}, {"d": (2.0 ** -80, 2.0 ** -70)},
     None),
    ("parametric_fp_d_xmax", False, False, {"d": 2.0 ** 70, "xmax": 2.0 ** 80},
     {"d": (1.0, 2.0 ** 90), "xmax": (1.0, 2.0 ** 90)}, None),
    # non-finite and huge inputs
    ("parametric_fp_d_b", True, False, None, None, "nonfinite"),
    ("parametric_fp_b_xmax", False, False, None, None, "nonfinite"),
    ("parametric_pow2_xmin_xmax", True, False, None, None, "nonfinite"),
    ("parametric_pow2_b_xmin", False, True, None, None, "nonfinite"),
    ("parametric_pow2_xmin_xmax", True, True, {"xmax": 2.0 ** 120},
     {"xmax": (1.0, 2.0 ** 127)}, "huge"),
    # P1 at 8 bits: xmin = 2^-127 xmax is subnormal, levels reach down into the subnormals
    ("parametric_pow2_b_xmax", False, True, {"n": 8.0, "xmax": 0.5}, None, "tiny"),
    ("parametric_pow2_b_xmax", True, False, {"n": 8.0, "xmax": 2.0 ** -4}, None, "tiny"),
], ids=["U3-tiny-step", "U3-huge-step", "U1-nonfinite", "U2-nonfinite", "P3-nonfinite",
        "P2-nonfinite", "P3-huge", "P1-subnormal-relu", "P1-subnormal-signed"])
def test_fused_matches_graph_outside_fast_path(kind, sign, with_zero, init, bounds, special,
                                               quantizer_step):
    """Parameters and inputs for which the fused functions fall back to (or extend) their
    exact slow paths."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(SHAPE) * 3).astype(np.float32)
    flat = x.reshape(-1)
    pick = rng.permutation(flat.size)
    if special == "nonfinite":
        flat[pick[:50]] = np.nan
        flat[pick[50:100]] = np.inf
        flat[pick[100:150]] = -np.inf
        flat[pick[150:200]] = -0.0
        flat[pick[200:250]] = np.float32(3e38) * rng.choice([-1, 1], 50)
    elif special == "huge":
        flat[pick[:4000]] = np.exp2(rng.uniform(100, 128, 4000)) * rng.choice([-1, 1], 4000)
    elif special == "tiny":
        flat[pick[:8000]] = np.exp2(rng.uniform(-150, -100, 8000)) * rng.choice([-1, 1], 8000)
        flat[pick[8000:8100]] = -0.0
    elif kind == "parametric_fp_d_xmax" and init.get("xmax", 1) > 1e20:
        flat *= np.float32(2.0 ** 78)
    dy = rng.standard_normal(SHAPE).astype(np.float32)
    y_g, dx_g, g_g = quantizer_step(x, dy, kind, sign, with_zero, init, False, bounds)
    y_f, dx_f, g_f = quantizer_step(x, dy, kind, sign, with_zero, init, True, bounds)
    _assert_bit_identical(y_f, y_g, "y")
    _assert_bit_identical(dx_f, dx_g, "dx")
    for name in g_g:
        _assert_bit_identical(g_f[name], g_g[name], name)


def _shared_inputs_run(kind, sign, with_zero, use_fused, x, w1, w2, w3):
    """x (through one non-leaf node) and the derived scalars each feed two quantizer calls,
    and the first quantized tensor is itself used twice: every gradient is accumulated."""
    p = Q.PARAMETRIZATIONS[kind]
    nn.clear_parameters()
    x0 = nn.Variable.from_numpy_array(x, need_grad=True)
    h = F.mul_scalar(x0, 1.0)
    raw, bounds = Q.quantizer_parameters(kind, None)
    derived = Q.derive(kind, raw, bounds, sign, with_zero)
    # shape (1,) variables are passed through unchanged, so both calls share them
    a, b = (F.reshape(derived[k], (1,), inplace=False) for k in
            (("d", "xmax") if p.family == "fp" else ("xmin", "xmax")))
    if p.family == "fp":
        apply = fused.uniform if use_fused else Q.apply_uniform_graph
        y1, y2 = apply(h, a, b, sign), apply(h, a, b, sign)
    else:
        apply = fused.pow2 if use_fused else Q.apply_pow2_graph
        y1, y2 = apply(h, a, b, sign, with_zero), apply(h, a, b, sign, with_zero)
    c1, c2, c3 = (nn.Variable.from_numpy_array(w) for w in (w1, w2, w3))
    loss = F.sum(y1 * c1) + F.sum(y1 * c2) + F.sum(y2 * c3)
    params = nn.get_parameters()
    for v in list(params.values()) + [x0]:
        v.grad.zero()
    loss.forward(clear_no_need_grad=True)
    loss.backward()
    out = x0.g.copy(), {k: v.g.copy() for k, v in params.items()}
    nn.clear_parameters()
    return out


@pytest.mark.parametrize("kind,sign,with_zero", [
    ("parametric_fp_d_xmax", True, False), ("parametric_fp_d_b", False, False),
    ("parametric_pow2_xmin_xmax", True, False), ("parametric_pow2_b_xmax", False, True)])
def test_gradients_accumulate_when_shared(kind, sign, with_zero):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(SHAPE) * 2).astype(np.float32)
    x[x == 0] = 1.0     # keep the signed pow2 gradient free of NaN
    w = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(3)]
    dx_g, g_g = _shared_inputs_run(kind, sign, with_zero, False, x, *w)
    dx_f, g_f = _shared_inputs_run(kind, sign, with_zero, True, x, *w)
    _assert_bit_identical(dx_f, dx_g, "dx")
    for name in g_g:
        np.testing.assert_allclose(g_f[name], g_g[name], rtol=1e-6, atol=0, err_msg=name)
        _assert_bit_identical(g_f[name], g_g[name], name)

    # the accumulated gradients are the sums of what each quantizer call contributes alone
    zero = np.zeros_like(w[0])
    dx_1, g_1 = _shared_inputs_run(kind, sign, with_zero, True, x, w[0], w[1], zero)
    dx_2, g_2 = _shared_inputs_run(kind, sign, with_zero, True, x, zero, zero, w[2])
    assert np.abs(dx_1).sum() > 0 and np.abs(dx_2).sum() > 0
    np.testing.assert_allclose(dx_f, dx_1 + dx_2, rtol=1e-5, atol=1e-6)
    for name in g_f:
        np.testing.assert_allclose(g_f[name], g_1[name] + g_2[name], rtol=1e-4, atol=1e-6,
                                   err_msg=name)


def test_available_only_on_cpu_contexts():
    cpu = nn.Context(backend=["cpu:float"], array_class="CpuCachedArray", device_id="0")
    # get_extension_context("cudnn") would import the CUDA extension; a hand-made context
    # with the backends it would list is enough for the rule.
    cudnn = nn.Context(backend=["cudnn:float", "cuda:float", "cpu:float"],
                       array_class="CudaCachedArray", device_id="0")
    with nn.context_scope(cpu):
        assert fused.available()
    with nn.context_scope(cudnn):
        assert not fused.available()


@pytest.mark.parametrize("kind", KINDS, ids=[Q.PARAMETRIZATIONS[k].paper for k in KINDS])
def test_resnet20_training_gradients_identical(kind):
    """One training step's loss and every parameter gradient of a quantized ResNet-20
    (weights and activations) are bit-identical with fused and graph quantizers."""
    # the official CIFAR-10 defaults, 4-bit, with this quantizer for weights and activations
    cfg = get_experiment("DEFAULT", w_quantize=kind, a_quantize=kind + "_relu")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    t = rng.integers(0, 10, (2, 1)).astype(np.int32)
    results = []
    for use_fused in (False, True):
        nn.clear_parameters()
        nn.seed(7)
        np.random.seed(7)
        logits = resnet_cifar(nn.Variable.from_numpy_array(x), 10, cfg, test=False,
                              fused=use_fused)
        loss = F.mean(F.softmax_cross_entropy(logits, nn.Variable.from_numpy_array(t)))
        params = nn.get_parameters()
        for p in params.values():
            p.grad.zero()
        loss.forward(clear_no_need_grad=True)
        loss.backward(clear_buffer=True)
        results.append((loss.d.copy(), {k: p.g.copy() for k, p in params.items()}))
        nn.clear_parameters()
    (loss_g, grads_g), (loss_f, grads_f) = results
    _assert_bit_identical(loss_f, loss_g, "loss")
    assert list(grads_f) == list(grads_g)
    for name in grads_g:
        _assert_bit_identical(grads_f[name], grads_g[name], name)
