"""common.data.cityscapes: the label table, the folder layout, the --convert tool, the joint
augmentation, and one-line errors naming the file for damaged images and labels."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from common.data import cityscapes as cs
from common.data.loader import BatchLoader
from common.errors import UserError

NAMES = {"train": [("aachen", "aachen_000000_000019"), ("bochum", "bochum_000000_000313")],
         "val": [("frankfurt", "frankfurt_000000_000294")]}


def _make_tree(root, h=8, w=16, label_kind="trainIds"):
    rng = np.random.default_rng(0)
    ref = {}
    for split, items in NAMES.items():
        for city, name in items:
            img_dir = root / "leftImg8bit" / split / city
            gt_dir = root / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            ids = rng.integers(0, 34, size=(h, w), dtype=np.uint8)
            Image.fromarray(img).save(img_dir / f"{name}_leftImg8bit.png")
            Image.fromarray(ids).save(gt_dir / f"{name}_gtFine_labelIds.png")
            if label_kind == "trainIds":
                Image.fromarray(cs.label_ids_to_train_ids(ids)).save(
                    gt_dir / f"{name}_gtFine_labelTrainIds.png")
            ref[name] = (img, ids)
    return ref


def test_label_table_facts():
    assert cs.NUM_CLASSES == 19
    assert cs.TRAIN_CLASSES[:3] == ("road", "sidewalk", "building")
    assert cs.TRAIN_CLASSES[-1] == "bicycle" and cs.TRAIN_CLASSES[16] == "train"
    assert cs.PALETTE.shape == (19, 3)
    assert tuple(cs.PALETTE[0]) == (128, 64, 128) and tuple(cs.PALETTE[10]) == (70, 130, 180)
    ids = np.array([[0, 7, 8, 9, 26, 33, 34, 255]], np.uint8)
    assert cs.label_ids_to_train_ids(ids).tolist() == [[255, 0, 1, 255, 13, 18, 255, 255]]
    # inverse for submissions
    assert cs.train_ids_to_label_ids(np.array([0, 13, 18, 255])).tolist() == [7, 26, 33, 0]
    rgb = cs.colorize(np.array([[0, 255]]))
    assert rgb[0, 0].tolist() == [128, 64, 128] and rgb[0, 1].tolist() == [0, 0, 0]


def test_pairs_and_dataset(tmp_path):
    ref = _make_tree(tmp_path)
    pairs = cs.list_pairs(tmp_path, "train")
    assert [p[0].name for p in pairs] == ["aachen_000000_000019_leftImg8bit.png",
                                         "bochum_000000_000313_leftImg8bit.png"]
    ds = cs.Cityscapes(tmp_path, "train")
    x, y = ds[1]
    img, ids = ref["bochum_000000_000313"]
    assert x.shape == (3, 8, 16) and np.array_equal(x.transpose(1, 2, 0), img)
    assert y.dtype == np.uint8 and np.array_equal(y, cs.label_ids_to_train_ids(ids))
    assert len(cs.Cityscapes(tmp_path, "val")) == 1


def test_missing_label_is_error_with_convert_hint(tmp_path):
    _make_tree(tmp_path, label_kind="labelIds")
    with pytest.raises(UserError, match="--convert"):
        cs.list_pairs(tmp_path, "train")
    pairs = cs.list_pairs(tmp_path, "train", require_labels=False)
    assert all(lbl is None for _, lbl in pairs)
    _, y = cs.Cityscapes(tmp_path, "train", require_labels=False)[0]
    assert (y == 255).all()


def test_convert_cli_writes_trainids(tmp_path):
    ref = _make_tree(tmp_path, label_kind="labelIds")
    assert cs.main(["--convert", str(tmp_path)]) == 0
    ds = cs.Cityscapes(tmp_path, "val")
    _, y = ds[0]
    assert np.array_equal(y, cs.label_ids_to_train_ids(ref["frankfurt_000000_000294"][1]))
    assert cs.convert_label_ids(tmp_path) == 0  # idempotent: nothing left to write
    assert cs.convert_label_ids(tmp_path, overwrite=True) == 3
    with pytest.raises(UserError, match="labelIds"):
        cs.convert_label_ids(tmp_path / "nothing")


def test_missing_split_dir(tmp_path):
    with pytest.raises(UserError, match="leftImg8bit"):
        cs.list_pairs(tmp_path, "train")
    with pytest.raises(UserError):
        cs.list_pairs(tmp_path, "training")


def test_joint_transform_keeps_alignment(tmp_path):
    _make_tree(tmp_path, h=12, w=20)
    t = cs.random_scale_crop_flip((16, 16), scale_range=(0.5, 1.5))
    ds = cs.Cityscapes(tmp_path, "train", transform=t)
    loader = BatchLoader(ds, batch_size=2, seed=3)
    x, y = loader.next()
    assert x.shape == (2, 3, 16, 16) and y.shape == (2, 16, 16)
    # alignment: a label image whose pixels encode their own column survives the
    # transform together with an image carrying the same encoding
    t1 = cs.random_scale_crop_flip((10, 24), scale_range=(1.0, 1.0))  # crop + pad + flip only
    col = np.tile(np.arange(1, 21, dtype=np.uint8), (12, 1))
    img = np.stack([col] * 3, -1)
    flipped = set()
    for seed in range(8):
        ti, tl = t1(img, col, np.random.default_rng(seed))
        assert ti.shape == (10, 24, 3) and tl.shape == (10, 24)
        flipped.add(bool(tl[0, 0] == 255))  # padding lands on the left only when flipped
        valid = tl != 255
        assert np.array_equal(ti[..., 0][valid], tl[valid])
        assert (ti[..., 0][~valid] == 0).all()  # padding: image fill 0, label ignore
        assert valid.sum(1).tolist() == [20] * 10
    assert flipped == {True, False}


def test_convert_cli_as_module(tmp_path):
    ok = _make_tree(tmp_path / "ok", label_kind="labelIds")
    proc = subprocess.run([sys.executable, "-m", "common.data.cityscapes", "--convert",
                           str(tmp_path / "ok")], capture_output=True, text=True)
    assert proc.returncode == 0 and "wrote 3" in proc.stdout
    assert len(cs.Cityscapes(tmp_path / "ok", "train")) == len(ok) - 1
    proc = subprocess.run([sys.executable, "-m", "common.data.cityscapes", "--convert",
                           str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error:")


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _save_as(mode, size=None):
    def damage(path):
        with Image.open(path) as im:
            im = im.convert(mode)
            im.resize(size or im.size).save(path)
    return damage


@pytest.mark.parametrize("damage, which, fragment", [
    (_truncate, "image", "cannot read this image (image file is truncated"),
    (lambda p: p.write_text("not a png"), "image", "not an image file"),
    (_save_as("I;16"), "image", "image of mode I;16"),
    (_truncate, "label", "cannot read this label image"),
    (_save_as("RGB"), "label", "label image of mode RGB; expected L or P"),
    (_save_as("L", (8, 4)), "label", "label of 8x4 pixels, but its image"),
    (lambda p: p.unlink(), "image", "no such file")])
def test_damaged_files_are_one_line_errors_naming_them(damage, which, fragment, tmp_path):
    _make_tree(tmp_path)
    dataset = cs.Cityscapes(tmp_path, "train")
    image, label = dataset.pairs[1]
    bad = image if which == "image" else label
    damage(bad)
    dataset[0]  # the other pair still reads
    with pytest.raises(UserError) as err:
        dataset[1]
    message = str(err.value)
    assert message.startswith(f"{bad}: ") and fragment in message and "\n" not in message
