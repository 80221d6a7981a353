"""Measure what nnabla's CPU caching allocator really obtained for one training run.

nnabla keeps every CPU array it computes with (``CpuCachedArray``) in a caching allocator
(``src/nbla/memory/caching_allocator_with_buckets.cpp``): requests of at most 1 MiB are cut
out of 1 MiB chunks ("small" pool), larger ones get a block of their own rounded up to
128 KiB ("large" pool); freed blocks stay cached and are merged with free neighbours, so the
memory the allocator obtained from the system (its ``used`` figure) only grows: it is the
high-water mark of the run, fragmentation included. ``nnabla._init.print_memory_cache_map()``
prints, with C ``printf``, one line per pool holding the device's total ``used`` (both pools
together) and the pool's cached free blocks::

    cache_map(device_id: , mem_type: small, used: 3.00MB, free: 1.22MB):
     [512.00B, 1.21MB]

:func:`measure` runs ``iterations`` training iterations of a network in a **fresh child
process** (so the cache starts empty and nothing the parent did is counted) and returns the
``used`` bytes after every iteration. The printed sizes are human readable with two decimals;
``used`` is a multiple of 128 KiB (1 MiB chunks plus large blocks rounded to 128 KiB), so
below 1 GiB it is recovered exactly (above, to +-5 MiB).

:func:`physical_memory` and :func:`cuda_device_memory` say how much memory the machine and
the current GPU have (for ``plan.py``, ``eval.py`` and :mod:`ooctrain.throughput`).
"""
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from common.errors import UserError

__all__ = ["parse_cache_map", "read_cache_map", "pool_used", "measure", "physical_memory",
           "cuda_device_memory"]

_UNIT = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
_LINE = re.compile(r"cache_map\(device_id: ?(?P<dev>[^,]*), mem_type: (?P<pool>\w+), "
                   r"used: (?P<used>[-0-9.]+)(?P<uu>[KMG]?B), free: (?P<free>[-0-9.]+)"
                   r"(?P<fu>[KMG]?B)\)")
_GRANULE = 128 << 10


def _bytes(value, unit, granule=None):
    exact = float(value) * _UNIT[unit]
    if granule and unit != "GB":
        # two decimals of KB/MB resolve multiples of 512 KiB/128 KiB exactly
        return int(round(exact / granule)) * granule
    return int(round(exact))


def parse_cache_map(text):
    """``{(device_id, pool): {"used": bytes, "free": bytes}}`` from the printed cache map."""
    out = {}
    for m in _LINE.finditer(text):
        pool = m.group("pool")
        out[(m.group("dev").strip(), pool)] = {
            "used": _bytes(m.group("used"), m.group("uu"), _GRANULE),
            "free": _bytes(m.group("free"), m.group("fu"))}
    return out


def read_cache_map():
    """Capture ``nnabla._init.print_memory_cache_map()`` (C printf on fd 1) and parse it."""
    import nnabla._init as nn_init

    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            nn_init.print_memory_cache_map()
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode("utf-8", "replace")
    return parse_cache_map(text)


def pool_used(cache_map, device_id=""):
    """Bytes the CPU allocator of ``device_id`` obtained from the system (both pools; every
    pool's line repeats the device total) and the free bytes cached per pool:
    ``{"used": bytes, "free_small": bytes, "free_large": bytes}``."""
    out = {"used": 0}
    for pool in ("small", "large"):
        entry = cache_map.get((device_id, pool), {})
        out["used"] = max(out["used"], entry.get("used", 0))
        out[f"free_{pool}"] = entry.get("free", 0)
    return out


def _child(spec_path, out_path):
    """Child process: build the graph, train, record the cache map after each iteration."""
    import nnabla as nn

    from common.context import get_context
    from ooctrain.graph import build_training_graph, run_iterations

    nn.set_default_context(get_context("cpu"))      # as train.py --context cpu
    spec = json.loads(Path(spec_path).read_text())
    graph = build_training_graph(spec)
    history = []
    loss = run_iterations(graph, spec.get("solver", "momentum"),
                          spec.get("weight_decay", 1e-4), spec.get("iterations", 3),
                          after_iteration=lambda i: history.append(pool_used(read_cache_map())))
    Path(out_path).write_text(json.dumps({"history": history, "loss": loss}))


def measure(spec, timeout=600):
    """Run the training iterations of ``spec`` (see :func:`ooctrain.graph.build_training_graph`;
    keys ``solver``, ``weight_decay``, ``iterations`` too) in a fresh CPU process; return
    ``{"history": [{"used": bytes, "free_small": bytes, "free_large": bytes}, ...],
    "used": bytes after the last iteration, "loss": float}``."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    paths = [str(root), str(root / "out-of-core-training")]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "out.json")
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run([sys.executable, "-m", "ooctrain.measure", str(spec_path),
                               str(out_path)], env=env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0 or not out_path.exists():
            lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines()
                     if "[nnabla][INFO]" not in ln]
            raise UserError(f"the allocator measurement failed (exit {proc.returncode}): "
                            f"{lines[-1] if lines else 'no output'}")
        result = json.loads(out_path.read_text())
    result["used"] = result["history"][-1]["used"]
    return result


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])


def physical_memory():
    """The machine's RAM in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def cuda_device_memory():
    """Total memory of the current CUDA device, or None without the CUDA extension
    (``nnabla_ext.cuda.init.get_device_memory_size()`` returns ``[free, total]``)."""
    try:
        import nnabla_ext.cuda.init as cuda_init
        info = cuda_init.get_device_memory_size()
        return int(info[1] if isinstance(info, (list, tuple)) else info)
    except Exception:   # no extension, no driver, no such function
        return None
