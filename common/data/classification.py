"""Image-classification datasets for the training scripts (mixed precision, out-of-core).

* ``cifar10``: the python pickles (``cifar-10-batches-py``); as in the official
  mixed-precision training script the test split serves as validation set, pixels are mapped to
  [-1, 1] and training images are shifted (zero padding 4 + random 32x32 crop)
  and flipped.
* ``imagenet``: class folders ``ROOT/{train,val}/<wnid>/``; shorter side 256,
  random (train) or central (val) 224 crop, flip; per-channel mean/std.
* ``mnist5k``: the bundled real MNIST subset (500 images per class), padded from
  28x28 to 32x32 and repeated over 3 channels so the CIFAR networks (and their
  parameter shapes) run unchanged; 50 images per class are held out for
  validation; shifts but no flips (digits are not mirror-symmetric).
"""
import numpy as np

from common.errors import UserError

DATASETS = ("cifar10", "imagenet", "mnist5k")
NUM_CLASSES = {"cifar10": 10, "imagenet": 1000, "mnist5k": 10}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
MNIST_VAL_PER_CLASS = 50


class ImageArraySet:
    """uint8 images (N, 3, H, W) and labels; samples are float32 in [-1, 1] with optional
    shift (zero-padded random crop) and flip, drawn from the per-sample generator."""

    def __init__(self, images, labels, shift=0, flip=False):
        self.images, self.labels = images, np.asarray(labels, np.int32)
        self.shift, self.flip = shift, flip

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i, rng=None):
        x = self.images[i].astype(np.float32) * (2.0 / 255.0) - 1.0
        if rng is not None and self.shift:
            s = self.shift
            padded = np.pad(x, ((0, 0), (s, s), (s, s)))
            top, left = rng.integers(0, 2 * s + 1, size=2)
            x = padded[:, top:top + x.shape[1], left:left + x.shape[2]]
        if rng is not None and self.flip and rng.random() < 0.5:
            x = x[:, :, ::-1]
        return np.ascontiguousarray(x), np.int32(self.labels[i])


class NormalizedFolder:
    """An :class:`common.data.imagenet.ImageFolder` (uint8 CHW) normalized per channel."""

    def __init__(self, folder):
        self.folder = folder

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, i, rng=None):
        img, label = self.folder.__getitem__(i, rng)
        x = (img.astype(np.float32) - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
        return x, np.int32(label)


def mnist32(split, seed=0):
    """The bundled MNIST 5k subset as 3x32x32 uint8 images, (images, labels)."""
    from common.data.mnist import load_mnist_5k, stratified_split
    images, labels = load_mnist_5k()
    train, val = stratified_split(labels, MNIST_VAL_PER_CLASS, seed=seed)
    idx = train if split == "train" else val
    padded = np.pad(images[idx], ((0, 0), (2, 2), (2, 2)))
    return np.repeat(padded[:, None], 3, axis=1), labels[idx]


def load(name, split, data_dir=None, augment=True):
    """The ``train`` or ``val`` split of dataset ``name`` as a dataset for BatchLoader."""
    train = split == "train"
    if name == "cifar10":
        from common.data.cifar10 import load_cifar10
        images, labels = load_cifar10(data_dir, "train" if train else "test")
        return ImageArraySet(images, labels, shift=4 if train and augment else 0,
                             flip=train and augment)
    if name == "mnist5k":
        images, labels = mnist32(split)
        return ImageArraySet(images, labels, shift=2 if train and augment else 0)
    if name == "imagenet":
        from common.data.imagenet import imagenet, standard_transform
        if data_dir is None:
            raise UserError("ImageNet needs --root ROOT holding train/<wnid>/ and "
                            "val/<wnid>/ image folders")
        return NormalizedFolder(imagenet(data_dir, split, transform=standard_transform(
            train and augment), channels_first=True))
    raise UserError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}")

