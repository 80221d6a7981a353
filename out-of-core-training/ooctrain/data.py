"""Training and validation sets for ``train.py`` and the benchmark.

Real data comes through :mod:`common.data.classification` (ImageNet class folders,
CIFAR-10 pickles, the bundled MNIST subset). ``synthetic`` images are seeded noise with a
class-dependent mean, so throughput can be measured at any image size without a data set
(and the loss still falls).
"""
import numpy as np

from common.data import classification
from common.errors import UserError

DATA_CHOICES = ("imagenet", "cifar10", "mnist5k", "synthetic")
SYNTHETIC_VAL = 256


class SyntheticImages:
    """``n`` images (3, size, size) float32: N(class mean, 1) noise, image ``i`` of class
    ``i % num_classes``; every image is a function of (seed, i)."""

    def __init__(self, n, size, num_classes, seed=0):
        self.n, self.size, self.num_classes, self.seed = n, size, num_classes, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        label = i % self.num_classes
        rng = np.random.default_rng([self.seed, i])
        mean = (label / max(self.num_classes - 1, 1)) * 2.0 - 1.0
        x = rng.standard_normal((3, self.size, self.size), dtype=np.float32) + mean
        return x, np.int32(label)


def sample_shape(args):
    """(3, H, W) of one training image: 224 crops for ImageNet, 32x32 for CIFAR-10 and the
    padded MNIST subset, ``--image-size`` for synthetic images."""
    side = {"imagenet": 224, "cifar10": 32, "mnist5k": 32}.get(args.dataset, args.image_size)
    return (3, side, side)


def training_sets(args):
    """``(train set, validation set, number of classes)`` for ``args.dataset`` (sizes were
    range-checked by the command line)."""
    if args.dataset == "synthetic":
        return (SyntheticImages(args.synthetic_samples, args.image_size, args.num_classes, 0),
                SyntheticImages(SYNTHETIC_VAL, args.image_size, args.num_classes, 1),
                args.num_classes)
    if args.dataset not in DATA_CHOICES:
        raise UserError(f"unknown --dataset {args.dataset!r}; use one of "
                        f"{', '.join(DATA_CHOICES)}")
    train = classification.load(args.dataset, "train", args.root)
    val = classification.load(args.dataset, "val", args.root)
    if args.dataset == "imagenet":  # any class-folder set: the classes are the folders
        return train, val, len(train.folder.classes)
    return train, val, classification.NUM_CLASSES[args.dataset]
