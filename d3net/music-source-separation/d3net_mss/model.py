"""D3Net for music source separation (Takahashi & Mitsufuji, CVPR 2021, arXiv:2011.11844).

One network per target source maps a stereo magnitude spectrogram to the target's magnitude
spectrogram. Layout of input and output: ``(batch, frames, channels, bins)`` with
``bins = fft_size // 2 + 1`` (2049). The network (official ``D3NetMSS``):

1. transpose to ``(batch, channels, frames, bins)`` (channels become conv channels, the
   convolutions run over time x frequency), normalise ``(x - in_offset) / in_scale``
   (per-bin parameters of shape ``(1, 1, 1, bins)``);
2. split the bins below ``valid_signal_idx`` into bands at ``band_split_idxs``; each band
   gets a 3x3 conv (``features_init/<i>``) and a multi-scale dense U-Net of D3 blocks
   (``dense_band/<i>``, see :meth:`D3NetMSS.md3_block_ds`); band outputs with fewer
   channels than the widest are widened with BN + 1x1 conv (``match_fm_conv/<i>``) and the
   bands are concatenated back along frequency;
3. the whole valid range ``[0, valid_signal_idx)`` goes through its own 3x3 conv
   (``features_init_full``) and U-Net (``dense_full``); its output is concatenated to the
   band features along channels;
4. a final D2 block (``final_dense``), then a gated 1x1 output (``out_gate``:
   BN, ``sigmoid(conv_gate) * conv_filt``), ``* decode_scale + decode_bias`` and ReLU give the
   ``valid_signal_idx`` lowest bins; the bins from ``valid_signal_idx`` up are copied
   unchanged from the (un-normalised) input.

Parameter names and shapes are the official ones, *without* the ``<target>/`` prefix the
official files carry (``in_offset``, ``features_init/0/conv/W``,
``dense_band/0/ds_layers/dense_block0/initial_block/...``, ``out_gate/conv_gate/conv/conv/W``
...). Each :class:`D3NetMSS` keeps its parameters in its own parameter dict
(:attr:`D3NetMSS.params`), so the four targets coexist; :meth:`D3NetMSS.save_parameters`
writes them with the ``<target>/`` prefix so the official code can load the file.

Configuration: :func:`load_config` reads ``configs/<target>.yaml`` (our YAML layout of the
official per-source configs) into a flat dict keyed by the official hyper-parameter names:
``valid_signal_idx``, ``band_split_idxs``, ``num_init_features``, ``dens_k``,
``num_layer_blocks``, ``b_n_blocks``, ``comp_rates``, ``f_num_init_features``, ``f_dens_k``,
``f_num_layer_block``, ``f_n_blocks``, ``f_comp_rates``, ``ttl_dens_k``,
``ttl_num_layer_block``, ``n_channels``, ``fft_size``, ``hop_size``, ``fs``,
``patch_length``, ``test_patch_len``, ``out_shift``, plus ``target``. The official hparams
dict (``yaml.load`` of an official config) is accepted everywhere a config is.
"""
import json
import math
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.runtime.param_model import OwnParameters

SOURCES = ("vocals", "drums", "bass", "other")  # official default target order
SAMPLE_RATE = 44100
_SHAPES_BY_CONFIG = {}  # config (canonical JSON) -> parameter shapes
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

_INT_KEYS = ("valid_signal_idx", "f_num_init_features", "ttl_dens_k", "ttl_num_layer_block",
             "n_channels", "fft_size", "hop_size", "fs", "test_patch_len", "out_shift")


# --------------------------------------------------------------------------- configuration

def _from_our_yaml(doc):
    """Our nested YAML layout -> flat dict with the official key names."""
    sig, net = doc["signal"], doc["network"]
    bands, full, final = net["bands"], net["full_band"], net["final_block"]
    cfg = {
        "valid_signal_idx": net["valid_bins"],
        "band_split_idxs": list(net["band_edges"]),
        "num_init_features": [b["init_features"] for b in bands],
        "num_layer_blocks": [list(b["d2_layers"]) for b in bands],
        "dens_k": [list(b["growth_rates"]) for b in bands],
        "b_n_blocks": [list(b["d2_blocks"]) for b in bands],
        "comp_rates": [list(b["compression"]) for b in bands],
        "f_num_init_features": full["init_features"],
        "f_num_layer_block": list(full["d2_layers"]),
        "f_dens_k": list(full["growth_rates"]),
        "f_n_blocks": list(full["d2_blocks"]),
        "f_comp_rates": list(full["compression"]),
        "ttl_num_layer_block": final["d2_layers"],
        "ttl_dens_k": final["growth_rate"],
        "patch_length": doc.get("training", {}).get("patch_frames"),
        "n_channels": sig["channels"],
        "fft_size": sig["fft_size"],
        "hop_size": sig["hop_size"],
        "fs": sig["sample_rate"],
        "test_patch_len": doc["inference"]["patch_frames"],
        "out_shift": doc["inference"]["patch_shift"],
    }
    if doc.get("target") is not None:
        cfg["target"] = str(doc["target"])
    return cfg


def normalize_config(config, target=None):
    """Validate a config (our YAML layout, or the official flat hparams) and return the flat
    dict with official key names (a new dict; ``target`` fills a missing ``'target'``)."""
    if not isinstance(config, dict):
        raise UserError(f"a D3Net config must be a mapping, got {type(config).__name__}")
    try:
        cfg = _from_our_yaml(config) if "network" in config else dict(config)
    except (KeyError, TypeError) as exc:
        raise UserError(f"malformed D3Net config: missing or invalid entry {exc}") from None
    if target is not None and not cfg.get("target"):
        cfg["target"] = str(target)
    required = ("valid_signal_idx", "band_split_idxs", "num_init_features", "dens_k",
                "num_layer_blocks", "b_n_blocks", "comp_rates", "f_num_init_features",
                "f_dens_k", "f_num_layer_block", "f_n_blocks", "f_comp_rates", "ttl_dens_k",
                "ttl_num_layer_block", "n_channels", "fft_size")
    missing = [k for k in required if cfg.get(k) is None]
    if missing:
        raise UserError(f"D3Net config lacks {', '.join(missing)}")
    cfg.setdefault("hop_size", cfg["fft_size"] // 4)
    cfg.setdefault("fs", SAMPLE_RATE)
    for k in _INT_KEYS:
        if cfg.get(k) is not None:
            cfg[k] = int(cfg[k])
    problems = []
    nb_bins = cfg["fft_size"] // 2 + 1
    edges = [int(e) for e in cfg["band_split_idxs"]] + [cfg["valid_signal_idx"]]
    if not 0 < cfg["valid_signal_idx"] <= nb_bins:
        problems.append(f"valid_signal_idx {cfg['valid_signal_idx']} outside (0, {nb_bins}]")
    if any(b <= a for a, b in zip([0] + edges[:-1], edges)):
        problems.append(f"band_split_idxs {cfg['band_split_idxs']} must increase strictly "
                        f"within (0, valid_signal_idx={cfg['valid_signal_idx']})")
    n_bands = len(edges)
    for key in ("num_init_features", "dens_k", "num_layer_blocks", "b_n_blocks", "comp_rates"):
        if len(cfg[key]) < n_bands:
            problems.append(f"{key} has {len(cfg[key])} entries for {n_bands} bands")
    for i in range(min(n_bands, *(len(cfg[k]) for k in ("dens_k", "num_layer_blocks",
                                                          "b_n_blocks", "comp_rates")))):
        problems += _unet_problems(f"band {i}", cfg["dens_k"][i], cfg["num_layer_blocks"][i],
                                   cfg["b_n_blocks"][i], cfg["comp_rates"][i])
    problems += _unet_problems("full band", cfg["f_dens_k"], cfg["f_num_layer_block"],
                               cfg["f_n_blocks"], cfg["f_comp_rates"])
    if cfg.get("test_patch_len") and cfg.get("out_shift"):
        if cfg["out_shift"] <= 0 or cfg["test_patch_len"] % cfg["out_shift"]:
            problems.append(f"out_shift {cfg['out_shift']} must divide test_patch_len "
                            f"{cfg['test_patch_len']}")
    if problems:
        raise UserError("invalid D3Net config: " + "; ".join(problems))
    cfg["band_split_idxs"] = edges[:-1]
    return cfg


def _unet_problems(what, ks, n_layers, n_blocks, comps):
    depth = len(n_layers)
    problems = []
    if depth % 2 == 0:
        problems.append(f"{what}: needs an odd number of D3 blocks, got {depth} layer counts")
    if len(ks) < depth or len(n_blocks) < depth:
        problems.append(f"{what}: {len(n_layers)} layer counts but {len(ks)} growth rates and "
                        f"{len(n_blocks)} block counts")
    ds_len = (depth - 1) // 2
    if len(comps) < 2 * ds_len:
        problems.append(f"{what}: {len(comps)} compression rates for {ds_len} levels "
                        f"(need {2 * ds_len})")
    if any(int(v) < 1 for v in list(ks[:depth]) + list(n_layers[:depth]) + list(n_blocks[:depth])):
        problems.append(f"{what}: growth rates, layer and block counts must be >= 1")
    return problems


def config_path(target):
    """Path of our config for an official target name (``configs/<target>.yaml``)."""
    return CONFIG_DIR / f"{target}.yaml"


def load_config(target_or_path):
    """Flat config dict (official key names, plus ``target``) of ``configs/<target>.yaml``
    for a target name, or of a YAML file path (our layout or an official config)."""
    import yaml

    s = os.fspath(target_or_path)
    path = Path(s) if (s.endswith((".yaml", ".yml")) or os.sep in s) else config_path(s)
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise UserError(f"no D3Net config for '{s}' ({path} not found); available targets: "
                        f"{', '.join(known)}")
    with open(path) as fh:
        try:
            doc = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML ({exc})") from None
    try:
        return normalize_config(doc, target=path.stem)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- nnabla helpers

def stft(x, n_fft=4096, n_hop=1024, center=True, patch_length=None):
    """Multichannel nnabla STFT as the official training graph computes it.

    ``x`` ``(batch, channels, samples)`` -> ``(real, imag)``, each
    ``(batch, channels, bins, frames)``; periodic Hann window, reflect padding when centred.
    With ``patch_length`` only the first ``patch_length`` frames are kept."""
    import nnabla.functions as F

    b, c = x.shape[0], x.shape[1]
    flat = F.reshape(x, (b * c, x.shape[2]))
    real, imag = F.stft(flat, n_fft, n_hop, n_fft, window_type="hanning", center=center,
                        pad_mode="reflect")
    real = F.reshape(real, (b, c, n_fft // 2 + 1, real.shape[-1]))
    imag = F.reshape(imag, (b, c, n_fft // 2 + 1, imag.shape[-1]))
    if patch_length is not None:
        return real[..., :patch_length], imag[..., :patch_length]
    return real, imag


def spectrogram(real, imag, power=1, mono=True):
    """``|X| ** power`` of ``(batch, channels, bins, frames)`` parts as
    ``(batch, frames, channels, bins)`` (channel mean with ``mono=True``), official layout."""
    import nnabla.functions as F

    spec = (real ** 2 + imag ** 2) ** (power / 2.0)
    if mono:
        spec = F.mean(spec, axis=1, keepdims=True)
    return F.transpose(spec, (0, 3, 1, 2))


# --------------------------------------------------------------------------- network

class D3NetMSS(OwnParameters):
    """The D3Net MSS network of one target.

    ``D3NetMSS(config, input_mean=None, input_scale=None, param_scope=None)``: ``config`` as
    :func:`normalize_config` accepts; ``input_mean`` / ``input_scale`` (``bins`` values)
    initialise ``in_offset`` / ``in_scale`` (default 0 / 1), as officially. Parameters live in
    :attr:`params` (a fresh parameter dict unless ``param_scope`` is given, e.g.
    ``nn.parameter.get_current_parameter_scope()`` to use the caller's scope).

    :meth:`network` (also ``__call__``) builds the graph for a variable
    ``(batch, frames, channels, bins)``; frames must be a multiple of ``2 ** levels`` of the
    deepest U-Net (16 for the official configs) for the skip connections to line up.
    """

    def __init__(self, config, input_mean=None, input_scale=None, param_scope=None):
        self.config = normalize_config(config)
        self.hparams = self.config
        self.target = self.config.get("target")
        self.nb_bins = self.config["fft_size"] // 2 + 1
        self.nb_channels = self.config["n_channels"]
        self.input_mean = (np.zeros(self.nb_bins) if input_mean is None
                           else np.asarray(input_mean, np.float64).reshape(-1))
        self.input_scale = (np.ones(self.nb_bins) if input_scale is None
                            else np.asarray(input_scale, np.float64).reshape(-1))
        for name, arr in (("input_mean", self.input_mean), ("input_scale", self.input_scale)):
            if arr.shape[0] != self.nb_bins:
                raise UserError(f"{name} has {arr.shape[0]} values, expected {self.nb_bins}")
        self.params = OrderedDict() if param_scope is None else param_scope
        self._shapes = None

    @property
    def model_description(self):
        return f"D3Net {self.target} model" if self.target else "D3Net model"

    # ------------------------------------------------------------------ sizes
    @property
    def frame_multiple(self):
        """Frames of a network input must be a multiple of this (2 ** deepest pooling)."""
        depths = [len(self.config["num_layer_blocks"][i]) for i in range(self.nb_bands)]
        depths.append(len(self.config["f_num_layer_block"]))
        return 2 ** max((d - 1) // 2 for d in depths)

    @property
    def nb_bands(self):
        return len(self.config["band_split_idxs"]) + 1

    # ------------------------------------------------------------------ parameters
    def create_parameters(self):
        """Create all parameters (official order and initial values) by building the graph
        once on a dummy input; existing parameters are kept. Returns :meth:`get_parameters`."""
        import nnabla as nn

        with nn.auto_forward(False):
            dummy = nn.Variable((1, self.frame_multiple, self.nb_channels, self.nb_bins))
            self.network(dummy, test=True)
        return self.get_parameters()

    def parameter_shapes(self):
        """``OrderedDict[name -> shape]`` of every parameter in creation order, from building
        the graph on a dummy input in a scratch parameter dict (this model is untouched)."""
        if self._shapes is None:
            # The shapes depend on the config alone; building the graph takes about 0.6 s
            # and loading a target asks twice (weights check, then the model's own load).
            key = json.dumps(self.config, sort_keys=True, default=str)
            if key not in _SHAPES_BY_CONFIG:
                scratch = D3NetMSS(self.config)
                _SHAPES_BY_CONFIG[key] = OrderedDict(
                    (k, tuple(v.shape)) for k, v in scratch.create_parameters().items())
            self._shapes = _SHAPES_BY_CONFIG[key]
        return OrderedDict(self._shapes)

    def load_parameters(self, params, need_grad=None):
        """:meth:`OwnParameters.load_parameters` after stripping a ``<target>/`` prefix from
        every name (the official files' scope)."""
        super().load_parameters(strip_target_prefix(params, self.target), need_grad)

    def save_parameters(self, path, prefix=True):
        """Write the parameters as an nnabla ``.h5`` file; with ``prefix`` (default) the names
        carry ``<target>/`` like the official pretrained files."""
        super().save_parameters(path, f"{self.target}/" if prefix and self.target else "")

    # ------------------------------------------------------------------ layers
    def _layers(self, test, comm, recompute, init_method):
        from d3net_blocks import D3Layers

        return D3Layers(test=test, comm=comm, init_method=init_method, recompute=recompute)

    @staticmethod
    def upsampling_layer(L, x, num_input_features, comp_rate=1.0):
        """BN (``upsample/norm``) + 2x2 stride-2 transposed conv (``upsample/transconv``) to
        ``ceil(comp_rate * num_input_features)`` channels."""
        import nnabla as nn
        import nnabla.parametric_functions as PF

        num_filters = int(math.ceil(comp_rate * num_input_features))
        with nn.parameter_scope("upsample"):
            h = L.batch_norm(x, "norm")
            h = PF.deconvolution(h, num_filters, kernel=(2, 2), stride=(2, 2), name="transconv")
        return h

    def md3_block_ds(self, L, x, ks, n_layers, n_blocks, comp_rates, name):
        """Multi-scale dense U-Net of D3 blocks (official ``md3_block_ds``).

        With ``2n + 1`` blocks: ``n`` down-sampling D3 blocks
        (``{name}/ds_layers/dense_block{i}``, each followed by 2x2 average pooling), a
        bottleneck D3 block (``{name}/bottleneck_block``), then ``n`` levels of up-sampling
        (``{name}/us_layers/upsample{i}``) + concatenation with the matching down-sampling
        output + D3 block (``{name}/us_layers/dense_block{n + 1 + i}``). Returns the
        bottleneck and up-sampling block outputs in that order.

        As officially, the number of levels is ``(len(n_layers) - 1) // 2`` and up-sampling
        level ``i`` takes its D2-block count from ``n_blocks[n + i]`` (not ``n + 1 + i``) and its
        compression from ``comp_rates[n + i]``; the official configs have uniform block counts,
        so this only matters for custom configs."""
        import nnabla as nn
        import nnabla.functions as F

        ds_len = (len(n_layers) - 1) // 2
        skips, outs = [], []
        h = x
        with nn.parameter_scope(name + "/ds_layers"):
            for i in range(ds_len):
                with nn.parameter_scope(f"dense_block{i}"):
                    h = L.d3_block(h, ks[i], n_layers[i], n_blocks[i])
                skips.append(h)
                h = F.average_pooling(h, kernel=(2, 2), stride=(2, 2))
        with nn.parameter_scope(name + "/bottleneck_block"):
            h = L.d3_block(h, ks[ds_len], n_layers[ds_len], n_blocks[ds_len])
        outs.append(h)
        n_channels = ks[ds_len]
        up_comps = list(comp_rates[ds_len:])
        with nn.parameter_scope(name + "/us_layers"):
            for i in range(ds_len):
                j = ds_len + 1 + i
                with nn.parameter_scope(f"upsample{i}"):
                    h = self.upsampling_layer(L, h, n_channels, up_comps[i])
                    h = F.concatenate(h, skips[ds_len - 1 - i], axis=1)
                with nn.parameter_scope(f"dense_block{j}"):
                    h = L.d3_block(h, ks[j], n_layers[j], n_blocks[ds_len + i])
                outs.append(h)
                n_channels = ks[j]
        return outs

    def _create_io_parameters(self):
        import nnabla.initializer as I
        from nnabla.parameter import get_parameter_or_create

        shape = (1, 1, 1, self.nb_bins)
        valid = (1, 1, 1, self.config["valid_signal_idx"])
        return (
            get_parameter_or_create("in_offset", shape,
                                    self.input_mean.reshape(shape).astype(np.float32)),
            get_parameter_or_create("in_scale", shape,
                                    self.input_scale.reshape(shape).astype(np.float32)),
            get_parameter_or_create("decode_scale", valid, I.ConstantInitializer(1.0)),
            get_parameter_or_create("decode_bias", valid, I.ConstantInitializer(1.0)),
        )

    def check_input_shape(self, shape):
        """``shape`` as a tuple of ints if the network takes it: ``(batch, frames, channels,
        bins)`` with frames a multiple of :attr:`frame_multiple`; else a one-line error."""
        shape = tuple(int(d) for d in shape)
        if len(shape) != 4 or shape[2] != self.nb_channels or shape[3] != self.nb_bins:
            raise UserError(f"D3Net input must be (batch, frames, {self.nb_channels}, "
                            f"{self.nb_bins}), got {shape}")
        if shape[1] % self.frame_multiple:
            raise UserError(f"D3Net input frames ({shape[1]}) must be a multiple of "
                            f"{self.frame_multiple}")
        return shape

    def network(self, x, test=True, comm=None, recompute=False, init_method=None):
        """Target magnitude ``(batch, frames, channels, bins)`` for a mixture magnitude
        variable of the same shape. ``test``: batch norm with running statistics;
        ``comm``: communicator for synchronised batch norm in training; ``recompute`` /
        ``init_method`` (``None``, ``'xavier'``, ``'normal'``) as in :mod:`d3net_blocks`."""
        import nnabla as nn
        import nnabla.functions as F

        cfg = self.config
        self.check_input_shape(x.shape)
        L = self._layers(test, comm, recompute, init_method)
        valid = cfg["valid_signal_idx"]
        edges = list(cfg["band_split_idxs"]) + [valid]
        with self.parameter_scope():
            in_offset, in_scale, decode_scale, decode_bias = self._create_io_parameters()
            inp = F.transpose(x, (0, 2, 1, 3))
            scaled = (inp - in_offset) / in_scale

            max_final_k = max(int(cfg["dens_k"][i][-1]) for i in range(self.nb_bands))
            band_out = []
            start = 0
            for i in range(self.nb_bands):
                h = scaled[:, :, :, start:edges[i]]
                h = L.conv2d(h, cfg["num_init_features"][i], f"features_init/{i}", kernel=3,
                             pad=1)
                outs = self.md3_block_ds(L, h, cfg["dens_k"][i], cfg["num_layer_blocks"][i],
                                         cfg["b_n_blocks"][i], cfg["comp_rates"][i],
                                         f"dense_band/{i}")
                h = outs[-1]
                if max_final_k > cfg["dens_k"][i][-1]:
                    h = L.batch_norm(h, f"match_fm_conv/{i}/norm")
                    h = L.conv2d(h, max_final_k, f"match_fm_conv/{i}/conv", kernel=1)
                band_out.append(h)
                start = edges[i]

            full = L.conv2d(scaled[:, :, :, :valid], cfg["f_num_init_features"],
                            "features_init_full", kernel=3, pad=1)
            full = self.md3_block_ds(L, full, cfg["f_dens_k"], cfg["f_num_layer_block"],
                                     cfg["f_n_blocks"], cfg["f_comp_rates"], "dense_full")[-1]

            bands = band_out[0] if len(band_out) == 1 else F.concatenate(*band_out, axis=3)
            h = F.concatenate(bands, full, axis=1)
            h = L.d2_block_with_initial_layer(h, cfg["ttl_dens_k"], cfg["ttl_num_layer_block"],
                                              "final_dense")
            with nn.parameter_scope("out_gate"):
                h = L.batch_norm(h, "bn")
                gate = F.sigmoid(L.conv2d(h, self.nb_channels, "conv_gate/conv", kernel=1))
                filt = L.conv2d(h, self.nb_channels, "conv_filt/conv", kernel=1)
            out = gate * filt
            out = F.relu(out * decode_scale + decode_bias)
            if valid < self.nb_bins:
                out = F.concatenate(out, inp[:, :, :, valid:], axis=3)
            return F.transpose(out, (0, 2, 1, 3))

    __call__ = network


def strip_target_prefix(params, target=None):
    """Drop a common ``<target>/`` prefix (the official files' scope) from every name.

    With ``target=None`` a prefix is stripped when all names share a first component that
    is not itself a top-level official name."""
    if not params:
        return params
    names = list(params)
    if target:
        prefix = f"{target}/"
        if all(k.startswith(prefix) for k in names):
            return OrderedDict((k[len(prefix):], v) for k, v in params.items())
        return params
    first = {k.split("/", 1)[0] for k in names}
    if len(first) == 1 and all("/" in k for k in names):
        head = first.pop()
        if head not in ("features_init", "dense_band", "dense_full", "final_dense", "out_gate",
                        "match_fm_conv", "features_init_full"):
            return OrderedDict((k[len(head) + 1:], v) for k, v in params.items())
    return params



