"""Fused CPU versions of the elementwise quantization stage.

The graph-composed quantizer (:mod:`mpdnn.quantizers`) runs about ten nnabla
functions over the whole tensor (broadcasts, clip, divide, round, multiply, masks
...), each allocating a tensor-sized buffer; on the largest activation of a
ResNet-20 at batch 128 that dominates a training step. Here the same arithmetic
is one ``PythonFunction`` per quantizer call, in numpy, and bit-identical to the
graph version: outputs, input gradients (including where they are NaN and the sign
of zeros) and parameter gradients (summed sequentially in float32 from +0, the
order of nnabla's CPU broadcast backward; the scalar inputs are wired as in the
graph so that nnabla accumulates their contributions in the same order).

Speed comes from a fast path for the usual case, chosen per call from the scalar
parameters: the power-of-two step ``d`` turns ``/ d`` into an exact multiplication,
the power-of-two levels of pow2 quantizers are computed on the float32 bit patterns
(add a carry into the exponent when the mantissa is at least that of sqrt 2, then
clamp to [xmin, xmax] as integers; mantissas close to that boundary are decided by a
per-exponent table computed once with nnabla's own log/round kernels), sparse masked
sums only visit the masked elements, no data-dependent ``np.where`` runs over the
whole tensor, and the work arrays are reused between calls. Degenerate parameters
(xmin > xmax, infinite or non-power-of-two levels, huge steps) and NaN inputs take a
literal transcription of the graph instead.

Used on CPU contexts only: a numpy function on a CUDA context would copy every
activation to the host and back, so on GPUs the graph version runs instead.
"""
import nnabla as nn
import nnabla.functions as F
import numpy as np
from nnabla.function import PythonFunction

_F32 = np.float32
_I32 = np.int32
# nnabla evaluates these constants in float32 inside its kernels.
_INV_LN2 = _F32(1.0 / np.log(2.0))       # MulScalar(1/ln 2) in the log2
_LN2 = _F32(np.log(_F32(2.0)))           # RPowScalar(2)'s derivative factor
_INV_SQRT2 = _F32(1.0 / np.sqrt(2.0))    # MulScalar(1/sqrt 2) of the zero threshold
_HALF = _F32(0.5)
_BELOW_HALF = np.nextafter(_HALF, _F32(0))  # 0.49999997
_ZERO = _F32(0.0)

# float32 bit patterns, as int32
_SIGN = _I32(-2 ** 31)
_ABS = _I32(0x7FFFFFFF)
_EXP = _I32(0x7F800000)
_MANT = _I32(0x007FFFFF)
_MIN_NORMAL = 0x00800000                 # 2^-126
_SQRT2_MANT = 0x003504F3                 # mantissa field of float32(sqrt 2)
_CARRY = _I32(0x00800000 - _SQRT2_MANT)  # carries into the exponent iff mantissa >= sqrt 2's
# Mantissas this close to sqrt 2's are rounded by nnabla's float32 log, not by the rule
# above (on this libm the boundary moves by up to ~70 units with the exponent).
_WINDOW = 0x1000
_WINDOW_LO = _I32(_SQRT2_MANT - _WINDOW)
_P2_LIMIT = 0x7F000000                   # 2^127: larger magnitudes may round to 2^128 = inf

_CPU = nn.Context(backend=["cpu:float"], array_class="CpuCachedArray", device_id="0")


def available():
    """True when the current default context computes on the CPU."""
    backends = nn.get_current_context().backend
    return all(b.split(":")[0] == "cpu" for b in backends)


# ----------------------------------------------------------------------------- helpers

def _scalar(var):
    return _F32(var.data.get_data("r").reshape(()))


def _bits(v):
    return int(np.asarray(v, dtype=_F32).view(_I32))


def _is_pow2_or_zero(b):
    """Bit pattern ``b`` of a float32 that is +0 or a positive power of two (subnormals too)."""
    if b == 0:
        return True
    if 0 < b < _MIN_NORMAL:
        return b & (b - 1) == 0
    return _MIN_NORMAL <= b < 0x7F800000 and b & 0x7FFFFF == 0


class _Scratch:
    """Tensor-sized work buffers, reused by every fused call (nnabla runs them one at a
    time; a graph must not be run from two threads at once).

    Fresh multi-megabyte numpy arrays cost more than the arithmetic done in them (the
    kernel zeroes their pages on first touch), so the fast paths work in these."""

    def __init__(self):
        self._buffers = {}

    def __call__(self, slot, shape, dtype=_F32):
        dtype = np.dtype(dtype)
        n = int(np.prod(shape)) * dtype.itemsize
        buf = self._buffers.get(slot)
        if buf is None or buf.size < n:
            buf = np.empty(max(n, 1), np.uint8)
            self._buffers[slot] = buf
        return buf[:n].view(dtype).reshape(shape)


_scratch = _Scratch()


def _round_literal(v):
    """nnabla's round (std::round): halves go away from zero; exact for every float32."""
    mag = np.abs(v)
    whole = np.floor(mag)
    np.subtract(mag, whole, out=mag)           # mag - floor(mag) is exact in binary floating point
    np.add(whole, np.greater_equal(mag, _HALF), out=whole)
    return np.copysign(whole, v, out=whole)


def _round_into(v, out, tmp, signed):
    """std::round of float32 ``v`` into ``out`` for |v| < 2^23 (``v``, ``out``, ``tmp``
    distinct; ``v`` >= +0 unless ``signed``). floor(|v| + 1/2) is exact there except at
    0.49999997, whose sum rounds up to 1."""
    a = np.bitwise_and(v.view(_I32), _ABS, out=tmp.view(_I32)).view(_F32) if signed else v
    np.add(a, _HALF, out=out)
    np.floor(out, out=out)
    just_below = np.equal(a, _BELOW_HALF, out=_scratch("round_m", v.shape, bool))
    if just_below.any():
        out[just_below] = _ZERO
    if signed:                                 # sign of v, also on results of 0
        np.bitwise_and(v.view(_I32), _SIGN, out=tmp.view(_I32))
        np.bitwise_or(out.view(_I32), tmp.view(_I32), out=out.view(_I32))
    return out


def _seq_sum(v):
    """Sequential float32 sum from +0, the order nnabla's CPU broadcast backward accumulates in.

    Adding a zero never changes a non-zero partial sum and a sum started at +0 is never -0,
    so the zeros of a masked product can be left out."""
    v = np.ravel(v)
    if not v.size:
        return _ZERO
    return np.cumsum(v, dtype=_F32, out=_scratch("cumsum", v.shape))[-1] + _ZERO


def _masked_sum(g, mask, x=None):
    """Sequential sum of ``g * mask``; with ``x``, of ``g * sign(x)`` (sign(0) = +1)."""
    mask = mask.reshape(-1)
    k = np.count_nonzero(mask)
    if k == 0:
        return _ZERO
    g = g.reshape(-1)
    if 3 * k < mask.size:                      # visit the masked elements only
        idx = np.flatnonzero(mask)
        vals = g[idx]
        if x is not None:
            np.negative(vals, out=vals, where=x.reshape(-1)[idx] < 0)
        return _seq_sum(vals)
    vals = np.multiply(g, mask, out=_scratch("sum_v", g.shape))
    if x is not None:                          # flip the sign bit where x < 0
        neg = np.less(x.reshape(-1), _ZERO, out=_scratch("sum_m", g.shape, bool))
        flip = np.multiply(neg, _SIGN, out=_scratch("sum_i", g.shape, _I32))
        np.bitwise_xor(vals.view(_I32), flip, out=vals.view(_I32))
    return _seq_sum(vals)


def _write(var, value, accum, canonical):
    """Store (or add) an input gradient as nnabla's last kernel would: without ``accum`` it
    writes ``0 + v`` (so -0 becomes +0); with ``accum`` it adds ``v``, or ``0 + v`` when
    ``canonical`` (the value went through a non-accumulating kernel first)."""
    g = var.grad.get_data("rw" if accum else "w")
    value = np.asarray(value, dtype=g.dtype).reshape(g.shape)
    if accum:
        if canonical:
            value = value + _ZERO
        g += value
    else:
        np.add(value, _ZERO, out=g)


def _write_scalar(var, value, accum):
    g = var.grad.get_data("rw" if accum else "w")
    if accum:
        g += _F32(value)
    else:
        g[...] = _F32(value)


# ----------------------------------------------------------------------------- pow2 levels

def _nnabla_pow2(mag):
    """2 ** round(log(|mag|) / ln 2) with nnabla's own CPU kernels (as the graph computes it)."""
    with nn.context_scope(_CPU):
        a = nn.NdArray.from_numpy_array(np.ascontiguousarray(mag, dtype=_F32))
        r = F.r_pow_scalar(F.round(F.mul_scalar(F.log(F.abs(a)), 1.0 / np.log(2.0))), 2.0)
        return np.array(r.data, dtype=_F32)


_thresholds = []


def _boundary_table():
    """Per exponent field of a normal float32, the smallest mantissa (inside the window
    around sqrt 2's) whose level nnabla rounds up; computed once with nnabla's kernels."""
    if not _thresholds:
        exps = np.arange(1, 255, dtype=_I32)
        mants = _WINDOW_LO + np.arange(2 * _WINDOW, dtype=_I32)
        bits = (exps[:, None] << 23) | mants[None, :]
        up = (_nnabla_pow2(bits.view(_F32)).view(_I32) >> 23) == exps[:, None] + 1
        first = np.argmax(up, axis=1)
        # the rule "mantissa >= sqrt 2's" must hold at the window's edges, with one switch
        if up[:, 0].any() or not up[:, -1].all() or \
                not np.array_equal(up.sum(axis=1), 2 * _WINDOW - first):
            raise RuntimeError("log2 rounding of this libm does not fit the fused quantizer")
        table = np.zeros(256, _I32)
        table[1:255] = _WINDOW_LO + first
        _thresholds.append(table)
    return _thresholds[0]


def _pow2_bits(mb, subnormals, out=None):
    """int32 bits of the nearest power of two of the non-negative float32s with bits ``mb``
    (round of the log2 as nnabla computes it; +0 -> +0, +inf -> +inf). ``subnormals``:
    also evaluate subnormal magnitudes exactly (otherwise their result is 0 or 2^-126)."""
    p = np.add(mb, _CARRY, out=out)
    np.bitwise_and(p, _EXP, out=p)
    t = np.subtract(mb, _WINDOW_LO, out=_scratch("p2_t", mb.shape, _I32))
    np.bitwise_and(t, _MANT, out=t)
    near = np.less(t, _I32(2 * _WINDOW), out=_scratch("p2_m", mb.shape, bool))
    if subnormals:
        near |= (mb > 0) & (mb < _MIN_NORMAL)
    idx = np.flatnonzero(near)
    if idx.size:
        p_flat = p.reshape(-1)
        m = mb.reshape(-1)[idx]
        e = m >> 23
        normal = (e > 0) & (e < 255)
        up = (m & _MANT) >= _boundary_table()[e]
        p_flat[idx] = np.where(normal, (e + up) << 23, 0).astype(_I32)
        odd = idx[~normal]                 # subnormal, infinite or NaN: ask nnabla
        if odd.size:
            p_flat[odd] = _nnabla_pow2(mb.reshape(-1)[odd].view(_F32)).view(_I32)
    return p


def _pow2_float(mag):
    """The float32 level 2 ** round(log2 mag) for every element (NaN stays NaN)."""
    mb = mag.view(_I32)
    p = _pow2_bits(mb, subnormals=True, out=np.empty_like(mb)).view(_F32)
    nan = mb > 0x7F800000
    if nan.any():
        p[nan] = np.nan
    return p


# ----------------------------------------------------------------------------- functions

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
    """y = d * round(min(max(x, lo), hi) / d). Inputs (x, d, lo, hi) when signed (lo = -xmax
    as a separate input, as in the graph), (x, d, hi) with lo = 0 otherwise."""

    def __init__(self, ctx, sign):
        super().__init__(ctx)
        self.sign = bool(sign)

    @property
    def name(self):
        return "FusedUniformQuantize"

    def _scalars(self, inputs):
        d = _scalar(inputs[1])
        if self.sign:
            return d, _scalar(inputs[2]), _scalar(inputs[3])
        return d, _ZERO, _scalar(inputs[2])

    def _fast(self, x, d, lo, hi):
        """Whether the fast path is exact: d a power of two with 1/d, d*d and 1/(d*d) normal,
        a negative lower bound (or the ReLU's +0), a positive upper bound, fewer than 2^22
        steps to either bound, no NaN in x."""
        db = _bits(d)
        if not (_is_pow2_or_zero(db) and (127 - 60) << 23 <= db <= (127 + 60) << 23):
            return False
        if not (hi > 0 and (lo < 0 if self.sign else True)):
            return False
        if max(-float(lo), float(hi)) / float(d) >= 2.0 ** 22:   # |c / d| < 2^23 for rounding
            return False
        return not np.isnan(np.max(x)) if x.size else True

    def _lower(self, x, lo, out):
        """max(x, lo) as nnabla's Maximum2 ((x > lo) ? x : lo); for lo = +0 on the bits,
        so that -0 becomes +0."""
        if self.sign:
            return np.maximum(x, lo, out=out)
        np.maximum(x.view(_I32), _I32(0), out=out.view(_I32))
        return out

    def forward_impl(self, inputs, outputs):
        x = inputs[0].data.get_data("r")
        d, lo, hi = self._scalars(inputs)
        y = outputs[0].data.get_data("w")
        if not self._fast(x, d, lo, hi):
            y[...] = self._forward_literal(x, d, lo, hi)
            return
        c = self._lower(x, lo, _scratch("a", x.shape))
        np.minimum(c, hi, out=c)
        c *= _F32(1.0) / d                     # == c / d: d is a power of two
        _round_into(c, y, _scratch("b", x.shape), self.sign)
        y *= d

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        x = inputs[0].data.get_data("r")
        dy = outputs[0].grad.get_data("r")
        d, lo, hi = self._scalars(inputs)
        hi_index = 3 if self.sign else 2
        if not self._fast(x, d, lo, hi):
            return self._backward_literal(inputs, x, dy, d, lo, hi, propagate_down, accum)
        shape = x.shape
        m = self._lower(x, lo, _scratch("a", shape))
        below_hi = np.less(m, hi, out=_scratch("m1", shape, bool))
        above_lo = np.greater(x, lo, out=_scratch("m2", shape, bool))
        g_q = np.multiply(dy, d, out=_scratch("b", shape))    # through d * round(.) (STE)
        g_c = np.divide(g_q, d, out=_scratch("c", shape))     # and ./ d
        if propagate_down[0]:
            keep = np.logical_and(below_hi, above_lo, out=_scratch("m3", shape, bool))
            _write(inputs[0], np.multiply(g_c, keep, out=_scratch("d", shape)), accum[0],
                   canonical=False)
        if propagate_down[1]:
            c = np.minimum(m, hi, out=m)
            q = np.multiply(c, _F32(1.0) / d, out=_scratch("d", shape))
            e = _round_into(q, _scratch("e", shape), _scratch("f", shape), self.sign)
            np.multiply(dy, e, out=e)                          # d * round(.)
            np.multiply(g_q, c, out=g_q)                       # ./ d: -g_q * c / (d * d)
            g_q *= -(_F32(1.0) / (d * d))
            e += g_q
            _write_scalar(inputs[1], _seq_sum(e), accum[1])
        if propagate_down[hi_index]:
            at_hi = np.logical_not(below_hi, out=_scratch("m3", shape, bool))
            _write_scalar(inputs[hi_index], _masked_sum(g_c, at_hi), accum[hi_index])
        if self.sign and propagate_down[2]:
            at_lo = np.logical_not(above_lo, out=above_lo)
            at_lo &= below_hi
            _write_scalar(inputs[2], _masked_sum(g_c, at_lo), accum[2])

    # Literal transcriptions of the graph (Maximum2, Minimum2, Div2, Round, Mul2), for
    # parameters or inputs outside the fast path's assumptions.
    def _forward_literal(self, x, d, lo, hi):
        m = np.where(x > lo, x, lo)
        c = np.where(m < hi, m, hi)
        with np.errstate(all="ignore"):
            return d * _round_literal(c / d)

    def _backward_literal(self, inputs, x, dy, d, lo, hi, propagate_down, accum):
        hi_index = 3 if self.sign else 2
        with np.errstate(all="ignore"):
            m = np.where(x > lo, x, lo)
            c = np.where(m < hi, m, hi)
            g_q = dy * d
            g_c = g_q / d
            g_m = (m < hi).astype(_F32) * g_c
            if propagate_down[0]:
                _write(inputs[0], (x > lo).astype(_F32) * g_m, accum[0], canonical=False)
            if propagate_down[1]:
                e = dy * _round_literal(c / d) + ((-g_q) * c) / (d * d)
                _write_scalar(inputs[1], _seq_sum(e), accum[1])
            if propagate_down[hi_index]:
                _write_scalar(inputs[hi_index], _seq_sum((m >= hi).astype(_F32) * g_c),
                              accum[hi_index])
            if self.sign and propagate_down[2]:
                _write_scalar(inputs[2], _seq_sum((x <= lo).astype(_F32) * g_m), accum[2])


class _Pow2Quantize(_Quantize):
    """Magnitudes to {xmin, 2 xmin, ..., xmax} (and 0 with ``with_zero``), keeping the sign;
    inputs (x, xmin, xmax). nnabla's sign(0) is +1, so without zero an exact 0 maps to xmin.

    Graph: y = sign(x) * (xmin * below + 2^round(log2 |x|) * inside + xmax * above) with
    inside = [xmin, xmax), above = [xmax, inf), below = [0, xmin) (or [xmin / sqrt 2, xmin)
    with zero), x = relu(x) first when unsigned."""

    def __init__(self, ctx, sign, with_zero):
        super().__init__(ctx)
        self.sign, self.with_zero = bool(sign), bool(with_zero)

    @property
    def name(self):
        return "FusedPow2Quantize"

    def _magnitude_bits(self, x, out):
        xi = x.view(_I32)
        if self.sign:
            return xi, np.bitwise_and(xi, _ABS, out=out)
        return xi, np.maximum(xi, _I32(0), out=out)   # relu on the bits: negatives, -0 -> +0

    def _fast(self, mb, xmin, xmax):
        """Fast path: 0 <= xmin <= xmax with xmin 0 or a power of two, xmax a normal power of
        two, every |x| < 2^127 (so no level overflows and the masks are disjoint)."""
        lo, hi = _bits(xmin), _bits(xmax)
        return (_is_pow2_or_zero(lo) and hi >= _MIN_NORMAL and _is_pow2_or_zero(hi)
                and lo <= hi and (mb.size == 0 or int(mb.max()) < _P2_LIMIT))

    def _zero_threshold(self, xmin):
        return _F32(xmin * _INV_SQRT2)

    def forward_impl(self, inputs, outputs):
        x = inputs[0].data.get_data("r")
        xmin, xmax = _scalar(inputs[1]), _scalar(inputs[2])
        y = outputs[0].data.get_data("w")
        xi, mb = self._magnitude_bits(x, _scratch("a", x.shape, _I32))
        if not self._fast(mb, xmin, xmax):
            y[...] = self._forward_literal(x, xmin, xmax)
            return
        lo = _bits(xmin)
        yb = y.view(_I32)
        level = _pow2_bits(mb, lo < _MIN_NORMAL, out=_scratch("b", x.shape, _I32))
        # nearest power of two, clamped: below xmin -> xmin, from xmax on -> xmax
        np.clip(level, _I32(lo), _I32(_bits(xmax)), out=yb)
        if self.with_zero:
            thr = _I32(_bits(self._zero_threshold(xmin)))
            np.multiply(yb, np.greater_equal(mb, thr, out=_scratch("m1", x.shape, bool)),
                        out=yb)
        if self.sign:
            np.bitwise_or(yb, np.bitwise_and(xi, _SIGN, out=level), out=yb)
            neg_zero = np.equal(xi, _SIGN, out=_scratch("m1", x.shape, bool))
            if neg_zero.any():                 # sign(-0) is +1
                yb[neg_zero] &= _ABS

    def backward_impl(self, inputs, outputs, propagate_down, accum):
        x = inputs[0].data.get_data("r")
        dy = outputs[0].grad.get_data("r")
        xmin, xmax = _scalar(inputs[1]), _scalar(inputs[2])
        shape = x.shape
        xi, mb = self._magnitude_bits(x, _scratch("a", shape, _I32))
        if not self._fast(mb, xmin, xmax):
            return self._backward_literal(inputs, x, dy, xmin, xmax, propagate_down, accum)
        lo, hi = _I32(_bits(xmin)), _I32(_bits(xmax))
        signs = x if self.sign else None
        if propagate_down[0]:
            # d/dx of 2^round(log|x| / ln 2) inside [xmin, xmax): the sign of x cancels with
            # sign(x) in front, leaving ((dy * level) * ln 2) * (1 / ln 2) / |x|.
            inside = np.greater_equal(mb, lo, out=_scratch("m1", shape, bool))
            inside &= np.less(mb, hi, out=_scratch("m2", shape, bool))
            level = _pow2_bits(mb, lo < _MIN_NORMAL, out=_scratch("b", shape, _I32))
            np.multiply(level, inside, out=level)
            g = np.multiply(dy, level.view(_F32), out=_scratch("c", shape))
            g *= _LN2
            g *= _INV_LN2
            if self.sign:
                den = mb.view(_F32)            # 0 / 0 = NaN at x == 0, as in the graph
            else:                              # x <= 0 gets 0 from the ReLU: avoid 0 / 0
                den = np.maximum(mb, _I32(1), out=level).view(_F32)
            with np.errstate(divide="ignore", invalid="ignore"):
                np.divide(g, den, out=g)
            _write(inputs[0], g, accum[0], canonical=not self.sign)
        if propagate_down[1]:
            below = np.less(mb, lo, out=_scratch("m1", shape, bool))
            if self.with_zero:
                thr = _I32(_bits(self._zero_threshold(xmin)))
                below &= np.greater_equal(mb, thr, out=_scratch("m2", shape, bool))
            _write_scalar(inputs[1], _masked_sum(dy, below, signs), accum[1])
        if propagate_down[2]:
            above = np.greater_equal(mb, hi, out=_scratch("m1", shape, bool))
            _write_scalar(inputs[2], _masked_sum(dy, above, signs), accum[2])

    # Literal transcription of the graph for degenerate parameters (overlapping masks,
    # infinite or non-power-of-two levels) and non-finite inputs.
    def _literal_parts(self, x, xmin, xmax):
        xr = x if self.sign else np.where(x > 0, x, _ZERO)   # std::max(0, x)
        mag = np.abs(xr)
        sgn = np.where(xr > 0, _F32(1), np.where(xr < 0, _F32(-1), _F32(1)))
        inside = ((mag >= xmin) & (mag < xmax)).astype(_F32)
        above = (mag >= xmax).astype(_F32)
        if self.with_zero:
            below = ((mag >= self._zero_threshold(xmin)) & (mag < xmin)).astype(_F32)
        else:
            below = (mag < xmin).astype(_F32)
        return xr, mag, sgn, below, inside, above

    def _forward_literal(self, x, xmin, xmax):
        _, mag, sgn, below, inside, above = self._literal_parts(x, xmin, xmax)
        with np.errstate(all="ignore"):
            return sgn * ((xmin * below + _pow2_float(mag) * inside) + xmax * above)

    def _backward_literal(self, inputs, x, dy, xmin, xmax, propagate_down, accum):
        xr, mag, sgn, below, inside, above = self._literal_parts(x, xmin, xmax)
        with np.errstate(all="ignore"):
            g = dy * sgn
            if propagate_down[0]:
                v = (((g * inside) * _pow2_float(mag)) * _LN2) * _INV_LN2 / mag
                v = np.where(xr < 0, -v, v)                    # Abs backward
                if not self.sign:                              # ReLU backward
                    v = np.where(x > 0, v + _ZERO, _ZERO)
                _write(inputs[0], v, accum[0], canonical=not self.sign)
            if propagate_down[1]:
                _write_scalar(inputs[1], _seq_sum(g * below), accum[1])
            if propagate_down[2]:
                _write_scalar(inputs[2], _seq_sum(g * above), accum[2])


def _as_vector(v):
    return F.reshape(v, (1,), inplace=False) if v.shape == () else v


def uniform(x, d, xmax, sign):
    """Fused uniform quantization with scalar Variables ``d`` and ``xmax``."""
    fn = _UniformQuantize(nn.get_current_context(), sign)
    if sign:
        lo = -xmax                     # created before the reshapes, as in the graph
        return fn(x, _as_vector(d), _as_vector(lo), _as_vector(xmax))
    return fn(x, _as_vector(d), _as_vector(xmax))


def pow2(x, xmin, xmax, sign, with_zero):
    """Fused power-of-two quantization with scalar Variables ``xmin`` and ``xmax``."""
    fn = _Pow2Quantize(nn.get_current_context(), sign, with_zero)
    return fn(x, _as_vector(xmin), _as_vector(xmax))
