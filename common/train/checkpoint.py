"""Crash-safe training checkpoints: one self-checking ``.npz`` file per save.

Each ``ckpt_<step>.npz`` holds every nnabla parameter, every solver's state
(per-parameter buffers such as Adam's moments plus its iteration count ``t``,
and the learning rate), the RNG states (numpy global, python ``random``,
``nnabla.random.prng`` and any RandomState/Generator passed in ``extra``), the
run config, the metric and a SHA-256 digest over all of it.

Files are written to a temp name in the same directory, fsynced, renamed over
the final name and the directory is fsynced, so a process killed at any moment
leaves either no file or a complete one under ``ckpt_*.npz``; stray temp files
are removed by the next :class:`CheckpointManager`. ``best.npz`` is a hard link
(copy where links are unsupported) to the best checkpoint by metric, so pruning
old checkpoints never removes it.

Typical loop::

    ckpt = CheckpointManager(out_dir / "checkpoints", keep_last=3)
    start, rng = 0, np.random.RandomState(seed)
    if args.resume and (state := ckpt.load_latest()) is not None:
        start, _, extra = ckpt.restore(state, {"main": solver})
        rng = extra["rng"]
    for step in range(start + 1, n_steps + 1):
        ...
        if step % save_every == 0:
            ckpt.save(step, {"main": solver}, vars(args), metric=val_loss, extra={"rng": rng})
"""
import hashlib
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.fileio import atomic_write, fsync_dir, write_npz

FORMAT = "nnabla-research-checkpoint"
VERSION = 1
BEST_NAME = "best.npz"
_CKPT_RE = re.compile(r"^ckpt_(\d+)\.npz$")
_TMP_RE = re.compile(r"^\.(?:ckpt_\d+|best)\.npz\.tmp\.(\d+)\.")
_META = "__meta__"
_DIGEST = "__digest__"


class CheckpointError(UserError):
    """A checkpoint file is unreadable, corrupt or does not fit the model."""


class Checkpoint:
    """A loaded checkpoint (plain numpy data; nothing applied yet)."""

    def __init__(self, path, meta, arrays):
        self.path = Path(path)
        self.meta = meta
        self.step = int(meta["step"])
        self.epoch = meta.get("epoch")
        self.metric = meta.get("metric")
        self.mode = meta.get("mode")
        self.config = meta.get("config") or {}
        self.params = {n: arrays["param/" + n] for n in meta["params"]}
        self.need_grad = dict(meta["need_grad"])
        self.solvers = {}
        for sname, info in meta["solvers"].items():
            states = {}
            for pname, keys in info["keys"].items():
                states[pname] = {k: arrays[f"solver/{sname}/{pname}/{k}"] for k in keys}
            self.solvers[sname] = {"type": info["type"], "lr": info["lr"],
                                   "t": info["t"], "states": states}
        self._arrays = arrays

    def extra(self):
        """Decode ``extra``: RandomState/Generator objects rebuilt, arrays as numpy."""
        out = {}
        for key, item in self.meta["extra"].items():
            kind = item["kind"]
            if kind == "array":
                out[key] = self._arrays["extra/" + key]
            elif kind == "random_state":
                rs = np.random.RandomState()
                rs.set_state(_decode(item["state"]))
                out[key] = rs
            elif kind == "generator":
                state = _decode(item["state"])
                bitgen = getattr(np.random, state["bit_generator"])()
                bitgen.state = state
                out[key] = np.random.Generator(bitgen)
            else:
                out[key] = item["value"]
        return out

    def __repr__(self):
        return f"Checkpoint(step={self.step}, path={str(self.path)!r})"


# ---------------------------------------------------------------- encoding

def _encode(obj):
    """JSON-safe form of RNG states and similar (ndarrays tagged, tuples as lists)."""
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _decode(obj):
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def _python_random_state_to_json(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_random_state_from_json(data):
    version, internal, gauss = data
    return (version, tuple(internal), gauss)


def _json_default(obj):
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _digest(arrays):
    """SHA-256 over names, dtypes, shapes and bytes of every array, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(repr(a.shape).encode())
        h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


# ---------------------------------------------------------------- save/load

def _collect(step, solvers, config, metric, mode, extra, epoch):
    """All arrays plus the JSON meta for one checkpoint."""
    import nnabla as nn
    import nnabla.random

    arrays = {}
    params = nn.get_parameters(grad_only=False)
    for name, var in params.items():
        arrays["param/" + name] = np.array(var.d, copy=True)
    solver_meta = {}
    for sname, solver in (solvers or {}).items():
        if "/" in sname:
            raise ValueError(f"solver name {sname!r} must not contain '/'")
        keys, ts = {}, {}
        for pname, state in solver.get_states().items():
            ts[pname] = int(state.t)
            keys[pname] = sorted(state.pstate)
            for k, var in state.pstate.items():
                arrays[f"solver/{sname}/{pname}/{k}"] = np.array(var.d, copy=True)
        solver_meta[sname] = {"type": solver.name, "lr": float(solver.learning_rate()),
                              "t": ts, "keys": keys}
    extra_meta = {}
    for key, value in (extra or {}).items():
        key = str(key)
        if "/" in key:
            raise ValueError(f"extra key {key!r} must not contain '/'")
        if isinstance(value, np.random.RandomState):
            extra_meta[key] = {"kind": "random_state",
                               "state": _encode(value.get_state(legacy=False))}
        elif isinstance(value, np.random.Generator):
            extra_meta[key] = {"kind": "generator",
                               "state": _encode(value.bit_generator.state)}
        elif isinstance(value, np.ndarray):
            arrays["extra/" + key] = value
            extra_meta[key] = {"kind": "array"}
        else:
            try:
                json.dumps(value, default=_json_default)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"checkpoint extra[{key!r}] cannot be stored: {exc}") from None
            extra_meta[key] = {"kind": "json", "value": value}
    try:
        json.dumps(config or {}, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"checkpoint config cannot be stored as JSON: {exc}") from None
    meta = {
        "format": FORMAT, "version": VERSION, "step": int(step),
        "epoch": None if epoch is None else int(epoch),
        "metric": None if metric is None else float(metric), "mode": mode,
        "config": config or {},
        "params": list(params), "need_grad": {n: bool(v.need_grad) for n, v in params.items()},
        "solvers": solver_meta, "extra": extra_meta,
        "rng": {"numpy": _encode(np.random.get_state(legacy=False)),
                "python": _python_random_state_to_json(random.getstate()),
                "nnabla": _encode(nnabla.random.prng.get_state(legacy=False))},
    }
    text = json.dumps(meta, default=_json_default, sort_keys=True)
    arrays[_META] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    arrays[_DIGEST] = np.frombuffer(_digest(arrays).encode("ascii"), dtype=np.uint8)
    return arrays


def load_checkpoint(path):
    """Read and verify one checkpoint file; CheckpointError if it is bad in any way."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # truncated zip, bad CRC, bad .npy header, ...
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    digest = arrays.pop(_DIGEST, None)
    if digest is None or _META not in arrays:
        raise CheckpointError(f"{path} is not a checkpoint written by common.train.checkpoint")
    if digest.tobytes().decode("ascii", "replace") != _digest(arrays):
        raise CheckpointError(f"checkpoint {path} failed its checksum")
    try:
        meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    except ValueError:
        raise CheckpointError(f"checkpoint {path} has unreadable metadata") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has unsupported format "
                              f"{meta.get('format')!r} v{meta.get('version')}")
    try:
        return Checkpoint(path, meta, arrays)
    except KeyError as exc:
        raise CheckpointError(f"checkpoint {path} is missing array {exc}") from None


def _set_parameters(params, need_grad=None, strict=True):
    """Copy arrays into nnabla's parameter registry; shapes must match exactly.
    Everything is checked before anything is written."""
    import nnabla as nn

    current = nn.get_parameters(grad_only=False)
    if strict:
        missing = sorted(set(current) - set(params))
        if missing:
            raise CheckpointError(f"checkpoint lacks {len(missing)} model parameter(s), "
                                  f"e.g. {missing[0]!r}")
    for name, value in params.items():
        var = current.get(name)
        if var is not None and tuple(var.shape) != tuple(value.shape):
            raise CheckpointError(f"parameter {name!r}: checkpoint shape {tuple(value.shape)} "
                                  f"!= model shape {tuple(var.shape)}")
    for name, value in params.items():
        if name in current:
            current[name].d = value
        else:
            nn.parameter.get_parameter_or_create(
                name, value.shape, initializer=value,
                need_grad=(need_grad or {}).get(name, True))


def _check_solver(ckpt, sname, solver):
    """The saved state for ``solver``, after checking it fits exactly."""
    saved = ckpt.solvers.get(sname)
    if saved is None:
        raise CheckpointError(f"checkpoint {ckpt.path} has no solver {sname!r} "
                              f"(it has: {', '.join(ckpt.solvers) or 'none'})")
    if saved["type"] != solver.name:
        raise CheckpointError(f"solver {sname!r}: checkpoint is {saved['type']}, "
                              f"model uses {solver.name}")
    states = solver.get_states()
    if set(states) != set(saved["states"]):
        diff = sorted(set(states) ^ set(saved["states"]))
        raise CheckpointError(f"solver {sname!r}: parameter set differs from the "
                              f"checkpoint, e.g. {diff[0]!r}")
    for pname, state in states.items():
        buffers = saved["states"][pname]
        if set(state.pstate) != set(buffers):
            raise CheckpointError(f"solver {sname!r}/{pname}: state keys "
                                  f"{sorted(state.pstate)} != {sorted(buffers)}")
        for key, var in state.pstate.items():
            if tuple(var.shape) != tuple(buffers[key].shape):
                raise CheckpointError(f"solver {sname!r}/{pname}/{key}: shape "
                                      f"{tuple(buffers[key].shape)} != {tuple(var.shape)}")
    return saved


def restore(ckpt, solvers=None, strict=True):
    """Apply a loaded checkpoint: parameters, solver states, RNG states.

    Call it after building the graph and ``solver.set_parameters(...)``, at the
    top parameter scope. Solvers are checked before anything is changed.
    Returns ``(step, config, extra)``; RandomState objects in ``extra`` are
    fresh objects to rebind (``rng = extra["rng"]``).
    """
    import nnabla.random

    solvers = solvers or {}
    saved_states = {sname: _check_solver(ckpt, sname, s) for sname, s in solvers.items()}
    _set_parameters(ckpt.params, ckpt.need_grad, strict=strict)
    for sname, solver in solvers.items():
        saved = saved_states[sname]
        states = solver.get_states()
        for pname, state in states.items():
            for key, var in state.pstate.items():
                var.d = saved["states"][pname][key]
            state.t = saved["t"][pname]
        solver.set_states(states)  # t only reaches the solver through set_states
        solver.set_learning_rate(saved["lr"])
    rng = ckpt.meta["rng"]
    np.random.set_state(_decode(rng["numpy"]))
    random.setstate(_python_random_state_from_json(rng["python"]))
    nnabla.random.prng.set_state(_decode(rng["nnabla"]))
    return ckpt.step, ckpt.config, ckpt.extra()


def load_parameters_only(path, set_params=True):
    """Parameters of a checkpoint for evaluation, as ``{name: ndarray}``.

    ``path`` is a checkpoint file, or a checkpoint directory (its ``best.npz``
    if present, else its newest valid checkpoint). With ``set_params`` the
    arrays are also put into nnabla's parameter registry (created when absent,
    shape-checked when present).
    """
    path = Path(path)
    if path.is_dir():
        manager = CheckpointManager(path, clean=False)
        ckpt = manager.load_best() or manager.load_latest()
        if ckpt is None:
            raise CheckpointError(f"no usable checkpoint in {path}")
    else:
        ckpt = load_checkpoint(path)
    if set_params:
        _set_parameters(ckpt.params, ckpt.need_grad, strict=False)
    return ckpt.params


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CheckpointManager:
    """Saves, prunes and finds checkpoints in ``directory``.

    Keeps the ``keep_last`` newest ``ckpt_<step>.npz`` plus ``best.npz``.
    Meant to be used by one process (rank 0 under MPI).
    """

    def __init__(self, directory, keep_last=3, clean=True):
        if int(keep_last) < 1:
            raise ValueError("keep_last must be >= 1")
        self.directory = Path(directory)
        self.keep_last = int(keep_last)
        self._best_metric = None
        self._best_loaded = False
        if clean:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temps()
            # A kill between a save's rename and its pruning leaves one checkpoint too many.
            existing = self.checkpoints()
            if len(existing) > self.keep_last:
                self._prune(existing[-1][0])

    @property
    def best_path(self):
        return self.directory / BEST_NAME

    def path_for(self, step):
        return self.directory / f"ckpt_{int(step):08d}.npz"

    def checkpoints(self):
        """``[(step, path)]`` of checkpoint files present, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _CKPT_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def _remove_stale_temps(self):
        """Delete temp files left by processes that died mid-save."""
        for p in self.directory.iterdir():
            m = _TMP_RE.match(p.name)
            if m and not _pid_alive(int(m.group(1))):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass

    def save(self, step, solvers, config=None, metric=None, mode="min", extra=None, epoch=None):
        """Write the checkpoint for ``step`` and return its path.

        ``solvers``: ``{name: nnabla Solver}``. ``config``: JSON-able dict (Paths
        become strings). ``metric``/``mode``: lower (``min``) or higher (``max``)
        is better; the best checkpoint is also kept as ``best.npz``. ``extra``:
        JSON-able values, numpy arrays, RandomState or Generator objects.

        Checkpoints with a step above ``step`` are deleted: they belong to an
        abandoned run (a fresh start or an older resume point in the same dir)
        and must not be picked up by a later ``load_latest``.
        """
        if mode not in ("min", "max"):
            raise ValueError("mode must be 'min' or 'max'")
        arrays = _collect(step, solvers, config, metric, mode, extra, epoch)
        path = self.path_for(step)
        with atomic_write(path, "wb") as f:
            write_npz(f, arrays)
        if metric is not None and self._is_better(float(metric), mode):
            self._publish_best(path)
            self._best_metric = float(metric)
        self._prune(step)
        return path

    def _is_better(self, metric, mode):
        if not np.isfinite(metric):
            return False
        if not self._best_loaded:
            self._best_loaded = True
            best = self._read_best_quietly()
            if best is not None and best.metric is not None:
                self._best_metric = best.metric
        if self._best_metric is None:
            return True
        return metric < self._best_metric if mode == "min" else metric > self._best_metric

    def _read_best_quietly(self):
        if not self.best_path.exists():
            return None
        try:
            return load_checkpoint(self.best_path)
        except CheckpointError as exc:
            warnings.warn(f"ignoring unusable {self.best_path}: {exc}", stacklevel=3)
            return None

    def _publish_best(self, path):
        """Point best.npz at ``path`` atomically: link (or copy) to a temp name, rename."""
        tmp = self.directory / f".{BEST_NAME}.tmp.{os.getpid()}.link"
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        try:
            os.link(path, tmp)
        except OSError:
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
        os.replace(tmp, self.best_path)
        fsync_dir(self.directory)

    def _prune(self, current_step):
        entries = self.checkpoints()
        doomed = [p for s, p in entries if s > current_step]
        kept = [(s, p) for s, p in entries if s <= current_step]
        doomed += [p for _, p in kept[:-self.keep_last]]
        for p in doomed:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        if doomed:
            fsync_dir(self.directory)

    def load_latest(self):
        """Newest checkpoint that reads and verifies, or None. Bad files are
        skipped with a warning naming them."""
        for _, path in reversed(self.checkpoints()):
            try:
                return load_checkpoint(path)
            except CheckpointError as exc:
                warnings.warn(f"skipping checkpoint {path}: {exc}", stacklevel=2)
        return None

    def load_best(self):
        """The best checkpoint, or None if there is none (or it is unusable)."""
        return self._read_best_quietly()

    def restore(self, ckpt, solvers=None, strict=True):
        """See :func:`restore`."""
        return restore(ckpt, solvers, strict=strict)

    def resume(self, solvers=None, strict=True):
        """``restore(load_latest())``, or None when there is nothing to resume."""
        ckpt = self.load_latest()
        if ckpt is None:
            return None
        return self.restore(ckpt, solvers, strict=strict)
