"""The fast separation paths against the official implementations they replace: the
vectorised Wiener filter (xumx.wiener) against norbert, the inverse STFT (xumx.spectral.istft)
against scipy's, the separator's whole post-processing (every Wiener option) against norbert +
scipy on its own network output, and the on-disk cache of ONNX exports."""
import os
import warnings

import numpy as np
import pytest
import scipy.signal

from common.runtime.params_io import read_param_file
from common.dev.testing import fixtures_root
from xumx import onnx_backend, spectral, wiener
from xumx.separator import Separator

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import norbert

RTOL = 1e-12  # float64 rounding, relative to the largest output


def _umx_file():
    path = fixtures_root() / "x-umx" / "umx_params"
    files = sorted(path.glob("*.h5"))
    if not files:
        pytest.fail(f"no UMX parameter files (*.h5) in {path}", pytrace=False)
    return files[0]


def _random_problem(rng, frames, bins, channels, sources, v_channels):
    x = (rng.standard_normal((frames, bins, channels))
         + 1j * rng.standard_normal((frames, bins, channels))) * 5
    x[3, 5] = 0  # a silent point: norbert's phase is angle(0) = 0 there
    v = np.abs(rng.standard_normal((frames, bins, v_channels, sources))) * 3
    return v, x


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("softmask", [False, True])
@pytest.mark.parametrize("iterations", [0, 1, 2])
def test_wiener_matches_norbert(channels, softmask, iterations):
    rng = np.random.default_rng(channels * 10 + iterations)
    v, x = _random_problem(rng, 40, 150, channels, 4, channels if softmask else 1)
    expected = norbert.wiener(v.copy(), x.copy(), iterations, use_softmask=softmask)
    got = wiener.wiener(v, x, iterations, use_softmask=softmask)
    assert got.shape == expected.shape
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= RTOL * scale


@pytest.mark.parametrize("softmask", [False, True])
def test_wiener_blocks_do_not_change_the_result(softmask):
    """Blocks of bins (first pass), blocks of frames (second pass) and threads change no bit;
    nor does handing the filter a complex64 STFT in norbert's memory layout to be converted
    block by block instead of a contiguous complex128 copy."""
    rng = np.random.default_rng(3)
    v, x = _random_problem(rng, 30, 61, 2, 3, 2)
    V, X = np.transpose(v, (3, 2, 1, 0)), np.ascontiguousarray(np.transpose(x, (2, 1, 0)))
    expected = norbert.wiener(v.copy(), x.copy(), 2, use_softmask=softmask)
    whole = wiener.wiener_planar(V, X, 2, softmask, block_bins=1000, block_frames=1000)
    assert np.abs(np.transpose(whole, (3, 2, 1, 0)) - expected).max() <= (
        RTOL * np.abs(expected).max())
    for block_bins, block_frames, threads in [(1, 1, 1), (7, 4, 1), (7, 13, 2), (1000, 1, 2)]:
        got = wiener.wiener_planar(V, X, 2, softmask, block_bins=block_bins,
                                   block_frames=block_frames, threads=threads)
        assert np.array_equal(got, whole)
    x64 = x.astype(np.complex64)
    filt = wiener.WienerFilter(V, np.transpose(x64, (2, 1, 0)), 2, softmask, block_bins=7,
                               dtype=np.complex128)
    reference = wiener.wiener_planar(V, np.ascontiguousarray(
        np.transpose(x64, (2, 1, 0)), dtype=np.complex128), 2, softmask)
    assert np.array_equal(filt.estimates(), reference)
    assert np.array_equal(filt.estimates(slice(5, 9)), reference[..., 5:9])


def _istft_frame_by_frame(X, n_fft, n_hop, length):
    """The inverse STFT's arithmetic spelled out for one (bins, frames) plane: every frame
    inverted, windowed and added in frame order, then normalised."""
    window = spectral.hann_periodic(n_fft)
    frames = X.shape[-1]
    out = np.zeros(n_fft + (frames - 1) * n_hop)
    norm = np.zeros_like(out)
    for t in range(frames):
        out[t * n_hop:t * n_hop + n_fft] += np.fft.irfft(X[:, t], n=n_fft) * window
        norm[t * n_hop:t * n_hop + n_fft] += window ** 2
    out, norm = out[n_fft // 2:n_fft // 2 + length], norm[n_fft // 2:n_fft // 2 + length]
    covered = norm > 1e-10
    out[covered] /= norm[covered]
    return out


@pytest.mark.parametrize("n_fft,n_hop", [(64, 16), (60, 25)])
def test_istft_blocks_add_frames_in_order(n_fft, n_hop):
    """Whatever the block size and thread count, every sample is the same sum in the same
    order as frame-by-frame overlap-add: equal to the bit."""
    rng = np.random.default_rng(n_fft)
    frames, bins = 23, n_fft // 2 + 1
    X = rng.standard_normal((4, bins, frames)) + 1j * rng.standard_normal((4, bins, frames))
    length = (frames - 1) * n_hop + 7
    expected = np.stack([_istft_frame_by_frame(p, n_fft, n_hop, length) for p in X])
    asked = []

    def spectra(block):
        asked.append((block.start, block.stop))
        return X[..., block]

    for block_frames in (1, 5, 23, 100):
        for threads in (1, 2):
            asked.clear()
            got = spectral.istft_blocks(spectra, 4, frames, n_fft, n_hop, length=length,
                                        threads=threads, block_frames=block_frames)
            assert np.array_equal(got, expected)
            starts = [lo for lo, _ in asked]
            assert sorted(starts) == list(range(0, frames, block_frames))


def _scipy_istft(X, n_fft, n_hop, length):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="NOLA condition failed")
        _, audio = scipy.signal.istft(X / (n_fft // 2), nperseg=n_fft, noverlap=n_fft - n_hop,
                                      boundary=False)
    return audio[..., n_fft // 2:n_fft // 2 + length]


@pytest.mark.parametrize("n_fft,n_hop,frames", [(64, 16, 9), (60, 25, 9), (32, 16, 3),
                                                 (4096, 1024, 12)])
def test_istft_matches_scipy(n_fft, n_hop, frames):
    rng = np.random.default_rng(n_fft + n_hop)
    bins = n_fft // 2 + 1
    X = rng.standard_normal((3, 2, bins, frames)) + 1j * rng.standard_normal((3, 2, bins, frames))
    official = (frames - 1) * n_hop
    for length in (None, official + 5, official + n_fft // 2):
        expected = _scipy_istft(X, n_fft, n_hop, official if length is None else length)
        for threads in (1, 2):
            got = spectral.istft(X, n_fft, n_hop, length=length, threads=threads)
            assert got.shape == expected.shape
            assert np.abs(got - expected).max() <= RTOL * np.abs(expected).max()
    with pytest.raises(ValueError, match="exceeds"):
        spectral.istft(X, n_fft, n_hop, length=official + n_fft // 2 + 1)


@pytest.mark.parametrize("options", [dict(niter=1), dict(niter=0),
                                     dict(niter=2, softmask=True, alpha=1.5),
                                     dict(niter=1, residual=True)])
def test_separator_post_processing_matches_norbert(options):
    """Separator.separate = norbert.wiener (+ residual_model) + scipy istft on its own
    STFT and masks (the network output is shared, so only the post-processing is compared)."""
    sep = Separator(_umx_file(), backend="nnabla", **options)
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal((sep.n_fft * 3 + 77, 2)) * 0.1).astype(np.float32)
    X, mag, masks = sep.analyze(audio)
    V = np.stack([m * mag[:, 0] for m in masks.values()], axis=0).transpose(1, 3, 2, 0)
    if sep.softmask:
        V = V ** sep.alpha
    if len(sep.output_names) > len(sep.network_targets):
        V = norbert.residual_model(V, X, sep.alpha if sep.softmask else 1)
    Y = norbert.wiener(V, X.astype(np.complex128), sep.niter, use_softmask=sep.softmask)
    got = sep.separate(audio)
    assert list(got) == sep.output_names
    for j, name in enumerate(sep.output_names):
        expected = _scipy_istft(Y[..., j].T, sep.n_fft, sep.n_hop, audio.shape[0]).T
        assert got[name].shape == expected.shape
        assert np.abs(got[name] - expected).max() <= 1e-9 * np.abs(expected).max()


@pytest.mark.parametrize("one_target", [False, True], ids=["all-targets", "one-target"])
@pytest.mark.parametrize("options", [dict(niter=1), dict(niter=0),
                                     dict(niter=2, softmask=True, alpha=1.5),
                                     dict(niter=1, residual=True)])
def test_separator_streaming_equals_whole_arrays(options, one_target):
    """The separator streams blocks of frames from the Wiener filter into the inverse STFT;
    the result is the one of filtering and inverting the whole arrays, to the bit (one
    target: with the residual source norbert adds, as for ``residual=True``)."""
    weights = _umx_file() if one_target else _umx_file().parent  # one target or all of them
    sep = Separator(weights, backend="nnabla", threads=2, **options)
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal((sep.n_hop * 70 + 5, 2)) * 0.1).astype(np.float32)
    X, mag, masks = sep.analyze(audio)
    V = np.stack([(m * mag[:, 0]).transpose(1, 2, 0) for m in masks.values()])
    if sep.softmask:
        V = V ** sep.alpha
    if len(sep.output_names) > len(sep.network_targets):
        V = np.transpose(norbert.residual_model(np.transpose(V, (3, 2, 1, 0)), X,
                                                sep.alpha if sep.softmask else 1), (3, 2, 1, 0))
    X = np.ascontiguousarray(X.transpose(2, 1, 0), dtype=np.complex128)
    Y = wiener.wiener_planar(V, X, sep.niter, sep.softmask, block_frames=X.shape[-1])
    expected = spectral.istft(Y, sep.n_fft, sep.n_hop, length=audio.shape[0])
    got = sep.separate(audio)
    for j, name in enumerate(sep.output_names):
        assert np.array_equal(got[name], expected[j].T)


def test_onnx_export_cache(tmp_path):
    params = read_param_file(_umx_file())[0]
    cache = tmp_path / "cache"
    uncached = onnx_backend.build_onnx_runner("umx", params)
    first = onnx_backend.build_onnx_runner("umx", params, cache_dir=cache)
    files = sorted(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".onnx"
    stamp = files[0].stat().st_mtime_ns
    second = onnx_backend.build_onnx_runner("umx", params, cache_dir=cache)
    assert files[0].stat().st_mtime_ns == stamp  # loaded, not exported again
    mag = np.abs(np.random.default_rng(1).standard_normal(
        (7, 1, uncached.config["nb_channels"], uncached.config["nb_output_bins"]))
    ).astype(np.float32)
    assert np.array_equal(first(mag), uncached(mag))
    assert np.array_equal(second(mag), uncached(mag))
    saved = tmp_path / "copy.onnx"
    second.save(str(saved))
    assert saved.read_bytes() == files[0].read_bytes()

    changed = dict(params)
    name = next(k for k in changed if k.endswith("fc3/affine/W"))
    changed[name] = np.asarray(changed[name]) * 2
    onnx_backend.build_onnx_runner("umx", changed, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2  # other weights, other key

    files[0].write_bytes(b"not an onnx model")  # damaged: exported again, not run
    again = onnx_backend.build_onnx_runner("umx", params, cache_dir=cache)
    assert np.array_equal(again(mag), uncached(mag))
    assert not [f for f in os.listdir(cache) if f.endswith(".tmp")]
