"""common.mss.training: the input statistics cache (keyed on everything the statistics depend
on, written atomically) and the range checks of the shared training flags."""
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from common.cli import Parser
from common.data.musdb import open_musdb
from common.dev.mss_testing import musdb_copy
from common.errors import UserError
from common.mss import training as T


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Two MUSDB18 roots holding the same track (one copy each)."""
    base = tmp_path_factory.mktemp("roots")
    return (musdb_copy(base / "a", ["Some - Song"]), musdb_copy(base / "b", ["Some - Song"]))


def tracks(root):
    return open_musdb(root, "train", split=None, is_wav=True).tracks


def counting(monkeypatch):
    calls = []
    compute = T.compute_input_statistics

    def wrapped(*args):
        calls.append(args[1:])
        return compute(*args)
    monkeypatch.setattr(T, "compute_input_statistics", wrapped)
    return calls


def test_statistics_are_reused_only_for_the_same_data_and_stft(roots, tmp_path, monkeypatch):
    run = SimpleNamespace(out=tmp_path, is_main=True)
    calls = counting(monkeypatch)
    mean, std = T.load_or_compute_stats(run, tracks(roots[0]), 512, 128, 200)
    assert mean.shape == std.shape == (200,) and len(calls) == 1
    assert os.listdir(tmp_path) == ["input_stats.npz"]  # no temp file left
    again = T.load_or_compute_stats(run, tracks(roots[0]), 512, 128, 200)
    np.testing.assert_array_equal(again[0], mean)
    assert len(calls) == 1
    # another root (same track name, same audio), hop or bin count: computed again
    T.load_or_compute_stats(run, tracks(roots[1]), 512, 128, 200)
    T.load_or_compute_stats(run, tracks(roots[1]), 512, 256, 200)
    T.load_or_compute_stats(run, tracks(roots[1]), 512, 256, 100)
    assert len(calls) == 4


def test_statistics_follow_a_replaced_file(roots, tmp_path, monkeypatch):
    root = shutil.copytree(roots[0], tmp_path / "root")
    run = SimpleNamespace(out=tmp_path, is_main=True)
    calls = counting(monkeypatch)
    T.load_or_compute_stats(run, tracks(root), 512, 128, 200)
    mixture = root / "train" / "Some - Song" / "mixture.wav"
    shutil.copy(roots[1] / "train" / "Some - Song" / "mixture.wav", mixture)
    os.utime(mixture, ns=(0, 0))  # a replaced file, same name and size
    T.load_or_compute_stats(run, tracks(root), 512, 128, 200)
    assert len(calls) == 2


def test_other_processes_do_not_write_statistics(roots, tmp_path):
    T.load_or_compute_stats(SimpleNamespace(out=tmp_path, is_main=False), tracks(roots[0]),
                            512, 128, 200)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv", [["--seq-dur", "0"], ["--samples-per-track", "0"],
                                  ["--gain-range", "-1", "1"], ["--loader-threads", "-1"],
                                  ["--epochs", "0"], ["--batch-size", "0"], ["--lr", "nan"],
                                  ["--weight-decay", "-1"], ["--seed", "-1"],
                                  ["--checkpoint-interval", "-2"], ["--keep-last", "0"]])
def test_training_flags_are_range_checked(argv):
    parser = Parser()
    T.add_data_args(parser, seq_dur=6.0, gain_range=(0.25, 1.25))
    T.add_loop_args(parser, epochs=1, batch_size=1, lr=1e-3, weight_decay=0)
    with pytest.raises(UserError, match=f"argument {argv[0]}"):
        parser.parse_args(argv)
