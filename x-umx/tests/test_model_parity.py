"""Parity of the X-UMX / UMX networks and separation with the official NNabla code.

Reference data: ``$FIXTURES_DIR/x-umx`` (see the fixture README). Every size and length is
read from the files: hidden size / max_bin from ``xumx_outputs.npz``, n_fft from the length
of ``output_scale*``, channels from the fc1 input width, LSTM layers / directions from the
LSTM bias shape, frame counts and signal lengths from the arrays. The STFT hop is not stored;
it is the official ``n_fft // 4`` and is checked against the length of the official output.
"""
import shutil
import sys
import time
import zipfile

import numpy as np
import pytest

from common.errors import UserError
from common.runtime.params_io import read_param_file, write_param_file
from xumx import weights
from xumx.model import CrossNet, OpenUnmix
from xumx.separator import Separator

EST_REL_TOL = 1e-4    # README: est_* <= 1e-4 x peak |est|
EST_ABS_TOL = 1e-4    # issue: 1e-4 absolute
SPEC_REL_TOL = 1e-5   # mix_spec_head
MASK_REL_TOL = 1e-4   # masks_head


# ---------------------------------------------------------------------------- helpers
def _shapes(params):
    return {k: tuple(v.shape) for k, v in params.items()}


def _sizes_from_file(params, prefix_fc1, lstm_bias, out_scale, max_bin):
    """Network sizes read directly off the parameter shapes (independent of xumx.weights)."""
    w = params[prefix_fc1]
    bias = params[lstm_bias]
    nb_output_bins = params[out_scale].shape[0]
    assert w.shape[0] % max_bin == 0
    return {
        "hidden_size": w.shape[1],
        "max_bin": max_bin,
        "n_fft": 2 * (nb_output_bins - 1),
        "nb_output_bins": nb_output_bins,
        "nb_channels": w.shape[0] // max_bin,
        "nb_layers": bias.shape[0],
        "bidirectional": bias.shape[1] == 2,
    }


def _xumx_file(fx):
    return fx.memo("xumx_file", lambda: read_param_file(str(fx.xumx_params))[0])


def _xumx_sizes(fx):
    out = fx.xumx_outputs
    sizes = _sizes_from_file(_xumx_file(fx), "fc1_bass/affine/W", "lstm_bass/lstm/bias",
                             "output_scale_bass", int(out["max_bin"]))
    assert sizes["hidden_size"] == int(out["hidden_size"])
    return sizes


def _umx_files(fx):
    def load():
        files = sorted(p for p in fx.umx_dir.glob("*.h5"))
        assert files, f"no UMX parameter files in {fx.umx_dir}"
        return {p.stem: read_param_file(str(p))[0] for p in files}
    return fx.memo("umx_files", load)


def _targets(npz):
    return [k[len("est_"):] for k in npz if k.startswith("est_")]


def _xumx_separator(fx):
    return fx.memo("xumx_sep", lambda: Separator(fx.xumx_params, backend="nnabla"))


def _umx_separator(fx):
    targets = _targets(fx.umx_outputs)
    return fx.memo("umx_sep", lambda: Separator(fx.umx_dir, targets=targets,
                                                        backend="nnabla"))


def _hop(fx, sizes, n_out):
    hop = sizes["n_fft"] // 4
    n_in = fx.audio.shape[0]
    assert (n_in // hop) * hop == n_out, (
        f"official output length {n_out} does not fit hop {hop} for {n_in} input samples")
    return hop


def _check_estimates(fx, refs, ours, label):
    audio = fx.audio
    report = []
    for target in _targets(refs):
        ref = refs[f"est_{target}"]
        est = ours[target]
        assert est.shape == audio.shape, (target, est.shape, audio.shape)
        assert est.dtype == np.float32
        n = ref.shape[0]
        err = float(np.abs(est[:n].astype(np.float64) - ref).max())
        peak = float(np.abs(ref).max())
        report.append(f"{label} {target}: max abs {err:.3g}, rel {err / peak:.3g}")
        assert err <= EST_ABS_TOL, report[-1]
        assert err <= EST_REL_TOL * peak, report[-1]
        assert np.all(np.isfinite(est))
    print("\n".join(report))


# ---------------------------------------------------------------------------- sizes / names
def test_xumx_config_inferred_from_file(fx):
    sizes = _xumx_sizes(fx)
    _, config = weights.load_xumx(fx.xumx_params)
    for key, value in sizes.items():
        assert config[key] == value, key
    assert config["sources"] == ["bass", "drums", "vocals", "other"]
    out = fx.xumx_outputs
    assert out["mix_spec_head"].shape[2:] == (sizes["nb_channels"], sizes["nb_output_bins"])
    assert out["masks_head"].shape[2:] == (4 * sizes["nb_channels"], sizes["nb_output_bins"])


def test_umx_config_inferred_from_files(fx):
    files = _umx_files(fx)
    _, configs = weights.load_umx(fx.umx_dir, targets=list(files))
    for target, params in files.items():
        sizes = _sizes_from_file(params, "fc1/affine/W", "lstm/lstm/bias", "output_scale",
                                 params["input_mean"].shape[0])
        for key, value in sizes.items():
            assert configs[target][key] == value, (target, key)


def test_xumx_fresh_parameters_match_file(fx):
    sizes = _xumx_sizes(fx)
    model = CrossNet(hidden_size=sizes["hidden_size"], n_fft=sizes["n_fft"],
                     max_bin=sizes["max_bin"], nb_channels=sizes["nb_channels"],
                     nb_layers=sizes["nb_layers"], bidirectional=sizes["bidirectional"])
    fresh = model.create_parameters()
    file_params, file_need_grad = read_param_file(str(fx.xumx_params))
    assert _shapes(fresh) == _shapes(file_params)
    assert list(fresh) == list(file_params), "creation order differs from the file's index order"
    assert {k: v.need_grad for k, v in fresh.items()} == dict(file_need_grad)
    loaded = CrossNet(hidden_size=sizes["hidden_size"], n_fft=sizes["n_fft"],
                      max_bin=sizes["max_bin"], nb_channels=sizes["nb_channels"],
                      nb_layers=sizes["nb_layers"], bidirectional=sizes["bidirectional"])
    loaded.load_parameters(file_params)
    assert {k: v.need_grad for k, v in loaded.get_parameters().items()} == dict(file_need_grad)
    for k, v in loaded.get_parameters().items():
        np.testing.assert_array_equal(v.d, file_params[k])


def test_umx_fresh_parameters_match_files(fx):
    for target, params in _umx_files(fx).items():
        sizes = _sizes_from_file(params, "fc1/affine/W", "lstm/lstm/bias", "output_scale",
                                 params["input_mean"].shape[0])
        model = OpenUnmix(hidden_size=sizes["hidden_size"], n_fft=sizes["n_fft"],
                          max_bin=sizes["max_bin"], nb_channels=sizes["nb_channels"],
                          nb_layers=sizes["nb_layers"], bidirectional=sizes["bidirectional"])
        fresh = model.create_parameters()
        assert _shapes(fresh) == _shapes(params), target
        assert list(fresh) == list(params), target


# ---------------------------------------------------------------------------- network parity
@pytest.mark.parametrize("stft", ["numpy", "nnabla"])
def test_xumx_mix_spec_head(fx, stft):
    ref = fx.xumx_outputs["mix_spec_head"]
    if stft == "numpy":
        sep = _xumx_separator(fx)
    else:
        params, config = weights.load_xumx(fx.xumx_params)
        sep = Separator.from_params("xumx", params, config, stft="nnabla", backend="nnabla")
    stft_front = sep._stft
    X, mag, _ = sep.analyze(fx.audio)
    n = ref.shape[0]
    assert mag.shape[1:] == ref.shape[1:]
    assert X.shape == (mag.shape[0], mag.shape[3], mag.shape[2])
    err = float(np.abs(mag[:n] - ref).max())
    print(f"mix_spec_head ({stft} STFT): max abs {err:.3g}, rel {err / np.abs(ref).max():.3g}")
    assert err <= SPEC_REL_TOL * np.abs(ref).max()
    np.testing.assert_allclose(np.abs(X[:n]).transpose(0, 2, 1), ref[:, 0],
                               rtol=0, atol=SPEC_REL_TOL * np.abs(ref).max())
    if stft == "nnabla":  # the STFT graph is cached per length
        assert stft_front.graph_builds == 1
        sep.analyze(fx.audio)
        assert stft_front.graph_builds == 1


def test_xumx_masks_head(fx):
    ref = fx.xumx_outputs["masks_head"]
    _, _, masks = _xumx_separator(fx).analyze(fx.audio)
    ours = np.concatenate(list(masks.values()), axis=1)  # (frames, 4 * C, bins), bass first
    n = ref.shape[0]
    assert ours.shape[1:] == ref.shape[2:]
    err = float(np.abs(ours[:n] - ref[:, 0]).max())
    print(f"masks_head: max abs {err:.3g}, rel {err / np.abs(ref).max():.3g}")
    assert err <= MASK_REL_TOL * np.abs(ref).max()


def test_xumx_in_graph_front_end(fx):
    """The training-style graph (STFT inside nnabla) gives the same spectrogram and masks."""
    import nnabla as nn

    params, config = weights.load_xumx(fx.xumx_params)
    model = CrossNet.from_config(config)
    model.load_parameters(params)
    audio = nn.Variable.from_numpy_array(np.ascontiguousarray(fx.audio.T)[None])
    with nn.auto_forward(False):
        mix_spec, masks, _ = model(audio, test=True, with_time_domain=False)
    masks.forward()
    out = fx.xumx_outputs
    n = out["masks_head"].shape[0]
    ref_spec, ref_masks = out["mix_spec_head"], out["masks_head"]
    assert np.abs(mix_spec.d[:n] - ref_spec).max() <= SPEC_REL_TOL * np.abs(ref_spec).max()
    assert np.abs(masks.d[:n] - ref_masks).max() <= MASK_REL_TOL * np.abs(ref_masks).max()


# ---------------------------------------------------------------------------- separation parity
def test_xumx_separation(fx):
    refs = fx.xumx_outputs
    sep = _xumx_separator(fx)
    _hop(fx, _xumx_sizes(fx), refs["est_bass"].shape[0])
    _check_estimates(fx, refs, sep(fx.audio), "X-UMX")


def test_umx_separation(fx):
    refs = fx.umx_outputs
    sep = _umx_separator(fx)
    assert sep.targets == _targets(refs)
    _check_estimates(fx, refs, sep(fx.audio), "UMX")


def test_official_length_mode_and_full_length_tail(fx):
    """``full_length=False`` returns the official number of samples; the full-length output
    agrees with it on the common part (up to float64 rounding), and its extra tail is
    consistent: the estimates still sum to the mixture there (the Wiener filter conserves
    the mixture)."""
    sep = _xumx_separator(fx)
    audio = fx.audio
    n_off = fx.xumx_outputs["est_bass"].shape[0]
    official = sep.separate(audio, full_length=False)
    full = sep.separate(audio)
    for name in sep.output_names:
        assert official[name].shape == (n_off, audio.shape[1])
        np.testing.assert_allclose(full[name][:n_off], official[name], rtol=0, atol=1e-12)
    total = sum(full.values())
    tail_err = np.abs(total[n_off:] - audio[n_off:]).max()
    assert audio.shape[0] > n_off and tail_err <= 1e-5 * np.abs(audio).max(), tail_err


def test_single_target_adds_accompaniment(fx):
    params, config = weights.load_xumx(fx.xumx_params)
    sep = Separator.from_params("xumx", params, config, targets=["vocals"], backend="nnabla")
    out = sep(fx.audio)
    assert list(out) == sep.targets == ["vocals", "accompaniment"]
    assert sep.network_targets == ["vocals"]
    assert np.abs(out["vocals"] + out["accompaniment"] - fx.audio).max() <= 1e-4


# ---------------------------------------------------------------------------- graph reuse
def test_graph_reuse(fx):
    sep = _xumx_separator(fx)
    audio = fx.audio
    sep(audio)
    builds = sep.graph_builds
    runner_builds = sep._runners[0].graph_builds
    assert runner_builds >= 1 and builds >= runner_builds
    t0 = time.perf_counter()
    sep(audio)
    print(f"second call: {time.perf_counter() - t0:.2f} s")
    assert sep.graph_builds == builds, "a call on same-length input built a new graph"
    assert sep._runners[0].graph_builds == runner_builds
    # a different frame count needs (exactly) one more network graph: the counter works
    hop = sep.n_hop
    sep(audio[: audio.shape[0] - 3 * hop])
    assert sep._runners[0].graph_builds == runner_builds + 1


def test_fixed_chunk_graph(fx):
    """With chunk_seconds the network graph is built once for any input length."""
    params, config = weights.load_xumx(fx.xumx_params)
    hop = config["n_hop"]
    audio = fx.audio
    chunk_frames = max(2, (audio.shape[0] // hop) // 3)
    sep = Separator.from_params("xumx", params, config, backend="nnabla",
                                chunk_seconds=chunk_frames * hop / Separator.sample_rate)
    a = sep(audio)
    b = sep(audio[: audio.shape[0] // 2])
    assert sep._runners[0].graph_builds == 1
    assert a["bass"].shape == audio.shape and b["bass"].shape[0] == audio.shape[0] // 2


# ---------------------------------------------------------------------------- weight files
def test_not_a_parameter_file(tmp_path):
    bogus = tmp_path / "bogus.h5"
    write_param_file(str(bogus), {"conv1/W": np.zeros((3, 3), np.float32)})
    with pytest.raises(UserError, match="fc1_"):
        weights.load_xumx(bogus)
    with pytest.raises(UserError, match="fc1/affine/W"):
        weights.load_umx(bogus)


def test_mismatched_and_missing_parameters(fx, tmp_path):
    params = dict(_xumx_file(fx))
    bad = dict(params)
    bad["fc2_vocals/affine/W"] = np.zeros((3, 3), np.float32)
    write_param_file(str(tmp_path / "bad.h5"), bad)
    with pytest.raises(UserError, match="fc2_vocals/affine/W"):
        weights.load_xumx(tmp_path / "bad.h5")
    missing = dict(params)
    del missing["lstm_other/lstm/bias"]
    write_param_file(str(tmp_path / "missing.h5"), missing)
    with pytest.raises(UserError, match="lstm_other/lstm/bias"):
        weights.load_xumx(tmp_path / "missing.h5")
    with pytest.raises(UserError, match="X-UMX"):
        weights.load_umx(fx.xumx_params)


def test_umx_zip_and_missing_target(fx, tmp_path):
    files = sorted(fx.umx_dir.glob("*.h5"))
    archive = tmp_path / "umx.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in files:
            zf.write(f, f"umx/{f.name}")
    targets = [f.stem for f in files]
    p_zip, c_zip = weights.load_umx(archive, targets=targets)
    p_dir, c_dir = weights.load_umx(fx.umx_dir, targets=targets)
    assert c_zip == c_dir
    for t in targets:
        assert list(p_zip[t]) == list(p_dir[t])
        for k in p_dir[t]:
            np.testing.assert_array_equal(p_zip[t][k], p_dir[t][k])
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(files[0], partial / files[0].name)
    with pytest.raises(UserError, match="missing UMX target"):
        weights.load_umx(partial, targets=targets)


# ---------------------------------------------------------------------------- backends
def test_onnx_backend_missing_is_a_clear_error(fx, monkeypatch):
    params, config = weights.load_xumx(fx.xumx_params)
    monkeypatch.setitem(sys.modules, "xumx.onnx_backend", None)
    with pytest.raises(UserError, match="onnx"):
        Separator.from_params("xumx", params, config, backend="onnx")


def test_onnx_backend_agrees(fx):
    params, config = weights.load_xumx(fx.xumx_params)
    sep = Separator.from_params("xumx", params, config, backend="onnx")
    _, _, masks = sep.analyze(fx.audio)
    _, _, ref = _xumx_separator(fx).analyze(fx.audio)
    for t in ref:
        scale = np.abs(ref[t]).max()
        assert np.abs(masks[t] - ref[t]).max() <= MASK_REL_TOL * scale, t
