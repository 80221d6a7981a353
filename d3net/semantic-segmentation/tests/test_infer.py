"""``infer.py`` end to end (subprocess): outputs at the input's size with the Cityscapes
palette, the same labels as the in-process Segmenter, and one-line errors (exit 2, nothing
written) for bad inputs."""
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data.cityscapes import PALETTE
from d3net_seg.inference import Segmenter, read_image

REPO_ROOT = Path(__file__).resolve().parents[3]
INFER = REPO_ROOT / "d3net" / "semantic-segmentation" / "infer.py"
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"


def run_infer(*args, timeout=300):
    return subprocess.run([str(PYTHON), str(INFER), *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def make_images(d):
    """Odd-sized PNG (RGB), JPEG, grey PNG and RGBA PNG; returns {path: (h, w)}."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:45, 0:77]
    scene = np.stack([xx * 3, yy * 5, 255 - xx * 2], axis=-1) + rng.integers(-20, 21, (45, 77, 3))
    scene = np.clip(scene, 0, 255).astype(np.uint8)
    out = {}
    p = d / "street.png"
    Image.fromarray(scene).save(p)
    out[p] = (45, 77)
    p = d / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (61, 33, 3), dtype=np.uint8)).save(p, quality=90)
    out[p] = (61, 33)
    p = d / "grey.png"
    Image.fromarray(rng.integers(0, 256, (31, 40), dtype=np.uint8)).save(p)
    out[p] = (31, 40)
    p = d / "alpha.png"
    Image.fromarray(rng.integers(0, 256, (30, 29, 4), dtype=np.uint8)).save(p)
    out[p] = (30, 29)
    return out


def check_outputs(out_dir, images, segmenter=None):
    for path, (h, w) in images.items():
        labels_png = out_dir / f"{path.stem}_labels.png"
        overlay_png = out_dir / f"{path.stem}_overlay.png"
        assert labels_png.is_file() and overlay_png.is_file()
        with Image.open(labels_png) as im:
            assert im.mode == "P" and im.size == (w, h)
            assert im.getpalette()[:3 * len(PALETTE)] == PALETTE.reshape(-1).tolist()
            labels = np.asarray(im)
        with Image.open(overlay_png) as im:
            assert im.mode == "RGB" and im.size == (w, h)
            ov = np.asarray(im)
        assert labels.max() < len(PALETTE)
        image = read_image(path)
        expected = ((image.astype(np.uint16) + PALETTE[labels]) // 2).astype(np.uint8)
        assert np.array_equal(ov, expected)
        if segmenter is not None:
            assert np.array_equal(labels, segmenter.segment(image).labels)
    assert not list(out_dir.glob(".*tmp*")), "temporary files left behind"


def test_end_to_end_with_fixture_weights(seg_set, tmp_path):
    """The fixture's official-name weights (D3Net_S/L detected from the shapes, no
    --config), a PNG and a JPEG of odd sizes; labels equal the in-process result."""
    fx = seg_set
    images = dict(list(make_images(tmp_path).items())[:2])
    out = tmp_path / "out"
    r = run_infer(*images, "--model", fx.h5, "--out-dir", out, "--context", "cpu")
    assert r.returncode == 0, r.stderr
    check_outputs(out, images, fx.segmenter)


def test_tiny_model_with_config_all_image_kinds(tiny_model, tmp_path):
    weights, cfg, config = tiny_model
    images = make_images(tmp_path)
    out = tmp_path / "nested" / "out"
    r = run_infer(*images, "--model", weights, "--config", cfg, "--out-dir", out)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) >= len(images)
    check_outputs(out, images, Segmenter(weights, cfg))


def test_training_run_config_beside_the_weights_is_used(tiny_model, tmp_path):
    """Weights of a training run: the model_config.yaml next to them gives the network."""
    weights, cfg, _ = tiny_model
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_param_000100.h5").write_bytes(weights.read_bytes())
    (run / "model_config.yaml").write_text(cfg.read_text())
    images = dict(list(make_images(tmp_path).items())[:1])
    out = tmp_path / "out"
    r = run_infer(*images, "--model", run / "model_param_000100.h5", "--out-dir", out)
    assert r.returncode == 0, r.stderr
    check_outputs(out, images)


def _assert_one_line_error(r, *fragments, after_nnabla_import=False):
    """Exit 2 and a single ``error: ...`` line on stderr. Errors raised after nnabla was
    imported may follow nnabla's own start-up log line, which is not ours to silence."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    if after_nnabla_import:
        lines = [ln for ln in lines if "[nnabla][INFO]" not in ln]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


@pytest.mark.parametrize("kind", ["missing", "not-an-image", "empty", "directory", "too-small",
                                  "truncated"])
def test_bad_input_exits_2_and_writes_nothing(kind, tiny_model, tmp_path):
    weights, cfg, _ = tiny_model
    good = tmp_path / "good.png"
    Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(good)
    bad = tmp_path / f"bad_{kind}.png"
    if kind == "not-an-image":
        bad.write_text("this is text, not pixels\n")
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "directory":
        bad.mkdir()
    elif kind == "too-small":
        Image.fromarray(np.zeros((20, 64, 3), np.uint8)).save(bad)
    elif kind == "truncated":
        good_bytes = good.read_bytes()
        bad.write_bytes(good_bytes[:len(good_bytes) // 2])
    out = tmp_path / "out"
    r = run_infer(good, bad, "--model", weights, "--config", cfg, "--out-dir", out)
    _assert_one_line_error(r, str(bad))
    assert not out.exists(), "nothing may be written when an input is bad"


def test_bad_model_and_config(tiny_model, tmp_path):
    weights, cfg, _ = tiny_model
    img = tmp_path / "img.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    out = tmp_path / "out"
    _assert_one_line_error(run_infer(img, "--model", tmp_path / "nope.h5", "--out-dir", out),
                           "nope.h5")
    _assert_one_line_error(run_infer(img, "--model", img, "--out-dir", out), "img.png")
    # a D3Net-S config for the tiny weights: names and shapes are listed
    _assert_one_line_error(run_infer(img, "--model", weights, "--config", "D3Net_S",
                                     "--out-dir", out), "wrong shape")
    # no config, and the shapes match no bundled one
    _assert_one_line_error(run_infer(img, "--model", weights, "--out-dir", out), "--config")
    import importlib.util

    if importlib.util.find_spec("nnabla_ext.cudnn") is None:
        _assert_one_line_error(run_infer(img, "--model", weights, "--config", cfg,
                                         "--out-dir", out, "--context", "cudnn"), "cuda",
                               after_nnabla_import=True)
    # two inputs writing the same outputs
    (tmp_path / "sub").mkdir()
    twin = tmp_path / "sub" / "img.png"
    twin.write_bytes(img.read_bytes())
    _assert_one_line_error(run_infer(img, twin, "--model", weights, "--config", cfg,
                                     "--out-dir", out), "rename")
    assert not out.exists()


def test_onnx_backend_is_optional(tiny_model, tmp_path):
    """``--backend onnx`` uses d3net_seg.onnx_backend when present (labels agree with nnabla
    on almost every pixel), else it is a one-line error."""
    weights, cfg, _ = tiny_model
    img = tmp_path / "img.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (40, 57, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "out"
    r = run_infer(img, "--model", weights, "--config", cfg, "--out-dir", out,
                  "--backend", "onnx")
    import importlib.util

    if importlib.util.find_spec("d3net_seg.onnx_backend") is None:
        _assert_one_line_error(r, "onnx")
        assert not out.exists()
        return
    assert r.returncode == 0, r.stderr
    with Image.open(out / "img_labels.png") as im:
        labels = np.asarray(im)
    ref = Segmenter(weights, cfg).segment(read_image(img)).labels
    assert (labels == ref).mean() > 0.99
