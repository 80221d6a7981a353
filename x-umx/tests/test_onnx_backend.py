"""Parity tests of the onnxruntime backend (xumx.onnx_backend) for X-UMX and UMX.

* the LSTM weight mapping alone: random nnabla PF.lstm stacks vs the ONNX LSTM graph;
* the numpy STFT used here vs the official `mix_spec_head`;
* X-UMX masks on the fixture mixture vs the official `masks_head`;
* UMX and X-UMX (every frame) vs an nnabla forward of the same network written here
  with nnabla functions on the loaded parameter arrays, and vs the repository's
  nnabla model (xumx.model);
* end to end: ONNX masks through the official Wiener filter + iSTFT vs the stored
  official estimates `est_*` (the only official UMX outputs in the fixtures);
* several frame counts and batch sizes through one session; saving/reloading.

The fixture root comes from $FIXTURES_DIR (default ../shared/fixtures; relative paths
are taken from the repository root); every size is read from the fixture files.
"""
from collections import OrderedDict

import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import numpy as np
import pytest

from common.dev.testing import FixtureFolder
from common.errors import UserError
from common.runtime.onnx_export import make_session
from common.runtime.params_io import read_param_file
from xumx.onnx_backend import TARGETS, build_lstm_model, build_onnx_runner, resolve_config

# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------

def fixture_dir():
    return FixtureFolder("x-umx").check_dir()


def fixture_file(*parts):
    path = fixture_dir().joinpath(*parts)
    if not path.exists():
        pytest.fail(f"fixture file missing: {path}", pytrace=False)
    return path


@pytest.fixture(scope="module")
def xumx_outputs():
    with np.load(fixture_file("xumx_outputs.npz")) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def xumx_params():
    return read_param_file(fixture_file("xumx_params.h5"))[0]


@pytest.fixture(scope="module")
def umx_params():
    folder = fixture_file("umx_params")
    files = sorted(folder.glob("*.h5"))
    if not files:
        pytest.fail(f"no UMX parameter files (*.h5) in {folder}", pytrace=False)
    return {f.stem: read_param_file(f)[0] for f in files}


@pytest.fixture(scope="module")
def xumx_runner(xumx_params):
    return build_onnx_runner("xumx", xumx_params)


@pytest.fixture(scope="module")
def mixture_mag(xumx_outputs, xumx_params):
    """Mixture magnitude (frames, 1, channels, bins) of the fixture audio."""
    n_fft = 2 * (xumx_params["output_scale_bass"].shape[0] - 1)
    hop = n_fft // 4  # official n_hop; checked against the stored estimate length below
    audio = xumx_outputs["audio"]
    est_len = xumx_outputs["est_bass"].shape[0]
    assert (audio.shape[0] // hop) * hop == est_len, "hop size inconsistent with the fixture"
    return stft_magnitude(audio, n_fft, hop)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def stft(audio, n_fft, hop):
    """Complex STFT (frames, channels, bins) of (time, channels) audio: periodic Hann
    window, center=True with reflect padding, no normalization (as nnabla's F.stft)."""
    x = np.asarray(audio, dtype=np.float64).T
    x = np.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    nb_frames = 1 + (x.shape[1] - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(nb_frames)[:, None]
    return np.fft.rfft(x[:, index] * window, axis=-1).transpose(1, 0, 2)


def stft_magnitude(audio, n_fft, hop):
    """|STFT| as the network input (frames, 1, channels, bins) float32."""
    return np.abs(stft(audio, n_fft, hop)).astype(np.float32)[:, None]


def wiener_separation(source_mags, audio, n_fft, hop):
    """The official separation back end: source magnitudes (frames, channels, bins)
    as the Wiener filter model (one iteration, no soft mask) on the complex mixture
    STFT, then scipy's iSTFT of X / (n_fft / 2). Returns a list of (samples, channels)."""
    import norbert
    import scipy.signal

    v = np.transpose(np.array(source_mags), (1, 3, 2, 0))  # (frames, bins, channels, S)
    x = stft(audio, n_fft, hop).astype(np.complex64).transpose(0, 2, 1)
    y = norbert.wiener(v, x.astype(np.complex128), 1, use_softmask=False)
    estimates = []
    for j in range(y.shape[-1]):
        _, est = scipy.signal.istft(y[..., j].T / (n_fft // 2), nperseg=n_fft,
                                    noverlap=n_fft - hop, boundary=True)
        estimates.append(est.T)
    return estimates


def rel_err(a, ref):
    return float(np.abs(np.asarray(a, np.float64) - ref).max() / np.abs(ref).max())


def _v(array):
    return nn.Variable.from_numpy_array(np.asarray(array, dtype=np.float32))


def nnabla_reference(kind, params, mag):
    """nnabla forward (test mode) of the official X-UMX/UMX network from ``mag``
    (frames, batch, channels, bins) to the ReLU outputs, written with nnabla
    functions on the given parameter arrays (mirrors the official graph)."""
    scoped = kind == "xumx"
    targets = TARGETS if scoped else (None,)
    cfg = resolve_config(kind, params)
    nb_frames, nb_samples, nb_channels, nb_bins = mag.shape

    def p(name, target):
        if target is None:
            return params[name]
        head, _, tail = name.partition("/")
        return params[f"{head}_{target}" + (f"/{tail}" if tail else "")]

    def fc_bn(x, scope, target, activation=None):
        y = F.affine(x, _v(p(f"{scope}/affine/W", target)), base_axis=2)
        y = F.batch_normalization(y, _v(p(f"{scope}/bn/beta", target)),
                                  _v(p(f"{scope}/bn/gamma", target)),
                                  _v(p(f"{scope}/bn/mean", target)),
                                  _v(p(f"{scope}/bn/var", target)),
                                  axes=[2], batch_stat=False)
        if activation == "tanh":
            y = F.tanh(y)
        elif activation == "relu":
            y = F.relu(y)
        return y

    def lstm(x, target):
        shape = (cfg["nb_layers"], cfg["nb_directions"], nb_samples, cfg["lstm_hidden_size"])
        zeros = _v(np.zeros(shape))
        weight = p("lstm/lstm/weight", target) if cfg["nb_layers"] > 1 else None
        y, _, _ = F.lstm(x, zeros, zeros, _v(p("lstm/lstm/weight_l0", target)),
                         None if weight is None else _v(weight),
                         _v(p("lstm/lstm/bias", target)), num_layers=cfg["nb_layers"],
                         bidirectional=cfg["nb_directions"] == 2, training=False)
        return y

    def vec(name, target):
        value = p(name, target)
        return _v(value.reshape(1, 1, 1, -1))

    with nn.auto_forward(True):
        x = _v(mag)[..., :cfg["max_bin"]]
        first = []
        for t in targets:
            h = F.mul2(F.add2(x, vec("input_mean", t)), vec("input_scale", t))
            first.append(fc_bn(h, "fc1", t, "tanh"))
        cross1 = first[0] if not scoped else sum(first[1:], first[0]) / 4.0
        joined = [F.concatenate(f, lstm(cross1, t), axis=2) for f, t in zip(first, targets)]
        cross2 = joined[0] if not scoped else sum(joined[1:], joined[0]) / 4.0
        masks = []
        for t in targets:
            h = fc_bn(cross2, "fc2", t, "relu")
            h = fc_bn(h, "fc3", t)
            h = F.reshape(h, (nb_frames, nb_samples, nb_channels, nb_bins))
            h = F.add2(F.mul2(h, vec("output_scale", t)), vec("output_mean", t))
            masks.append(F.relu(h))
        out = masks[0] if not scoped else F.concatenate(*masks, axis=2)
        return out.d.copy()


def run_session(session, x):
    return session.run(["y"], {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lstm_mapping_matches_nnabla(seed):
    rng = np.random.RandomState(seed)
    hidden = int(rng.randint(3, 24))
    layers = int(rng.randint(1, 5))
    in_size = int(rng.randint(2, 40))
    bidirectional = seed != 3  # also one unidirectional stack
    directions = 2 if bidirectional else 1
    frames, batch = int(rng.randint(5, 40)), int(rng.randint(1, 4))
    x = rng.randn(frames, batch, in_size).astype(np.float32)
    bias = rng.uniform(-1, 1, (layers, directions, 4, hidden)).astype(np.float32)

    scope = OrderedDict()  # private parameter dictionary, the global one is untouched
    with nn.auto_forward(True), nn.parameter_scope("", scope):
        zeros = _v(np.zeros((layers, directions, batch, hidden)))
        y_ref, _, _ = PF.lstm(_v(x), zeros, zeros, num_layers=layers,
                              bidirectional=bidirectional, training=False, b_init=bias, rng=rng)
        y_ref = y_ref.d.copy()
        params = {k.rsplit("/", 1)[-1]: v.d.copy()
                  for k, v in nn.get_parameters(grad_only=False).items()}
    assert np.array_equal(params["bias"], bias)
    assert ("weight" in params) == (layers > 1)
    model = build_lstm_model(params["weight_l0"], params.get("weight"), params["bias"])
    y = run_session(make_session(model), x)
    assert y.shape == y_ref.shape == (frames, batch, directions * hidden)
    assert np.abs(y - y_ref).max() <= 1e-5


def test_mixture_spectrogram_matches_fixture(mixture_mag, xumx_outputs):
    head = xumx_outputs["mix_spec_head"]
    assert mixture_mag.shape[1:] == head.shape[1:]
    assert rel_err(mixture_mag[:head.shape[0]], head) <= 1e-5


def test_config_from_fixture(xumx_params, xumx_outputs):
    cfg = resolve_config("xumx", xumx_params)
    assert cfg["hidden_size"] == int(xumx_outputs["hidden_size"])
    assert cfg["max_bin"] == int(xumx_outputs["max_bin"])
    assert cfg["nb_channels"] == xumx_outputs["audio"].shape[1]
    assert cfg["nb_output_bins"] == xumx_outputs["mix_spec_head"].shape[-1]
    assert cfg["sources"] == list(TARGETS)
    assert resolve_config("xumx", xumx_params, {"hidden_size": cfg["hidden_size"]}) == cfg
    with pytest.raises(UserError, match="hidden_size"):
        resolve_config("xumx", xumx_params, {"hidden_size": cfg["hidden_size"] + 2})
    with pytest.raises(UserError, match="fc1_bass/affine/W"):
        resolve_config("xumx", {"fc1/affine/W": np.zeros((4, 2))})


def test_accepts_config_of_nnabla_model(xumx_params, umx_params):
    """The config dicts of xumx.weights (shared contract) are accepted and agree."""
    from xumx.weights import infer_config

    for kind, params in [("xumx", xumx_params)] + [("umx", p) for p in umx_params.values()]:
        config = infer_config(params)
        resolved = resolve_config(kind, params, config)
        common_keys = set(config) & set(resolved)
        assert {"hidden_size", "max_bin", "nb_channels", "nb_layers", "n_fft",
                "nb_output_bins", "lstm_hidden_size"} <= common_keys
        assert all(config[k] == resolved[k] for k in common_keys), kind


def test_xumx_masks_match_fixture(xumx_runner, mixture_mag, xumx_outputs):
    head = xumx_outputs["masks_head"]
    masks = xumx_runner(mixture_mag)
    nb_channels = mixture_mag.shape[2]
    assert masks.shape == (mixture_mag.shape[0], 1, 4 * nb_channels, mixture_mag.shape[3])
    assert masks.dtype == np.float32
    assert rel_err(masks[:head.shape[0]], head) <= 1e-4


def test_xumx_matches_nnabla_reference(xumx_runner, xumx_params, mixture_mag, xumx_outputs):
    ref = nnabla_reference("xumx", xumx_params, mixture_mag)
    head = xumx_outputs["masks_head"]
    assert rel_err(ref[:head.shape[0]], head) <= 1e-4  # the reference itself is official
    assert rel_err(xumx_runner(mixture_mag), ref) <= 1e-4


def test_umx_matches_nnabla_reference(umx_params, mixture_mag):
    for target, params in umx_params.items():
        runner = build_onnx_runner("umx", params)
        masks = runner(mixture_mag)
        assert masks.shape == mixture_mag.shape, target
        ref = nnabla_reference("umx", params, mixture_mag)
        assert rel_err(masks, ref) <= 1e-4, target


@pytest.mark.parametrize("kind", ["xumx", "umx"])
def test_matches_nnabla_model(kind, xumx_params, umx_params, mixture_mag):
    """Same masks as the repository's nnabla model (xumx.model) on the fixture input."""
    from xumx import model as nnabla_model
    from xumx.weights import infer_config

    cases = [xumx_params] if kind == "xumx" else list(umx_params.values())
    for params in cases:
        config = infer_config(params)
        net = (nnabla_model.CrossNet if kind == "xumx"
               else nnabla_model.OpenUnmix).from_config(config)
        net.load_parameters(params)
        with nn.auto_forward(True):
            ref = net.network(_v(mixture_mag), test=True).d.copy()
        masks = build_onnx_runner(kind, params, config)(mixture_mag)
        assert masks.shape == ref.shape
        assert rel_err(masks, ref) <= 1e-4


@pytest.mark.parametrize("kind", ["xumx", "umx"])
def test_separation_matches_fixture(kind, xumx_runner, umx_params, xumx_outputs, mixture_mag):
    """End to end: ONNX masks x mixture magnitude through the official Wiener filter and
    iSTFT reproduce the stored official estimates (all frames)."""
    nb_channels, nb_bins = mixture_mag.shape[2], mixture_mag.shape[3]
    n_fft = 2 * (nb_bins - 1)
    mag = mixture_mag[:, 0]
    if kind == "xumx":
        expected = {t: xumx_outputs[f"est_{t}"] for t in TARGETS}
        masks = xumx_runner(mixture_mag)[:, 0]
        sources = [masks[:, j * nb_channels:(j + 1) * nb_channels] * mag
                   for j in range(len(TARGETS))]
    else:
        with np.load(fixture_file("umx_outputs.npz")) as data:
            expected = {t: data[f"est_{t}"] for t in umx_params}
        sources = [build_onnx_runner("umx", umx_params[t])(mixture_mag)[:, 0] * mag
                   for t in expected]
    estimates = wiener_separation(sources, xumx_outputs["audio"], n_fft, n_fft // 4)
    for (target, ref), est in zip(expected.items(), estimates):
        assert est.shape == ref.shape, target
        assert rel_err(est, ref) <= 1e-4, target


def test_dynamic_frames_and_batch(xumx_runner, xumx_params, mixture_mag):
    session = xumx_runner.session
    for frames, batch in [(1, 1), (7, 2), (mixture_mag.shape[0] - 3, 3)]:
        rng = np.random.RandomState(frames)
        offsets = rng.randint(0, mixture_mag.shape[0] - frames + 1, size=batch)
        mag = np.concatenate([mixture_mag[o:o + frames] for o in offsets], axis=1)
        masks = xumx_runner(mag)
        assert xumx_runner.session is session
        assert masks.shape == (frames, batch, 4 * mag.shape[2], mag.shape[3])
        ref = nnabla_reference("xumx", xumx_params, mag)
        assert rel_err(masks, ref) <= 1e-4, (frames, batch)
        # batch items are independent
        single = xumx_runner(mag[:, -1:])
        assert np.abs(single - masks[:, -1:]).max() <= 1e-5 * np.abs(masks).max()


def test_saved_model_reloads(tmp_path, umx_params, mixture_mag):
    import onnx

    params = next(iter(umx_params.values()))
    path = tmp_path / "umx.onnx"
    runner = build_onnx_runner("umx", params, save_path=str(path))
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    session = make_session(model)
    mag = mixture_mag[:9]
    reloaded = session.run(["masks"], {"mag": mag})[0]
    assert np.array_equal(reloaded, runner(mag))


def test_bad_input_shape(xumx_runner, mixture_mag):
    with pytest.raises(ValueError, match="frames, batch"):
        xumx_runner(mixture_mag[:, 0])
    with pytest.raises(ValueError, match="frames, batch"):
        xumx_runner(mixture_mag[..., :-1])
