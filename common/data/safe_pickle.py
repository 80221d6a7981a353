"""Reading pickled data files without running code from them.

A pickle names functions that are called while it loads; ``pickle.load`` on a file someone
else made can therefore run anything (``os.system``, ``builtins.eval``, ...). Dataset files
that only exist as pickles (the CIFAR-10 "python version") are read with
:func:`load_data_pickle`, whose unpickler admits only what such files hold: the built-in
containers and scalars (those need no function call), numpy arrays and dtypes, and the
``latin1`` byte-string encoding Python 3 writes into protocol-2 pickles. Any other name in
the file is refused with :class:`ForbiddenGlobal` before it is looked up, let alone called.
"""
import codecs
import pickle

import numpy as np

__all__ = ["load_data_pickle", "ForbiddenGlobal"]


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle refers to a function or class outside the data-only allow list."""

    def __init__(self, module, name):
        self.qualified_name = f"{module}.{name}"
        super().__init__(f"it refers to {self.qualified_name}, which a data file never "
                         "holds; refused without running it")


def _latin1_encode(text, encoding="latin1", errors="strict"):
    # Python 3 stores bytes in protocol-2 pickles as _codecs.encode(str, "latin1"); other
    # codecs are not data and are refused (without looking them up: a lookup imports).
    if encoding not in ("latin1", "latin-1") or errors != "strict":
        raise ForbiddenGlobal("_codecs", f"encode(..., {encoding!r}, {errors!r})")
    return codecs.encode(text, "latin1")


def _numpy_globals():
    """The numpy callables arrays and scalars pickle through, under the module names the
    installed and other numpy versions (``numpy.core`` before 2.0, ``numpy._core`` after)
    write; taken from numpy's own ``__reduce__`` so they are the real functions."""
    reconstruct = np.zeros(1).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    scalar = np.int64(0).__reduce__()[0]
    out = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
           ("_codecs", "encode"): _latin1_encode}
    for package in ("numpy.core", "numpy._core"):
        out[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        out[(f"{package}.multiarray", "scalar")] = scalar
        out[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return out


class _DataUnpickler(pickle.Unpickler):
    allowed = _numpy_globals()

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(module, name) from None


def load_data_pickle(file, encoding="bytes"):
    """Unpickle ``file`` (a binary file object) admitting only containers, scalars, strings,
    bytes and numpy arrays. ``encoding`` decodes Python 2 ``str`` objects (``"bytes"`` keeps
    them as bytes, as the CIFAR-10 keys are). Raises :class:`ForbiddenGlobal` for anything
    else, and the usual unpickling errors for damaged data."""
    return _DataUnpickler(file, encoding=encoding).load()
