"""Command lines of ``separate.py`` and ``eval.py`` (the scripts only call :func:`separate_main`
and :func:`eval_main`). The input handling, chunking, museval scoring and the ``--model`` /
``--backend`` / context plumbing are the shared ones of :mod:`common.mss.cli` (with
:mod:`common.mss.separation` and :mod:`common.mss.evaluation`, as X-UMX); this module adds the D3Net
model flags and finds the network configuration of trained models.

``--model`` accepts the published ``d3net-mss`` weights (downloaded once into the cache), a
folder or ``.zip`` of ``<target>.h5`` files (the extracted official archive, or a ``train.py``
output folder), or one ``<target>.h5``; and the published ``d3net-openvino`` ONNX files (the
official ``separate_with_openvino.py`` models: a folder or ``.zip`` of ``<target>.onnx``, or
one of them), which run on onnxruntime or OpenVINO through the same pipeline. The network of
a target is described by ``<target>.yaml`` beside its ``.h5`` / ``.onnx`` when there is one
(``train.py`` writes it; needed for networks other than the official ones, e.g. the smoke
run's), else by the official ``configs/<target>.yaml``.
"""
import os
from collections import OrderedDict

from common.context import add_context_args
from common.mss import cli as mss_cli
from common.runtime.backends import RUNTIMES

from . import weights
from .model import SOURCES
from .separator import AUTO_ORDER, MODEL_FILE_RUNTIMES, Separator

PRETRAINED = ("d3net-mss", "d3net-openvino")
# As X-UMX: 30 s chunks cross-faded over 1 s keep memory bounded for any song length. The
# whole-song STFTs, magnitudes and Wiener filter of four targets grow with the song: separating
# 60 s with four targets peaked at 2.8 GB unchunked and at 1.7 GB in 30 s chunks (measured with
# the smoke network, whose STFT arrays have the same size as the official ones). --chunk-dur 0
# separates the whole song at once, as the official code.
DEFAULT_CHUNK_DUR = 30.0


def add_model_args(parser):
    mss_cli.add_model_flag(parser, PRETRAINED, "d3net-mss",
                           "published weights by name (downloaded once into the cache; "
                           "d3net-openvino: the official ONNX files, onnxruntime / OpenVINO "
                           "only), a folder or .zip of <target>.h5 files (e.g. a train.py "
                           "--output folder) or of <target>.onnx files, or one of them")
    parser.add_argument("--targets", nargs="+", choices=list(SOURCES), default=None,
                        help="sources to estimate (default: all the model has, in the order "
                             "vocals drums bass other)")
    parser.add_argument("--no-flip-average", dest="flip_average", action="store_false",
                        help="do not average each patch's estimate with that of its "
                             "channel-swapped copy (the official separation does; off halves "
                             "the network time)")
    parser.add_argument("--no-mwf", dest="mwf", action="store_false",
                        help="skip the multichannel Wiener filter (estimates keep the mixture "
                             "phase)")
    parser.add_argument("--residual", action="store_true",
                        help="also write the residual, mixture minus all estimates "
                             "('accompaniment' next to a single target)")
    mss_cli.add_backend_flag(parser)
    add_context_args(parser)
    return parser


def network_configs(weights_path, targets=None):
    """``{target: path}`` of the ``<target>.yaml`` network configs beside the weights (a
    ``.h5`` file, or a folder of them); targets without one use the official config."""
    path = os.fspath(weights_path)
    if os.path.isfile(path):
        stem, ext = os.path.splitext(path)
        if ext.lower() == ".h5" and os.path.isfile(stem + ".yaml"):
            return {os.path.basename(stem): stem + ".yaml"}
        return {}
    if not os.path.isdir(path):
        return {}
    found = OrderedDict()
    for target in targets or SOURCES:
        config = os.path.join(path, f"{target}.yaml")
        if os.path.isfile(config) and os.path.isfile(os.path.join(path, f"{target}.h5")):
            found[target] = config
    return found


def make_separator(weights_path, targets=None, flip_average=True, mwf=True, residual=False,
                   backend="auto", context="cpu", threads=None):
    """Build the separator once (its graphs are reused for every chunk and file).
    ``context``: ``'cpu'`` / ``'cudnn'`` or ``(name, device_id, type_config)``."""
    options = dict(ch_flip_average=flip_average, mwf=mwf, context=context, backend=backend,
                   threads=threads)
    if weights.holds_model_files(weights_path):  # <target>.yaml beside: found by the loader
        sep = Separator(weights_path, targets=targets, **options)
    else:
        params, configs = weights.load(weights_path, targets=targets,
                                       configs=network_configs(weights_path, targets) or None)
        sep = Separator.from_params(params, configs, **options)
    return mss_cli.ResidualSeparator(sep) if residual else sep


def _separator_factory(args, weights_path):
    return mss_cli.separator_factory(
        args, make_separator, weights_path, targets=args.targets,
        flip_average=args.flip_average, mwf=args.mwf, residual=args.residual,
        backend=args.backend, threads=args.threads)


MODEL = mss_cli.Model(
    add_args=add_model_args, pretrained=PRETRAINED, make_factory=_separator_factory,
    score_options=("targets", "flip_average", "mwf", "residual", "backend", "type_config"),
    chunk_dur=DEFAULT_CHUNK_DUR, separates="vocals / drums / bass / other with D3Net",
    network="D3Net", auto_order=AUTO_ORDER,
    runtimes=lambda path: MODEL_FILE_RUNTIMES if weights.holds_model_files(path) else RUNTIMES)
separate_main, eval_main = MODEL.separate_main, MODEL.eval_main
