"""Training throughput at one batch size, in core or out of core, and the batch sweeps of the
paper's figure (images/s against batch size): what ``eval.py`` and ``bench/bench_ooc.py``
share.

:func:`measure` runs one *variant* at one batch size in a fresh child process
(``python -m ooctrain.throughput SPEC RESULT``), so that nothing another measurement
allocated is counted: ``in-core`` trains plainly, ``out-of-core`` inside
:class:`common.train.out_of_core.OutOfCore` with the budget (and window) of the setup. Each
trains ``warmup`` iterations (the scheduler records in the first and plans in the second),
then ``iterations`` timed ones on seeded random data; images/s is the batch size over the
median iteration time. A variant *fits* when

* ``in-core``: it ran without running out of device memory. On a GPU the card decides; a
  CPU has no device limit, so the measured peak of nnabla's caching allocator
  (:mod:`ooctrain.measure`) is compared with the setup's ``device_memory`` (an emulated
  card);
* ``out-of-core``: the scheduler could plan every function within the budget (and, on a GPU,
  nothing ran out of memory). On a CPU host and device are the same memory: this only says
  the scheduler could plan; the process uses as much memory as in core.

Before a child starts, the memory planner (:mod:`ooctrain.planner`) predicts what the run
would allocate on the host (everything, on a CPU; everything swapped out, out of core on a
GPU); a batch that would need more than :data:`HOST_FRACTION` of the machine's RAM is not run
and counts as not fitting, so a sweep never drives the machine into swapping.

:func:`sweep` measures batch sizes in increasing order, each variant until it first fails,
then optionally bisects between each variant's largest fitting and smallest failing batch.
:func:`write_csv`, :func:`markdown_rows`, :func:`plot_throughput` and :func:`summary` turn
the rows into the reports.
"""
import csv
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["VARIANTS", "HOST_FRACTION", "CSV_KEYS", "make_setup", "measure", "sweep",
           "describe", "summarize", "summary", "write_csv", "read_csv", "markdown_rows",
           "plot_throughput"]

VARIANTS = ("in-core", "out-of-core")
# At most this fraction of the machine's RAM for one measurement (the planner's prediction).
HOST_FRACTION = 0.7
CSV_KEYS = ("batch", "variant", "fits", "images_per_s", "allocator_used", "error")


def make_setup(graph, *, context, device_id, solver, budget, window, device_memory, warmup,
               iterations):
    """The settings every measurement of a sweep shares (a JSON-able dict). ``graph``: the
    :func:`ooctrain.graph.build_training_graph` spec without its batch size; ``budget``,
    ``window`` and ``device_memory`` in bytes (``window`` None: nnabla's default;
    ``device_memory`` None: the GPU decides)."""
    return {"graph": dict(graph), "context": context, "device_id": device_id,
            "solver": solver, "budget": int(budget),
            "window": None if window is None else int(window),
            "device_memory": None if device_memory is None else int(device_memory),
            "warmup": int(warmup), "iterations": int(iterations)}


# ----------------------------------------------------------------------------- child
def _child(spec_path, result_path):
    """One variant at one batch size: train, time, measure; write the JSON result."""
    import nnabla as nn

    from common.context import get_context
    from common.dev.bench import write_child_result
    from common.errors import UserError
    from common.train.out_of_core import OutOfCore
    from ooctrain.graph import build_training_graph, run_iterations
    from ooctrain.measure import pool_used, read_cache_map

    spec = json.loads(Path(spec_path).read_text())
    nn.set_default_context(get_context(spec["context"], spec["device_id"]))
    out_of_core = spec["variant"] == "out-of-core"
    ooc = OutOfCore(spec["budget"] if out_of_core else None,
                    window=spec["window"] if out_of_core else None)
    if ooc.enabled:
        nn.set_default_context(ooc.device_ctx)

    result = {"fits": True, "error": ""}
    times = []
    try:
        graph = build_training_graph(spec["graph"])
        clock = [time.perf_counter()]

        def lap(i):
            now = time.perf_counter()
            if i >= spec["warmup"]:
                times.append(now - clock[0])
            clock[0] = now

        run_iterations(graph, spec["solver"], 1e-4, spec["warmup"] + spec["iterations"],
                       after_iteration=lap, ooc=ooc)
    except UserError as exc:         # the scheduler's "budget (or window) too small"
        why = re.search(r"\(nnabla: ([^)]*)\)", str(exc))
        what = "window" if str(exc).startswith("--ooc-window") else "budget"
        result.update(fits=False, error=f"{what} too small: {why.group(1) if why else exc}")
    except RuntimeError as exc:      # a device allocation failure
        result.update(fits=False, error=str(exc).strip().splitlines()[-1])
    result["seconds"] = float(np.median(times)) if times else None
    if spec["context"] == "cpu":
        result["allocator_used"] = pool_used(read_cache_map())["used"]
    write_child_result(result_path, result)


# ----------------------------------------------------------------------------- parent
def _host_bytes(setup, variant, batch):
    """What the run would hold in host memory, as the planner predicts it (0 when nothing
    large lives on the host: in core on a GPU)."""
    if setup["context"] != "cpu" and variant == "in-core":
        return 0
    from ooctrain.planner import plan_spec

    spec = dict(setup["graph"], batch_size=batch)
    return plan_spec(spec, setup["solver"], iterations=1).allocator_used


def measure(setup, variant, batch):
    """One row ``{batch, variant, fits, images_per_s, allocator_used, error}``: ``variant``
    at ``batch`` in a fresh process (see the module docstring). Ctrl-C stops the sweep with
    :class:`common.errors.Interrupted`."""
    from common.dev.bench import spawn_child
    from common.terminal import check_interrupt
    from common.train.out_of_core import format_size
    from ooctrain.measure import physical_memory

    row = {"batch": batch, "variant": variant, "fits": False, "images_per_s": None,
           "allocator_used": None, "error": ""}
    physical = physical_memory()
    host = _host_bytes(setup, variant, batch)
    if physical and host > HOST_FRACTION * physical:
        row["error"] = (f"not run: would need about {format_size(host)} of the "
                        f"{format_size(physical)} host RAM")
        return row
    spec = dict(setup, variant=variant, graph=dict(setup["graph"], batch_size=batch))
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, result_path = Path(tmp, "spec.json"), Path(tmp, "result.json")
        spec_path.write_text(json.dumps(spec))
        try:
            result = spawn_child([sys.executable, "-m", "ooctrain.throughput", str(spec_path),
                                  str(result_path)], str(result_path),
                                 name=f"{variant} batch {batch}")
        except RuntimeError:
            check_interrupt()        # Ctrl-C also reached (and ended) the child
            raise
    check_interrupt()
    used, card = result.get("allocator_used"), setup["device_memory"]
    if variant == "in-core" and card and used and used > card:
        result.update(fits=False, error=f"needs {format_size(used)} > device memory "
                                        f"{format_size(card)}")
    row.update(fits=bool(result["fits"]), allocator_used=used, error=result["error"])
    if result["fits"] and result["seconds"]:
        row["images_per_s"] = batch / result["seconds"]
    return row


def describe(row):
    """One progress line for a row."""
    from common.train.out_of_core import format_size

    what = (f"{row['images_per_s']:8.1f} img/s" if row["fits"]
            else f"does not fit: {row['error']}")
    used = f"  (allocator {format_size(row['allocator_used'])})" if row["allocator_used"] \
        else ""
    return f"batch {row['batch']:5d} {row['variant']:12s} {what}{used}"


def sweep(setup, batches, refine=0, known=(), on_row=None):
    """Rows for ``batches`` (ascending), each variant until its first failure; then up to
    ``refine`` bisection steps between each variant's largest fitting and smallest failing
    batch. ``known``: rows measured earlier with the same setup, reused instead of run
    again; ``on_row(row, rows)`` is called after every new measurement. Returns the rows
    sorted by variant and batch."""
    done = {(r["variant"], r["batch"]): r for r in known}
    rows = {}

    def get(variant, batch):
        key = (variant, batch)
        if key not in done:
            done[key] = measure(setup, variant, batch)
            rows[key] = done[key]
            print(describe(done[key]), flush=True)
            if on_row is not None:
                on_row(done[key], _sorted(rows.values()))
        rows[key] = done[key]
        return done[key]

    stopped = set()
    for batch in sorted(set(batches)):
        for variant in VARIANTS:
            if variant not in stopped and not get(variant, batch)["fits"]:
                stopped.add(variant)
    for variant in VARIANTS:
        for _ in range(refine):
            fit = [b for (v, b), r in rows.items() if v == variant and r["fits"]]
            low = max(fit, default=None)
            high = min((b for (v, b), r in rows.items()
                        if v == variant and not r["fits"] and low is not None and b > low),
                       default=None)
            if high is None or high - low < 2:
                break
            get(variant, (low + high) // 2)
    return _sorted(rows.values())


def _sorted(rows):
    return sorted(rows, key=lambda r: (VARIANTS.index(r["variant"]), r["batch"]))


# ----------------------------------------------------------------------------- reports
def summarize(rows):
    """``(largest, incore_speed)``: the row of each variant's largest fitting batch (None
    when none fits) and the best in-core images/s (None without an in-core row)."""
    largest = {}
    for variant in VARIANTS:
        fit = [r for r in rows if r["variant"] == variant and r["fits"]]
        largest[variant] = max(fit, key=lambda r: r["batch"]) if fit else None
    incore_speed = max((r["images_per_s"] for r in rows
                        if r["variant"] == "in-core" and r["fits"]), default=None)
    return largest, incore_speed


def summary(rows):
    """The comparison of the paper's claim in one sentence (None unless both variants fit
    at least one batch)."""
    largest, incore_speed = summarize(rows)
    small, big = largest["in-core"], largest["out-of-core"]
    if not small or not big:
        return None
    return (f"Largest batch: in core {small['batch']} ({small['images_per_s']:.1f} images/s), "
            f"out of core {big['batch']} ({big['images_per_s']:.1f} images/s): "
            f"{big['batch'] / small['batch']:.2f}x the batch at "
            f"{big['images_per_s'] / incore_speed:.0%} of the best in-core speed "
            f"({incore_speed:.1f} images/s).")


def write_csv(path, rows):
    """``rows`` as CSV (:data:`CSV_KEYS`; an empty cell for a missing number), written whole
    or not at all; :func:`read_csv` reads it back."""
    from common.fileio import atomic_write

    with atomic_write(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_KEYS)
        for r in rows:
            writer.writerow(["" if r[k] is None else r[k] for k in CSV_KEYS])


def read_csv(path):
    """The rows of a :func:`write_csv` file; a damaged file is one-line
    :class:`common.errors.UserError` naming it."""
    from common.errors import UserError

    def number(kind, text):
        return None if text == "" else kind(text)

    try:
        with open(path, newline="") as f:
            records = list(csv.DictReader(f))
        return [{"batch": int(r["batch"]), "variant": r["variant"], "fits": r["fits"] == "True",
                 "images_per_s": number(float, r["images_per_s"]),
                 "allocator_used": number(int, r["allocator_used"]), "error": r["error"]}
                for r in records if r["variant"] in VARIANTS]
    except (KeyError, TypeError, ValueError, csv.Error) as exc:
        raise UserError(f"{path} is damaged ({exc}); remove it to measure again") from None


def markdown_rows(rows):
    """``rows`` as a markdown table."""
    from common.report import markdown_table
    from common.train.out_of_core import format_size

    table = [[r["batch"], r["variant"], "yes" if r["fits"] else "no",
              f"{r['images_per_s']:.1f}" if r["images_per_s"] else "-",
              format_size(r["allocator_used"]) if r["allocator_used"] else "-",
              r["error"][:80]] for r in rows]
    return markdown_table(["batch", "variant", "fits", "images/s", "allocator peak",
                           "why not"], table)


def plot_throughput(rows, path, title):
    """Images/s against batch size per variant (the paper's figure; the y axis starts at
    zero so that the heights compare), written whole or not at all."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.fileio import atomic_path

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for variant in VARIANTS:
        fit = [r for r in rows if r["variant"] == variant and r["fits"]]
        if fit:
            ax.plot([r["batch"] for r in fit], [r["images_per_s"] for r in fit], marker="o",
                    label=variant)
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


if __name__ == "__main__":  # a measurement, started by measure()
    _child(*sys.argv[1:3])
