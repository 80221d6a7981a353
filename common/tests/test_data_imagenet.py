import numpy as np
import pytest
from PIL import Image

from common.data import imagenet
from common.data.loader import BatchLoader
from common.errors import UserError

COLORS = {"n01440764": (255, 0, 0), "n01443537": (0, 255, 0), "n01484850": (0, 0, 255)}


def _img(path, color, size=(12, 10), mode="RGB"):
    im = Image.new("RGB", size, color)
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path)


def _make_tree(root, per_class=2):
    for split in ("train", "val"):
        for k, (wnid, color) in enumerate(COLORS.items()):
            d = root / split / wnid
            d.mkdir(parents=True)
            for j in range(per_class):
                ext = ".JPEG" if j % 2 == 0 else ".png"
                _img(d / f"{wnid}_{j}{ext}", color)
            (d / "notes.txt").write_text("not an image")
    # a grayscale image in a nested folder of the last class
    nested = root / "train" / "n01484850" / "extra"
    nested.mkdir()
    _img(nested / "g.png", (0, 0, 255), mode="L")


def test_imagefolder_classes_labels_and_pixels(tmp_path):
    _make_tree(tmp_path)
    ds = imagenet.imagenet(tmp_path, "train")
    assert ds.classes == sorted(COLORS)
    assert len(ds) == 7  # 2 per class + nested grayscale; .txt skipped
    counts = np.bincount(ds.targets).tolist()
    assert counts == [2, 2, 3]
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 10, 12) and x.dtype == np.uint8
        path = ds.samples[i][0]
        if path.endswith("g.png"):
            assert x[0, 0, 0] == x[1, 0, 0] == x[2, 0, 0]  # gray converted to RGB
            continue
        dominant = int(np.argmax(x.reshape(3, -1).mean(1)))
        assert dominant == int(np.argmax(COLORS[ds.classes[y]]))


def test_val_uses_train_class_indices(tmp_path):
    _make_tree(tmp_path)
    # val lacks the first class: indices must still follow the train list
    import shutil
    shutil.rmtree(tmp_path / "val" / "n01440764")
    val = imagenet.imagenet(tmp_path, "val")
    assert set(val.targets.tolist()) == {1, 2}
    assert imagenet.ImageFolder(tmp_path / "val").targets.max() == 1  # standalone numbering differs


def test_transform_hook_and_loader(tmp_path):
    _make_tree(tmp_path)
    t = imagenet.standard_transform(train=True, size=8, resize=10)
    ds = imagenet.imagenet(tmp_path, "train", transform=t, channels_first=False)
    loader = BatchLoader(ds, batch_size=3, seed=0)
    x, y = loader.next()
    assert x.shape == (3, 8, 8, 3) and y.shape == (3,)
    ev = imagenet.imagenet(tmp_path, "val", transform=imagenet.standard_transform(False, 8, 10))
    assert ev[0][0].shape == (3, 8, 8)


def test_extension_filter_and_errors(tmp_path):
    _make_tree(tmp_path)
    only_png = imagenet.ImageFolder(tmp_path / "train", extensions=(".png",), allow_empty=True)
    assert all(p.lower().endswith(".png") for p, _ in only_png.samples)
    with pytest.raises(UserError, match="no images"):
        imagenet.ImageFolder(tmp_path / "train", extensions=(".bmp",))
    flat = tmp_path / "flat"
    (flat / "val").mkdir(parents=True)
    _img(flat / "val" / "ILSVRC2012_val_00000001.JPEG", (1, 2, 3))
    with pytest.raises(UserError, match="one folder per class"):
        imagenet.imagenet(flat, "val")
    with pytest.raises(UserError):
        imagenet.imagenet(tmp_path / "missing", "train")
    bad = tmp_path / "bad" / "cls"
    bad.mkdir(parents=True)
    (bad / "broken.jpg").write_bytes(b"garbage")
    ds = imagenet.ImageFolder(tmp_path / "bad")
    with pytest.raises(UserError, match="cannot decode"):
        ds[0]


def test_random_crop_uses_rng(tmp_path):
    im = Image.fromarray(np.arange(20 * 20 * 3, dtype=np.uint8).reshape(20, 20, 3))
    crop = imagenet.random_crop(5)
    a = np.asarray(crop(im, np.random.default_rng(0)))
    b = np.asarray(crop(im, np.random.default_rng(0)))
    assert a.shape == (5, 5, 3) and np.array_equal(a, b)
    outs = {np.asarray(crop(im, np.random.default_rng(s))).tobytes() for s in range(10)}
    assert len(outs) > 1
    r = imagenet.resize_shorter(10)(Image.new("RGB", (40, 20)))
    assert r.size == (20, 10)
