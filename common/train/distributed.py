"""Data-parallel training over MPI + NCCL, or a no-op single process.

Launch ``mpirun -n <gpus> python train.py --context cudnn ...``. Each process
then builds the same graph, calls :func:`init_distributed`, trains on its
:meth:`Distributed.shard` of the data and averages gradients with
:meth:`Distributed.all_reduce_grads` before ``solver.update()``.

nnabla's multi-process communicator exists only in the CUDA extension (which
detects NCCL2 and OpenMPI at run time); there is no CPU implementation. Outside
mpirun, or with ``enabled=False``, the returned object has ``size == 1`` and
every collective is a no-op, so train scripts need no special cases.
"""
import os

import numpy as np

from common.errors import UserError

# (size, rank, local rank) variables set by the common MPI launchers.
_LAUNCHER_ENV = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),  # Open MPI
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"),  # MPICH / Intel MPI (Hydra)
    ("PMIX_SIZE", "PMIX_RANK", "PMIX_LOCAL_RANK"),
)


def launcher_world():
    """``(size, rank, local_rank)`` from an MPI launcher's environment, or None."""
    for size_var, rank_var, local_var in _LAUNCHER_ENV:
        if size_var in os.environ:
            try:
                size = int(os.environ[size_var])
                rank = int(os.environ.get(rank_var, 0))
                local = int(os.environ.get(local_var, rank))
            except ValueError:
                continue
            return size, rank, local
    return None


def _is_gpu(ctx):
    return any(not b.startswith("cpu") for b in ctx.backend)


def _make_communicator(ctx):
    """nnabla's MPI/NCCL communicator, initialised (seam for tests)."""
    import nnabla.communicators as C

    comm = C.MultiProcessDataParallelCommunicator(ctx)
    comm.init()
    return comm


def shard_indices(indices, rank, size, pad=True):
    """Rank ``rank``'s part of ``indices`` when split over ``size`` processes.

    Strided (``indices[rank::size]``) so a shuffled order stays shuffled within
    each shard. With ``pad`` the list is first extended by wrapping around to a
    multiple of ``size``, so every rank gets the same count and steps in lock
    step (unequal counts would deadlock the all-reduce). Returns the input's
    type: list in, list out; array in, array out.
    """
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"bad shard rank {rank} of size {size}")
    arr = np.asarray(indices)
    n = len(arr)
    if pad and n and n % size:
        reps = -(-(size - n % size) // n)  # enough copies even when n < size
        arr = np.concatenate([arr, np.tile(arr, reps)[:size - n % size]])
    part = arr[rank::size]
    return part.tolist() if isinstance(indices, (list, tuple, range)) else part


class Distributed:
    """Process-group handle: ``rank``, ``size``, ``local_rank``, ``is_main``, ``ctx``."""

    def __init__(self, ctx, comm=None):
        self.comm = comm
        self.ctx = ctx
        if comm is None:
            self.rank, self.size, self.local_rank = 0, 1, 0
        else:
            self.rank, self.size, self.local_rank = comm.rank, comm.size, comm.local_rank

    @property
    def is_main(self):
        """True on the process that writes checkpoints, logs and reports."""
        return self.rank == 0

    @property
    def enabled(self):
        return self.comm is not None and self.size > 1

    def all_reduce_grads(self, params, division=True):
        """Sum (``division=True``: average) gradients across processes, in place.

        ``params``: dict of name -> Variable (``nn.get_parameters()``,
        ``solver.get_parameters()``), or a list of Variables or NdArrays.
        """
        if not self.enabled:
            return
        items = params.values() if isinstance(params, dict) else params
        grads = [p.grad if hasattr(p, "grad") else p for p in items]
        if grads:
            self.comm.all_reduce(grads, division=division, inplace=False)

    def all_reduce_value(self, value, average=True):
        """Reduce a float or numpy array over processes (e.g. validation loss)."""
        if not self.enabled:
            return value
        import nnabla as nn

        arr = nn.NdArray.from_numpy_array(np.asarray(value, dtype=np.float32))
        self.comm.all_reduce([arr], division=average, inplace=False)
        out = arr.data
        return float(out) if np.ndim(value) == 0 else out

    def barrier(self):
        if self.enabled:
            self.comm.barrier()

    def shard(self, indices, pad=True):
        """This process's part of ``indices``; see :func:`shard_indices`."""
        return shard_indices(indices, self.rank, self.size, pad=pad)

    def __repr__(self):
        return f"Distributed(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"


def init_distributed(ctx, enabled=None):
    """Join the MPI process group if there is one; return a :class:`Distributed`.

    ``enabled``: None = use MPI when launched by mpirun with more than one
    process; False = always single process; True = require the communicator.
    On GPU each process's device id becomes ``ctx.device_id + local_rank`` and
    that context is made nnabla's default. Multi-process on cpu is refused: the
    processes could not exchange gradients and would overwrite each other's
    outputs.
    """
    import nnabla as nn

    world = launcher_world()
    if enabled is False or (enabled is None and (world is None or world[0] <= 1)):
        return Distributed(ctx)
    if not _is_gpu(ctx):
        raise UserError("multi-process training needs --context cudnn: nnabla has no "
                        "CPU communicator (run without mpirun to train on cpu)")
    try:
        comm = _make_communicator(ctx)
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise UserError("cannot start nnabla's multi-process communicator; it needs the "
                        "nnabla-ext-cuda package with OpenMPI and NCCL2 installed on the "
                        f"system and an mpirun launch ({text})") from None
    device = int(ctx.device_id or 0) + int(comm.local_rank)
    ctx = nn.Context(backend=list(ctx.backend), array_class=ctx.array_class,
                     device_id=str(device))
    nn.set_default_context(ctx)
    return Distributed(ctx, comm)
