"""What a user sees in the terminal while a job runs, and how Ctrl-C stops it.

Progress bars (:func:`progress`) go to stderr; ``NNABLA_RESEARCH_NO_PROGRESS=1`` turns them
off (e.g. in CI logs).

Ctrl-C: inside :func:`interrupt_guard` (every entry script runs in one, through
:func:`common.cli.run_cli`) the first SIGINT only records the request, so it never lands
inside an nnabla forward/backward callback or half way through a file write. Work stops at
the next safe point: a training loop checks after each finished step (and writes a
checkpoint first), every progress bar checks before its next item. A second Ctrl-C stops at
once.
"""
import contextlib
import os
import signal
import sys
import threading

from common.errors import Interrupted

NO_PROGRESS_ENV = "NNABLA_RESEARCH_NO_PROGRESS"

_interrupt = {"requested": False, "message": None}


def _default_message():
    return "interrupted"


@contextlib.contextmanager
def interrupt_guard():
    """Defer SIGINT to the next :func:`check_interrupt` while the block runs (main thread
    only; elsewhere a no-op). The request is cleared when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum, frame):
        if _interrupt["requested"]:
            raise KeyboardInterrupt
        _interrupt["requested"] = True
        print("\nstopping at the next safe point (press Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _interrupt["requested"] = False
        _interrupt["message"] = None


def interrupt_requested():
    """True once Ctrl-C was pressed inside the guard."""
    return _interrupt["requested"]


@contextlib.contextmanager
def interrupt_message(describe):
    """While the block runs, an interruption found by a progress bar raises
    :class:`~common.errors.Interrupted` with ``describe()`` (e.g. the training iteration
    and how to continue)."""
    previous = _interrupt["message"]
    _interrupt["message"] = describe
    try:
        yield
    finally:
        _interrupt["message"] = previous


def check_interrupt():
    """Raise :class:`~common.errors.Interrupted` if Ctrl-C was pressed."""
    if _interrupt["requested"]:
        raise Interrupted((_interrupt["message"] or _default_message)())


def progress(iterable=None, **tqdm_kwargs):
    """A tqdm bar on stderr that stops at Ctrl-C before its next item (see
    :func:`check_interrupt`); ``NNABLA_RESEARCH_NO_PROGRESS=1`` hides it, unless
    ``disable`` is passed explicitly."""
    tqdm_kwargs.setdefault("file", sys.stderr)
    tqdm_kwargs.setdefault("dynamic_ncols", True)
    if os.environ.get(NO_PROGRESS_ENV, "").strip() not in ("", "0"):
        tqdm_kwargs.setdefault("disable", True)
    return _bar_class()(iterable, **tqdm_kwargs)


_BAR = []


def _bar_class():
    if not _BAR:
        from tqdm import tqdm

        class InterruptibleBar(tqdm):
            def __iter__(self):
                for item in super().__iter__():
                    check_interrupt()
                    yield item

        _BAR.append(InterruptibleBar)
    return _BAR[0]
