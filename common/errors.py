"""User-facing errors: one clear line and a non-zero exit, never a traceback dump."""
import errno
import sys

# OS errors that come from the user's environment (a full disk, a read-only or foreign
# folder), not from a bug: reported in one line like a UserError.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                      errno.EPERM, errno.EIO, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, wrong flag).

    Entry scripts let it propagate to :func:`run_cli`, which prints the message as
    one line on stderr and exits with status 2.
    """


class Interrupted(Exception):
    """The user pressed Ctrl-C; the message says where the work stopped and how to go on.
    :func:`run_cli` prints it and exits with status 130."""


def describe_os_error(exc):
    """``No space left on device: /path`` for an OSError (the path when it has one)."""
    what = exc.strerror or type(exc).__name__
    where = exc.filename if exc.filename is not None else None
    return f"{what}: {where}" if where else what


def run_cli(main, argv=None):
    """Run ``main(argv)`` as a command-line program.

    ``UserError`` becomes ``error: <message>`` on stderr and exit status 2, as does an
    OS error of the user's environment (full disk, read-only or unwritable folder); Ctrl-C
    becomes one line and exit status 130 (the first Ctrl-C lets a training loop finish its
    step and write a checkpoint, see :mod:`common.terminal`). Anything else is a bug and
    keeps its traceback.
    """
    from common.terminal import interrupt_guard

    try:
        with interrupt_guard():
            status = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # e.g. piped into `head`
        sys.exit(0)
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)
