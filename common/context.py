"""Compute-context selection shared by every train/eval script.

``--context cpu|cudnn``, ``--device-id`` and ``--type-config`` map onto
``nnabla.ext_utils.get_extension_context``. A missing CUDA extension becomes a
one-line :class:`~common.errors.UserError` naming the pip package to install,
instead of nnabla's logged error plus ImportError traceback.
"""
import importlib

from common.cli import NonNegativeInt
from common.errors import UserError

CONTEXTS = ("cpu", "cudnn")
TYPE_CONFIGS = ("float", "half")

# nnabla 1.39 ships its CUDA extension as one PyPI package per CUDA version; the
# versions below are the ones its install guide lists for 1.39. Multi-GPU
# (MPI + NCCL2) support is detected by these packages at run time.
CUDA_HINT = (
    "the cudnn context needs the NNabla CUDA extension matching nnabla 1.39: "
    "pip install nnabla-ext-cuda120==1.39.0 (CUDA 12.0 + cuDNN 8.8) "
    "or nnabla-ext-cuda110==1.39.0 (CUDA 11.0 + cuDNN 8.0), "
    "plus an NVIDIA driver and GPU"
)


def add_context_args(parser):
    """Add ``--context``, ``--device-id`` and ``--type-config`` to ``parser``."""
    group = parser.add_argument_group("compute context")
    group.add_argument("--context", "-c", choices=CONTEXTS, default="cpu",
                       help="nnabla extension to run on (default: %(default)s)")
    group.add_argument("--device-id", "-d", type=NonNegativeInt, default=0,
                       help="GPU index for cudnn; under mpirun the first GPU, "
                            "each rank adds its local rank (default: %(default)s)")
    group.add_argument("--type-config", "-t", choices=TYPE_CONFIGS, default="float",
                       help="float = fp32; half = fp16 storage/compute where the "
                            "extension implements it (default: %(default)s)")
    return parser


def _import_cuda_extension():
    """Import ``nnabla_ext.cudnn`` or raise a one-line UserError.

    We import it ourselves rather than letting ``get_extension_context`` do it,
    because nnabla logs an error and re-raises a bare ImportError there.
    """
    try:
        return importlib.import_module("nnabla_ext.cudnn")
    except ImportError as exc:
        raise UserError(f"{CUDA_HINT} ({_first_line(exc)})") from None
    except Exception as exc:  # e.g. OSError: libcudart.so not found, no driver
        raise UserError(f"the NNabla CUDA extension is installed but failed to load: "
                        f"{_first_line(exc)}; {CUDA_HINT}") from None


def _first_line(exc):
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def get_context(context="cpu", device_id=0, type_config="float"):
    """Return the nnabla ``Context`` for ``context`` (``cpu`` or ``cudnn``).

    ``half`` on cpu is accepted: nnabla's CPU extension registers ``cpu:half``
    kernels (falling back to ``cpu:float`` for the rest), which is slow but
    lets mixed-precision code paths run without a GPU.
    """
    from nnabla.ext_utils import get_extension_context

    if context not in CONTEXTS:
        raise UserError(f"unknown context {context!r}; choose one of {', '.join(CONTEXTS)}")
    if type_config not in TYPE_CONFIGS:
        raise UserError(f"unknown type config {type_config!r}; choose one of "
                        f"{', '.join(TYPE_CONFIGS)}")
    try:
        device_id = int(device_id)
    except (TypeError, ValueError):
        raise UserError(f"device id must be an integer, got {device_id!r}") from None
    if device_id < 0:
        raise UserError(f"device id must be >= 0, got {device_id}")
    if context == "cpu":
        return get_extension_context("cpu", type_config=type_config)
    ext = _import_cuda_extension()
    try:
        count = ext.get_device_count()
    except Exception as exc:
        raise UserError(f"cannot query CUDA devices: {_first_line(exc)}") from None
    if device_id >= int(count):
        raise UserError(f"--device-id {device_id} is out of range: "
                        f"{count} CUDA device(s) visible")
    return get_extension_context("cudnn", device_id=str(device_id), type_config=type_config)


def context_from_args(args):
    """Build the context from parsed args, make it nnabla's default, return it."""
    import nnabla as nn

    ctx = get_context(getattr(args, "context", "cpu"), getattr(args, "device_id", 0),
                      getattr(args, "type_config", "float"))
    nn.set_default_context(ctx)
    return ctx


def resolve_context(context):
    """An nnabla Context from ``'cpu'`` / ``'cudnn'`` or ``(name, device_id, type_config)``
    (plain values keep inference objects picklable for worker processes); an nnabla Context
    or None (nnabla's default context) passes through."""
    if isinstance(context, str):
        context = (context,)
    if not isinstance(context, tuple):
        return context
    return get_context(*context)


def context_scope(ctx):
    """``nn.context_scope(ctx)``, or a no-op for ``ctx=None``."""
    import contextlib

    import nnabla as nn

    return contextlib.nullcontext() if ctx is None else nn.context_scope(ctx)
