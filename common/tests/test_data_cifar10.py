import os
import pickle
import struct
import subprocess

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
    with pytest.raises(UserError) as info:
        cifar10.load_cifar10(tmp_path, "train")
    expected = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    assert str(info.value).startswith(f"{expected}: no such file; the extraction is incomplete")
    cifar10.load_cifar10(tmp_path, "test")  # test split still fine
    other = tmp_path / "o"
    other.mkdir()
    (other / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(UserError, match="not extracted"):
        cifar10.load_cifar10(other)


def _py2_batch_pickle(data, labels):
    """A batch pickled the way the official files were (Python 2 cPickle, protocol 2): byte
    strings as BINSTRING, the array through numpy.core.multiarray._reconstruct."""
    def short(b):
        return b"U" + bytes([len(b)]) + b

    n = data.shape[0]
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
             + b"K\x00\x85" + short(b"b") + b"\x87R"                      # _reconstruct(...)
             + b"(K\x01" + b"M" + struct.pack("<H", n) + b"M\x00\x0c\x86"  # state: 1, shape
             + b"cnumpy\ndtype\n" + short(b"u1") + b"K\x00K\x01\x87R"   # dtype('u1', 0, 1)
             + b"(K\x03" + short(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
             + b"\x89T" + struct.pack("<I", data.size) + data.tobytes() + b"tb")
    label_list = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return (b"\x80\x02}(" + short(b"batch_label") + short(b"training batch 1 of 5")
            + short(b"data") + array + short(b"labels") + label_list + b"u.")


def test_reads_python2_protocol2_batches_like_the_official_files(tmp_path):
    _make_cifar(tmp_path)
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(_py2_batch_pickle(data, [3, 1, 4, 1]))
    x, y = cifar10.read_batch(path)
    assert np.array_equal(x, data) and y.tolist() == [3, 1, 4, 1]
    assert pickle.loads(path.read_bytes(), encoding="bytes")[b"data"].shape == (4, 3072)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_every_pickle_protocol_of_python3_loads(tmp_path, protocol):
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": [np.int64(7), 2], b"batch_label": b"x"}, f,
                    protocol=protocol)
    x, y = cifar10.read_batch(path)
    assert np.array_equal(x, data) and y.tolist() == [7, 2]


class _Payload:
    """Pickles as a call of ``func(*args)`` (what a malicious file would hold)."""

    def __init__(self, func, *args):
        self.call = (func, args)

    def __reduce__(self):
        return self.call


def _payloads(marker):
    return {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "builtins.eval": _Payload(eval, f"open({str(marker)!r}, 'w').close()"),
        "builtins.exec": _Payload(exec, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.call": _Payload(subprocess.call, ["touch", str(marker)]),
        # inside a valid-looking batch, as the labels
        "nested eval": {b"data": np.zeros((1, 3072), np.uint8),
                        b"labels": _Payload(eval, f"open({str(marker)!r}, 'w').close() or [0]")},
    }


@pytest.mark.parametrize("kind", list(_payloads("m")))
def test_crafted_pickle_is_refused_without_running_it(tmp_path, kind):
    _make_cifar(tmp_path)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_payloads(marker)[kind])
    evil = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    evil.write_bytes(payload)
    with pytest.raises(UserError) as info:
        cifar10.load_cifar10(tmp_path, "train")
    message = str(info.value)
    assert message.startswith(f"{evil}: not a CIFAR-10 python batch (it refers to ")
    assert "refused without running it" in message and "\n" not in message
    assert not marker.exists()
    # the same bytes through a plain pickle.load do run: the payload is live
    pickle.loads(payload)
    assert marker.exists()


def test_crafted_batches_meta_is_refused(tmp_path):
    _make_cifar(tmp_path)
    marker = tmp_path / "pwned"
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps(_payloads(marker)["os.system"]))
    with pytest.raises(UserError, match="batches.meta: not a CIFAR-10 batches.meta file .it "
                                        "refers to"):
        cifar10.label_names(tmp_path)
    assert not marker.exists()


def test_damaged_and_truncated_batches_name_the_file(tmp_path):
    _make_cifar(tmp_path)
    d = tmp_path / "cifar-10-batches-py"
    good = (d / "test_batch").read_bytes()
    (d / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="test_batch: not a CIFAR-10 python batch"):
        cifar10.load_cifar10(tmp_path, "test")
    (d / "test_batch").write_bytes(good[: len(good) // 2])  # cut in the middle of the array
    with pytest.raises(UserError, match="test_batch: not a CIFAR-10 python batch .* truncated"):
        cifar10.load_cifar10(tmp_path, "test")
    (d / "test_batch").write_bytes(b"")
    with pytest.raises(UserError, match="test_batch: not a CIFAR-10 python batch"):
        cifar10.load_cifar10(tmp_path, "test")


def test_batches_of_another_shape_or_content(tmp_path):
    _make_cifar(tmp_path)
    d = tmp_path / "cifar-10-batches-py"

    def write(obj):
        with open(d / "test_batch", "wb") as f:
            pickle.dump(obj, f)

    write({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(UserError, match=r"test_batch: b'data' is uint8 \(2, 100\), expected"):
        cifar10.load_cifar10(tmp_path, "test")
    write({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]})  # str keys: not the format
    with pytest.raises(UserError, match="not a CIFAR-10 python batch .found keys"):
        cifar10.load_cifar10(tmp_path, "test")
    write([1, 2, 3])
    with pytest.raises(UserError, match="found list"):
        cifar10.load_cifar10(tmp_path, "test")
    write({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]})
    with pytest.raises(UserError, match="3 images but 2 labels"):
        cifar10.load_cifar10(tmp_path, "test")
    write({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]})
    with pytest.raises(UserError, match="labels outside 0..9"):
        cifar10.load_cifar10(tmp_path, "test")


def test_bad_arguments(tmp_path):
    _make_cifar(tmp_path)
    with pytest.raises(UserError):
        cifar10.load_cifar10(tmp_path, "val")
    with pytest.raises(UserError):
        cifar10.load_cifar10(tmp_path, layout="CHW")
