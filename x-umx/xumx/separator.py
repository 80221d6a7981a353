"""Music source separation with X-UMX / UMX, as the official ``test.py`` does it.

Pipeline for one stereo mixture (all settings from the weights' config):

1. STFT of the mixture (periodic Hann, ``center=True``, reflect padding; see
   :mod:`xumx.spectral`): complex64 ``X`` and magnitude ``|X|``. By default computed with
   numpy in float64 (about 25x faster than nnabla's DFT-by-convolution ``F.stft`` on CPU and
   equal to it within float32 rounding, ~4e-7 relative); ``stft='nnabla'`` uses ``F.stft``
   itself, bit-identical to the official front end.
2. Masks from the network runner; source spectrograms ``V_j = mask_j * |X|`` (X-UMX: one
   network with four mask groups; UMX: one network per target).
3. norbert's multichannel Wiener filter on the complex128 mixture STFT, vectorised
   (:mod:`xumx.wiener`, equal to ``norbert.wiener`` to float64 rounding): ``niter`` EM
   iterations, initialised with the mixture phase (``softmask=False``) or a soft mask with
   exponent ``alpha``; optional residual source (``norbert.residual_model``; always added
   when there is one target, named ``accompaniment``, as officially).
4. Inverse STFT (scipy's arithmetic, official scaling) of all sources at once, fed block by
   block of frames by the Wiener filter's second pass, so the filtered STFTs of the whole
   signal are never in memory together (:func:`xumx.spectral.istft_blocks`).

Output length: the official code returns ``(frames - 1) * n_hop`` samples, up to
``n_hop - 1`` (136 for 2 s at 44.1 kHz) fewer than the input. Here the inverse STFT's
overlap-add is continued over those last samples, which lie inside the windows of the
last two frames (see :func:`xumx.spectral.istft`), so every estimate has exactly the input
length while its first ``(frames - 1) * n_hop`` samples are the official output. Inputs shorter
than ``n_fft`` samples are zero-padded for the STFT and the result is cut back.

Graphs: the network graph is cached per frame count (and, with ``stft='nnabla'``, the STFT
graph per input length; a few of each are kept), so repeated calls with the same length
build nothing.
With ``chunk_seconds`` the network instead always runs on fixed chunks of frames (one graph
for any input length; the last chunk is padded with silent frames); the Wiener filter and
the inverse STFT still work on the whole signal, so there are no seams in the audio, but the
LSTMs do not see context across chunk borders (like the official ``--chunk-dur``, which
however separates the chunks completely independently). The default (``None``) processes
the whole signal at once, as the official code does without ``--chunk-dur``.
"""
import os
import warnings
from collections import OrderedDict

import numpy as np

from common.context import resolve_context
from common.errors import UserError
from common.mss.audio import at_model_rate
from common.runtime.backends import choose_backend
from common.runtime.graph_cache import GraphRunner, import_backend
from common.runtime.hugepages import small_pages
from common.runtime.onnx_export import available_cores

from . import spectral, weights, wiener
from .model import SAMPLE_RATE, CrossNet, OpenUnmix

RUNTIMES = ("nnabla", "onnx")
BACKENDS = ("auto",) + RUNTIMES
# --backend auto on the CPU: onnxruntime. OpenVINO was measured on the same ONNX model and left
# out: 30 s of full-size X-UMX masks (1292 frames, random weights of the official shapes),
# 2 threads, 6 interleaved runs each in one process on the shared 2-core machine, seconds min /
# median: onnxruntime 2.40 / 2.53, OpenVINO 2.55 / 3.59 (outputs within 3.9e-7 x max).
AUTO_ORDER = ("onnx",)


class NnablaRunner(GraphRunner):
    """Network runner on nnabla: ``runner(mag) -> masks`` (see :mod:`xumx.weights` for the
    contract); one test-mode graph per input shape, reused."""

    def __init__(self, kind, params, config, context=None, max_cached=2):
        cls = {"xumx": CrossNet, "umx": OpenUnmix}.get(kind)
        if cls is None:
            raise UserError(f"unknown network kind '{kind}' (expected 'xumx' or 'umx')")
        self.kind = kind
        self.model = cls.from_config(config)
        self.model.load_parameters(params)
        super().__init__(lambda x: self.model.network(x, test=True), context, max_cached)


def build_nnabla_runner(kind, params, config, context=None):
    """nnabla network runner with the signature of ``onnx_backend.build_onnx_runner``
    (``context``: nnabla extension name such as ``'cpu'``/``'cudnn'`` or a Context)."""
    return NnablaRunner(kind, params, config, context=context)


def _onnx_builder():
    return import_backend("xumx")


def _norbert():
    with warnings.catch_warnings():
        # norbert 0.2.1 imports from the deprecated scipy.ndimage.filters namespace
        warnings.simplefilter("ignore", DeprecationWarning)
        import norbert
    return norbert


class Separator:
    """X-UMX / UMX separator with the interface of the shared separation driver.

    ``Separator(weights, ...)``: ``weights`` is an X-UMX ``.h5`` file or UMX weights (directory
    of ``<target>.h5``, the ``.zip``, or one ``<target>.h5``); see :mod:`xumx.weights`. Use
    :meth:`from_params` for parameters already in memory.

    Options: ``targets`` (subset and order of the sources to estimate; X-UMX picks the
    corresponding masks, the Wiener filter sees only the chosen sources), ``niter`` (EM
    iterations, 1), ``softmask`` (False), ``alpha`` (1.0), ``residual`` (False: add a
    ``residual`` source), ``context`` (nnabla extension, ``'cpu'``), ``backend``
    (``'auto'``: onnxruntime on the CPU, nnabla on a GPU, see
    :func:`common.runtime.backends.choose_backend`; ``'nnabla'``, ``'onnx'``), ``threads``
    (onnxruntime threads and the threads of the Wiener filter and inverse STFT, default all
    cores), ``chunk_seconds`` (``None``: whole signal in one
    graph),
    ``n_hop`` (override; weight files do not store it, default ``n_fft // 4``), ``stft``
    (``'numpy'``: float64 numpy STFT, fast, equal to nnabla's ``F.stft`` up to float32
    rounding; ``'nnabla'``: the official ``F.stft`` graph, bit-exact but slow on CPU).

    Attributes: ``sample_rate`` (44100); ``targets``: the names ``__call__`` returns, in order
    - the network targets plus ``residual`` (``residual=True``) or ``accompaniment`` (single
    target), as the official code writes them (``output_names`` is the same list);
    ``network_targets``: the sources the network(s) estimate; ``config``; ``backend`` (the
    runtime in use); ``graph_builds`` (STFT + network graphs built so far).
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, weights_path, targets=None, niter=1, softmask=False, alpha=1.0,
                 residual=False, context="cpu", backend="auto", chunk_seconds=None,
                 n_hop=None, stft="numpy", threads=None):
        from common.pretrained import refuse_published_name

        from .cli import PRETRAINED

        refuse_published_name(weights_path, PRETRAINED, "Separator.from_pretrained")
        path = os.fspath(weights_path)
        kind = weights.detect_kind(path)
        if kind == "xumx":
            params, config = weights.load_xumx(path, n_hop=n_hop)
        else:
            params, config = weights.load_umx(path, targets=targets, n_hop=n_hop)
        self._setup(kind, params, config, targets, niter, softmask, alpha, residual, context,
                    backend, chunk_seconds, stft, threads)

    @classmethod
    def from_params(cls, kind, params, config, **options):
        """Separator from in-memory parameters: X-UMX ``(params, config)``; UMX
        ``OrderedDict[target -> params]`` and ``OrderedDict[target -> config]``."""
        self = cls.__new__(cls)
        defaults = dict(targets=None, niter=1, softmask=False, alpha=1.0, residual=False,
                        context="cpu", backend="auto", chunk_seconds=None, stft="numpy",
                        threads=None)
        unknown = set(options) - set(defaults)
        if unknown:
            raise TypeError(f"unknown options: {', '.join(sorted(unknown))}")
        defaults.update(options)
        self._setup(kind, params, config, **defaults)
        return self

    # ------------------------------------------------------------------ setup
    def _setup(self, kind, params, config, targets, niter, softmask, alpha, residual, context,
               backend, chunk_seconds, stft, threads=None):
        if backend not in BACKENDS:
            raise UserError(f"unknown backend {backend!r} (expected one of "
                            f"{', '.join(BACKENDS)})")
        backend = choose_backend(backend, context, AUTO_ORDER, RUNTIMES, what="X-UMX / UMX")
        if stft not in ("numpy", "nnabla"):
            raise UserError(f"unknown stft front end '{stft}' (expected 'numpy' or 'nnabla')")
        if int(niter) < 0:
            raise UserError(f"niter must be >= 0, got {niter}")
        if alpha <= 0:
            raise UserError(f"alpha must be positive, got {alpha}")
        self.kind = kind
        self.niter = int(niter)
        self.softmask = bool(softmask)
        self.alpha = float(alpha)
        self.residual = bool(residual)
        self.backend = backend
        # numpy threads of the Wiener filter and the inverse STFT (and onnxruntime's)
        self.threads = int(threads) if threads else available_cores()
        if backend == "onnx":
            build_onnx = _onnx_builder()

            from common.runtime.onnx_export import default_cache_dir

            def builder(k, p, c):  # exported once per set of weights, then loaded
                return build_onnx(k, p, c, intra_op_threads=threads,
                                  cache_dir=default_cache_dir())
        else:
            def builder(k, p, c):
                return build_nnabla_runner(k, p, c, context=context)
        if kind == "xumx":
            sources = list(config.get("sources", ["bass", "drums", "vocals", "other"]))
            self.network_targets = list(sources if targets is None else targets)
            unknown = [t for t in self.network_targets if t not in sources]
            if unknown:
                raise UserError(f"unknown X-UMX target(s) {', '.join(unknown)}; the model "
                                f"separates {', '.join(sources)}")
            self.config = dict(config)
            self._mask_index = [sources.index(t) for t in self.network_targets]
            self._runners = [builder("xumx", params, config)]
        elif kind == "umx":
            available = list(params)
            self.network_targets = list(available if targets is None else targets)
            unknown = [t for t in self.network_targets if t not in params]
            if unknown:
                raise UserError(f"no UMX weights for target(s) {', '.join(unknown)}; "
                                f"available: {', '.join(available)}")
            first = config[self.network_targets[0]]
            for t in self.network_targets:
                for key in ("n_fft", "n_hop", "nb_channels"):
                    if config[t][key] != first[key]:
                        raise UserError(f"UMX targets disagree on {key}: "
                                        f"{self.network_targets[0]}={first[key]}, "
                                        f"{t}={config[t][key]}")
            self.config = dict(first)
            self._runners = [builder("umx", params[t], config[t]) for t in self.network_targets]
        else:
            raise UserError(f"unknown model kind '{kind}'")
        if not self.network_targets:
            raise UserError("no targets to separate")
        self.n_fft = self.config["n_fft"]
        self.n_hop = self.config["n_hop"]
        self.nb_channels = self.config["nb_channels"]
        self.chunk_frames = None
        if chunk_seconds is not None:
            if chunk_seconds <= 0:
                raise UserError(f"chunk_seconds must be positive, got {chunk_seconds}")
            self.chunk_frames = max(1, int(round(chunk_seconds * self.sample_rate / self.n_hop)))
        if stft == "nnabla":
            self._stft = spectral.NnablaSTFT(self.n_fft, self.n_hop, center=True,
                                             ctx=resolve_context(context))
        else:
            self._stft = spectral.NumpySTFT(self.n_fft, self.n_hop, center=True)
        self.output_names = list(self.network_targets)
        if self.residual or len(self.network_targets) == 1:
            self.output_names.append("residual" if len(self.network_targets) > 1
                                     else "accompaniment")
        self.targets = list(self.output_names)

    @property
    def graph_builds(self):
        """Graphs built so far (STFT graphs + nnabla network graphs)."""
        return self._stft.graph_builds + sum(getattr(r, "graph_builds", 0)
                                             for r in self._runners)

    # ------------------------------------------------------------------ steps
    def _prepare(self, audio):
        """(samples, channels) -> model-channel float32 array (channels, samples)."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[:, None]
        if audio.ndim != 2 or audio.shape[0] == 0:
            raise UserError(f"audio must be (samples, channels), got shape {audio.shape}")
        if self.nb_channels == 1:
            return audio.mean(axis=1, keepdims=True).T
        if audio.shape[1] == 1:
            audio = np.repeat(audio, self.nb_channels, axis=1)
        elif audio.shape[1] > self.nb_channels:
            warnings.warn(f"{audio.shape[1]} channels: only the first {self.nb_channels} are "
                          "processed", stacklevel=2)
            audio = audio[:, :self.nb_channels]
        elif audio.shape[1] < self.nb_channels:
            raise UserError(f"the model needs {self.nb_channels} channels, got {audio.shape[1]}")
        return np.ascontiguousarray(audio.T)

    def _run(self, runner, mag):
        expected_ch = self.nb_channels * (len(self.config.get("sources", [])) or 1)
        if self.chunk_frames is None:
            out = runner(mag)
        else:
            n, step = mag.shape[0], self.chunk_frames
            outs = []
            for start in range(0, n, step):
                chunk = mag[start:start + step]
                if chunk.shape[0] < step:
                    pad = np.zeros((step - chunk.shape[0],) + chunk.shape[1:], np.float32)
                    chunk = np.concatenate([chunk, pad], axis=0)
                outs.append(runner(chunk)[:min(step, n - start)])
            out = np.concatenate(outs, axis=0)
        out = np.asarray(out, dtype=np.float32)
        want = mag.shape[:2] + (expected_ch, mag.shape[3])
        if out.shape != want:
            raise UserError(f"{self.backend} runner returned masks of shape {out.shape}, "
                            f"expected {want}")
        return out

    def analyze(self, audio):
        """Front end and networks only: ``(X, mag, masks)`` with the complex64 mixture STFT
        ``X`` (frames, bins, channels), the magnitude ``mag`` (frames, 1, channels, bins) and
        the masks ``OrderedDict[target -> (frames, channels, bins)]``."""
        x = self._prepare(audio)
        return self._analyze(x)

    def _analyze(self, x):
        n = x.shape[1]
        if n < self.n_fft:  # reflect padding needs more than n_fft // 2 samples
            x = np.concatenate([x, np.zeros((x.shape[0], self.n_fft - n), np.float32)], axis=1)
        X, mag = self._stft(x)
        masks = OrderedDict()
        c = self.nb_channels
        if self.kind == "xumx":
            out = self._run(self._runners[0], mag)
            for t, j in zip(self.network_targets, self._mask_index):
                masks[t] = out[:, 0, j * c:(j + 1) * c, :]
        else:
            for t, runner in zip(self.network_targets, self._runners):
                masks[t] = self._run(runner, mag)[:, 0]
        return X, mag, masks

    def separate(self, audio, full_length=True, sample_rate=None):
        """Estimates ``OrderedDict[name -> (samples, channels)]`` float64.

        ``audio`` is ``(samples, channels)`` at ``sample_rate`` (``None``: the model's
        :attr:`sample_rate`); another rate is resampled to the model's and the estimates back
        to it, with the input's length. An unclear layout such as ``(2, samples)`` is refused
        (:func:`common.mss.audio.at_model_rate`). ``full_length=False`` returns the official
        ``(frames - 1) * n_hop`` samples (at the model's rate)."""
        if not full_length and sample_rate not in (None, self.sample_rate):
            raise ValueError("full_length=False (the official length) needs audio at the "
                             "model's sample rate")
        audio, back = at_model_rate(audio, sample_rate, self.sample_rate)
        with small_pages():  # buffers made afresh on every call: see common.runtime.hugepages
            return back(self._separate(self._prepare(audio), full_length))

    def _separate(self, x, full_length):
        """Model-channel ``(channels, samples)`` audio -> estimates at the model's rate."""
        n = x.shape[1]
        X, mag, masks = self._analyze(x)
        # V_j = mask_j * |X|, each source's (frames, channels, bins) block contiguous as an
        # np.stack of the products leaves it (norbert's residual model sums in the order the
        # layout gives), seen with the Wiener filter's axes (sources, channels, bins, frames)
        V = np.empty((len(masks),) + mag[:, 0].shape, dtype=np.float32)
        for j, m in enumerate(masks.values()):
            np.multiply(m, mag[:, 0], out=V[j])
        V = V.transpose(0, 2, 3, 1)
        del masks, mag
        if self.softmask:
            np.power(V, self.alpha, out=V)
        if len(self.output_names) > len(self.network_targets):
            V = np.transpose(_norbert().residual_model(
                np.transpose(V, (3, 2, 1, 0)), X, self.alpha if self.softmask else 1),
                (3, 2, 1, 0))
        # planar view of the complex64 STFT, filtered in complex128 as officially
        X = X.transpose(2, 1, 0)
        filt = wiener.WienerFilter(V, X, self.niter, use_softmask=self.softmask,
                                   threads=self.threads, dtype=np.complex128)
        n_src, n_frames = V.shape[0], X.shape[-1]
        rows = n_src * X.shape[0]  # (source, channel) signals

        def filtered(frames):
            return filt.estimates(frames).reshape(rows, X.shape[1], -1)

        length = min(n, (n_frames - 1) * self.n_hop) if not full_length else n
        audio_out = spectral.istft_blocks(filtered, rows, n_frames, self.n_fft, self.n_hop,
                                          length=length, threads=self.threads)
        audio_out = audio_out.reshape(n_src, -1, length)
        return OrderedDict((name, audio_out[j].T) for j, name in enumerate(self.output_names))

    def __call__(self, audio, sample_rate=None):
        """``audio`` (samples, channels) float32 at ``sample_rate`` (default: the model's) ->
        ``dict[name -> (samples, channels)]`` float32 with exactly the input length (channels:
        the model's; a mono model's estimates are repeated over the input channels)."""
        audio = np.asarray(audio, dtype=np.float32)
        in_ch = audio.shape[1] if audio.ndim == 2 else 1
        out = {}
        with small_pages():
            est = self.separate(audio, full_length=True, sample_rate=sample_rate)
            for name, y in est.items():
                y = y.astype(np.float32)
                if y.shape[1] == 1 and in_ch > 1:
                    y = np.repeat(y, in_ch, axis=1)
                out[name] = np.ascontiguousarray(y)
        return out

    @classmethod
    def from_pretrained(cls, name_or_path, **options):
        """Separator from published weights by name ("x-umx", "umx" or "umxhq"; downloaded
        once into the cache, see :mod:`common.pretrained`) or from a path as
        ``Separator(path, ...)`` takes; ``options`` are those of the constructor."""
        from common.pretrained import pretrained_or_path

        from .cli import PRETRAINED

        return cls(pretrained_or_path(name_or_path, PRETRAINED), **options)
