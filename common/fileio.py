"""Writing outputs so that nothing the user had is lost.

* :func:`atomic_write` / :func:`atomic_path`: a file appears under its final name only
  when it is complete (temp file beside it, fsync, rename); a full disk or an unwritable
  folder is one :class:`OutputError` line and leaves no partial file behind.
* :func:`check_output_location`: before any weights are loaded or compute runs, an output
  folder that cannot be written (a path under a file, a read-only filesystem, no write
  permission) is refused in one line.
* :func:`refuse_overwriting_inputs`: no output of a call may replace one of its inputs.
"""
import contextlib
import os
import tempfile
import zipfile
from pathlib import Path

from common.errors import UserError, describe_os_error


class OutputError(UserError):
    """An output could not be written (full disk, read-only or unwritable folder)."""


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory=False):
    """Permissions a plain ``open``/``mkdir`` would give (temp files start at 0600/0700)."""
    return (0o777 if directory else 0o666) & ~_umask()


def _make_parent(path):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder of {path}: "
                          f"{describe_os_error(exc)}") from None


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside ``path`` with the same suffix (for writers that take a file
    name: soundfile, PIL, nnabla, matplotlib); on clean exit it is fsynced and renamed over
    ``path``. On any error the temp file is removed, so ``path`` is always either the old
    complete file or the new complete one; an OS error becomes one :class:`OutputError`."""
    path = Path(path)
    _make_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp.{os.getpid()}.",
                                   suffix=path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {describe_os_error(exc)}") from None
    try:
        yield Path(tmp)
        os.chmod(tmp, default_mode())  # mkstemp makes 0600; match what open() gives
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, UserError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temp file beside ``path``; on clean exit flush, fsync, rename over
    ``path`` and fsync the directory. On error the temp file is removed, so
    ``path`` is always either the old complete file or the new complete one; an OS error
    (e.g. a full disk) becomes one :class:`OutputError`."""
    path = Path(path)
    _make_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp.{os.getpid()}.", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {describe_os_error(exc)}") from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            os.fchmod(fd, default_mode())  # mkstemp makes 0600; match what open() gives
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    fsync_dir(path.parent)


def write_npz(f, arrays):
    """Write ``arrays`` (name -> array) to the open binary file ``f`` as an uncompressed
    ``.npz`` (what ``np.savez`` writes). Unlike ``np.savez`` the zip file is closed even
    when a write fails (a full disk); numpy's stays open and its finaliser then prints a
    traceback at exit. Use it inside :func:`atomic_write`."""
    import numpy as np

    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def check_output_location(path, flag="--out-dir"):
    """Refuse in one line a folder ``path`` that cannot hold outputs: a path under a file
    (or a file itself), a read-only filesystem, a folder without write permission. Writes
    and removes one empty probe file in ``path`` or its nearest existing ancestor; creates
    nothing else."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists():
        if existing.is_symlink():  # dangling link: mkdir would fail on it
            raise OutputError(f"{flag} {path}: {existing} is a broken link")
        parent = existing.parent
        if parent == existing:
            break
        existing = parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"lies under the file {existing}"
        raise OutputError(f"{flag} {path}: {where}, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{flag} {path}: cannot write in {existing} "
                          f"({exc.strerror or exc})") from None
    return path


def refuse_overwriting_inputs(outputs, inputs, flag="--out-dir"):
    """One-line error if any planned output path is one of the ``inputs`` (same file after
    resolving links), before anything is written."""
    def key(p):
        try:
            st = os.stat(p)
            return ("inode", st.st_dev, st.st_ino)
        except OSError:
            return ("path", os.path.realpath(p))

    taken = {key(p): p for p in inputs}
    for out in outputs:
        hit = taken.get(key(out))
        if hit is not None:
            raise OutputError(f"{out} would overwrite the input {hit}; choose another {flag}")
