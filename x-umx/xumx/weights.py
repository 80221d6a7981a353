"""Load official X-UMX / UMX parameter files and infer the network sizes from them.

Accepted inputs
---------------
* X-UMX: one nnabla ``.h5`` file (official ``x-umx.h5``) with the names ``fc1_bass/affine/W``,
  ``lstm_vocals/lstm/weight_l0``, ``input_mean_bass``, ``output_scale_other``, ...
* UMX: one network per target with **unscoped** names (``fc1/affine/W``, ``lstm/lstm/bias``,
  ``input_mean``, ...), given as a directory holding ``<target>.h5`` files (the extracted
  official ``umx.zip`` / ``umxhq.zip``; the files may also sit one folder deeper), the
  ``.zip`` itself, or a single ``<target>.h5`` file. Names carrying a ``<target>/`` prefix
  are accepted too (the prefix is stripped).

Values are returned as float32 (official files store float64; nnabla computes in float32).

Config dict
-----------
:func:`infer_config` (and every loader here) describes a network with a plain dict. These
keys are the contract shared by :mod:`xumx.model`, :mod:`xumx.separator` and
``xumx.onnx_backend.build_onnx_runner(kind, params, config)``:

``kind``            ``'xumx'`` or ``'umx'``
``hidden_size``     int, width of the fc1 / fc2 outputs (``fc1*/affine/W`` shape[1])
``max_bin``         int, number of low-frequency bins fed to the network (``input_mean*`` length)
``n_fft``           int, FFT / window size, ``2 * (nb_output_bins - 1)``
``n_hop``           int, STFT hop; not stored in weight files: ``n_fft // 4`` (1024) unless
                    the caller overrides it
``nb_channels``     int, audio channels the network sees (``fc1 W.shape[0] // max_bin``)
``nb_layers``       int, stacked LSTM layers (``lstm/bias`` shape[0])
``nb_output_bins``  int, bins of the masks, ``n_fft // 2 + 1`` (``output_scale*`` length)
``bidirectional``   bool, LSTM direction count is 2 (``lstm/bias`` shape[1])
``nb_directions``   int, 1 or 2
``lstm_hidden_size`` int, LSTM units per direction (``hidden_size // 2`` if bidirectional,
                    else ``hidden_size``)
``sources``         X-UMX only: branch names in mask order, ``['bass', 'drums', 'vocals',
                    'other']``
``target``          UMX only: the target this network separates

Network runner contract (nnabla: :func:`xumx.separator.build_nnabla_runner`; ONNX:
``xumx.onnx_backend.build_onnx_runner``, same signature ``(kind, params, config)``):
``runner(mag)`` takes the mixture magnitude ``mag`` float32 ``(frames, batch, nb_channels,
nb_output_bins)`` and returns float32 **masks** - the final ReLU outputs, *not* multiplied by
the magnitude: X-UMX ``(frames, batch, len(sources) * nb_channels, nb_output_bins)`` (source
major: bass L/R, drums L/R, vocals L/R, other L/R); UMX ``(frames, batch, nb_channels,
nb_output_bins)`` for its one target. For UMX, ``params`` is one target's dict (unscoped names)
and one runner is built per target. Batch norm runs in inference mode (running statistics).
``params`` are exactly the official parameters: ``input_mean*`` is the *negated* dataset mean
(added), ``input_scale*`` the *inverse* std (multiplied).
"""
import os
import re
import tempfile
import zipfile
from collections import OrderedDict

from common.errors import UserError
from common.runtime.param_model import check_parameter_shapes
from common.runtime.params_io import find_weight_files, read_param_file

from .model import SOURCES, CrossNet, OpenUnmix

DEFAULT_HOP_RATIO = 4


def _shape(params, name, ndim, what):
    if name not in params:
        raise UserError(f"not an {what} parameter file: parameter '{name}' is missing")
    shape = tuple(params[name].shape)
    if len(shape) != ndim:
        raise UserError(f"not an {what} parameter file: '{name}' has shape {shape}, "
                        f"expected {ndim} dimensions")
    return shape


def _sizes(params, fc1, lstm_bias, in_mean, out_scale, what):
    """Infer the size dict from one branch's key parameters."""
    w_in, hidden = _shape(params, fc1, 2, what)
    layers, directions, gates, lstm_hidden = _shape(params, lstm_bias, 4, what)
    (max_bin,) = _shape(params, in_mean, 1, what)
    (out_bins,) = _shape(params, out_scale, 1, what)
    problems = []
    if gates != 4:
        problems.append(f"'{lstm_bias}' {(layers, directions, gates, lstm_hidden)} is not an "
                        f"LSTM bias (L, D, 4, H)")
    if directions not in (1, 2):
        problems.append(f"'{lstm_bias}' has {directions} directions")
    elif lstm_hidden != (hidden // 2 if directions == 2 else hidden):
        problems.append(f"LSTM units per direction {lstm_hidden} do not fit hidden size "
                        f"{hidden} with {directions} direction(s)")
    if max_bin < 1 or w_in % max_bin:
        problems.append(f"'{fc1}' input width {w_in} is not a multiple of max_bin {max_bin}")
    if out_bins < 2 or max_bin > out_bins:
        problems.append(f"'{out_scale}' has {out_bins} bins, fewer than max_bin {max_bin}")
    if problems:
        raise UserError(f"not an {what} parameter file: " + "; ".join(problems))
    n_fft = 2 * (out_bins - 1)
    return {
        "hidden_size": int(hidden),
        "max_bin": int(max_bin),
        "n_fft": int(n_fft),
        "n_hop": int(n_fft // DEFAULT_HOP_RATIO),
        "nb_channels": int(w_in // max_bin),
        "nb_layers": int(layers),
        "nb_output_bins": int(out_bins),
        "bidirectional": directions == 2,
        "nb_directions": int(directions),
        "lstm_hidden_size": int(lstm_hidden),
    }


def _validate(model_cls, params, config, what, **kwargs):
    kwargs.setdefault("n_hop", config["n_hop"])
    model = model_cls.from_config(config, **kwargs)
    check_parameter_shapes(params, model.parameter_shapes(), what=what)
    return model


def infer_xumx_config(params, n_hop=None):
    """Config dict of an X-UMX parameter dict; checks every name and shape."""
    what = "X-UMX"
    found = [m.group(1) for m in (re.fullmatch(r"fc1_(\w+)/affine/W", k) for k in params) if m]
    if not found:
        raise UserError("not an X-UMX parameter file: no 'fc1_<source>/affine/W' parameters "
                        f"(expected sources {', '.join(SOURCES)}); first names: "
                        f"{', '.join(list(params)[:4])}")
    missing = [s for s in SOURCES if s not in found]
    if missing:
        raise UserError("not an X-UMX parameter file: missing the branches of "
                        + ", ".join(missing) + " (e.g. 'fc1_" + missing[0] + "/affine/W')")
    sources = list(SOURCES) + [s for s in found if s not in SOURCES]
    s0 = sources[0]
    config = _sizes(params, f"fc1_{s0}/affine/W", f"lstm_{s0}/lstm/bias", f"input_mean_{s0}",
                    f"output_scale_{s0}", what)
    if n_hop:
        config["n_hop"] = int(n_hop)
    config["kind"] = "xumx"
    config["sources"] = sources
    _validate(CrossNet, params, config, what)
    return config


def infer_umx_config(params, target=None, n_hop=None):
    """Config dict of one UMX target's (unscoped) parameter dict; checks names and shapes."""
    what = "UMX"
    if "fc1/affine/W" not in params and any(k.startswith("fc1_") for k in params):
        raise UserError("this is an X-UMX parameter file, not a UMX one (found "
                        "'fc1_<source>/...' names)")
    config = _sizes(params, "fc1/affine/W", "lstm/lstm/bias", "input_mean", "output_scale",
                    what)
    if n_hop:
        config["n_hop"] = int(n_hop)
    config["kind"] = "umx"
    config["target"] = target
    _validate(OpenUnmix, params, config, what)
    return config


def infer_config(params, **kwargs):
    """Config dict for X-UMX or UMX parameters (detected from the names)."""
    if any(k.startswith("fc1_") for k in params):
        return infer_xumx_config(params, **kwargs)
    return infer_umx_config(params, **kwargs)


def _strip_prefix(params, target):
    prefix = f"{target}/"
    if params and all(k.startswith(prefix) for k in params):
        return OrderedDict((k[len(prefix):], v) for k, v in params.items())
    return params


def load_xumx(path, n_hop=None):
    """``(params, config)`` of an official X-UMX ``.h5`` file."""
    params, _ = read_param_file(str(path))
    try:
        config = infer_xumx_config(params, n_hop=n_hop)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return params, config


def _find_target_files(directory, targets):
    """``OrderedDict[target -> path]`` of UMX ``<target>.h5`` files in ``directory``."""
    return find_weight_files(directory, SOURCES, targets, what="UMX target")


def load_umx(path, targets=None, n_hop=None):
    """Load UMX networks: ``(params, configs)``, both ``OrderedDict[target -> ...]``.

    ``path`` is a directory of ``<target>.h5`` files, a ``.zip`` of them, or one
    ``<target>.h5`` file. ``targets=None`` loads every official target found."""
    path = str(path)
    if os.path.isdir(path):
        files = _find_target_files(path, targets)
        return _load_umx_files(files, n_hop)
    if path.lower().endswith(".zip"):
        if not os.path.isfile(path):
            raise UserError(f"UMX weight archive not found: {path}")
        try:
            with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory() as tmp:
                members = [m for m in zf.namelist() if m.lower().endswith(".h5")]
                wanted = {}
                for m in members:
                    stem = os.path.splitext(os.path.basename(m))[0]
                    if (targets is None and stem in SOURCES) or (targets and stem in targets):
                        wanted.setdefault(stem, m)
                for stem, m in wanted.items():
                    dest = os.path.join(tmp, stem + ".h5")
                    with zf.open(m) as src, open(dest, "wb") as dst:
                        dst.write(src.read())
                files = _find_target_files(tmp, targets)
                return _load_umx_files(files, n_hop)
        except zipfile.BadZipFile:
            raise UserError(f"not a zip archive: {path}") from None
    if not os.path.isfile(path):
        raise UserError(f"UMX weights not found: {path}")
    target = os.path.splitext(os.path.basename(path))[0]
    if targets is not None and list(targets) != [target]:
        raise UserError(f"{path} holds only the UMX target '{target}'")
    return _load_umx_files(OrderedDict([(target, path)]), n_hop)


def _load_umx_files(files, n_hop):
    params, configs = OrderedDict(), OrderedDict()
    for target, file in files.items():
        p, _ = read_param_file(file)
        p = _strip_prefix(p, target)
        try:
            configs[target] = infer_umx_config(p, target=target, n_hop=n_hop)
        except UserError as exc:
            raise UserError(f"{file}: {exc}") from None
        params[target] = p
    return params, configs


def detect_kind(path):
    """``'xumx'`` or ``'umx'`` for a weight path (directory / zip -> UMX; ``.h5`` by names)."""
    path = str(path)
    if os.path.isdir(path) or path.lower().endswith(".zip"):
        return "umx"
    params, _ = read_param_file(path)
    return "xumx" if any(k.startswith("fc1_") for k in params) else "umx"


def load(path, targets=None, n_hop=None):
    """Load any official X-UMX / UMX weights. Returns ``(kind, params, config)``:
    X-UMX: flat params dict and one config; UMX: ``OrderedDict[target -> params]`` and
    ``OrderedDict[target -> config]``."""
    kind = detect_kind(path)
    if kind == "xumx":
        params, config = load_xumx(path, n_hop=n_hop)
        return kind, params, config
    params, configs = load_umx(path, targets=targets, n_hop=n_hop)
    return kind, params, configs
