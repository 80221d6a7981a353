"""Cityscapes semantic segmentation (fine annotations).

Layout (as distributed in ``leftImg8bit_trainvaltest.zip`` and
``gtFine_trainvaltest.zip``)::

    ROOT/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png

Each image is paired with the label of the same ``<city>_<seq>_<frame>`` name;
a missing label is an error (``require_labels=False`` lists images alone, e.g.
for the test split, whose public labels carry no information).

The ``*_labelTrainIds.png`` files are not in the archives: they are derived
from ``*_gtFine_labelIds.png`` with the label table below (19 training classes,
every other id -> 255 = ignore). If you only have ``*_labelIds.png``::

    python -m common.data.cityscapes --convert ROOT

writes the missing ``*_labelTrainIds.png`` next to them.

The label table (name, id, trainId, category, colour) follows the Cityscapes
dataset definition (Cordts et al., CVPR 2016).
"""
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
from PIL import Image

from common.errors import UserError
from common.cli import run_cli
from common.fileio import atomic_path

__all__ = ["Label", "LABELS", "TRAIN_CLASSES", "PALETTE", "IGNORE_INDEX", "NUM_CLASSES",
           "label_ids_to_train_ids", "train_ids_to_label_ids", "colorize", "list_pairs",
           "read_image", "Cityscapes", "convert_label_ids", "random_scale_crop_flip", "main"]

Label = namedtuple("Label", ["name", "id", "train_id", "category", "color"])

IGNORE_INDEX = 255

# name, id, trainId, category, RGB colour
LABELS = tuple(Label(*row) for row in [
    ("unlabeled", 0, 255, "void", (0, 0, 0)),
    ("ego vehicle", 1, 255, "void", (0, 0, 0)),
    ("rectification border", 2, 255, "void", (0, 0, 0)),
    ("out of roi", 3, 255, "void", (0, 0, 0)),
    ("static", 4, 255, "void", (0, 0, 0)),
    ("dynamic", 5, 255, "void", (111, 74, 0)),
    ("ground", 6, 255, "void", (81, 0, 81)),
    ("road", 7, 0, "flat", (128, 64, 128)),
    ("sidewalk", 8, 1, "flat", (244, 35, 232)),
    ("parking", 9, 255, "flat", (250, 170, 160)),
    ("rail track", 10, 255, "flat", (230, 150, 140)),
    ("building", 11, 2, "construction", (70, 70, 70)),
    ("wall", 12, 3, "construction", (102, 102, 156)),
    ("fence", 13, 4, "construction", (190, 153, 153)),
    ("guard rail", 14, 255, "construction", (180, 165, 180)),
    ("bridge", 15, 255, "construction", (150, 100, 100)),
    ("tunnel", 16, 255, "construction", (150, 120, 90)),
    ("pole", 17, 5, "object", (153, 153, 153)),
    ("polegroup", 18, 255, "object", (153, 153, 153)),
    ("traffic light", 19, 6, "object", (250, 170, 30)),
    ("traffic sign", 20, 7, "object", (220, 220, 0)),
    ("vegetation", 21, 8, "nature", (107, 142, 35)),
    ("terrain", 22, 9, "nature", (152, 251, 152)),
    ("sky", 23, 10, "sky", (70, 130, 180)),
    ("person", 24, 11, "human", (220, 20, 60)),
    ("rider", 25, 12, "human", (255, 0, 0)),
    ("car", 26, 13, "vehicle", (0, 0, 142)),
    ("truck", 27, 14, "vehicle", (0, 0, 70)),
    ("bus", 28, 15, "vehicle", (0, 60, 100)),
    ("caravan", 29, 255, "vehicle", (0, 0, 90)),
    ("trailer", 30, 255, "vehicle", (0, 0, 110)),
    ("train", 31, 16, "vehicle", (0, 80, 100)),
    ("motorcycle", 32, 17, "vehicle", (0, 0, 230)),
    ("bicycle", 33, 18, "vehicle", (119, 11, 32)),
    ("license plate", -1, -1, "vehicle", (0, 0, 142)),
])

_TRAIN = sorted((lb for lb in LABELS if 0 <= lb.train_id < IGNORE_INDEX),
                key=lambda lb: lb.train_id)
TRAIN_CLASSES = tuple(lb.name for lb in _TRAIN)
NUM_CLASSES = len(TRAIN_CLASSES)  # 19
PALETTE = np.array([lb.color for lb in _TRAIN], dtype=np.uint8)  # (19, 3), row = trainId

_ID_TO_TRAIN = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _lb in LABELS:
    if _lb.id >= 0:
        _ID_TO_TRAIN[_lb.id] = _lb.train_id if _lb.train_id >= 0 else IGNORE_INDEX
_TRAIN_TO_ID = np.zeros(256, dtype=np.uint8)  # ignore -> 0 ("unlabeled")
for _lb in _TRAIN:
    _TRAIN_TO_ID[_lb.train_id] = _lb.id


def label_ids_to_train_ids(label_ids):
    """Map a ``*_labelIds`` array (uint8 ids 0..33) to trainIds (0..18, 255 = ignore)."""
    a = np.asarray(label_ids)
    if a.dtype != np.uint8:
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError("label ids must lie in 0..255")
        a = a.astype(np.uint8)
    return _ID_TO_TRAIN[a]


def train_ids_to_label_ids(train_ids):
    """Inverse map (for submitting predictions): trainId -> id, 255 -> 0 (unlabeled)."""
    return _TRAIN_TO_ID[np.asarray(train_ids).astype(np.uint8)]


def colorize(train_ids):
    """``(H, W)`` trainIds -> ``(H, W, 3)`` uint8 RGB with :data:`PALETTE`; ignore is black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = PALETTE
    return lut[np.asarray(train_ids).astype(np.uint8)]


_IMG_SUFFIX = "_leftImg8bit.png"
_LBL_SUFFIX = "_gtFine_labelTrainIds.png"
_ID_SUFFIX = "_gtFine_labelIds.png"


def list_pairs(root, split="train", require_labels=True):
    """Sorted ``[(image_path, label_path | None), ...]`` of ``split``."""
    if split not in ("train", "val", "test"):
        raise UserError(f"unknown Cityscapes split {split!r}; use train, val or test")
    root = Path(root)
    img_dir = root / "leftImg8bit" / split
    if not img_dir.is_dir():
        raise UserError(f"{img_dir} does not exist; expected "
                        f"ROOT/leftImg8bit/{split}/<city>/*{_IMG_SUFFIX}")
    pairs = []
    for city in sorted(p.name for p in img_dir.iterdir() if p.is_dir()):
        for img in sorted((img_dir / city).glob("*" + _IMG_SUFFIX)):
            name = img.name[: -len(_IMG_SUFFIX)]
            lbl = root / "gtFine" / split / city / (name + _LBL_SUFFIX)
            if not lbl.is_file():
                if require_labels:
                    hint = (f"; {lbl.name.replace(_LBL_SUFFIX, _ID_SUFFIX)} exists: create "
                            f"the trainId labels with "
                            f"`python -m common.data.cityscapes --convert {root}`"
                            if lbl.with_name(name + _ID_SUFFIX).is_file() else "")
                    raise UserError(f"missing label {lbl} for image {img}{hint}")
                lbl = None
            pairs.append((img, lbl))
    if not pairs:
        raise UserError(f"no *{_IMG_SUFFIX} images under {img_dir}")
    return pairs


# Modes that hold what the files must hold: 8-bit colour images, 8-bit single-channel labels.
_IMAGE_MODES = ("RGB", "RGBA", "L", "P")
_LABEL_MODES = ("L", "P")


def _decode(path, what, modes):
    """Decode ``path`` fully; a missing, undecodable or truncated file, or one of another
    mode, is a one-line :class:`UserError` naming it."""
    from PIL import UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode not in modes:
                raise UserError(f"{path}: {what} of mode {im.mode}; expected "
                                f"{' or '.join(modes)}")
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image file (cannot decode this {what})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise UserError(f"{path}: cannot read this {what} ({reason})") from None


def read_image(path):
    """``(H, W, 3)`` uint8 RGB pixels of a Cityscapes image (UserError if it is unreadable)."""
    return np.asarray(_decode(path, "image", _IMAGE_MODES).convert("RGB"))


def _read_label(path):
    return np.asarray(_decode(path, "label image", _LABEL_MODES)).astype(np.uint8, copy=False)


class Cityscapes:
    """Image/label pairs of one split.

    ``__getitem__(i, rng)`` returns ``(image uint8 (3, H, W), label uint8 (H, W))``
    (trainIds, 255 = ignore; with ``require_labels=False`` and no label file, the
    label is all 255). ``transform(image HWC, label HW, rng) -> (image, label)``
    is an optional joint augmentation hook, e.g. :func:`random_scale_crop_flip`.
    """

    def __init__(self, root, split="train", transform=None, require_labels=True):
        self.root = Path(root)
        self.split = split
        self.pairs = list_pairs(root, split, require_labels)
        self.transform = transform

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i, rng=None):
        img_path, lbl_path = self.pairs[i]
        img = read_image(img_path)
        if lbl_path is None:
            lbl = np.full(img.shape[:2], IGNORE_INDEX, np.uint8)
        else:
            lbl = _read_label(lbl_path)
            if lbl.shape != img.shape[:2]:
                raise UserError(f"{lbl_path}: label of {lbl.shape[1]}x{lbl.shape[0]} pixels, "
                                f"but its image {img_path.name} has "
                                f"{img.shape[1]}x{img.shape[0]}")
        if self.transform is not None:
            img, lbl = self.transform(img, lbl, rng)
        return np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)), np.asarray(lbl, np.uint8)


def random_scale_crop_flip(crop_size, scale_range=(0.5, 2.0), flip=True, fill=0):
    """Joint transform: random rescale (bilinear image, nearest label), pad to at
    least ``crop_size`` (image with ``fill``, label with 255), random crop, random
    horizontal flip. ``crop_size`` is an int or (h, w)."""
    ch, cw = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
    lo, hi = scale_range

    def t(img, lbl, rng):
        h, w = lbl.shape
        s = rng.uniform(lo, hi)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        if (nh, nw) != (h, w):
            img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
            lbl = np.asarray(Image.fromarray(lbl).resize((nw, nh), Image.NEAREST))
        ph, pw = max(ch - nh, 0), max(cw - nw, 0)
        if ph or pw:
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)), constant_values=fill)
            lbl = np.pad(lbl, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
        top = int(rng.integers(0, lbl.shape[0] - ch + 1))
        left = int(rng.integers(0, lbl.shape[1] - cw + 1))
        img, lbl = img[top:top + ch, left:left + cw], lbl[top:top + ch, left:left + cw]
        if flip and rng.random() < 0.5:
            img, lbl = img[:, ::-1], lbl[:, ::-1]
        return np.ascontiguousarray(img), np.ascontiguousarray(lbl)
    return t


def convert_label_ids(root, splits=("train", "val", "test"), overwrite=False, log=None):
    """Write ``*_gtFine_labelTrainIds.png`` beside every ``*_gtFine_labelIds.png``
    under ``ROOT/gtFine/<split>/``. Returns the number of files written."""
    root = Path(root)
    gt = root / "gtFine"
    if not gt.is_dir():
        raise UserError(f"{gt} does not exist; expected "
                        f"ROOT/gtFine/<split>/<city>/*{_ID_SUFFIX}")
    written = found = 0
    for split in splits:
        for src in sorted((gt / split).glob("*/*" + _ID_SUFFIX)):
            found += 1
            dst = src.with_name(src.name[: -len(_ID_SUFFIX)] + _LBL_SUFFIX)
            if dst.exists() and not overwrite:
                continue
            ids = _read_label(src)
            with atomic_path(dst) as tmp:
                Image.fromarray(label_ids_to_train_ids(ids)).save(tmp, format="PNG")
            written += 1
    if found == 0:
        raise UserError(f"no *{_ID_SUFFIX} files under {gt}/{{{','.join(splits)}}}/<city>/")
    if log:
        log(f"wrote {written} *{_LBL_SUFFIX} files ({found - written} already present)")
    return written


def main(argv=None):
    from common.cli import Parser

    ap = Parser(prog="python -m common.data.cityscapes", description=__doc__.split("\n")[0])
    ap.add_argument("--convert", metavar="ROOT", required=True,
                    help="create *_gtFine_labelTrainIds.png from *_gtFine_labelIds.png under "
                         "ROOT/gtFine")
    ap.add_argument("--splits", nargs="+", default=["train", "val", "test"],
                    choices=["train", "val", "test"])
    ap.add_argument("--overwrite", action="store_true", help="rewrite existing trainId files")
    args = ap.parse_args(argv)
    convert_label_ids(args.convert, args.splits, args.overwrite, log=print)
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
