"""Throughput vs batch size with and without the out-of-core scheduler (the paper's figure).

Run (from the repository root)::

    # GPU: ResNet-50 on 224x224 synthetic images, a 16 GB card, scheduler budget 14 GiB
    .venv/bin/python out-of-core-training/bench/bench_ooc.py --context cudnn \\
        --arch resnet50 --image-size 224 --batches 64 128 192 256 384 512 768 1024 1440 \\
        --budget 14GiB --out runs/ooc-bench-resnet50
    # CPU: exercises the same path on a small ResNet (no memory is saved on a CPU)
    .venv/bin/python out-of-core-training/bench/bench_ooc.py --blocks 1 1 1 1 --width 8 \\
        --image-size 32 --small-input --num-classes 10 --batches 8 16 32 64 128 \\
        --budget 24MiB --device-memory 40MiB --out runs/ooc-bench-cpu

For every batch size, two variants run, each in its own fresh process: ``in-core`` (plain
training) and ``out-of-core`` (the same loop inside ``common.train.out_of_core``'s scheduler with
``--budget``). Each trains ``--warmup`` iterations (the scheduler records in the first and
plans in the second) and then ``--iterations`` timed ones on seeded random data; images/s is
the batch size over the median iteration time. A variant *fits* when

* ``in-core``: it ran without running out of device memory. On a GPU that is the device
  itself; on a CPU there is no device limit, so the measured peak of nnabla's caching
  allocator (:mod:`ooctrain.allocator`) is compared with ``--device-memory`` (an emulated
  card);
* ``out-of-core``: the scheduler could plan every function within ``--budget`` (and, on a
  GPU, nothing ran out of memory).

A variant that does not fit ends its sweep (larger batches need more). The parent writes
``results.csv``, ``README.md`` (table, largest batches, the speed at the largest
out-of-core batch relative to the best in-core speed: the paper's "55 %") and
``throughput.png``.

On a CPU host and device memory are the same memory: the out-of-core rows show what the
scheduler costs in time, and its "fits" only that it could plan within the budget; the
process still uses as much memory as in-core (the allocator column says so).
"""
import argparse
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
    from ooctrain.allocator import pool_used, read_cache_map, run_iterations
    from ooctrain.planner import build_training_graph

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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--blocks", type=int, nargs="+", default=None)
    p.add_argument("--width", type=int, default=None,
                   help="base width: ResNet first-stage channels, DenseNet stem")
    p.add_argument("--growth", type=int, default=None)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--small-input", action=argparse.BooleanOptionalAction, default=False,
                   help="3x3 stride-1 stem without max-pooling, as train.py --small-input")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--batches", type=int, nargs="+", required=True)
    p.add_argument("--budget", required=True, help="the scheduler's device-memory budget")
    p.add_argument("--device-memory", default=None,
                   help="what fits in-core: default the GPU's memory on cudnn; required on "
                        "cpu (an emulated card)")
    p.add_argument("--solver", default="momentum")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--context", default="cpu", choices=["cpu", "cudnn"])
    p.add_argument("--device-id", type=int, default=0)
    p.add_argument("--out", default="runs/ooc-bench")
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
    from common.errors import UserError
    from common.train.out_of_core import format_size, parse_size
    from ooctrain.models import ModelSpec

    if args.warmup < 2 or args.iterations < 1:
        raise UserError("--warmup must be >= 2 (the scheduler plans in iteration 2) and "
                        "--iterations >= 1")
    budget = parse_size(args.budget)
    device_memory = _device_memory(args)
    overrides = ModelSpec.from_sizes(args.arch, args.blocks, args.width, args.growth).overrides
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
                result = spawn_child([sys.executable, __file__, "--child", str(spec_path),
                                      str(result_path)], str(result_path),
                                     name=f"{variant} batch {batch}")
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
    from common.report import markdown_table, plot_curves
    from common.train.out_of_core import format_size

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = ["batch", "variant", "fits", "images_per_s", "allocator_used", "error"]
    with open(out / "results.csv", "w") as f:
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
    plot = plot_curves(curves, out / "throughput.png",
                       title=f"{net}, {args.image_size}px, budget {format_size(budget)}",
                       xlabel="batch size", ylabel="images / s")
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
    (out / "README.md").write_text("\n".join(lines))
    print("\n".join(lines[3:]))
    print(f"\nwrote {out / 'README.md'}, {out / 'results.csv'}, {plot}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:          # a variant, started by sweep()
        _child(*argv[1:3])
        return 0
    args = build_parser().parse_args(argv)
    rows, budget, device_memory = sweep(args)
    write_outputs(args, rows, budget, device_memory)
    return 0


if __name__ == "__main__":
    from common.errors import run_cli
    run_cli(main)
