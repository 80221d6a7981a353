"""Data cleansing with SGD-influence and its storage-efficient final-parameter variant.

Main objects: :class:`Run` (a training run folder written by ``train.py``, read back with its
data, labels and schedule; ``run.influence(method)`` scores it), :func:`compute_influence` (a
score per training sample, negative = harmful), :func:`train_run` (train a run from an option
dict), :func:`load_data` (the data sets by name, :func:`datacleansing.data.load`). They are
imported on first use, so ``import datacleansing`` stays cheap.
"""
from common.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "Run": "cli", "train_run": "cli",
    "compute_influence": "influence",
    "load_data": "data:load",
})
