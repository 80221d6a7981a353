"""Read and write nnabla parameter files (.h5) without touching nnabla's global scope.

nnabla stores one HDF5 dataset per parameter, named by its scoped path, with the
attributes ``index`` (creation order) and ``need_grad``. Official pretrained files are
read unchanged through these helpers; values are cast to float32 because nnabla
computes in float32 (some official files store float64).
"""
import os
from collections import OrderedDict

import h5py
import numpy as np

from common.errors import UserError
from common.fileio import atomic_write


def read_param_file(path, dtype=np.float32):
    """Return ``OrderedDict[name -> ndarray]`` in creation order, plus ``need_grad`` flags.

    Returns ``(params, need_grad)``; both dicts share the same keys.
    """
    if not os.path.isfile(path):
        raise UserError(f"parameter file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            entries = []

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    index = int(obj.attrs.get("index", len(entries)))
                    entries.append((index, name, obj[()], bool(obj.attrs.get("need_grad", True))))

            f.visititems(visit)
    except OSError as exc:
        raise UserError(f"not a readable nnabla parameter file: {path} ({exc})") from None
    if not entries:
        raise UserError(f"parameter file holds no parameters: {path}")
    entries.sort(key=lambda e: e[0])
    params = OrderedDict((name, np.asarray(value, dtype=dtype)) for _, name, value, _ in entries)
    need_grad = OrderedDict((name, ng) for _, name, _, ng in entries)
    return params, need_grad


def write_param_file(path, params, need_grad=None):
    """Write ``params`` (name -> array) as an nnabla parameter file, atomically."""
    with atomic_write(path, "wb") as fh, h5py.File(fh, "w") as f:
        for index, (name, value) in enumerate(params.items()):
            ds = f.create_dataset(name, data=np.asarray(value))
            ds.attrs["index"] = index
            ds.attrs["need_grad"] = bool(need_grad[name]) if need_grad else True


def set_nnabla_parameters(params, scope="", need_grad=None):
    """Register ``params`` as nnabla parameters under ``scope`` (e.g. ``"vocals"``)."""
    import nnabla as nn

    for name, value in params.items():
        full = f"{scope}/{name}" if scope else name
        var = nn.Variable.from_numpy_array(np.asarray(value, dtype=np.float32))
        var.need_grad = bool(need_grad[name]) if need_grad else True
        nn.parameter.set_parameter(full, var)


def find_weight_files(directory, names, wanted=None, what="weight"):
    """``OrderedDict[name -> path]`` of ``<name>.h5`` files in ``directory`` or one of its
    sub-folders (extracted archives often add one level). ``names``: the names a model knows,
    in order; ``wanted``: the ones required (default: every known name present, at least one).
    Missing files are a :class:`UserError` naming them and what was found."""
    folders = [directory] + sorted(
        os.path.join(directory, d) for d in os.listdir(directory)
        if os.path.isdir(os.path.join(directory, d)))
    candidates = {}
    for folder in folders:
        for f in sorted(os.listdir(folder)):
            stem, ext = os.path.splitext(f)
            full = os.path.join(folder, f)
            if ext.lower() == ".h5" and os.path.isfile(full) and stem not in candidates:
                candidates[stem] = full
    if wanted is None:
        wanted = [n for n in names if n in candidates]
        if not wanted:
            raise UserError(f"{directory}: no {what} files "
                            f"({', '.join(n + '.h5' for n in names)})")
    missing = [n for n in wanted if n not in candidates]
    if missing:
        have = ", ".join(sorted(candidates)) or "none"
        raise UserError(f"{directory}: missing {what} file(s) "
                        + ", ".join(n + ".h5" for n in missing) + f" (found: {have})")
    return OrderedDict((n, candidates[n]) for n in wanted)
