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
``--budget`` and, if given, the prefetch ``--window``). How they are timed and what *fits*
means is :mod:`ooctrain.throughput`'s (shared with ``eval.py``, which also searches for the
largest batches). A variant that does not fit ends its sweep. The parent writes
``results.csv``, ``README.md`` (table, largest batches, the speed at the largest
out-of-core batch relative to the best in-core speed: the paper's "55 %") and
``throughput.png`` into ``--out-dir`` (checked before the sweep; each file appears whole or
not at all).

On a CPU host and device memory are the same memory: the out-of-core rows show what the
scheduler costs in time, and its "fits" only that it could plan within the budget; the
process still uses as much memory as in-core (the allocator column says so).
"""
import sys
from pathlib import Path

from ooctrain.throughput import (VARIANTS, make_setup, markdown_rows, plot_throughput, summary,
                                 sweep, write_csv)

__all__ = ["VARIANTS", "build_parser", "write_outputs", "main"]


def build_parser():
    from common.cli import Bounded, NonNegativeInt, Parser, PositiveInt
    from common.train.out_of_core import MemorySize
    from ooctrain.cli import add_input_args, add_model_args
    from ooctrain.graph import SOLVERS

    p = Parser(prog="bench_ooc.py", description=__doc__.splitlines()[0])
    add_model_args(p)
    add_input_args(p)
    p.add_argument("--batches", type=PositiveInt, nargs="+", required=True,
                   help="batch sizes to sweep")
    p.add_argument("--budget", type=MemorySize(), required=True,
                   help="the scheduler's device-memory budget")
    p.add_argument("--window", type=MemorySize(), default=None,
                   help="the scheduler's prefetch window (default: nnabla's, 1.5x the budget)")
    p.add_argument("--device-memory", type=MemorySize(), default=None,
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


def run_sweep(args):
    """The rows of the sweep, the budget and the emulated device memory (bytes)."""
    from common.train.out_of_core import parse_size
    from ooctrain.cli import model_spec_from_args

    budget = parse_size(args.budget)
    device_memory = _device_memory(args)
    graph = {"arch": args.arch, "overrides": model_spec_from_args(args).overrides,
             "image_size": args.image_size, "num_classes": args.num_classes,
             "small_input": args.small_input}
    setup = make_setup(graph, context=args.context, device_id=args.device_id,
                       solver=args.solver, budget=budget,
                       window=parse_size(args.window) if args.window else None,
                       device_memory=device_memory, warmup=args.warmup,
                       iterations=args.iterations)
    return sweep(setup, args.batches), budget, device_memory


def write_outputs(args, rows, budget, device_memory):
    """results.csv, throughput.png and README.md in ``--out-dir``, each written whole or
    not at all."""
    from common.fileio import atomic_write
    from common.train.out_of_core import format_size

    out = Path(args.out_dir)
    write_csv(out / "results.csv", rows)
    net = args.arch + (f" {args.blocks}" if args.blocks else "")
    plot = plot_throughput(rows, out / "throughput.png",
                           f"{net}, {args.image_size}px, budget {format_size(budget)}")
    lines = [f"# Out-of-core benchmark: {net}\n",
             f"`{' '.join(sys.argv)}`\n",
             f"Context {args.context}; budget {format_size(budget)}"
             + (f", prefetch window {args.window}" if args.window else "")
             + "; device memory "
             + (format_size(device_memory) if device_memory else "the GPU's") + "; median of "
             f"{args.iterations} iterations after {args.warmup} warm-up ones.\n",
             markdown_rows(rows)]
    compared = summary(rows)
    if compared:
        lines.append("\n" + compared)
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

    args = build_parser().parse_args(argv)
    check_output_location(args.out_dir, "--out-dir")   # before minutes of measuring
    rows, budget, device_memory = run_sweep(args)
    write_outputs(args, rows, budget, device_memory)
    return 0


if __name__ == "__main__":
    from common.cli import run_cli
    run_cli(main)
