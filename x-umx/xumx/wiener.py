"""Multichannel Wiener filter of the official X-UMX / UMX separation, vectorised.

Computes what ``norbert.wiener(v, x, iterations, use_softmask)`` (norbert 0.2.1, the
official post-processing) computes, with the same formulas and order of the EM steps, but
over whole planes instead of norbert's Python loop over frames: on 30 s of full-size X-UMX
output the loop took most of the separation time (x-umx/bench/README.md). The results agree
with norbert to float64 rounding (x-umx/tests/test_wiener.py).

One EM iteration, for sources ``j`` with estimates ``y_j`` (frames, bins, channels):
power ``v_j = mean_c |y_j|^2``; spatial covariance ``R_j(f) = sum_t y_j y_j^H /
(eps + sum_t v_j)``; mixture covariance ``C = sum_j v_j R_j + sqrt(eps) I``; new estimate
``y_j = v_j R_j C^-1 x``.
2 x 2 covariances are inverted in closed form (as norbert does), 1 x 1 ones as ``1 / (C +
eps)``, larger ones with ``pinv`` (norbert's choices). Everything is per frequency bin, so the bins
are processed in blocks and the temporaries stay small next to the estimates themselves.

:func:`wiener` takes and returns norbert's layouts; the separator uses
:func:`wiener_planar`, with the planar layout (sources, channels, bins, frames), where every
(bins, frames) plane is contiguous and is what the inverse STFT takes.
"""
import numpy as np

BLOCK_BINS = 64  # bins per vectorised block: temporaries of a few MB each (30 s input)


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


def _em_step(Yb, Xb, eps, regularization, out):
    """One EM step of norbert's ``expectation_maximization`` for a block of bins: source
    STFTs ``Yb`` (sources, channels, bins, frames), the scaled mixture ``Xb`` (channels, bins,
    frames); the new estimates go to ``out`` (may be ``Yb``: it is read before it is
    written). Channels are looped over explicitly: there are one or two, and elementwise
    products over (bins, frames) planes are far faster than numpy's small-matrix
    routines."""
    n_src, n_ch = Yb.shape[:2]
    v = (Yb.real ** 2 + Yb.imag ** 2).mean(axis=1)  # (sources, bins, frames)
    weight = eps + v.sum(axis=-1, keepdims=True)  # (sources, bins, 1)
    # R[j][i][k] (bins, 1) = sum_t Y_ji conj(Y_jk) / weight_j; Hermitian in (i, k)
    R = [[[None] * n_ch for _ in range(n_ch)] for _ in range(n_src)]
    for j in range(n_src):
        for i in range(n_ch):
            for k in range(i, n_ch):
                r = np.einsum("ft,ft->f", Yb[j, i], np.conj(Yb[j, k]))[:, None] / weight[j]
                R[j][i][k] = r
                R[j][k][i] = r if k == i else np.conj(r)
    C = [[sum(v[j] * R[j][i][k] for j in range(n_src)) + regularization[i, k]
          for k in range(n_ch)] for i in range(n_ch)]
    inv = _invert(C, eps)
    # y_j = v_j R_j (C^-1 x): C^-1 x is shared by all sources
    z = [sum(inv[i][k] * Xb[k] for k in range(n_ch)) for i in range(n_ch)]
    for j in range(n_src):
        for i in range(n_ch):
            out[j, i] = v[j] * sum(R[j][i][k] * z[k] for k in range(n_ch))


def wiener_planar(V, X, iterations=1, use_softmask=False, eps=None, block_bins=BLOCK_BINS,
                  threads=1):
    """``norbert.wiener`` in the planar layout: ``V`` (sources, {1, channels}, bins, frames)
    magnitudes, ``X`` (channels, bins, frames) complex (complex128 for double precision, as
    officially) -> source STFTs (sources, channels, bins, frames) in ``X``'s dtype.

    Every step is per frequency bin, so each block of ``block_bins`` bins goes through the
    initial estimate and all EM iterations on its own (only the result is allocated at full
    size), and ``threads`` blocks run at a time (numpy releases the GIL in these loops)."""
    if eps is None:
        eps = np.finfo(np.real(X[:1]).dtype).eps
    if not iterations:
        return initial_estimates(V, X, use_softmask, eps)
    scale = max(1.0, float(np.abs(X).max()) / 10.0)
    # written as norbert writes it, so that numpy's type promotion rounds it the same way
    regularization = np.sqrt(eps) * np.eye(X.shape[0], dtype=np.complex64)
    Y = np.empty((V.shape[0],) + X.shape, dtype=X.dtype)

    def block(lo):
        bins = slice(lo, lo + block_bins)
        Xb = X[:, bins] / scale
        Yb = initial_estimates(V[:, :, bins], X[:, bins], use_softmask, eps)
        Yb /= scale
        for _ in range(int(iterations)):
            _em_step(Yb, Xb, eps, regularization, Yb)
        np.multiply(Yb, scale, out=Y[:, :, bins])

    starts = range(0, X.shape[1], block_bins)
    if threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(block, starts))
    else:
        for lo in starts:
            block(lo)
    return Y


def wiener(v, x, iterations=1, use_softmask=True, eps=None):
    """``norbert.wiener`` with its layouts: ``v`` (frames, bins, {1, channels}, sources),
    ``x`` (frames, bins, channels) -> (frames, bins, channels, sources), computed by
    :func:`wiener_planar`."""
    X = np.ascontiguousarray(np.transpose(x, (2, 1, 0)))
    Y = wiener_planar(np.transpose(v, (3, 2, 1, 0)), X, iterations, use_softmask, eps)
    return np.transpose(Y, (3, 2, 1, 0))
