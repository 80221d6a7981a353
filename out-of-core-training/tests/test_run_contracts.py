"""The run-folder and output contracts of issue 12, through the real entry scripts: train.py
(occupied --output, --resume with other options, Ctrl-C mid-run and a bit-exact resume, a
non-finite loss, unwritable and full disks, damaged data sets, data-parallel wiring) and the
benchmark's report writer (output location, full disk)."""
import importlib.util
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from common.dev.testing import (ReadOnlyDir, SmallDisk, assert_one_line_error, fake_world,
                                files_under, interrupt_script, run_script)
from common.train.checkpoint import CheckpointManager
from common.train.monitor import read_series

FOLDER = Path(__file__).resolve().parents[1]
TRAIN = FOLDER / "train.py"
BENCH = FOLDER / "bench" / "bench_ooc.py"
ENV = {"NNABLA_RESEARCH_NO_PROGRESS": "1"}
# The smoke configuration made smaller still: a 2-stage ResNet of width 4, batch 8.
TINY = ["--blocks", "1", "1", "--width", "4", "--batch-size", "8", "--val-interval", "0",
        "--val-batches", "1", "--loader-threads", "0"]


def train(*args, check=True, **kw):
    return run_script(TRAIN, *args, check=check, env=ENV, **kw)


def checkpoint_steps(out):
    return [s for s, _ in CheckpointManager(Path(out) / "checkpoints", clean=False).checkpoints()]


def checkpoint_params(out, step):
    from common.train.checkpoint import load_checkpoint
    return load_checkpoint(Path(out) / "checkpoints" / f"ckpt_{step:08d}.npz").params


def snapshot(folder):
    return {p: (Path(folder) / p).read_bytes() for p in files_under(folder)}


# --------------------------------------------------------------------------- run folder
def test_occupied_output_is_refused_without_resume(tmp_path):
    out = tmp_path / "run"
    train("--output", out, "--iterations", "2", *TINY)
    before = snapshot(out)
    proc = train("--output", out, "--iterations", "2", *TINY, check=False)
    assert_one_line_error(proc, "already holds a run", "--resume", "new --output")
    assert snapshot(out) == before


def test_resume_with_a_changed_option_is_refused_and_config_kept(tmp_path):
    out = tmp_path / "run"
    train("--output", out, "--iterations", "4", "--stop-at-iter", "2", *TINY)
    config = (out / "config.yaml").read_bytes()
    proc = train("--output", out, "--resume", "--iterations", "4", *TINY, "--lr", "0.5",
                 check=False)
    assert_one_line_error(proc, "cannot --resume with different options", "--lr (0.05 -> 0.5)")
    assert (out / "config.yaml").read_bytes() == config
    assert checkpoint_steps(out) == [2]
    # options that do not change results may differ
    train("--output", out, "--resume", "--iterations", "4", *TINY, "--keep-last", "1",
          "--checkpoint-interval", "0")
    assert checkpoint_steps(out) == [4]


def test_sigint_mid_run_checkpoints_and_resumes_bit_exactly(tmp_path):
    out, reference = tmp_path / "run", tmp_path / "reference"
    args = ["--iterations", "3000", "--checkpoint-interval", "5", *TINY]
    first = out / "checkpoints" / "ckpt_00000005.npz"
    proc = interrupt_script(TRAIN, "--output", out, *args, ready=lambda _: first.is_file(), env=ENV)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted at iteration ") and "continue with --resume" in last
    stopped = int(last.split()[3].rstrip(";"))
    assert stopped >= 5 and checkpoint_steps(out)[-1] == stopped   # the finished iteration
    assert f"from the checkpoint of iteration {stopped}" in last

    target = str(stopped + 3)
    resumed = train("--output", out, *args, "--resume", "--stop-at-iter", target)
    assert f"resumed at iteration {stopped}" in resumed.stdout
    train("--output", reference, *args, "--stop-at-iter", target)
    got, want = checkpoint_params(out, int(target)), checkpoint_params(reference, int(target))
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert read_series(out, "training loss")[1].tolist() == \
        read_series(reference, "training loss")[1].tolist()


def test_non_finite_loss_stops_with_the_last_good_checkpoint_newest(tmp_path):
    out = tmp_path / "run"
    proc = train("--output", out, "--iterations", "20", "--checkpoint-interval", "1",
                 "--lr", "1e30", *TINY, check=False)
    line = assert_one_line_error(proc, "training diverged at iteration ", "is intact")
    diverged = int(line.split("iteration ")[1].split(":")[0])
    assert checkpoint_steps(out)[-1] == diverged - 1
    assert f"the last checkpoint (iteration {diverged - 1}) is intact" in line
    assert not (out / "final.h5").exists()


# --------------------------------------------------------------------------- output disks
def test_read_only_output_is_one_line_and_writes_nothing(tmp_path):
    with ReadOnlyDir(tmp_path / "ro") as ro:
        proc = train("--output", Path(ro.path) / "run", "--iterations", "2", *TINY,
                     check=False)
        assert_one_line_error(proc, "--output", "cannot write")
        assert files_under(ro.path) == []


def test_output_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = train("--output", tmp_path / "file" / "run", "--iterations", "2", *TINY,
                 check=False)
    assert_one_line_error(proc, "lies under the file")
    assert files_under(tmp_path) == ["file"]


def test_full_disk_while_checkpointing_is_one_line_and_keeps_checkpoints(tmp_path):
    out = tmp_path / "disk" / "run"
    with SmallDisk(tmp_path / "disk", 8 << 20) as disk:
        train("--output", out, "--iterations", "6", "--stop-at-iter", "2",
              "--checkpoint-interval", "1", *TINY, preexec_fn=disk.preexec_fn())
        good = checkpoint_steps(out)
        assert good == [1, 2]
        room = 32 << 10   # config and logs can still be rewritten, a checkpoint cannot
        assert (out / "checkpoints" / "ckpt_00000002.npz").stat().st_size > room
        disk.fill(leave=room)
        proc = train("--output", out, "--iterations", "6", "--checkpoint-interval", "1",
                     "--resume", *TINY, check=False,
                     preexec_fn=disk.preexec_fn() if disk.mounted else _file_size_limit(room))
        # common/train/checkpoint.py leaves numpy's ZipFile open when the write fails; its
        # __del__ then prints "Exception ignored ... Traceback" at exit (see the xfail below)
        ignored = "Exception ignored in: <function ZipFile.__del__"
        stderr = proc.stderr.split(ignored)[0]
        assert_one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "",
                                                          stderr), "ckpt_00000003.npz",
                              "No space left")
        assert checkpoint_steps(out) == good
        manager = CheckpointManager(out / "checkpoints", clean=False)
        assert manager.load_latest().step == 2
        assert not [p for p in files_under(out) if ".tmp." in p]
        assert not (out / "final.h5").exists()
        if ignored in proc.stderr:
            pytest.xfail("common/train/checkpoint.py: np.savez's ZipFile stays open after a "
                         "failed write and prints a traceback at exit")


def _file_size_limit(size):
    """Without root (no tmpfs): no file may grow beyond ``size`` bytes."""
    def limit():
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


# --------------------------------------------------------------------------- damaged data
def test_truncated_cifar_batch_is_one_line_before_anything_is_written(tmp_path):
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = {b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(10))}
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    whole = (folder / "data_batch_1").read_bytes()
    (folder / "data_batch_1").write_bytes(whole[:len(whole) // 2])
    out = tmp_path / "run"
    proc = train("--output", out, "--dataset", "cifar10", "--root", tmp_path / "cifar",
                 "--iterations", "2", *TINY, check=False)
    assert_one_line_error(proc, "data_batch_1")
    assert not out.exists()


def test_undecodable_image_is_one_line(tmp_path):
    from PIL import Image

    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (40, 40), (10 * i, 0, 0)).save(root / split / c / f"{i}.JPEG")
    for c in ("cat", "dog"):                    # every batch holds a damaged file
        for i in range(4):
            (root / "train" / c / f"{i}.JPEG").write_bytes(b"not a jpeg")
    out = tmp_path / "run"
    proc = train("--output", out, "--dataset", "imagenet", "--root", root, "--iterations", "2",
                 *TINY, check=False)
    assert_one_line_error(proc, ".JPEG", "cannot decode image")
    assert not (out / "final.h5").exists() and checkpoint_steps(out) == []


# --------------------------------------------------------------------------- multi-GPU
def test_data_parallel_wiring_through_main(tmp_path, monkeypatch):
    """Two ranks of a faked MPI world, each through the real train main(): every rank gets
    its half of each global batch, gradients are all-reduced every iteration, and only
    rank 0 writes."""
    import nnabla as nn

    from common.data.loader import BatchLoader
    from ooctrain import training

    monkeypatch.setenv("NNABLA_RESEARCH_NO_PROGRESS", "1")
    iterations, total_batch = 3, 8
    seen = {}

    class RecordingLoader(BatchLoader):
        def get_batch(self, epoch, batch_index):
            if self.shuffle:         # the training loader (validation does not shuffle)
                rows = self.indices(epoch)[batch_index * self.batch_size:
                                           (batch_index + 1) * self.batch_size]
                seen.setdefault(self.rank, []).append(sorted(rows.tolist()))
            return super().get_batch(epoch, batch_index)

    monkeypatch.setattr(training, "BatchLoader", RecordingLoader)
    saved_context = nn.get_current_context()
    args = ["--iterations", str(iterations), "--checkpoint-interval", "1", *TINY]
    comms = {}
    try:
        for rank in (0, 1):
            comms[rank] = fake_world(monkeypatch, size=2, rank=rank)
            training.main(["--output", str(tmp_path / f"rank{rank}"), *args])
    finally:
        nn.set_default_context(saved_context)
        nn.clear_parameters()

    assert sorted(seen) == [0, 1]
    single = BatchLoader(training.training_sets(training.parse_args(
        ["--output", "x", *args]))[0], total_batch, shuffle=True, seed=0)
    for step in range(iterations):
        first, second = seen[0][step], seen[1][step]
        assert len(first) == len(second) == total_batch // 2
        assert not set(first) & set(second)
        whole = single.indices(step // len(single))[(step % len(single)) * total_batch:
                                                    (step % len(single) + 1) * total_batch]
        assert sorted(first + second) == sorted(whole.tolist())
    for comm in comms.values():
        # one all-reduce of every gradient per iteration, averaged; the loss and the Ctrl-C
        # flag (every process stops at the same step) per iteration, and the final validation
        # error, reduced as single values
        gradients = [c for c in comm.calls if c[0] == "all_reduce" and c[1] > 1]
        assert len(gradients) == iterations and all(c[2] for c in gradients), comm.calls
        assert len({c[1] for c in gradients}) == 1
        values = [c for c in comm.calls if c[0] == "all_reduce" and c[1] == 1]
        assert len(values) == 2 * iterations + 1
        assert ("barrier",) in comm.calls
    assert {"config.yaml", "final.h5", "checkpoints/ckpt_00000003.npz"} <= \
        set(files_under(tmp_path / "rank0"))
    assert not (tmp_path / "rank1").exists()


# --------------------------------------------------------------------------- benchmark report
BENCH_ARGS = ["--blocks", "1", "--width", "4", "--image-size", "16", "--small-input",
              "--num-classes", "3", "--batches", "4", "--budget", "24MiB", "--device-memory",
              "40MiB", "--iterations", "1"]


def test_bench_output_location_is_checked_before_measuring(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = run_script(BENCH, *BENCH_ARGS, "--out-dir", tmp_path / "file" / "bench",
                      check=False, env=ENV)
    assert_one_line_error(proc, "--out-dir", "lies under the file")
    assert "batch" not in proc.stdout                   # no variant ran
    with ReadOnlyDir(tmp_path / "ro") as ro:
        proc = run_script(BENCH, *BENCH_ARGS, "--out-dir", Path(ro.path) / "bench",
                          check=False, env=ENV)
        assert_one_line_error(proc, "--out-dir", "cannot write")


def test_bench_report_on_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path):
    """The report writer after a sweep (rows as sweep() returns them)."""
    from common.errors import UserError

    spec = importlib.util.spec_from_file_location("bench_ooc", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [{"batch": b, "variant": v, "fits": True, "images_per_s": 100.0 - b,
             "allocator_used": b << 20, "error": ""} for b in (4, 8) for v in bench.VARIANTS]
    with SmallDisk(tmp_path / "disk", 256 << 10) as disk:
        if not disk.mounted:
            pytest.skip("needs root for a real full disk (tmpfs)")
        args = bench.build_parser().parse_args([*BENCH_ARGS, "--out-dir",
                                                str(tmp_path / "disk" / "bench")])
        bench.write_outputs(args, rows, 24 << 20, 40 << 20)
        written = snapshot(tmp_path / "disk" / "bench")
        assert sorted(written) == ["README.md", "results.csv", "throughput.png"]
        disk.fill(leave=0)
        rows[0]["images_per_s"] = 1.0
        with pytest.raises(UserError, match="No space left"):
            bench.write_outputs(args, rows, 24 << 20, 40 << 20)
        assert snapshot(tmp_path / "disk" / "bench") == written
