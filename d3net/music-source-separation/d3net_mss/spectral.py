"""STFT / inverse STFT of the official D3Net separation (librosa conventions, numpy).

The official code uses ``librosa.stft(y, n_fft=4096, hop_length=1024)`` per channel and
``librosa.istft(S, hop_length=1024, center=True)``: window length = ``n_fft``, periodic Hann
window, centred frames with librosa (>= 0.10) default **zero** padding, inverse with
window-sum-square normalisation. These are implemented with numpy in
:mod:`common.mss.spectral`; this module adapts the layouts:

* :func:`stft`: audio ``(samples, channels)`` -> complex64 ``(frames, channels, bins)``
  (computed in float64 and rounded to complex64 as librosa does for float32 input);
  ``1 + samples // hop`` frames.
* :func:`istft`: complex ``(frames, channels, bins)`` -> float64 ``(samples, channels)``.
  ``length=None`` gives librosa's ``(frames - 1) * hop`` samples; a larger ``length`` (up to
  ``(frames - 1) * hop + n_fft // 2``) continues the overlap-add, see
  :func:`common.mss.spectral.istft_numpy`.
"""
import numpy as np

from common.mss.spectral import istft_numpy, stft_numpy


def stft(audio, n_fft=4096, n_hop=1024):
    """librosa-convention STFT of ``(samples, channels)`` audio, complex64
    ``(frames, channels, bins)``."""
    audio = np.asarray(audio, dtype=np.float32)
    X = stft_numpy(audio.T, n_fft, n_hop, center=True, pad_mode="constant")
    return np.ascontiguousarray(X.transpose(0, 2, 1).astype(np.complex64))


def istft(X, n_hop=1024, length=None):
    """librosa-convention inverse STFT of ``(frames, channels, bins)`` -> float64
    ``(samples, channels)``."""
    X = np.asarray(X)
    return np.ascontiguousarray(istft_numpy(X.transpose(1, 2, 0), n_hop, center=True,
                                            length=length).T)
