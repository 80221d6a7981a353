"""Single-process fallback, launcher detection, sharding, and the MPI code path
driven through a fake communicator (no MPI or GPU on CI)."""
import nnabla as nn
import numpy as np
import pytest

import common.train.distributed as dist
from common.context import get_context
from common.errors import UserError
from common.train.distributed import Distributed, init_distributed, launcher_world, shard_indices

LAUNCHER_VARS = [v for triple in dist._LAUNCHER_ENV for v in triple]


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    before = nn.get_current_context()
    yield
    nn.set_default_context(before)


def gpu_ctx(device="0"):
    # Only a descriptor: nothing runs on it in these tests.
    return nn.Context(backend=["cudnn:float", "cuda:float", "cpu:float"],
                      array_class="CudaCachedArray", device_id=device)


class FakeComm:
    def __init__(self, size, rank, local_rank):
        self.size, self.rank, self.local_rank = size, rank, local_rank
        self.calls = []

    def all_reduce(self, data, division=False, inplace=False):
        self.calls.append(("all_reduce", len(data), division))
        for arr in data:  # pretend the other ranks hold the same values
            arr.data = arr.data * (1 if division else self.size)

    def barrier(self):
        self.calls.append(("barrier",))


def test_single_process_fallback_is_identity():
    ctx = get_context("cpu")
    d = init_distributed(ctx)
    assert (d.rank, d.size, d.local_rank, d.is_main, d.enabled) == (0, 1, 0, True, False)
    assert d.ctx is ctx
    x = nn.Variable((3,), need_grad=True)
    x.g = np.array([1.0, 2.0, 3.0])
    d.all_reduce_grads({"x": x})
    d.all_reduce_grads([x])
    d.barrier()
    assert x.g.tolist() == [1.0, 2.0, 3.0]
    assert d.all_reduce_value(2.5) == 2.5
    assert d.shard([4, 5, 6]) == [4, 5, 6]


def test_launcher_env_detection(monkeypatch):
    assert launcher_world() is None
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    assert launcher_world() == (4, 3, 1)
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("PMI_RANK", "1")
    assert launcher_world() == (2, 1, 1)


def test_mpirun_on_cpu_is_refused(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    with pytest.raises(UserError, match="--context cudnn"):
        init_distributed(get_context("cpu"))
    # An explicit opt-out still works, e.g. for debugging one rank.
    assert init_distributed(get_context("cpu"), enabled=False).size == 1
    # mpirun -n 1 is just a single process.
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    assert init_distributed(get_context("cpu")).size == 1


def test_communicator_failure_is_one_line_user_error(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")

    def broken(ctx):
        raise RuntimeError("value error in query\nFailed: Any of [cudnn:float] could not be found")
    monkeypatch.setattr(dist, "_make_communicator", broken)
    with pytest.raises(UserError) as exc:
        init_distributed(gpu_ctx())
    assert "\n" not in str(exc.value) and "NCCL" in str(exc.value)


def test_multi_process_path_with_fake_communicator(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    comm = FakeComm(size=4, rank=3, local_rank=1)
    monkeypatch.setattr(dist, "_make_communicator", lambda ctx: comm)
    d = init_distributed(gpu_ctx(device="2"))
    assert (d.rank, d.size, d.local_rank, d.is_main, d.enabled) == (3, 4, 1, False, True)
    assert d.ctx.device_id == "3"  # first GPU + local rank
    assert nn.get_current_context().device_id == "3"
    a = nn.Variable((2,), need_grad=True)
    b = nn.Variable((1,), need_grad=True)
    a.g, b.g = [1.0, 2.0], [3.0]
    d.all_reduce_grads({"a": a, "b": b}, division=False)
    assert a.g.tolist() == [4.0, 8.0] and b.g.tolist() == [12.0]
    d.all_reduce_grads([a.grad], division=True)
    assert comm.calls == [("all_reduce", 2, False), ("all_reduce", 1, True)]
    assert d.all_reduce_value(1.5, average=False) == 6.0
    d.barrier()
    assert comm.calls[-1] == ("barrier",)
    assert d.shard(list(range(10))) == [3, 7, 1]  # padded to 12 by wrapping


@pytest.mark.parametrize("n", [0, 1, 3, 7, 10, 16, 17])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 8])
def test_shard_math(n, size):
    indices = list(np.random.RandomState(n).permutation(100)[:n])
    padded = [shard_indices(indices, r, size) for r in range(size)]
    plain = [shard_indices(indices, r, size, pad=False) for r in range(size)]
    if n:
        # Equal lengths so every rank runs the same number of steps.
        assert len({len(s) for s in padded}) == 1
        assert len(padded[0]) == -(-n // size)
        assert set().union(*map(set, padded)) == set(indices)
    # Without padding: a partition of the input, order kept within shards.
    assert sorted(sum(plain, [])) == sorted(indices)
    assert max(map(len, plain)) - min(map(len, plain)) <= 1
    for r, part in enumerate(plain):
        assert part == indices[r::size]


def test_shard_keeps_array_type_and_checks_rank():
    arr = np.arange(5)
    out = shard_indices(arr, 1, 2)
    assert isinstance(out, np.ndarray) and out.tolist() == [1, 3, 0]
    assert shard_indices(range(4), 0, 3) == [0, 3]
    with pytest.raises(ValueError):
        shard_indices([1, 2], 2, 2)
    assert Distributed(None).shard(arr).tolist() == arr.tolist()
