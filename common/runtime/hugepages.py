"""Keep numpy from asking for transparent huge pages while a call allocates short-lived buffers.

On Linux, numpy (>= 1.20) advises the kernel to back every array of 4 MiB or more with 2 MiB
huge pages (``madvise(MADV_HUGEPAGE)``), which pays off for long-lived arrays. A separation
call instead allocates a few hundred MB afresh every time, and on the 2-core VM the
benchmarks run on (transparent huge pages in ``madvise`` mode) faulting such fresh huge
pages in intermittently stalled a 30 s X-UMX separation for 0.3-1.3 s, in no fixed step,
while with ordinary pages the same call took the same time on every run
(x-umx/bench/README.md). :func:`small_pages` switches numpy's advice off for the duration of
a block (the switch is process-wide; nested and concurrent blocks restore it once the last
one ends). It changes where memory comes from, never a value.
"""
import threading
from contextlib import contextmanager

_lock = threading.Lock()
_active = 0
_saved = None


def _switch():
    """numpy's setter of the huge-page advice (returns the previous setting), or None."""
    import numpy

    for module in ("_core", "core"):  # numpy 2 renamed numpy.core
        multiarray = getattr(getattr(numpy, module, None), "multiarray", None)
        setter = getattr(multiarray, "_set_madvise_hugepage", None)
        if setter is not None:
            return setter
    return None


@contextmanager
def small_pages():
    """No huge-page advice for arrays numpy allocates inside the block."""
    global _active, _saved
    setter = _switch()
    if setter is None:
        yield
        return
    with _lock:
        if not _active:
            _saved = setter(False)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if not _active:
                setter(_saved)
