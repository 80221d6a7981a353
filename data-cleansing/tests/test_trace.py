"""Training with a trace: caches, determinism, replay and resume."""
from pathlib import Path

import numpy as np
import pytest

from datacleansing import data as D
from datacleansing.retrain import retrain
from datacleansing.trace import TrainConfig, params_snapshot, read_params, read_trace, train


@pytest.fixture(scope="module")
def small():
    sp = D.load("mnist5k")
    sp.x_train, sp.y_train, sp.paths = sp.x_train[:300], sp.y_train[:300], sp.paths[:300]
    return sp


def test_mnist5k_splits_are_stratified_and_disjoint():
    sp = D.load("mnist5k")
    assert (len(sp.y_train), len(sp.y_val), len(sp.y_test)) == (3500, 500, 1000)
    for y, per_class in ((sp.y_train, 350), (sp.y_val, 50), (sp.y_test, 100)):
        assert np.all(np.bincount(y, minlength=10) == per_class)
    assert sp.x_train.shape[1:] == (1, 28, 28) and sp.x_train.min() >= -1 and sp.x_train.max() <= 1
    assert len(set(sp.paths)) == 3500


def test_flip_labels_changes_exactly_the_fraction():
    labels = np.repeat(np.arange(10), 50)
    noisy, flipped = D.flip_labels(labels, 0.1, 10, seed=3)
    assert len(flipped) == 50
    assert np.all(noisy[flipped] != labels[flipped])
    untouched = np.setdiff1d(np.arange(500), flipped)
    assert np.all(noisy[untouched] == labels[untouched])


def test_trace_caches_and_replay(small, tmp_path):
    cfg = TrainConfig(model="mlp", epochs=2, batch_size=32, lr=0.02, cache="all", seed=1)
    summary = train(cfg, small, tmp_path / "run", quiet=True)
    steps = read_trace(tmp_path / "run" / "trace.npz")
    assert len(steps) == 10 == summary["traced_steps"] == summary["all_steps_files"]
    # the traced epoch visits every training sample exactly once, in batches of 32 (+ a tail)
    visited = np.concatenate([s.batch for s in steps])
    assert sorted(visited.tolist()) == list(range(300))
    assert [len(s.batch) for s in steps] == [32] * 9 + [12]
    # storage: one parameter copy for the final-parameter method, one per step for SGD-influence
    assert summary["all_steps_bytes"] == pytest.approx(10 * summary["final_bytes"], rel=0.01)
    # replaying the traced epoch without removing anything gives the trained network exactly
    final = read_params(tmp_path / "run" / "params" / "final.h5")
    loss, acc = retrain(tmp_path / "run", cfg, small, [])
    replayed = params_snapshot()
    for k in final:
        np.testing.assert_array_equal(replayed[k], final[k], err_msg=k)
    assert acc == pytest.approx(summary["test_accuracy"])
    # removing samples changes the result
    retrain(tmp_path / "run", cfg, small, steps[0].batch[:5])
    assert any(not np.array_equal(params_snapshot()[k], final[k]) for k in final)


def test_training_is_deterministic_and_resumes(small, tmp_path):
    cfg = TrainConfig(model="cnn", epochs=2, batch_size=50, seed=2)
    sp = small
    sp.x_train, sp.y_train = sp.x_train[:100], sp.y_train[:100]
    train(cfg, sp, tmp_path / "a", quiet=True)
    a = read_params(tmp_path / "a" / "params" / "final.h5")
    one = TrainConfig(model="cnn", epochs=2, batch_size=50, seed=2)
    # a run that ends after its first epoch, then resumes
    assert train(one, sp, tmp_path / "b", quiet=True, stop_after=1) is None
    assert not (tmp_path / "b" / "params" / "final.h5").exists()
    train(one, sp, tmp_path / "b", resume=True, quiet=True)
    b = read_params(tmp_path / "b" / "params" / "final.h5")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _idx(arr):
    import struct
    arr = np.asarray(arr, np.uint8)
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + b"".join(struct.pack(">I", d)
                                                               for d in arr.shape)
    return header + arr.tobytes()


def test_mnist_idx_and_cifar10_pickles_load_and_train(tmp_path):
    import pickle

    from common.data import cifar10
    rng = np.random.default_rng(0)
    mn = tmp_path / "mnist"
    mn.mkdir()
    for prefix, n in (("train", 60), ("t10k", 20)):
        (mn / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(rng.integers(0, 256, (n, 28, 28))))
        (mn / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(rng.integers(0, 10, n)))
    sp = D.load("mnist", mn)
    assert (len(sp.y_train), len(sp.y_val), len(sp.y_test)) == (54, 6, 20)
    assert sp.image_shape == (1, 28, 28)
    cf = tmp_path / "cifar" / "cifar-10-batches-py"
    cf.mkdir(parents=True)
    for name in list(cifar10.TRAIN_BATCHES) + [cifar10.TEST_BATCH]:
        with open(cf / name, "wb") as f:
            pickle.dump({b"labels": rng.integers(0, 10, 20).tolist(),
                         b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8)}, f)
    sp = D.load("cifar10", tmp_path / "cifar")
    assert (len(sp.y_train), len(sp.y_val), len(sp.y_test)) == (90, 10, 20)
    assert sp.image_shape == (3, 32, 32)
    summary = train(TrainConfig(model="cnn", epochs=1, batch_size=30), sp, tmp_path / "run",
                    quiet=True)
    assert summary["traced_steps"] == 3 and 0 <= summary["test_accuracy"] <= 1


def _write_stl10(root, split, images, labels_1_based):
    """The official binary format: uint8, each colour plane column by column; labels 1..10."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tofile(folder / f"{split}_X.bin")
    np.asarray(labels_1_based, np.uint8).tofile(folder / f"{split}_y.bin")


def test_stl10_binary_files_load_split_and_train_with_the_official_shape(tmp_path):
    """Tiny files in the official format: the seeded 1/5 validation split (1,000 of 5,000 in
    the real set), rows-first images in [-1, 1], and a run of configs/paper-stl10.yaml."""
    from common.dev.testing import run_script
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (30, 3, 96, 96), dtype=np.uint8)
    train_y = np.arange(30) % 10 + 1
    _write_stl10(tmp_path, "train", train_x, train_y)
    test_x = np.zeros((10, 3, 96, 96), np.uint8)
    test_x[0, 0, 5, 70] = 255       # rows first: row 5, column 70 is bright, not (70, 5)
    _write_stl10(tmp_path, "test", test_x, np.arange(10) + 1)
    sp = D.load("stl10", tmp_path)
    assert (len(sp.y_train), len(sp.y_val), len(sp.y_test)) == (24, 6, 10)
    assert sp.image_shape == (3, 96, 96) and sp.n_classes == 10
    assert sp.class_names[0] == "airplane"
    source = [int(p.split(":")[1]) for p in sp.paths]
    np.testing.assert_array_equal(sp.y_train, train_y[source] - 1)
    assert sp.x_train.min() >= -1 and sp.x_train.max() <= 1
    np.testing.assert_allclose(sp.x_train, train_x[source] * (2 / 255) - 1, atol=1e-6)
    assert sp.x_test[0, 0, 5, 70] == 1.0 and sp.x_test[0, 0, 70, 5] == -1.0
    assert D.load("stl10", tmp_path).paths == sp.paths           # the split is seeded
    folder = Path(__file__).resolve().parent.parent
    out = tmp_path / "run"
    proc = run_script(folder / "train.py", "--config", folder / "configs" / "paper-stl10.yaml",
                      "--root", tmp_path, "--output", out, "--epochs", "1", "--model", "logreg",
                      "--batch-size", "12", env={"NNABLA_RESEARCH_NO_PROGRESS": "1"})
    assert "2 traced steps" in proc.stdout
    config = (out / "config.yaml").read_text()
    assert "dataset: stl10" in config and "shift: 4" in config and "flip: true" in config


def test_official_experiment_configs():
    """configs/paper*.yaml: the reference's shape (its CNN, SGD lr 0.05, batch 64, 20 epochs,
    the last traced, shifts of 4 and flips) for CIFAR-10, MNIST and STL-10."""
    import yaml
    folder = Path(__file__).resolve().parent.parent / "configs"
    for name, dataset in (("paper", "cifar10"), ("paper-mnist", "mnist"),
                          ("paper-stl10", "stl10")):
        cfg = yaml.safe_load((folder / f"{name}.yaml").read_text())
        assert cfg["dataset"] == dataset and dataset in D.DATASETS
        assert (cfg["model"], cfg["lr"], cfg["batch_size"], cfg["epochs"], cfg["trace_epochs"],
                cfg["shift"], cfg["flip"], cfg["cache"]) == ("cnn", 0.05, 64, 20, 1, 4, True,
                                                             "all")


def test_bad_dataset_inputs_are_user_errors(tmp_path):
    from common.errors import UserError
    with pytest.raises(UserError):
        D.load("imagenet")
    with pytest.raises(UserError):
        D.load("cifar10")            # needs --data-dir
    with pytest.raises(UserError):
        D.load("mnist", tmp_path)    # no IDX files there


def test_interrupted_mid_epoch_resumes_bit_exactly(tmp_path, monkeypatch):
    """Ctrl-C (the deferred flag of common.terminal) after step 13 of 3 x 10 steps: the run
    stops with a checkpoint of iteration 13, in the middle of the traced epoch, and resuming
    gives the uninterrupted run's parameters, per-step caches and trace bit for bit."""
    import common.terminal as terminal
    from common.errors import Interrupted
    from datacleansing import trace

    sp = D.stratified_subset(D.load("mnist5k"), 300, 0)
    cfg = TrainConfig(model="mlp", epochs=3, batch_size=32, trace_epochs=2, cache="all", seed=4)
    train(cfg, sp, tmp_path / "whole", quiet=True)
    original = trace.Trainer.step
    calls = []

    def step(self, *args):
        loss = original(self, *args)
        calls.append(loss)
        if len(calls) == 13:
            monkeypatch.setitem(terminal._interrupt, "requested", True)
        return loss

    monkeypatch.setattr(trace.Trainer, "step", step)
    with pytest.raises(Interrupted, match="interrupted at iteration 13; continue with --resume"):
        train(cfg, sp, tmp_path / "split", quiet=True)
    monkeypatch.setitem(terminal._interrupt, "requested", False)
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").glob("ckpt_*")) == [
        "ckpt_00000013.npz"]
    train(cfg, sp, tmp_path / "split", resume=True, quiet=True)
    assert len(calls) == 30
    whole = sorted((tmp_path / "whole" / "params").rglob("*.h5"))
    assert len(whole) == 3 + 20          # initial, traced_start, final + 2 traced epochs
    for ref in whole:
        got = tmp_path / "split" / ref.relative_to(tmp_path / "whole")
        a, b = read_params(ref), read_params(got)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{ref.name} {k}")
    steps = read_trace(tmp_path / "whole" / "trace.npz")
    for s, t in zip(steps, read_trace(tmp_path / "split" / "trace.npz")):
        np.testing.assert_array_equal(s.batch, t.batch)
