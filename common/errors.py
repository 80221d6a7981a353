"""User-facing errors: one clear line and a non-zero exit, never a traceback dump."""
import sys


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, wrong flag).

    Entry scripts let it propagate to :func:`run_cli`, which prints the message as
    one line on stderr and exits with status 2.
    """


def run_cli(main, argv=None):
    """Run ``main(argv)`` as a command-line program.

    ``UserError`` becomes ``error: <message>`` on stderr and exit status 2;
    Ctrl-C becomes exit status 130. Anything else is a bug and keeps its traceback.
    """
    try:
        status = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
