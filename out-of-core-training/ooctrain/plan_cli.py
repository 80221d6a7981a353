"""The command line of the memory planner (``plan.py``): builds the network's training graph,
prints what :func:`ooctrain.planner.plan` predicts, whether it fits ``--gpu-memory`` and the
``--ooc-budget`` to use (and the smallest ``--ooc-window``, the same bytes), and with
``--measure`` compares the prediction with nnabla's own CPU allocator
(:mod:`ooctrain.measure`). It writes no files.
"""
import math

from common.cli import Fraction, Parser, PositiveInt
from common.errors import UserError
from common.report import markdown_table
from common.train.out_of_core import MemorySize, format_size, parse_size
from ooctrain.cli import add_input_args, add_model_args, model_spec_from_args
from ooctrain.graph import SOLVERS
from ooctrain.measure import cuda_device_memory, measure, physical_memory
from ooctrain.planner import plan_spec

__all__ = ["build_parser", "spec_from_args", "main"]


def build_parser():
    p = Parser(description=(
        "Bytes one training iteration of a network needs (parameters, gradients, solver "
        "state, activations kept for backward, peak working set), whether that fits the GPU "
        "and the --ooc-budget out-of-core training needs."))
    add_model_args(p)
    p.add_argument("--batch-size", type=PositiveInt, default=32, help="(default: %(default)s)")
    add_input_args(p)
    p.add_argument("--solver", default="momentum", choices=sorted(SOLVERS))
    p.add_argument("--type-config", default="float", choices=("float", "half"),
                   help="half: 2-byte activations (estimate; --measure is float only)")
    p.add_argument("--gpu-memory", type=MemorySize(), default=None, metavar="SIZE",
                   help="GPU memory to plan for, e.g. 16GiB (default: the current CUDA "
                        "device's when the nnabla CUDA extension is installed)")
    p.add_argument("--margin", type=Fraction, default=0.1,
                   help="fraction of the GPU memory the suggested --ooc-budget leaves free "
                        "for what the scheduler does not manage, below 1 (default: "
                        "%(default)s)")
    p.add_argument("--iterations", type=PositiveInt, default=3,
                   help="training iterations to simulate / measure (default: %(default)s)")
    p.add_argument("--measure", action="store_true",
                   help="also run the iterations on the CPU in a fresh process and compare "
                        "the prediction with nnabla's allocator")
    return p


def spec_from_args(args):
    """The :func:`ooctrain.graph.build_training_graph` spec of the command line (sizes as
    train.py)."""
    if args.margin >= 1:
        raise UserError(f"--margin must be below 1 (it leaves that fraction of the GPU free), "
                        f"got {args.margin}")
    model = model_spec_from_args(args)
    overrides = {k: list(v) if isinstance(v, (list, tuple)) else v
                 for k, v in model.overrides.items()}
    return {"arch": args.arch, "overrides": overrides, "batch_size": args.batch_size,
            "image_size": args.image_size, "num_classes": args.num_classes,
            "small_input": args.small_input, "solver": args.solver,
            "iterations": args.iterations}


def relative_error(predicted, measured):
    return (predicted - measured) / measured if measured else float("inf")


def main(argv=None):
    args = build_parser().parse_args(argv)
    spec = spec_from_args(args)
    if args.measure and args.type_config != "float":
        raise UserError("--measure runs on the CPU in float; drop --type-config half")
    gpu = parse_size(args.gpu_memory) if args.gpu_memory is not None else cuda_device_memory()
    result = plan_spec(spec, args.solver, args.iterations, args.type_config)

    sizes = ", ".join(f"{k}={v}" for k, v in spec["overrides"].items())
    print(f"{args.arch}{' (' + sizes + ')' if sizes else ''}, batch {args.batch_size}, "
          f"{args.image_size}x{args.image_size}, {args.num_classes} classes, {args.solver} "
          f"({result.state_arrays} state array(s) per parameter), {args.type_config}; "
          f"{result.functions} functions")
    rows = [(name, format_size(n), f"{int(n):,}") for name, n in result.rows()]
    print(markdown_table(["", "size", "bytes"], rows))
    at_peak = ", ".join(f"{k} {format_size(v)}" for k, v in result.peak_breakdown.items() if v)
    print(f"peak working set during {result.peak_at}: {at_peak}")
    # The prefetch window (--ooc-window) must queue the same bytes: the running function's
    # arrays. It never raises the device memory, which the budget bounds.
    print(f"smallest out-of-core budget: what {result.min_budget_at} touches at once; "
          f"also the smallest --ooc-window ({format_size(result.min_budget)})")
    if args.type_config == "half":
        print("half: an estimate (2-byte activations, half copies of parameters and "
              "gradients next to the float ones); not measurable on the CPU")
    if result.unmodelled:
        print(f"note: internal buffers of {', '.join(result.unmodelled)} are not modelled")
    print(_verdict(result, gpu, args.margin))
    if args.measure:
        _measure_and_compare(spec, result)
    return 0


def _verdict(result, gpu, margin):
    """Whether the run fits ``gpu`` bytes and, if not, the --ooc-budget to use."""
    need = result.allocator_used
    if gpu is None:
        return ("GPU memory unknown (no nnabla CUDA extension): pass --gpu-memory SIZE to "
                "check whether it fits")
    usable = gpu * (1 - margin)
    if need <= usable:
        return (f"fits in {format_size(gpu)} of GPU memory with {margin:.0%} to spare: "
                f"train in core, no --ooc-budget needed")
    if result.min_budget > usable:
        return (f"does not fit in {format_size(gpu)}, and even out of core the smallest "
                f"budget {format_size(result.min_budget)} ({result.min_budget_at}) leaves "
                f"less than {margin:.0%} of the GPU free: lower the batch size")
    return (f"does not fit in {format_size(gpu)} of GPU memory ({format_size(need)} needed): "
            f"train out of core with --ooc-budget {_budget_text(usable, result.min_budget)} "
            f"(at least {format_size(result.min_budget)}); the host must hold about "
            f"{format_size(need)}")


def _measure_and_compare(spec, result):
    physical = physical_memory()
    if physical and result.allocator_used > 0.7 * physical:
        raise UserError(f"--measure would need about {format_size(result.allocator_used)} of "
                        f"the {format_size(physical)} RAM; use a smaller batch or network")
    measured = measure(spec)
    rows = []
    for i, (pred, meas) in enumerate(zip(result.allocator_used_history, measured["history"])):
        p, m = pred["used"], meas["used"]
        rows.append((i + 1, f"{p:,}", f"{m:,}", f"{relative_error(p, m):+.1%}"))
    print("allocator used after each iteration (CPU, fresh process):")
    print(markdown_table(["iteration", "predicted bytes", "measured bytes", "error"], rows))
    print(f"predicted {format_size(result.allocator_used)}, measured "
          f"{format_size(measured['used'])}: error "
          f"{relative_error(result.allocator_used, measured['used']):+.1%} (the logical "
          f"peak working set alone: {relative_error(result.peak, measured['used']):+.1%}; "
          f"the rest is rounding, 1 MiB chunks and fragmentation)")


def _budget_text(nbytes, minimum):
    """``nbytes`` as an --ooc-budget value rounded down to 0.01 GiB (or 1 MiB), never below
    ``minimum``."""
    unit, name = (2 ** 30, "GiB") if nbytes >= 2 ** 30 else (2 ** 20, "MiB")
    value = math.floor(round(nbytes / unit * 100, 3)) / 100
    if value * unit < minimum:
        value = math.ceil(minimum / unit * 100) / 100
    return f"{value:g}{name}"
