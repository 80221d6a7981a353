"""D3Net segmentation on onnxruntime or OpenVINO: the network exported with nnabla's own ONNX
converter.

The runner builds the repository's nnabla network (:class:`d3net_seg.model.D3NetSegmentation`,
test-mode batch norm, logits output) on the given parameters, exports it with
nnabla-converter (through :mod:`common.runtime.onnx_export`, opset 13) and runs the ``.onnx``
with onnxruntime (``runtime='onnx'``) or OpenVINO (``runtime='openvino'``, float32). The
functions the
network uses (Convolution, BatchNormalization, ReLU, Slice, Add2, Concatenate,
AveragePooling, Interpolate) are all in the converter's table; bilinear ``F.interpolate``
with ``half_pixel=True, align_corners=False`` becomes ONNX ``Resize`` (linear,
``pytorch_half_pixel``), which equals nnabla's rule for every output size above 1 pixel
(always the case here).

Fixed shapes: nnabla's exporter bakes the input shape (including the Resize scales) into
the model, so one model is exported per input shape ``(N, 3, H, W)`` and cached on disk
(key: parameter values, input shape, graph structure, code/library versions; see
:mod:`common.runtime.onnx_export`). A folder of same-sized images (e.g. Cityscapes, 1024x2048) is
exported once; every new image size costs one export (about 2 s for D3Net-S) the first time
it is seen.

Agreement with the nnabla backend: float32 rounding only (both runtimes sum convolutions in
another order); 1.3e-6 (onnxruntime) and 1.6e-6 (OpenVINO) x max|logits| on the parity
fixture.

Runner contract (see :mod:`d3net_seg.inference`): ``runner(x) -> logits`` with ``x`` the
normalised batch float32 ``(N, 3, H, W)`` and logits float32 ``(N, num_classes, H, W)``
(after the final bilinear resize, before the softmax).

Public API
----------
``build_onnx_runner(params, hparams, context=None, cache_dir=None, threads=None,
max_sessions=2, low_memory=False, runtime='onnx') -> OnnxRunner``;
``build_openvino_runner(...)``: the same with ``runtime='openvino'``
``OnnxRunner``: ``__call__(x)``, ``prepare(batch, height, width)``,
``save(path, batch, height, width)``, attributes ``hparams``, ``num_classes``,
``graph_builds`` (sessions opened), ``exports`` (conversions run), ``last_export``.
"""
import functools

import numpy as np

from common.errors import UserError
from common.runtime.onnx_export import OnnxModelRunner

from .model import D3NetSegmentation, min_input_size

# Part of the cache key; bump when this module changes what it exports.
CODE_VERSION = "d3net_seg.onnx_backend/1"


class OnnxRunner(OnnxModelRunner):
    """``runner(x) -> logits`` on onnxruntime or OpenVINO (see the module docs).

    ``params``: name -> array (official names); ``hparams``: the config's ``model`` section
    (or a whole config); ``cache_dir``, ``threads``, ``max_sessions`` (here: image sizes kept
    open), ``low_memory`` and ``runtime`` as for
    :class:`common.runtime.onnx_export.OnnxModelRunner`."""

    def __init__(self, params, hparams, cache_dir=None, threads=None, max_sessions=2,
                 low_memory=False, runtime="onnx"):
        model = D3NetSegmentation(hparams)
        model.load_parameters(params)
        self.model, self.hparams, self.num_classes = model, model.hparams, model.num_classes
        self.min_size = min_input_size(self.hparams)
        super().__init__(lambda x: model(x, test=True), "d3net_seg", model.get_parameters,
                         CODE_VERSION, cache_dir=cache_dir, threads=threads,
                         max_sessions=max_sessions, low_memory=low_memory, runtime=runtime)

    def check_shape(self, shape):
        shape = tuple(int(d) for d in shape)
        if len(shape) != 4 or shape[1] != 3:
            raise UserError(f"network input must be (batch, 3, height, width), got {shape}")
        if min(shape[2:]) < self.min_size:
            raise UserError(f"image of {shape[3]}x{shape[2]} pixels is too small: D3Net needs "
                            f"at least {self.min_size}x{self.min_size}")
        return shape

    def empty_output(self, shape):
        return np.zeros((0, self.num_classes) + shape[2:], dtype=np.float32)

    def prepare(self, batch, height, width):
        """Export (or find in the cache) and open the session for ``(batch, 3, height, width)``."""
        return self.prepare_shape((batch, 3, height, width))

    def save(self, path, batch, height, width):
        """Copy the exported ONNX model for that input shape to ``path``."""
        return self.save_shape(path, (batch, 3, height, width))


def build_onnx_runner(params, hparams, context=None, cache_dir=None, threads=None,
                      max_sessions=2, low_memory=False, runtime="onnx"):
    """ONNX runner with the contract of :class:`d3net_seg.inference.NnablaRunner`.
    ``context`` is accepted for symmetry and ignored (onnxruntime and OpenVINO run on the
    CPU)."""
    del context
    return OnnxRunner(params, hparams, cache_dir=cache_dir, threads=threads,
                      max_sessions=max_sessions, low_memory=low_memory, runtime=runtime)


build_openvino_runner = functools.partial(build_onnx_runner, runtime="openvino")
