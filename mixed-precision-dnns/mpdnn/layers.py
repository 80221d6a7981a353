"""Quantized convolution, affine and activation layers with the official parameter layout.

A quantized layer keeps the float weights ``W`` (trained) and a non-trained
``W_q`` that shares its buffer with the quantizer's output, so a saved parameter
file holds the quantized weights of the last forward pass, as the official files
do. Weight quantizer parameters live in ``<layer>/Wquant/<kind>/...`` (and
``bquant`` for biases); activation quantizers in ``<scope>/Aquant/<kind>/...``
next to ``<scope>/Asize``, the number of activations per sample that the memory
constraints count.

``qcfg`` is any object with the experiment fields (``w_quantize``,
``w_bitwidth``, ``w_stepsize``, ``a_quantize``, ... see
:mod:`mpdnn.experiments`): the quantizer names are the official ones
(``parametric_fp_d_xmax`` for weights, ``parametric_fp_d_xmax_relu`` for
activations, ``fp``/``pow2`` for fixed quantizers, ``None`` for float).
"""
import nnabla as nn
import nnabla.functions as F
import numpy as np
from nnabla.initializer import ConstantInitializer, UniformInitializer, calc_uniform_lim_glorot
from nnabla.parameter import get_parameter_or_create

from common.errors import UserError
from mpdnn import quantizers as Q

FIXED_WEIGHT_QUANTIZERS = ("fp", "pow2")
FIXED_ACTIVATION_QUANTIZERS = ("fp_relu", "pow2_relu")


def initial_step(weights, bitwidth):
    """Power-of-two step that spans a float layer's largest |weight| with ``bitwidth`` bits
    (one of them the sign): rounded up above 4 bits, down at 4 bits and below (clipping a
    few large weights costs less than a coarse step at low precision)."""
    largest = float(np.max(np.abs(weights))) + float(np.finfo(np.float32).eps)
    levels = 2 ** (bitwidth - 1) - 1
    snap = np.ceil if bitwidth > 4 else np.floor
    return float(2.0 ** snap(np.log2(largest / levels)))


def _pow2_range(xmax, bitwidth, signed_bits, bounds_xmin, bounds_xmax):
    """Initial (xmin, xmax) of a pow2 quantizer from a uniform range; clipped just inside bounds."""
    xmax = 2.0 ** np.round(np.log2(xmax))
    xmin = xmax / 2.0 ** (2.0 ** (bitwidth - signed_bits) - 1)
    xmin = float(np.clip(xmin, bounds_xmin[0] + 1e-5, bounds_xmin[1] - 1e-5))
    xmax = float(np.clip(xmax, bounds_xmax[0] + 1e-5, bounds_xmax[1] - 1e-5))
    return xmin, xmax


def weight_quantizer_settings(qcfg, weights=None):
    """(kind, init, bounds) of the weight quantizer, or None for float weights.

    The step starts from the float weights' range when they exist (``weights`` given,
    e.g. a float network was loaded), else from ``w_stepsize``."""
    kind = qcfg.w_quantize
    if kind is None:
        return None
    bits = qcfg.w_bitwidth
    step = initial_step(weights, bits) if weights is not None else qcfg.w_stepsize
    xmax = step * (2 ** (bits - 1) - 1)
    b_n = (qcfg.w_bitwidth_min, qcfg.w_bitwidth_max)
    b_d = (qcfg.w_stepsize_min, qcfg.w_stepsize_max)
    b_xmin = (qcfg.w_xmin_min, qcfg.w_xmin_max)
    b_xmax = (qcfg.w_xmax_min, qcfg.w_xmax_max)
    if kind in FIXED_WEIGHT_QUANTIZERS:
        return kind, {"n": bits, "d": step, "xmax": xmax}, {}
    p = Q.parametrization(kind)
    if p.family == "pow2":
        xmin, xmax = _pow2_range(xmax, bits, 1, b_xmin, b_xmax)
    values = {"n": bits, "d": step, "xmin": xmin if p.family == "pow2" else None, "xmax": xmax}
    ranges = {"n": b_n, "d": b_d, "xmin": b_xmin, "xmax": b_xmax}
    return p.kind, {k: values[k] for k in p.params}, {k: ranges[k] for k in p.params}


def activation_quantizer_settings(qcfg):
    """(kind, init, bounds) of the activation quantizer (official ``*_relu`` names), or None."""
    name = qcfg.a_quantize
    if name is None:
        return None
    bits, step = qcfg.a_bitwidth, qcfg.a_stepsize
    xmax = step * (2.0 ** bits - 1)
    if name in FIXED_ACTIVATION_QUANTIZERS:
        return name, {"n": bits, "d": step, "xmax": xmax}, {}
    if not name.endswith("_relu"):
        raise UserError(f"activation quantizer {name!r} must be a *_relu quantizer")
    p = Q.parametrization(name[:-len("_relu")])
    b_xmax = (qcfg.a_xmax_min, qcfg.a_xmax_max)
    # The official activation quantizers bound xmin by a_xmax_max, not a_xmin_max; kept so
    # that trained official files behave identically (both are 255 by default).
    b_xmin = (qcfg.a_xmin_min, qcfg.a_xmax_max)
    xmin = None
    if p.family == "pow2":
        xmin, xmax = _pow2_range(xmax, bits, 1, (qcfg.a_xmin_min, qcfg.a_xmin_max), b_xmax)
    values = {"n": bits, "d": step, "xmin": xmin, "xmax": xmax}
    ranges = {"n": (qcfg.a_bitwidth_min, qcfg.a_bitwidth_max),
              "d": (qcfg.a_stepsize_min, qcfg.a_stepsize_max), "xmin": b_xmin, "xmax": b_xmax}
    return p.kind, {k: values[k] for k in p.params}, {k: ranges[k] for k in p.params}


def _fixed_quantizer(kind, init, sign):
    if kind.startswith("fp"):
        return lambda v: F.fixed_point_quantize(v, sign=sign, n=int(init["n"]), delta=init["d"])
    return lambda v: F.pow2_quantize(v, sign=sign, with_zero=not sign, n=int(init["n"]),
                                     m=int(np.round(np.log2(init["xmax"]))))


def _weight_quantizer(settings, scope_name, fused):
    if settings is None:
        return None
    kind, init, bounds = settings
    if kind in FIXED_WEIGHT_QUANTIZERS:
        return _fixed_quantizer(kind, init, sign=True)
    # weights are signed and pow2 weights have no zero level, as in the paper's experiments
    return lambda v: Q.quantize(v, kind, sign=True, with_zero=False, init=init, bounds=bounds,
                                name=scope_name, fused=fused)


def _quantized_parameter(name, shape, init, quantizer):
    """Float parameter ``name`` and, when quantized, ``name_q`` holding its quantized values."""
    w = get_parameter_or_create(name, shape, init, True, True)
    if quantizer is None:
        return w
    w_q = get_parameter_or_create(name + "_q", shape, init, False)
    quantized = quantizer(w)
    quantized.persistent = True
    w_q.data = quantized.data   # share the buffer: W_q is what the last forward computed
    return quantized


def _existing(name):
    return nn.get_parameters(grad_only=False).get(name)


def conv(x, outmaps, kernel, qcfg, pad=None, stride=None, group=1, with_bias=False,
         w_init=None, b_init=None, fused=None):
    """Quantized convolution in scope ``quantized_conv`` (weights ``W``, ``W_q``, ...)."""
    inmaps = x.shape[1]
    shape = (outmaps, inmaps // group) + tuple(kernel)
    if w_init is None:
        w_init = UniformInitializer(calc_uniform_lim_glorot(inmaps, outmaps, tuple(kernel)))
    with nn.parameter_scope("quantized_conv"):
        loaded = _existing("W")
        settings = weight_quantizer_settings(qcfg, None if loaded is None else loaded.d)
        w = _quantized_parameter("W", shape, w_init, _weight_quantizer(settings, "Wquant", fused))
        b = None
        if with_bias:
            b = _quantized_parameter("b", (outmaps,), b_init or ConstantInitializer(),
                                     _weight_quantizer(settings, "bquant", fused))
    return F.convolution(x, w, b, base_axis=1, pad=pad, stride=stride, group=group)


def affine(x, n_out, qcfg, w_init=None, b_init=None, fused=None):
    """Quantized affine layer (bias included) in scope ``quantized_affine``."""
    n_in = int(np.prod(x.shape[1:]))
    if w_init is None:
        w_init = UniformInitializer(calc_uniform_lim_glorot(n_in, n_out))
    with nn.parameter_scope("quantized_affine"):
        loaded = _existing("W")
        settings = weight_quantizer_settings(qcfg, None if loaded is None else loaded.d)
        w = _quantized_parameter("W", (n_in, n_out), w_init,
                                 _weight_quantizer(settings, "Wquant", fused))
        b = _quantized_parameter("b", (n_out,), b_init or ConstantInitializer(),
                                 _weight_quantizer(settings, "bquant", fused))
    return F.affine(x, w, b, base_axis=1)


def activation(x, qcfg, fused=None):
    """ReLU, or its quantized replacement; records ``Asize`` (activations per sample)."""
    get_parameter_or_create("Asize", (), ConstantInitializer(float(np.prod(x.shape[1:]))),
                            need_grad=False)
    settings = activation_quantizer_settings(qcfg)
    if settings is None:
        return F.relu(x)
    kind, init, bounds = settings
    if kind in FIXED_ACTIVATION_QUANTIZERS:
        return _fixed_quantizer(kind, init, sign=False)(x)
    return Q.quantize(x, kind, sign=False, with_zero=True, init=init, bounds=bounds,
                      name="Aquant", fused=fused)
