"""Numpy STFT / inverse STFT shared by the separation papers.

* :func:`stft_numpy`: centred (or not) STFT with a periodic Hann window whose length equals
  the FFT size, computed in float64. ``pad_mode='reflect'`` reproduces nnabla's ``F.stft``
  (X-UMX / UMX front end); ``pad_mode='constant'`` (zero padding) reproduces
  ``librosa.stft`` with librosa >= 0.10 defaults (D3Net's front end; librosa < 0.10 padded
  by reflection).
* :func:`istft_numpy`: inverse with ``librosa.istft``'s conventions: inverse real FFT of
  every frame, multiplied by the window, overlap-added, divided by the sum of the squared
  windows wherever that sum exceeds the smallest normal float, and (centred) the first
  ``n_fft // 2`` samples dropped. librosa returns ``(frames - 1) * hop`` samples; a larger
  ``length`` continues the same overlap-add over the next samples (they are still covered
  by the last frames' windows), so the common samples are identical.

No librosa dependency: both follow its documented conventions and are checked against
stored librosa output in the D3Net parity tests.
"""
import numpy as np

__all__ = ["hann_periodic", "nb_bins", "nb_frames", "stft_numpy", "istft_numpy"]


def hann_periodic(n):
    """Periodic Hann window of length ``n`` (nnabla's ``'hanning'``, scipy/librosa ``'hann'``)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def nb_bins(n_fft):
    """Number of one-sided frequency bins of an ``n_fft``-point STFT."""
    return n_fft // 2 + 1


def nb_frames(nb_samples, n_fft=4096, n_hop=1024, center=True):
    """Frames of a centred (``1 + T // hop``) or uncentred (``1 + (T - n_fft) // hop``) STFT."""
    if center:
        return 1 + nb_samples // n_hop
    return 1 + (nb_samples - n_fft) // n_hop


def stft_numpy(audio, n_fft=4096, n_hop=1024, center=True, block_frames=256,
               pad_mode="reflect"):
    """STFT of ``audio`` ``(channels, samples)`` in float64: complex128
    ``(frames, bins, channels)``.

    Window: periodic Hann of length ``n_fft``. ``center=True`` pads ``n_fft // 2`` samples on
    both sides with ``pad_mode`` (``'reflect'``: nnabla ``F.stft``; ``'constant'``: zeros,
    librosa >= 0.10). Frames are computed ``block_frames`` at a time to bound memory.
    """
    x = np.asarray(audio, dtype=np.float64)
    if center:
        x = np.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode=pad_mode)
    frames = 1 + (x.shape[-1] - n_fft) // n_hop
    if frames < 1:
        raise ValueError(f"{audio.shape[-1]} samples are too short for n_fft {n_fft}")
    window = hann_periodic(n_fft)
    out = np.empty((frames, nb_bins(n_fft), x.shape[0]), dtype=np.complex128)
    offsets = np.arange(n_fft)
    for start in range(0, frames, block_frames):
        starts = n_hop * np.arange(start, min(frames, start + block_frames))
        idx = offsets[None, :] + starts[:, None]
        seg = x[:, idx] * window  # (channels, block, n_fft)
        out[start:start + idx.shape[0]] = np.fft.rfft(seg, axis=-1).transpose(1, 2, 0)
    return out


def istft_numpy(X, n_hop=1024, center=True, length=None):
    """Inverse STFT of ``X`` complex ``(..., bins, frames)`` with librosa's conventions
    (``n_fft = 2 * (bins - 1)``, periodic Hann window of that length). Returns float64
    ``(..., samples)``.

    ``length=None`` gives librosa's length: ``(frames - 1) * hop`` when centred,
    ``n_fft + (frames - 1) * hop`` otherwise. A ``length`` up to
    ``(frames - 1) * hop + n_fft // 2`` (centred) extends the overlap-add instead of
    zero-padding; samples not covered by any window are 0.
    """
    X = np.asarray(X)
    n_fft = 2 * (X.shape[-2] - 1)
    frames = X.shape[-1]
    window = hann_periodic(n_fft)
    total = n_fft + n_hop * (frames - 1)
    start = n_fft // 2 if center else 0
    if length is None:
        length = total - 2 * start
    if length > total - start:
        raise ValueError(f"length {length} exceeds what {frames} frames cover "
                         f"({total - start} samples)")
    frames_td = np.fft.irfft(X, n=n_fft, axis=-2) * window[:, None]  # (..., n_fft, frames)
    y = np.zeros(X.shape[:-2] + (total,), dtype=np.float64)
    wss = np.zeros(total, dtype=np.float64)
    win_sq = window ** 2
    for t in range(frames):
        s = t * n_hop
        y[..., s:s + n_fft] += frames_td[..., t]
        wss[s:s + n_fft] += win_sq
    y = y[..., start:start + length]
    wss = wss[start:start + length]
    ok = wss > np.finfo(np.float64).tiny
    y[..., ok] /= wss[ok]
    return y
