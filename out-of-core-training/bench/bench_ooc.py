"""Throughput vs batch size with and without the out-of-core scheduler (the paper's figure).

Run (from the repository root)::

    # GPU: ResNet-50 on 224x224 synthetic images, a 16 GB card, scheduler budget 14 GiB
    .venv/bin/python out-of-core-training/bench/bench_ooc.py --context cudnn \\
        --arch resnet50 --image-size 224 --batches 64 128 192 256 384 512 768 1024 1440 \\
        --budget 14GiB --out-dir runs/ooc-bench-resnet50
    # CPU: exercises the same path on a small ResNet (no memory is saved on a CPU)
    .venv/bin/python out-of-core-training/bench/bench_ooc.py --blocks 1 1 1 1 --width 8 \\
        --image-size 32 --small-input --num-classes 10 --batches 8 16 32 64 128 \\
        --budget 24MiB --device-memory 40MiB --out-dir runs/ooc-bench-cpu

For every batch size, two variants run, each in its own fresh process: ``in-core`` (plain
training) and ``out-of-core`` (the same loop inside ``common.train.out_of_core``'s scheduler with
``--budget``). Each trains ``--warmup`` iterations (the scheduler records in the first and
plans in the second) and then ``--iterations`` timed ones on seeded random data; images/s is
the batch size over the median iteration time. A variant *fits* when

* ``in-core``: it ran without running out of device memory. On a GPU that is the device
  itself; on a CPU there is no device limit, so the measured peak of nnabla's caching
  allocator (:mod:`ooctrain.measure`) is compared with ``--device-memory`` (an emulated
  card);
* ``out-of-core``: the scheduler could plan every function within ``--budget`` (and, on a
  GPU, nothing ran out of memory).

A variant that does not fit ends its sweep (larger batches need more). The parent writes
``results.csv``, ``README.md`` (table, largest batches, the speed at the largest
out-of-core batch relative to the best in-core speed: the paper's "55 %") and
``throughput.png`` into ``--out-dir`` (checked before the sweep; each file appears whole or
not at all).

On a CPU host and device memory are the same memory: the out-of-core rows show what the
scheduler costs in time, and its "fits" only that it could plan within the budget; the
process still uses as much memory as in-core (the allocator column says so).
"""
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = ("in-core", "out-of-core")


def _child(spec_path, result_path):
    """One variant at one batch size: train, time, measure; write the JSON result."""
    import nnabla as nn

    from common.context import get_context
    from common.dev.bench import write_child_result
    from common.errors import UserError
    from common.train.out_of_core import OutOfCore

    spec = json.loads(Path(spec_path).read_text())
    nn.set_default_context(get_context(spec["context"], spec["device_id"]))
    ooc = OutOfCore(spec["budget"] if spec["variant"] == "out-of-core" else None)
    if ooc.enabled:
        nn.set_default_context(ooc.device_ctx)
    from ooctrain.graph import build_training_graph, run_iterations
    from ooctrain.measure import pool_used, read_cache_map

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
    except UserError as exc:         # the scheduler's "budget too small"
        why = re.search(r"\(nnabla: ([^)]*)\)", str(exc))
        result.update(fits=False, error=f"budget too small: {why.group(1) if why else exc}")
    except RuntimeError as exc:      # a device allocation failure
        result.update(fits=False, error=str(exc).strip().splitlines()[-1])
    result["seconds"] = float(np.median(times)) if times else None
    if spec["context"] == "cpu":
        result["allocator_used"] = pool_used(read_cache_map())["used"]
    write_child_result(result_path, result)


def build_parser():
    from common.cli import Bounded, NonNegativeInt, Parser, PositiveInt
    from ooctrain.cli import add_input_args, add_model_args
    from ooctrain.graph import SOLVERS

    p = Parser(prog="bench_ooc.py", description=__doc__.splitlines()[0])
    add_model_args(p)
    add_input_args(p)
    p.add_argument("--batches", type=PositiveInt, nargs="+", required=True,
                   help="batch sizes to sweep")
    p.add_argument("--budget", required=True, help="the scheduler's device-memory budget")
    p.add_argument("--device-memory", default=None,
                   help="what fits in-core: default the GPU's memory on cudnn; required on "
                        "cpu (an emulated card)")
    p.add_argument("--solver", default="momentum", choices=sorted(SOLVERS))
    p.add_argument("--warmup", type=Bounded(int, 2), default=2,
                   help="untimed iterations first: the scheduler records in the first and "
                        "plans in the second (default: %(default)s)")
    p.add_argument("--iterations", type=PositiveInt, default=5,
                   help="timed iterations (default: %(default)s)")
    p.add_argument("--context", default="cpu", choices=["cpu", "cudnn"])
    p.add_argument("--device-id", type=NonNegativeInt, default=0)
    p.add_argument("--out-dir", default="runs/ooc-bench",
                   help="folder for results.csv, README.md and throughput.png")
    return p


def _device_memory(args):
    from common.errors import UserError
    from common.train.out_of_core import parse_size
    if args.device_memory:
        return parse_size(args.device_memory)
    if args.context == "cudnn":
        return None        # the card itself decides
    raise UserError("on cpu give --device-memory SIZE: what an emulated card holds")


def sweep(args):
    from common.dev.bench import spawn_child
    from common.terminal import check_interrupt
    from common.train.out_of_core import format_size, parse_size
    from ooctrain.cli import model_spec_from_args

    budget = parse_size(args.budget)
    device_memory = _device_memory(args)
    overrides = model_spec_from_args(args).overrides
    rows, stopped = [], set()
    with tempfile.TemporaryDirectory() as tmp:
        for batch in sorted(set(args.batches)):
            for variant in VARIANTS:
                if variant in stopped:
                    continue
                spec = {"variant": variant, "budget": budget, "context": args.context,
                        "device_id": args.device_id, "solver": args.solver,
                        "warmup": args.warmup, "iterations": args.iterations,
                        "graph": {"arch": args.arch, "overrides": overrides,
                                  "batch_size": batch, "image_size": args.image_size,
                                  "num_classes": args.num_classes,
                                  "small_input": args.small_input}}
                spec_path, result_path = Path(tmp, "spec.json"), Path(tmp, "result.json")
                spec_path.write_text(json.dumps(spec))
                try:
                    result = spawn_child([sys.executable, __file__, "--child",
                                          str(spec_path), str(result_path)], str(result_path),
                                         name=f"{variant} batch {batch}")
                except RuntimeError:
                    check_interrupt()        # Ctrl-C also reached (and ended) the child
                    raise
                check_interrupt()
                used = result.get("allocator_used")
                if variant == "in-core" and device_memory and used and used > device_memory:
                    result.update(fits=False, error=f"needs {format_size(used)} > device "
                                                    f"memory {format_size(device_memory)}")
                speed = batch / result["seconds"] if result["fits"] and result["seconds"] \
                    else None
                rows.append({"batch": batch, "variant": variant, "fits": result["fits"],
                             "images_per_s": speed, "allocator_used": used,
                             "error": result["error"]})
                print(f"batch {batch:5d} {variant:12s} "
                      + (f"{speed:8.1f} img/s" if speed else f"does not fit: {result['error']}")
                      + (f"  (allocator {format_size(used)})" if used else ""), flush=True)
                if not result["fits"]:
                    stopped.add(variant)
    return rows, budget, device_memory


def summarize(rows):
    """Largest fitting batch per variant and the out-of-core speed there relative to the
    best in-core speed."""
    best = {}
    for v in VARIANTS:
        fit = [r for r in rows if r["variant"] == v and r["fits"]]
        best[v] = max(fit, key=lambda r: r["batch"]) if fit else None
    incore_speed = max((r["images_per_s"] for r in rows
                        if r["variant"] == "in-core" and r["fits"]), default=None)
    return best, incore_speed


def write_outputs(args, rows, budget, device_memory):
    """results.csv, throughput.png and README.md in ``--out-dir``, each written whole or
    not at all."""
    from common.fileio import atomic_path, atomic_write
    from common.report import markdown_table, plot_curves
    from common.train.out_of_core import format_size

    out = Path(args.out_dir)
    keys = ["batch", "variant", "fits", "images_per_s", "allocator_used", "error"]
    with atomic_write(out / "results.csv", "w") as f:
        f.write(",".join(keys) + "\n")
        for r in rows:
            f.write(",".join(json.dumps(r[k]) if k == "error" else str(r[k]) for k in keys)
                    + "\n")
    curves = {}
    for v in VARIANTS:
        fit = [r for r in rows if r["variant"] == v and r["fits"]]
        if fit:
            curves[v] = (np.array([r["batch"] for r in fit]),
                         np.array([r["images_per_s"] for r in fit]))
    net = args.arch + (f" {args.blocks}" if args.blocks else "")
    plot = out / "throughput.png"
    with atomic_path(plot) as tmp:
        plot_curves(curves, tmp, title=f"{net}, {args.image_size}px, budget "
                    f"{format_size(budget)}", xlabel="batch size", ylabel="images / s")
    best, incore_speed = summarize(rows)
    lines = [f"# Out-of-core benchmark: {net}\n",
             f"`{' '.join(sys.argv)}`\n",
             f"Context {args.context}; budget {format_size(budget)}; device memory "
             + (format_size(device_memory) if device_memory else "the GPU's") + "; median of "
             f"{args.iterations} iterations after {args.warmup} warm-up ones.\n"]
    table = [[r["batch"], r["variant"], "yes" if r["fits"] else "no",
              f"{r['images_per_s']:.1f}" if r["images_per_s"] else "-",
              format_size(r["allocator_used"]) if r["allocator_used"] else "-",
              r["error"][:80]] for r in rows]
    lines.append(markdown_table(["batch", "variant", "fits", "images/s", "allocator peak",
                                 "why not"], table))
    if best["in-core"] and best["out-of-core"]:
        big, small = best["out-of-core"], best["in-core"]
        lines.append(f"\nLargest batch: in-core {small['batch']}, out-of-core {big['batch']} "
                     f"({big['batch'] / small['batch']:.2f}x); out-of-core speed at batch "
                     f"{big['batch']}: {big['images_per_s']:.1f} images/s = "
                     f"{big['images_per_s'] / incore_speed:.0%} of the best in-core speed "
                     f"({incore_speed:.1f} images/s).")
    if args.context == "cpu":
        lines.append("\nOn a CPU host and device are the same memory: out-of-core saves "
                     "nothing here (see the allocator column); the rows measure what the "
                     "scheduler costs.")
    lines.append("\n![throughput](throughput.png)\n")
    with atomic_write(out / "README.md", "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines[3:]))
    print(f"\nwrote {out / 'README.md'}, {out / 'results.csv'}, {plot}")


def main(argv=None):
    from common.fileio import check_output_location

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:          # a variant, started by sweep()
        _child(*argv[1:3])
        return 0
    args = build_parser().parse_args(argv)
    check_output_location(args.out_dir, "--out-dir")   # before minutes of measuring
    rows, budget, device_memory = sweep(args)
    write_outputs(args, rows, budget, device_memory)
    return 0


if __name__ == "__main__":
    from common.cli import run_cli
    run_cli(main)
