"""The shared contracts of common.train.run, common.fileio and common.terminal, through a
minimal training script run as a user would (tests/_lifecycle_script.py)."""
import os
from pathlib import Path

import numpy as np
import pytest

from common.dev.testing import (ReadOnlyDir, SmallDisk, assert_one_line_error, files_under,
                                interrupt_script, run_script)
from common.errors import UserError
from common.fileio import (OutputError, atomic_path, atomic_write, check_output_location,
                           refuse_overwriting_inputs)
from common.train.checkpoint import CheckpointManager

SCRIPT = Path(__file__).parent / "_lifecycle_script.py"
ENV = {"NNABLA_RESEARCH_NO_PROGRESS": "1"}


def train(*args, check=True, **kw):
    return run_script(SCRIPT, *args, check=check, env=ENV, **kw)


def steps(folder):
    return [s for s, _ in CheckpointManager(Path(folder) / "checkpoints", clean=False)
            .checkpoints()]


def test_occupied_output_is_refused_without_resume(tmp_path):
    out = tmp_path / "run"
    train("--output", out, "--steps", "5")
    before = {p: (out / p).read_bytes() for p in files_under(out)}
    proc = train("--output", out, "--steps", "5", check=False)
    assert_one_line_error(proc, "already holds a run", "--resume", "new --output")
    assert {p: (out / p).read_bytes() for p in files_under(out)} == before


def test_non_empty_folder_without_a_run_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    proc = train("--output", tmp_path, check=False)
    assert_one_line_error(proc, "not empty", "holds no run")
    assert files_under(tmp_path) == ["notes.txt"]


def test_resume_with_a_changed_option_is_refused_and_config_kept(tmp_path):
    out = tmp_path / "run"
    train("--output", out, "--steps", "5")
    config = (out / "config.yaml").read_text()
    proc = train("--output", out, "--steps", "10", "--lr", "0.05", "--resume", check=False)
    line = assert_one_line_error(proc, "--lr (0.1 -> 0.05)")
    assert "--steps" in line
    assert (out / "config.yaml").read_text() == config
    # options that do not change results may differ
    train("--output", out, "--steps", "5", "--checkpoint-interval", "2", "--resume")


def test_nothing_written_before_inputs_are_validated(tmp_path):
    out = tmp_path / "run"
    proc = train("--output", out, "--data", tmp_path / "missing.npy", check=False)
    assert_one_line_error(proc, "missing.npy")
    assert not out.exists()


def test_sigint_mid_run_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["--output", out, "--steps", "60", "--sleep", "0.05", "--checkpoint-interval", "1000"]
    proc = interrupt_script(SCRIPT, *args, ready=lambda _: _seen_for(out / "config.yaml", 1.0),
                            env=ENV)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted at iteration ") and "continue with --resume" in last
    stopped = int(last.split()[3].rstrip(";"))
    assert steps(out) == [stopped]
    resumed = train(*args, "--resume")
    assert f"resumed at iteration {stopped}" in resumed.stdout
    assert (out / "final.h5").is_file()


_FIRST_SEEN = {}


def _seen_for(path, seconds):
    """True once ``path`` has existed for ``seconds`` (a few steps of the script)."""
    import time
    if not path.exists():
        return False
    first = _FIRST_SEEN.setdefault(str(path), time.monotonic())
    return time.monotonic() - first >= seconds


def test_sigint_before_the_first_step_still_says_how_to_continue(tmp_path):
    out = tmp_path / "run"
    args = ["--output", out, "--steps", "40", "--sleep", "0.05"]
    proc = interrupt_script(SCRIPT, *args, ready=lambda _: (out / "config.yaml").is_file(),
                            env=ENV)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr
    assert "continue with --resume" in proc.stderr.strip().splitlines()[-1]
    train(*args, "--resume")


def test_non_finite_loss_stops_with_the_last_good_checkpoint_newest(tmp_path):
    out = tmp_path / "run"
    proc = train("--output", out, "--steps", "20", "--diverge-at", "8", check=False)
    assert_one_line_error(proc, "diverged at iteration 8", "iteration 5")
    assert steps(out) == [5]


def test_full_disk_is_one_line_and_leaves_no_partial_checkpoint(tmp_path):
    out = tmp_path / "disk" / "run"
    with SmallDisk(tmp_path / "disk", 2 * 1024 * 1024) as disk:
        train("--output", out, "--steps", "5", preexec_fn=disk.preexec_fn())
        good = steps(out)
        disk.fill(leave=512)
        proc = train("--output", out, "--steps", "10", "--resume", check=False,
                     preexec_fn=disk.preexec_fn() if disk.mounted else _tiny_file_limit())
        assert_one_line_error(proc)
        assert steps(out) == good
        manager = CheckpointManager(out / "checkpoints", clean=False)
        assert manager.load_latest().step == good[-1]
        assert not [p for p in files_under(out) if ".tmp." in p]


def _tiny_file_limit():
    def limit():
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))
    return limit


def test_read_only_output_location_is_one_line(tmp_path):
    with ReadOnlyDir(tmp_path / "ro") as ro:
        proc = train("--output", Path(ro.path) / "run", check=False)
        assert_one_line_error(proc, "--output", "cannot write")


def test_output_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = train("--output", tmp_path / "file" / "run", check=False)
    assert_one_line_error(proc, "lies under the file")


# ----------------------------------------------------------------------------- units
def test_check_output_location_creates_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    assert check_output_location(target) == target
    assert os.listdir(tmp_path) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_output_location(tmp_path / "f")


def test_refuse_overwriting_inputs(tmp_path):
    song = tmp_path / "song.wav"
    song.write_bytes(b"x")
    link = tmp_path / "link.wav"
    link.symlink_to(song)
    refuse_overwriting_inputs([tmp_path / "other.wav"], [song])
    with pytest.raises(UserError, match="would overwrite the input"):
        refuse_overwriting_inputs([link], [song])


def test_atomic_path_keeps_old_file_and_suffix(tmp_path):
    target = tmp_path / "x.npy"
    np.save(target, np.zeros(3))
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == tmp_path
        np.save(tmp, np.ones(3))
        raise RuntimeError("crash")
    assert np.load(target).tolist() == [0, 0, 0]
    assert os.listdir(tmp_path) == ["x.npy"]
    with atomic_path(target) as tmp:
        np.save(tmp, np.ones(3))
    assert np.load(target).tolist() == [1, 1, 1]


def test_atomic_write_os_error_is_one_output_error(tmp_path, monkeypatch):
    def fail(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OutputError, match="No space left"), \
            atomic_write(tmp_path / "f.txt", "w") as f:
        f.write("data")
    assert os.listdir(tmp_path) == []
