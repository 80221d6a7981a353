"""CIFAR-10 from the official "python version" pickle batches.

Expected layout (what ``tar xzf cifar-10-python.tar.gz`` produces)::

    ROOT/cifar-10-batches-py/data_batch_1 ... data_batch_5   (10,000 images each)
    ROOT/cifar-10-batches-py/test_batch                      (10,000 images)
    ROOT/cifar-10-batches-py/batches.meta                    (label names)

``root`` may be either ``ROOT`` or the ``cifar-10-batches-py`` folder itself.
Each batch is a pickled dict with byte-string keys: ``b'data'`` a ``uint8``
array of shape ``(N, 3072)`` -- per image the 1024 red, then 1024 green, then
1024 blue values, each plane row-major 32x32 -- ``b'labels'`` a list of ints in
0..9, ``b'batch_label'`` and ``b'filenames'``.

Images are returned as ``uint8``, **NCHW** ``(N, 3, 32, 32)`` by default (the
native order of the file and what NNabla convolutions take) or **NHWC**
``(N, 32, 32, 3)`` with ``layout='NHWC'``; labels as ``int64`` ``(N,)``.
Normalisation is left to the paper code.

The pickles are read with :func:`common.data.safe_pickle.load_data_pickle`, which runs no
code from the file; a damaged, truncated or foreign file is one :class:`UserError` naming it.
"""
from pathlib import Path

import numpy as np

from common.data.archives import DatasetArchive
from common.data.safe_pickle import ForbiddenGlobal, load_data_pickle
from common.errors import ENVIRONMENT_ERRNOS, UserError, describe_os_error

__all__ = ["load_cifar10", "read_batch", "label_names", "batches_dir", "download_instructions",
           "CIFAR10_URL", "CIFAR10_CLASSES", "TRAIN_BATCHES", "TEST_BATCH"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
TRAIN_BATCHES = tuple(f"data_batch_{k}" for k in range(1, 6))
TEST_BATCH = "test_batch"
# The archive, extracted into ROOT (or the cache folder when no root is given).
ARCHIVE = DatasetArchive("CIFAR-10", CIFAR10_URL, "163 MB", "cifar10", "cifar-10-batches-py",
                         ("batches.meta", TEST_BATCH, TRAIN_BATCHES[0]))
default_root = ARCHIVE.default_root
download_instructions = ARCHIVE.download_instructions
batches_dir = ARCHIVE.find_folder   # the cifar-10-batches-py folder for a root


def _unpickle(path, what):
    """The object pickled in ``path``, read without running code from the file."""
    try:
        with open(path, "rb") as f:
            return load_data_pickle(f)
    except ForbiddenGlobal as exc:
        raise UserError(f"{path}: not a {what} ({exc})") from None
    except OSError as exc:
        if exc.errno in ENVIRONMENT_ERRNOS:
            raise
        raise UserError(f"{path}: cannot read ({describe_os_error(exc)})") from None
    except Exception as exc:  # damaged pickles raise many different types
        raise UserError(f"{path}: not a {what} ({type(exc).__name__}: {exc}); the file is "
                        "damaged or truncated, extract the archive again") from None


def read_batch(path):
    """``(data uint8 (N, 3072), labels int64 (N,))`` of one pickle batch file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; {download_instructions(path.parent.parent)}")
    d = _unpickle(path, "CIFAR-10 python batch")
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        found = f"keys {sorted(map(repr, d))}" if isinstance(d, dict) else type(d).__name__
        raise UserError(f"{path}: not a CIFAR-10 python batch (found {found}; expected a "
                        "dict with b'data' and b'labels')")
    data, labels = d[b"data"], d[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"{path}: b'data' is {what}, expected uint8 (N, 3072)")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        labels = None
    if labels is None or labels.ndim != 1:
        raise UserError(f"{path}: b'labels' is not a list of class numbers")
    if len(labels) != len(data):
        raise UserError(f"{path}: truncated or damaged: {len(data)} images but "
                        f"{len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise UserError(f"{path}: labels outside 0..9")
    return data, labels


def label_names(root=None):
    """Class names from ``batches.meta`` (falls back to :data:`CIFAR10_CLASSES` if absent)."""
    meta = batches_dir(root) / "batches.meta"
    if not meta.is_file():
        return list(CIFAR10_CLASSES)
    d = _unpickle(meta, "CIFAR-10 batches.meta file")
    names = d.get(b"label_names") if isinstance(d, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise UserError(f"{meta}: no b'label_names' list of class names")
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def load_cifar10(root=None, split="train", layout="NCHW"):
    """Load a CIFAR-10 split.

    Parameters
    ----------
    root : directory holding ``cifar-10-batches-py/`` (or that directory);
        default ``cache_dir('data', 'cifar10')``
    split : 'train' (data_batch_1..5, 50,000 images) or 'test' (test_batch)
    layout : 'NCHW' (default) or 'NHWC'

    Returns ``(images uint8, labels int64 (N,))``.
    """
    ARCHIVE.check_split_and_layout(split, layout)
    d = batches_dir(root)
    names = TRAIN_BATCHES if split == "train" else (TEST_BATCH,)
    ARCHIVE.check_extracted(*(d / n for n in names))
    parts = [read_batch(d / n) for n in names]
    data = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([p[1] for p in parts])
    if layout == "NHWC":
        data = np.ascontiguousarray(data.transpose(0, 2, 3, 1))
    return data, labels
