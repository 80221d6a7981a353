"""STFT front end, magnitude spectrogram and inverse STFT for X-UMX / UMX.

Conventions (those of the official NNabla X-UMX code and the parity fixtures):

* Forward STFT: nnabla ``F.stft`` with window length = FFT size = ``n_fft``, hop ``n_hop``,
  periodic Hann window (``window_type='hanning'``), ``center=True`` with **reflect** padding
  of ``n_fft // 2`` samples on each side. A signal of ``T`` samples gives
  ``1 + T // n_hop`` frames when centred, ``1 + (T - n_fft) // n_hop`` otherwise.
* Layouts: audio ``(batch, channels, samples)``; STFT real / imaginary parts
  ``(batch, channels, bins, frames)``; spectrograms (network input and output)
  ``(frames, batch, channels, bins)`` with ``bins = n_fft // 2 + 1``.
* Magnitude: ``(re**2 + im**2) ** (power / 2)`` with power 1; a mono model
  (``nb_channels == 1``) averages the channel magnitudes.
* Inverse STFT for separation: the arithmetic of scipy ``signal.istft(X / (n_fft // 2),
  nperseg=n_fft, noverlap=n_fft - n_hop)`` (periodic Hann, least-squares overlap-add). The
  official code uses ``boundary=True``, which returns ``(frames - 1) * n_hop`` samples, i.e. up to
  ``n_hop - 1`` samples fewer than the input. :func:`istft` returns exactly the same samples
  and, when asked for a longer ``length``, continues the overlap-add past that point: the
  remaining ``< n_hop`` samples still lie inside the windows of the last frames (the
  normalisation by the summed squared windows is well defined there because
  ``n_hop <= n_fft // 2``), so nothing has to be padded and the first
  ``(frames - 1) * n_hop`` samples are identical to the official output.
"""

import numpy as np

from common.mss import spectral as _common_spectral
from common.runtime.graph_cache import GraphRunner

# The numpy STFT (nnabla's conventions with reflect padding) lives in common.mss.spectral,
# shared with D3Net (which uses its zero-padding mode); re-exported here unchanged.
hann_periodic = _common_spectral.hann_periodic
stft_numpy = _common_spectral.stft_numpy
nb_bins = _common_spectral.nb_bins
nb_frames = _common_spectral.nb_frames

BLOCK_FRAMES = 32  # frames per inverse-FFT block: a few MB per block for 8 stereo rows


def stft(x, n_fft=4096, n_hop=1024, center=True):
    """Multichannel STFT of an nnabla variable.

    ``x``: ``(batch, channels, samples)``. Returns ``(real, imag)``, each
    ``(batch, channels, bins, frames)``. Periodic Hann window of length ``n_fft``; with
    ``center=True`` the signal is reflect-padded by ``n_fft // 2`` on both sides.
    """
    import nnabla.functions as F

    batch, channels = x.shape[0], x.shape[1]
    flat = F.reshape(x, (batch * channels, x.shape[2]))
    real, imag = F.stft(flat, n_fft, n_hop, n_fft, window_type="hanning",
                        center=center, pad_mode="reflect")
    shape = (batch, channels, nb_bins(n_fft), real.shape[-1])
    return F.reshape(real, shape), F.reshape(imag, shape)


def magnitude(real, imag, power=1.0, mono=False):
    """``(batch, channels, bins, frames)`` STFT parts -> ``(frames, batch, channels, bins)``
    spectrogram ``|X| ** power``; ``mono=True`` averages over channels (keeps the axis)."""
    import nnabla.functions as F

    spec = (real ** 2 + imag ** 2) ** (power / 2.0)
    if mono:
        spec = F.mean(spec, axis=1, keepdims=True)
    return F.transpose(spec, (3, 0, 1, 2))


def phase(real, imag):
    """Phase angle of an STFT (same layout as its parts)."""
    import nnabla.functions as F

    return F.atan2(imag, real)


def istft_nn(real, imag, n_fft=4096, n_hop=1024, center=True):
    """nnabla inverse STFT of ``(rows, bins, frames)`` parts -> ``(rows, samples)``.

    Zero-padding convention (``pad_mode='constant'``) as the official training graph uses for
    its time-domain estimates."""
    import nnabla.functions as F

    return F.istft(real, imag, n_fft, n_hop, n_fft, window_type="hanning",
                   center=center, pad_mode="constant")


def istft(X, n_fft=4096, n_hop=1024, length=None, threads=1):
    """Inverse STFT with the official separation convention.

    ``X``: complex ``(..., bins, frames)``. Returns ``(..., samples)`` float64. With
    ``length=None`` the result has the official ``(frames - 1) * n_hop`` samples (scipy
    ``boundary=True``). A larger ``length`` (at most ``(frames - 1) * n_hop + n_fft // 2``)
    extends the output with the tail of the overlap-add instead of cutting it off; the common
    samples are identical. Computed by :func:`istft_blocks`.
    """
    X = np.asarray(X)
    planes = X.reshape((-1,) + X.shape[-2:])
    out = istft_blocks(lambda frames: planes[..., frames], planes.shape[0], X.shape[-1],
                       n_fft, n_hop, length, threads)
    return out.reshape(X.shape[:-2] + out.shape[-1:])


def istft_blocks(spectra, rows, n_frames, n_fft=4096, n_hop=1024, length=None, threads=1,
                 block_frames=BLOCK_FRAMES):
    """:func:`istft` of ``rows`` signals whose STFT frames are produced on demand:
    ``spectra(frames)`` returns the complex ``(rows, bins, len(frames))`` STFT of a slice of
    frames; it is asked for consecutive blocks of ``block_frames`` frames, ``threads`` blocks
    at a time, so neither the whole STFT nor all its inverse frames are ever in memory.
    Returns float64 ``(rows, samples)``.

    The arithmetic is scipy's ``istft(X / (n_fft // 2), nperseg=n_fft, noverlap=n_fft -
    n_hop)`` (inverse FFT, periodic Hann window, overlap-add in frame order, normalisation by
    the summed squared windows where they exceed 1e-10; the scaling by a power of two is
    exact), with numpy's FFT (equal to scipy's to float64 rounding; importing scipy.signal
    would cost separate.py a second of start-up) and, when the hop divides ``n_fft``, the
    overlap-add as ``n_fft // n_hop`` shifted block additions instead of scipy's Python loop
    over frames (x-umx/tests/test_fast_paths.py compares the two). The blocks are added in
    frame order, so every sample is the same sum in the same order whatever the block size.
    """
    official = (n_frames - 1) * n_hop
    start = n_fft // 2  # the centre padding at the start
    if length is None:
        length = official
    if length > official + n_fft // 2:
        raise ValueError(f"length {length} exceeds what {n_frames} frames cover "
                         f"({official + n_fft // 2} samples)")
    window = hann_periodic(n_fft)
    total = n_fft + official
    norm = np.zeros(total, dtype=np.float64)
    _overlap_add(norm, np.broadcast_to(window ** 2, (n_frames, n_fft)), 0, n_hop)
    norm = norm[start:start + length]
    acc = np.zeros((rows, total), dtype=np.float64)

    def inverse(lo):
        frames = np.fft.irfft(spectra(slice(lo, lo + block_frames)).transpose(0, 2, 1),
                              n=n_fft, axis=-1)  # (rows, block, n_fft)
        frames *= window
        return frames

    blocks = range(0, n_frames, block_frames)
    for lo, frames in zip(blocks, _in_order(inverse, blocks, threads)):
        for row in range(rows):
            _overlap_add(acc[row], frames[row], lo, n_hop)
    out = acc[:, start:start + length]
    np.divide(out, norm, out=out, where=norm > 1e-10)
    return out


def _in_order(fn, items, threads):
    """``fn(item)`` for every item, yielded in order; with ``threads > 1`` computed by that
    many threads, at most ``threads`` results ahead of the consumer."""
    if threads <= 1:
        yield from map(fn, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _overlap_add(out, frames, first, n_hop):
    """Add ``frames`` (frames, n_fft), the frames from number ``first`` on, to ``out`` at
    every ``n_hop`` samples, in frame order as scipy adds them."""
    n_frames, n_fft = frames.shape
    if n_fft % n_hop:
        for t in range(n_frames):
            at = (first + t) * n_hop
            out[at:at + n_fft] += frames[t]
        return
    # Output block b (n_hop samples) receives part k of frame b - k; adding the parts from
    # k = n_fft / n_hop - 1 down to 0 adds the frames in increasing order, like the loop.
    blocks = out.reshape(-1, n_hop)  # a view: out is contiguous and n_hop divides its length
    parts = frames.reshape(n_frames, -1, n_hop)
    for k in range(parts.shape[1] - 1, -1, -1):
        blocks[first + k:first + k + n_frames] += parts[:, k]


class NnablaSTFT(GraphRunner):
    """Mixture STFT of numpy audio through a cached nnabla graph (bit-exact official front end).

    ``__call__(audio)`` with ``audio`` ``(channels, samples)`` float32 returns
    ``(X, mag)``: the complex64 STFT ``(frames, bins, channels)`` (the layout norbert uses) and
    the magnitude ``(frames, 1, channels, bins)`` float32 (the network input layout). One graph
    is built per signal length and reused; ``graph_builds`` counts the builds.
    """

    def __init__(self, n_fft=4096, n_hop=1024, center=True, ctx=None, max_cached=4):
        self.n_fft = n_fft
        self.n_hop = n_hop
        self.center = center
        super().__init__(self._stft, ctx, max_cached)

    def _stft(self, x):
        real, imag = stft(x, self.n_fft, self.n_hop, self.center)
        return real, imag, magnitude(real, imag)

    def __call__(self, audio):
        real, imag, mag = super().__call__(np.asarray(audio)[None])
        X = (real + 1j * imag)[0].transpose(2, 1, 0)  # (frames, bins, channels)
        return X.astype(np.complex64), mag


class NumpySTFT:
    """Mixture STFT of numpy audio with numpy (see :func:`stft_numpy`); same call interface
    as :class:`NnablaSTFT`: ``(X complex64 (frames, bins, channels), mag float32
    (frames, 1, channels, bins))``. Builds no graph (``graph_builds`` stays 0)."""

    graph_builds = 0

    def __init__(self, n_fft=4096, n_hop=1024, center=True):
        self.n_fft = n_fft
        self.n_hop = n_hop
        self.center = center

    def __call__(self, audio):
        frames, blocks = _common_spectral.stft_blocks(audio, self.n_fft, self.n_hop,
                                                      self.center)
        channels = np.shape(audio)[0]
        X = np.empty((frames, nb_bins(self.n_fft), channels), dtype=np.complex64)
        mag = np.empty((frames, 1, channels, nb_bins(self.n_fft)), dtype=np.float32)
        for rows, block in blocks:  # the float64 STFT is only ever held a block at a time
            X[rows] = block
            mag[rows, 0] = np.abs(block).transpose(0, 2, 1)
        return X, mag

