"""Fused CPU versions of the elementwise quantization stage.

The graph-composed quantizer (:mod:`mpdnn.quantizers`) runs about ten nnabla
functions over the whole tensor (broadcasts, clip, divide, round, multiply, masks
...), each allocating a tensor-sized buffer; on the largest activation of a
ResNet-20 at batch 128 that dominates a training step. Here the same arithmetic
is one ``PythonFunction`` per quantizer call: numpy on the whole tensor, float32
operation for float32 operation, so values and input gradients are bit-identical
to the graph version (the tests check it), and the gradients of the two scalar
inputs are summed sequentially in float32 as nnabla's broadcast backward does.

Used on CPU contexts only: a numpy function on a CUDA context would copy every
activation to the host and back, so on GPUs the graph version runs instead.
"""
import numpy as np
import nnabla as nn
from nnabla.function import PythonFunction

_F32 = np.float32
# nnabla evaluates these constants in float32 inside its kernels.
_INV_LN2 = _F32(1.0 / np.log(2.0))   # MulScalar(1/ln 2) in the log2
_LN2 = _F32(np.log(_F32(2.0)))       # RPowScalar(2)'s derivative factor
_INV_SQRT2 = 1.0 / np.sqrt(2.0)


def available():
    """True when the current default context computes on the CPU."""
    backends = nn.get_current_context().backend
    return all(b.split(":")[0] == "cpu" for b in backends)


def _round_half_away(v):
    """nnabla's round (std::round): halves go away from zero; exact for float32."""
    mag = np.abs(v)
    whole = np.floor(mag)
    whole += (mag - whole) >= 0.5   # mag - floor(mag) is exact in binary floating point
    return np.copysign(whole, v)


def _log2_rounded(mag):
    """round(log(mag) * (1/ln 2)) as nnabla computes it in float32 (log correctly rounded)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.log(mag.astype(np.float64)).astype(_F32)
        return _round_half_away(lg * _INV_LN2), lg


def _sum(v):
    """Sequential float32 sum, the order nnabla's CPU broadcast backward accumulates in."""
    v = np.asarray(v, dtype=_F32).ravel()
    return np.cumsum(v, dtype=_F32)[-1] if v.size else _F32(0)


def _scalar(var):
    return _F32(var.data.get_data("r").reshape(()))


def _accumulate(var, value, accum):
    g = var.grad.get_data("rw" if accum else "w")
    if accum:
        g += np.asarray(value, dtype=g.dtype).reshape(g.shape)
    else:
        g[...] = np.asarray(value, dtype=g.dtype).reshape(g.shape)


class _Quantize(PythonFunction):
    """Shared plumbing: one output shaped like the first input; backward reads inputs only."""

    def min_outputs(self):
        return 1

    def grad_depends_output_data(self, i, o):
        return False

    def grad_depends_input_data(self, i, j):
        return True

    def setup_impl(self, inputs, outputs):
        outputs[0].reset_shape(inputs[0].shape, True)


class _UniformQuantize(_Quantize):
    """y = d * round(clip(x, lo, xmax) / d), lo = -xmax (signed) or 0; inputs (x, d, xmax)."""

    def __init__(self, ctx, sign):
        super().__init__(ctx)
        self.sign = bool(sign)

    @property
    def name(self):
        return "FusedUniformQuantize"

    def _bounds(self, xmax):
        return (-xmax if self.sign else _F32(0.0)), xmax

    def forward_impl(self, inputs, outputs):
        x = inputs[0].data.get_data("r")
        d, xmax = _scalar(inputs[1]), _scalar(inputs[2])
        lo, hi = self._bounds(xmax)
        c = np.minimum(np.maximum(x, lo), hi)
        y = outputs[0].data.get_data("w")
        np.multiply(d, _round_half_away(c / d), out=y)

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        x = inputs[0].data.get_data("r")
        dy = outputs[0].grad.get_data("r")
        d, xmax = _scalar(inputs[1]), _scalar(inputs[2])
        lo, hi = self._bounds(xmax)
        m = np.maximum(x, lo)
        below_hi = m < hi          # at a tie the graph's minimum2 sends the gradient to the bound
        c = np.where(below_hi, m, hi)
        q = c / d
        g_c = (dy * d) / d         # through d * round(.) (straight-through) and ./d
        g_m = np.where(below_hi, g_c, _F32(0))
        above_lo = x > lo          # maximum2: ties go to the bound as well
        if propagate_down[0]:
            _accumulate(inputs[0], np.where(above_lo, g_m, _F32(0)), accum[0])
        if propagate_down[1]:
            r = _round_half_away(q)
            # both uses of d accumulate elementwise into one broadcast gradient, then one sum
            g_d = _sum(dy * r + ((-dy * d) * c) / (d * d))
            _accumulate(inputs[1], g_d, accum[1])
        if propagate_down[2]:
            g_hi = _sum(np.where(below_hi, _F32(0), g_c))
            if self.sign:  # lo = -xmax
                g_hi = g_hi - _sum(np.where(above_lo, _F32(0), g_m))
            _accumulate(inputs[2], g_hi, accum[2])


class _Pow2Quantize(_Quantize):
    """Magnitudes to {xmin, 2 xmin, ..., xmax} (and 0 with ``with_zero``), keeping the sign;
    inputs (x, xmin, xmax). nnabla's sign(0) is +1, so without zero an exact 0 maps to xmin."""

    def __init__(self, ctx, sign, with_zero):
        super().__init__(ctx)
        self.sign, self.with_zero = bool(sign), bool(with_zero)

    @property
    def name(self):
        return "FusedPow2Quantize"

    def _masks(self, mag, xmin, xmax):
        inside = (mag >= xmin) & (mag < xmax)
        above = mag >= xmax
        if self.with_zero:
            below = (mag >= _F32(xmin * _F32(_INV_SQRT2))) & (mag < xmin)
        else:
            below = mag < xmin
        return below, inside, above

    def _prepare(self, inputs):
        x = inputs[0].data.get_data("r")
        if not self.sign:
            x = np.maximum(x, _F32(0))
        mag = np.abs(x)
        sgn = np.where(x < 0, _F32(-1), _F32(1))
        xmin, xmax = _scalar(inputs[1]), _scalar(inputs[2])
        return x, mag, sgn, xmin, xmax

    def forward_impl(self, inputs, outputs):
        x, mag, sgn, xmin, xmax = self._prepare(inputs)
        below, inside, above = self._masks(mag, xmin, xmax)
        rounded, _ = _log2_rounded(mag)
        level = np.where(inside, np.exp2(rounded), _F32(0))
        level = np.where(below, xmin, level)
        level = np.where(above, xmax, level)
        y = outputs[0].data.get_data("w")
        np.multiply(sgn, level.astype(_F32), out=y)

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        x_in = inputs[0].data.get_data("r")
        x, mag, sgn, xmin, xmax = self._prepare(inputs)
        below, inside, above = self._masks(mag, xmin, xmax)
        dy = outputs[0].grad.get_data("r")
        g = dy * sgn
        if propagate_down[0]:
            rounded, _ = _log2_rounded(mag)
            level = np.exp2(rounded).astype(_F32)
            g_level = g * inside.astype(_F32)
            with np.errstate(divide="ignore", invalid="ignore"):
                g_log = ((g_level * level) * _LN2) * _INV_LN2
                g_mag = g_log / mag        # 0/0 = NaN at x == 0, as in the graph
            g_x = np.where(x < 0, -g_mag, g_mag)
            if not self.sign:          # ReLU in front: passes only where the input was > 0
                g_x = np.where(x_in > 0, g_x, _F32(0))
            _accumulate(inputs[0], g_x, accum[0])
        if propagate_down[1]:
            _accumulate(inputs[1], _sum(np.where(below, g, _F32(0))), accum[1])
        if propagate_down[2]:
            _accumulate(inputs[2], _sum(np.where(above, g, _F32(0))), accum[2])


def _as_vector(v):
    import nnabla.functions as F
    return F.reshape(v, (1,), inplace=False) if v.shape == () else v


def uniform(x, d, xmax, sign):
    """Fused uniform quantization with scalar Variables ``d`` and ``xmax``."""
    fn = _UniformQuantize(nn.get_current_context(), sign)
    return fn(x, _as_vector(d), _as_vector(xmax))


def pow2(x, xmin, xmax, sign, with_zero):
    """Fused power-of-two quantization with scalar Variables ``xmin`` and ``xmax``."""
    fn = _Pow2Quantize(nn.get_current_context(), sign, with_zero)
    return fn(x, _as_vector(xmin), _as_vector(xmax))
