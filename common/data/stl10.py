"""STL-10 from its official binary files.

Expected layout (what ``tar xzf stl10_binary.tar.gz`` produces)::

    ROOT/stl10_binary/train_X.bin   train_y.bin   (5,000 labelled images)
    ROOT/stl10_binary/test_X.bin    test_y.bin    (8,000 labelled images)
    ROOT/stl10_binary/class_names.txt             (one name per line)
    ROOT/stl10_binary/unlabeled_X.bin              (100,000 images, not read here)

``root`` may be either ``ROOT`` or the ``stl10_binary`` folder itself. An ``*_X.bin`` file is
raw ``uint8``: per image 3 colour planes of 96x96 values, each plane stored column by column
(the layout MATLAB writes); a ``*_y.bin`` file holds one ``uint8`` label per image, 1..10.

Images are returned as ``uint8`` **NCHW** ``(N, 3, 96, 96)`` (rows first, as every other
loader here) or **NHWC** with ``layout='NHWC'``; labels as ``int64`` 0..9. A truncated file,
a label count that does not match, or a label outside 1..10 is one :class:`UserError` naming
the file.
"""
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.paths import cache_dir

__all__ = ["load_stl10", "label_names", "binary_dir", "download_instructions", "STL10_URL",
           "STL10_CLASSES", "IMAGE_SHAPE"]

STL10_URL = "https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship",
                 "truck")
IMAGE_SHAPE = (3, 96, 96)
_DIRNAME = "stl10_binary"
_IMAGE_BYTES = int(np.prod(IMAGE_SHAPE))


def default_root():
    """``cache_dir('data', 'stl10')``, used when no root is given."""
    return cache_dir("data", "stl10")


def download_instructions(root=None):
    """How to get the data (no download happens here)."""
    root = Path(root) if root is not None else default_root()
    return (f"download {STL10_URL} (2.6 GB) and extract it into {root}, e.g. "
            f"`mkdir -p {root} && curl -L {STL10_URL} | tar xz -C {root}`, which creates "
            f"{root / _DIRNAME}/")


def binary_dir(root=None):
    """The ``stl10_binary`` folder for ``root`` (which may be that folder)."""
    root = Path(root) if root is not None else default_root()
    for cand in (root / _DIRNAME, root):
        if (cand / "train_X.bin").is_file() or (cand / "test_X.bin").is_file():
            return cand
    raise UserError(f"STL-10 not found under {root}: {download_instructions(root)}")


def label_names(root=None):
    """Class names from ``class_names.txt`` (falls back to :data:`STL10_CLASSES`)."""
    path = binary_dir(root) / "class_names.txt"
    if not path.is_file():
        return list(STL10_CLASSES)
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    if len(names) != len(STL10_CLASSES):
        raise UserError(f"{path}: {len(names)} class names, expected {len(STL10_CLASSES)}")
    return names


def _read(path):
    if not path.is_file():
        raise UserError(f"{path}: no such file; the extraction is incomplete: "
                        + download_instructions(path.parent.parent))
    return np.fromfile(path, dtype=np.uint8)


def load_stl10(root=None, split="train", layout="NCHW"):
    """Load the labelled ``train`` or ``test`` split: ``(images uint8, labels int64 (N,))``."""
    if split not in ("train", "test"):
        raise UserError(f"unknown STL-10 split {split!r}; use 'train' or 'test'")
    if layout not in ("NCHW", "NHWC"):
        raise UserError(f"unknown layout {layout!r}; use 'NCHW' or 'NHWC'")
    folder = binary_dir(root)
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    raw, labels = _read(x_path), _read(y_path)
    if raw.size % _IMAGE_BYTES:
        raise UserError(f"{x_path}: truncated: {raw.size} bytes is not a whole number of "
                        f"{_IMAGE_BYTES}-byte images (3 x 96 x 96)")
    count = raw.size // _IMAGE_BYTES
    if len(labels) != count:
        raise UserError(f"{y_path}: {len(labels)} labels for the {count} images of "
                        f"{x_path.name}; one of the files is truncated or from another split")
    if count and (labels.min() < 1 or labels.max() > len(STL10_CLASSES)):
        raise UserError(f"{y_path}: labels outside 1..{len(STL10_CLASSES)}")
    # Each plane is stored column by column: swap the two spatial axes to get rows first.
    images = raw.reshape(count, 3, 96, 96).transpose(0, 1, 3, 2)
    if layout == "NHWC":
        images = images.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64) - 1
