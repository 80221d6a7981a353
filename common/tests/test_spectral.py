"""The shared numpy STFT (common.mss.spectral): computed block by block of frames, with the
same values as transforming every frame on its own, whatever the block size."""
import numpy as np
import pytest

from common.mss import spectral


def _frame_by_frame(audio, n_fft, n_hop, pad_mode):
    x = np.pad(audio.astype(np.float64), ((0, 0), (n_fft // 2, n_fft // 2)), mode=pad_mode)
    window = spectral.hann_periodic(n_fft)
    frames = 1 + (x.shape[1] - n_fft) // n_hop
    out = np.empty((frames, n_fft // 2 + 1, x.shape[0]), dtype=np.complex128)
    for t in range(frames):
        for c in range(x.shape[0]):
            out[t, :, c] = np.fft.rfft(x[c, t * n_hop:t * n_hop + n_fft] * window)
    return out


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_stft_blocks_equal_frame_by_frame(pad_mode):
    rng = np.random.default_rng(5)
    audio = rng.standard_normal((2, 64 * 20 + 37)).astype(np.float32)
    expected = _frame_by_frame(audio, 256, 64, pad_mode)
    for block_frames in (1, 7, 64, 1000):
        got = spectral.stft_numpy(audio, 256, 64, block_frames=block_frames, pad_mode=pad_mode)
        assert got.shape == expected.shape
        assert np.array_equal(got, expected)
    frames, blocks = spectral.stft_blocks(audio, 256, 64, block_frames=7, pad_mode=pad_mode)
    seen = 0
    for rows, block in blocks:
        assert rows.start == seen and block.shape == (rows.stop - rows.start, 129, 2)
        assert np.array_equal(block, expected[rows])
        seen = rows.stop
    assert seen == frames == expected.shape[0]


def test_stft_refuses_a_signal_shorter_than_a_frame():
    with pytest.raises(ValueError, match="too short"):
        spectral.stft_blocks(np.zeros((1, 100)), 256, 64, center=False)
