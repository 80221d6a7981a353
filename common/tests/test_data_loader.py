import numpy as np
import pytest

from common.data.loader import ArrayDataset, BatchLoader, collate, compose, epoch_order
from common.errors import UserError


class RngDataset:
    """Sample = (index, a random draw from the sample's generator)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i, rng):
        return np.int64(i), rng.random()


def _all_batches(loader):
    return [b for b in loader]


def test_epoch_order_is_function_of_seed_and_epoch():
    a = epoch_order(50, seed=3, epoch=0)
    assert sorted(a) == list(range(50))
    assert np.array_equal(a, epoch_order(50, seed=3, epoch=0))
    assert not np.array_equal(a, epoch_order(50, seed=3, epoch=1))
    assert not np.array_equal(a, epoch_order(50, seed=4, epoch=0))
    assert np.array_equal(epoch_order(7, 0, 5, shuffle=False), np.arange(7))


def test_epoch_covers_dataset_once_and_reshuffles():
    ds = ArrayDataset(np.arange(20), np.arange(20) * 10)
    loader = BatchLoader(ds, batch_size=4, seed=1)
    assert len(loader) == 5
    e0 = _all_batches(loader)
    assert loader.epoch == 1 and loader.batch_index == 0
    xs = np.concatenate([b[0] for b in e0])
    assert sorted(xs) == list(range(20))
    assert all(np.array_equal(b[1], b[0] * 10) for b in e0)  # fields stay aligned
    e1 = _all_batches(loader)
    assert not np.array_equal(xs, np.concatenate([b[0] for b in e1]))


def test_same_seed_same_batches_including_rng_draws():
    a = BatchLoader(RngDataset(30), 5, seed=7)
    b = BatchLoader(RngDataset(30), 5, seed=7)
    c = BatchLoader(RngDataset(30), 5, seed=8)
    ba = [a.next() for _ in range(12)]  # crosses an epoch boundary
    bb = [b.next() for _ in range(12)]
    bc = [c.next() for _ in range(12)]
    for x, y in zip(ba, bb):
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
    assert any(not np.array_equal(x[0], z[0]) for x, z in zip(ba, bc))


def test_resume_mid_epoch_reproduces_the_uninterrupted_run():
    def aug(sample, rng):
        i, r = sample
        return i, r + rng.normal()

    ref = BatchLoader(RngDataset(23), 4, seed=11, augment=aug)
    uninterrupted = [ref.next() for _ in range(9)]  # 5 batches/epoch -> into epoch 1
    state = None
    run = BatchLoader(RngDataset(23), 4, seed=11, augment=aug)
    for _ in range(3):
        run.next()
    state = run.state_dict()
    assert state["epoch"] == 0 and state["batch_index"] == 3

    resumed = BatchLoader(RngDataset(23), 4, seed=11, augment=aug)
    resumed.load_state_dict(state)
    rest = [resumed.next() for _ in range(6)]
    for x, y in zip(uninterrupted[3:], rest):
        assert np.array_equal(x[0], y[0])
        assert np.allclose(x[1], y[1])

    again = BatchLoader(RngDataset(23), 4, seed=11, augment=aug)
    again.set_iteration(7)
    assert (again.epoch, again.batch_index) == (1, 2)
    assert np.array_equal(again.next()[0], uninterrupted[7][0])


def test_resume_rejects_other_seed():
    a = BatchLoader(RngDataset(10), 2, seed=1)
    b = BatchLoader(RngDataset(10), 2, seed=2)
    with pytest.raises(ValueError):
        b.load_state_dict(a.state_dict())


def test_shards_are_disjoint_equal_and_cover():
    n, ws = 26, 3
    shards = [BatchLoader(ArrayDataset(np.arange(n)), 4, seed=5, rank=r, world_size=ws)
              for r in range(ws)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == 2  # 26//3=8 -> 2 batches of 4
    seen = [np.concatenate([b[0] for b in _all_batches(s)]) for s in shards]
    flat = np.concatenate(seen)
    assert len(flat) == len(set(flat.tolist())) == 24
    # the shards partition the first 24 positions of the global order
    order = epoch_order(n, 5, 0)
    assert sorted(flat.tolist()) == sorted(order[:24].tolist())


def test_no_drop_last_pads_by_wrapping_and_keeps_counts_equal():
    n, ws = 10, 3
    shards = [BatchLoader(ArrayDataset(np.arange(n)), 3, seed=0, shuffle=False,
                          drop_last=False, rank=r, world_size=ws) for r in range(ws)]
    batches = [_all_batches(s) for s in shards]
    assert [len(b) for b in batches] == [2, 2, 2]  # ceil(10/3)=4 per rank -> 3 + 1
    got = np.concatenate([np.concatenate([x[0] for x in b]) for b in batches])
    assert set(got.tolist()) == set(range(n))
    assert len(got) == 12  # two samples repeated by wrap-around: the first two of the order
    assert sorted(got.tolist()) == sorted(list(range(n)) + [0, 1])
    assert np.concatenate([x[0] for x in batches[1]]).tolist() == [1, 4, 7, 0]
    assert batches[0][-1][0].shape == (1,)


def test_drop_last_false_single_rank_keeps_tail():
    loader = BatchLoader(ArrayDataset(np.arange(10)), 4, shuffle=False, drop_last=False)
    sizes = [len(b[0]) for b in _all_batches(loader)]
    assert sizes == [4, 4, 2]


def test_plain_getitem_dataset_and_augment_list():
    calls = []

    def add_one(sample, rng):
        calls.append(1)
        return (sample[0] + 1,)

    loader = BatchLoader(ArrayDataset(np.zeros(6)), 3, augment=[add_one, None, add_one])
    (x,) = loader.next()
    assert np.array_equal(x, np.full(3, 2.0)) and len(calls) == 6


def test_threads_give_identical_batches():
    a = BatchLoader(RngDataset(40), 8, seed=2)
    b = BatchLoader(RngDataset(40), 8, seed=2, num_threads=4)
    for _ in range(5):
        x, y = a.next(), b.next()
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
    b.close()


def test_collate_structures_and_shape_error():
    d = collate([{"a": np.zeros(2), "b": 1}, {"a": np.ones(2), "b": 2}])
    assert d["a"].shape == (2, 2) and d["b"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="different shapes"):
        collate([np.zeros(2), np.zeros(3)])


def test_bad_arguments():
    with pytest.raises(UserError, match="fewer than one batch of 4"):
        BatchLoader(ArrayDataset(np.arange(3)), 4)  # no full batch
    with pytest.raises(ValueError):
        BatchLoader(ArrayDataset(np.arange(8)), 2, rank=2, world_size=2)
    with pytest.raises(ValueError):
        ArrayDataset(np.arange(3), np.arange(4))
    loader = BatchLoader(ArrayDataset(np.arange(8)), 2)
    with pytest.raises(ValueError):
        loader.set_position(0, 5)


def test_compose_order():
    f = compose(lambda s, r: s * 2, lambda s, r: s + 1)
    assert f(3, None) == 7


def test_per_sample_draws_differ_across_samples_and_epochs():
    loader = BatchLoader(RngDataset(12), 12, shuffle=False, seed=0)
    e0 = loader.next()[1]
    e1 = loader.next()[1]
    assert len(set(e0.tolist())) == 12  # every sample has its own generator
    assert not np.any(e0 == e1)  # same index, next epoch: fresh augmentation


class FailingDataset(RngDataset):
    """Sample ``bad`` cannot be read, like a damaged file on disk."""

    def __init__(self, n, bad):
        super().__init__(n)
        self.bad = bad

    def __getitem__(self, i, rng):
        if i == self.bad:
            raise UserError(f"/data/{i}.JPEG: cannot decode image (truncated)")
        return super().__getitem__(i, rng)


@pytest.mark.parametrize("num_threads", [0, 3])
def test_sample_error_leaves_the_loader_unchanged(num_threads):
    loader = BatchLoader(FailingDataset(12, bad=5), 4, shuffle=False, num_threads=num_threads)
    loader.next()
    with pytest.raises(UserError) as info:
        loader.next()  # batch 1 holds samples 4..7
    assert type(info.value) is UserError
    assert str(info.value) == "/data/5.JPEG: cannot decode image (truncated)"
    assert (loader.epoch, loader.batch_index) == (0, 1)  # the failed batch was not consumed
    loader.close()
