import pickle

import numpy as np
import pytest

from common.data import cifar10
from common.errors import UserError


def _batch(rng, n, name):
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)  # HWC reference
    data = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # file format: R plane, G plane, B plane
    labels = rng.integers(0, 10, size=n).tolist()
    d = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
         b"filenames": [f"img_{k}.png".encode() for k in range(n)]}
    return d, images, labels


def _make_cifar(root, n=3, with_meta=True):
    rng = np.random.default_rng(0)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    ref = {}
    for name in list(cifar10.TRAIN_BATCHES) + [cifar10.TEST_BATCH]:
        batch, images, labels = _batch(rng, n, name)
        with open(d / name, "wb") as f:
            pickle.dump(batch, f)
        ref[name] = (images, labels)
    if with_meta:
        meta = {b"label_names": [c.encode() for c in cifar10.CIFAR10_CLASSES],
                b"num_cases_per_batch": n, b"num_vis": 3072}
        with open(d / "batches.meta", "wb") as f:
            pickle.dump(meta, f)
    return ref


def test_train_and_test_layouts(tmp_path):
    ref = _make_cifar(tmp_path)
    x, y = cifar10.load_cifar10(tmp_path, "train")
    assert x.shape == (15, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    expect = np.concatenate([ref[n][0] for n in cifar10.TRAIN_BATCHES])
    assert np.array_equal(x.transpose(0, 2, 3, 1), expect)
    assert y.tolist() == sum((ref[n][1] for n in cifar10.TRAIN_BATCHES), [])
    xh, yh = cifar10.load_cifar10(tmp_path / "cifar-10-batches-py", "test", layout="NHWC")
    assert xh.shape == (3, 32, 32, 3)
    assert np.array_equal(xh, ref["test_batch"][0]) and yh.tolist() == ref["test_batch"][1]
    # red channel really is channel 0
    assert np.array_equal(x[0, 0], expect[0, :, :, 0])


def test_label_names(tmp_path):
    _make_cifar(tmp_path)
    assert cifar10.label_names(tmp_path) == list(cifar10.CIFAR10_CLASSES)


def test_missing_everything_gives_instructions(tmp_path):
    with pytest.raises(UserError, match="cifar-10-python.tar.gz"):
        cifar10.load_cifar10(tmp_path)
    assert cifar10.CIFAR10_URL in cifar10.download_instructions(tmp_path)
    assert cifar10.CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def test_missing_batch_and_unextracted_tarball(tmp_path):
    _make_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3"):
        cifar10.load_cifar10(tmp_path, "train")
    cifar10.load_cifar10(tmp_path, "test")  # test split still fine
    other = tmp_path / "o"
    other.mkdir()
    (other / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(UserError, match="not extracted"):
        cifar10.load_cifar10(other)


def test_corrupt_batch(tmp_path):
    _make_cifar(tmp_path)
    d = tmp_path / "cifar-10-batches-py"
    (d / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="not a CIFAR-10 pickle"):
        cifar10.load_cifar10(tmp_path, "test")
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(UserError, match="3072"):
        cifar10.load_cifar10(tmp_path, "test")


def test_bad_arguments(tmp_path):
    _make_cifar(tmp_path)
    with pytest.raises(UserError):
        cifar10.load_cifar10(tmp_path, "val")
    with pytest.raises(UserError):
        cifar10.load_cifar10(tmp_path, layout="CHW")
