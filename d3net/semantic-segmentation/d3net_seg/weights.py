"""Load and validate D3Net segmentation parameter files.

Accepted files are nnabla ``.h5`` parameter files with the official names (the published
``D3Net-S.h5`` / ``D3Net-L.h5``, the parity fixtures, files written by
:meth:`d3net_seg.model.D3NetSegmentation.save_parameters` or by the training script).
Values are returned as float32 in creation order.

Which network a file holds is decided by its shapes: :func:`detect_config` compares them
with the bundled configs (``configs/D3Net_S.yaml``, ``configs/D3Net_L.yaml``); other sizes
need an explicit config.

Public API
----------
``check_parameters(params, expected, what) -> None`` (UserError listing the differences)
``load_weights(path, config=None) -> (params, config)``
``detect_config(params) -> config dict or None``
``resolve_model(model) -> (path, config name or None)``  (``d3net-s``, ``d3net-l`` or a path)
``backbone_subset(params, expected) -> (subset, missing, ignored)``  (ImageNet backbone files)
``load_backbone(model, params) -> (loaded, missing, ignored)``
"""
import os
from collections import OrderedDict

from common.errors import UserError
from common.runtime.param_model import check_parameter_shapes, parameter_differences
from common.runtime.params_io import read_param_file

from .model import CONFIG_NAMES, load_config, parameter_shapes

PRETRAINED = {"d3net-s": "D3Net_S", "d3net-l": "D3Net_L"}
_SHOW = 5  # names listed per kind of problem


def _listing(names):
    names = list(names)
    shown = ", ".join(names[:_SHOW])
    more = f" (+{len(names) - _SHOW} more)" if len(names) > _SHOW else ""
    return shown + more


def check_parameters(params, expected, what="D3Net segmentation model", source=None):
    """Raise a one-line :class:`UserError` unless ``params`` (name -> array) has exactly the
    names and shapes of ``expected`` (name -> shape)."""
    check_parameter_shapes(params, expected, what=what, source=source)


def detect_config(params):
    """The bundled config (dict from :func:`load_config`) whose parameter names and shapes
    equal those of ``params``, or ``None``."""
    for name in CONFIG_NAMES:
        config = load_config(name)
        missing, unexpected, mismatched = parameter_differences(params,
                                                                parameter_shapes(config))
        if not (missing or unexpected or mismatched):
            return config
    return None


def load_weights(path, config=None):
    """Read ``path`` and check it against ``config`` (path, bundled name or dict); without a
    config, detect D3Net-S / D3Net-L from the shapes. Returns ``(params, config)``."""
    path = os.fspath(path)
    params, _ = read_param_file(path)
    if config is None:
        config = detect_config(params)
        if config is None:
            if not any(k.startswith(("backbone/", "decode_head/")) for k in params):
                raise UserError(f"{path} is not a D3Net segmentation parameter file (no "
                                f"'backbone/...' or 'decode_head/...' parameters; first names: "
                                f"{_listing(params)})")
            raise UserError(f"{path} matches neither bundled config ({', '.join(CONFIG_NAMES)}) "
                            f"by its parameter shapes; give the network's config "
                            f"(--network-config PATH.yaml)")
        return params, config
    config = load_config(config)
    check_parameters(params, parameter_shapes(config),
                     what=f"{config.get('name', 'configured')} network", source=path)
    return params, config


def resolve_model(model):
    """``--model`` value -> ``(weights path, bundled config name or None)``. ``d3net-s`` /
    ``d3net-l`` are the published Cityscapes weights (downloaded once into the cache);
    anything else must be an existing ``.h5`` file."""
    key = str(model).lower()
    if key in PRETRAINED and not os.path.exists(model):
        from common.pretrained import get_weights

        path = get_weights(key)
        return os.fspath(path), PRETRAINED[key]
    if not os.path.exists(model):
        raise UserError(f"--model {model}: no such file, and not one of "
                        f"{', '.join(PRETRAINED)}")
    if not os.path.isfile(model):
        raise UserError(f"--model {model}: not a file (expected an nnabla .h5 parameter file)")
    return os.fspath(model), None


def backbone_subset(params, expected):
    """Select an ImageNet backbone file's parameters for the segmentation model.

    Names may be relative to the ``backbone`` scope (as published; the official trainer loads
    the file inside ``nn.parameter_scope('backbone')``) or already carry the ``backbone/``
    prefix. Entries the segmentation backbone does not have (e.g. an ImageNet classifier) are
    ignored, as they are by the official trainer; a shape mismatch or a file sharing no name
    with the backbone is an error. Returns ``(subset, missing, ignored)``: ``OrderedDict`` of
    prefixed name -> array, the backbone names the file lacks (they keep their values), and
    the file's names that were ignored."""
    backbone = OrderedDict((k, v) for k, v in expected.items() if k.startswith("backbone/"))
    subset, ignored = OrderedDict(), []
    for name, value in params.items():
        full = name if name.startswith("backbone/") else f"backbone/{name}"
        if full in backbone:
            subset[full] = value
        else:
            ignored.append(name)
    mismatched = [f"{k} {tuple(v.shape)} (expected {tuple(backbone[k])})"
                  for k, v in subset.items() if tuple(v.shape) != tuple(backbone[k])]
    if mismatched:
        raise UserError(f"the backbone parameters do not fit this D3Net configuration: "
                        f"{len(mismatched)} with wrong shape: {_listing(mismatched)}")
    if not subset:
        raise UserError("the backbone parameter file shares no parameter name with the D3Net "
                        f"backbone (first names: {_listing(params)})")
    missing = [k for k in backbone if k not in subset]
    return subset, missing, ignored


def load_backbone(model, params):
    """Initialise ``model``'s backbone (a :class:`d3net_seg.model.D3NetSegmentation`) from an
    ImageNet-pretrained backbone file's parameters (see :func:`backbone_subset`): backbone
    parameters the file does not hold keep their values. Returns ``(loaded, missing,
    ignored)`` name lists."""
    subset, missing, ignored = backbone_subset(params, model.parameter_shapes())
    model.assign_parameters(subset)
    return list(subset), missing, ignored
