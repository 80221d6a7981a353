"""What a user sees in the terminal while a job runs, and how Ctrl-C stops it.

Progress bars (:func:`progress`) go to stderr; ``NNABLA_RESEARCH_NO_PROGRESS=1`` turns them
off (e.g. in CI logs).

Messages (:func:`set_verbosity`, called by every entry script): a normal run shows library log
messages from ``warning`` up and Python warnings as one ``warning: ...`` line each, without
source paths; ``-v`` shows ``info`` messages and Python's full warning text, ``-vv`` debug
messages too. nnabla's own ``[nnabla][INFO]`` lines at import are switched off by
``common/nnabla.conf``.

Ctrl-C: inside :func:`interrupt_guard` (every entry script runs in one, through
:func:`common.cli.run_cli`) the first SIGINT only records the request, so it never lands
inside an nnabla forward/backward callback or half way through a file write. Work stops at
the next safe point: a training loop checks after each finished step (and writes a
checkpoint first), every progress bar checks before its next item. A second Ctrl-C stops at
once.
"""
import contextlib
import logging
import os
import signal
import sys
import threading
import warnings

from common.errors import Interrupted

NO_PROGRESS_ENV = "NNABLA_RESEARCH_NO_PROGRESS"

_interrupt = {"requested": False, "message": None}
_LEVELS = {0: logging.WARNING, 1: logging.INFO}
_SHOW_WARNING = warnings.showwarning


class _OneLineFormatter(logging.Formatter):
    """``warning: message`` (the level in lower case, like the ``error:`` lines)."""

    def format(self, record):
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and logging.getLogger().level <= logging.DEBUG:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def set_verbosity(verbosity=0):
    """Show log messages from ``warning`` (0), ``info`` (1) or ``debug`` (2+) up, on stderr,
    one line each; Python warnings as one line (0) or in full (1+)."""
    level = _LEVELS.get(int(verbosity), logging.DEBUG)
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_one_line", False)]
    if not ours:
        for handler in list(root.handlers):  # e.g. what nnabla's import configured
            root.removeHandler(handler)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_OneLineFormatter())
        handler._one_line = True
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("nnabla").setLevel(level)
    warnings.showwarning = _one_line_warning if level >= logging.WARNING else _SHOW_WARNING


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


TICK_DELAY = 2.0  # seconds before a bar appears: quick jobs show none


@contextlib.contextmanager
def ticking(bar, delay=None, interval=1.0):
    """Keep ``bar`` (a tqdm bar) showing its elapsed time while the block runs: from ``delay``
    seconds on (default :data:`TICK_DELAY`), a thread redraws it every ``interval`` seconds,
    so one long step (a network call of minutes; nnabla and onnxruntime let other threads run
    meanwhile) is not silence. A disabled bar draws nothing."""
    delay = TICK_DELAY if delay is None else delay
    done = threading.Event()

    def redraw():
        if done.wait(delay):
            return
        while not done.is_set():
            bar.refresh()
            done.wait(interval)

    thread = None if bar.disable else threading.Thread(target=redraw, daemon=True)
    if thread is not None:
        thread.start()
    try:
        yield bar
    finally:
        done.set()
        if thread is not None:
            thread.join()
