"""One-iteration multichannel Wiener filter (MWF) of the official D3Net separation.

Every source ``j`` is modelled as a local Gaussian: a time-frequency power
``v_j(t, f)`` (mean of ``|S_j|^2`` over the channels, plus ``1e-10`` times its maximum)
times a time-invariant spatial covariance ``R_j(f)`` (sum over frames of
``S_j S_j^H``, divided by the sum over frames of ``v_j``). The mixture covariance is
``C(t, f) = sum_j v_j R_j`` and each source is re-estimated as
``v_j R_j C^{-1} x`` from the mixture STFT ``x``.

``C`` (2 x 2) is inverted in closed form (adjugate / determinant) where
``|det C| >= 1e-10``; elsewhere the official code uses ``C^H / ||C||_F^2`` instead (a
pseudo-inverse-like fallback for (nearly) rank-1 matrices), and so does this module. This
is the difference from ``norbert.wiener(..., iterations=1)``, which regularises ``C`` with
``sqrt(eps) I`` and adds no power floor; the parity test measures both against the
official output and this module is what the separator uses.

Layouts: source and mixture STFTs ``(frames, channels, bins)``, two channels. Computed in
complex128 (the official code mixes complex64 and complex128; the difference is at float32
rounding level).
"""
from collections import OrderedDict

import numpy as np

from common.errors import UserError

POWER_FLOOR = 1e-10  # relative to each source's maximum power
DET_THRESHOLD = 1e-10  # |det C| below this: fallback inverse
BLOCK_BINS = 128  # bins filtered at a time
_TINY = np.finfo(np.float64).eps


def local_gaussian_model(stft):
    """``(v, R)`` of a source STFT ``(frames, channels, bins)``: power ``(frames, bins)`` and
    spatial covariance ``(channels, channels, bins)``."""
    s = np.asarray(stft, dtype=np.complex128)
    v = np.mean(np.abs(s) ** 2, axis=1)
    v = v + v.max() * POWER_FLOOR
    R = np.einsum("tif,tjf->ijf", s, np.conj(s))
    R = R / (np.sum(v, axis=0) + _TINY)
    return v, R


def invert_2x2(C):
    """Inverse of ``(..., 2, 2, bins)``-shaped covariances ``C[..., i, j, f]`` with the
    official fallback ``C^H / ||C||_F^2`` where ``|det| < 1e-10``."""
    a, b = C[..., 0, 0, :], C[..., 0, 1, :]
    c, d = C[..., 1, 0, :], C[..., 1, 1, :]
    det = a * d - c * b
    regular = np.abs(det) >= DET_THRESHOLD
    safe_det = np.where(regular, det, 1.0)
    frob = np.sum(np.abs(C) ** 2, axis=(-3, -2)) + _TINY
    inv = np.empty_like(C)
    inv[..., 0, 0, :] = np.where(regular, d / safe_det, np.conj(a) / frob)
    inv[..., 1, 1, :] = np.where(regular, a / safe_det, np.conj(d) / frob)
    inv[..., 0, 1, :] = np.where(regular, -b / safe_det, np.conj(c) / frob)
    inv[..., 1, 0, :] = np.where(regular, -c / safe_det, np.conj(b) / frob)
    return inv


def apply_mwf(stfts, mixture, block_bins=BLOCK_BINS):
    """One MWF iteration. ``stfts``: mapping ``target -> complex (frames, 2, bins)`` source
    STFT estimates (magnitude estimate with the mixture phase); ``mixture``: complex
    ``(frames, 2, bins)``. Returns ``OrderedDict[target -> complex128 (frames, 2, bins)]``
    (the input mapping is not modified).

    The source models need every bin at once (the power floor is relative to each source's
    maximum), the filter itself works per bin: it runs ``block_bins`` bins at a time, so its
    2 x 2 covariances, their inverses and the complex128 mixture exist a block at a time (for
    a 30 s chunk tens of MB instead of several hundred). The values are those of one
    whole-array pass."""
    if not stfts:
        raise UserError("the Wiener filter needs at least one source")
    mixture = np.asarray(mixture)  # any array-like, as before the filter ran in blocks
    shape = mixture.shape
    if len(shape) != 3 or shape[1] != 2:
        raise UserError(f"the multichannel Wiener filter needs a stereo (frames, 2, bins) STFT, "
                        f"got shape {shape}")
    models = OrderedDict()
    for name, s in stfts.items():
        if np.shape(s) != shape:
            raise UserError(f"source '{name}' STFT has shape {np.shape(s)}, mixture {shape}")
        models[name] = local_gaussian_model(s)
    out = OrderedDict((name, np.empty(shape, dtype=np.complex128)) for name in models)
    for lo in range(0, shape[2], block_bins):
        bins = slice(lo, min(lo + block_bins, shape[2]))
        C = np.zeros((shape[0], 2, 2, bins.stop - lo), dtype=np.complex128)
        for v, R in models.values():
            C += v[:, None, None, bins] * R[None, :, :, bins]
        x = np.asarray(mixture[:, :, bins], dtype=np.complex128)
        w = np.einsum("tklf,tlf->tkf", invert_2x2(C), x)  # C^{-1} x
        for name, (v, R) in models.items():
            out[name][:, :, bins] = v[:, None, bins] * np.einsum("ikf,tkf->tif", R[:, :, bins], w)
    return out
