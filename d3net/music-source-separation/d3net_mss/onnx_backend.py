"""D3Net MSS on onnxruntime or OpenVINO: the network exported with nnabla's own ONNX converter.

The runner builds the repository's nnabla network (:class:`d3net_mss.model.D3NetMSS`,
test-mode batch norm) on the given parameters, exports it with nnabla-converter (through
:mod:`common.runtime.onnx_export`, opset 13) and runs the ``.onnx`` with onnxruntime
(``runtime='onnx'``) or OpenVINO (``runtime='openvino'``, float32). Every function the network
uses (Transpose, Sub2, Div2, Slice, Convolution, BatchNormalization, ReLU, Add2, Concatenate,
AveragePooling, Deconvolution, Sigmoid, Mul2) is in the converter's table, so nothing is
written by hand.

Fixed shapes: nnabla's exporter bakes the input shape into the model, so one model is
exported per input shape ``(batch, frames, channels, bins)`` and cached on disk (key: the
parameter values, the input shape, the graph structure and the code/library versions; see
:mod:`common.runtime.onnx_export`). The separator feeds patches of one shape, ``(1,
test_patch_len, 2, 2049)`` (with ``ch_flip_average`` the patch and its channel-swapped copy
as two calls: half the activation memory of a batch of two at the same speed), so a target
is exported once (about 2 s) and later runs reuse the file.

Memory: the OpenVINO runner is built with ``low_memory=True`` (no fused "snippets"
subgraphs, see :class:`common.runtime.backends.OpenVinoSession`); :meth:`OnnxRunner.release`
closes the compiled model (the separator does so between targets).

Agreement with the nnabla backend: both runtimes sum the convolutions in another order (and
fold/fuse some operators), so results differ by float32 rounding, amplified by the depth of
the network. On the parity fixture (random weights of the official shapes, 64 frames) the
largest difference is 2.0e-4 (onnxruntime) / 0.8e-4 (OpenVINO) x max|output| for vocals and
7.8e-4 / 6.6e-4 for bass. Over full 256-frame patches a handful of elements (a few dozen of
2 million) differ by up to about 2e-3 x max|output|; the randomly initialised network is that
steep: nnabla itself moves its output by the same amount (up to 2.4e-3 x max, same number of
elements) when its input is perturbed by 1e-6 relative noise (see ``d3net/bench/README.md``).

Runner contract (see :mod:`d3net_mss.weights`): ``runner(x) -> y`` with ``x`` float32
``(batch, frames, channels, bins)`` (frames a multiple of ``2 ** levels``, 16 for the
official configs) and ``y`` the network output of the same shape.

Public API
----------
``build_onnx_runner(params, config, context=None, cache_dir=None, threads=None,
max_sessions=2, low_memory=False, runtime='onnx') -> OnnxRunner``;
``build_openvino_runner(...)``: the same with ``runtime='openvino'`` and ``low_memory=True``
``OnnxRunner``: ``__call__(x)``, ``prepare(batch, frames)``, ``save(path, batch, frames)``,
attributes ``config``, ``target``, ``runtime``, ``graph_builds`` (input shapes opened),
``exports`` (conversions run, 0 when everything came from the cache), ``last_export``,
``open_sessions``, ``sessions_opened`` (reopenings included); ``release()``.
"""
import functools

from common.runtime.onnx_export import OnnxModelRunner

from .model import D3NetMSS

# Part of the cache key; bump when this module changes what it exports.
CODE_VERSION = "d3net_mss.onnx_backend/1"


class OnnxRunner(OnnxModelRunner):
    """``runner(x) -> y`` for one D3Net MSS target on onnxruntime or OpenVINO (see the module
    docs).

    ``OnnxRunner(params, config, cache_dir=None, threads=None, max_sessions=2,
    low_memory=False, runtime='onnx')``: ``params``
    name -> array (official names, a ``<target>/`` prefix is stripped), ``config`` as
    :func:`d3net_mss.model.normalize_config` accepts; ``cache_dir`` for the exported models
    (default :func:`common.runtime.onnx_export.default_cache_dir`); ``threads`` intra-op
    threads (default: all available cores); ``max_sessions`` input shapes kept open;
    ``low_memory`` lowers the peak RSS: onnxruntime's memory arena off (a little slower; see
    :func:`common.runtime.onnx_export.make_session`), OpenVINO's snippets off (same speed; see
    :class:`common.runtime.backends.OpenVinoSession`); ``runtime`` ``'onnx'`` or
    ``'openvino'``."""

    def __init__(self, params, config, cache_dir=None, threads=None, max_sessions=2,
                 low_memory=False, runtime="onnx"):
        self.model = D3NetMSS(config)
        self.model.load_parameters(params)
        self.config = self.model.config
        self.target = self.config.get("target")
        self.nb_channels = self.model.nb_channels
        self.nb_bins = self.model.nb_bins
        self.frame_multiple = self.model.frame_multiple
        name = f"d3net_mss_{self.target}" if self.target else "d3net_mss"
        super().__init__(lambda x: self.model.network(x, test=True), name,
                         self.model.get_parameters, CODE_VERSION, cache_dir=cache_dir,
                         threads=threads, max_sessions=max_sessions, low_memory=low_memory,
                         runtime=runtime)

    def check_shape(self, shape):
        return self.model.check_input_shape(shape)

    def prepare(self, batch, frames):
        """Export (or find in the cache) and open the session for ``(batch, frames)`` inputs."""
        return self.prepare_shape((batch, frames, self.nb_channels, self.nb_bins))

    def save(self, path, batch, frames):
        """Copy the exported ONNX model for ``(batch, frames)`` inputs to ``path``."""
        return self.save_shape(path, (batch, frames, self.nb_channels, self.nb_bins))


def build_onnx_runner(params, config, context=None, cache_dir=None, threads=None,
                      max_sessions=2, low_memory=False, runtime="onnx"):
    """ONNX runner for one target with the signature of
    :func:`d3net_mss.separator.build_nnabla_runner`. ``context`` is accepted for that
    symmetry and ignored (onnxruntime and OpenVINO run on the CPU)."""
    del context
    return OnnxRunner(params, config, cache_dir=cache_dir, threads=threads,
                      max_sessions=max_sessions, low_memory=low_memory, runtime=runtime)


build_openvino_runner = functools.partial(build_onnx_runner, runtime="openvino", low_memory=True)
