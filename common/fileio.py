"""Crash-safe file writing shared by checkpoints, configs, audio, scores and parameter files."""
import contextlib
import os
import tempfile
from pathlib import Path


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory=False):
    """Permissions a plain ``open``/``mkdir`` would give (temp files start at 0600/0700)."""
    return (0o777 if directory else 0o666) & ~_umask()


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temp file beside ``path``; on clean exit flush, fsync, rename over
    ``path`` and fsync the directory. On error the temp file is removed, so
    ``path`` is always either the old complete file or the new complete one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp.{os.getpid()}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            os.fchmod(fd, default_mode())  # mkstemp makes 0600; match what open() gives
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory):
    """fsync a directory so a rename/unlink inside it survives a power cut."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)
