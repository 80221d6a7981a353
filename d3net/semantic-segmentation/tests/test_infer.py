"""``infer.py`` end to end (subprocess): outputs at the input's size with the Cityscapes
palette, the same labels as the in-process Segmenter, the official flag spellings, and
one-line errors (exit 2, nothing written) for bad inputs, unusable output folders (checked
before any weights are read), a full disk (no partial PNG) and outputs that would replace an
input."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data.cityscapes import PALETTE
from common.dev.testing import (ReadOnlyDir, SmallDisk, assert_one_line_error, files_under,
                                run_script)
from d3net_seg.inference import Segmenter, read_image

INFER = Path(__file__).resolve().parents[1] / "infer.py"


def run_infer(*args):
    return run_script(INFER, *args, check=False)


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
            # the overlay at the input's size, the class legend below it (test_infer_outputs)
            assert im.mode == "RGB" and im.size[0] >= w and im.size[1] > h
            ov = np.asarray(im)[:h, :w]
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
    r = run_infer(*images, "--model", weights, "--network-config", cfg, "--out-dir", out)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) >= len(images)
    check_outputs(out, images, Segmenter(weights, cfg))


def test_training_run_config_beside_the_weights_is_used(tiny_model, tmp_path):
    """Weights of a training run: the network_config.yaml next to them gives the network."""
    weights, cfg, _ = tiny_model
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_param_000100.h5").write_bytes(weights.read_bytes())
    (run / "network_config.yaml").write_text(cfg.read_text())
    images = dict(list(make_images(tmp_path).items())[:1])
    out = tmp_path / "out"
    r = run_infer(*images, "--model", run / "model_param_000100.h5", "--out-dir", out)
    assert r.returncode == 0, r.stderr
    check_outputs(out, images)


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
    r = run_infer(good, bad, "--model", weights, "--network-config", cfg, "--out-dir", out)
    assert_one_line_error(r, str(bad))
    assert not out.exists(), "nothing may be written when an input is bad"


def test_bad_model_and_config(tiny_model, tmp_path):
    weights, cfg, _ = tiny_model
    img = tmp_path / "img.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    out = tmp_path / "out"
    assert_one_line_error(run_infer(img, "--model", tmp_path / "nope.h5", "--out-dir", out),
                           "nope.h5")
    assert_one_line_error(run_infer(img, "--model", img, "--out-dir", out), "img.png")
    # a D3Net-S config for the tiny weights: names and shapes are listed
    assert_one_line_error(run_infer(img, "--model", weights, "--network-config", "D3Net_S",
                                     "--out-dir", out), "wrong shape")
    # no config, and the shapes match no bundled one
    assert_one_line_error(run_infer(img, "--model", weights, "--out-dir", out), "--network-config")
    import importlib.util

    if importlib.util.find_spec("nnabla_ext.cudnn") is None:
        assert_one_line_error(run_infer(img, "--model", weights, "--network-config", cfg,
                                         "--out-dir", out, "--context", "cudnn"), "cuda")
    # two inputs writing the same outputs
    (tmp_path / "sub").mkdir()
    twin = tmp_path / "sub" / "img.png"
    twin.write_bytes(img.read_bytes())
    assert_one_line_error(run_infer(img, twin, "--model", weights, "--network-config", cfg,
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
    r = run_infer(img, "--model", weights, "--network-config", cfg, "--out-dir", out,
                  "--backend", "onnx")
    import importlib.util

    if importlib.util.find_spec("d3net_seg.onnx_backend") is None:
        assert_one_line_error(r, "onnx")
        assert not out.exists()
        return
    assert r.returncode == 0, r.stderr
    with Image.open(out / "img_labels.png") as im:
        labels = np.asarray(im)
    ref = Segmenter(weights, cfg).segment(read_image(img)).labels
    assert (labels == ref).mean() > 0.99


def test_official_flag_spellings(tiny_model, tmp_path):
    """The official ``infer.py -i IMAGE -m MODEL -cfg CONFIG -c cpu`` (plus our -o)."""
    weights, cfg, _ = tiny_model
    images = dict(list(make_images(tmp_path).items())[:1])
    out = tmp_path / "out"
    r = run_infer("-i", *images, "-m", weights, "-cfg", cfg, "-c", "cpu", "-o", out)
    assert r.returncode == 0, r.stderr
    check_outputs(out, images)


def _one_image(folder):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "street.png"
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(path)
    return path


def test_unusable_out_dir_is_refused_before_the_weights_are_read(tmp_path):
    """The model file is not even an nnabla file: had it been read first, the error would
    name it."""
    image = _one_image(tmp_path)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    (tmp_path / "file").write_text("x")
    r = run_infer(image, "--model", junk, "--out-dir", tmp_path / "file" / "seg")
    assert_one_line_error(r, "--out-dir", "lies under the file")
    with ReadOnlyDir(tmp_path / "ro") as ro:
        r = run_infer(image, "--model", junk, "--out-dir", Path(ro.path) / "seg")
        assert_one_line_error(r, "--out-dir", "cannot write")
        assert files_under(ro.path) == []


def test_full_disk_is_one_line_and_leaves_no_partial_png(tiny_model, tmp_path):
    weights, cfg, _ = tiny_model
    image = _one_image(tmp_path / "in")  # noise: its overlay PNG needs about 58 KB
    out = tmp_path / "disk" / "seg"
    with SmallDisk(tmp_path / "disk", 48 * 1024) as disk:
        r = run_script(INFER, image, "--model", weights, "--network-config", cfg, "--out-dir",
                       out, check=False, preexec_fn=disk.preexec_fn())
        assert_one_line_error(r, "street_overlay.png")
        written = files_under(out)
        assert "street_overlay.png" not in written and not [p for p in written if "tmp" in p]
        for name in written:  # whatever was written is complete
            with Image.open(out / name) as im:
                im.load()


def test_outputs_never_replace_an_input(tiny_model, tmp_path):
    weights, cfg, _ = tiny_model
    image = _one_image(tmp_path)
    other = tmp_path / "street_labels.png"  # what street.png's labels would be called
    other.write_bytes(image.read_bytes())
    before = other.read_bytes()
    r = run_infer(image, other, "--model", weights, "--network-config", cfg, "--out-dir",
                  tmp_path)
    assert_one_line_error(r, "would overwrite the input", "street_labels.png")
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["street.png", "street_labels.png"]
