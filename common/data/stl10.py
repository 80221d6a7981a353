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

import numpy as np

from common.data.archives import DatasetArchive
from common.errors import UserError

__all__ = ["load_stl10", "label_names", "binary_dir", "download_instructions", "STL10_URL",
           "STL10_CLASSES", "IMAGE_SHAPE"]

STL10_URL = "https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship",
                 "truck")
IMAGE_SHAPE = (3, 96, 96)
_IMAGE_BYTES = int(np.prod(IMAGE_SHAPE))
# The archive, extracted into ROOT (or the cache folder when no root is given).
ARCHIVE = DatasetArchive("STL-10", STL10_URL, "2.6 GB", "stl10", "stl10_binary",
                         ("train_X.bin", "test_X.bin"))
default_root = ARCHIVE.default_root
download_instructions = ARCHIVE.download_instructions
binary_dir = ARCHIVE.find_folder   # the stl10_binary folder for a root


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


def load_stl10(root=None, split="train", layout="NCHW"):
    """Load the labelled ``train`` or ``test`` split: ``(images uint8, labels int64 (N,))``."""
    ARCHIVE.check_split_and_layout(split, layout)
    folder = binary_dir(root)
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    ARCHIVE.check_extracted(x_path, y_path)
    raw, labels = np.fromfile(x_path, dtype=np.uint8), np.fromfile(y_path, dtype=np.uint8)
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
