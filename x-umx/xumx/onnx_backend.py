"""Fast X-UMX / UMX inference: the official NNabla parameters run on onnxruntime.

nnabla's CPU LSTM is by far the slowest part of X-UMX/UMX inference, and nnabla's
ONNX exporter does not handle LSTM. This module therefore writes the ONNX graph
itself (``onnx.helper``), straight from the parameter arrays as they are stored in
the official ``.h5`` files, and runs it with onnxruntime. The network math is the
test-mode (inference) forward of the official model:

* crop the mixture magnitude to ``max_bin`` bins, ``(x + input_mean) * input_scale``;
* ``fc1`` (affine over the flattened (channels, bins) axes, no bias) + batch norm +
  tanh; X-UMX averages the four targets' ``fc1`` outputs;
* a multi-layer LSTM (officially bidirectional with ``hidden_size // 2`` units per
  direction; the sizes are read from the weights);
* skip connection (concatenate ``fc1`` output and LSTM output); X-UMX averages the
  four targets' concatenations;
* ``fc2`` + batch norm + ReLU, ``fc3`` + batch norm, reshape to
  (channels, full bins), ``* output_scale + output_mean``, ReLU.

The runner returns these ReLU outputs (the masks). It does not multiply by the
mixture; the caller does that (``masks[:, :, j*C:(j+1)*C] * mag`` for X-UMX target j
with C channels).

Batch norm (running statistics) is folded into the preceding affine weight as a
per-column scale plus a bias, and ``output_scale``/``output_mean`` into the ``fc3``
weight and bias, computed in float64 and stored as float32. The four X-UMX ``fc2``
layers share their input and run as one MatMul. nnabla's LSTM weights are re-ordered
to ONNX's gate order (see :func:`nnabla_lstm_to_onnx`). Everything else follows the
official order of operations, so results agree with nnabla to float32 rounding
(about 1e-7 relative on the parity fixtures).

The sizes come from the parameter shapes; a config dict in the format of
:mod:`xumx.weights` may be passed and is checked against them. Sessions are made by
:func:`common.runtime.onnx_export.make_session`, as for every ONNX backend here.

Public API
----------
``build_onnx_runner(kind, params, config=None, ...) -> OnnxRunner``
``build_onnx_model(kind, params, config=None) -> onnx.ModelProto``
``resolve_config(kind, params, config=None) -> dict``
``nnabla_lstm_to_onnx(weight_l0, weight, bias) -> list of (W, R, B) per layer``
``build_lstm_model(weight_l0, weight, bias) -> onnx.ModelProto`` (LSTM stack alone)
``TARGETS``: the X-UMX target order (bass, drums, vocals, other).
"""
import hashlib
import json
import os
import re
import shutil

import numpy as np

from common.errors import UserError
from common.runtime.onnx_export import make_session

TARGETS = ("bass", "drums", "vocals", "other")
KINDS = ("xumx", "umx")
OPSET = 17
BN_EPS = 1e-5  # nnabla's PF.batch_normalization default, used by the official model

# nnabla's F.lstm stores its four gates in the order (input, forget, cell, output)
# along the gate axis (size 4) of its weights/bias (verified numerically against
# F.lstm, see x-umx/tests/test_onnx_backend.py); ONNX's
# LSTM operator expects (input, output, forget, cell). Index i of this tuple is the
# nnabla gate that goes to ONNX gate slot i.
_NNABLA_GATE_FOR_ONNX = (0, 3, 1, 2)

# size keys of the shared config dict (see xumx.weights) checked against the parameters
_CONFIG_KEYS = ("hidden_size", "max_bin", "nb_output_bins", "n_fft", "nb_channels",
                "nb_layers", "nb_directions", "lstm_hidden_size", "bidirectional")


def _onnx():
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:  # pragma: no cover - environment problem
        raise UserError(f"the ONNX backend needs the 'onnx' package ({exc})") from None
    return onnx, helper, TensorProto, numpy_helper


# --------------------------------------------------------------------------------------
# parameter names and configuration
# --------------------------------------------------------------------------------------

def _names(kind, target):
    """Parameter names of one network branch (``target`` None for UMX)."""
    suffix = "" if kind == "umx" else f"_{target}"
    names = {
        "input_mean": f"input_mean{suffix}",
        "input_scale": f"input_scale{suffix}",
        "output_scale": f"output_scale{suffix}",
        "output_mean": f"output_mean{suffix}",
        "lstm_w0": f"lstm{suffix}/lstm/weight_l0",
        "lstm_w": f"lstm{suffix}/lstm/weight",
        "lstm_b": f"lstm{suffix}/lstm/bias",
    }
    for fc in ("fc1", "fc2", "fc3"):
        names[f"{fc}/W"] = f"{fc}{suffix}/affine/W"
        for p in ("beta", "gamma", "mean", "var"):
            names[f"{fc}/{p}"] = f"{fc}{suffix}/bn/{p}"
    return names


def _check_kind(kind):
    if kind not in KINDS:
        raise UserError(f"unknown network kind {kind!r}; expected one of {KINDS}")


def _sources(kind, params, config=None):
    """Branch names: X-UMX ``config['sources']`` if given, else the official four plus
    any further ``fc1_<name>/affine/W`` branches in the parameters; UMX ``[None]``."""
    _check_kind(kind)
    if kind == "umx":
        return [None]
    if config is not None and config.get("sources"):
        sources = [str(s) for s in config["sources"]]
    else:
        found = [m.group(1) for m in (re.fullmatch(r"fc1_(\w+)/affine/W", k) for k in params)
                 if m]
        sources = list(TARGETS) + [s for s in found if s not in TARGETS]
    if len(sources) < 2:
        raise UserError(f"X-UMX needs at least two sources, got {sources}")
    return sources


def _get(params, name):
    if name not in params:
        sample = ", ".join(list(params)[:4])
        raise UserError(f"parameter {name!r} is missing (the given parameters start with: "
                        f"{sample}); X-UMX needs the scoped names such as "
                        f"'fc1_bass/affine/W', UMX one target's unscoped names such as "
                        f"'fc1/affine/W'")
    return np.asarray(params[name])


def resolve_config(kind, params, config=None):
    """Sizes of the network described by ``params``, in the config-dict format of
    :mod:`xumx.weights`.

    Every size is inferred from the parameter shapes; size keys given in ``config``
    (``hidden_size``, ``max_bin``, ``nb_output_bins``, ``n_fft``, ``nb_channels``,
    ``nb_layers``, ``nb_directions``, ``lstm_hidden_size``, ``bidirectional``) must
    agree with them, otherwise ``UserError``; other keys are ignored except ``kind``
    (must equal ``kind``), ``n_hop`` (passed through, default ``n_fft // 4``) and,
    for X-UMX, ``sources`` (branch names in mask order, default bass, drums,
    vocals, other).
    """
    sources = _sources(kind, params, config)
    if config is not None and config.get("kind") not in (None, kind):
        raise UserError(f"config is for kind {config['kind']!r}, not {kind!r}")
    n = _names(kind, sources[0])
    w1 = _get(params, n["fc1/W"])
    max_bin = int(_get(params, n["input_mean"]).shape[0])
    nb_output_bins = int(_get(params, n["output_scale"]).shape[0])
    w0 = _get(params, n["lstm_w0"])
    if w1.ndim != 2:
        raise UserError(f"{n['fc1/W']} has shape {w1.shape}; expected (in, hidden)")
    if w1.shape[0] % max_bin:
        raise UserError(f"{n['fc1/W']} has {w1.shape[0]} input rows, not a multiple of "
                        f"max_bin={max_bin}")
    if w0.ndim != 4 or w0.shape[1] != 4:
        raise UserError(f"{n['lstm_w0']} has shape {w0.shape}; expected (D, 4, H, I + H)")
    hidden = int(w1.shape[1])
    inferred = {
        "hidden_size": hidden,
        "max_bin": max_bin,
        "nb_output_bins": nb_output_bins,
        "n_fft": 2 * (nb_output_bins - 1),
        "nb_channels": int(w1.shape[0] // max_bin),
        "nb_layers": 1 + (int(params[n["lstm_w"]].shape[0]) if n["lstm_w"] in params else 0),
        "nb_directions": int(w0.shape[0]),
        "lstm_hidden_size": int(w0.shape[2]),
        "bidirectional": int(w0.shape[0]) == 2,
    }
    if inferred["nb_directions"] * inferred["lstm_hidden_size"] != hidden:
        raise UserError(f"LSTM output size {inferred['nb_directions']}x"
                        f"{inferred['lstm_hidden_size']} does not equal hidden_size {hidden}")
    for key in _CONFIG_KEYS:
        if config is not None and config.get(key) is not None:
            if type(inferred[key])(config[key]) != inferred[key]:
                raise UserError(f"config {key}={config[key]} disagrees with the parameters, "
                                f"which imply {key}={inferred[key]}")
    n_hop = config.get("n_hop") if config is not None else None
    inferred["n_hop"] = int(n_hop) if n_hop else inferred["n_fft"] // 4
    inferred["kind"] = kind
    if kind == "xumx":
        inferred["sources"] = list(sources)
    return inferred


# --------------------------------------------------------------------------------------
# weight conversion
# --------------------------------------------------------------------------------------

def nnabla_lstm_to_onnx(weight_l0, weight, bias, num_layers=None):
    """Convert nnabla ``F.lstm`` parameters to ONNX ``LSTM`` inputs, one tuple per layer.

    nnabla: ``weight_l0`` (D, 4, H, I + H), ``weight`` (L - 1, D, 4, H, D*H + H) or
    None, ``bias`` (L, D, 4, H) or None; the last axis of the weights is
    [input part | recurrent part], gates in nnabla order (i, f, c, o).
    ONNX: ``W`` (D, 4H, in), ``R`` (D, 4H, H), ``B`` (D, 8H) = [Wb | Rb], gates (i, o, f, c).
    nnabla has a single bias per gate; it goes to Wb and Rb is zero.
    Returns ``[(W, R, B), ...]`` as float32 arrays.
    """
    weight_l0 = np.asarray(weight_l0, dtype=np.float32)
    nb_dir, four, hidden, _ = weight_l0.shape
    if four != 4:
        raise UserError(f"LSTM weight_l0 has shape {weight_l0.shape}; expected (D, 4, H, I + H)")
    if num_layers is None:
        num_layers = 1 + (0 if weight is None else int(np.shape(weight)[0]))
    layers = []
    for layer in range(num_layers):
        if layer == 0:
            w = weight_l0
        else:
            if weight is None:
                raise UserError("LSTM has more than one layer but no 'weight' parameter")
            w = np.asarray(weight, dtype=np.float32)[layer - 1]
        in_size = w.shape[-1] - hidden
        w = w[:, list(_NNABLA_GATE_FOR_ONNX)]  # (D, 4, H, in + H), ONNX gate order
        W = np.ascontiguousarray(w[..., :in_size].reshape(nb_dir, 4 * hidden, in_size))
        R = np.ascontiguousarray(w[..., in_size:].reshape(nb_dir, 4 * hidden, hidden))
        B = np.zeros((nb_dir, 8 * hidden), dtype=np.float32)
        if bias is not None:
            b = np.asarray(bias, dtype=np.float32)[layer][:, list(_NNABLA_GATE_FOR_ONNX)]
            B[:, :4 * hidden] = b.reshape(nb_dir, 4 * hidden)
        layers.append((W, R, B))
    return layers


def _fold_affine_bn(params, names, fc):
    """Affine weight (in, out) with test-mode batch norm folded in: (W', b')."""
    w = np.asarray(_get(params, names[f"{fc}/W"]), dtype=np.float64)
    gamma = _get(params, names[f"{fc}/gamma"]).astype(np.float64).reshape(-1)
    beta = _get(params, names[f"{fc}/beta"]).astype(np.float64).reshape(-1)
    mean = _get(params, names[f"{fc}/mean"]).astype(np.float64).reshape(-1)
    var = _get(params, names[f"{fc}/var"]).astype(np.float64).reshape(-1)
    if w.ndim != 2 or not (gamma.size == beta.size == mean.size == var.size == w.shape[1]):
        raise UserError(f"{names[f'{fc}/W']} {w.shape} and its batch-norm parameters "
                        f"do not fit together")
    scale = gamma / np.sqrt(var + BN_EPS)
    return (w * scale[None, :]).astype(np.float32), (beta - mean * scale).astype(np.float32)


# --------------------------------------------------------------------------------------
# graph construction
# --------------------------------------------------------------------------------------

class _Graph:
    """Small helper collecting nodes and initializers with unique names."""

    def __init__(self):
        _, self.helper, self.TensorProto, self.numpy_helper = _onnx()
        self.nodes = []
        self.inits = []
        self._count = 0

    def name(self, base):
        self._count += 1
        return f"{base}_{self._count}"

    def const(self, array, base, dtype=np.float32):
        name = self.name(base)
        self.inits.append(self.numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def ints(self, values, base="shape"):
        return self.const(np.asarray(values, dtype=np.int64), base, dtype=np.int64)

    def op(self, op_type, inputs, base=None, n_out=1, **attrs):
        base = base or op_type.lower()
        outs = [self.name(base) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs,
                                                name=self.name(f"{base}_node"), **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, inputs, outputs, graph_name):
        helper = self.helper
        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs,
                                  initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="xumx.onnx_backend")
        model.ir_version = 8  # readable by onnxruntime >= 1.10
        return model


def _lstm_stack(g, x, layers, base):
    """ONNX LSTM layers on ``x`` (T, B, in) -> (T, B, D*H) like nnabla's F.lstm."""
    for index, (W, R, B) in enumerate(layers):
        nb_dir, four_h, _ = W.shape
        hidden = four_h // 4
        y = g.op("LSTM", [x, g.const(W, f"{base}_W{index}"), g.const(R, f"{base}_R{index}"),
                          g.const(B, f"{base}_B{index}")], base=f"{base}_l{index}",
                 hidden_size=hidden,
                 direction="bidirectional" if nb_dir == 2 else "forward")
        # Y is (T, D, B, H); nnabla's layout is (T, B, D*H) with the forward direction first
        y = g.op("Transpose", [y], perm=[0, 2, 1, 3])
        x = g.op("Reshape", [y, g.ints([0, 0, nb_dir * hidden])], base=f"{base}_out{index}")
    return x


def build_lstm_model(weight_l0, weight=None, bias=None):
    """ONNX model of an nnabla ``F.lstm`` stack alone: input ``x`` (T, B, I) ->
    output ``y`` (T, B, D*H), zero initial states (mainly for testing the mapping)."""
    layers = nnabla_lstm_to_onnx(weight_l0, weight, bias)
    g = _Graph()
    in_size = layers[0][0].shape[2]
    y = _lstm_stack(g, "x", layers, "lstm")
    helper, TP = g.helper, g.TensorProto
    g.nodes.append(helper.make_node("Identity", [y], ["y"], name="y_identity"))
    out_size = layers[-1][0].shape[0] * (layers[-1][0].shape[1] // 4)
    return g.model([helper.make_tensor_value_info("x", TP.FLOAT, ["frames", "batch", in_size])],
                   [helper.make_tensor_value_info("y", TP.FLOAT, ["frames", "batch", out_size])],
                   "nnabla_lstm")


def build_onnx_model(kind, params, config=None):
    """ONNX model of the X-UMX (``kind='xumx'``) or UMX (``'umx'``) network.

    Input ``mag`` (frames, batch, channels, bins_full) float32 mixture magnitude;
    output ``masks`` (frames, batch, K*channels, bins_full), K = the X-UMX sources
    (officially bass, drums, vocals, other; channels of one source adjacent) and K = 1
    for UMX.
    Frames and batch are dynamic.
    """
    cfg = resolve_config(kind, params, config)
    branches = _sources(kind, params, cfg)
    nb_k = len(branches)
    nch, max_bin, nbins = cfg["nb_channels"], cfg["max_bin"], cfg["nb_output_bins"]
    hidden = cfg["hidden_size"]
    g = _Graph()
    helper, TP = g.helper, g.TensorProto

    # crop to max_bin and flatten (channels, bins) like affine(base_axis=2)
    x = g.op("Slice", ["mag", g.ints([0]), g.ints([max_bin]), g.ints([3])], base="crop")
    x = g.op("Reshape", [x, g.ints([0, 0, nch * max_bin])], base="flat")

    # fc1 + bn + tanh per target, on its own normalized copy of the input
    fc1_out = []
    for target in branches:
        n = _names(kind, target)
        tag = target or "umx"
        mean = np.tile(_get(params, n["input_mean"]).astype(np.float32), nch)
        scale = np.tile(_get(params, n["input_scale"]).astype(np.float32), nch)
        w1, b1 = _fold_affine_bn(params, n, "fc1")
        if w1.shape[0] != nch * max_bin or w1.shape[1] != hidden:
            raise UserError(f"{n['fc1/W']} has shape {w1.shape}; expected "
                            f"({nch * max_bin}, {hidden})")
        h = g.op("Add", [x, g.const(mean, f"input_mean_{tag}")])
        h = g.op("Mul", [h, g.const(scale, f"input_scale_{tag}")])
        h = g.op("MatMul", [h, g.const(w1, f"fc1_W_{tag}")])
        h = g.op("Add", [h, g.const(b1, f"fc1_b_{tag}")])
        fc1_out.append(g.op("Tanh", [h], base=f"fc1_{tag}"))
    cross1 = fc1_out[0] if nb_k == 1 else _average(g, fc1_out, "cross1")

    # LSTM per target, all on the same (averaged) input
    lstm_out = []
    for target in branches:
        n = _names(kind, target)
        w0 = _get(params, n["lstm_w0"])
        w = _get(params, n["lstm_w"]) if cfg["nb_layers"] > 1 else None
        b = params.get(n["lstm_b"])
        if w0.shape[-1] != hidden + cfg["lstm_hidden_size"]:
            raise UserError(f"{n['lstm_w0']} has shape {w0.shape}; expected input size "
                            f"{hidden}")
        layers = nnabla_lstm_to_onnx(w0, w, b, cfg["nb_layers"])
        lstm_out.append(_lstm_stack(g, cross1, layers, f"lstm_{target or 'umx'}"))
    # mean over targets of concat(fc1_t, lstm_t) == concat(mean fc1_t, mean lstm_t)
    lstm_mean = lstm_out[0] if nb_k == 1 else _average(g, lstm_out, "lstm_mean")
    cross2 = g.op("Concat", [cross1, lstm_mean], base="cross2", axis=2)

    # fc2 + bn + relu for all targets in one MatMul (they share the input)
    folded = []
    for target in branches:
        n = _names(kind, target)
        folded.append(_fold_affine_bn(params, n, "fc2"))
        if folded[-1][0].shape != (2 * hidden, hidden):
            raise UserError(f"{n['fc2/W']} has shape {folded[-1][0].shape}; expected "
                            f"({2 * hidden}, {hidden})")
    w2 = np.concatenate([f[0] for f in folded], axis=1)
    b2 = np.concatenate([f[1] for f in folded])
    h2 = g.op("MatMul", [cross2, g.const(w2, "fc2_W")])
    h2 = g.op("Relu", [g.op("Add", [h2, g.const(b2, "fc2_b")])], base="fc2")

    # fc3 + bn per target, output scale/mean folded in, reshape to (channels, bins)
    outs = []
    for k, target in enumerate(branches):
        n = _names(kind, target)
        tag = target or "umx"
        w3, b3 = _fold_affine_bn(params, n, "fc3")
        if w3.shape != (hidden, nch * nbins):
            raise UserError(f"{n['fc3/W']} has shape {w3.shape}; expected "
                            f"({hidden}, {nch * nbins})")
        out_scale = np.tile(_get(params, n["output_scale"]).astype(np.float64), nch)
        out_mean = np.tile(_get(params, n["output_mean"]).astype(np.float64), nch)
        w3 = (w3.astype(np.float64) * out_scale[None, :]).astype(np.float32)
        b3 = (b3.astype(np.float64) * out_scale + out_mean).astype(np.float32)
        h = h2 if nb_k == 1 else g.op("Slice", [h2, g.ints([k * hidden]),
                                                 g.ints([(k + 1) * hidden]), g.ints([2])])
        h = g.op("MatMul", [h, g.const(w3, f"fc3_W_{tag}")])
        h = g.op("Add", [h, g.const(b3, f"fc3_b_{tag}")])
        outs.append(g.op("Reshape", [h, g.ints([0, 0, nch, nbins])], base=f"fc3_{tag}"))
    y = outs[0] if nb_k == 1 else g.op("Concat", outs, axis=2)
    g.nodes.append(helper.make_node("Relu", [y], ["masks"], name="masks_relu"))

    inputs = [helper.make_tensor_value_info("mag", TP.FLOAT, ["frames", "batch", nch, nbins])]
    outputs = [helper.make_tensor_value_info("masks", TP.FLOAT,
                                             ["frames", "batch", nb_k * nch, nbins])]
    model = g.model(inputs, outputs, f"{kind}_masks")
    for key in ("kind",) + _CONFIG_KEYS + ("sources",):
        if key in cfg:
            entry = model.metadata_props.add()
            value = cfg[key]
            entry.key = key
            entry.value = ",".join(value) if key == "sources" else str(value)
    return model


def _average(g, tensors, base):
    total = g.op("Sum", tensors)
    return g.op("Div", [total, g.const(np.float32(len(tensors)), f"{base}_count")], base=base)


# --------------------------------------------------------------------------------------
# runtime
# --------------------------------------------------------------------------------------

class OnnxRunner:
    """Callable: ``runner(mag) -> masks`` (see :func:`build_onnx_runner`).

    Attributes: ``kind``, ``config`` (resolved sizes), ``model`` (onnx.ModelProto, or the
    path of the cached export),
    ``session`` (onnxruntime.InferenceSession), ``nb_targets``, ``graph_builds`` (1: the one
    session serves every frame count and batch size, as the separator's graph counters
    expect of a runner).
    """

    graph_builds = 1

    def __init__(self, kind, model, config, session):
        self.kind = kind
        self.model = model
        self.config = config
        self.session = session
        self.nb_targets = len(config.get("sources", [None]))

    def __call__(self, mag):
        mag = np.asarray(mag)
        nch, nbins = self.config["nb_channels"], self.config["nb_output_bins"]
        if mag.ndim != 4 or mag.shape[2] != nch or mag.shape[3] != nbins:
            raise ValueError(f"expected a magnitude spectrogram (frames, batch, {nch}, {nbins}); "
                             f"got shape {mag.shape}")
        if mag.shape[0] == 0 or mag.shape[1] == 0:
            return np.zeros((mag.shape[0], mag.shape[1], self.nb_targets * nch, nbins),
                            dtype=np.float32)
        mag = np.ascontiguousarray(mag, dtype=np.float32)
        return self.session.run(["masks"], {"mag": mag})[0]

    def save(self, path):
        """Write the ONNX model to ``path``."""
        import onnx

        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        if isinstance(self.model, str):  # the path of a cached export
            shutil.copyfile(self.model, path)
        else:
            onnx.save_model(self.model, path)


def model_key(kind, params, config):
    """Cache key of the ONNX model :func:`build_onnx_model` makes: a hash of this module's
    source (so any change to the export makes new keys), the kind, the resolved config and
    every parameter (name, dtype, shape, bytes)."""
    h = hashlib.blake2b(digest_size=16)
    with open(__file__, "rb") as fh:
        h.update(fh.read())
    h.update(json.dumps([kind, config], sort_keys=True, default=str).encode())
    for name in sorted(params):
        array = np.ascontiguousarray(np.asarray(params[name]))
        h.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        h.update(memoryview(array).cast("B"))
    return h.hexdigest()


def _cached_model(kind, params, cfg, cache_dir, check):
    """Path of the cached ``.onnx`` model for these parameters, exported first if absent."""
    folder = os.fspath(cache_dir)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{kind}-{model_key(kind, params, cfg)}.onnx")
    if not os.path.exists(path):
        import onnx

        model = build_onnx_model(kind, params, cfg)
        if check:
            onnx.checker.check_model(model)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            onnx.save_model(model, tmp)
            os.replace(tmp, path)  # atomic: a reader never sees a partial file
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return path


def build_onnx_runner(kind, params, config=None, save_path=None, intra_op_threads=None,
                      check=True, cache_dir=None):
    """Build the ONNX graph of an X-UMX/UMX network from official parameters and
    return a runner bound to one onnxruntime session.

    kind: ``'xumx'`` (one dict with target-scoped names such as
    ``fc1_bass/affine/W``) or ``'umx'`` (one target's dict with unscoped names such
    as ``fc1/affine/W``). params: name -> array as read from the official file.
    config: optional sizes (``hidden_size``, ``max_bin``, ``n_fft``,
    ``nb_channels``, ``nb_layers``, ``nb_output_bins``); missing ones are inferred
    from the parameter shapes, given ones are checked against them.
    save_path: optionally write the ``.onnx`` model there.
    intra_op_threads: default all available cores.
    cache_dir: keep the exported model in this folder (file name: :func:`model_key`) and
    open the session from the file; the export (building the graph from the parameters,
    folding, checking) is then done once per set of weights, later runs only hash the
    parameters. ``None``: build the model in memory every time.

    ``runner(mag)`` takes (frames, batch, channels, bins_full) float32 and returns
    the ReLU outputs (masks): X-UMX (frames, batch, 4*channels, bins_full) ordered
    bass, drums, vocals, other (channels of a target adjacent); UMX
    (frames, batch, channels, bins_full). Frames and batch may vary between calls.
    """
    _check_kind(kind)
    cfg = resolve_config(kind, params, config)
    if cache_dir is not None:
        path = _cached_model(kind, params, cfg, cache_dir, check)
        try:
            session = make_session(path, threads=intra_op_threads)
        except Exception:  # a damaged cache file: export it again
            os.remove(path)
            path = _cached_model(kind, params, cfg, cache_dir, check)
            session = make_session(path, threads=intra_op_threads)
        runner = OnnxRunner(kind, path, cfg, session)
        if save_path:
            runner.save(save_path)
        return runner
    model = build_onnx_model(kind, params, cfg)
    if check:
        import onnx

        onnx.checker.check_model(model)
    runner = OnnxRunner(kind, model, cfg, make_session(model, threads=intra_op_threads))
    if save_path:
        runner.save(save_path)
    return runner
