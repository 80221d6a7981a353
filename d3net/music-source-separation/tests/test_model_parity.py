"""Parity of the D3Net MSS re-implementation with fixtures made by the official code.

Tolerances are those the fixture README derives from the official code's own float32
sensitivity:

* network forward and patch-wise magnitudes: >= 99.9 % of the elements within
  1e-4 x max|ref| and all within 5e-3 x max|ref|;
* mixture STFT: max abs diff <= 1e-4 x max|ref|;
* Wiener-filtered STFT head: same rule as the magnitudes (it inherits their drift);
* estimates: max abs diff <= 1e-3 x peak|ref| or SNR >= 60 dB.

Measured errors are printed (``pytest -s``) and attached as test properties.
"""
import sys
import warnings
from collections import OrderedDict

import numpy as np
import pytest

from common.errors import UserError
from common.runtime.params_io import read_param_file
from d3net_mss import spectral, weights, wiener
from d3net_mss.model import D3NetMSS, load_config, strip_target_prefix
from d3net_mss.separator import Separator, patch_inference, patch_layout, source_stfts


def _report(record_property, name, **values):
    text = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in values.items())
    print(f"[d3net-mss] {name}: {text}")
    for k, v in values.items():
        record_property(f"{name}.{k}", v)


def _stats(out, ref):
    out = np.asarray(out)
    ref = np.asarray(ref)
    scale = float(np.abs(ref).max())
    err = np.abs(out.astype(np.complex128 if np.iscomplexobj(out) else np.float64) - ref)
    return {
        "max_rel": float(err.max() / scale),
        "frac_within_1e-4": float(np.mean(err <= 1e-4 * scale)),
        "rms_rel": float(np.sqrt(np.mean(err ** 2)) / np.sqrt(np.mean(np.abs(ref) ** 2))),
        "max_abs": float(err.max()),
    }


def _assert_network_tol(stats, what):
    assert stats["frac_within_1e-4"] >= 0.999, (
        f"{what}: only {stats['frac_within_1e-4']:.4%} of elements within 1e-4 x max|ref|")
    assert stats["max_rel"] <= 5e-3, f"{what}: max error {stats['max_rel']:.3g} x max|ref|"


def _needs(target, available, what):
    if target == "<none found>":
        pytest.fail(f"no {what} found in the fixture folder", pytrace=False)
    assert target in available


def _file_params(fx, target):
    params, _ = read_param_file(str(fx.param_files[target]))
    return params


# --------------------------------------------------------------------------- parameters

def test_config_builds_the_file_parameters(fx, param_target, record_property):
    """Our configs/<target>.yaml builds exactly the file's names, order and shapes."""
    _needs(param_target, fx.param_files, "D3Net parameter files (*.h5)")
    raw = _file_params(fx, param_target)
    assert all(k.startswith(f"{param_target}/") for k in raw), \
        "official files carry the '<target>/' prefix on every name"
    params = strip_target_prefix(raw, param_target)
    expected = D3NetMSS(load_config(param_target)).parameter_shapes()
    assert list(expected) == list(params), "parameter names / creation order differ"
    bad = {k: (tuple(params[k].shape), s) for k, s in expected.items()
           if tuple(params[k].shape) != s}
    assert not bad, f"shape mismatches: {bad}"
    # the loader accepts the file and finds the same target and config
    p, cfg = weights.load_target(fx.param_files[param_target])
    assert cfg["target"] == param_target and list(p) == list(params)
    _report(record_property, f"params[{param_target}]", tensors=len(params),
            values=int(sum(v.size for v in params.values())))


def test_wrong_config_is_rejected_with_a_listing(fx):
    target, path = next(iter(fx.param_files.items()))
    cfg = load_config(target)
    cfg["ttl_dens_k"] += 1
    cfg["f_dens_k"] = [k + 1 for k in cfg["f_dens_k"]]
    with pytest.raises(UserError) as info:
        weights.load_target(path, config=cfg)
    msg = str(info.value)
    assert str(path) in msg and "wrong shape" in msg and "expected" in msg
    with pytest.raises(UserError, match="missing"):
        D3NetMSS(load_config(target)).load_parameters(
            OrderedDict(list(strip_target_prefix(_file_params(fx, target), target).items())[1:]))


# --------------------------------------------------------------------------- forward

def test_forward_parity(fx, forward_target, record_property):
    _needs(forward_target, fx.forward_targets, "output_<target> arrays")
    ref = fx.forward[f"output_{forward_target}"]
    arrays, meta = fx.result(forward_target)
    out = arrays["forward"]
    assert out.shape == ref.shape == fx.forward["input"].shape
    stats = _stats(out, ref)
    _report(record_property, f"forward[{forward_target}]", **stats,
            seconds=meta["forward_seconds"])
    _assert_network_tol(stats, f"forward {forward_target}")
    # bins >= valid_signal_idx are the input, unchanged
    valid = load_config(forward_target)["valid_signal_idx"]
    np.testing.assert_array_equal(out[..., valid:], fx.forward["input"][..., valid:])


# --------------------------------------------------------------------------- separation

def test_mixture_stft(fx, record_property):
    data = fx.separate
    audio, ref = data["audio"], data["inp_stft"]
    n_bins = ref.shape[2]
    n_fft = 2 * (n_bins - 1)
    hop = load_config(fx.separate_targets[0])["hop_size"]
    X = spectral.stft(audio, n_fft, hop)
    assert X.shape == ref.shape and X.dtype == np.complex64
    stats = _stats(X, ref)
    _report(record_property, "inp_stft", max_rel=stats["max_rel"], max_abs=stats["max_abs"])
    assert stats["max_rel"] <= 1e-4


def test_patch_magnitudes(fx, sep_target, record_property):
    """Official patch-wise inference (padding, overlap-add, channel-flip average) on the
    separation fixture, through the Separator; one graph serves every patch."""
    _needs(sep_target, fx.separate_targets, "mag_<target> arrays")
    ref = fx.separate[f"mag_{sep_target}"]
    arrays, meta = fx.result(sep_target)
    out = arrays["mag"]
    assert out.shape == ref.shape
    stats = _stats(out, ref)
    cfg = load_config(sep_target)
    _, _, n_patches, _ = patch_layout(ref.shape[0], cfg["test_patch_len"], cfg["out_shift"])
    _report(record_property, f"mag[{sep_target}]", **stats, patches=n_patches,
            seconds=meta["patch_seconds"], worker_wall=meta["wall_seconds"],
            worker_cpu=meta["cpu_seconds"])
    _assert_network_tol(stats, f"mag {sep_target}")
    # graph reuse: every patch ran through the single graph built for the patch shape
    shapes = {tuple(s) for s in meta["patch_shapes"]}
    assert len(meta["patch_shapes"]) == n_patches
    assert shapes == {(2, cfg["test_patch_len"]) + ref.shape[1:]}
    assert meta["patch_graph_builds"] == 1


def _official_filter(X, mags):
    """Mixture phase + the Wiener filter over all targets, as the official run does (it
    filters even a single target; the Separator skips that degenerate case)."""
    phase = np.exp(1j * np.angle(X))
    stfts = wiener.apply_mwf(OrderedDict((t, m * phase) for t, m in mags.items()), X)
    if len(mags) > 1:
        for t, s in source_stfts(X, mags, mwf=True).items():
            np.testing.assert_array_equal(s, stfts[t])
    return stfts


def _our_stfts(fx):
    """Our mixture STFT, our magnitudes (workers) and our Wiener filter, all targets."""
    def make():
        data = fx.separate
        n_bins = data["inp_stft"].shape[2]
        hop = load_config(fx.separate_targets[0])["hop_size"]
        X = spectral.stft(data["audio"], 2 * (n_bins - 1), hop)
        mags = OrderedDict((t, fx.result(t)[0]["mag"]) for t in fx.separate_targets)
        return X, _official_filter(X, mags), hop
    return fx.memo("our_stfts", make)


def test_wiener_filter_head(fx, sep_target, record_property):
    _needs(sep_target, fx.separate_targets, "mag_<target> arrays")
    ref = fx.separate[f"mwf_stft_head_{sep_target}"]
    _, stfts, _ = _our_stfts(fx)
    stats = _stats(stfts[sep_target][:ref.shape[0]], ref)
    _report(record_property, f"mwf_head[{sep_target}]", **stats)
    _assert_network_tol(stats, f"mwf head {sep_target}")


def test_wiener_filter_alone(fx, record_property):
    """The filter on the fixture's own magnitudes and mixture STFT (isolates it from the
    network); norbert's one-iteration EM is measured too, for the record."""
    data = fx.separate
    targets = fx.separate_targets
    X = data["inp_stft"]
    mags = OrderedDict((t, data[f"mag_{t}"]) for t in targets)
    ours = _official_filter(X, mags)
    worst = 0.0
    for t in targets:
        ref = data[f"mwf_stft_head_{t}"]
        stats = _stats(ours[t][:ref.shape[0]], ref)
        worst = max(worst, stats["max_rel"])
        assert stats["max_rel"] <= 1e-5, f"{t}: {stats}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import norbert
    V = np.stack([mags[t] for t in targets], -1).transpose(0, 2, 1, 3).astype(np.float64)
    Y = norbert.wiener(V, X.transpose(0, 2, 1).astype(np.complex128), 1, use_softmask=False)
    nb = max(_stats(Y[:data[f"mwf_stft_head_{t}"].shape[0], :, :, j].transpose(0, 2, 1),
                    data[f"mwf_stft_head_{t}"])["max_rel"] for j, t in enumerate(targets))
    _report(record_property, "mwf_alone", ours_max_rel=worst, norbert_max_rel=nb)


def test_estimates(fx, sep_target, record_property):
    _needs(sep_target, fx.separate_targets, "mag_<target> arrays")
    ref = fx.separate[f"est_{sep_target}"].astype(np.float64)
    audio = fx.separate["audio"]
    X, stfts, hop = _our_stfts(fx)
    est = spectral.istft(stfts[sep_target], hop, length=audio.shape[0])
    assert est.shape == audio.shape, "estimates must have exactly the input length"
    official = spectral.istft(stfts[sep_target], hop)
    assert official.shape[0] == ref.shape[0] == (X.shape[0] - 1) * hop
    np.testing.assert_array_equal(est[:ref.shape[0]], official)
    err = np.abs(est[:ref.shape[0]] - ref)
    peak = float(np.abs(ref).max())
    snr = float(10 * np.log10(np.sum(ref ** 2) / max(np.sum(err ** 2), 1e-300)))
    _report(record_property, f"est[{sep_target}]", max_abs=float(err.max()),
            max_rel=float(err.max() / peak), snr_db=snr,
            abs_within_1em4=bool(err.max() <= 1e-4), extra_samples=audio.shape[0] - ref.shape[0])
    assert err.max() <= 1e-3 * peak or snr >= 60.0


# --------------------------------------------------------------------------- machinery

def _tiny_config(base_target):
    """A small config of the same structure (fast), for pipeline / graph-reuse tests."""
    cfg = load_config(base_target)
    cfg.update(valid_signal_idx=64, band_split_idxs=[16], num_init_features=[4, 4],
               dens_k=[[4, 4, 4], [2, 2, 2]], num_layer_blocks=[[2, 2, 2], [1, 1, 1]],
               b_n_blocks=[[2, 2, 2], [1, 1, 1]], comp_rates=[[1.0, 1.0], [1.0, 1.0]],
               f_num_init_features=4, f_dens_k=[3, 3, 3], f_num_layer_block=[2, 2, 2],
               f_n_blocks=[2, 2, 2], f_comp_rates=[1.0, 1.0], ttl_dens_k=4,
               ttl_num_layer_block=2, test_patch_len=8, out_shift=4)
    return cfg


@pytest.fixture(scope="module")
def tiny_separator():
    import nnabla as nn

    nn.seed(0)
    params, configs = OrderedDict(), OrderedDict()
    for t in ("vocals", "bass"):
        cfg = _tiny_config(t)
        m = D3NetMSS(cfg)
        m.create_parameters()
        rng = np.random.RandomState(len(t))
        p = m.parameters_numpy()
        for k in p:  # non-trivial running statistics and output scaling
            if k.endswith("/bn/mean"):
                p[k] = rng.uniform(-0.2, 0.2, p[k].shape).astype(np.float32)
            elif k.endswith("/bn/var"):
                p[k] = rng.uniform(0.5, 2, p[k].shape).astype(np.float32)
        params[t], configs[t] = p, cfg
    return params, configs


def test_graph_reuse_and_output_length(tiny_separator):
    params, configs = tiny_separator
    sep = Separator.from_params(params, configs, backend="nnabla")
    rng = np.random.RandomState(1)
    audio = (0.1 * rng.randn(22050 + 77, 2)).astype(np.float32)
    out1 = sep(audio)
    builds = sep.graph_builds
    assert builds == len(params)  # one graph per target for all its patches
    out2 = sep(audio)
    assert sep.graph_builds == builds, "separating again must not build a graph"
    n_patches = patch_layout(1 + audio.shape[0] // sep.n_hop, 8, 4)[2]
    assert n_patches > 2
    assert list(out1) == sep.targets == list(params)
    for t in params:
        assert out1[t].shape == audio.shape and out1[t].dtype == np.float32
        assert np.all(np.isfinite(out1[t]))
        np.testing.assert_array_equal(out1[t], out2[t])
    # a different input length reuses the same patch graph too
    sep(audio[:5000])
    assert sep.graph_builds == builds
    # mono input is duplicated to stereo, output still (samples, 2)
    mono = sep(audio[:3000, :1])
    assert all(v.shape == (3000, 2) for v in mono.values())


def test_patch_inference_scheme():
    """Identity network: the overlap-add gives back the input wherever ``scale`` patches
    cover a frame; the official scheme under-covers the last frames when
    ``frames % patch_len > shift`` (they come out scaled by coverage / scale), which
    ``full_overlap=True`` avoids. Each call sees one patch (x2 with flip)."""
    rng = np.random.RandomState(0)
    calls = []
    P, S = 8, 4

    def identity(x):
        calls.append(x.shape)
        return x.copy()

    for n in (1, 4, 5, 7, 8, 9, 12, 13, 31, 32):
        mag = rng.rand(n, 2, 5).astype(np.float32)
        front, _, n_patches, scale = patch_layout(n, P, S)
        cover = np.zeros(n)
        for k in range(n_patches):
            lo, hi = max(k * S - front, 0), min(k * S + P - front, n)
            cover[lo:hi] += 1
        assert (n % P > S) == bool(np.any(cover < scale))
        for flip in (True, False):
            calls.clear()
            out = patch_inference(mag, identity, P, S, ch_flip_average=flip)
            np.testing.assert_allclose(out, mag * (cover / scale)[:, None, None], rtol=1e-6)
            assert set(calls) == {(2 if flip else 1, P, 2, 5)}
            assert len(calls) == n_patches
            full = patch_inference(mag, identity, P, S, ch_flip_average=flip,
                                   full_overlap=True)
            np.testing.assert_allclose(full, mag, rtol=1e-6)

    def left_only(x):  # keeps channel 0: flip averaging makes it (L / 2, R / 2)
        return x * np.array([1.0, 0.0], np.float32)[None, None, :, None]

    mag = rng.rand(20, 2, 3).astype(np.float32)
    out = patch_inference(mag, left_only, 8, 4, ch_flip_average=True)
    np.testing.assert_allclose(out, 0.5 * mag, rtol=1e-6)
    out = patch_inference(mag, left_only, 8, 4, ch_flip_average=False)
    np.testing.assert_allclose(out[:, 0], mag[:, 0], rtol=1e-6)
    assert not out[:, 1].any()
    with pytest.raises(UserError):
        patch_layout(10, 8, 3)


def test_istft_extension_keeps_the_official_samples():
    rng = np.random.RandomState(2)
    audio = rng.randn(10000, 2).astype(np.float32)
    X = spectral.stft(audio, 1024, 256)
    official = spectral.istft(X, 256)
    full = spectral.istft(X, 256, length=audio.shape[0])
    assert official.shape[0] == (X.shape[0] - 1) * 256 < full.shape[0] == audio.shape[0]
    np.testing.assert_array_equal(full[:official.shape[0]], official)
    # perfect reconstruction of the whole input, extension included
    np.testing.assert_allclose(full, audio, atol=1e-5)


def test_single_target_skips_wiener(tiny_separator):
    params, configs = tiny_separator
    sep = Separator.from_params(params, configs, targets=["bass"], backend="nnabla")
    audio = (0.1 * np.random.RandomState(3).randn(6000, 2)).astype(np.float32)
    with pytest.warns(UserWarning, match="Wiener"):
        out = sep(audio)
    assert list(out) == ["bass"] and out["bass"].shape == audio.shape


def test_onnx_backend_missing_is_a_user_error(tiny_separator, monkeypatch):
    params, configs = tiny_separator
    monkeypatch.setitem(sys.modules, "d3net_mss.onnx_backend", None)
    with pytest.raises(UserError, match="onnx"):
        Separator.from_params(params, configs, backend="onnx")
    with pytest.raises(UserError, match="unknown backend"):
        Separator.from_params(params, configs, backend="tflite")


def test_wiener_fallback_inverse():
    """Where det C < 1e-10 the official C^H / ||C||_F^2 is used, elsewhere the inverse."""
    C = np.zeros((1, 2, 2, 2), np.complex128)
    C[0, :, :, 0] = [[2.0, 1.0j], [-1.0j, 3.0]]
    C[0, :, :, 1] = [[1e-6, 1e-6], [1e-6, 1e-6]]
    inv = wiener.invert_2x2(C)
    np.testing.assert_allclose(inv[0, :, :, 0] @ C[0, :, :, 0], np.eye(2), atol=1e-12)
    ref = C[0, :, :, 1].conj().T / (np.sum(np.abs(C[0, :, :, 1]) ** 2) + np.finfo(float).eps)
    np.testing.assert_allclose(inv[0, :, :, 1], ref)


def test_wiener_blocks_of_bins_change_no_bit():
    """The filter runs a block of bins at a time; any block size gives the values of one
    whole-array pass, the fallback inverse of a silent bin included."""
    rng = np.random.default_rng(4)
    frames, bins = 23, 41
    X = (rng.standard_normal((frames, 2, bins))
         + 1j * rng.standard_normal((frames, 2, bins))).astype(np.complex64)
    phase = np.exp(1j * np.angle(X))
    mags = [np.abs(rng.standard_normal((frames, 2, bins))).astype(np.float32) for _ in range(3)]
    for m in mags:
        m[:, :, 5] = 0  # every source silent there: C is 0, the fallback inverse is used
    stfts = OrderedDict((f"s{j}", m * phase) for j, m in enumerate(mags))
    whole = wiener.apply_mwf(stfts, X, block_bins=bins)
    # the one pass spelled out
    models = [wiener.local_gaussian_model(s) for s in stfts.values()]
    C = sum(v[:, None, None, :] * R[None] for v, R in models)
    w = np.einsum("tklf,tlf->tkf", wiener.invert_2x2(C), X.astype(np.complex128))
    for (v, R), got in zip(models, whole.values()):
        assert np.array_equal(got, v[:, None, :] * np.einsum("ikf,tkf->tif", R, w))
    for block_bins in (1, 7, 40, 1000):
        got = wiener.apply_mwf(stfts, X, block_bins=block_bins)
        assert all(np.array_equal(got[k], whole[k]) for k in whole)

