"""The six learnable quantizer parametrizations of the paper, as nnabla parametric functions.

Every quantizer owns two scalar parameters. The paper names them by what they
control; the official code by their role in the formula:

====  ===========================  ==========================  ======================
paper parameters                    official function           parameter scope
====  ===========================  ==========================  ======================
U1    bitwidth b, step d            fixed_point_quantize_d_b    parametric_fp_d_b
U2    bitwidth b, max q_max         fixed_point_quantize_b_xmax parametric_fp_b_xmax
U3    step d, max q_max             fixed_point_quantize_d_xmax parametric_fp_d_xmax
P1    bitwidth b, max q_max         pow2_quantize_b_xmax        parametric_pow2_b_xmax
P2    bitwidth b, min q_min         pow2_quantize_b_xmin        parametric_pow2_b_xmin
P3    min q_min, max q_max          pow2_quantize_xmin_xmax     parametric_pow2_xmin_xmax
====  ===========================  ==========================  ======================

The bitwidth parameter is called ``n`` and q_min/q_max ``xmin``/``xmax`` (the
official names, so official parameter files load unchanged).

Each quantizer is evaluated in two stages:

1. *derive*: the raw parameters are clipped to their allowed ranges and
   discretised (integer bitwidth by rounding, power-of-two steps/ranges by rounding
   the base-2 logarithm). This is a handful of scalar nnabla operations; every
   rounding uses nnabla's ``round`` whose gradient is the identity
   (straight-through), so gradients reach the raw parameters.
2. *apply*: the derived scalars (step d and range [lo, hi] for uniform
   quantizers; xmin, xmax for power-of-two ones) quantize the whole tensor.
   This elementwise stage is the expensive one; :mod:`mpdnn.fused` implements it
   as one fused CPU function, the graph-composed version here is the reference and
   runs on every context.

Numerics follow the official implementation exactly (they are what the
published numbers were trained with), including where it differs from the
paper's equations:

* the pow2 gradient w.r.t. the input passes only inside [xmin, xmax), and for a
  signed pow2 quantizer it is NaN where the input is exactly 0 (derivative of
  log|x| times 0);
* a raw parameter lying exactly on its clip bound receives zero gradient;
* ``round`` rounds half away from zero.
"""
from dataclasses import dataclass

import nnabla as nn
import nnabla.functions as F
import numpy as np
from nnabla.initializer import ConstantInitializer
from nnabla.parameter import get_parameter_or_create

from common.errors import UserError


@dataclass(frozen=True)
class Parametrization:
    """What a quantizer kind learns and how it is named."""
    kind: str                 # official scope name, e.g. "parametric_fp_d_xmax"
    paper: str                # U1..U3, P1..P3
    family: str               # "fp" (uniform) or "pow2"
    params: tuple             # official parameter names, in creation order
    defaults: dict            # official default init and clip range per parameter


_FP_N = {"n": (8, 2, 16)}
_FP_D = {"d": (2 ** -4, 2 ** -8, 2 ** 8)}
_FP_XMAX = {"xmax": (1.0, 0.001, 10.0)}
_P2_N = {"n": (8, 1, 8)}
_P2_XMAX = {"xmax": (1.0, 2 ** -8, 256.0)}
_P2_XMIN = {"xmin": (2 ** -7, 2 ** -15, 256.0)}

# (init, min, max) per parameter: the official defaults, used when a caller does not set them.
PARAMETRIZATIONS = {p.kind: p for p in [
    Parametrization("parametric_fp_d_b", "U1", "fp", ("n", "d"), {**_FP_N, **_FP_D}),
    Parametrization("parametric_fp_b_xmax", "U2", "fp", ("n", "xmax"), {**_FP_N, **_FP_XMAX}),
    Parametrization("parametric_fp_d_xmax", "U3", "fp", ("d", "xmax"), {**_FP_D, **_FP_XMAX}),
    Parametrization("parametric_pow2_b_xmax", "P1", "pow2", ("n", "xmax"), {**_P2_N, **_P2_XMAX}),
    Parametrization("parametric_pow2_b_xmin", "P2", "pow2", ("n", "xmin"), {**_P2_N, **_P2_XMIN}),
    Parametrization("parametric_pow2_xmin_xmax", "P3", "pow2", ("xmin", "xmax"),
                    {**_P2_XMIN, **_P2_XMAX}),
]}
BY_PAPER_NAME = {p.paper: p for p in PARAMETRIZATIONS.values()}

# The official function names (as in the fixture files) -> scope names.
OFFICIAL_FUNCTIONS = {
    "parametric_fixed_point_quantize_d_b": "parametric_fp_d_b",
    "parametric_fixed_point_quantize_b_xmax": "parametric_fp_b_xmax",
    "parametric_fixed_point_quantize_d_xmax": "parametric_fp_d_xmax",
    "parametric_pow2_quantize_b_xmax": "parametric_pow2_b_xmax",
    "parametric_pow2_quantize_b_xmin": "parametric_pow2_b_xmin",
    "parametric_pow2_quantize_xmin_xmax": "parametric_pow2_xmin_xmax",
}


def parametrization(kind):
    """Look up by official scope name (``parametric_fp_d_xmax``), official function name or
    paper name (``U3``); one-line error otherwise."""
    kind = OFFICIAL_FUNCTIONS.get(kind, kind)
    if kind in PARAMETRIZATIONS:
        return PARAMETRIZATIONS[kind]
    if kind in BY_PAPER_NAME:
        return BY_PAPER_NAME[kind]
    known = ", ".join(list(PARAMETRIZATIONS) + list(BY_PAPER_NAME))
    raise UserError(f"unknown quantizer {kind!r}; known: {known}")


# ----------------------------------------------------------------------------- scalar stage

def _clip(v, lo, hi):
    # maximum/minimum_scalar give zero gradient on the bound itself (official behaviour).
    return F.minimum_scalar(F.maximum_scalar(v, lo), hi)


def _pow2(v):
    """Nearest power of two in the log domain (round half away from zero of log2|v|)."""
    return 2. ** F.round(F.log(F.abs(v)) / np.log(2.))


def _pow2_positive(v):
    # The uniform quantizers' step is positive by construction; no abs (as the official code).
    return 2. ** F.round(F.log(v) / np.log(2.))


def derive(kind, raw, bounds, sign, with_zero=False):
    """Derived scalars of quantizer ``kind`` from its raw parameter variables.

    ``raw`` maps parameter name -> Variable, ``bounds`` name -> (min, max).
    Uniform: returns ``{"d", "xmax"}`` (the range is [-xmax, xmax] if signed, else [0, xmax]).
    Pow2: returns ``{"xmin", "xmax"}`` (smallest and largest magnitude).
    """
    p = parametrization(kind)
    clipped = {k: _clip(raw[k], *bounds[k]) for k in p.params}
    if "n" in clipped:
        # integer bitwidth; the sign (and the pow2 zero) each take one of its bits
        bits = F.round(clipped["n"]) - (1 if sign else 0)
        if p.family == "pow2" and with_zero:
            bits = bits - 1
    if p.family == "fp":
        if p.kind == "parametric_fp_d_b":
            d = _pow2_positive(clipped["d"])
            xmax = d * (2 ** bits - 1)
        elif p.kind == "parametric_fp_b_xmax":
            xmax = clipped["xmax"]
            d = _pow2_positive(xmax / (2 ** bits - 1))
        else:
            d = _pow2_positive(clipped["d"])
            xmax = clipped["xmax"]
        return {"d": d, "xmax": xmax}
    if p.kind == "parametric_pow2_b_xmax":
        xmax = _pow2(clipped["xmax"])
        xmin = (2 ** (-(2 ** bits) + 1)) * xmax
    elif p.kind == "parametric_pow2_b_xmin":
        xmin = _pow2(clipped["xmin"])
        xmax = xmin * (2 ** ((2 ** bits) - 1))
    else:
        xmin = _pow2(clipped["xmin"])
        xmax = _pow2(clipped["xmax"])
    return {"xmin": xmin, "xmax": xmax}


# ----------------------------------------------------------------------------- tensor stage

def _expand(v, shape):
    return F.broadcast(F.reshape(v, (1,) * len(shape), inplace=False), shape=shape)


def apply_uniform_graph(x, d, xmax, sign):
    """Reference (graph-composed) uniform quantization: d * round(clip(x, lo, xmax) / d)."""
    shape = x.shape
    if sign:
        lo = -xmax
    else:
        lo = nn.Variable((1,), need_grad=False)
        lo.d = 0.
    d, lo, hi = (_expand(v, shape) for v in (d, lo, xmax))
    return d * F.round(F.clip_by_value(x, lo, hi) / d)


def apply_pow2_graph(x, xmin, xmax, sign, with_zero):
    """Reference (graph-composed) power-of-two quantization of magnitudes into
    {xmin, 2 xmin, ..., xmax} (plus 0 when ``with_zero``), keeping the sign."""
    shape = x.shape
    xmin, xmax = _expand(xmin, shape), _expand(xmax, shape)
    if not sign:
        x = F.relu(x)
    mag = F.abs(x)
    sgn = F.sign(x)
    sgn.need_grad = False
    inside = F.greater_equal(mag, xmin) * F.less(mag, xmax)
    above = F.greater_equal(mag, xmax)
    if with_zero:
        # magnitudes below xmin/sqrt(2) become 0, those between go up to xmin
        below = F.greater_equal(mag, xmin / np.sqrt(2)) * F.less(mag, xmin)
    else:
        below = F.less(mag, xmin)
    for mask in (below, inside, above):
        mask.need_grad = False
    return sgn * (xmin * below + _pow2(mag) * inside + xmax * above)


# ----------------------------------------------------------------------------- public API

def _backend_apply(x, family, derived, sign, with_zero, fused):
    if fused is None:
        from mpdnn import fused as fused_module
        fused = fused_module.available()
    if fused:
        from mpdnn import fused as fused_module
        if family == "fp":
            return fused_module.uniform(x, derived["d"], derived["xmax"], sign)
        return fused_module.pow2(x, derived["xmin"], derived["xmax"], sign, with_zero)
    if family == "fp":
        return apply_uniform_graph(x, derived["d"], derived["xmax"], sign)
    return apply_pow2_graph(x, derived["xmin"], derived["xmax"], sign, with_zero)


def quantizer_parameters(kind, init=None, bounds=None, fix_parameters=False):
    """Create (or fetch, in the current parameter scope) the raw parameters of ``kind``.

    ``init`` / ``bounds`` override the official defaults per parameter name.
    Returns (raw variables dict, bounds dict)."""
    p = parametrization(kind)
    init, bounds = dict(init or {}), dict(bounds or {})
    unknown = (set(init) | set(bounds)) - set(p.params)
    if unknown:
        raise UserError(f"quantizer {p.kind} ({p.paper}) has parameters {', '.join(p.params)}, "
                        f"not {', '.join(sorted(unknown))}")
    raw, resolved = {}, {}
    with nn.parameter_scope(p.kind):
        for name in p.params:
            default_init, lo, hi = p.defaults[name]
            value = init.get(name, default_init)
            raw[name] = get_parameter_or_create(name, (), ConstantInitializer(value),
                                                need_grad=True, as_need_grad=not fix_parameters)
            resolved[name] = tuple(bounds.get(name, (lo, hi)))
    return raw, resolved


def quantize(x, kind, sign=True, with_zero=False, init=None, bounds=None, name=None,
             fix_parameters=False, fused=None):
    """Quantize ``x`` with a learnable quantizer.

    Parameters are created as ``[name/]<kind>/<param>`` in the current scope,
    e.g. ``Aquant/parametric_fp_d_xmax/xmax``. ``sign=False`` is the ReLU
    variant (negative inputs map to 0). ``with_zero`` only matters for pow2.
    ``fused``: True = fused CPU function, False = graph-composed, None = fused when
    the default context is CPU (both give the same values and input gradients).
    """
    p = parametrization(kind)
    scope = nn.parameter_scope(name) if name else _null_scope()
    with scope:
        raw, resolved = quantizer_parameters(kind, init, bounds, fix_parameters)
    derived = derive(p.kind, raw, resolved, sign, with_zero)
    return _backend_apply(x, p.family, derived, sign, with_zero, fused)


class _null_scope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
