"""Parity of the D3Net segmentation network with the official implementation.

The fixtures (``$FIXTURES_DIR/d3net-seg``, see conftest) hold random parameters with the
official names and the official ``get_segmentation`` outputs on a test image. Tolerances are
the ones the fixture README derives from float32-level input noise: ``input`` <= 1e-6,
``logits`` <= 1e-4 * max|logits|, ``probs`` <= 1e-5, ``labels`` equal where the top-2 logit
gap exceeds 1e-3, ``overlay_bgr`` equal where the labels are equal. Run with ``-s`` to see
the measured errors.
"""
from collections import OrderedDict

import numpy as np
import pytest

from common.errors import UserError
from d3net_seg.model import (D3NetSegmentation, d3net_segmentation, feature_sizes, load_config,
                             min_input_size, parameter_shapes)
from d3net_seg.palette import overlay
from d3net_seg.weights import (backbone_subset, check_parameters, detect_config, load_backbone,
                               load_weights)


def _report(name, what, value):
    print(f"\n[{name}] {what}: {value:.3g}", end="")


# ---------------------------------------------------------------------------- parameters
def test_parameter_names_and_shapes_match_config(seg_set):
    fx = seg_set
    expected = parameter_shapes(load_config(fx.config_path))
    got = OrderedDict((k, tuple(v.shape)) for k, v in fx.params.items())
    check_parameters(fx.params, expected, source=str(fx.h5))  # one-line summary on failure
    assert list(got) == list(expected), "creation order differs"
    assert got == expected
    assert all(v.dtype == np.float32 for v in fx.params.values())


def test_graph_creates_the_analytic_parameters(seg_set):
    """Building the graph creates exactly the parameters parameter_shapes() predicts, in
    the same order (and therefore the file's)."""
    model = D3NetSegmentation(seg_set.config_path)
    created = model.create_parameters()
    assert [(k, tuple(v.shape)) for k, v in created.items()] == \
        list(parameter_shapes(model.hparams).items())
    bn_stats = [k for k, v in created.items() if not v.need_grad]
    assert bn_stats and all(k.endswith(("/bn/mean", "/bn/var")) for k in bn_stats)


def test_file_config_is_detected_from_shapes(seg_set):
    config = detect_config(seg_set.params)
    assert config is not None and config["name"] == seg_set.name


# ---------------------------------------------------------------------------- forward
def test_input_normalization(seg_set):
    fx = seg_set
    ref = fx.arrays["input"]
    h, w = fx.arrays["image_bgr"].shape[:2]
    x = fx.segmenter.preprocess(fx.image_rgb)
    assert x.shape == ref.shape == (1, 3, h, w) and x.dtype == np.float32
    err = float(np.abs(x - ref).max())
    _report(fx.name, "input max abs diff", err)
    assert err <= 1e-6
    # the official BGR path gives the same array
    x_bgr = fx.segmenter.preprocess(fx.arrays["image_bgr"], channel_order="BGR")
    assert np.array_equal(x, x_bgr)


def test_logits(seg_set):
    fx = seg_set
    ref = fx.arrays["logits"][0]
    got = fx.result.logits
    assert got.shape == ref.shape and got.dtype == np.float32
    peak = float(np.abs(ref).max())
    err = float(np.abs(got - ref).max())
    _report(fx.name, "logits max abs diff / max|logits|", err / peak)
    assert err <= 1e-4 * peak


def test_logits_from_the_official_input(seg_set):
    """The network alone, fed the stored normalised input."""
    fx = seg_set
    ref = fx.arrays["logits"]
    got = fx.segmenter.forward(fx.arrays["input"])
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_probs(seg_set):
    fx = seg_set
    ref = fx.arrays["probs"][0]
    err = float(np.abs(fx.result.probs - ref).max())
    _report(fx.name, "probs max abs diff", err)
    assert err <= 1e-5
    np.testing.assert_allclose(fx.result.probs.sum(axis=0), 1.0, atol=1e-5)


def test_labels(seg_set):
    fx = seg_set
    ref = fx.arrays["labels"][0]
    logits = fx.arrays["logits"][0]
    top2 = np.sort(logits, axis=0)[-2:]
    decided = (top2[1] - top2[0]) > 1e-3
    got = fx.result.labels
    assert got.shape == ref.shape and got.dtype == np.uint8
    flips = int((got != ref)[decided].sum())
    _report(fx.name, "label differences where top-2 gap > 1e-3", flips)
    _report(fx.name, "label differences overall", int((got != ref).sum()))
    assert flips == 0
    assert decided.mean() > 0.5  # the comparison is meaningful


def test_overlay(seg_set):
    fx = seg_set
    ref = fx.arrays["overlay_bgr"]
    labels = fx.result.labels
    got_rgb = fx.segmenter.overlay(fx.image_rgb, labels)
    assert got_rgb.shape == ref.shape and got_rgb.dtype == np.uint8
    same = labels == fx.arrays["labels"][0]
    diff = int((got_rgb[..., ::-1] != ref)[same].sum())
    _report(fx.name, "overlay differing values where labels agree", diff)
    assert diff == 0
    # the official BGR computation (palette in BGR) gives the same picture
    bgr = overlay(fx.arrays["image_bgr"], labels, fx.segmenter.palette[:, ::-1])
    assert np.array_equal(bgr, got_rgb[..., ::-1])


def test_official_functional_form_returns_probs_in_test_mode(seg_set):
    import nnabla as nn

    fx = seg_set
    model = D3NetSegmentation(fx.config_path)
    model.load_parameters(fx.params)
    x = nn.Variable.from_numpy_array(fx.arrays["input"])
    with model.parameter_scope():
        probs = d3net_segmentation(x, load_config(fx.config_path), test=True)
    probs.forward(clear_buffer=True)
    assert np.abs(probs.d - fx.arrays["probs"]).max() <= 1e-5


# ---------------------------------------------------------------------------- other sizes
def test_any_input_size_and_graph_reuse(seg_set):
    """Odd sizes work, the output has the input's size, graphs are cached per size."""
    fx = seg_set
    seg = fx.segmenter
    before = seg.graph_builds
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)
    r1 = seg.segment(img)
    r2 = seg.segment(img)
    assert r1.logits.shape == (seg.num_classes, 37, 45) and r1.labels.shape == (37, 45)
    assert np.array_equal(r1.logits, r2.logits)
    assert seg.graph_builds == before + 1
    small = min_input_size(seg.hparams)
    assert feature_sizes(seg.hparams, small, small)[-1] == (1, 1)
    with pytest.raises(UserError, match="too small"):
        seg.segment(img[:small - 1])


def test_train_mode_uses_batch_statistics_and_backpropagates(seg_set):
    import nnabla as nn
    import nnabla.functions as F

    fx = seg_set
    model = D3NetSegmentation(fx.config_path)
    model.load_parameters(fx.params)
    crop = fx.arrays["input"][..., :32, :32]  # the fixture image is at least 29 x 29
    h, w = crop.shape[2:]
    x = nn.Variable.from_numpy_array(np.repeat(crop, 2, axis=0))
    y_test = model(x, test=True)
    y_train = model(x, test=False)
    y_test.forward()
    y_train.forward()
    assert y_train.shape == (2, model.num_classes, h, w)
    assert not np.allclose(y_train.d, y_test.d)
    loss = F.mean(F.softmax_cross_entropy(
        y_train, nn.Variable.from_numpy_array(np.zeros((2, 1, h, w), np.int32)), axis=1))
    for p in model.get_parameters(grad_only=True).values():
        p.grad.zero()
    loss.forward()
    loss.backward()
    grads = model.get_parameters(grad_only=True)
    assert np.abs(grads["backbone/conv1/conv/W"].g).sum() > 0
    assert np.abs(grads["decode_head/conv_seg/conv/W"].g).sum() > 0


# ---------------------------------------------------------------------------- weights
def test_wrong_config_is_a_one_line_error_listing_names(seg_set, tmp_path):
    other = [n for n in ("D3Net_S", "D3Net_L") if n != seg_set.name][0]
    with pytest.raises(UserError) as err:
        load_weights(seg_set.h5, other)
    msg = str(err.value)
    assert "\n" not in msg and "wrong shape" in msg and "backbone/" in msg
    params = OrderedDict(seg_set.params)
    params.pop("decode_head/conv_seg/conv/b")
    with pytest.raises(UserError, match=r"1 missing: decode_head/conv_seg/conv/b"):
        check_parameters(params, parameter_shapes(load_config(seg_set.config_path)))
    with pytest.raises(UserError, match="not found"):
        load_weights(tmp_path / "nope.h5")


def test_backbone_file_loads_into_the_backbone_scope(seg_set):
    """ImageNet backbone files hold the backbone parameters without the 'backbone/' prefix
    (the official trainer loads them inside that scope)."""
    fx = seg_set
    expected = parameter_shapes(load_config(fx.config_path))
    file_params = OrderedDict((k[len("backbone/"):], v) for k, v in fx.params.items()
                              if k.startswith("backbone/"))
    file_params["fc/affine/W"] = np.zeros((4, 1000), np.float32)  # e.g. an ImageNet classifier
    subset, missing, ignored = backbone_subset(file_params, expected)
    assert not missing and ignored == ["fc/affine/W"]
    model = D3NetSegmentation(fx.config_path)
    model.create_parameters()
    head_before = model.get_parameters()["decode_head/conv_seg/conv/W"].d.copy()
    loaded, missing, _ = load_backbone(model, file_params)
    now = model.get_parameters(grad_only=False)
    assert len(loaded) == len(subset)
    name = "backbone/dense1/d2_block/block0/block_dim_reduction/conv1/conv/W"
    assert np.array_equal(now[name].d, fx.params[name])
    assert np.array_equal(now["decode_head/conv_seg/conv/W"].d, head_before)
    bad = OrderedDict([("conv1/conv/W", np.zeros((1, 3, 3, 3), np.float32))])
    with pytest.raises(UserError, match="wrong shape"):
        backbone_subset(bad, expected)


# ---------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ["D3Net_S", "D3Net_L"])
def test_bundled_configs(name):
    """Official values (sony/ai-research-code configs) and derived layer sizes."""
    cfg = load_config(name)
    hp = cfg["model"]
    official = {"D3Net_S": dict(n_blocks=8, dens_k=36, out=[32, 40, 64, 128], channels=264),
                "D3Net_L": dict(n_blocks=10, dens_k=64, out=[32, 48, 96, 192], channels=368)}
    o = official[name]
    assert hp["n_blocks"] == [o["n_blocks"]] * 4 and hp["dens_k"] == [o["dens_k"]] * 4
    assert hp["intermediate_out_ch"] == o["out"] and hp["channels"] == o["channels"]
    assert hp["num_layers"] == [4] * 4 and hp["block_comp"] == [0.2] * 4
    assert hp["dense_n_out_layer_block"] == [4] * 4 and hp["trans_comp_factor"] == 2
    assert hp["num_init_features"] == 64 and hp["num_classes"] == 19
    assert cfg["preprocess"]["mean"] == [123.675, 116.28, 103.53]
    assert cfg["preprocess"]["std"] == [58.395, 57.12, 57.375]
    from common.data.cityscapes import PALETTE

    assert np.array_equal(np.asarray(cfg["palette"]), PALETTE)
    shapes = parameter_shapes(cfg)
    assert shapes["decode_head/convs/0/conv/conv/W"] == (o["channels"], sum(o["out"]), 1, 1)
    assert shapes["decode_head/conv_seg/conv/W"] == (19, o["channels"], 1, 1)
    assert min_input_size(cfg) == 29


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  num_classes: 19\n  typo_key: 1\n")
    with pytest.raises(UserError, match="typo_key"):
        load_config(bad)
    with pytest.raises(UserError, match="unknown config"):
        load_config("D3Net_XL")
