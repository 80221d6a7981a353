"""STL-10 read from tiny files written in the official binary format."""
import numpy as np
import pytest

from common.data.stl10 import STL10_CLASSES, label_names, load_stl10
from common.errors import UserError


def write_stl10(root, split, images_nchw, labels_1_based, names=True):
    """Write ``images`` (N, 3, 96, 96) as the official files do: each plane column by column."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(images_nchw.transpose(0, 1, 3, 2)).astype(np.uint8).tofile(
        folder / f"{split}_X.bin")
    np.asarray(labels_1_based, np.uint8).tofile(folder / f"{split}_y.bin")
    if names:
        (folder / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
    return folder


def test_images_rows_first_and_labels_from_zero(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 3, 96, 96), dtype=np.uint8)
    images[0, 0, 0, :] = 255  # the top row of the first red plane
    images[0, 0, 1:, :] = 0
    write_stl10(tmp_path, "train", images, [1, 10, 4])
    x, y = load_stl10(tmp_path, "train")
    assert x.shape == (3, 3, 96, 96) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, images)
    assert x[0, 0, 0].min() == 255 and x[0, 0, 1:].max() == 0  # a row, not a column
    assert y.tolist() == [0, 9, 3] and y.dtype == np.int64
    x_nhwc, _ = load_stl10(tmp_path / "stl10_binary", "train", layout="NHWC")
    np.testing.assert_array_equal(x_nhwc, images.transpose(0, 2, 3, 1))
    assert label_names(tmp_path) == list(STL10_CLASSES)


@pytest.mark.parametrize("damage, fragment", [
    (lambda f: (f / "train_X.bin").write_bytes((f / "train_X.bin").read_bytes()[:-5]),
     "truncated"),
    (lambda f: (f / "train_y.bin").write_bytes(b"\x01"), "1 labels for the 2 images"),
    (lambda f: (f / "train_y.bin").write_bytes(b"\x01\x0b"), "labels outside 1..10"),
    (lambda f: (f / "train_y.bin").unlink(), "train_y.bin: no such file; the extraction"),
    (lambda f: [(f / "train_X.bin").unlink(), (f / "train_y.bin").unlink(),
                (f / "test_X.bin").write_bytes(b"")],
     r"train_X.bin: no such file \(nor train_y.bin\); the extraction is incomplete"),
])
def test_damaged_files_are_one_line_errors(tmp_path, damage, fragment):
    folder = write_stl10(tmp_path, "train", np.zeros((2, 3, 96, 96), np.uint8), [1, 2])
    damage(folder)
    with pytest.raises(UserError, match=fragment) as err:
        load_stl10(tmp_path, "train")
    assert "\n" not in str(err.value)


def test_missing_root_says_how_to_get_it(tmp_path):
    with pytest.raises(UserError, match="stl10_binary.tar.gz") as err:
        load_stl10(tmp_path, "test")
    assert str(err.value).startswith(f"STL-10 not found under {tmp_path}: download ")
    (tmp_path / "stl10_binary.tar.gz").write_bytes(b"")
    with pytest.raises(UserError, match="holds stl10_binary.tar.gz but it is not extracted"):
        load_stl10(tmp_path, "test")
