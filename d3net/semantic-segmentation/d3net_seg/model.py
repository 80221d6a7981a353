"""D3Net semantic segmentation network (D3Net-S / D3Net-L, arXiv 2011.11844) on nnabla.

Architecture (as in the official sony/ai-research-code implementation):

* **Backbone** (scope ``backbone``): two 3x3 stride-2 convolutions (``conv1``, BN ``bn1`` +
  ReLU in between, ``conv2``; no biases) bring the image to 1/4 resolution. Then one *D3
  block* per stage (``dense1`` .. ``dense4``): ``n_blocks`` multidilated D2 blocks, each
  concatenated to the running features (DenseNet style; see
  :func:`d3net_blocks.d3_block_dense`). After every stage a 1x1 convolution with bias + BN +
  ReLU taps a feature map for the head (``intermediate_out{i}/0`` and ``/1``; the last stage's
  is ``final_out{n}``), and all stages but the last end with a *transition* (``transition{i}``:
  BN, ReLU, bias-free 1x1 conv to ``channels // trans_comp_factor``, 2x2 average pooling).
  The four taps have strides 4, 8, 16 and 32.
* **FCN head** (scope ``decode_head``): the taps are resized bilinearly to the stride-4 tap's
  size (``align_corners=False``, half-pixel centres) and concatenated, then a bias-free 1x1
  conv (``convs/0/conv``) + BN (``convs/0/bn``) + ReLU, and a 1x1 conv with bias
  (``conv_seg``) to ``num_classes`` logits, which are resized bilinearly to the input size.

Parameter names and shapes are the official ones (``backbone/conv1/conv/W``,
``backbone/dense1/d2_block/block0/d2block/initial_layer/init_layer/bottle_neck/conv1/conv/W``,
``decode_head/convs/0/conv/conv/W``, ``decode_head/conv_seg/conv/b``, ...), so the published
``D3Net-S.h5`` / ``D3Net-L.h5`` load unchanged, and the ImageNet backbone files load into
the ``backbone`` scope (:func:`d3net_seg.weights.load_backbone`).

The configuration is the YAML in ``configs/`` (sections ``model``, ``preprocess``,
``palette``, ``train``; :func:`load_config`). The network reads only the ``model`` section
(official key names: ``num_init_features``, ``num_layers``, ``n_blocks``, ``dens_k``,
``block_comp``, ``dense_n_out_layer_block``, ``intermediate_out_ch``, ``trans_comp_factor``,
``channels``, ``num_classes``).

Initialisation for training follows the official code: nnabla's default initialisers in the
backbone, N(0, 0.01) weights in the head, zero biases.

Public API
----------
``load_config(path_or_name) -> dict``; ``config_path(name) -> Path``; ``CONFIG_NAMES``
``D3NetSegmentation(config, param_scope=None)`` (``__call__(img, test=True, ...)`` -> logits)
``d3net_segmentation(img, config, test=False, recompute=False, comm=None, with_softmax=None)``
``min_input_size(config) -> int``; ``feature_sizes(config, height, width)``
"""
import copy
import numbers
from collections import OrderedDict
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.runtime.param_model import OwnParameters

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIG_NAMES = ("D3Net_S", "D3Net_L")
# The network config a training run writes beside its weights (eval.py / infer.py read it).
RUN_CONFIG = "network_config.yaml"
# Spellings accepted for the bundled configs (registry names, official file names).
_CONFIG_ALIASES = {"d3net-s": "D3Net_S", "d3net_s": "D3Net_S", "d3net-l": "D3Net_L",
                   "d3net_l": "D3Net_L"}

_LIST_KEYS = ("num_layers", "n_blocks", "dens_k", "block_comp", "dense_n_out_layer_block",
              "intermediate_out_ch")
_MODEL_KEYS = {"num_classes", "num_init_features", "trans_comp_factor", "channels",
               "dilation", *_LIST_KEYS}
_SECTIONS = {
    "name": None,
    "model": _MODEL_KEYS,
    "preprocess": {"to_rgb", "mean", "std"},
    "palette": None,
    "train": {"batch_size", "image_height", "image_width", "max_iter", "save_interval", "lr",
              "momentum", "weight_decay", "power", "min_lr"},
}

BN_MEAN_VAR = ("/bn/mean", "/bn/var")


# ---------------------------------------------------------------------------- configuration
def config_path(name):
    """Path of a bundled config: ``D3Net_S`` / ``D3Net_L`` (also ``d3net-s``, ``D3Net_S.yaml``)."""
    stem = str(name)
    if stem.endswith(".yaml"):
        stem = stem[:-5]
    stem = _CONFIG_ALIASES.get(stem.lower(), stem)
    if stem not in CONFIG_NAMES:
        raise UserError(f"unknown config {name!r}; bundled configs: {', '.join(CONFIG_NAMES)}")
    return CONFIG_DIR / f"{stem}.yaml"


def load_config(source):
    """Read and validate a segmentation config.

    ``source`` is a YAML path, a bundled config name (``D3Net_S``, ``D3Net_L``, ``d3net-s``,
    ``d3net-l``) or an already loaded dict (validated and deep-copied). Both layouts are read:
    ours (sections below) and the official flat one (every key at the top level, as in the
    official ``configs/D3Net_*.yaml``). Returns a dict with
    the sections ``model`` (required), ``preprocess``, ``palette`` and ``train`` (each filled
    with the official defaults of D3Net where missing: mean/std/to_rgb, Cityscapes palette)
    and ``name``. Unknown keys raise :class:`UserError`.
    """
    from common.config import load_config as read_yaml

    if isinstance(source, dict):
        data, where = copy.deepcopy(source), "config"
    else:
        path = Path(source)
        if not path.suffix and not path.exists():
            path = config_path(source)
        data, where = read_yaml(path), f"config file {path}"
        data.setdefault("name", path.stem)
    if "model" not in data and _MODEL_KEYS & set(data):
        data = _sections_of_flat(data, where)
    for key in data:
        if key not in _SECTIONS:
            raise UserError(f"{where}: unknown key {key!r} (expected {', '.join(_SECTIONS)})")
    if "model" not in data or not isinstance(data["model"], dict):
        raise UserError(f"{where}: needs a 'model' section")
    for section, keys in _SECTIONS.items():
        if keys is None or section not in data:
            continue
        if not isinstance(data[section], dict):
            raise UserError(f"{where}: '{section}' must be a mapping")
        unknown = sorted(set(data[section]) - keys)
        if unknown:
            raise UserError(f"{where}: unknown key(s) in '{section}': {', '.join(unknown)}")
    data["model"] = check_model_config(data["model"], where)
    pre = data.setdefault("preprocess", {})
    pre.setdefault("to_rgb", True)
    pre.setdefault("mean", [123.675, 116.28, 103.53])
    pre.setdefault("std", [58.395, 57.12, 57.375])
    for key in ("mean", "std"):
        vals = pre[key]
        if (not isinstance(vals, (list, tuple)) or len(vals) != 3
                or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in vals)):
            raise UserError(f"{where}: preprocess.{key} must be a list of 3 numbers")
    if any(v <= 0 for v in pre["std"]):
        raise UserError(f"{where}: preprocess.std must be positive")
    if not isinstance(pre["to_rgb"], bool):
        raise UserError(f"{where}: preprocess.to_rgb must be true or false")
    if data.get("palette") is None:
        from common.data.cityscapes import PALETTE

        data["palette"] = PALETTE.tolist()
    palette = np.asarray(data["palette"])
    ncls = data["model"]["num_classes"]
    if palette.shape != (ncls, 3) or not np.issubdtype(palette.dtype, np.integer) \
            or palette.min() < 0 or palette.max() > 255:
        raise UserError(f"{where}: palette must hold {ncls} RGB triples of integers 0..255, "
                        f"got shape {palette.shape}")
    data["palette"] = palette.astype(int).tolist()
    data.setdefault("train", {})
    data.setdefault("name", "config")
    return data


def _sections_of_flat(data, where):
    """The sectioned form of an official flat config (every key at the top level, as in the
    official ``configs/D3Net_S.yaml`` / ``D3Net_L.yaml``)."""
    sections = {"name": data.get("name", "config"), "model": {}, "preprocess": {},
                "train": {}}
    for key, value in data.items():
        if key == "name":
            continue
        if key == "palette":
            sections["palette"] = value
            continue
        section = next((s for s in ("model", "preprocess", "train") if key in _SECTIONS[s]),
                       None)
        if section is None:
            raise UserError(f"{where}: unknown key {key!r} in an official (flat) D3Net config")
        sections[section][key] = value
    return sections


def check_model_config(model, where="config"):
    """Validate the ``model`` section; returns a normalised copy (lists, ints)."""
    missing = sorted((_MODEL_KEYS - {"dilation"}) - set(model))
    if missing:
        raise UserError(f"{where}: model section misses {', '.join(missing)}")
    unknown = sorted(set(model) - _MODEL_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key(s) in 'model': {', '.join(unknown)}")
    out = dict(model)

    def positive_int(key, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise UserError(f"{where}: model.{key} must be a positive integer, got {value!r}")
        return int(value)

    for key in ("num_classes", "num_init_features", "trans_comp_factor", "channels"):
        out[key] = positive_int(key, model[key])
    lengths = set()
    for key in _LIST_KEYS:
        vals = model[key]
        if not isinstance(vals, (list, tuple)) or not vals:
            raise UserError(f"{where}: model.{key} must be a non-empty list (one value per "
                            f"stage)")
        lengths.add(len(vals))
        if key == "block_comp":
            if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v <= 1
                       for v in vals):
                raise UserError(f"{where}: model.block_comp values must lie in (0, 1]")
            out[key] = [float(v) for v in vals]
        else:
            out[key] = [positive_int(f"{key}[{i}]", v) for i, v in enumerate(vals)]
    if len(lengths) != 1:
        raise UserError(f"{where}: the per-stage lists of the model section have different "
                        f"lengths")
    for i, (k, m, keep) in enumerate(zip(out["dens_k"], out["num_layers"],
                                         out["dense_n_out_layer_block"])):
        if keep > m:
            raise UserError(f"{where}: stage {i + 1}: dense_n_out_layer_block ({keep}) exceeds "
                            f"num_layers ({m})")
        if int(k * keep * out["block_comp"][i]) < 1:
            raise UserError(f"{where}: stage {i + 1}: D2 block output "
                            f"int(dens_k * dense_n_out_layer_block * block_comp) is 0")
    return out


def _model_section(config):
    """The ``model`` section of a full config, or the dict itself if it is one."""
    if isinstance(config, (str, Path)):
        return load_config(config)["model"]
    if "model" in config:
        return check_model_config(config["model"])
    return check_model_config(config)


def min_input_size(config):
    """Smallest image side the network accepts: the stride-32 tap needs at least one pixel,
    i.e. the stride-4 map needs ``2 ** transitions`` pixels (29 for the 4-stage networks)."""
    hp = _model_section(config)
    need = 2 ** (len(hp["n_blocks"]) - 1)  # pixels at stride 4
    return 4 * (need - 1) + 1  # ceil(ceil(s / 2) / 2) >= need


def feature_sizes(config, height, width):
    """(h, w) of every stage's tap for an input of ``height`` x ``width``."""
    hp = _model_section(config)

    def stem(n):  # two 3x3 stride-2 convolutions with padding 1: ceil(ceil(n / 2) / 2)
        half = -(-int(n) // 2)
        return -(-half // 2)

    h, w = stem(height), stem(width)
    sizes = []
    for _ in hp["n_blocks"]:
        sizes.append((h, w))
        h, w = h // 2, w // 2
    return sizes


# ---------------------------------------------------------------------------- network
class D3NetSegmentation(OwnParameters):
    """D3Net backbone + FCN head with its own parameter dictionary.

    ``config``: a full config (dict from :func:`load_config`, a YAML path or a bundled name)
    or just its ``model`` section. The parameters live in :attr:`params` (an ordered dict used
    as nnabla parameter scope root), so several models coexist; pass
    ``param_scope=nn.parameter.get_current_parameter_scope()`` to use the caller's scope
    instead (e.g. for a trainer that works with ``nn.get_parameters()``).
    """

    model_description = "D3Net segmentation model"

    def __init__(self, config, param_scope=None):
        self.hparams = _model_section(config)
        self.num_classes = self.hparams["num_classes"]
        self.params = OrderedDict() if param_scope is None else param_scope

    # ------------------------------------------------------------------ parameters
    def parameter_shapes(self):
        """``OrderedDict[name -> shape]`` of every parameter in official creation order,
        computed from the config alone (no graph is built)."""
        return parameter_shapes(self.hparams)

    def create_parameters(self):
        """Create all parameters (official initialisers) by building the graph once on the
        smallest valid input, without running it; existing parameters are kept."""
        import nnabla as nn

        size = min_input_size(self.hparams)
        with nn.auto_forward(False):
            self(nn.Variable((1, 3, size, size)), test=True)
        return self.get_parameters()

    # ------------------------------------------------------------------ graph
    def backbone(self, img, test=True, comm=None, recompute=False):
        """Backbone taps (list of one variable per stage, strides 4, 8, 16, 32), built in the
        current scope (call inside :meth:`parameter_scope` + ``backbone``)."""
        import nnabla as nn
        import nnabla.functions as F

        from d3net_blocks import batch_norm, conv2d, d3_block_dense

        hp = self.hparams
        opts = dict(test=test, comm=comm, recompute=recompute)
        x = conv2d(img, hp["num_init_features"], "conv1", kernel=3, stride=2, pad=1, bias=False,
                   recompute=recompute)
        x = F.relu(batch_norm(x, "bn1", test=test, comm=comm), inplace=True)
        x = conv2d(x, hp["num_init_features"], "conv2", kernel=3, stride=2, pad=1, bias=False,
                   recompute=recompute)
        n_stages = len(hp["n_blocks"])
        taps = []
        for i in range(n_stages):
            with nn.parameter_scope(f"dense{i + 1}"):
                x = d3_block_dense(x, hp["dens_k"][i], hp["num_layers"][i], hp["n_blocks"][i],
                                   hp["dense_n_out_layer_block"][i], hp["block_comp"][i], **opts)
            last = i == n_stages - 1
            tap = f"final_out{i + 1}" if last else f"intermediate_out{i + 1}"
            t = conv2d(x, hp["intermediate_out_ch"][i], f"{tap}/0", kernel=1, bias=True,
                       recompute=recompute)
            taps.append(F.relu(batch_norm(t, f"{tap}/1", test=test, comm=comm), inplace=True))
            if not last:
                with nn.parameter_scope(f"transition{i + 1}"):
                    x = F.relu(batch_norm(x, "bn", test=test, comm=comm), inplace=True)
                    x = conv2d(x, x.shape[1] // hp["trans_comp_factor"], "conv", kernel=1,
                               bias=False, recompute=recompute)
                    x = F.average_pooling(x, kernel=(2, 2))
        return taps

    def decode_head(self, taps, output_size, test=True, comm=None, recompute=False):
        """FCN head: logits at ``output_size`` (h, w), built in the current scope."""
        import nnabla.functions as F

        from d3net_blocks import batch_norm, conv2d

        hp = self.hparams
        size = tuple(taps[0].shape[2:])
        ups = [t if tuple(t.shape[2:]) == size else _resize(t, size) for t in taps]
        x = F.concatenate(*ups, axis=1)
        x = conv2d(x, hp["channels"], "convs/0/conv", kernel=1, bias=False,
                   init_method="normal", recompute=recompute)
        x = F.relu(batch_norm(x, "convs/0/bn", test=test, comm=comm))
        x = conv2d(x, hp["num_classes"], "conv_seg", kernel=1, bias=True, init_method="normal",
                   recompute=recompute)
        if tuple(x.shape[2:]) != tuple(output_size):
            x = _resize(x, tuple(output_size))
        return x

    def network(self, img, test=True, comm=None, recompute=False):
        """Logits ``(N, num_classes, H, W)`` for a normalised image batch ``(N, 3, H, W)``,
        built in the *current* nnabla scope (official scopes ``backbone``, ``decode_head``)."""
        import nnabla as nn

        self._check_input(img.shape)
        with nn.parameter_scope("backbone"):
            taps = self.backbone(img, test=test, comm=comm, recompute=recompute)
        with nn.parameter_scope("decode_head"):
            return self.decode_head(taps, img.shape[2:], test=test, comm=comm,
                                    recompute=recompute)

    def __call__(self, img, test=True, comm=None, recompute=False):
        """Logits ``(N, num_classes, H, W)`` (no softmax) with this model's parameters.
        ``test=True``: BN uses the running statistics; ``test=False``: batch statistics
        (training). ``comm`` selects synchronised BN; ``recompute`` marks convolution outputs
        for recomputation in backward (saves memory)."""
        with self.parameter_scope():
            return self.network(img, test=test, comm=comm, recompute=recompute)

    def probs(self, img, test=True, comm=None):
        """Softmax over classes of :meth:`__call__` (the official test-mode output)."""
        import nnabla.functions as F

        return F.softmax(self(img, test=test, comm=comm), axis=1)

    def _check_input(self, shape):
        shape = tuple(shape)
        if len(shape) != 4 or shape[1] != 3:
            raise UserError(f"D3Net segmentation input must be (batch, 3, height, width), "
                            f"got {shape}")
        low = min_input_size(self.hparams)
        if min(shape[2:]) < low:
            raise UserError(f"image of {shape[2]}x{shape[3]} pixels is too small: D3Net needs "
                            f"at least {low}x{low}")


def _resize(x, size):
    import nnabla.functions as F

    return F.interpolate(x, output_size=size, mode="linear", align_corners=False,
                         half_pixel=True)


def d3net_segmentation(img, config, test=False, recompute=False, comm=None, with_softmax=None):
    """Official-style functional form: builds the network in the *current* nnabla scope
    (parameters ``backbone/...`` and ``decode_head/...``). Returns, as the official function,
    class probabilities (softmax) in test mode and logits in training mode, unless
    ``with_softmax`` says otherwise."""
    import nnabla.functions as F

    model = D3NetSegmentation(config, param_scope=_current_scope())
    logits = model.network(img, test=test, comm=comm, recompute=recompute)
    if with_softmax is None:
        with_softmax = test
    return F.softmax(logits, axis=1) if with_softmax else logits


def _current_scope():
    import nnabla as nn

    return nn.parameter.get_current_parameter_scope()


# ---------------------------------------------------------------------------- shapes
def _bn_shapes(prefix, ch):
    return [(f"{prefix}/bn/{p}", (1, ch, 1, 1)) for p in ("beta", "gamma", "mean", "var")]


def _conv_shapes(prefix, out_ch, in_ch, kernel, bias):
    shapes = [(f"{prefix}/conv/W", (out_ch, in_ch, kernel, kernel))]
    if bias:
        shapes.append((f"{prefix}/conv/b", (out_ch,)))
    return shapes


def _bn_conv_shapes(prefix, in_ch, out_ch, kernel):
    return _bn_shapes(f"{prefix}/norm1", in_ch) + _conv_shapes(f"{prefix}/conv1", out_ch, in_ch,
                                                                kernel, True)


def parameter_shapes(config):
    """Expected ``OrderedDict[name -> shape]`` (official names, creation order) of a config."""
    hp = _model_section(config)
    shapes = []
    f0 = hp["num_init_features"]
    shapes += _conv_shapes("backbone/conv1", f0, 3, 3, False)
    shapes += _bn_shapes("backbone/bn1", f0)
    shapes += _conv_shapes("backbone/conv2", f0, f0, 3, False)
    ch = f0
    n_stages = len(hp["n_blocks"])
    for i in range(n_stages):
        k, m, keep = hp["dens_k"][i], hp["num_layers"][i], hp["dense_n_out_layer_block"][i]
        comp = hp["block_comp"][i]
        for j in range(hp["n_blocks"][i]):
            blk = f"backbone/dense{i + 1}/d2_block/block{j}"
            init = f"{blk}/d2block/initial_layer"
            in_ch = ch
            if 4 * k < in_ch:
                shapes += _bn_conv_shapes(f"{init}/bc_layer/bottle_neck", in_ch, 4 * k, 1)
                in_ch = 4 * k
            shapes += _bn_conv_shapes(f"{init}/init_layer/bottle_neck", in_ch, k * m, 3)
            for layer in range(1, m):
                shapes += _bn_conv_shapes(f"{blk}/d2block/layers/layer{layer}/bottle_neck", k,
                                          k * (m - layer), 3)
            out = int(k * keep * comp)
            shapes += _bn_shapes(f"{blk}/block_dim_reduction/norm1", k * keep)
            shapes += _conv_shapes(f"{blk}/block_dim_reduction/conv1", out, k * keep, 1, False)
            ch += out
        last = i == n_stages - 1
        tap = f"backbone/{'final_out' if last else 'intermediate_out'}{i + 1}"
        shapes += _conv_shapes(f"{tap}/0", hp["intermediate_out_ch"][i], ch, 1, True)
        shapes += _bn_shapes(f"{tap}/1", hp["intermediate_out_ch"][i])
        if not last:
            shapes += _bn_shapes(f"backbone/transition{i + 1}/bn", ch)
            shapes += _conv_shapes(f"backbone/transition{i + 1}/conv",
                                   ch // hp["trans_comp_factor"], ch, 1, False)
            ch //= hp["trans_comp_factor"]
    head_in = sum(hp["intermediate_out_ch"])
    shapes += _conv_shapes("decode_head/convs/0/conv", hp["channels"], head_in, 1, False)
    shapes += _bn_shapes("decode_head/convs/0/bn", hp["channels"])
    shapes += _conv_shapes("decode_head/conv_seg", hp["num_classes"], hp["channels"], 1, True)
    return OrderedDict(shapes)
