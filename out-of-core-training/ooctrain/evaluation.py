"""The paper's comparison in one command (``eval.py``): the largest batch that trains in core
and out of core under a card's memory, and the images/s of each.

Hayakawa & Narihira report ResNet-50 trained at batch 1440, 7.5x the largest batch the
GPU's physical memory holds, at 55 % of the in-core training speed; the official README's
figure plots images/s against batch size for the baseline and the scheduler. This module
measures the same for any network of :mod:`ooctrain.models` on synthetic images:

* the card: on a GPU (``--context cudnn``) the device itself (in core fits when it did not
  run out of memory); on a CPU an emulated card of ``--device-memory`` bytes (in core fits
  when nnabla's allocator peak stays within it). Out of core trains within
  ``--ooc-budget``, by default the card less ``--margin`` (what the scheduler does not
  manage: the CUDA context, cuDNN workspaces), with the prefetch window ``--ooc-window``;
* the batches: ``--batches``, or doubling from ``--start-batch`` to ``--max-batch``; each
  variant stops at its first failure, then ``--refine`` bisection steps narrow each
  variant's largest batch. Every measurement runs in a fresh process
  (:mod:`ooctrain.throughput`, shared with ``bench/bench_ooc.py``).

``--out-dir`` is claimed first (:func:`common.results.claim_results_folder`, with the
settings that shape the numbers); every measurement is added to ``measurements.csv`` as it
finishes, so a run stopped by Ctrl-C continues where it stopped when started again with
the same settings, and another setting's folder is refused. At the end: ``results.csv`` and
``results.md`` (the largest batch and its images/s per variant, every measurement, the
published numbers for comparison) and ``throughput.png`` (images/s against batch size, the
y axis from zero); each file appears whole or not at all.

On a CPU host and device are the same memory: the out-of-core rows show that the scheduler
could plan within the budget and what it costs in time, not a memory saving.
"""
import sys

from common.cli import Bounded, Fraction, NonNegativeInt, Parser, PositiveInt
from common.errors import UserError
from common.results import claim_results_folder
from common.train.out_of_core import MemorySize, format_size, parse_size
from ooctrain.cli import add_input_args, add_model_args, model_spec_from_args
from ooctrain.graph import SOLVERS
from ooctrain.measure import cuda_device_memory
from ooctrain.throughput import (VARIANTS, make_setup, markdown_rows, plot_throughput, read_csv,
                                 summarize, summary, sweep, write_csv)

__all__ = ["build_parser", "main", "PUBLISHED"]

MEASUREMENTS = "measurements.csv"
RESULTS_CSV_KEYS = ("variant", "largest_batch", "images_per_s", "batch_vs_in_core",
                    "speed_vs_in_core", "limit")
# Hayakawa & Narihira 2020 (abstract and official README), ResNet-50 on one GPU.
PUBLISHED = ("Published (Hayakawa & Narihira 2020, ResNet-50 on one GPU; not measured here): "
             "batch 1440 out of core, 7.5x the largest batch the GPU's memory holds, at 55 % "
             "of the in-core training speed. The official figure (DenseNet): in core up to "
             "about batch 500 at ~495 images/s, out of core with virtual addressing up to about "
             "batch 1150 at ~400 images/s.")


def build_parser():
    p = Parser(description=(
        "The paper's comparison: the largest batch that trains in core and out of core under "
        "a card's memory, and the images/s of each, on synthetic images. On a GPU the card "
        "itself; on a CPU an emulated card (--device-memory)."))
    add_model_args(p.add_argument_group("network (as train.py)"))
    add_input_args(p.add_argument_group("input"), image_help="synthetic image side length",
                   classes_help="classes")
    m = p.add_argument_group("memory")
    m.add_argument("--device-memory", type=MemorySize(), default=None, metavar="SIZE",
                   help="cpu: the emulated card's memory, e.g. 40MiB (required); cudnn: not "
                        "taken, the GPU's own memory decides")
    m.add_argument("--ooc-budget", type=MemorySize(), default=None, metavar="SIZE",
                   help="the scheduler's device-memory budget (default: the card's memory "
                        "less --margin)")
    m.add_argument("--margin", type=Fraction, default=0.1,
                   help="fraction of the card the default budget leaves for what the "
                        "scheduler does not manage, below 1 (default: %(default)s)")
    m.add_argument("--ooc-window", type=MemorySize(), default=None, metavar="SIZE",
                   help="the scheduler's prefetch window (default: nnabla's, 1.5x the budget)")
    b = p.add_argument_group("batches")
    b.add_argument("--batches", type=PositiveInt, nargs="+", default=None,
                   help="batch sizes to measure (default: doubling from --start-batch)")
    b.add_argument("--start-batch", type=PositiveInt, default=8, help="(default: %(default)s)")
    b.add_argument("--max-batch", type=PositiveInt, default=4096,
                   help="no batch above this is measured (default: %(default)s)")
    b.add_argument("--refine", type=NonNegativeInt, default=3,
                   help="bisection steps between each variant's largest fitting and smallest "
                        "failing batch (default: %(default)s)")
    t = p.add_argument_group("timing")
    t.add_argument("--solver", default="momentum", choices=sorted(SOLVERS),
                   help="(default: %(default)s)")
    t.add_argument("--warmup", type=Bounded(int, 2), default=2,
                   help="untimed iterations first: the scheduler records in the first and "
                        "plans in the second (default: %(default)s)")
    t.add_argument("--iterations", type=PositiveInt, default=5,
                   help="timed iterations; images/s uses their median (default: %(default)s)")
    p.add_argument("--context", default="cpu", choices=["cpu", "cudnn"],
                   help="(default: %(default)s)")
    p.add_argument("--device-id", type=NonNegativeInt, default=0)
    p.add_argument("--out-dir", required=True,
                   help="folder for results.md, results.csv, measurements.csv, throughput.png")
    return p


def _card(args):
    """``(card bytes, emulated)``: the memory that decides what fits in core."""
    if args.context == "cpu":
        if args.device_memory is None:
            raise UserError("on cpu give --device-memory SIZE: the memory of the emulated card")
        return parse_size(args.device_memory), True
    if args.device_memory is not None:
        raise UserError("--device-memory emulates a card on the CPU; on a GPU the card's own "
                        "memory decides (lower --ooc-budget to plan for less)")
    card = cuda_device_memory()
    if card is None:
        raise UserError("cannot read the GPU's memory (is the nnabla CUDA extension "
                        "installed?); see the top README's GPU section")
    return card, False


def _batches(args):
    """The batch sizes to measure before any bisection, ascending."""
    if args.batches:
        batches = sorted(b for b in set(args.batches) if b <= args.max_batch)
        if not batches:
            raise UserError(f"every --batches value is above --max-batch {args.max_batch}")
        return batches
    if args.start_batch > args.max_batch:
        raise UserError(f"--start-batch {args.start_batch} is above --max-batch "
                        f"{args.max_batch}")
    batches, batch = [], args.start_batch
    while batch <= args.max_batch:
        batches.append(batch)
        batch *= 2
    return batches


def _setup(args):
    """The measurement settings (:func:`ooctrain.throughput.make_setup`) and the card."""
    if args.margin >= 1:
        raise UserError(f"--margin must be below 1 (it leaves that fraction of the card "
                        f"free), got {args.margin}")
    card, emulated = _card(args)
    budget = parse_size(args.ooc_budget) if args.ooc_budget else int(card * (1 - args.margin))
    graph = {"arch": args.arch, "overrides": model_spec_from_args(args).overrides,
             "image_size": args.image_size, "num_classes": args.num_classes,
             "small_input": args.small_input}
    setup = make_setup(graph, context=args.context, device_id=args.device_id,
                       solver=args.solver, budget=budget,
                       window=parse_size(args.ooc_window) if args.ooc_window else None,
                       device_memory=card if emulated else None, warmup=args.warmup,
                       iterations=args.iterations)
    return setup, card


def largest_rows(rows, max_batch):
    """One row per variant: its largest fitting batch, the images/s there, both relative to
    in core, and what limited it."""
    largest, incore_speed = summarize(rows)
    base = largest["in-core"]
    out = []
    for variant in VARIANTS:
        best = largest[variant]
        failed = [r for r in rows if r["variant"] == variant and not r["fits"]
                  and (best is None or r["batch"] > best["batch"])]
        limit = (min(failed, key=lambda r: r["batch"])["error"] if failed
                 else f"did not fail up to batch {max(r['batch'] for r in rows)}, the largest "
                      f"measured (--max-batch {max_batch})")
        out.append({
            "variant": variant,
            "largest_batch": best["batch"] if best else None,
            "images_per_s": best["images_per_s"] if best else None,
            "batch_vs_in_core": best["batch"] / base["batch"] if best and base else None,
            "speed_vs_in_core": best["images_per_s"] / incore_speed if best and incore_speed
            else None,
            "limit": limit})
    return out


def _write_results_csv(path, rows):
    import csv

    from common.fileio import atomic_write

    with atomic_write(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(RESULTS_CSV_KEYS)
        for r in rows:
            writer.writerow(["" if r[k] is None else
                             (f"{r[k]:.4g}" if isinstance(r[k], float) else r[k])
                             for k in RESULTS_CSV_KEYS])


def results_markdown(args, setup, card, rows, largest):
    """The text of ``results.md``."""
    from common.report import markdown_table

    net = args.arch + (f" {' '.join(map(str, args.blocks))}" if args.blocks else "")
    card_text = (f"an emulated card of {format_size(card)} (CPU)" if setup["device_memory"]
                 else f"the GPU's {format_size(card)}")
    window = (format_size(setup["window"]) if setup["window"]
              else f"{format_size(int(setup['budget'] * 1.5))} (nnabla's default, 1.5x)")
    table = [[r["variant"], r["largest_batch"] or "none",
              f"{r['images_per_s']:.1f}" if r["images_per_s"] else "-",
              f"{r['batch_vs_in_core']:.2f}x" if r["batch_vs_in_core"] else "-",
              f"{r['speed_vs_in_core']:.0%}" if r["speed_vs_in_core"] else "-",
              r["limit"][:90]] for r in largest]
    lines = [f"# Out-of-core evaluation: {net}, {args.image_size}x{args.image_size}, "
             f"{args.num_classes} classes\n",
             f"`{' '.join(['eval.py', *sys.argv[1:]])}`\n",
             f"Card: {card_text}; out-of-core budget {format_size(setup['budget'])}, prefetch "
             f"window {window}; {args.solver}, synthetic images; images/s is the median of "
             f"{args.iterations} iterations after {args.warmup} warm-up ones, each batch in "
             f"a fresh process.\n",
             "## Largest batch\n",
             markdown_table(["variant", "largest batch", "images/s", "batch vs in core",
                             "speed vs best in core", "what stopped it"], table)]
    compared = summary(rows)
    if compared:
        lines.append("\n" + compared)
    lines += ["\n" + PUBLISHED]
    if args.context == "cpu":
        lines.append("\nOn a CPU host and device are the same memory: out of core saves nothing "
                     "here (see the allocator column); its rows show that the scheduler could "
                     "plan within the budget and what it costs in time.")
    lines += ["\n## Every measurement\n", markdown_rows(rows),
              "\n![throughput](throughput.png)\n"]
    return "\n".join(lines)


def main(argv=None):
    from common.fileio import atomic_write

    args = build_parser().parse_args(argv)
    setup, card = _setup(args)
    batches = _batches(args)
    out = claim_results_folder(args.out_dir, setup, MEASUREMENTS)   # before any measuring
    measured = out / MEASUREMENTS
    known = read_csv(measured) if measured.is_file() else []
    every = {(r["variant"], r["batch"]): r for r in known}
    if known:
        print(f"reusing {len(known)} measurement(s) from {measured}")

    def keep(row, _rows):
        every[(row["variant"], row["batch"])] = row
        write_csv(measured, sorted(every.values(),
                                   key=lambda r: (VARIANTS.index(r["variant"]), r["batch"])))

    print(f"card {format_size(card)}{' (emulated)' if setup['device_memory'] else ''}, "
          f"out-of-core budget {format_size(setup['budget'])}; batches "
          f"{' '.join(map(str, batches))} then {args.refine} bisection step(s)", flush=True)
    rows = sweep(setup, batches, args.refine, known=known, on_row=keep)
    largest = largest_rows(rows, args.max_batch)
    _write_results_csv(out / "results.csv", largest)
    net = args.arch + (f" {args.blocks}" if args.blocks else "")
    plot_throughput(rows, out / "throughput.png",
                    f"{net}, {args.image_size}px, card {format_size(card)}")
    text = results_markdown(args, setup, card, rows, largest)
    with atomic_write(out / "results.md", "w") as f:
        f.write(text)
    print(text.split("## Every measurement")[0].split("\n", 4)[-1].strip())
    print(f"\nwrote {out / 'results.md'}, {out / 'results.csv'}, {measured}, "
          f"{out / 'throughput.png'}")
    return 0
