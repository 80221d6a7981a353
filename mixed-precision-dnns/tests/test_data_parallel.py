"""Data-parallel wiring of train.py, in-process through its real main() as rank 0 and rank 1
of a faked two-process MPI world (common.dev.testing.fake_world): every process trains on its
own half of each batch, gradients are all-reduced at every step, validation is shared, and
only rank 0 writes."""
import nnabla as nn
import pytest

from common.data.loader import BatchLoader
from common.dev.testing import fake_world, files_under
from mpdnn import training

# 64 samples, batch 16: 4 steps of 8 samples per process
TINY = ["--train-samples", "64", "--val-samples", "20", "--set", "batch_size=16",
        "--set", "epochs=1", "--set", "lr_milestones=[1]", "--loader-threads", "0"]
STEPS = 4


@pytest.fixture
def world(monkeypatch):
    """Train as one rank of two; returns (communicator, loaders built, trained parameters)."""
    monkeypatch.setenv("NNABLA_RESEARCH_NO_PROGRESS", "1")
    context = nn.get_current_context()
    loaders = []

    class RecordingLoader(BatchLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            loaders.append(self)

    monkeypatch.setattr(training, "BatchLoader", RecordingLoader)

    def run(rank, out):
        loaders.clear()
        comm = fake_world(monkeypatch, size=2, rank=rank)
        assert training.main(["--output", str(out), *TINY]) == 0
        return comm, list(loaders)

    yield run
    nn.set_default_context(context)
    nn.clear_parameters()


def _grad_reductions(comm):
    """The averaging all-reduces of the gradients (all trained parameters at once)."""
    calls = [c for c in comm.calls if c[0] == "all_reduce" and c[2]]
    assert all(n == 139 for _, n, _ in calls)   # every trained array of the U3 ResNet-20
    return calls


def test_rank0_trains_its_shard_all_reduces_every_step_and_writes(world, tmp_path):
    out = tmp_path / "run"
    comm, loaders = world(0, out)
    assert [(ld.rank, ld.world_size, ld.batch_size) for ld in loaders] == [(0, 2, 8)]
    assert len(_grad_reductions(comm)) == STEPS
    # per step one reduction of the step statistics and one of the Ctrl-C flag (every
    # process stops at the same step), then one of the validation counts
    assert comm.calls.count(("all_reduce", 1, False)) == 2 * STEPS + 1
    written = files_under(out)
    for name in ("config.yaml", "experiment.yaml", "report.md", "summary.json",
                 "checkpoints/ckpt_00000004.npz", "val-error.series.txt"):
        assert name in written, name


def test_rank1_trains_the_other_shard_and_writes_nothing(world, tmp_path):
    _, loaders0 = world(0, tmp_path / "rank0")
    out = tmp_path / "rank1"
    comm1, loaders1 = world(1, out)
    assert [(ld.rank, ld.world_size, ld.batch_size) for ld in loaders1] == [(1, 2, 8)]
    assert len(_grad_reductions(comm1)) == STEPS
    assert comm1.calls.count(("all_reduce", 1, False)) == 2 * STEPS + 1
    assert not out.exists() and files_under(out) == []
    # the two shards split every epoch's samples between them
    mine, theirs = set(loaders1[0].indices(0)), set(loaders0[0].indices(0))
    assert len(mine) == len(theirs) == 32 and not mine & theirs
    assert mine | theirs == set(range(64))
