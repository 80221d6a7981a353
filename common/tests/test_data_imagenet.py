import io

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
        for wnid, color in COLORS.items():
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


def test_extension_filter_and_layout_errors(tmp_path):
    _make_tree(tmp_path)
    only_png = imagenet.ImageFolder(tmp_path / "train", extensions=(".png",), allow_empty=True)
    assert all(p.lower().endswith(".png") for p, _ in only_png.samples)
    with pytest.raises(UserError, match="class folder without images .none with extensions "
                                        r"\.bmp\) \(and 2 more class folders\)"):
        imagenet.ImageFolder(tmp_path / "train", extensions=(".bmp",))
    flat = tmp_path / "flat"
    (flat / "val").mkdir(parents=True)
    _img(flat / "val" / "ILSVRC2012_val_00000001.JPEG", (1, 2, 3))
    with pytest.raises(UserError, match="one folder per class"):
        imagenet.imagenet(flat, "val")
    with pytest.raises(UserError, match=f"{tmp_path / 'missing' / 'train'} does not exist"):
        imagenet.imagenet(tmp_path / "missing", "train")


def test_empty_class_folder_is_named(tmp_path):
    _make_tree(tmp_path)
    empty = tmp_path / "train" / "n09999999"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(UserError) as info:
        imagenet.imagenet(tmp_path, "train")
    assert str(info.value).startswith(f"{empty}: class folder without images")
    assert "(and" not in str(info.value)


def test_no_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(UserError, match="has no class sub-directories"):
        imagenet.imagenet(tmp_path, "train")
    (tmp_path / "train" / ".hidden").mkdir()  # hidden folders are not classes
    with pytest.raises(UserError, match="has no class sub-directories"):
        imagenet.imagenet(tmp_path, "train")


def test_val_class_missing_from_train(tmp_path):
    _make_tree(tmp_path)
    extra = tmp_path / "val" / "n09999999"
    extra.mkdir()
    _img(extra / "x.JPEG", (9, 9, 9))
    with pytest.raises(UserError, match=r"class folders not in the class list: \['n09999999'\]"):
        imagenet.imagenet(tmp_path, "val")


def _jpeg_bytes(size=(24, 20)):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("content", ["truncated", "empty", "text", "png-cut"])
def test_undecodable_image_names_the_file(tmp_path, content):
    _make_tree(tmp_path)
    bad = tmp_path / "train" / "n01443537" / "n01443537_9.JPEG"
    jpeg = _jpeg_bytes()
    if content == "png-cut":
        buf = io.BytesIO()
        Image.new("RGB", (30, 30), (1, 2, 3)).save(buf, "PNG")
        bad = bad.with_suffix(".png")
        bad.write_bytes(buf.getvalue()[:60])
    else:
        bad.write_bytes({"truncated": jpeg[: len(jpeg) // 2], "empty": b"",
                         "text": b"<html>404 Not Found</html>"}[content])
    ds = imagenet.imagenet(tmp_path, "train")
    index = [p for p, _ in ds.samples].index(str(bad))
    with pytest.raises(UserError) as info:
        ds[index]
    message = str(info.value)
    assert message.startswith(f"{bad}: cannot decode image (") and "\n" not in message


def test_image_smaller_than_the_crop_names_the_file(tmp_path):
    _make_tree(tmp_path)
    ds = imagenet.imagenet(tmp_path, "train", transform=imagenet.center_crop(11))
    with pytest.raises(UserError, match=r"\.(JPEG|png): image 12x10 smaller than the crop 11x11"):
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
