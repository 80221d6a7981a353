"""Helpers for the papers' tests: run an entry script as a user would (also interrupted, on a
full or read-only disk, or as one rank of a faked MPI world), and make synthetic audio files
(any format soundfile writes; compressed ones through ffmpeg)."""
import os
import subprocess
import sys

import numpy as np

__all__ = ["FixtureFolder", "as_flags", "fixtures_root", "run_script", "synthetic_music",
           "write_audio",
           "interrupt_script", "assert_one_line_error", "SmallDisk", "ReadOnlyDir",
           "FakeCommunicator", "fake_world", "files_under", "snapshot", "checkpoint_steps",
           "QUIET_ENV"]


QUIET_ENV = {"NNABLA_RESEARCH_NO_PROGRESS": "1"}


def run_script(script, *args, check=True, timeout=600, env=None, preexec_fn=None,
               quiet=False):
    """Run ``python script args...`` with this interpreter; return the CompletedProcess (text
    stdout / stderr). With ``check`` a non-zero exit fails with the end of stderr. ``env``:
    extra environment variables; ``preexec_fn``: e.g. :meth:`SmallDisk.preexec_fn`;
    ``quiet``: no progress bars."""
    env = {**os.environ, **(QUIET_ENV if quiet else {}), **(env or {})}
    proc = subprocess.run([sys.executable, str(script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          preexec_fn=preexec_fn)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def as_flags(options):
    """Command-line flags for an option dict: ``{"lr": 0.1, "crop_size": [64, 128], "synthetic":
    True}`` -> ``--lr 0.1 --crop-size 64 128 --synthetic``."""
    out = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        else:
            out += [flag, *(map(str, value) if isinstance(value, list) else [str(value)])]
    return out


def synthetic_music(seconds, sr, channels, seed=0):
    """float32 ``(samples, channels)``: two of four tones per channel plus a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.RandomState(seed)
    tones = [0.3 * np.sin(2 * np.pi * f * t) for f in (110.0, 440.0, 1330.0, 3000.0)]
    cols = [tones[c % 4] + tones[(c + 1) % 4] + 0.01 * rng.randn(len(t)) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def write_audio(path, audio, sr):
    """Write ``audio`` to ``path`` (FLAC as 16-bit PCM, anything else as float) or, for
    ``.mp3``, through a temporary WAV and ffmpeg; return ``path``."""
    import soundfile as sf

    path_str = str(path)
    if path_str.endswith(".mp3"):
        wav = path_str[:-4] + ".tmp.wav"
        sf.write(wav, audio, sr, subtype="FLOAT")
        try:
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", wav, path_str],
                           check=True)
        finally:
            os.remove(wav)
        return path
    sf.write(path_str, audio, sr, subtype="PCM_16" if path_str.endswith(".flac") else "FLOAT")
    return path


class FixtureFolder:
    """One paper's parity fixtures, ``fixtures_root()/<name>``, read lazily and cached for
    the test session. A missing folder or file fails the test that needs it (parity tests
    never skip), saying where it looked."""

    def __init__(self, name, root=None):
        from pathlib import Path

        self.root = Path(root) if root is not None else fixtures_root()
        self.name = name
        self.dir = self.root / name
        self._cache = {}

    @staticmethod
    def fail(message):
        import pytest

        pytest.fail(message, pytrace=False)

    def check_dir(self):
        """The folder; fails the test when it (or the fixture root) does not exist."""
        from common.paths import REPO_ROOT

        if not self.root.is_dir():
            self.fail(f"fixture root {self.root} does not exist: set FIXTURES_DIR to the "
                      f"folder holding {self.name}/ (default ../shared/fixtures relative to "
                      f"{REPO_ROOT})")
        if not self.dir.is_dir():
            self.fail(f"fixture folder {self.dir} is missing (FIXTURES_DIR={self.root})")
        return self.dir

    def path(self, name):
        """``folder/name``; fails the test when it does not exist."""
        path = self.check_dir() / name
        if not path.exists():
            self.fail(f"fixture {path} is missing (FIXTURES_DIR={self.root})")
        return path

    def memo(self, key, make):
        """``make()``, computed once per session."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def npz(self, name):
        """The arrays of ``folder/name`` (an ``.npz``), loaded once."""
        def load():
            with np.load(self.path(name), allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        return self.memo(("npz", name), load)


def fixtures_root():
    """Root of the parity fixtures: ``$FIXTURES_DIR``, default ``../shared/fixtures``; a
    relative path is taken from the repository root (where ``make test`` runs)."""
    from pathlib import Path

    from common.paths import REPO_ROOT

    env = os.environ.get("FIXTURES_DIR")
    root = Path(env) if env else Path("..") / "shared" / "fixtures"
    if not root.is_absolute():
        root = REPO_ROOT / root
    return root.resolve()


# ----------------------------------------------------------------------------- contracts
# Helpers for the contract tests every paper runs through its real entry scripts.

def interrupt_script(script, *args, ready, group=False, timeout=600, env=None):
    """Start ``python script args...``, wait until ``ready(pid)`` is true (e.g. a checkpoint
    exists), send it one SIGINT (Ctrl-C) and return the CompletedProcess-like result with
    ``returncode``, ``stdout`` and ``stderr`` once it ended.

    The child starts with SIGINT at its default disposition, as under a terminal (a test
    runner started in the background has it ignored, and children would inherit that).
    ``group``: the child leads its own process group and the whole group gets the signal,
    as Ctrl-C in a terminal does (worker processes get it too)."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, str(script), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=group,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + timeout

    def kill(sig):
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)

    try:
        while not ready(proc.pid):
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"{script} ended ({proc.returncode}) before it was "
                                     f"ready to be interrupted:\n{err[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{script} was not ready after {timeout} s")
            time.sleep(0.05)
        kill(signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            kill(signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_one_line_error(proc, *fragments, status=2):
    """The process failed with ``status`` and printed exactly one ``error: ...`` line to
    stderr (progress bars and warnings aside), no traceback, containing every fragment."""
    assert proc.returncode == status, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def _mount(*args):
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


class SmallDisk:
    """A folder on a filesystem with little room, for "full disk" tests.

    As root (CI and this repo's setup), a tmpfs of ``size`` bytes mounted at ``path``;
    writes beyond it fail with ENOSPC. Elsewhere a plain folder, and child processes get
    ``RLIMIT_FSIZE = size`` (writes beyond it fail with EFBIG): an equivalent that needs no
    privileges. Pass ``preexec_fn`` to the child (``run_script(..., preexec_fn=...)``).
    """

    def __init__(self, path, size):
        self.path, self.size = str(path), int(size)
        os.makedirs(self.path, exist_ok=True)
        self.mounted = os.geteuid() == 0 and _mount(
            "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", self.path)

    def preexec_fn(self):
        if self.mounted:
            return None
        size = self.size

        def limit():
            import resource
            import signal
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        return limit

    def fill(self, leave=0):
        """Fill the tmpfs up to ``leave`` free bytes (mounted case only)."""
        if not self.mounted:
            return
        st = os.statvfs(self.path)
        free = st.f_bavail * st.f_frsize - int(leave)
        if free > 0:
            with open(os.path.join(self.path, ".filler"), "wb") as f:
                f.write(b"\0" * free)

    def close(self):
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], capture_output=True)
            self.mounted = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ReadOnlyDir:
    """A folder nothing can be written into: a read-only tmpfs as root, else a folder
    without write permission."""

    def __init__(self, path):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        self.mounted = os.geteuid() == 0 and _mount("-t", "tmpfs", "-o", "ro,size=64k",
                                                    "tmpfs", self.path)
        if not self.mounted:
            os.chmod(self.path, 0o555)

    def close(self):
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], capture_output=True)
        else:
            os.chmod(self.path, 0o755)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FakeCommunicator:
    """Stands in for nnabla's MPI communicator in-process: every rank is assumed to hold
    the same values (sums are ``size`` times the value, means the value); every call is
    recorded in ``calls``."""

    def __init__(self, size, rank):
        self.size, self.rank, self.local_rank = size, rank, rank
        self.calls = []

    def all_reduce(self, data, division=False, inplace=False):
        self.calls.append(("all_reduce", len(data), division))
        for arr in data:
            arr.data = arr.data * (1 if division else self.size)

    def barrier(self):
        self.calls.append(("barrier",))

    def reduced(self):
        """How many all-reduce calls were made."""
        return sum(1 for c in self.calls if c[0] == "all_reduce")


def fake_world(monkeypatch, size=2, rank=0):
    """Make :func:`common.train.distributed.init_distributed` believe it runs as ``rank`` of
    ``size`` MPI processes on a GPU, with a :class:`FakeCommunicator` (returned)."""
    import common.train.distributed as dist

    comm = FakeCommunicator(size, rank)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", str(size))
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", str(rank))
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", str(rank))
    monkeypatch.setattr(dist, "_make_communicator", lambda ctx: comm)
    monkeypatch.setattr(dist, "_is_gpu", lambda ctx: True)
    return comm


def snapshot(folder):
    """``{relative path: bytes}`` of every file below ``folder``: compare two snapshots to
    show a refused command changed nothing."""
    from pathlib import Path

    root = Path(folder)
    return {p: (root / p).read_bytes() for p in files_under(root)}


def checkpoint_steps(run_folder):
    """Steps of the checkpoints in ``run_folder/checkpoints`` (oldest first)."""
    from pathlib import Path

    from common.train.checkpoint import CheckpointManager

    manager = CheckpointManager(Path(run_folder) / "checkpoints", clean=False)
    return [step for step, _ in manager.checkpoints()]


def files_under(folder):
    """Relative paths of every file below ``folder`` (sorted; empty if it does not exist)."""
    from pathlib import Path

    root = Path(folder)
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
