"""Out-of-core training for every training script: ``--ooc-budget SIZE``.

Hayakawa & Narihira's adaptive window-based swap scheduler ships inside nnabla as
``nnabla.lms.SwapInOutScheduler``: it records which arrays every function of one training
iteration touches, then, from the second iteration on, swaps arrays out to host memory and
prefetches them back so that at most ``--ooc-budget`` bytes of device memory are in use.
Results are unchanged (arrays are copied, never recomputed): the tests check training with
and without the scheduler bit for bit.

A script uses it in three steps::

    add_ooc_args(parser)                        # --ooc-budget, --ooc-window
    ooc = out_of_core_from_args(args, ctx)      # before the graph is built; sets the context
    for batch in ...:
        with ooc.step() as hooks:               # data set-up, zero-grad, forward, backward,
            x.d = batch                         # all-reduce, weight decay, update
            loss.forward(clear_no_need_grad=True, **hooks)
            ...

Without ``--ooc-budget``, :meth:`OutOfCore.step` does nothing. ``--ooc-window SIZE`` is the
scheduler's prefetch window (nnabla's ``prefetch_size``, in bytes; nnabla's default is 1.5x
the budget): while planning, the scheduler keeps queueing the arrays of upcoming functions for
prefetching until the bytes queued ahead of the running function would exceed the window (or
the device bytes the budget). A wider window overlaps more transfers with computation, a
narrower one swaps out earlier; neither changes a result, and the device never holds more
than the budget. A window smaller than what one function touches cannot be scheduled (the
same figure as the smallest budget, which ``out-of-core-training/plan.py`` prints). What the
scheduler needs, done here once:

* two contexts, host and device. On CUDA the host side uses pinned memory
  (``prefer_cpu_pinned_array``) for fast transfers and the device side the virtual-memory
  allocator when the extension has it (CUDA >= 10.2 and cuDNN >= 8; it removes the
  fragmentation that frequent swaps cause); both preferences are set *before* the contexts
  are created, as they only affect contexts made afterwards. nnabla's scheduler parses the
  device id of both contexts as an integer, so a CPU context (whose id is empty by
  default) gets ``"0"``;
* on a CPU run host and device are the same memory: the scheduler runs (and is tested
  here) but saves nothing;
* every loop body with a different sequence of functions (another graph) gets its own
  scheduler (``step(key)``): a schedule is made from the first iteration it sees;
* nnabla's failures when the budget cannot hold what one function needs ("A function is
  out of memory", "Some arrays were not prefetched") become one :class:`UserError` line
  naming the budget (and the window, when one was given).
"""
import argparse
import contextlib
import re

from common.errors import UserError

__all__ = ["parse_size", "format_size", "MemorySize", "add_ooc_args", "check_ooc_args",
           "OutOfCore", "out_of_core_from_args", "scheduler_contexts", "MAX_SIZE"]

_UNITS = {"": 1, "b": 1,
          "k": 10 ** 3, "kb": 10 ** 3, "m": 10 ** 6, "mb": 10 ** 6, "g": 10 ** 9, "gb": 10 ** 9,
          "t": 10 ** 12, "tb": 10 ** 12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}
# nnabla takes sizes as C size_t and multiplies the budget by 1.5 for its default window:
# anything near 2**64 would overflow there, and no memory is anywhere near 2**60 bytes.
MAX_SIZE = 2 ** 60
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")

# Substrings of nnabla's scheduler errors that mean "the budget is too small"; the second
# is also what a prefetch window smaller than one function's arrays causes.
_WINDOW_ERROR = "Some arrays were not prefetched"
_BUDGET_ERRORS = ("A function is out of memory", _WINDOW_ERROR, "out of GPU memory")
_WINDOW_NEEDS_BUDGET = ("--ooc-window sets the out-of-core scheduler's prefetch window: it "
                        "needs --ooc-budget")
_HOOK_KEY = "common.train.out_of_core"
# CUDA allocation failures inside a scheduled step (the budget plus what runs outside the
# scheduler exceeds the device).
_DEVICE_OOM = ("Failed to allocate", "out of memory")


def parse_size(text):
    """Bytes from ``"6GiB"``, ``"512MiB"``, ``"1.5GB"``, ``"2e9"`` or ``"1048576"`` (GB is
    10**9, GiB 2**30); a one-line :class:`UserError` for anything else."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = _SIZE.match(str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise UserError(f"cannot read {text!r} as a memory size; write e.g. 6GiB, 512MiB, "
                            f"1.5GB or a number of bytes")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * _UNITS[unit])
    if size <= 0:
        raise UserError(f"memory size {text!r} must be positive")
    if size > MAX_SIZE:
        raise UserError(f"memory size {text!r} is larger than the {format_size(MAX_SIZE)} "
                        f"(2**60 bytes) nnabla can handle")
    return size


def format_size(size):
    """``1536 -> '1.50 KiB'``: binary units, two decimals."""
    size = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} B" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} GiB"


class MemorySize:
    """A flag type for memory sizes (``6GiB``, ``1.5GB``, ``2e9``, bytes), positive and at
    most :data:`MAX_SIZE`. It returns the text as written, so that ``config.yaml`` keeps the
    user's units; :func:`parse_size` turns it into bytes."""

    __name__ = "memory size"  # argparse names the type in its messages

    def __call__(self, text):
        try:
            parse_size(text)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return str(text).strip()

    def __repr__(self):
        return "MemorySize()"


def add_ooc_args(parser):
    """Add ``--ooc-budget`` and ``--ooc-window`` to ``parser`` (or an argument group) and
    return it."""
    parser.add_argument(
        "--ooc-budget", type=MemorySize(), default=None, metavar="SIZE",
        help="train out of core: device memory the swap scheduler may use, e.g. 6GiB "
             "(nnabla.lms, Hayakawa & Narihira 2020); results are identical, arrays that do "
             "not fit live in host memory. Only saves memory on a GPU (--context cudnn). "
             "out-of-core-training/plan.py estimates what a network needs (default: off)")
    parser.add_argument(
        "--ooc-window", type=MemorySize(), default=None, metavar="SIZE",
        help="with --ooc-budget: the scheduler's prefetch window, the bytes of upcoming "
             "functions' arrays it may queue for prefetching (nnabla's prefetch_size). Wider "
             "overlaps more transfers with computation; results are identical with any "
             "window; it must hold what one function touches (plan.py prints that) "
             "(default: nnabla's, 1.5x the budget)")
    return parser


def _type_config(ctx):
    """'float' or 'half' from a context's first backend ('cudnn:half' -> 'half')."""
    backend = ctx.backend[0] if ctx.backend else "cpu:float"
    return backend.split(":", 1)[1] if ":" in backend else "float"


def _is_cuda(ctx):
    return any(b.startswith(("cuda", "cudnn")) for b in ctx.backend)


def scheduler_contexts(device_ctx):
    """``(host, device, virtual)``: the scheduler's contexts built from the run's context,
    and whether the virtual-memory allocator is on.

    On CUDA this first makes pinned host arrays and (when built) the virtual-memory
    allocator the preferred array classes, then creates both contexts, so it must run
    before any graph is built.
    """
    import nnabla as nn
    from nnabla.ext_utils import get_extension_context

    type_config = _type_config(device_ctx)
    device_id = device_ctx.device_id or "0"
    virtual = False
    if _is_cuda(device_ctx):
        import nnabla_ext.cuda.init as cuda_init
        cuda_init.prefer_cpu_pinned_array()
        virtual = "CudaCachedVirtualArray" in cuda_init.array_classes()
        if virtual:
            cuda_init.prefer_cuda_virtual_array()
        backend = device_ctx.backend[0].split(":", 1)[0]
        device = get_extension_context(backend, device_id=device_id, type_config=type_config)
    else:
        device = nn.Context(list(device_ctx.backend), device_ctx.array_class, device_id)
    host = get_extension_context("cpu", type_config=type_config)
    host = nn.Context(list(host.backend), host.array_class, "0")  # id must parse as an int
    return host, device, virtual


class OutOfCore:
    """The swap scheduler around training steps, or a no-op when ``budget`` is None.
    ``window``: the prefetch window (None: nnabla's default, 1.5x the budget)."""

    def __init__(self, budget=None, device_ctx=None, window=None):
        self.budget = None if budget is None else parse_size(budget)
        if window is not None and self.budget is None:
            raise UserError(_WINDOW_NEEDS_BUDGET)
        self.window = None if window is None else parse_size(window)
        self.host_ctx = self.device_ctx = None
        self.virtual_memory = False
        self._schedulers = {}
        if self.budget is not None:
            if device_ctx is None:
                import nnabla as nn
                device_ctx = nn.get_current_context()
            self.host_ctx, self.device_ctx, self.virtual_memory = scheduler_contexts(device_ctx)

    @property
    def enabled(self):
        return self.budget is not None

    def describe(self):
        if not self.enabled:
            return "out-of-core: off"
        where = "GPU" if _is_cuda(self.device_ctx) else "CPU (exercises the path, saves nothing)"
        extra = ", virtual-memory allocator" if self.virtual_memory else ""
        return (f"out-of-core: budget {format_size(self.budget)} on {where}{extra}, "
                f"prefetch window {format_size(self.effective_window)}"
                f"{'' if self.window else ' (default: 1.5x the budget)'}")

    @property
    def effective_window(self):
        """The prefetch window in bytes the scheduler uses (nnabla's default when unset)."""
        if self.budget is None:
            return None
        return self.window if self.window is not None else int(self.budget * 1.5)

    def _scheduler(self, key):
        if key not in self._schedulers:
            from nnabla.lms import SwapInOutScheduler
            self._schedulers[key] = SwapInOutScheduler(self.host_ctx, self.device_ctx,
                                                       self.budget, self.window)
        return self._schedulers[key]

    @contextlib.contextmanager
    def step(self, key="train"):
        """Context for one training iteration; yields the keyword arguments to pass to
        ``forward`` and ``backward`` (an empty dict when off)::

            with ooc.step() as hooks:
                x.d = batch                     # the data set-up belongs inside too
                solver.zero_grad()
                loss.forward(clear_no_need_grad=True, **hooks)
                loss.backward(clear_buffer=True, **hooks)
                solver.update()

        The function hooks go to ``forward``/``backward`` explicitly instead of through
        nnabla's global callbacks (``with scheduler:``): the global ones are also called for
        the functions some nnabla functions create internally in C++ (the CPU LSTM), and
        nnabla cannot wrap those for Python ("EOFError: Ran out of input"). Solver calls
        (zero_grad, weight_decay, update, ...) are hooked globally while the step runs.
        ``key`` names the graph: iterations of another graph need their own schedule."""
        if not self.enabled:
            yield {}
            return
        from nnabla import callback
        scheduler = self._scheduler(key)
        try:
            scheduler.start_scheduling()
        except RuntimeError as exc:
            raise self._translate(exc) from None
        callback.set_solver_pre_hook(_HOOK_KEY, scheduler.update_pre_hook)
        callback.set_solver_post_hook(_HOOK_KEY, scheduler.update_post_hook)
        try:
            yield {"function_pre_hook": scheduler.function_pre_hook,
                   "function_post_hook": scheduler.function_post_hook}
        except RuntimeError as exc:
            raise self._translate(exc) from None
        finally:
            callback.unset_solver_pre_hook(_HOOK_KEY)
            callback.unset_solver_post_hook(_HOOK_KEY)
            scheduler.end_scheduling()

    def _translate(self, exc):
        text = str(exc)
        budget = format_size(self.budget)
        if self.window is not None and self.window < self.budget \
                and _WINDOW_ERROR in text:
            # The scheduler could not queue the running function's own arrays: with a
            # window below the budget, the window is what ran out.
            return UserError(f"--ooc-window {format_size(self.window)} is too small for this "
                             f"network and batch: the arrays one function needs do not fit "
                             f"in the prefetch window (nnabla: "
                             f"{_first_line(text, (_WINDOW_ERROR,))}); raise --ooc-window to "
                             f"at least the smallest budget out-of-core-training/plan.py "
                             f"prints, or leave it out (1.5x the budget)")
        if any(s in text for s in _BUDGET_ERRORS):
            what = ("one function's inputs and outputs do not fit" if "A function is out"
                    in text else "the arrays the next functions need cannot be prefetched")
            return UserError(f"--ooc-budget {budget} is too small for this network and batch: "
                             f"{what} (nnabla: {_first_line(text, _BUDGET_ERRORS)}); raise "
                             f"--ooc-budget or lower the batch size "
                             f"(out-of-core-training/plan.py estimates the smallest budget)")
        if any(s in text for s in _DEVICE_OOM):
            return UserError(f"the device ran out of memory with --ooc-budget {budget}: the "
                             f"budget plus what runs outside the scheduler exceeds the GPU; "
                             f"lower --ooc-budget (nnabla: {_first_line(text, _DEVICE_OOM)})")
        return exc


def _first_line(text, needles):
    for line in text.splitlines():
        if any(n in line for n in needles):
            return line.strip()
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def check_ooc_args(args):
    """One-line errors for ``--ooc-budget``/``--ooc-window`` (a window without a budget, a
    size nnabla cannot take) without creating any context: for scripts that check their
    inputs before reading data."""
    budget, window = getattr(args, "ooc_budget", None), getattr(args, "ooc_window", None)
    if budget is not None:
        parse_size(budget)
    if window is not None:
        if budget is None:
            raise UserError(_WINDOW_NEEDS_BUDGET)
        parse_size(window)


def out_of_core_from_args(args, ctx=None):
    """An :class:`OutOfCore` from ``args.ooc_budget`` and ``args.ooc_window``; when enabled,
    its device context becomes nnabla's default (call it before building the graph)."""
    ooc = OutOfCore(getattr(args, "ooc_budget", None), ctx, getattr(args, "ooc_window", None))
    if ooc.enabled:
        import nnabla as nn
        nn.set_default_context(ooc.device_ctx)
        print(ooc.describe(), flush=True)
    return ooc
