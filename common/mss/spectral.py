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

__all__ = ["hann_periodic", "nb_bins", "nb_frames", "stft_numpy", "stft_blocks", "istft_numpy"]

BLOCK_FRAMES = 64  # frames per FFT block: temporaries of a few MB, reused between blocks


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


def stft_numpy(audio, n_fft=4096, n_hop=1024, center=True, block_frames=BLOCK_FRAMES,
               pad_mode="reflect"):
    """STFT of ``audio`` ``(channels, samples)`` in float64: complex128
    ``(frames, bins, channels)``.

    Window: periodic Hann of length ``n_fft``. ``center=True`` pads ``n_fft // 2`` samples on
    both sides with ``pad_mode`` (``'reflect'``: nnabla ``F.stft``; ``'constant'``: zeros,
    librosa >= 0.10). Computed by :func:`stft_blocks`.
    """
    frames, blocks = stft_blocks(audio, n_fft, n_hop, center, block_frames, pad_mode)
    out = np.empty((frames, nb_bins(n_fft), np.shape(audio)[0]), dtype=np.complex128)
    for rows, block in blocks:
        out[rows] = block
    return out


def stft_blocks(audio, n_fft=4096, n_hop=1024, center=True, block_frames=BLOCK_FRAMES,
                pad_mode="reflect"):
    """:func:`stft_numpy` ``block_frames`` frames at a time, so that a caller that keeps
    something smaller than the complex128 STFT (a magnitude, a complex64 copy) never holds
    all of it. Returns ``(frames, blocks)``: the number of frames and an iterator over
    ``(rows, block)``, a slice of frames and their complex128 STFT ``(len(rows), bins,
    channels)``. Each frame is transformed on its own, so the values do not depend on the
    block size."""
    x = np.asarray(audio, dtype=np.float64)
    if center:
        x = np.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode=pad_mode)
    frames = 1 + (x.shape[-1] - n_fft) // n_hop
    if frames < 1:
        raise ValueError(f"{audio.shape[-1]} samples are too short for n_fft {n_fft}")
    window = hann_periodic(n_fft)
    # (channels, frames, n_fft) view of the overlapping frames: no copy
    framed = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[:, ::n_hop]

    def blocks():
        for start in range(0, frames, block_frames):
            rows = slice(start, min(frames, start + block_frames))
            seg = framed[:, rows] * window  # (channels, block, n_fft)
            yield rows, np.fft.rfft(seg, axis=-1).transpose(1, 2, 0)

    return frames, blocks()


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
