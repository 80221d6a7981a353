"""A minimal entry script for test_terminal.py: imports nnabla, logs at every level and
raises a Python warning, as library code does during a run."""
import logging
import sys
import warnings

from common.cli import Parser, run_cli


def main(argv=None):
    Parser(prog="terminal").parse_args(argv)
    import nnabla  # noqa: F401  (its import logs at INFO level)

    log = logging.getLogger("common.example")
    log.debug("a debug detail")
    log.info("an info message")
    log.warning("a warning message")
    warnings.warn("a python warning", UserWarning, stacklevel=1)
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
