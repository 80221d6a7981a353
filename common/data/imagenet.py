"""Class-folder image datasets: ImageNet (ILSVRC-2012) and any user image set.

``ImageFolder(root)`` treats every (non-hidden) sub-directory of ``root`` as one
class; class names are sorted and numbered 0..K-1; every file below a class
directory (recursively) whose extension is in ``extensions`` is a sample.
Images are decoded with PIL and converted to RGB.

ImageNet uses the same layout, one folder per WordNet id::

    ROOT/train/n01440764/n01440764_10026.JPEG ...
    ROOT/val/n01440764/ILSVRC2012_val_00000293.JPEG ...

The official validation archive is flat (``val/*.JPEG``); it must be sorted
into class folders first (:func:`imagenet` says so when it finds a flat
``val/``). ``imagenet(root, 'val')`` numbers classes with the *train* class list
when ``ROOT/train`` exists, so labels agree between the splits.

Transform hook
--------------
``transform(img, rng) -> img`` receives the RGB ``PIL.Image`` and the
per-sample ``numpy.random.Generator`` (``None`` when indexed without one); it
may return a PIL image or an ``HWC`` array. The dataset then returns
``(image uint8, label int)`` with the image in ``CHW`` order (NNabla's layout)
or ``HWC`` when ``channels_first=False``. Batching needs equally sized images,
so give a resize/crop transform (e.g. :func:`standard_transform`).
"""
import os
from pathlib import Path

import numpy as np
from PIL import Image

from common.errors import ENVIRONMENT_ERRNOS, UserError

__all__ = ["IMG_EXTENSIONS", "ImageFolder", "ImageTooSmall", "imagenet", "find_classes",
           "load_rgb", "resize_shorter", "center_crop", "random_crop", "random_hflip", "to_array",
           "compose_transforms", "standard_transform"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")


class ImageTooSmall(UserError):
    """A crop larger than the image; :class:`ImageFolder` adds the file's name."""


def load_rgb(path):
    """Decode an image file with PIL and convert it to RGB; a file PIL cannot decode
    (damaged, truncated, not an image) is one :class:`UserError` naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as exc:
        if exc.errno in ENVIRONMENT_ERRNOS:
            raise
        raise UserError(f"{path}: cannot decode image ({exc})") from None
    except Exception as exc:  # PIL's decoders raise SyntaxError, ValueError, struct.error, ...
        raise UserError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None


def find_classes(root):
    """Sorted class-directory names of ``root`` and the name -> index map."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise UserError(f"{root} has no class sub-directories; expected ROOT/<class>/<image files>")
    return classes, {c: i for i, c in enumerate(classes)}


def _has_ext(name, extensions):
    return name.lower().endswith(extensions)


class ImageFolder:
    """A labelled image set in the class-folder layout (see module docstring).

    Parameters
    ----------
    root : directory with one sub-directory per class
    transform : optional ``(PIL.Image, rng) -> PIL.Image | ndarray``
    extensions : accepted (case-insensitive) file suffixes
    class_to_idx : optional fixed name -> index map (e.g. from the train split);
        class folders not in it are an error
    channels_first : return ``CHW`` (default) or ``HWC`` images
    allow_empty : accept class folders without images (default: error)
    """

    def __init__(self, root, transform=None, extensions=IMG_EXTENSIONS, class_to_idx=None,
                 channels_first=True, allow_empty=False):
        self.root = Path(root)
        found, found_map = find_classes(self.root)
        if class_to_idx is None:
            self.classes, self.class_to_idx = found, found_map
        else:
            unknown = sorted(set(found) - set(class_to_idx))
            if unknown:
                raise UserError(f"{self.root}: class folders not in the class list: {unknown[:5]}")
            self.class_to_idx = dict(class_to_idx)
            self.classes = sorted(self.class_to_idx, key=self.class_to_idx.get)
        self.extensions = tuple(e.lower() for e in extensions)
        self.transform = transform
        self.channels_first = channels_first
        self.samples = []
        empty = []
        for name in found:
            files = []
            for dirpath, dirnames, filenames in os.walk(self.root / name, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                files += [os.path.join(dirpath, f) for f in sorted(filenames)
                          if not f.startswith(".") and _has_ext(f, self.extensions)]
            if not files:
                empty.append(name)
            self.samples += [(f, self.class_to_idx[name]) for f in files]
        if empty and not allow_empty:
            others = f" (and {len(empty) - 1} more class folders)" if len(empty) > 1 else ""
            raise UserError(f"{self.root / empty[0]}: class folder without images (none with "
                            f"extensions {', '.join(self.extensions)}){others}")
        if not self.samples:
            raise UserError(f"{self.root}: no images with extensions {self.extensions}")
        self.targets = np.array([s[1] for s in self.samples], dtype=np.int64)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i, rng=None):
        path, label = self.samples[i]
        img = load_rgb(path)
        if self.transform is not None:
            try:
                img = self.transform(img, rng)
            except ImageTooSmall as exc:
                raise UserError(f"{path}: {exc}") from None
        arr = np.asarray(img, dtype=np.uint8)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"transform returned shape {arr.shape}; expected HWC with 3 channels")
        if self.channels_first:
            arr = np.ascontiguousarray(arr.transpose(2, 0, 1))
        return arr, label


def imagenet(root, split="train", transform=None, **kwargs):
    """ImageNet-style ``ROOT/{train,val}/<wnid>/*`` as an :class:`ImageFolder`."""
    if split not in ("train", "val"):
        raise UserError(f"unknown ImageNet split {split!r}; use 'train' or 'val'")
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise UserError(f"{split_dir} does not exist; expected ROOT/{split}/<wnid>/<images>")
    subdirs = [e for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")]
    if not subdirs and any(_has_ext(e.name, IMG_EXTENSIONS) for e in os.scandir(split_dir)):
        raise UserError(f"{split_dir} holds images directly; sort them into one folder per class "
                        "(wnid), as for the train split")
    if split == "val" and "class_to_idx" not in kwargs and (root / "train").is_dir():
        kwargs["class_to_idx"] = find_classes(root / "train")[1]
    return ImageFolder(split_dir, transform=transform, **kwargs)


# ---- simple transforms: (PIL.Image, rng) -> PIL.Image --------------------------------

def resize_shorter(size, resample=Image.BILINEAR):
    """Resize so that the shorter side is ``size`` pixels (aspect kept)."""
    def t(img, rng=None):
        w, h = img.size
        s = size / min(w, h)
        return img.resize((max(1, round(w * s)), max(1, round(h * s))), resample)
    return t


def _size2(size):
    return (size, size) if isinstance(size, int) else tuple(size)


def center_crop(size):
    """Central ``size`` (int or (h, w)) crop."""
    ch, cw = _size2(size)

    def t(img, rng=None):
        w, h = img.size
        if w < cw or h < ch:
            raise ImageTooSmall(f"image {w}x{h} smaller than the crop {cw}x{ch}")
        left, top = (w - cw) // 2, (h - ch) // 2
        return img.crop((left, top, left + cw, top + ch))
    return t


def random_crop(size):
    """Uniformly placed ``size`` crop (needs the generator)."""
    ch, cw = _size2(size)

    def t(img, rng):
        w, h = img.size
        if w < cw or h < ch:
            raise ImageTooSmall(f"image {w}x{h} smaller than the crop {cw}x{ch}")
        left = int(rng.integers(0, w - cw + 1))
        top = int(rng.integers(0, h - ch + 1))
        return img.crop((left, top, left + cw, top + ch))
    return t


def random_hflip(p=0.5):
    def t(img, rng):
        return img.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < p else img
    return t


def to_array(img, rng=None):
    return np.asarray(img, dtype=np.uint8)


def compose_transforms(*ts):
    def t(img, rng=None):
        for f in ts:
            img = f(img, rng)
        return img
    return t


def standard_transform(train, size=224, resize=256):
    """A simple ImageNet recipe: train = shorter side ``resize``, random ``size``
    crop, horizontal flip; eval = shorter side ``resize``, centre ``size`` crop.
    (Papers needing scale augmentation such as random-resized crops supply their
    own transform.)"""
    if train:
        return compose_transforms(resize_shorter(resize), random_crop(size), random_hflip())
    return compose_transforms(resize_shorter(resize), center_crop(size))
