"""Datasets for data cleansing, as in-memory arrays with train / validation / test splits.

The validation split defines the loss whose change the influence predicts; the
test split is only used to measure the accuracy after removal and retraining.

* ``mnist5k`` (default): the bundled real MNIST subset, 500 images per class;
  stratified split 350 / 50 / 100 per class.
* ``mnist``: the IDX files (``--root``); validation = the last 10 % of the
  training files' images, test = t10k.
* ``cifar10``: the python pickles; validation = the last 5,000 training images.
* ``stl10``: the official binary files (``stl10_binary/{train,test}_{X,y}.bin``, read by
  ``common.data.stl10``), 96x96 colour; validation = 1,000 of the 5,000 labelled training
  images chosen at random (seeded), as the reference's ``create_stl10_csv.py`` splits them;
  test = the 8,000 test images.
* ``folder``: a user's class-folder image set (``DIR/<class>/<image>``); images are
  resized to ``--image-size`` and split per class 80 / 10 / 10 (seeded).

Images are float32 NCHW scaled to [-1, 1]; ``paths`` holds the source file (or a
``dataset:index`` name) of every training image so scores can point at them.
"""
import dataclasses
from dataclasses import dataclass, field

import numpy as np

from common.errors import UserError

DATASETS = ("mnist5k", "mnist", "cifar10", "stl10", "folder")


@dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    paths: list = field(default_factory=list)       # one per training image
    class_names: list = field(default_factory=list)

    @property
    def image_shape(self):
        return tuple(self.x_train.shape[1:])


def _scale(images):
    """uint8 (N, H, W) or (N, C, H, W) -> float32 NCHW in [-1, 1]."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[:, None]
    return x * (2.0 / 255.0) - 1.0


def _per_class_split(labels, fractions, seed, min_each=0):
    """Index arrays per split, the same fraction of every class (seeded); with
    ``min_each``, every split after the first gets at least that many images of each
    class (taken from the first), so tiny classes still reach validation and test."""
    rng = np.random.default_rng(seed)
    parts = [[] for _ in fractions]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        bounds = np.round(np.cumsum(fractions) * len(idx)).astype(int)
        if min_each:
            sizes = np.diff(bounds, prepend=0)
            short = np.maximum(min_each - sizes[1:], 0)
            sizes[1:] += short
            sizes[0] -= short.sum()
            bounds = np.cumsum(sizes)
        start = 0
        for k, end in enumerate(bounds):
            parts[k].append(idx[start:end])
            start = end
    return [np.sort(np.concatenate(p)) for p in parts]


def mnist5k(seed=0):
    from common.data.mnist import load_mnist_5k
    images, labels = load_mnist_5k()
    tr, va, te = _per_class_split(labels, (0.7, 0.1, 0.2), seed)
    x = _scale(images)
    return Splits(x[tr], labels[tr], x[va], labels[va], x[te], labels[te], 10,
                  [f"mnist5k:{i}" for i in tr], [str(c) for c in range(10)])


def mnist(root):
    from common.data.mnist import load_mnist
    xtr, ytr = load_mnist(root, "train")
    xte, yte = load_mnist(root, "test")
    n_val = len(ytr) // 10
    x = _scale(xtr)
    return Splits(x[:-n_val], ytr[:-n_val], x[-n_val:], ytr[-n_val:], _scale(xte), yte, 10,
                  [f"mnist-train:{i}" for i in range(len(ytr) - n_val)],
                  [str(c) for c in range(10)])


def cifar10(root):
    from common.data.cifar10 import CIFAR10_CLASSES, load_cifar10
    xtr, ytr = load_cifar10(root, "train")
    xte, yte = load_cifar10(root, "test")
    n_val = min(5000, len(ytr) // 10)
    x = _scale(xtr)
    return Splits(x[:-n_val], ytr[:-n_val], x[-n_val:], ytr[-n_val:], _scale(xte), yte, 10,
                  [f"cifar10-train:{i}" for i in range(len(ytr) - n_val)],
                  list(CIFAR10_CLASSES))


def stl10(root, seed=0):
    from common.data.stl10 import label_names, load_stl10
    xtr, ytr = load_stl10(root, "train")
    xte, yte = load_stl10(root, "test")
    n_val = min(1000, len(ytr) // 5)
    order = np.random.default_rng(seed).permutation(len(ytr))
    tr, va = np.sort(order[n_val:]), np.sort(order[:n_val])
    x = _scale(xtr)
    return Splits(x[tr], ytr[tr], x[va], ytr[va], _scale(xte), yte, 10,
                  [f"stl10-train:{i}" for i in tr], label_names(root))


def folder_images(root, image_size, min_per_class, why):
    """(uint8 images NCHW, labels, paths, class names) of every image of the class folders
    under ``root``, resized to ``image_size`` squares (RGB). Fewer than two classes, or a
    class with fewer than ``min_per_class`` images (``why`` says what they are needed for),
    is one :class:`UserError`; so is an image that does not decode (naming the file)."""
    from PIL import Image

    from common.data.imagenet import ImageFolder, load_rgb
    try:
        ds = ImageFolder(root, channels_first=True)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"{root}: {exc}") from None
    if len(ds.classes) < 2:
        raise UserError(f"{root}: need at least two class folders, found {len(ds.classes)}")
    images = [np.asarray(load_rgb(path).resize((image_size, image_size), Image.BILINEAR),
                         np.uint8).transpose(2, 0, 1) for path, _ in ds.samples]
    labels = np.asarray([label for _, label in ds.samples], np.int64)
    counts = np.bincount(labels, minlength=len(ds.classes))
    if counts.min() < min_per_class:
        raise UserError(f"{root}: every class needs at least {min_per_class} images ({why}); "
                        f"{ds.classes[int(np.argmin(counts))]!r} has {counts.min()}")
    return np.stack(images), labels, [str(path) for path, _ in ds.samples], list(ds.classes)


def folder(root, image_size=32, seed=0):
    """A class-folder image set, resized to ``image_size`` squares (RGB)."""
    images, labels, paths, classes = folder_images(root, image_size, 3, "train/val/test")
    tr, va, te = _per_class_split(labels, (0.8, 0.1, 0.1), seed, min_each=1)
    x = _scale(images)
    return Splits(x[tr], labels[tr], x[va], labels[va], x[te], labels[te], len(classes),
                  [paths[i] for i in tr], classes)


def load(name, data_dir=None, seed=0, image_size=32):
    if name == "mnist5k":
        return mnist5k(seed)
    if name in ("mnist", "cifar10", "stl10", "folder") and data_dir is None:
        raise UserError(f"dataset {name} needs --root (its folder)")
    if name == "mnist":
        return mnist(data_dir)
    if name == "cifar10":
        return cifar10(data_dir)
    if name == "stl10":
        return stl10(data_dir, seed)
    if name == "folder":
        return folder(data_dir, image_size, seed)
    raise UserError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}")


def stratified_subset(splits, n, seed=0):
    """``splits`` with a class-stratified random subset of ``n`` training samples (all of
    them when ``n`` is None or not smaller). The mnist5k training split is sorted by class,
    so its first ``n`` samples are not a usable subset."""
    if n is None or n >= len(splits.y_train):
        return splits
    rng = np.random.default_rng(seed)
    classes = np.unique(splits.y_train)
    per = np.full(len(classes), n // len(classes))
    per[: n % len(classes)] += 1
    idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(splits.y_train == c), k, replace=False)
                                  for c, k in zip(classes, per)]))
    return dataclasses.replace(splits, x_train=splits.x_train[idx], y_train=splits.y_train[idx],
                               paths=[splits.paths[i] for i in idx])


def flip_labels(labels, fraction, n_classes, seed=0):
    """Copy of ``labels`` with ``fraction`` of them (chosen at random) changed to another,
    random class; returns (noisy labels, sorted indices of the flipped samples)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).copy()
    flipped = np.sort(rng.choice(len(labels), int(round(fraction * len(labels))), replace=False))
    shift = rng.integers(1, n_classes, size=len(flipped))
    labels[flipped] = (labels[flipped] + shift) % n_classes
    return labels, flipped


def augment(images, seeds, shift=0, flip=False):
    """Per-sample augmentation drawn from each sample's recorded seed: random shift
    (zero padding ``shift`` pixels, random crop) and horizontal flip. Deterministic in
    the seeds, so a traced step can be replayed exactly."""
    if not shift and not flip:
        return images
    out = np.empty_like(images)
    h, w = images.shape[2:]
    for k, (img, seed) in enumerate(zip(images, seeds)):
        rng = np.random.default_rng(int(seed))
        if shift:
            padded = np.pad(img, ((0, 0), (shift, shift), (shift, shift)))
            top, left = rng.integers(0, 2 * shift + 1, size=2)
            img = padded[:, top:top + h, left:left + w]
        if flip and rng.random() < 0.5:
            img = img[:, :, ::-1]
        out[k] = img
    return out
