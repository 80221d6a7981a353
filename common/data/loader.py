"""A small, deterministic minibatch iterator shared by every paper.

``BatchLoader`` walks any *dataset* -- an object with ``__len__`` and
``__getitem__(i, rng)`` (or plain ``__getitem__(i)``) -- and yields stacked
numpy minibatches.

Determinism contract
--------------------
* The sample order of epoch ``e`` is a pure function of ``(seed, e)``: a
  permutation of ``range(len(dataset))`` (or the identity when
  ``shuffle=False``).
* Every sample gets its own ``numpy.random.Generator`` seeded from
  ``(seed, epoch, position-in-epoch)``; the dataset and the augmentation hook
  both draw from it. A batch therefore does not depend on which batches were
  produced before it, so ``set_position(epoch, batch_index)`` resumes training
  in the middle of an epoch and reproduces exactly the batches an
  uninterrupted run would have produced, augmentation included.
* Data-parallel sharding: every rank computes the same global order and takes
  every ``world_size``-th sample starting at ``rank``. All ranks always get
  the same number of batches (needed for collective ops): with
  ``drop_last=True`` the tail that does not fill a batch on every rank is
  dropped; with ``drop_last=False`` the global order is padded by wrapping
  around so it divides evenly, and the last batch may be smaller.

Batches
-------
A sample may be a tuple/list of fields, a dict of fields, or a single array.
The batch has the same structure with each field stacked along a new axis 0
(``numpy.stack``); Python ints/floats become 1-D arrays. Fields must have the
same shape across a batch.

Errors
------
An exception raised while loading a sample (e.g. the :class:`common.errors.UserError` of an
image that cannot be decoded) leaves ``next()`` / ``get_batch()`` as that same exception,
also when ``num_threads > 0`` loads it in a worker thread, and the position does not
advance; an entry script's :func:`common.cli.run_cli` then prints its one line.
"""
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from common.errors import UserError

__all__ = ["BatchLoader", "ArrayDataset", "compose", "sample_rng", "epoch_order", "collate"]


def sample_rng(seed, epoch, position):
    """The per-sample generator used by :class:`BatchLoader` (exposed for tests
    and for code that wants to reproduce one sample)."""
    return np.random.default_rng([int(seed), int(epoch), int(position)])


def epoch_order(n, seed, epoch, shuffle=True):
    """Global sample order of one epoch: a pure function of (n, seed, epoch)."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(n)


def compose(*hooks):
    """Chain augmentation hooks ``(sample, rng) -> sample`` left to right.
    ``None`` entries are skipped."""
    hooks = [h for h in hooks if h is not None]

    def composed(sample, rng):
        for hook in hooks:
            sample = hook(sample, rng)
        return sample

    return composed


def collate(samples):
    """Stack a list of samples field by field (see module docstring)."""
    first = samples[0]
    if isinstance(first, dict):
        return {k: collate([s[k] for s in samples]) for k in first}
    if isinstance(first, (tuple, list)):
        n = len(first)
        if any(len(s) != n for s in samples):
            raise ValueError("samples in one batch have different numbers of fields")
        return tuple(collate([s[j] for s in samples]) for j in range(n))
    try:
        return np.stack([np.asarray(s) for s in samples])
    except ValueError as exc:
        shapes = sorted({np.shape(s) for s in samples})
        raise ValueError(
            f"cannot stack samples of different shapes {shapes}; resize/crop them "
            "in the dataset's transform or use batch_size=1") from exc


def _accepts_rng(getitem):
    """Whether a bound ``__getitem__`` takes a second positional argument."""
    try:
        params = list(inspect.signature(getitem).parameters.values())
    except (TypeError, ValueError):  # builtins such as list.__getitem__
        return False
    positional = [p for p in params
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional)


class ArrayDataset:
    """Indexable view over equally long arrays: sample ``i`` is
    ``tuple(a[i] for a in arrays)`` (a single array gives a 1-tuple)."""

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("ArrayDataset needs at least one array")
        n = len(arrays[0])
        if any(len(a) != n for a in arrays):
            raise ValueError(f"arrays have different lengths: {[len(a) for a in arrays]}")
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, i):
        return tuple(a[i] for a in self.arrays)


class BatchLoader:
    """Seeded, resumable, shardable minibatch iterator.

    Parameters
    ----------
    dataset : object with ``__len__`` and ``__getitem__(i, rng)`` or ``__getitem__(i)``
    batch_size : int, per rank
    shuffle : bool, permute the order each epoch (order = f(seed, epoch))
    seed : int
    drop_last : bool, drop the incomplete last batch (see module docstring)
    augment : callable ``(sample, rng) -> sample`` or a list of them, applied
        after loading with the same per-sample generator
    rank, world_size : int, data-parallel shard of this process
    num_threads : int, load the samples of a batch in a thread pool (useful
        when loading is I/O or subprocess bound, e.g. image decoding or
        ffmpeg); results are identical to ``num_threads=0``
    collate_fn : callable ``list[sample] -> batch``, default :func:`collate`

    Iteration
    ---------
    ``for batch in loader`` yields the remaining batches of the current epoch,
    starting at the current position, then advances to the next epoch.
    ``loader.next()`` returns one batch and wraps around epochs forever, which
    suits iteration-based training loops. ``loader.epoch`` /
    ``loader.batch_index`` always name the *next* batch to be produced;
    ``state_dict()`` / ``load_state_dict()`` save and restore them.
    """

    def __init__(self, dataset, batch_size, shuffle=True, seed=0, drop_last=True,
                 augment=None, rank=0, world_size=1, num_threads=0, collate_fn=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, "
                             f"world_size={world_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        if isinstance(augment, (list, tuple)):
            augment = compose(*augment)
        self.augment = augment
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.num_threads = int(num_threads)
        self.collate_fn = collate_fn or collate
        self._with_rng = _accepts_rng(dataset.__getitem__)
        self._pool = None
        self._pool_lock = threading.Lock()
        self.epoch = 0
        self.batch_index = 0
        if len(self) == 0:  # a data set smaller than one batch: the user's to fix
            per = f" per process ({world_size} processes)" if world_size > 1 else ""
            raise UserError(f"the data set has {len(dataset)} samples, fewer than one batch "
                            f"of {batch_size}{per}; lower the batch size or use more data")

    # -- sizes and order ---------------------------------------------------
    def _samples_per_rank(self):
        n = len(self.dataset)
        if self.drop_last:
            return n // self.world_size
        return -(-n // self.world_size)

    def __len__(self):
        """Number of batches per epoch on this rank (the same on every rank)."""
        per_rank = self._samples_per_rank()
        if self.drop_last:
            return per_rank // self.batch_size
        return -(-per_rank // self.batch_size)

    def rank_positions(self, epoch):
        """Positions (into the epoch's global order) that this rank visits, in order."""
        n = len(self.dataset)
        per_rank = self._samples_per_rank()
        positions = np.arange(per_rank) * self.world_size + self.rank
        if not self.drop_last:
            positions = positions % n  # wrap-around padding
        usable = len(self) * self.batch_size if self.drop_last else per_rank
        return positions[:usable]

    def indices(self, epoch):
        """Dataset indices this rank visits in ``epoch``, in order."""
        order = epoch_order(len(self.dataset), self.seed, epoch, self.shuffle)
        return order[self.rank_positions(epoch)]

    # -- position ------------------------------------------------------------
    def set_position(self, epoch, batch_index=0):
        """Make the next batch be batch ``batch_index`` of ``epoch``."""
        if epoch < 0 or not 0 <= batch_index <= len(self):
            raise ValueError(f"position ({epoch}, {batch_index}) out of range; "
                             f"an epoch has {len(self)} batches")
        self.epoch, self.batch_index = int(epoch), int(batch_index)
        if self.batch_index == len(self):
            self.epoch, self.batch_index = self.epoch + 1, 0

    def set_iteration(self, iteration):
        """Position by a global batch counter (``iteration = epoch * len(self) + batch``)."""
        self.set_position(*divmod(int(iteration), len(self)))

    @property
    def iteration(self):
        return self.epoch * len(self) + self.batch_index

    def state_dict(self):
        return {"epoch": self.epoch, "batch_index": self.batch_index, "seed": self.seed,
                "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state):
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, "
                             f"loader has seed {self.seed}")
        self.set_position(state["epoch"], state["batch_index"])

    # -- loading ---------------------------------------------------------------
    def _load(self, index, epoch, position):
        rng = sample_rng(self.seed, epoch, position)
        index = int(index)
        sample = self.dataset.__getitem__(index, rng) if self._with_rng else self.dataset[index]
        if self.augment is not None:
            sample = self.augment(sample, rng)
        return sample

    def get_batch(self, epoch, batch_index):
        """Batch ``batch_index`` of ``epoch`` without moving the position."""
        if not 0 <= batch_index < len(self):
            raise IndexError(f"batch_index {batch_index} out of range [0, {len(self)})")
        order = epoch_order(len(self.dataset), self.seed, epoch, self.shuffle)
        positions = self.rank_positions(epoch)[batch_index * self.batch_size:
                                               (batch_index + 1) * self.batch_size]
        jobs = [(order[p], epoch, p) for p in positions]
        if self.num_threads > 0 and len(jobs) > 1:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.num_threads)
            samples = list(self._pool.map(lambda job: self._load(*job), jobs))
        else:
            samples = [self._load(*job) for job in jobs]
        return self.collate_fn(samples)

    def next(self):
        """Next batch, wrapping into the following epoch when one ends."""
        batch = self.get_batch(self.epoch, self.batch_index)
        self.set_position(self.epoch, self.batch_index + 1)
        return batch

    __next__ = next

    def __iter__(self):
        epoch = self.epoch
        while self.epoch == epoch:
            yield self.next()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
