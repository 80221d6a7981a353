"""X-UMX (CrossNet-Open-Unmix, arXiv 2010.04228) and UMX (Open-Unmix) networks on nnabla.

Both networks map a magnitude spectrogram ``(frames, batch, channels, bins)`` to non-negative
masks of the same layout (X-UMX: ``4 * channels`` mask channels, ordered bass, drums, vocals,
other, each with its ``channels`` channels). The source magnitude estimate is
``mask * mixture magnitude``.

Per source (UMX: once), as in the official code:

1. keep the first ``max_bin`` bins, ``x = (x + input_mean) * input_scale`` (the stored
   parameters are the negated dataset mean and the inverse dataset std);
2. ``fc1``: affine over ``channels * max_bin`` -> ``hidden_size`` (no bias), batch norm, tanh;
3. a stacked LSTM (``nb_layers`` layers, bidirectional with ``hidden_size // 2`` units per
   direction, or unidirectional with ``hidden_size`` units), skip-concatenated with its input;
4. ``fc2``: affine ``2 * hidden_size`` -> ``hidden_size``, batch norm, ReLU;
5. ``fc3``: affine ``hidden_size`` -> ``channels * bins`` (all bins), batch norm;
6. ``x * output_scale + output_mean``, ReLU -> mask.

X-UMX crosses the four branches twice: the LSTMs all read the average of the four ``fc1``
outputs, and every ``fc2`` reads the average of the four skip-concatenations.

Parameter names and shapes are the official ones (``fc1_bass/affine/W``,
``lstm_vocals/lstm/weight_l0``, ``input_mean_bass``, ... for X-UMX; unscoped ``fc1/affine/W``,
``lstm/lstm/bias``, ``input_mean``, ... for one UMX target), so official weight files load
unchanged. Each model keeps its parameters in its own nnabla parameter dictionary
(:attr:`params`), so several models (e.g. four UMX targets) coexist without name clashes;
pass ``param_scope=nn.parameter.get_current_parameter_scope()`` to use the caller's scope.

Training mode (``test=False``) uses batch statistics in batch norm and LSTM dropout 0.4, as
the official trainer; note that nnabla's CPU LSTM ignores dropout (the CUDA/cuDNN one applies
it), which is also true for the official code.
"""
from collections import OrderedDict

import numpy as np

from common.errors import UserError
from common.runtime.param_model import OwnParameters

from . import spectral

SOURCES = ("bass", "drums", "vocals", "other")
SAMPLE_RATE = 44100


def bandwidth_to_max_bin(sample_rate=SAMPLE_RATE, n_fft=4096, bandwidth=16000):
    """Number of STFT bins whose centre frequency is at most ``bandwidth`` Hz.

    Same rule as open-unmix / the official code: bins are ``linspace(0, sr / 2, n_fft // 2 + 1)``
    and ``max_bin`` is the index of the last bin ``<= bandwidth``, plus one
    (1487 for 16 kHz at 44.1 kHz with n_fft 4096).
    """
    freqs = np.linspace(0, float(sample_rate) / 2, n_fft // 2 + 1, endpoint=True)
    return int(np.count_nonzero(freqs <= bandwidth))


class _UnmixBase(OwnParameters):
    """Shared configuration, parameter handling and layers of UMX and X-UMX."""

    kind = None

    def __init__(self, hidden_size=512, n_fft=4096, n_hop=1024, max_bin=None, nb_channels=2,
                 nb_layers=3, bidirectional=True, dropout=0.4, input_mean=None,
                 input_scale=None, param_scope=None):
        self.hidden_size = int(hidden_size)
        self.n_fft = int(n_fft)
        self.n_hop = int(n_hop)
        self.nb_output_bins = spectral.nb_bins(self.n_fft)
        self.nb_bins = int(max_bin) if max_bin else self.nb_output_bins
        self.max_bin = self.nb_bins
        self.nb_channels = int(nb_channels)
        self.nb_layers = int(nb_layers)
        self.bidirectional = bool(bidirectional)
        self.nb_directions = 2 if self.bidirectional else 1
        self.dropout = float(dropout)
        self._check_config()
        self.lstm_hidden_size = (self.hidden_size // 2 if self.bidirectional
                                 else self.hidden_size)
        # Dataset statistics (mean, std) used to initialise input_mean / input_scale
        # (stored negated / inverted, as officially).
        self.input_mean = (np.zeros(self.nb_bins) if input_mean is None
                           else np.asarray(input_mean, dtype=np.float64))
        self.input_scale = (np.ones(self.nb_bins) if input_scale is None
                            else np.asarray(input_scale, dtype=np.float64))
        for name, arr in (("input_mean", self.input_mean), ("input_scale", self.input_scale)):
            if arr.shape[0] < self.nb_bins:
                raise UserError(f"{name} has {arr.shape[0]} values, the model needs "
                                f"at least max_bin = {self.nb_bins}")
        self.params = OrderedDict() if param_scope is None else param_scope

    # ------------------------------------------------------------------ configuration
    def _check_config(self):
        def positive(name, value):
            if value < 1:
                raise UserError(f"{name} must be a positive integer, got {value}")

        for name in ("hidden_size", "n_fft", "n_hop", "nb_channels", "nb_layers"):
            positive(name, getattr(self, name))
        if self.n_fft % 2:
            raise UserError(f"n_fft must be even, got {self.n_fft}")
        if self.n_hop > self.n_fft // 2:
            raise UserError(f"n_hop ({self.n_hop}) must not exceed n_fft // 2 "
                            f"({self.n_fft // 2})")
        if not 1 <= self.nb_bins <= self.nb_output_bins:
            raise UserError(f"max_bin must lie in [1, {self.nb_output_bins}] for n_fft "
                            f"{self.n_fft}, got {self.nb_bins}")
        if self.bidirectional and self.hidden_size % 2:
            raise UserError(f"a bidirectional LSTM needs an even hidden_size, got "
                            f"{self.hidden_size}")

    @property
    def model_description(self):
        return f"{self.kind} model"

    @property
    def config(self):
        """Network sizes, in the dict format of :mod:`xumx.weights`."""
        return {
            "kind": self.kind,
            "hidden_size": self.hidden_size,
            "max_bin": self.nb_bins,
            "n_fft": self.n_fft,
            "n_hop": self.n_hop,
            "nb_channels": self.nb_channels,
            "nb_layers": self.nb_layers,
            "nb_output_bins": self.nb_output_bins,
            "bidirectional": self.bidirectional,
            "nb_directions": self.nb_directions,
            "lstm_hidden_size": self.lstm_hidden_size,
        }

    _CONFIG_ARGS = ("hidden_size", "n_fft", "n_hop", "max_bin", "nb_channels", "nb_layers",
                    "bidirectional")

    @classmethod
    def from_config(cls, config, **kwargs):
        """Build from a config dict (as :mod:`xumx.weights` returns); ``kwargs`` override."""
        args = {k: config[k] for k in cls._CONFIG_ARGS if k in config}
        if "sources" in config and cls is CrossNet:
            args["sources"] = tuple(config["sources"])
        args.update(kwargs)
        return cls(**args)

    # ------------------------------------------------------------------ parameters
    def create_parameters(self):
        """Create every parameter (official creation order and initial values) by building
        the network once on a one-frame dummy input; existing parameters are kept."""
        import nnabla as nn

        with nn.auto_forward(False):
            dummy = nn.Variable((1, 1, self.nb_channels, self.nb_output_bins))
            self.network(dummy, test=True)
        return self.get_parameters()

    def parameter_shapes(self):
        """Expected ``OrderedDict[name -> shape]`` of all parameters, in creation order."""
        raise NotImplementedError

    # ------------------------------------------------------------------ layers
    def _norm_parameters(self, suffix):
        """input_mean / input_scale (max_bin) and output_scale / output_mean (all bins) as
        1-d parameters (see :meth:`_bcast`), created in the official order."""
        from nnabla.parameter import get_parameter_or_create

        def param(name, size, init):
            return get_parameter_or_create(name, (size,), np.asarray(init, dtype=np.float32),
                                           True)

        return {
            "input_mean": param(f"input_mean{suffix}", self.nb_bins,
                                -self.input_mean[:self.nb_bins]),
            "input_scale": param(f"input_scale{suffix}", self.nb_bins,
                                 1.0 / self.input_scale[:self.nb_bins]),
            "output_scale": param(f"output_scale{suffix}", self.nb_output_bins,
                                  np.ones(self.nb_output_bins)),
            "output_mean": param(f"output_mean{suffix}", self.nb_output_bins,
                                 np.ones(self.nb_output_bins)),
        }

    @staticmethod
    def _bcast(param):
        import nnabla.functions as F

        return F.reshape(param, (1, 1, 1, param.shape[0]))

    def _fc_bn(self, x, out_features, name, test, activation=None):
        import nnabla.functions as F
        import nnabla.parametric_functions as PF

        h = PF.affine(x, out_features, base_axis=2, with_bias=False, name=name)
        h = PF.batch_normalization(h, axes=[2], batch_stat=not test, name=name)
        if activation == "tanh":
            h = F.tanh(h)
        elif activation == "relu":
            h = F.relu(h)
        return h

    def _lstm(self, x, name, test):
        import nnabla.functions as F
        import nnabla.parametric_functions as PF

        state = (self.nb_layers, self.nb_directions, x.shape[1], self.lstm_hidden_size)
        h = F.constant(0, shape=state)
        c = F.constant(0, shape=state)
        y, _, _ = PF.lstm(x, h, c, num_layers=self.nb_layers, bidirectional=self.bidirectional,
                          training=not test, dropout=self.dropout, name=name)
        return y

    def _lstm_shapes(self, prefix):
        d, h, i = self.nb_directions, self.lstm_hidden_size, self.hidden_size
        shapes = OrderedDict()
        shapes[f"{prefix}/lstm/weight_l0"] = (d, 4, h, i + h)
        if self.nb_layers > 1:
            shapes[f"{prefix}/lstm/weight"] = (self.nb_layers - 1, d, 4, h, d * h + h)
        shapes[f"{prefix}/lstm/bias"] = (self.nb_layers, d, 4, h)
        return shapes

    def _fc_bn_shapes(self, prefix, n_in, n_out):
        shapes = OrderedDict()
        shapes[f"{prefix}/affine/W"] = (n_in, n_out)
        for p in ("beta", "gamma", "mean", "var"):
            shapes[f"{prefix}/bn/{p}"] = (1, 1, n_out)
        return shapes

    def _check_input(self, mag):
        shape = tuple(mag.shape)
        if len(shape) != 4 or shape[2] != self.nb_channels or shape[3] != self.nb_output_bins:
            raise UserError(
                f"{self.kind} network input must be (frames, batch, {self.nb_channels}, "
                f"{self.nb_output_bins}), got {shape}")
        return shape

    def _encode(self, x, norm, suffix, test):
        """Crop to max_bin, normalise, fc1 + BN + tanh."""
        x = x[..., :self.nb_bins]
        x = x + self._bcast(norm["input_mean"])
        x = x * self._bcast(norm["input_scale"])
        return self._fc_bn(x, self.hidden_size, f"fc1{suffix}", test, "tanh")

    def _hidden(self, x, suffix, test):
        """fc2 + BN + ReLU."""
        return self._fc_bn(x, self.hidden_size, f"fc2{suffix}", test, "relu")

    def _output(self, x, norm, suffix, shape, test):
        """fc3 + BN, reshape, output scale/shift, ReLU -> mask."""
        import nnabla.functions as F

        frames, batch, channels, bins = shape
        x = self._fc_bn(x, channels * bins, f"fc3{suffix}", test)
        x = F.reshape(x, (frames, batch, channels, bins))
        x = x * self._bcast(norm["output_scale"])
        x = x + self._bcast(norm["output_mean"])
        return F.relu(x)

    # ------------------------------------------------------------------ front end
    def spectrogram(self, audio, center=True):
        """Mixture front end: ``audio`` variable ``(batch, channels, samples)`` ->
        ``(mix_spec, real, imag)``; ``mix_spec`` is the magnitude ``(frames, batch,
        nb_channels, bins)`` (channel average for a mono model), ``real``/``imag`` the STFT
        ``(batch, channels, bins, frames)``."""
        real, imag = spectral.stft(audio, self.n_fft, self.n_hop, center)
        mono = self.nb_channels == 1 and audio.shape[1] != 1
        return spectral.magnitude(real, imag, mono=mono), real, imag

    def target_spectrogram(self, target_audio, center=True):
        """Target magnitudes ``(frames, batch, S * nb_channels, bins)`` of target audio
        ``(batch, S * C, samples)``; for a mono model stereo targets (C = 2, S * C =
        2 * expected) are averaged per source."""
        import nnabla.functions as F

        real, imag = spectral.stft(target_audio, self.n_fft, self.n_hop, center)
        spec = spectral.magnitude(real, imag)
        expected = self.nb_channels * self._nb_target_sources()
        if self.nb_channels == 1 and spec.shape[2] == 2 * expected:
            f, b, _, k = spec.shape
            spec = F.mean(F.reshape(spec, (f, b, expected, 2, k)), axis=3)
        return spec

    def _nb_target_sources(self):
        return 1


class OpenUnmix(_UnmixBase):
    """UMX: one Open-Unmix network for one target (official parameter names, unscoped)."""

    kind = "umx"

    def parameter_shapes(self):
        shapes = OrderedDict()
        shapes["input_mean"] = (self.nb_bins,)
        shapes["input_scale"] = (self.nb_bins,)
        shapes["output_scale"] = (self.nb_output_bins,)
        shapes["output_mean"] = (self.nb_output_bins,)
        shapes.update(self._fc_bn_shapes("fc1", self.nb_channels * self.nb_bins,
                                         self.hidden_size))
        shapes.update(self._lstm_shapes("lstm"))
        shapes.update(self._fc_bn_shapes("fc2", 2 * self.hidden_size, self.hidden_size))
        shapes.update(self._fc_bn_shapes("fc3", self.hidden_size,
                                         self.nb_channels * self.nb_output_bins))
        return shapes

    def network(self, mag, test=True):
        """Mask ``(frames, batch, nb_channels, bins)`` (ReLU output, not bounded by 1) for a
        magnitude spectrogram variable of the same shape."""
        import nnabla.functions as F

        shape = self._check_input(mag)
        with self.parameter_scope():
            norm = self._norm_parameters("")
            x = self._encode(mag, norm, "", test)
            x = F.concatenate(x, self._lstm(x, "lstm", test), axis=2)
            return self._output(self._hidden(x, "", test), norm, "", shape, test)

    def __call__(self, audio, test=False, center=None):
        """Official UMX graph on audio ``(batch, channels, samples)``: returns
        ``(mix_spec, est_spec)`` with ``est_spec = mask * mix_spec``. As officially, the STFT
        is centred only in test mode unless ``center`` is given."""
        center = test if center is None else center
        mix_spec, _, _ = self.spectrogram(audio, center)
        return mix_spec, self.network(mix_spec, test) * mix_spec

    def training_loss(self, mixture_audio, target_audio, test=False):
        """Official UMX loss: mean squared error between the estimated and the target
        magnitude (centred STFT only in test mode, as officially)."""
        import nnabla.functions as F

        _, est = self(mixture_audio, test=test)
        target = self.target_spectrogram(target_audio, center=test)
        return F.mean(F.squared_error(est, target))


class CrossNet(_UnmixBase):
    """X-UMX (CrossNet-Open-Unmix): four cross-connected Open-Unmix branches."""

    kind = "xumx"

    def __init__(self, *args, sources=SOURCES, **kwargs):
        super().__init__(*args, **kwargs)
        self.sources = tuple(sources)
        if len(self.sources) < 2:
            raise UserError("X-UMX needs at least two sources")

    @property
    def config(self):
        cfg = super().config
        cfg["sources"] = list(self.sources)
        return cfg

    def _nb_target_sources(self):
        return len(self.sources)

    def parameter_shapes(self):
        shapes = OrderedDict()
        for kind, size in (("input_mean", self.nb_bins), ("input_scale", self.nb_bins),
                           ("output_scale", self.nb_output_bins),
                           ("output_mean", self.nb_output_bins)):
            for s in self.sources:
                shapes[f"{kind}_{s}"] = (size,)
        for s in self.sources:
            shapes.update(self._fc_bn_shapes(f"fc1_{s}", self.nb_channels * self.nb_bins,
                                             self.hidden_size))
        for s in self.sources:
            shapes.update(self._lstm_shapes(f"lstm_{s}"))
        for s in self.sources:
            shapes.update(self._fc_bn_shapes(f"fc2_{s}", 2 * self.hidden_size,
                                             self.hidden_size))
        for s in self.sources:
            shapes.update(self._fc_bn_shapes(f"fc3_{s}", self.hidden_size,
                                             self.nb_channels * self.nb_output_bins))
        return shapes

    def _norm_all(self):
        """Create the normalisation parameters in the official order (all input means,
        all input scales, all output scales, all output means)."""
        from nnabla.parameter import get_parameter_or_create

        norms = {s: {} for s in self.sources}
        inits = (("input_mean", self.nb_bins, lambda: -self.input_mean[:self.nb_bins]),
                 ("input_scale", self.nb_bins, lambda: 1.0 / self.input_scale[:self.nb_bins]),
                 ("output_scale", self.nb_output_bins, lambda: np.ones(self.nb_output_bins)),
                 ("output_mean", self.nb_output_bins, lambda: np.ones(self.nb_output_bins)))
        for kind, size, init in inits:
            for s in self.sources:
                norms[s][kind] = get_parameter_or_create(
                    f"{kind}_{s}", (size,), np.asarray(init(), dtype=np.float32), True)
        return norms

    def _average(self, xs):
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total / float(len(xs))

    def network(self, mag, test=True):
        """Masks ``(frames, batch, len(sources) * nb_channels, bins)`` (ReLU outputs, source
        major: bass L/R, drums L/R, vocals L/R, other L/R) for a magnitude spectrogram
        variable ``(frames, batch, nb_channels, bins)``."""
        import nnabla.functions as F

        shape = self._check_input(mag)
        with self.parameter_scope():
            norms = self._norm_all()
            enc = [self._encode(mag, norms[s], f"_{s}", test) for s in self.sources]
            cross_1 = self._average(enc)
            lstm_out = [self._lstm(cross_1, f"lstm_{s}", test) for s in self.sources]
            skip = [F.concatenate(e, h, axis=2) for e, h in zip(enc, lstm_out)]
            cross_2 = self._average(skip)
            # all fc2 layers before all fc3 layers: the official parameter creation order
            hidden = [self._hidden(cross_2, f"_{s}", test) for s in self.sources]
            masks = [self._output(h, norms[s], f"_{s}", shape, test)
                     for h, s in zip(hidden, self.sources)]
        return F.concatenate(*masks, axis=2)

    def time_domain_estimates(self, masks, mix_spec, real, imag):
        """Source waveforms ``(sources, batch, channels, samples)`` from masks: magnitude
        ``mask * mix_spec`` with the mixture phase, nnabla iSTFT (zero padding convention),
        as the official training graph computes them for the SDR loss."""
        import nnabla.functions as F

        frames, batch, channels, bins = mix_spec.shape
        nb_src = len(self.sources)
        theta = spectral.phase(real, imag)  # (batch, C_audio, bins, frames)
        cos, sin = F.cos(theta), F.sin(theta)
        pr, pi = [], []
        for j in range(nb_src):
            est = masks[:, :, j * channels:(j + 1) * channels, :] * mix_spec
            est = F.transpose(est, (1, 2, 3, 0))  # (batch, C, bins, frames)
            pr.append(est * cos)
            pi.append(est * sin)
        pr, pi = F.stack(*pr, axis=0), F.stack(*pi, axis=0)
        out_ch = pr.shape[2]
        pr = F.reshape(pr, (nb_src * batch * out_ch, bins, frames))
        pi = F.reshape(pi, (nb_src * batch * out_ch, bins, frames))
        pred = spectral.istft_nn(pr, pi, self.n_fft, self.n_hop, center=True)
        return F.reshape(pred, (nb_src, batch, out_ch, pred.shape[-1]))

    def __call__(self, audio, test=False, with_time_domain=True, center=True):
        """Official X-UMX graph on audio ``(batch, channels, samples)``: returns
        ``(mix_spec, masks, pred)``; ``pred`` are the time-domain estimates
        ``(sources, batch, channels, samples)`` (``None`` if ``with_time_domain=False``)."""
        mix_spec, real, imag = self.spectrogram(audio, center)
        masks = self.network(mix_spec, test)
        pred = (self.time_domain_estimates(masks, mix_spec, real, imag)
                if with_time_domain else None)
        return mix_spec, masks, pred

    def training_loss(self, mixture_audio, target_audio, mcoef=10.0, test=False):
        """Official X-UMX objective ``mcoef * SDR-combination + MSE-combination`` for
        mixture ``(batch, C, samples)`` and targets ``(batch, sources * C, samples)``."""
        from .loss import mse_combination_loss, sdr_combination_loss

        mix_spec, masks, pred = self(mixture_audio, test=test)
        target_spec = self.target_spectrogram(target_audio)
        loss_f = mse_combination_loss(mix_spec, masks, target_spec)
        loss_t = sdr_combination_loss(mixture_audio, pred, target_audio)
        return mcoef * loss_t + loss_f


XUMX = CrossNet
OpenUnmix_CrossNet = CrossNet
