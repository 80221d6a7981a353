"""Helpers for benchmarks that run every variant in its own child process.

A benchmark script re-invokes itself per variant (``script.py --variant NAME --workdir
DIR ...``); the child does the work, records its own peak resident set size and writes a
JSON result into the work directory; the parent starts the children one after another with
:func:`spawn_child` and collects the results. Each variant's peak RSS is thus its own, not
the maximum over everything the parent has done.

Public API
----------
``peak_rss_mb()``, ``rss_mb()``: this process's peak / current resident set size (MB)
``pin_threads(threads)``: restrict this process to the first ``threads`` allowed cores
``thread_env(threads, env=None)``: environment with the BLAS/OpenMP thread variables set
``write_child_result(path, result)``: add ``peak_rss_mb`` and write the JSON result
``spawn_child(cmd, result_path, threads=0, name=None)``: run a child, return its result
dict plus ``process_s`` (the child's wall time as the parent saw it)
"""
import json
import os
import subprocess
import sys
import time

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _status_kb(key):
    """A ``/proc/self/status`` value in kB (Linux), or None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mb():
    """Peak resident set size of this process in MB (``VmHWM``; ``ru_maxrss`` elsewhere)."""
    kb = _status_kb("VmHWM")
    if kb is None:  # not Linux: ru_maxrss is kB on Linux, bytes on macOS
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            kb //= 1024
    return kb / 1024.0


def rss_mb():
    """Current resident set size in MB, or None where ``/proc`` is missing."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024.0


def pin_threads(threads):
    """Restrict this process to its first ``threads`` allowed cores (no-op for 0/None or
    where unsupported)."""
    if not threads:
        return
    try:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:int(threads)])
    except (AttributeError, OSError):
        pass


def thread_env(threads, env=None):
    """Copy of ``env`` (default ``os.environ``) with the OpenMP/BLAS thread counts set to
    ``threads`` (unchanged for 0/None)."""
    env = dict(os.environ if env is None else env)
    if threads:
        for key in THREAD_VARS:
            env[key] = str(int(threads))
    return env


def write_child_result(path, result):
    """Add this process's ``peak_rss_mb`` to ``result`` and write it as JSON to ``path``."""
    result = dict(result)
    result["peak_rss_mb"] = peak_rss_mb()
    with open(path, "w") as fh:
        json.dump(result, fh)
    return result


def spawn_child(cmd, result_path, threads=0, name=None, tail_lines=25):
    """Run ``cmd`` (argv list) as a child process and return the JSON dict it wrote to
    ``result_path``, plus ``process_s`` (its wall time). A failing child raises
    ``RuntimeError`` with the last ``tail_lines`` lines of its stderr (or stdout)."""
    name = name or os.path.basename(str(cmd[-1]))
    try:
        os.unlink(result_path)
    except FileNotFoundError:
        pass
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=thread_env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-tail_lines:])
        raise RuntimeError(f"variant {name!r} failed (exit {proc.returncode}):\n{tail}")
    with open(result_path) as fh:
        result = json.load(fh)
    result["process_s"] = wall
    return result
