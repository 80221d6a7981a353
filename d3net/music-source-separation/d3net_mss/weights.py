"""Load D3Net MSS parameter files (the official ``d3net-mss.zip`` layout).

The official pretrained weights are one nnabla ``.h5`` file per target (``vocals.h5``,
``drums.h5``, ``bass.h5``, ``other.h5``); the official separation loads a file at the global
scope and builds the network inside the parameter scope ``<target>``, so every stored name
carries the ``<target>/`` prefix (``vocals/in_offset``, ``vocals/dense_band/0/...``).

Accepted here: a directory holding ``<target>.h5`` files (the extracted zip; the files may
also sit one folder deeper), the ``.zip`` itself, or a single ``.h5`` file. The target of a
file is the common first component of its parameter names (``vocals/...``) or, for
unprefixed files, the file name stem. The network configuration is ``configs/<target>.yaml``
(:func:`d3net_mss.model.load_config`) unless a config is passed; the file's parameter names
and shapes must be exactly those the config builds, otherwise a :class:`UserError` lists the
missing, unexpected and mis-shaped parameters.

Returned parameters are unprefixed ``OrderedDict[name -> float32 array]``; configs are the
flat dicts of :mod:`d3net_mss.model` (official key names plus ``target``).

Published model files (:func:`load_model_files`): the official ``d3net-openvino.zip``, read by
the official ``separate_with_openvino.py`` as ``<model dir>/<target>.onnx``, holds one ONNX
file per target (vocals, drums, bass, other): the same network as the ``.h5`` weights
(``D3NetMSS`` in test mode, magnitude in, target magnitude out), exported with fixed shapes,
``(2, test_patch_len, 2, 2049)`` (a patch and its channel-swapped copy). Accepted: that folder
(extracted; the files may sit one folder deeper), the ``.zip``, or one ``<target>.onnx``; they
run on onnxruntime or OpenVINO through the separator's own patch, Wiener-filter and chunking
pipeline, with the official configs (or a ``<target>.yaml`` beside the file).

Network runner contract (nnabla: :func:`d3net_mss.separator.build_nnabla_runner`; ONNX:
``d3net_mss.onnx_backend.build_onnx_runner(params, config, ...)``; model files:
:class:`common.runtime.backends.ModelFile`): ``runner(x)`` takes a float32 magnitude batch
``(batch, frames, channels, bins)`` and returns the network output of the same shape
(test-mode batch norm), i.e. exactly :class:`d3net_mss.model.D3NetMSS`.
"""
import contextlib
import os
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

from common.errors import UserError
from common.runtime.param_model import check_parameter_shapes
from common.runtime.params_io import find_weight_files, read_param_file

from .model import SOURCES, D3NetMSS, load_config, normalize_config


def detect_target(params, path=None):
    """Target name of a parameter dict: the common first name component (official files),
    else the stem of ``path``."""
    heads = {k.split("/", 1)[0] for k in params}
    if len(heads) == 1 and all("/" in k for k in params):
        head = next(iter(heads))
        if head not in ("features_init", "dense_band", "dense_full", "final_dense", "out_gate",
                        "match_fm_conv"):
            return head
    if path is not None:
        return Path(path).stem
    raise UserError("cannot tell which target these D3Net parameters belong to")


def _strip(params, target):
    prefix = f"{target}/"
    if all(k.startswith(prefix) for k in params):
        return OrderedDict((k[len(prefix):], v) for k, v in params.items())
    return params


def validate(params, config, source="parameters", config_name=None):
    """Check ``params`` (unprefixed) against the network ``config`` builds; raises
    :class:`UserError` naming ``source`` and listing every mismatch."""
    model = D3NetMSS(config)
    name = config_name or config.get("target")
    check_parameter_shapes(params, model.parameter_shapes(), what=f"D3Net '{name}' config",
                           source=source)


def load_target(path, target=None, config=None):
    """``(params, config)`` of one ``.h5`` file. ``target`` defaults to the file's name
    prefix (or stem); ``config`` (dict or YAML path) defaults to ``configs/<target>.yaml``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"D3Net weight file not found: {path}")
    params, _ = read_param_file(path)
    found = detect_target(params, path)
    target = target or found
    params = _strip(params, target)
    if config is None:
        try:
            config = load_config(target)
        except UserError as exc:
            raise UserError(f"{path}: no network config for target '{target}' ({exc})") from None
    elif isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    else:
        config = normalize_config(config, target=target)
    config = dict(config)
    config_name = config.get("target") or target
    config["target"] = target
    validate(params, config, source=path, config_name=config_name)
    return params, config


def _find_files(directory, targets):
    """``OrderedDict[target -> path]`` of D3Net ``<target>.h5`` files in ``directory``."""
    return find_weight_files(directory, SOURCES, targets, what="D3Net weight")


def _load_files(files, configs):
    params, cfgs = OrderedDict(), OrderedDict()
    for target, file in files.items():
        params[target], cfgs[target] = load_target(file, target=target,
                                                   config=(configs or {}).get(target))
    return params, cfgs


def load(path, targets=None, configs=None):
    """Load D3Net MSS weights: ``(params, configs)``, both ``OrderedDict[target -> ...]``.

    ``path``: directory of ``<target>.h5``, ``.zip`` of them, or one ``.h5``. ``targets``
    (default: every official target present, in the official order vocals, drums, bass,
    other) selects and orders them; ``configs`` optionally maps target -> config dict/path.
    """
    path = os.fspath(path)
    if targets is not None:
        targets = list(targets)
        if not targets:
            raise UserError("no targets selected")
    if os.path.isdir(path):
        return _load_files(_find_files(path, targets), configs)
    if path.lower().endswith(".zip"):
        if not os.path.isfile(path):
            raise UserError(f"D3Net weight archive not found: {path}")
        try:
            with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory() as tmp:
                wanted = {}
                for m in zf.namelist():
                    stem, ext = os.path.splitext(os.path.basename(m))
                    if ext.lower() != ".h5":
                        continue
                    if (targets is None and stem in SOURCES) or (targets and stem in targets):
                        wanted.setdefault(stem, m)
                for stem, m in wanted.items():
                    with zf.open(m) as src, open(os.path.join(tmp, stem + ".h5"), "wb") as dst:
                        dst.write(src.read())
                return _load_files(_find_files(tmp, targets), configs)
        except zipfile.BadZipFile:
            raise UserError(f"not a zip archive: {path}") from None
    if not os.path.isfile(path):
        raise UserError(f"D3Net weights not found: {path}")
    p, c = load_target(path, config=(configs or {}).get(Path(path).stem) if configs else None)
    target = c["target"]
    if targets is not None and targets != [target]:
        raise UserError(f"{path} holds only the D3Net target '{target}'")
    return OrderedDict([(target, p)]), OrderedDict([(target, c)])


# --------------------------------------------------------------------------- model files

MODEL_FILE_EXT = ".onnx"


def _files_in(directory, ext):
    """``{stem: path}`` of the official targets' ``<target><ext>`` in ``directory`` or one
    folder below (the first found wins)."""
    folders = [directory] + sorted(os.path.join(directory, d) for d in os.listdir(directory)
                                   if os.path.isdir(os.path.join(directory, d)))
    found = {}
    for folder in folders:
        for target in SOURCES:
            path = os.path.join(folder, target + ext)
            if target not in found and os.path.isfile(path):
                found[target] = path
    return found


def holds_model_files(path):
    """Whether ``path`` is published model files (``.onnx``: one file, a folder or a ``.zip``
    of them) rather than ``.h5`` weights (a folder or zip holding both counts as weights)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return bool(_files_in(path, MODEL_FILE_EXT)) and not _files_in(path, ".h5")
    if path.lower().endswith(".zip") and os.path.isfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                exts = {os.path.splitext(m)[1].lower() for m in zf.namelist()}
        except zipfile.BadZipFile:
            return False
        return MODEL_FILE_EXT in exts and ".h5" not in exts
    return path.lower().endswith(MODEL_FILE_EXT)


def _model_config(target, file, configs):
    config = (configs or {}).get(target)
    beside = os.path.splitext(file)[0] + ".yaml"
    if config is None and os.path.isfile(beside):
        config = beside
    if config is None:
        return load_config(target)
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    config = normalize_config(config, target=target)
    config["target"] = target
    return config


@contextlib.contextmanager
def load_model_files(path, targets=None, configs=None):
    """Context giving ``(files, configs)``, both ``OrderedDict[target -> ...]`` (official
    order vocals, drums, bass, other; ``targets`` selects and orders): the ``<target>.onnx``
    paths of a folder, a ``.zip`` (extracted into a temporary folder that exists until the
    context ends: open the models inside it) or one file, and each target's network config
    (``configs[target]``, else ``<target>.yaml`` beside the file, else the official one)."""
    path = os.fspath(path)
    with contextlib.ExitStack() as stack:
        if os.path.isfile(path) and path.lower().endswith(".zip"):
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="d3net-models-"))
            try:
                with zipfile.ZipFile(path) as zf:
                    for m in zf.namelist():
                        name = os.path.basename(m)
                        stem, ext = os.path.splitext(name)
                        if stem in SOURCES and ext.lower() in (MODEL_FILE_EXT, ".yaml"):
                            with zf.open(m) as src, open(os.path.join(folder, name),
                                                         "wb") as dst:
                                dst.write(src.read())
            except zipfile.BadZipFile:
                raise UserError(f"not a zip archive: {path}") from None
            found = _files_in(folder, MODEL_FILE_EXT)
        elif os.path.isdir(path):
            found = _files_in(path, MODEL_FILE_EXT)
        elif os.path.isfile(path):
            stem = Path(path).stem
            if stem not in SOURCES:
                raise UserError(f"{path}: a D3Net model file is named after its target "
                                f"({', '.join(t + MODEL_FILE_EXT for t in SOURCES)})")
            found = {stem: path}
        else:
            raise UserError(f"D3Net model files not found: {path}")
        wanted = list(targets) if targets is not None else [t for t in SOURCES if t in found]
        missing = [t for t in wanted if t not in found]
        if missing or not wanted:
            have = ", ".join(t + MODEL_FILE_EXT for t in SOURCES if t in found) or "none"
            need = missing or list(SOURCES)
            raise UserError(f"{path}: missing D3Net model file(s) "
                            f"{', '.join(t + MODEL_FILE_EXT for t in need)} (found: {have})")
        files = OrderedDict((t, found[t]) for t in wanted)
        yield files, OrderedDict((t, _model_config(t, f, configs)) for t, f in files.items())
