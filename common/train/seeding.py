"""One call that seeds every random source a training script touches.

nnabla has two generators: ``nnabla.random.prng`` (a numpy RandomState used by
parameter initializers) and the C++ generator behind random functions such as
``F.rand``/``F.dropout`` when they get ``seed=-1``. ``nn.seed`` resets both.
The C++ generator's state cannot be read back, so checkpoints cannot restore
it; scripts that need bit-exact resume should draw their noise from numpy
RandomState objects (which :mod:`common.train.checkpoint` does save).
"""
import random

import numpy as np


def seed_everything(seed):
    """Seed python ``random``, numpy's global RNG and nnabla; return a fresh
    ``np.random.RandomState(seed)`` for the caller's own draws."""
    import nnabla as nn

    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    nn.seed(seed)  # replaces nnabla.random.prng and reseeds the C++ generator
    return np.random.RandomState(seed)
