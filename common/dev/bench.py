"""Helpers for benchmarks that run every variant in its own child process.

A benchmark script re-invokes itself per variant (``script.py --variant NAME --workdir
DIR ...``); the child does the work, records its own peak resident set size and writes a
JSON result into the work directory; the parent starts the children one after another with
:func:`spawn_child` and collects the results. Each variant's peak RSS is thus its own, not
the maximum over everything the parent has done.

:func:`benchmark_main` is that parent/child harness for a script: its command line
(``--variants``, ``--threads``, ``--seed``, ``--repeats``, ``--json``, ``--workdir``,
``--keep`` and the hidden ``--variant``), a ``prepare`` child followed by one child per
variant (each repeat in alternating order; the run of median time reported), the printed
markdown report and the JSON file. The script supplies what a child does, its own flags,
the flags a child needs and the report.

Public API
----------
``peak_rss_mb()``, ``rss_mb()``: this process's peak / current resident set size (MB)
``pin_threads(threads)``: restrict this process to the first ``threads`` allowed cores
``thread_env(threads, env=None)``: environment with the BLAS/OpenMP thread variables set
``write_child_result(path, result)``: add ``peak_rss_mb`` and write the JSON result
``spawn_child(cmd, result_path, threads=0, name=None)``: run a child, return its result
dict plus ``process_s`` (the child's wall time as the parent saw it)
``benchmark_main(script, argv=None)``: a benchmark script's parent or child side
``work_path(args, name)``: a file in the work directory
``fixture_weights(relative)``: a parity fixture's weight file (one-line error if missing)
``TimedCalls(fn)``: ``fn`` with its total call time (``seconds``) and count (``calls``)
``machine_line(args)``: the report's line on the machine and the load before the run
``in_order(results, names)``: ``(name, result)`` of the variants that ran, in that order
``randomize_parameters(params, rng, weight_gain=6.0, named=None)``: random weights of a
trained network's scale (for benchmarks without published weights)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common.errors import UserError

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
SETTLE_S = 2.0  # pause before each child, after writing pending file data to disk


class ChildFailed(UserError, RuntimeError):
    """A benchmark child process failed (reported in one line by ``run_cli``)."""


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
    :class:`ChildFailed`: its one ``error:`` line when it reported a user error, else the
    last ``tail_lines`` lines of its stderr (or stdout)."""
    name = name or os.path.basename(str(cmd[-1]))
    try:
        os.unlink(result_path)
    except FileNotFoundError:
        pass
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=thread_env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        if proc.returncode == 2 and lines and lines[-1].startswith("error: "):
            raise ChildFailed(f"variant {name!r}: {lines[-1][len('error: '):]}")
        tail = "\n".join(lines[-tail_lines:])
        raise ChildFailed(f"variant {name!r} failed (exit {proc.returncode}):\n{tail}")
    with open(result_path) as fh:
        result = json.load(fh)
    result["process_s"] = wall
    return result


# ----------------------------------------------------------------------------- harness
def benchmark_main(script, argv=None):
    """Run a benchmark script (its module object ``script``) as parent or, with the hidden
    ``--variant NAME``, as one of its children; returns the exit status.

    The script defines: its docstring (first line = ``--help`` description), ``README``
    (path shown below the options), ``WORKDIR_PREFIX``, ``VARIANTS`` (every variant's name;
    optional ``DEFAULT_VARIANTS``, the ones run without ``--variants``), ``CHILDREN`` (name ->
    ``callable(args) -> result dict``, ``prepare`` included), ``add_arguments(parser)`` (its
    own flags), optional ``check_args(args)``, ``child_args(args)`` (its flags a child needs),
    ``describe(result)`` (one progress line per variant) and ``report(args, prep, results)``
    (markdown text and a dict of extra entries for the ``--json`` file).

    The harness adds ``--variants``, ``--threads``, ``--seed``, ``--repeats``, ``--json``,
    ``--workdir``, ``--keep``. Child: pinned to ``--threads`` cores, warnings off, its result
    written with :func:`write_child_result`. Parent: the work directory (``--workdir`` or a
    temporary one, removed unless ``--keep``), ``args.load_before`` (the load average),
    ``prepare`` then every variant in a child of its own (``--repeats`` times, in alternating
    order, the run of median time reported), the report printed with the benchmark's wall
    time as its last line, and the JSON file."""
    args = _parse(script, argv)
    if args.variant:
        import warnings

        warnings.filterwarnings("ignore")
        pin_threads(args.threads)
        result = script.CHILDREN[args.variant](args)
        write_child_result(work_path(args, f"result_{args.variant}.json"), result)
        return 0

    def spawn(variant):
        cmd = [sys.executable, os.path.abspath(script.__file__), "--variant", variant,
               "--workdir", args.workdir, "--seed", str(args.seed), "--threads",
               str(args.threads), *script.child_args(args)]
        return spawn_child(cmd, work_path(args, f"result_{variant}.json"), threads=args.threads,
                           name=variant)

    t_all = time.perf_counter()
    own = args.workdir is None
    if own:
        args.workdir = tempfile.mkdtemp(prefix=script.WORKDIR_PREFIX)
    os.makedirs(args.workdir, exist_ok=True)
    args.load_before = _load_average()
    try:
        _log(f"[bench] work dir {args.workdir}; preparing ...")
        prep = spawn("prepare")
        runs = {variant: [] for variant in args.variants}
        for repeat in range(args.repeats):
            # forward, then backward order: a drift of the machine's load falls on all
            order = args.variants if repeat % 2 == 0 else args.variants[::-1]
            for variant in order:
                # The previous child's files are still being written back to disk and its
                # memory returned for a few seconds after it exits; the next variant lost up
                # to 1.5 s of a 3 s separation to that (x-umx/bench, 2-core machine).
                os.sync()
                time.sleep(SETTLE_S)
                count = f" ({repeat + 1}/{args.repeats})" if args.repeats > 1 else ""
                _log(f"[bench] {variant}{count} ...")
                runs[variant].append(spawn(variant))
                _log(f"[bench] {variant}{count}: {script.describe(runs[variant][-1])}")
        results = {variant: median_run(r) for variant, r in runs.items()}
        text, extra = script.report(args, prep, results)
        text += f"\n- benchmark wall time: {time.perf_counter() - t_all:.0f} s"
        print(text)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            with open(args.json, "w") as fh:
                json.dump({"args": {k: v for k, v in vars(args).items() if k != "workdir"},
                           "prepare": prep, "results": results, **extra,
                           "report_markdown": text}, fh, indent=2)
            _log(f"[bench] wrote {args.json}")
    finally:
        if own and not args.keep:
            import shutil

            shutil.rmtree(args.workdir, ignore_errors=True)
        elif own:
            _log(f"[bench] kept {args.workdir}")
    return 0


def _parse(script, argv):
    from common.cli import NonNegativeInt, Parser, PositiveInt

    variants = tuple(script.VARIANTS)
    parser = Parser(description=script.__doc__.split("\n")[0], epilog=f"See {script.README}.",
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    script.add_arguments(parser)
    parser.add_argument("--variants",
                        default=",".join(getattr(script, "DEFAULT_VARIANTS", variants)),
                        help="comma-separated variants to run (default: %(default)s); any of "
                             + ", ".join(variants))
    parser.add_argument("--threads", type=NonNegativeInt, default=0,
                        help="pin each child to this many cores (default: all)")
    parser.add_argument("--seed", type=NonNegativeInt, default=0)
    parser.add_argument("--repeats", type=PositiveInt, default=1,
                        help="run the variants this many times, in alternating order; each "
                             "variant's run of median time is reported (default: 1)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--workdir", help="work directory (default: a temporary one, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in variants]
    if unknown:
        raise UserError(f"--variants: unknown {', '.join(unknown)}; choose from "
                        f"{', '.join(variants)}")
    if hasattr(script, "check_args"):
        script.check_args(args)
    return args


def median_run(runs):
    """The run of median time (``total_s``, else ``process_s``; the lower median of an even
    count) among one variant's repeats, with every repeat's time as ``repeat_times_s``."""
    def seconds(r):
        return r.get("total_s", r.get("process_s", 0.0))
    chosen = dict(sorted(runs, key=seconds)[(len(runs) - 1) // 2])
    chosen["repeat_times_s"] = [seconds(r) for r in runs]
    return chosen


def work_path(args, name):
    """``name`` inside the benchmark's work directory."""
    return os.path.join(args.workdir, name)


def fixture_weights(relative):
    """Path (str) of a parity fixture's weight file (below ``$FIXTURES_DIR``); a one-line
    UserError when it is missing."""
    from common.dev.testing import fixtures_root

    path = fixtures_root() / relative
    if not path.is_file():
        raise UserError(f"fixture weights {path} not found; use --weights random")
    return str(path)


def in_order(results, names):
    """``[(name, result)]`` of the variants in ``names`` that ran, in that order."""
    return [(name, results[name]) for name in names if name in results]


def machine_line(args):
    """The report's ``- machine: ...`` line: CPUs, the load average before the run, the
    cores each child was pinned to and the Python version."""
    pinned = f", children pinned to {args.threads} core(s)" if args.threads else ""
    return (f"- machine: {os.cpu_count()} CPUs, load average before the run "
            f"{args.load_before}{pinned}; python {sys.version.split()[0]}\n")


def _load_average():
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _log(message):
    print(message, file=sys.stderr, flush=True)


class TimedCalls:
    """``fn`` wrapped: every call's wall time is added to ``seconds`` and counted in
    ``calls``."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


def randomize_parameters(params, rng, weight_gain=6.0, named=None):
    """Random values of a trained network's scale for nnabla parameters (name -> Variable,
    in creation order), one ``rng.uniform`` draw per parameter: batch-norm mean U(-0.2, 0.2),
    var U(0.5, 2), gamma U(0.8, 1.2), beta U(-0.1, 0.1); weights ``.../W`` U(+-sqrt(
    weight_gain / fan_in)); biases ``.../b`` U(-1, 1) / sqrt(out); ``named``: name ->
    (low, high) for parameters with other names (others keep their values)."""
    named = named or {}
    for name, var in params.items():
        shape = var.shape
        if name.endswith("/mean"):
            var.d = rng.uniform(-0.2, 0.2, shape)
        elif name.endswith("/var"):
            var.d = rng.uniform(0.5, 2.0, shape)
        elif name.endswith("/gamma"):
            var.d = rng.uniform(0.8, 1.2, shape)
        elif name.endswith("/beta"):
            var.d = rng.uniform(-0.1, 0.1, shape)
        elif name.endswith("/W"):
            bound = np.sqrt(weight_gain / np.prod(shape[1:]))
            var.d = rng.uniform(-bound, bound, shape)
        elif name.endswith("/b"):
            var.d = rng.uniform(-1, 1, shape) / np.sqrt(shape[0])
        elif name in named:
            var.d = rng.uniform(*named[name], shape)
    return params
