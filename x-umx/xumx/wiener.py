"""Multichannel Wiener filter of the official X-UMX / UMX separation, vectorised and in two
passes.

Computes what ``norbert.wiener(v, x, iterations, use_softmask)`` (norbert 0.2.1, the
official post-processing) computes, with the same formulas and order of the EM steps, but
over whole planes instead of norbert's Python loop over frames: on 30 s of full-size X-UMX
output the loop took most of the separation time (x-umx/bench/README.md). The results agree
with norbert to float64 rounding (x-umx/tests/test_fast_paths.py).

One EM iteration, for sources ``j`` with estimates ``y_j`` (frames, bins, channels):
power ``v_j = mean_c |y_j|^2``; spatial covariance ``R_j(f) = sum_t y_j y_j^H /
(eps + sum_t v_j)``; mixture covariance ``C = sum_j v_j R_j + sqrt(eps) I``; new estimate
``y_j = v_j R_j C^-1 x``.
2 x 2 covariances are inverted in closed form (as norbert does), 1 x 1 ones as ``1 / (C +
eps)``, larger ones with ``pinv`` (norbert's choices).

Only the covariances ``R_j(f)`` need whole rows of frames; everything else is per
time-frequency point. :class:`WienerFilter` therefore works in two passes: over blocks of
bins it runs the iterations once to collect each iteration's covariances (a few numbers per
bin), after which :meth:`WienerFilter.estimates` computes the filtered STFT of any block of
frames by itself. The separator feeds those blocks straight into the inverse STFT, so the
filtered STFT of the whole signal (for 30 s of four stereo sources, 340 MB of complex128) is
never held at once. Every value is computed by the same operations in the same order as in
one pass, so the blocking does not change a bit.

Layout: planar, i.e. the axes in the order (sources, channels, bins, frames), in any memory
layout; :func:`wiener` takes and returns norbert's layouts.
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

BLOCK_BINS = 64  # bins per block of the first pass: temporaries of a few MB each (30 s input)
BLOCK_FRAMES = 32  # frames per block of wiener_planar's second pass


def initial_estimates(V, X, use_softmask=False, eps=None):
    """norbert's starting point in the planar layout: ``V`` (sources, {1, channels}, bins,
    frames) magnitudes, ``X`` (channels, bins, frames) complex -> (sources, channels, bins,
    frames) in ``X``'s dtype: soft masks times ``X``, or ``V`` with the mixture phase."""
    if eps is None:
        eps = np.finfo(np.real(X[:1]).dtype).eps
    if use_softmask:
        return V / (eps + np.sum(V, axis=0).astype(X.dtype)) * X
    # V * exp(1j * angle(X)): the unit phasor X / |X| (angle 0 where X is 0)
    mag = np.abs(X)
    phase = np.divide(X, mag, out=np.ones_like(X), where=mag > 0)
    Y = np.empty((V.shape[0],) + X.shape, dtype=X.dtype)
    np.multiply(V, phase, out=Y)
    return Y


def _invert(C, eps):
    """Inverses of the covariances ``C[i][k]`` (each an array over time-frequency points),
    as norbert inverts them; returned in the same nested-list layout."""
    n = len(C)
    if n == 1:
        return [[1.0 / (C[0][0] + eps)]]
    if n == 2:
        (a, b), (c, d) = C
        inv_det = 1.0 / (a * d - b * c)
        return [[inv_det * d, -inv_det * b], [-inv_det * c, inv_det * a]]
    M = np.stack([np.stack(row, axis=-1) for row in C], axis=-2)  # (..., n, n)
    inv = np.linalg.pinv(M, eps)
    return [[inv[..., i, k] for k in range(n)] for i in range(n)]


def _power(Y):
    """Source powers ``v_j = mean_c |y_j|^2``: (sources, bins, frames)."""
    return (Y.real ** 2 + Y.imag ** 2).mean(axis=1)


def _covariances(Y, v, eps):
    """Spatial covariances ``R`` (sources, channels, channels, bins, 1) of estimates ``Y``
    (sources, channels, bins, frames) with powers ``v``: ``R[j, i, k] = sum_t Y_ji conj(Y_jk)
    / (eps + sum_t v_j)``, Hermitian in (i, k)."""
    n_src, n_ch = Y.shape[:2]
    weight = eps + v.sum(axis=-1, keepdims=True)  # (sources, bins, 1)
    R = np.empty((n_src, n_ch, n_ch, Y.shape[2], 1), dtype=Y.dtype)
    for j in range(n_src):
        for i in range(n_ch):
            for k in range(i, n_ch):
                R[j, i, k] = np.einsum("ft,ft->f", Y[j, i], np.conj(Y[j, k]))[:, None] / weight[j]
                if k != i:
                    R[j, k, i] = np.conj(R[j, i, k])
    return R


def _update(v, R, Xb, eps, regularization, out):
    """The estimates of one EM step, ``y_j = v_j R_j C^-1 x`` with ``C = sum_j v_j R_j +
    regularization``, from the powers ``v`` (sources, bins, frames) and covariances ``R``
    (sources, channels, channels, bins, 1) of the previous estimates and the scaled mixture
    ``Xb`` (channels, bins, frames), written to ``out`` (sources, channels, bins, frames).
    Channels are looped over explicitly: there are one or two, and elementwise products over
    (bins, frames) planes are far faster than numpy's small-matrix routines."""
    n_src, n_ch = R.shape[:2]
    C = [[sum(v[j] * R[j, i, k] for j in range(n_src)) + regularization[i, k]
          for k in range(n_ch)] for i in range(n_ch)]
    inv = _invert(C, eps)
    # C^-1 x is shared by all sources
    z = [sum(inv[i][k] * Xb[k] for k in range(n_ch)) for i in range(n_ch)]
    for j in range(n_src):
        for i in range(n_ch):
            out[j, i] = v[j] * sum(R[j, i, k] * z[k] for k in range(n_ch))


class WienerFilter:
    """``norbert.wiener(v, x, iterations, use_softmask)`` in the planar layout, evaluated block
    by block of frames.

    ``V`` (sources, {1, channels}, bins, frames) magnitudes and ``X`` (channels, bins, frames)
    complex, both of any memory layout; they are kept by reference and must not change while
    the filter is used. ``dtype``: the complex type computed in and returned (default
    ``X``'s; complex128 for double precision, as officially); blocks of ``X`` are converted
    to it as they are read, so a complex64 ``X`` needs no full-size complex128 copy. The
    constructor runs the first pass (the covariances of every iteration, ``block_bins`` bins
    at a time, ``threads`` blocks at a time: numpy releases the GIL in these loops);
    :meth:`estimates` then gives the filtered source STFTs of a range of frames."""

    def __init__(self, V, X, iterations=1, use_softmask=False, eps=None,
                 block_bins=BLOCK_BINS, threads=1, dtype=None):
        self.V, self.X = V, X
        self.dtype = np.dtype(X.dtype if dtype is None else dtype)
        self.iterations = int(iterations)
        self.use_softmask = bool(use_softmask)
        self.eps = np.finfo(self.dtype).eps if eps is None else eps
        if not self.iterations:
            return
        starts = range(0, X.shape[1], block_bins)
        # max |X| block by block: the same maximum without a full-size temporary
        peak = max(float(np.abs(self._mixture(slice(lo, lo + block_bins), slice(None))).max())
                   for lo in starts)
        self.scale = max(1.0, peak / 10.0)
        # written as norbert writes it, so that numpy's type promotion rounds it the same way
        self.regularization = np.sqrt(self.eps) * np.eye(X.shape[0], dtype=np.complex64)
        n_src, n_ch = V.shape[0], X.shape[0]
        self.covariances = np.empty((self.iterations, n_src, n_ch, n_ch, X.shape[1], 1),
                                    dtype=self.dtype)

        def block(lo):
            bins = slice(lo, lo + block_bins)
            Yb, Xb = self._start(bins, slice(None))
            for it in range(self.iterations):
                v = _power(Yb)
                R = self.covariances[it, :, :, :, bins] = _covariances(Yb, v, self.eps)
                if it + 1 < self.iterations:
                    _update(v, R, Xb, self.eps, self.regularization, Yb)

        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(block, starts))
        else:
            for lo in starts:
                block(lo)

    def _mixture(self, bins, frames):
        # C order whatever X's layout: the soft-mask estimates inherit it, and with it the
        # order in which the covariances sum over frames
        return np.asarray(self.X[:, bins, frames], dtype=self.dtype, order="C")

    def _start(self, bins, frames):
        """Scaled initial estimates and mixture of a block: ``(Y, X / scale)``."""
        X = self._mixture(bins, frames)
        Y = initial_estimates(self.V[:, :, bins, frames], X, self.use_softmask, self.eps)
        Y /= self.scale
        return Y, X / self.scale

    def estimates(self, frames=slice(None)):
        """Filtered source STFTs of ``frames`` (a slice): (sources, channels, bins, frames)
        in :attr:`dtype`."""
        if not self.iterations:
            return initial_estimates(self.V[..., frames], self._mixture(slice(None), frames),
                                     self.use_softmask, self.eps)
        Y, Xb = self._start(slice(None), frames)
        for R in self.covariances:
            _update(_power(Y), R, Xb, self.eps, self.regularization, Y)
        Y *= self.scale
        return Y


def wiener_planar(V, X, iterations=1, use_softmask=False, eps=None, block_bins=BLOCK_BINS,
                  threads=1, block_frames=BLOCK_FRAMES):
    """``norbert.wiener`` in the planar layout: ``V`` (sources, {1, channels}, bins, frames)
    magnitudes, ``X`` (channels, bins, frames) complex -> source STFTs (sources, channels,
    bins, frames) in ``X``'s dtype, through :class:`WienerFilter` (``block_frames`` frames
    at a time in the second pass)."""
    filt = WienerFilter(V, X, iterations, use_softmask, eps, block_bins, threads)
    Y = np.empty((V.shape[0],) + X.shape, dtype=filt.dtype)
    for lo in range(0, X.shape[-1], block_frames):
        frames = slice(lo, lo + block_frames)
        Y[..., frames] = filt.estimates(frames)
    return Y


def wiener(v, x, iterations=1, use_softmask=True, eps=None):
    """``norbert.wiener`` with its layouts: ``v`` (frames, bins, {1, channels}, sources),
    ``x`` (frames, bins, channels) -> (frames, bins, channels, sources), computed by
    :func:`wiener_planar`."""
    X = np.ascontiguousarray(np.transpose(x, (2, 1, 0)))
    Y = wiener_planar(np.transpose(v, (3, 2, 1, 0)), X, iterations, use_softmask, eps)
    return np.transpose(Y, (3, 2, 1, 0))
