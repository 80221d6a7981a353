"""User-facing errors: what :func:`common.cli.run_cli` turns into one clear line and a
non-zero exit instead of a traceback."""
import errno

# OS errors that come from the user's environment (a full disk, a read-only or foreign
# folder), not from a bug: reported in one line like a UserError.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                      errno.EPERM, errno.EIO, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, wrong flag).

    Entry scripts let it propagate to :func:`common.cli.run_cli`, which prints the message as
    one line on stderr and exits with status 2.
    """


class Interrupted(Exception):
    """The user pressed Ctrl-C; the message says where the work stopped and how to go on.
    :func:`common.cli.run_cli` prints it and exits with status 130."""


def describe_os_error(exc):
    """``No space left on device: /path`` for an OSError (the path when it has one)."""
    what = exc.strerror or type(exc).__name__
    where = exc.filename if exc.filename is not None else None
    return f"{what}: {where}" if where else what
