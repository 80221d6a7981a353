"""Parity tests of the ONNX backend of D3Net MSS (d3net_mss.onnx_backend: nnabla's own
converter, onnxruntime) against nnabla.

* every target of the forward fixture (``d3net_mss_forward*.npz`` with ``output_<target>``
  and a ``<target>.h5`` beside it; full official configs, random weights): the ONNX output
  vs the stored official nnabla output, and for the first target also vs this repository's
  nnabla runner; required: max abs diff <= 1e-3 x max|nnabla output| (and, as the fixture
  README suggests, 99.9 % of the elements within 1e-4 x max);
* the same on the runtime ``--backend auto`` (the default of ``separate.py``) chooses on the
  CPU, for every target of the forward fixture;
* the export is cached on disk: a second runner on the same parameters exports nothing;
* the Separator with ``backend='onnx'`` vs ``backend='nnabla'`` end to end on a short piece of
  the fixture mixture (patch length shortened to keep the test fast; nnabla runs the
  channel-flip pair as a batch of two, as officially, onnxruntime as two batch-1 calls);
* memory: with several targets the separator keeps one compiled model at a time (each
  target's session is closed after its patches and reopened from the cached export), with
  results equal to separators that keep their models; the flip pair as two batch-1 calls
  gives what the batch of two gives;
* input-shape errors.

The fixture root comes from $FIXTURES_DIR (default ../shared/fixtures relative to the
repository root); files are discovered by pattern and every size is read from them.
Missing fixtures fail the tests.
"""
import os
from collections import OrderedDict

import numpy as np
import pytest

from common.dev.testing import FixtureFolder
from common.errors import UserError

REL_TOL = 1e-3  # max abs diff <= REL_TOL * max |nnabla output|


def fixture_dir():
    return FixtureFolder("d3net-mss").check_dir()


def forward_cases():
    """``[(npz path, target, h5 path)]`` for every ``output_<target>`` of every forward
    fixture whose ``<target>.h5`` exists."""
    folder = fixture_dir()
    cases = []
    for npz in sorted(folder.glob("d3net_mss_forward*.npz")):
        with np.load(npz) as data:
            targets = [k[len("output_"):] for k in data.files if k.startswith("output_")]
        for t in sorted(targets):
            if (folder / f"{t}.h5").is_file():
                cases.append((npz, t, folder / f"{t}.h5"))
    if not cases:
        pytest.fail(f"no D3Net MSS forward fixture in {folder} (expected d3net_mss_forward*.npz "
                    f"with output_<target> arrays and <target>.h5 files)", pytrace=False)
    return cases


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def loaded():
    """target -> (params, config) of every target with a forward fixture."""
    from d3net_mss import weights

    out = OrderedDict()
    for _, target, h5 in forward_cases():
        if target not in out:
            params, configs = weights.load(str(h5))
            out[target] = (params[target], configs[target])
    return out


def _rel_diff(y, ref):
    return float(np.abs(y.astype(np.float64) - ref).max() / np.abs(ref).max())


def _check_close(y, ref, what):
    assert y.shape == ref.shape and y.dtype == np.float32, what
    rel = _rel_diff(y, ref)
    assert rel <= REL_TOL, f"{what}: max abs diff {rel:.3g} x max|ref| > {REL_TOL}"
    close = np.abs(y - ref) <= 1e-4 * np.abs(ref).max()
    assert close.mean() >= 0.999, f"{what}: only {close.mean():.5f} within 1e-4 x max"
    return rel


def test_forward_matches_nnabla(loaded, cache_dir):
    from d3net_mss.onnx_backend import build_onnx_runner
    from d3net_mss.separator import build_nnabla_runner

    for i, (npz, target, _) in enumerate(forward_cases()):
        with np.load(npz) as data:
            x, ref = data["input"], data[f"output_{target}"]
        params, config = loaded[target]
        runner = build_onnx_runner(params, config, cache_dir=cache_dir)
        y = runner(x)
        assert runner.exports == 1 and runner.graph_builds == 1
        _check_close(y, ref, f"{npz.name} {target}: onnx vs official nnabla output")
        # the bins >= valid_signal_idx are copied from the input
        valid = config["valid_signal_idx"]
        np.testing.assert_array_equal(y[..., valid:], x[..., valid:])
        if i == 0:  # this repository's nnabla backend, literally
            y_nn = build_nnabla_runner(params, config)(x)
            _check_close(y, y_nn, f"{target}: onnx vs nnabla runner")


def test_default_backend_matches_nnabla(loaded, cache_dir, monkeypatch):
    """The separator's default backend (what ``separate.py`` runs without ``--backend``) on
    every forward fixture: within 1e-3 x max of the official nnabla output."""
    from d3net_mss.separator import AUTO_ORDER, Separator

    monkeypatch.setenv("NNABLA_RESEARCH_CACHE", str(cache_dir / "default"))
    for npz, target, _ in forward_cases():
        with np.load(npz) as data:
            x, ref = data["input"], data[f"output_{target}"]
        params, config = loaded[target]
        sep = Separator.from_params(OrderedDict([(target, params)]),
                                    OrderedDict([(target, config)]))
        assert sep.backend == AUTO_ORDER[0]  # the installed first choice on the CPU
        rel = _check_close(sep.runners[target](x), ref,
                           f"{npz.name} {target}: {sep.backend} (auto) vs official nnabla")
        assert rel > 0  # another runtime, not nnabla itself


def test_export_is_cached_on_disk(loaded, cache_dir):
    from d3net_mss.onnx_backend import build_onnx_runner

    npz, target, _ = forward_cases()[0]
    with np.load(npz) as data:
        x, ref = data["input"], data[f"output_{target}"]
    params, config = loaded[target]
    first = build_onnx_runner(params, config, cache_dir=cache_dir)
    path = first.prepare(x.shape[0], x.shape[1])  # exported by the previous test
    second = build_onnx_runner(params, config, cache_dir=cache_dir, threads=1)
    _check_close(second(x), ref, f"{target}: onnx from the cache vs official nnabla output")
    assert first.exports == 0 and second.exports == 0
    assert second.last_export.path == path and path.endswith(".onnx")
    saved = second.save(str(cache_dir / "copy" / f"{target}.onnx"), x.shape[0], x.shape[1])
    assert os.path.getsize(saved) == os.path.getsize(path)


def test_separator_onnx_matches_nnabla(loaded, cache_dir, monkeypatch):
    from d3net_mss import spectral
    from d3net_mss.model import D3NetMSS
    from d3net_mss.separator import Separator

    folder = fixture_dir()
    separate = sorted(folder.glob("d3net_mss_separate*.npz"))
    if not separate:
        pytest.fail(f"no d3net_mss_separate*.npz in {folder}", pytrace=False)
    with np.load(separate[0]) as data:
        audio = data["audio"]
    target = next(iter(loaded))
    params, config = loaded[target]
    cfg = dict(config)
    # a short piece and short patches keep this fast; the patch logic is the official one
    # (zero padding, 50 % overlap, channel-flip batch of two)
    hop = cfg["hop_size"]
    frames = 2 * D3NetMSS(cfg).frame_multiple  # patch length (frames must be a multiple)
    cfg.update(test_patch_len=frames, out_shift=frames // 2)
    audio = audio[: hop * 12]
    # the Separator's runners use the default cache folder: keep it inside the test's
    monkeypatch.setenv("NNABLA_RESEARCH_CACHE", str(cache_dir / "default"))
    seps = {b: Separator.from_params(OrderedDict([(target, params)]),
                                     OrderedDict([(target, cfg)]), backend=b, mwf=False,
                                     ch_flip_average=True)
            for b in ("nnabla", "onnx")}
    X = seps["onnx"].stft(audio)
    mags = {b: s.estimate_magnitudes(X)[target] for b, s in seps.items()}
    _check_close(mags["onnx"], mags["nnabla"], "separator magnitudes onnx vs nnabla")
    # the rest of Separator.separate: mixture phase (+ Wiener filter) and inverse STFT
    est = {b: spectral.istft(s.filter(X, {target: mags[b]})[target], hop,
                             length=audio.shape[0]) for b, s in seps.items()}
    assert est["onnx"].shape == audio.shape
    rel = _rel_diff(est["onnx"], est["nnabla"])
    assert rel <= REL_TOL, f"separated audio: max abs diff {rel:.3g} x peak"
    runner = seps["onnx"].runners[target]
    assert runner.graph_builds == 1 and runner.exports == 1  # one patch shape, one export


def test_flip_pair_as_two_calls_equals_one_batch():
    """patch_inference with the pair split into batch-1 calls: same calls per item, same
    result, bit for bit (a deterministic per-item runner)."""
    from d3net_mss.separator import patch_inference

    rng = np.random.default_rng(3)
    mag = rng.random((37, 2, 5), dtype=np.float32)
    weights = rng.random((8, 2, 5), dtype=np.float32)
    batches = []

    def runner(x):
        batches.append(x.shape[0])
        return np.sqrt(x * weights + x[:, ::-1] ** 2)  # mixes channels and frames' values

    one = patch_inference(mag, runner, 8, 4, ch_flip_average=True)
    pair_calls = list(batches)
    batches.clear()
    two = patch_inference(mag, runner, 8, 4, ch_flip_average=True, flip_pair_as_batch=False)
    assert set(pair_calls) == {2} and set(batches) == {1}
    assert len(batches) == 2 * len(pair_calls)
    np.testing.assert_array_equal(one, two)


def test_separator_keeps_one_compiled_model_at_a_time(loaded, cache_dir, monkeypatch):
    """Several targets on an exported runtime: every target's session is closed once its
    patches are done (one compiled model in memory at a time) and the next call reopens it
    from the cached export; the magnitudes equal those of single-target separators, which keep
    their model open, and the network sees batch-1 inputs."""
    from d3net_mss.model import D3NetMSS
    from d3net_mss.separator import Separator

    if len(loaded) < 2:
        pytest.fail("the forward fixture needs two targets for this test", pytrace=False)
    targets = list(loaded)[:2]
    cfgs = OrderedDict()
    for t in targets:
        cfg = dict(loaded[t][1])
        frames = 2 * D3NetMSS(cfg).frame_multiple
        cfg.update(test_patch_len=frames, out_shift=frames // 2)
        cfgs[t] = cfg
    params = OrderedDict((t, loaded[t][0]) for t in targets)
    monkeypatch.setenv("NNABLA_RESEARCH_CACHE", str(cache_dir / "release"))
    X = np.random.default_rng(5).standard_normal((40, 2, 2049)).astype(np.complex64)
    both = Separator.from_params(params, cfgs, backend="onnx", mwf=False)
    first = both.estimate_magnitudes(X)
    for t, runner in both.runners.items():
        assert runner.open_sessions == 0, f"{t}: compiled model still held after its patches"
        assert runner.sessions_opened == 1 and runner.exports == 1
        batch = runner.last_export.meta["inputs"]["x"][0]
        assert batch == 1, f"{t}: the flip pair ran as a batch of {batch}"
    second = both.estimate_magnitudes(X)
    for t, runner in both.runners.items():
        assert runner.open_sessions == 0 and runner.sessions_opened == 2  # reopened once
        assert runner.exports == 1 and runner.graph_builds == 1  # from the cached export
        np.testing.assert_array_equal(second[t], first[t])
    for t in targets:
        alone = Separator.from_params(OrderedDict([(t, params[t])]),
                                      OrderedDict([(t, cfgs[t])]), backend="onnx", mwf=False)
        np.testing.assert_array_equal(alone.estimate_magnitudes(X)[t], first[t])
        assert alone.runners[t].open_sessions == 1  # a single target keeps its model


def test_openvino_runner_compiles_without_snippets(loaded, cache_dir, monkeypatch):
    """The OpenVINO runner (auto's choice) is built with low_memory: compiled with snippets
    off, which lowers its peak RSS; an onnxruntime runner keeps its default (arena on)."""
    import openvino as ov

    from d3net_mss.onnx_backend import build_onnx_runner, build_openvino_runner

    npz, target, _ = forward_cases()[0]
    with np.load(npz) as data:
        x = data["input"]
    params, config = loaded[target]
    configs = []
    compile_model = ov.Core.compile_model

    def spy(core, model, device, config=None):
        configs.append(dict(config or {}))
        return compile_model(core, model, device, config)

    monkeypatch.setattr(ov.Core, "compile_model", spy)
    build_openvino_runner(params, config, cache_dir=cache_dir).prepare(*x.shape[:2])
    assert len(configs) == 1 and configs[0].get("SNIPPETS_MODE") == "DISABLE"
    assert configs[0]["INFERENCE_PRECISION_HINT"] == "f32"
    ort = build_onnx_runner(params, config, cache_dir=cache_dir).session_for(x.shape)
    assert ort.session.get_session_options().enable_cpu_mem_arena


def test_input_shape_errors(loaded, cache_dir):
    from d3net_mss.onnx_backend import build_onnx_runner

    target = next(iter(loaded))
    params, config = loaded[target]
    runner = build_onnx_runner(params, config, cache_dir=cache_dir)
    bins, ch, m = runner.nb_bins, runner.nb_channels, runner.frame_multiple
    with pytest.raises(UserError, match=f"multiple of {m}"):
        runner(np.zeros((1, m + 1, ch, bins), np.float32))
    with pytest.raises(UserError, match=rf"\(batch, frames, {ch}, {bins}\)"):
        runner(np.zeros((1, m, ch, bins - 1), np.float32))
    assert runner(np.zeros((0, m, ch, bins), np.float32)).shape == (0, m, ch, bins)
    assert runner.exports == 0 and runner.graph_builds == 0
