import gzip
import struct

import numpy as np
import pytest

from common.data import mnist
from common.errors import UserError


def _idx_bytes(arr, magic_type=0x08):
    arr = np.asarray(arr)
    header = struct.pack(">HBB", 0, magic_type, arr.ndim)
    header += b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(">u1" if magic_type == 0x08 else ">i4").tobytes()


def _write(path, data, gz):
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _make_mnist(root, n_train=6, n_test=4, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        lbls = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write(root / f"{prefix}-images-idx3-ubyte", _idx_bytes(imgs), gz)
        _write(root / f"{prefix}-labels-idx1-ubyte", _idx_bytes(lbls), gz)
        out[prefix] = (imgs, lbls)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_roundtrip(tmp_path, gz):
    ref = _make_mnist(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = mnist.load_mnist(tmp_path, split)
        assert x.dtype == np.uint8 and x.shape == ref[prefix][0].shape
        assert y.dtype == np.int64
        assert np.array_equal(x, ref[prefix][0]) and np.array_equal(y, ref[prefix][1])


def test_read_idx_generic_int32(tmp_path):
    arr = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    p = tmp_path / "a.idx"
    p.write_bytes(_idx_bytes(arr, 0x0C))
    out = mnist.read_idx(p)
    assert out.dtype == np.int32 and np.array_equal(out, arr)


def test_bad_magic_and_swapped_files(tmp_path):
    _make_mnist(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    labels = (tmp_path / "train-labels-idx1-ubyte").read_bytes()
    (bad / "train-images-idx3-ubyte").write_bytes(b"GIF89a" + bytes(100))
    (bad / "train-labels-idx1-ubyte").write_bytes(labels)
    with pytest.raises(UserError, match="train-images-idx3-ubyte: not an IDX file .bad magic"):
        mnist.load_mnist(bad, "train")
    # labels file where the images file should be -> magic 0x801 != 0x803
    (bad / "train-images-idx3-ubyte").write_bytes(labels)
    with pytest.raises(UserError, match="expected 0x00000803"):
        mnist.load_mnist(bad, "train")


def test_truncated_images_name_the_file_and_the_counts(tmp_path):
    _make_mnist(tmp_path)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])  # 6 images announced, 5 and a bit present
    with pytest.raises(UserError) as info:
        mnist.load_mnist(tmp_path, "train")
    assert str(info.value).startswith(f"{p}: truncated: the header says 6 images of 28x28, "
                                      "the file holds 5 ")
    p.write_bytes(p.read_bytes()[:10])  # inside the header of 3 dimensions
    with pytest.raises(UserError, match="truncated: the IDX header of 3 dimensions"):
        mnist.load_mnist(tmp_path, "train")


def test_truncated_labels_and_trailing_garbage(tmp_path):
    _make_mnist(tmp_path)
    p = tmp_path / "t10k-labels-idx1-ubyte"
    full = p.read_bytes()
    p.write_bytes(full[:-1])
    with pytest.raises(UserError, match="truncated: the header says 4 labels, the file holds 3"):
        mnist.load_mnist(tmp_path, "test")
    p.write_bytes(full + b"junk")
    with pytest.raises(UserError, match="damaged: .* holds 4 bytes more"):
        mnist.load_mnist(tmp_path, "test")


def test_truncated_and_damaged_gzip(tmp_path):
    _make_mnist(tmp_path, gz=True)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    whole = p.read_bytes()
    p.write_bytes(whole[: len(whole) // 2])  # cut download
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte.gz: damaged or truncated gzip"):
        mnist.load_mnist(tmp_path, "train")
    damaged = bytearray(whole)
    damaged[20:40] = b"\xff" * 20  # inside the deflate stream
    p.write_bytes(bytes(damaged))
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte.gz: damaged or truncated gzip"):
        mnist.load_mnist(tmp_path, "train")


def test_image_label_count_mismatch_and_foreign_values(tmp_path):
    other = tmp_path / "o"
    other.mkdir()
    imgs = np.zeros((3, 28, 28), np.uint8)
    (other / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(imgs))
    (other / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(UserError, match="holds 3 images but .*t10k-labels-idx1-ubyte holds 2"):
        mnist.load_mnist(other, "test")
    (other / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([1, 2, 10], np.uint8)))
    with pytest.raises(UserError, match="label 10 outside 0..9"):
        mnist.load_mnist(other, "test")
    # int32 labels: the magic number (type code and dimensions) tells it is no MNIST file
    (other / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([1, 2, 3]), 0x0C))
    with pytest.raises(UserError, match="expected 0x00000801"):
        mnist.load_mnist(other, "test")


def test_missing_files_and_bad_split(tmp_path):
    with pytest.raises(UserError) as info:
        mnist.load_mnist(tmp_path, "train")
    assert str(info.value).startswith(f"{tmp_path / 'train-images-idx3-ubyte'}[.gz]: no such file")
    _make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.*no such file"):
        mnist.load_mnist(tmp_path, "test")
    with pytest.raises(UserError, match="unknown MNIST split"):
        mnist.load_mnist(tmp_path, "valid")
    with pytest.raises(UserError, match="does not exist"):
        mnist.load_mnist(tmp_path / "nope")


def _write_5k_csv(path, images, labels):
    rows = [",".join(map(str, list(im.reshape(-1)) + [int(lb)])) for im, lb in zip(images, labels)]
    with gzip.open(path, "wt") as f:
        f.write("\n".join(rows) + "\n")


def test_parse_mnist_5k_format(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 2)  # sorted by label, like the real file
    p = tmp_path / "mnist_5k.csv.gz"
    _write_5k_csv(p, images, labels)
    x, y = mnist.load_mnist_5k(p)
    assert x.shape == (20, 28, 28) and x.dtype == np.uint8
    assert np.array_equal(x, images) and np.array_equal(y, labels)
    train, test = mnist.stratified_split(y, 1, seed=0)
    assert len(test) == 10 and sorted(y[test].tolist()) == list(range(10))
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 20


def test_parse_mnist_5k_rejects_wrong_layout(tmp_path):
    p = tmp_path / "x.csv.gz"
    with gzip.open(p, "wt") as f:
        f.write(",".join(["0"] * 784) + "\n")  # label column missing
    with pytest.raises(UserError, match="785"):
        mnist.parse_mnist_5k_csv(p)
    # label first instead of last: a pixel value ends up in the label column
    with gzip.open(p, "wt") as f:
        f.write(",".join(["3"] + ["0"] * 783 + ["200"]) + "\n")
    with pytest.raises(UserError, match="labels outside"):
        mnist.parse_mnist_5k_csv(p)


def test_bundled_mnist_5k():
    from common.data.bundled import MNIST_5K_FILE, _mnist_5k_target
    if not _mnist_5k_target().is_file():
        pytest.fail(f"bundled {MNIST_5K_FILE} not prepared (run `make setup`)")
    x, y = mnist.load_mnist_5k()
    assert x.shape == (5000, 28, 28)
    assert np.bincount(y).tolist() == [500] * 10
    assert 20 < x.mean() < 50  # real digits: mostly black background
