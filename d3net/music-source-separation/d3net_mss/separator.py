"""Music source separation with D3Net, as the official ``separate.py`` does it.

Pipeline for one stereo mixture (settings from each target's config):

1. STFT of each channel (:mod:`d3net_mss.spectral`: librosa conventions, n_fft 4096, hop
   1024, periodic Hann window, centred with zero padding), complex64
   ``(frames, channels, bins)``.
2. Per target, patch-wise network inference on the mixture magnitude
   (:func:`patch_inference`): zero padding, overlapping patches of ``test_patch_len``
   frames every ``out_shift`` frames, optionally each patch together with its
   channel-swapped copy as a batch of two (``ch_flip_average``; the second output is
   swapped back and the two are averaged; onnxruntime / OpenVINO run the pair as two
   batch-1 calls, which halves their memory), overlap-add, division by the overlap factor.
   With several targets on those runtimes one compiled model is held at a time.
   The estimate gets the mixture phase.
3. The official one-iteration multichannel Wiener filter over the selected targets
   (:mod:`d3net_mss.wiener`; ``mwf=False`` skips it).
4. Inverse STFT per channel (librosa conventions).

Differences from the official code (results are otherwise identical):

* The official code builds a new network graph for every patch; here one graph per patch
  shape is built and reused for all patches and all later calls (``graph_builds`` counts
  them: one per target).
* Output length: the official output has ``(frames - 1) * hop`` samples, up to
  ``hop - 1`` (136 for 2 s at 44.1 kHz) fewer than the input. The inverse STFT here
  continues the overlap-add over the remaining samples, which still lie under the
  windows of the last frames, so every estimate has exactly the input length and its first
  ``(frames - 1) * hop`` samples equal the official output.
* With a single target the official Wiener filter would hand back (almost exactly) the
  mixture, since that one source must explain all of it; the filter is then skipped with a
  warning.
* The official patch scheme attenuates the last frames (by up to ``1 / scale``) when
  ``frames % test_patch_len > out_shift`` (see :func:`patch_layout`); this is reproduced by
  default, ``full_overlap=True`` avoids it.
* Input channels: mono is duplicated to stereo and only the first two of more channels are
  used, as the official loader does; a warning says so for more than two.
"""
import os
import warnings
from collections import OrderedDict

import numpy as np

from common.errors import UserError
from common.mss.audio import at_model_rate
from common.runtime.backends import RUNTIMES, ModelFile, choose_backend
from common.runtime.graph_cache import GraphRunner, import_backend

from . import spectral, weights, wiener
from .model import SAMPLE_RATE, D3NetMSS

BACKENDS = ("auto",) + RUNTIMES
# --backend auto on the CPU: OpenVINO, then onnxruntime. Measured with the fixture weights (full
# official networks), 2 threads, 6 interleaved runs each in one process on the shared 2-core
# machine, seconds per patch min / median: vocals 2 x 256 frames OpenVINO 3.66 / 4.31,
# onnxruntime 4.29 / 7.64; bass 2 x 384 frames 7.31 / 7.60 vs 10.35 / 10.53 (30 s of audio: 12
# vocals and 8 bass patches). Opening a target costs OpenVINO 4.6-6.5 s (compile) against
# 0.6 s, so it is ahead from about 20 s of audio on. Agreement with nnabla on the fixture's
# 64-frame forward input: OpenVINO 0.8e-4 / 6.6e-4 x max (vocals / bass), onnxruntime
# 2.0e-4 / 7.8e-4 (bound 1e-3).
AUTO_ORDER = ("openvino", "onnx")
# Published ONNX model files (d3net-openvino) run on these only.
MODEL_FILE_RUNTIMES = ("onnx", "openvino")


class NnablaRunner(GraphRunner):
    """``runner(x) -> y`` on nnabla for one target: ``x`` float32 ``(batch, frames,
    channels, bins)``, ``y`` the network output of the same shape. One test-mode graph is
    built per input shape and reused (up to ``max_cached`` kept); ``graph_builds`` counts
    the graphs built."""

    def __init__(self, params, config, context=None, max_cached=2):
        self.model = D3NetMSS(config)
        self.config = self.model.config
        self.model.load_parameters(params)
        super().__init__(lambda x: self.model.network(x, test=True), context, max_cached)


def build_nnabla_runner(params, config, context=None):
    """nnabla runner with the signature of ``onnx_backend.build_onnx_runner``."""
    return NnablaRunner(params, config, context=context)


def runner_builder(backend):
    """``build(params, config, context=..., threads=...) -> runner`` for a concrete backend."""
    if backend == "nnabla":
        return lambda params, config, context=None, threads=None: build_nnabla_runner(
            params, config, context=context)
    attr = {"onnx": "build_onnx_runner", "openvino": "build_openvino_runner"}[backend]
    return import_backend("d3net_mss", attr=attr, backend=backend)


def _model_file_runner(path, config, runtime, threads):
    """:class:`common.runtime.backends.ModelFile` of a published ``<target>.onnx``, checked
    against the target's config: input ``(batch, test_patch_len, channels, bins)``."""
    runner = ModelFile(path, runtime, threads)
    want = [config["test_patch_len"], config["n_channels"], config["fft_size"] // 2 + 1]
    got = runner.input_shape[1:]
    if len(runner.input_shape) != 4 or any(g is not None and g != w for g, w in zip(got, want)):
        shown = "x".join("?" if d is None else str(d) for d in runner.input_shape)
        raise UserError(f"{path} takes inputs of shape {shown}; the {config['target']} config "
                        f"needs (batch)x{want[0]}x{want[1]}x{want[2]} (test_patch_len x "
                        "channels x bins)")
    return runner


def patch_layout(nb_frames, patch_len, shift, full_overlap=False):
    """``(front, back, n_patches, scale)`` of the official patch scheme for ``nb_frames``:
    ``front`` / ``back`` zero frames padded before / after, ``n_patches`` patches starting at
    multiples of ``shift``, ``scale = patch_len // shift``.

    Officially there are ``(nb_frames + tail) // shift`` patches with
    ``tail = patch_len - nb_frames % patch_len``. When ``nb_frames % patch_len`` exceeds
    ``shift`` this leaves the last frames covered by fewer than ``scale`` patches, and since
    the sum is still divided by ``scale`` they come out attenuated (by up to ``1 / scale``).
    ``full_overlap=True`` adds the patches (and zero padding) needed to cover every frame
    ``scale`` times; it changes nothing when the official scheme already does."""
    patch_len, shift = int(patch_len), int(shift)
    if shift <= 0 or patch_len <= 0 or patch_len % shift:
        raise UserError(f"out_shift ({shift}) must be positive and divide test_patch_len "
                        f"({patch_len})")
    scale = patch_len // shift
    tail = patch_len - nb_frames % patch_len  # a full extra patch when nb_frames % P == 0
    front = shift * (scale - 1)
    back = tail + shift * scale
    n_patches = (nb_frames + tail) // shift
    if full_overlap:
        needed = (front + nb_frames - 1) // shift + 1
        if needed > n_patches:
            back += (needed - n_patches) * shift
            n_patches = needed
    return front, back, n_patches, scale


def patch_inference(mag, runner, patch_len, shift, ch_flip_average=True, full_overlap=False,
                    flip_pair_as_batch=True):
    """Official patch-wise inference. ``mag`` float32 ``(frames, channels, bins)``;
    ``runner(x)`` maps ``(batch, patch_len, channels, bins)`` to the same shape. Returns the
    overlap-added estimate ``(frames, channels, bins)`` float32.

    The magnitude is zero-padded with ``front`` frames before and ``back`` after (see
    :func:`patch_layout`, also for ``full_overlap``); patch ``k`` covers padded frames
    ``[k * shift, k * shift + patch_len)``; with ``ch_flip_average`` it runs together with its
    channel-reversed copy as a batch of two and the reversed-back second output is averaged
    with the first. Patch outputs are summed at their positions and frames
    ``[front, front + frames)`` of the sum, divided by ``patch_len // shift``, are
    returned. ``flip_pair_as_batch=False`` runs the patch and its copy as two batch-1 calls
    instead (the same per-item network; for the exported runtimes it halves the activation
    memory at the same speed)."""
    mag = np.asarray(mag, dtype=np.float32)
    if mag.ndim != 3 or mag.shape[0] == 0:
        raise UserError(f"magnitude must be (frames, channels, bins), got shape {mag.shape}")
    n = mag.shape[0]
    front, back, n_patches, scale = patch_layout(n, patch_len, shift, full_overlap)
    rest = mag.shape[1:]
    padded = np.concatenate([np.zeros((front,) + rest, np.float32), mag,
                             np.zeros((back,) + rest, np.float32)], axis=0)
    acc = np.zeros((max(padded.shape[0], n_patches * shift + 2 * front),) + rest, np.float32)
    for k in range(n_patches):
        x = padded[k * shift:k * shift + patch_len][None]
        if ch_flip_average:
            x = np.concatenate([x, x[:, :, ::-1]], axis=0)
        if flip_pair_as_batch:
            y = np.asarray(runner(x), dtype=np.float32)
        else:
            y = np.concatenate([np.asarray(runner(x[i:i + 1]), dtype=np.float32)
                                for i in range(x.shape[0])], axis=0)
        if y.shape != x.shape:
            raise UserError(f"network runner returned shape {y.shape} for input {x.shape}")
        y = (y[0] + y[1, :, ::-1]) * np.float32(0.5) if ch_flip_average else y[0]
        acc[k * shift:k * shift + patch_len] += y
    return acc[front:front + n] / np.float32(scale)


def source_stfts(X, mags, mwf=True):
    """Complex source STFTs from the magnitude estimates ``mags`` (target -> ``(frames, 2,
    bins)``) and the complex64 mixture STFT ``X``: each magnitude gets the mixture phase
    (complex64, as officially), then, with ``mwf`` and more than one target, the official
    one-iteration multichannel Wiener filter is applied (complex128 result). With a single
    target the filter is skipped with a warning (it would return the mixture)."""
    phase = np.exp(1j * np.angle(X))
    stfts = OrderedDict((t, np.asarray(m, dtype=np.float32) * phase) for t, m in mags.items())
    if mwf:
        if len(stfts) > 1:
            stfts = wiener.apply_mwf(stfts, X)
        else:
            warnings.warn("Wiener filter skipped: with a single target it would return "
                          "the mixture", stacklevel=2)
    return stfts


class Separator:
    """D3Net separator with the interface of the shared separation driver.

    ``Separator(weights_path, targets=None, ch_flip_average=True, mwf=True, context='cpu',
    backend='auto', full_overlap=False, threads=None, configs=None)``: ``weights_path`` is a
    directory of ``<target>.h5`` files, the official ``d3net-mss.zip``, one ``<target>.h5``,
    or published ONNX model files (the official ``d3net-openvino.zip``, its folder, or one
    ``<target>.onnx``; onnxruntime / OpenVINO only); see :mod:`d3net_mss.weights`. ``targets``
    selects and orders the sources (default: all found, official order); ``configs`` maps
    targets to network configs (default: ``<target>.yaml`` beside a model file, else the
    official ``configs/<target>.yaml``). :meth:`from_params` takes parameters in memory.

    Options: ``ch_flip_average`` (average with the channel-swapped input, official default
    in ``separate.py``: on), ``mwf`` (multichannel Wiener filter, on), ``context``
    (``'cpu'``, ``'cudnn'``, a tuple for :func:`common.context.get_context`, or a Context),
    ``backend`` (``'auto'``: see :data:`AUTO_ORDER` and
    :func:`common.runtime.backends.choose_backend`; ``'nnabla'``, ``'onnx'``, ``'openvino'``),
    ``threads`` (onnxruntime / OpenVINO threads; default all cores), ``full_overlap`` (off =
    official: see :func:`patch_layout`; on: the last frames are not attenuated when
    ``frames % test_patch_len > out_shift``).

    Attributes: ``sample_rate`` (44100, from the configs), ``targets`` (names ``__call__``
    returns, in order; same as ``network_targets``), ``configs`` (target -> config),
    ``backend`` (the runtime in use), ``n_fft``, ``n_hop``, ``graph_builds`` (network graphs /
    sessions built so far).
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, weights_path, targets=None, ch_flip_average=True, mwf=True,
                 context="cpu", backend="auto", full_overlap=False, threads=None,
                 configs=None):
        from common.pretrained import refuse_published_name

        from .cli import PRETRAINED

        refuse_published_name(weights_path, PRETRAINED, "Separator.from_pretrained")
        path = os.fspath(weights_path)
        options = dict(ch_flip_average=ch_flip_average, mwf=mwf, context=context,
                       backend=backend, full_overlap=full_overlap, threads=threads)
        if weights.holds_model_files(path):
            with weights.load_model_files(path, targets, configs) as (files, cfgs):
                self._setup(files, cfgs, model_files=True, **options)
        else:
            params, cfgs = weights.load(path, targets=targets, configs=configs)
            self._setup(params, cfgs, **options)

    @classmethod
    def from_params(cls, params, configs, targets=None, **options):
        """Separator from ``OrderedDict[target -> params]`` and ``[target -> config]``
        (configs: dicts, YAML paths, or None for ``configs/<target>.yaml``)."""
        from .model import load_config, normalize_config

        defaults = dict(ch_flip_average=True, mwf=True, context="cpu", backend="auto",
                        full_overlap=False, threads=None)
        unknown = set(options) - set(defaults)
        if unknown:
            raise TypeError(f"unknown options: {', '.join(sorted(unknown))}")
        defaults.update(options)
        names = list(params if targets is None else targets)
        missing = [t for t in names if t not in params]
        if missing:
            raise UserError(f"no parameters for target(s) {', '.join(missing)}; available: "
                            f"{', '.join(params)}")
        sel_p, sel_c = OrderedDict(), OrderedDict()
        for t in names:
            c = (configs or {}).get(t)
            if c is None:
                c = load_config(t)
            elif isinstance(c, (str, os.PathLike)):
                c = load_config(c)
            else:
                c = normalize_config(c, target=t)
            sel_p[t] = weights._strip(params[t], t)
            sel_c[t] = c
        self = cls.__new__(cls)
        self._setup(sel_p, sel_c, **defaults)
        return self

    def _setup(self, sources, configs, ch_flip_average, mwf, context, backend,
               full_overlap=False, threads=None, model_files=False):
        """``sources``: target -> parameters, or with ``model_files`` target -> ONNX file."""
        if backend not in BACKENDS:
            raise UserError(f"unknown backend {backend!r} (expected one of "
                            f"{', '.join(BACKENDS)})")
        if not sources:
            raise UserError("no targets to separate")
        self.backend = choose_backend(
            backend, context, AUTO_ORDER, MODEL_FILE_RUNTIMES if model_files else RUNTIMES,
            what="published D3Net ONNX model files" if model_files else "D3Net")
        self.ch_flip_average = bool(ch_flip_average)
        self.mwf = bool(mwf)
        self.full_overlap = bool(full_overlap)
        self.configs = OrderedDict(configs)
        self.targets = list(sources)
        self.network_targets = list(self.targets)
        first = self.configs[self.targets[0]]
        for t in self.targets:
            for key in ("fft_size", "hop_size", "n_channels", "fs"):
                if self.configs[t][key] != first[key]:
                    raise UserError(f"D3Net targets disagree on {key}: {self.targets[0]}="
                                    f"{first[key]}, {t}={self.configs[t][key]}")
        if first["n_channels"] != 2:
            raise UserError(f"the D3Net separator is stereo; the config has "
                            f"{first['n_channels']} channels")
        self.n_fft = first["fft_size"]
        self.n_hop = first["hop_size"]
        self.sample_rate = int(first["fs"])
        # The exported runtimes run the flip pair as two batch-1 calls: OpenVINO's peak for a
        # vocals patch falls from 2.8 to 1.55 GB at the same time per patch (7.4 s per batch of
        # two vs 2 x 3.8 s, measured on the 2-core machine with the earlier dense blocks, whose
        # slice copies are gone since: 0.9 GB now). nnabla keeps the official batch
        # of two (bit-identical to the official flow); published model files have a fixed batch.
        self._flip_pair_as_batch = model_files or self.backend == "nnabla"
        if model_files:
            self._runners = OrderedDict(
                (t, _model_file_runner(f, self.configs[t], self.backend, threads))
                for t, f in sources.items())
        else:
            build = runner_builder(self.backend)
            self._runners = OrderedDict(
                (t, build(sources[t], self.configs[t], context=context, threads=threads))
                for t in self.targets)

    @property
    def runners(self):
        """``OrderedDict[target -> runner]``."""
        return self._runners

    @property
    def graph_builds(self):
        """Network graphs built so far (all targets)."""
        return sum(getattr(r, "graph_builds", 0) for r in self._runners.values())

    # ------------------------------------------------------------------ steps
    def _prepare(self, audio):
        """(samples, channels) -> float32 (samples, 2)."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[:, None]
        if audio.ndim != 2 or audio.shape[0] == 0 or audio.shape[1] == 0:
            raise UserError(f"audio must be (samples, channels) with samples > 0, got shape "
                            f"{audio.shape}")
        if not np.all(np.isfinite(audio)):
            raise UserError("audio contains NaN or infinite samples")
        if audio.shape[1] == 1:
            audio = np.repeat(audio, 2, axis=1)
        elif audio.shape[1] > 2:
            warnings.warn(f"{audio.shape[1]} channels: only the first two are separated",
                          stacklevel=2)
            audio = audio[:, :2]
        return np.ascontiguousarray(audio)

    def stft(self, audio):
        """Mixture STFT, complex64 ``(frames, 2, bins)`` (audio ``(samples, channels)``)."""
        return spectral.stft(self._prepare(audio), self.n_fft, self.n_hop)

    def estimate_magnitudes(self, X):
        """Network magnitude estimates ``OrderedDict[target -> float32 (frames, 2, bins)]``
        from the mixture STFT ``X`` (official patch-wise inference)."""
        mag = np.ascontiguousarray(np.abs(X))
        out = OrderedDict()
        for t, runner in self._runners.items():
            cfg = self.configs[t]
            out[t] = patch_inference(mag, runner, cfg["test_patch_len"], cfg["out_shift"],
                                     ch_flip_average=self.ch_flip_average,
                                     full_overlap=self.full_overlap,
                                     flip_pair_as_batch=self._flip_pair_as_batch)
            # One compiled model in memory at a time (an OpenVINO target holds 0.9 GB, bass
            # 1.1 GB): with several targets each is released after its patches and compiled
            # again from the cached export for the next chunk (about 1.5 s, against half a
            # minute of patches per 30 s chunk). A single target keeps its model.
            if len(self._runners) > 1 and hasattr(runner, "release"):
                runner.release()
        return out

    def analyze(self, audio):
        """``(X, mags)``: mixture STFT and the per-target magnitude estimates."""
        X = self.stft(audio)
        return X, self.estimate_magnitudes(X)

    def filter(self, X, mags):
        """Source STFTs from magnitudes (see :func:`source_stfts`; ``mwf`` as configured)."""
        return source_stfts(X, mags, mwf=self.mwf)

    def separate(self, audio, full_length=True, sample_rate=None):
        """Estimates ``OrderedDict[target -> float64 (samples, 2)]``.

        ``audio`` is ``(samples, channels)`` at ``sample_rate`` (``None``: the model's
        :attr:`sample_rate`); another rate is resampled to the model's and the estimates back
        to it, with the input's length. An unclear layout such as ``(2, samples)`` is refused
        (:func:`common.mss.audio.at_model_rate`). ``full_length=False`` returns the official
        ``(frames - 1) * hop`` samples instead of the input length (at the model's rate)."""
        if not full_length and sample_rate not in (None, self.sample_rate):
            raise ValueError("full_length=False (the official length) needs audio at the "
                             "model's sample rate")
        audio, back = at_model_rate(audio, sample_rate, self.sample_rate)
        audio = self._prepare(audio)
        X, mags = self.analyze(audio)
        stfts = self.filter(X, mags)
        n = audio.shape[0]
        length = n if full_length else min(n, (X.shape[0] - 1) * self.n_hop)
        return back(OrderedDict((t, spectral.istft(s, self.n_hop, length=length))
                                for t, s in stfts.items()))

    def __call__(self, audio, sample_rate=None):
        """``audio`` (samples, channels) at ``sample_rate`` (default: the model's) ->
        ``dict[target -> float32 (samples, 2)]`` with exactly the input length."""
        return {t: np.ascontiguousarray(y, dtype=np.float32)
                for t, y in self.separate(audio, sample_rate=sample_rate).items()}

    @classmethod
    def from_pretrained(cls, name_or_path, **options):
        """Separator from published weights by name ("d3net-mss" or "d3net-openvino";
        downloaded once into the cache, see :mod:`common.pretrained`) or from a path as
        ``Separator(path, ...)`` takes; ``options`` are those of the constructor. As
        ``--model``, ``<target>.yaml`` network configs beside ``.h5`` files (a training
        run's) describe their networks unless ``configs`` is given."""
        from common.pretrained import pretrained_or_path

        from .cli import PRETRAINED, network_configs

        path = pretrained_or_path(name_or_path, PRETRAINED)
        if options.get("configs") is None:
            options["configs"] = network_configs(path, options.get("targets")) or None
        return cls(path, **options)
