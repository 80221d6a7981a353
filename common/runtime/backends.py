"""Which runtime runs a network: the ``--backend`` / ``--threads`` flags of every inference
script, the ``auto`` choice, and sessions of exported ONNX models on onnxruntime or OpenVINO.

Runtimes (``--backend`` values; ``auto`` picks one of them):

* ``nnabla``: the reference (the repository's nnabla networks, any ``--context``);
* ``onnx``: onnxruntime, CPU (printed as ``onnxruntime``);
* ``openvino``: OpenVINO, CPU, always in float32 (``INFERENCE_PRECISION_HINT=f32``; on CPUs
  with bfloat16 units OpenVINO would otherwise compute in bfloat16, which breaks the agreement
  bounds of every model).

``auto`` (:func:`choose_backend`): nnabla on a GPU context (``cudnn``); on the CPU the first
installed runtime of the model's own preference order (each paper measured its models and
states the numbers beside its order), falling back to nnabla. The choice is announced once
per command by the scripts (``backend: onnxruntime (auto)`` on stderr).

Sessions (:func:`open_session`): a ``.onnx`` file (or bytes / ``onnx.ModelProto``) opened on
``onnx`` or ``openvino`` with ``threads`` intra-op threads (default: every core this process
may use), called as ``session.run([arrays]) -> [arrays]``; :class:`ModelFile` runs a
fixed-shape model file of one input on inputs of any batch size. OpenVINO reads the cached
``.onnx`` export itself (its ONNX reader only): nothing OpenVINO-specific is cached, because
neither its IR (``.xml``/``.bin``: 0.35 s read + 5.9 s compile for a D3Net-MSS target) nor
its exported compiled blob (2.4 s import vs 2.8 s compile) loaded measurably faster than
compiling the ONNX file (measured on the 2-core machine).
"""
import importlib
import os
import sys

import numpy as np

from common.cli import PositiveInt
from common.errors import UserError

RUNTIMES = ("nnabla", "onnx", "openvino")
CHOICES = ("auto",) + RUNTIMES
DISPLAY_NAMES = {"nnabla": "nnabla", "onnx": "onnxruntime", "openvino": "openvino"}
# Python modules each runtime needs (onnx: the exporters build or check ONNX graphs with it).
_MODULES = {"nnabla": ("nnabla",), "onnx": ("onnxruntime", "onnx"),
            "openvino": ("openvino", "onnx")}
_HINTS = {"onnx": "onnxruntime and onnx (pinned in requirements.txt)",
          "openvino": "openvino (pinned in requirements.txt)"}
_importable = {}


def available_cores():
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def missing_modules(runtime):
    """The modules ``runtime`` needs that cannot be imported (``[]`` when it is usable)."""
    missing = []
    for module in _MODULES[runtime]:
        if module not in _importable:
            try:
                importlib.import_module(module)
                _importable[module] = True
            except ImportError:
                _importable[module] = False
        if not _importable[module]:
            missing.append(module)
    return missing


def is_installed(runtime):
    """Whether every module ``runtime`` needs can be imported."""
    return not missing_modules(runtime)


def require(runtime):
    """Raise a one-line :class:`UserError` unless ``runtime`` can be used."""
    if runtime not in RUNTIMES:
        raise UserError(f"unknown backend {runtime!r} (expected one of {', '.join(CHOICES)})")
    missing = missing_modules(runtime)
    if missing:
        raise UserError(f"--backend {runtime} needs {_HINTS.get(runtime, runtime)}, but "
                        f"{', '.join(missing)} cannot be imported; run `make setup` or choose "
                        "another --backend")


def context_name(context):
    """``'cpu'`` or ``'cudnn'`` for anything :func:`common.context.resolve_context` accepts
    (a name, a ``(name, device_id, type_config)`` tuple, an nnabla Context, or ``None`` for
    nnabla's current default context)."""
    if isinstance(context, tuple):
        context = context[0] if context else "cpu"
    if isinstance(context, str):
        return context
    if context is None:
        import nnabla as nn

        context = nn.get_current_context()
    backends = getattr(context, "backend", None) or []
    return "cudnn" if any(str(b).startswith(("cudnn", "cuda")) for b in backends) else "cpu"


def choose_backend(requested, context="cpu", auto_order=("onnx",), runtimes=RUNTIMES,
                   what="this model", announce=None):
    """The runtime that runs ``what`` for ``--backend requested``.

    ``auto_order``: the model's CPU runtimes, fastest first (only runtimes that meet its
    agreement bounds); ``runtimes``: the runtimes that can run it at all (e.g. a folder of
    ONNX files cannot run on nnabla). An explicit choice must be one of ``runtimes`` and
    installed (else one line). ``auto``: nnabla on a GPU context when it can run the model,
    else the first installed entry of ``auto_order``, else nnabla. ``announce(line)``
    receives ``backend: <runtime> (auto)`` when ``auto`` decided."""
    if requested not in CHOICES:
        raise UserError(f"unknown backend {requested!r} (expected one of {', '.join(CHOICES)})")
    if requested != "auto":
        if requested not in runtimes:
            raise UserError(f"--backend {requested}: {what} cannot run on "
                            f"{DISPLAY_NAMES[requested]}; use one of "
                            f"{', '.join(r for r in CHOICES if r == 'auto' or r in runtimes)}")
        require(requested)
        return requested
    on_gpu = context_name(context) != "cpu"
    candidates = (["nnabla"] if on_gpu else []) + list(auto_order) + ["nnabla"]
    choice = next((r for r in candidates if r in runtimes and is_installed(r)), None)
    if choice is None:
        raise UserError(f"no runtime for {what} is installed (it runs on "
                        f"{', '.join(DISPLAY_NAMES[r] for r in runtimes)}); run `make setup`")
    if announce is not None:
        announce(f"backend: {DISPLAY_NAMES[choice]} (auto)")
    return choice


def announce_on_stderr(line):
    print(line, file=sys.stderr, flush=True)


def add_backend_args(parser, runtimes=RUNTIMES, help=None):
    """``--backend`` (``auto`` or one of ``runtimes``; default ``auto``) and ``--threads N``
    (official OpenVINO spellings ``--cpu-number`` / ``-n`` as hidden aliases, where free)."""
    choices = ["auto"] + [r for r in RUNTIMES if r in runtimes]
    parser.add_argument(
        "--backend", choices=choices, default="auto",
        help=help or ("network runtime: auto (default: on the CPU the fastest installed "
                      "runtime that reproduces nnabla within the model's bounds, on a GPU "
                      f"nnabla), or one of {', '.join(choices[1:])} (nnabla is the reference)"))
    sessions = " / ".join(DISPLAY_NAMES[r] for r in choices[1:] if r != "nnabla")
    parser.add_argument(
        "--threads", type=PositiveInt, default=None, metavar="N",
        help=f"threads of the {sessions} sessions (default: every core the process may use; "
             "eval.py gives each --jobs worker its own share; nnabla's CPU kernels take no "
             "thread count)")
    for alias in ("--cpu-number", "-n"):
        if alias not in parser._option_string_actions:
            parser.add_alias(alias, "threads")
    return parser


# --------------------------------------------------------------------------- sessions

def _model_name(model):
    return os.path.basename(os.fspath(model)) if isinstance(model, (str, os.PathLike)) \
        else "the model"


def _first_line(exc):
    """The first informative line of a runtime's (often multi-line) error message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines
              if not line.startswith(("Exception from", "Check ", "FrontEnd API failed"))]
    return (useful or lines or [type(exc).__name__])[0]


class OrtSession:
    """An onnxruntime session (see :func:`common.runtime.onnx_export.make_session`)."""

    runtime = "onnx"

    def __init__(self, model, threads=None, low_memory=False):
        from common.runtime.onnx_export import make_session

        try:
            self.session = make_session(model, threads, low_memory)
        except UserError:
            raise
        except Exception as exc:  # onnxruntime's own exception types (InvalidProtobuf, Fail...)
            raise UserError(f"onnxruntime cannot run {_model_name(model)}: "
                            f"{_first_line(exc)}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_shapes = [[d if isinstance(d, int) else None for d in i.shape]
                             for i in self.session.get_inputs()]

    @property
    def threads(self):
        return self.session.get_session_options().intra_op_num_threads

    def run(self, arrays):
        return self.session.run(None, dict(zip(self.input_names, arrays)))


class OpenVinoSession:
    """An OpenVINO CPU model compiled for latency in float32 with ``threads`` threads.

    ``low_memory`` turns OpenVINO's fused elementwise subgraphs ("snippets") off: their
    buffers are not shared with the rest of the graph. For a D3Net-MSS patch (batch 1) the
    peak RSS of a process holding only the compiled model falls from 941 to 910 MB (vocals,
    256 frames) and from 1153 to 1121 MB (bass, 384 frames) at the same time per call
    (measured on the 2-core machine, OpenVINO 2026.4)."""

    runtime = "openvino"

    def __init__(self, model, threads=None, low_memory=False):
        try:
            import openvino as ov
        except ImportError as exc:
            raise UserError(f"--backend openvino needs the openvino package ({exc})") from None
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": int(threads or available_cores())}
        if low_memory:
            config["SNIPPETS_MODE"] = "DISABLE"
        name = _model_name(model)
        try:
            if isinstance(model, (str, os.PathLike)):
                # the ONNX reader alone: core.read_model would try every framework's reader
                # on a damaged file, and TensorFlow's logs its parse errors on stderr
                from openvino.frontend import FrontEndManager

                reader = FrontEndManager().load_by_framework("onnx")
                model = reader.convert(reader.load(os.fspath(model)))
            else:  # bytes / onnx.ModelProto
                model = core.read_model(model if isinstance(model, bytes)
                                        else model.SerializeToString(), b"")
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO's RuntimeError / frontend GeneralFailure
            raise UserError(f"OpenVINO cannot run {name}: {_first_line(exc)}") from None
        self.input_names = [p.any_name for p in self.compiled.inputs]
        self.output_names = [p.any_name for p in self.compiled.outputs]
        self.input_shapes = [[d.get_length() if d.is_static else None
                              for d in p.get_partial_shape()] for p in self.compiled.inputs]
        self._request = self.compiled.create_infer_request()

    @property
    def threads(self):
        return int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    def run(self, arrays):
        results = self._request.infer(list(arrays))
        return [results[out].copy() for out in self.compiled.outputs]


_SESSIONS = {"onnx": OrtSession, "openvino": OpenVinoSession}


def open_session(runtime, model, threads=None, low_memory=False):
    """A session of ``model`` (``.onnx`` path; onnxruntime also bytes / ModelProto) on
    ``runtime`` (``'onnx'`` or ``'openvino'``); ``session.run(arrays) -> [arrays]``."""
    if runtime not in _SESSIONS:
        raise UserError(f"backend {runtime!r} does not run ONNX models "
                        f"(expected one of {', '.join(_SESSIONS)})")
    require(runtime)
    return _SESSIONS[runtime](model, threads, low_memory)


class ModelFile:
    """``model(x) -> y`` for a ``.onnx`` file of one input and one output (e.g. a published
    model exported with fixed shapes) on ``runtime``.

    ``input_shape``: the file's input dimensions (``None`` where dynamic). An input whose
    shape differs only in the batch size runs batch-adapted: a smaller batch is padded with
    copies of its last item (their outputs dropped), a larger one runs in slices; any other
    mismatch is a one-line :class:`UserError`. ``graph_builds`` (1) and ``exports`` (0) match
    the runners that export their own models."""

    graph_builds = 1
    exports = 0

    def __init__(self, path, runtime, threads=None):
        self.path = os.fspath(path)
        self.runtime = runtime
        self.session = open_session(runtime, self.path, threads)
        if len(self.session.input_names) != 1 or len(self.session.output_names) != 1:
            raise UserError(f"{self.path}: expected a model of one input and one output, got "
                            f"{len(self.session.input_names)} input(s) and "
                            f"{len(self.session.output_names)} output(s)")
        self.input_shape = list(self.session.input_shapes[0])

    @property
    def fixed_batch(self):
        return self.input_shape[0] if self.input_shape else None

    def __call__(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        want = self.input_shape
        if x.ndim != len(want) or any(w is not None and w != d
                                      for w, d in zip(want[1:], x.shape[1:])):
            shown = "x".join("?" if d is None else str(d) for d in want)
            raise UserError(f"{self.path} takes inputs of shape {shown}, got "
                            f"{'x'.join(map(str, x.shape))}")
        batch = self.fixed_batch
        if batch is None or batch == x.shape[0]:
            return self.session.run([x])[0]
        if x.shape[0] == 0:  # the output's shape is known only from a run
            return self.session.run([np.zeros([batch] + list(x.shape[1:]), np.float32)])[0][:0]
        outs = []
        for start in range(0, x.shape[0], batch):
            part = x[start:start + batch]
            n = part.shape[0]
            if n < batch:
                part = np.concatenate([part, np.repeat(part[-1:], batch - n, axis=0)])
            outs.append(self.session.run([part])[0][:n])
        return np.concatenate(outs, axis=0)
