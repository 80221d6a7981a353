"""The network of an experiment, its parameters on disk, and its validation error.

Shared by training (:mod:`mpdnn.training`) and evaluation (:mod:`mpdnn.report`,
:mod:`mpdnn.evaluation`).
"""
from pathlib import Path

import numpy as np

from common.data.loader import BatchLoader
from common.errors import UserError
from common.terminal import progress

# Parameters nnabla never trains: quantized copies, activation counts, BN statistics.
NOT_TRAINED = ("/W_q", "/b_q", "/Asize", "/bn/mean", "/bn/var")


def build_network(exp, x, num_classes, test, fused):
    """Logits of experiment ``exp``'s network for input ``x`` (parameters in the current
    scope)."""
    if exp.model == "resnet20":
        from mpdnn.resnet_cifar import resnet_cifar
        return resnet_cifar(x, num_classes, exp, test=test, fused=fused)
    from mpdnn.imagenet_models import MODELS
    return MODELS[exp.model](x, num_classes, exp, test=test, fused=fused)


def sample_shape(dataset):
    """Shape of one input sample (drawn with a generator: random crops need one)."""
    return tuple(dataset.__getitem__(0, np.random.default_rng(0))[0].shape)


def read_parameters(path):
    """Parameters (name -> array) and a description of where they came from, read from a
    run directory (its best checkpoint, else its newest), a checkpoint ``.npz`` or an nnabla
    ``.h5``. Also returns the checkpoint (None for an ``.h5``) and the file read."""
    from common.runtime.params_io import read_param_file
    from common.train.checkpoint import CheckpointManager, load_checkpoint

    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        manager = CheckpointManager(folder, clean=False)
        ckpt = manager.load_best() or manager.load_latest()
        if ckpt is None:
            raise UserError(f"{path}: no checkpoint found")
        return dict(ckpt.params), ckpt, Path(ckpt.path)
    if not path.is_file():
        raise UserError(f"{path}: no such file or directory")
    if path.suffix == ".h5":
        return dict(read_param_file(path)[0]), None, path
    ckpt = load_checkpoint(path)
    return dict(ckpt.params), ckpt, path


def register_parameters(params, trainable=True):
    """Make ``params`` (name -> array) nnabla's parameters before a network is built, so that
    the network uses them (and quantizer steps start from the loaded weights' range)."""
    import nnabla as nn

    for name, value in params.items():
        var = nn.Variable.from_numpy_array(np.asarray(value, np.float32))
        var.need_grad = trainable and not name.endswith(NOT_TRAINED)
        nn.parameter.set_parameter(name, var)


class Subset:
    """The samples ``indices`` of ``dataset``, in that order."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.index = np.asarray(indices)

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i, rng=None):
        return self.dataset.__getitem__(int(self.index[i]), rng)


def random_subset(dataset, n, seed=0):
    """The first ``n`` samples of a seeded permutation of ``dataset`` (fixed across runs)."""
    return Subset(dataset, np.random.default_rng(seed).permutation(len(dataset))[:n])


class Evaluator:
    """Validation error of the test-mode network, batch by batch (last batch padded).

    With a data-parallel ``dist`` (:class:`common.train.distributed.Distributed`) every
    process evaluates every ``size``-th sample and the counts are summed over processes."""

    def __init__(self, exp, dataset, num_classes, batch_size, fused, threads=0, dist=None):
        import nnabla as nn

        self.dist = dist
        if dist is not None and dist.size > 1:
            if len(dataset) < dist.size:
                raise UserError(f"{len(dataset)} validation samples cannot be shared by "
                                f"{dist.size} processes")
            dataset = Subset(dataset, np.arange(len(dataset))[dist.rank::dist.size])
        self.batch = min(batch_size, len(dataset))
        self.loader = BatchLoader(dataset, self.batch, shuffle=False, drop_last=False,
                                  num_threads=threads)
        self.image = nn.Variable((self.batch,) + sample_shape(dataset))
        self.logits = build_network(exp, self.image, num_classes, test=True, fused=fused)
        self.logits.persistent = True

    def error(self, desc="validation"):
        wrong = total = 0
        for b in progress(range(len(self.loader)), desc=desc, unit="batch", leave=False):
            images, labels = self.loader.get_batch(0, b)
            n = len(labels)
            if n < self.batch:
                pad = np.zeros((self.batch - n,) + images.shape[1:], images.dtype)
                images = np.concatenate([images, pad])
            self.image.d = images
            self.logits.forward(clear_buffer=True)
            wrong += int(np.sum(np.argmax(self.logits.d[:n], axis=1) != labels))
            total += n
        if self.dist is not None and self.dist.size > 1:
            wrong, total = self.dist.all_reduce_value(np.array([wrong, total], np.float32),
                                                      average=False)
        return float(wrong) / max(float(total), 1.0)
