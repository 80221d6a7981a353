"""Parity tests of the ONNX backend of D3Net segmentation (d3net_seg.onnx_backend: nnabla's
own converter, onnxruntime) against nnabla.

* every fixture set (``D3Net_<X>.h5`` + ``D3Net_<X>_outputs.npz``; config
  ``configs/D3Net_<X>.yaml``): ONNX logits vs the stored official nnabla logits and vs this
  repository's nnabla runner; required: max abs diff <= 1e-3 x max|nnabla logits| (the
  fixture README's 1e-4 is checked too);
* the Segmenter with ``backend='onnx'`` end to end on the fixture image: probabilities,
  labels (wherever the top-2 logit gap is not tiny) and overlay vs the fixture;
* an image size that is not a multiple of the network's stride, with a batch of two (bilinear
  resizes with non-integer scales), vs the nnabla runner;
* the per-shape export is cached on disk (a second runner exports nothing); input errors.

The fixture sets come from the conftest (``$FIXTURES_DIR/d3net-seg``, discovered by
pattern, every size read from the files); missing fixtures fail the tests.
"""
import numpy as np
import pytest

from common.errors import UserError

REL_TOL = 1e-3  # max abs diff <= REL_TOL * max |nnabla logits|
_CACHES = {}


@pytest.fixture
def cache_root(seg_set, tmp_path_factory):
    """Per fixture set, shared by this module's tests: holds ``onnx/``, the cache the runners
    are given and the default cache (``$NNABLA_RESEARCH_CACHE/onnx``) the Segmenter uses."""
    if seg_set.name not in _CACHES:
        _CACHES[seg_set.name] = tmp_path_factory.mktemp(f"cache-{seg_set.name}")
    return _CACHES[seg_set.name]


@pytest.fixture
def model(seg_set):
    """``(params, config, fixture arrays)`` of the set."""
    from d3net_seg.weights import load_weights

    params, config = load_weights(str(seg_set.h5), seg_set.name)
    return params, config, seg_set.arrays


def _rel(y, ref):
    return float(np.abs(y.astype(np.float64) - ref).max() / np.abs(ref).max())


def test_logits_match_nnabla(model, cache_root):
    from d3net_seg.inference import NnablaRunner
    from d3net_seg.onnx_backend import build_onnx_runner

    params, config, ref = model
    runner = build_onnx_runner(params, config["model"], cache_dir=cache_root / "onnx")
    logits = runner(ref["input"])
    assert logits.shape == ref["logits"].shape and logits.dtype == np.float32
    assert runner.exports == 1 and runner.graph_builds == 1
    rel = _rel(logits, ref["logits"])
    assert rel <= REL_TOL, f"onnx vs official logits {rel:.3g}"
    assert rel <= 1e-4, f"onnx vs official logits {rel:.3g} (README: 1e-4)"
    nn_logits = NnablaRunner(params, config["model"])(ref["input"])
    assert _rel(logits, nn_logits) <= REL_TOL


def test_segmenter_onnx_end_to_end(model, cache_root, monkeypatch):
    from d3net_seg.inference import Segmenter

    monkeypatch.setenv("NNABLA_RESEARCH_CACHE", str(cache_root))  # default cache = runners'
    params, config, ref = model
    seg = Segmenter(params, config, backend="onnx")
    image_bgr = ref["image_bgr"]
    x = seg.preprocess(image_bgr, channel_order="BGR")
    np.testing.assert_allclose(x, ref["input"], atol=1e-6, rtol=0)
    out = seg.segment(image_bgr, channel_order="BGR")
    assert seg.graph_builds == 1 and seg._runner.exports == 0  # from the previous test
    assert _rel(out.logits, ref["logits"][0]) <= REL_TOL
    assert float(np.abs(out.probs - ref["probs"][0]).max()) <= 1e-4
    top2 = np.sort(ref["logits"][0], axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 1e-3
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(out.labels[clear], ref["labels"][0][clear])
    overlay = seg.overlay(image_bgr[..., ::-1], out.labels)[..., ::-1]  # palette is RGB
    same = out.labels == ref["labels"][0]
    np.testing.assert_array_equal(overlay[same], ref["overlay_bgr"][same])


def test_odd_size_batch_and_cache(model, cache_root):
    from d3net_seg.inference import NnablaRunner
    from d3net_seg.onnx_backend import build_onnx_runner

    params, config, ref = model
    h, w = ref["input"].shape[2:]
    shape = (2, 3, h + h // 4 + 3, w - w // 8 + 5)  # not multiples of the stride (32)
    x = np.random.RandomState(0).uniform(-2, 2, shape).astype(np.float32)
    x[0] = np.resize(ref["input"][0], x[0].shape)
    runner = build_onnx_runner(params, config["model"], cache_dir=cache_root / "onnx")
    logits = runner(x)
    assert runner.exports == 1 and logits.shape == (2, runner.num_classes) + shape[2:]
    nn_logits = NnablaRunner(params, config["model"])(x)
    assert _rel(logits, nn_logits) <= REL_TOL
    again = build_onnx_runner(params, config["model"], cache_dir=cache_root / "onnx",
                              threads=1)
    path = again.prepare(*shape[:1], *shape[2:])
    assert again.exports == 0 and path == runner.last_export.path
    assert len(list((cache_root / "onnx").glob("d3net_seg-*.onnx"))) == 2


def test_input_errors(model, cache_root):
    from d3net_seg.onnx_backend import build_onnx_runner

    params, config, _ = model
    runner = build_onnx_runner(params, config["model"], cache_dir=cache_root / "onnx")
    small = runner.min_size - 1
    with pytest.raises(UserError, match="too small"):
        runner(np.zeros((1, 3, small, 64), np.float32))
    with pytest.raises(UserError, match=r"\(batch, 3, height, width\)"):
        runner(np.zeros((1, 4, 64, 64), np.float32))
    assert runner(np.zeros((0, 3, 64, 64), np.float32)).shape == (0, runner.num_classes, 64, 64)
    assert runner.exports == 0 and runner.graph_builds == 0
