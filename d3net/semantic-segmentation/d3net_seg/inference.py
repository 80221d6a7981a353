"""Run a D3Net segmentation model on images of any size.

Pipeline (the official ``get_segmentation`` + ``visualize``):

1. the image (H, W, 3) is cast to float and brought to the network's channel order (RGB
   for the published models: the official code reads BGR with OpenCV and converts; we read
   RGB with PIL, so nothing changes), then ``(pixel - mean) / std`` per channel with the
   config's mean/std (computed in float64, stored as float32), HWC -> CHW, batch of one;
2. the network gives logits at the input size (the decode head resizes bilinearly);
   ``probs`` is their softmax over classes, ``labels`` the argmax (trainIds);
3. the overlay is ``0.5 * image + 0.5 * palette colour``, truncated to uint8
   (:func:`d3net_seg.palette.overlay`); ``infer.py`` adds a legend of the classes present
   below it (:meth:`Segmenter.overlay_with_legend`) and writes the labels also as Cityscapes
   labelIds.

:class:`Segmenter` loads the weights once and keeps one nnabla graph per input size
(:class:`common.runtime.graph_cache.GraphCache`), so a folder of same-sized images builds the graph
once.

Network runner contract (nnabla: :class:`NnablaRunner`; onnxruntime / OpenVINO:
``d3net_seg.onnx_backend.build_onnx_runner(params, hparams, runtime=...)``, imported only when
asked for; ``backend='auto'`` picks one as :data:`AUTO_ORDER` says):
``params`` is the ``OrderedDict`` of official parameter names -> float32 arrays (as
:func:`d3net_seg.weights.load_weights` returns), ``hparams`` the config's ``model`` section
(dict, official key names). The runner is a callable ``runner(x) -> logits`` taking the
normalised batch ``x`` float32 ``(N, 3, H, W)`` (any H, W >= :func:`min_input_size`) and
returning float32 logits ``(N, num_classes, H, W)`` - after the final bilinear resize, before
the softmax - with batch norm in inference mode. An optional ``graph_builds`` attribute counts
the graphs/sessions it built.

Public API
----------
``Segmenter(weights, config=None, context='cpu', backend='auto', max_cached=2, threads=None)``
``Segmenter.preprocess(image, channel_order='RGB') -> float32 (1, 3, H, W)``
``Segmenter.forward(x) -> float32 logits (N, C, H, W)``
``Segmenter.segment(image, channel_order='RGB') -> Segmentation(logits, probs, labels)``
``Segmenter.overlay(image, labels) -> uint8 (H, W, 3)``
``Segmenter.overlay_with_legend(image, labels) -> uint8 (H + legend, W', 3)``
``Segmenter.from_pretrained(name_or_path, config=None, **options)``
``normalize(image, mean, std, to_rgb=True, channel_order='RGB')``, ``softmax(logits, axis=1)``
``NnablaRunner(params, hparams, context=None, max_cached=2)``
"""
import os
from collections import OrderedDict, namedtuple
from collections.abc import Mapping

import numpy as np

from common.errors import UserError
from common.runtime.backends import RUNTIMES, add_backend_args, announce_on_stderr, choose_backend
from common.runtime.graph_cache import GraphRunner, import_backend

from . import palette as _palette
from .model import RUN_CONFIG, D3NetSegmentation, load_config, min_input_size, parameter_shapes
from .weights import (PRETRAINED, check_parameters, detect_config, load_weights,
                      resolve_model)

BACKENDS = ("auto",) + RUNTIMES
# --backend auto on the CPU: OpenVINO, then onnxruntime. Measured with the fixture D3Net-S
# weights, 2 threads, 6 interleaved runs each in one process on the shared 2-core machine,
# seconds per 1024 x 2048 image min / median: OpenVINO 10.65 / 11.11, onnxruntime 12.62 /
# 18.30; opening the model (per image size) costs OpenVINO 3.2 s against 0.5 s, so a single
# image is a tie and every further one gains. Agreement with nnabla on the fixture image:
# OpenVINO 1.6e-6, onnxruntime 1.3e-6 x max|logits|.
AUTO_ORDER = ("openvino", "onnx")

Segmentation = namedtuple("Segmentation", ["logits", "probs", "labels"])
Segmentation.__doc__ = """Result for one image: ``logits`` and ``probs`` float32
(num_classes, H, W), ``labels`` uint8 (H, W) trainIds."""


def normalize(image, mean, std, to_rgb=True, channel_order="RGB"):
    """``(H, W, 3)`` image -> ``(1, 3, H, W)`` float32 network input.

    ``channel_order`` is the order of ``image``; ``to_rgb`` says whether the network expects
    RGB (True, the published models) or BGR. ``mean``/``std`` are in the network's order."""
    if channel_order not in ("RGB", "BGR"):
        raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise UserError(f"expected an (H, W, 3) colour image, got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise UserError("the image is empty")
    want = "RGB" if to_rgb else "BGR"
    img = img.astype(np.float32)  # as officially: the pixels are cast to float32 first
    if channel_order != want:
        img = img[..., ::-1]
    mean = np.asarray(mean, dtype=np.float32).astype(np.float64)
    stdinv = 1.0 / np.asarray(std, dtype=np.float32).astype(np.float64)
    x = (img - mean) * stdinv
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def softmax(logits, axis=1):
    """Softmax in float64, returned as float32."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=axis, keepdims=True))
    return (z / z.sum(axis=axis, keepdims=True)).astype(np.float32)


class NnablaRunner(GraphRunner):
    """nnabla network runner (see the module docstring for the contract)."""

    def __init__(self, params, hparams, context=None, max_cached=2):
        self.model = D3NetSegmentation(hparams)
        self.model.load_parameters(params)
        super().__init__(lambda x: self.model(x, test=True), context, max_cached)


def _exported_runner_builder(backend):
    attr = {"onnx": "build_onnx_runner", "openvino": "build_openvino_runner"}[backend]
    return import_backend("d3net_seg", attr=attr, backend=backend)


class Segmenter:
    """Semantic segmentation with a D3Net model, built once.

    ``weights``: an ``.h5`` path, or a mapping name -> array already in memory.
    ``config``: a config path / bundled name (``D3Net_S``, ``D3Net_L``) / dict; ``None``
    detects D3Net-S or D3Net-L from the parameter shapes. ``context``: ``'cpu'``,
    ``'cudnn'``, an nnabla Context or ``None`` (nnabla's current default).
    ``backend``: ``'auto'`` (:data:`AUTO_ORDER` on the CPU, nnabla on a GPU), ``'nnabla'``,
    ``'onnx'`` or ``'openvino'``. ``max_cached``: graphs / sessions kept (one per input size).
    ``threads``: onnxruntime / OpenVINO threads (default: all cores).

    Attributes: ``config`` (full config dict), ``hparams`` (its ``model`` section),
    ``num_classes``, ``palette`` (uint8 (num_classes, 3), RGB), ``class_names`` (the
    Cityscapes names for 19 classes), ``min_size``, ``backend`` (the runtime in use).

    :meth:`from_pretrained` takes a published name (``d3net-s``, ``d3net-l``) or a path.
    """

    def __init__(self, weights, config=None, context="cpu", backend="auto", max_cached=2,
                 threads=None):
        if backend not in BACKENDS:
            raise UserError(f"unknown backend {backend!r} (expected one of "
                            f"{', '.join(BACKENDS)})")
        if isinstance(weights, Mapping):
            params = OrderedDict((k, np.asarray(v, dtype=np.float32))
                                 for k, v in weights.items())
            if config is None:
                config = detect_config(params)
                if config is None:
                    raise UserError("the parameters match neither bundled config by their "
                                    "shapes; pass the config")
            config = load_config(config)
            check_parameters(params, parameter_shapes(config))
        else:
            from common.pretrained import refuse_published_name

            from .weights import PRETRAINED
            refuse_published_name(weights, PRETRAINED, "Segmenter.from_pretrained")
            params, config = load_weights(os.fspath(weights), config)
        self.config = config
        self.hparams = config["model"]
        self.num_classes = self.hparams["num_classes"]
        self.palette = np.asarray(config["palette"], dtype=np.uint8)
        self.class_names = _palette.class_names(self.num_classes)
        self.min_size = min_input_size(self.hparams)
        self.backend = choose_backend(backend, context, AUTO_ORDER, what="D3Net segmentation")
        if self.backend == "nnabla":
            self._runner = NnablaRunner(params, self.hparams, context=context,
                                        max_cached=max_cached)
        else:
            self._runner = _exported_runner_builder(self.backend)(
                params, self.hparams, threads=threads, max_sessions=max_cached)

    @property
    def graph_builds(self):
        """Graphs (or sessions) the runner built so far."""
        return getattr(self._runner, "graph_builds", 0)

    def check_size(self, height, width):
        """UserError unless the network accepts ``height`` x ``width``."""
        if min(height, width) < self.min_size:
            raise UserError(f"image of {width}x{height} pixels is too small: D3Net needs at "
                            f"least {self.min_size}x{self.min_size}")

    def preprocess(self, image, channel_order="RGB"):
        """Normalised ``(1, 3, H, W)`` float32 input of an ``(H, W, 3)`` image."""
        pre = self.config["preprocess"]
        return normalize(image, pre["mean"], pre["std"], pre["to_rgb"], channel_order)

    def forward(self, x):
        """Logits ``(N, num_classes, H, W)`` of a normalised batch ``(N, 3, H, W)``."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise UserError(f"network input must be (batch, 3, height, width), got {x.shape}")
        self.check_size(*x.shape[2:])
        return self._runner(x)

    def segment(self, image, channel_order="RGB"):
        """:class:`Segmentation` (logits, probs, labels) of one ``(H, W, 3)`` image."""
        x = self.preprocess(image, channel_order)
        logits = self.forward(x)[0]
        probs = softmax(logits, axis=0)
        labels = np.argmax(logits, axis=0).astype(np.uint8)
        return Segmentation(logits, probs, labels)

    __call__ = segment

    def overlay(self, image, labels, opacity=0.5):
        """Official visualisation of ``labels`` on ``image`` (same channel order as the
        palette, i.e. RGB)."""
        return _palette.overlay(image, labels, self.palette, opacity)

    def overlay_with_legend(self, image, labels, opacity=0.5):
        """:meth:`overlay` with a legend of the classes present in ``labels`` below it."""
        present = _palette.present_classes(labels, self.class_names, self.palette)
        return _palette.with_legend(self.overlay(image, labels, opacity), present)

    @classmethod
    def from_pretrained(cls, name_or_path, config=None, **options):
        """Segmenter of published Cityscapes weights by name (``d3net-s``, ``d3net-l``;
        downloaded once into the cache, see :mod:`common.pretrained`) or of an ``.h5`` path
        (config: as ``infer.py --network-config`` finds it); ``options`` are those of the
        constructor."""
        from common.pretrained import pretrained_or_path

        key = str(name_or_path).lower()
        named = key in PRETRAINED
        path = os.fspath(pretrained_or_path(key if named else name_or_path, tuple(PRETRAINED)))
        return cls(path, network_config_for(path, PRETRAINED.get(key) if named else None, config),
                   **options)


# ---------------------------------------------------------------------------- command line
def read_image(path):
    """Decode an image file as an (H, W, 3) uint8 RGB array (EXIF orientation applied, as
    OpenCV's ``imread`` does); UserError for missing, empty or undecodable files."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise UserError(f"{path}: not a file")
    if os.path.getsize(path) == 0:
        raise UserError(f"{path}: the file is empty")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            arr = np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image file (cannot decode it)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise UserError(f"{path}: cannot read the image ({first})") from None
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise UserError(f"{path}: the image is empty")
    return arr


OUTPUT_SUFFIXES = ("_labels.png", "_labelIds.png", "_overlay.png")


def output_paths(out_dir, image_path, subfolder=""):
    """``<out_dir>/<subfolder>/<stem>`` + each of :data:`OUTPUT_SUFFIXES`: trainId labels,
    Cityscapes labelIds, overlay with legend."""
    stem = os.path.splitext(os.path.basename(os.fspath(image_path)))[0]
    return tuple(os.path.join(out_dir, subfolder, stem + suffix) for suffix in OUTPUT_SUFFIXES)


def image_extensions():
    """File name extensions (lower case, with the dot) Pillow can open."""
    from PIL import Image

    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def collect_inputs(paths, warn, out_dir=None):
    """``[(image path, output subfolder), ...]`` for the ``IMAGE`` arguments: a file as it
    is; a folder contributes every image under it (any depth, sorted, subfolders mirrored in
    the output) except in ``out_dir`` (earlier results are not inputs). Files in a folder
    whose extension is no image format, and a skipped ``out_dir``, are named in ``warn``
    lines, never dropped silently; a folder without images is an error."""
    extensions = image_extensions()
    skip = os.path.realpath(out_dir) if out_dir is not None else None
    inputs = []
    for path in paths:
        if not os.path.isdir(path):
            inputs.append((path, ""))
            continue
        found, others = [], []
        for folder, dirs, files in os.walk(path):
            for d in [d for d in dirs if os.path.realpath(os.path.join(folder, d)) == skip]:
                warn(f"note: {path}: the output folder {os.path.join(folder, d)} in it is "
                     "not read")
                dirs.remove(d)
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(folder, name)
                ext = os.path.splitext(name)[1].lower()
                (found if ext in extensions else others).append(full)
        if not found:
            raise UserError(f"{path}: no image files in this folder")
        if others:
            shown = ", ".join(os.path.relpath(f, path) for f in others[:5])
            more = f" and {len(others) - 5} more" if len(others) > 5 else ""
            warn(f"note: {path}: {len(others)} file(s) without an image extension not read: "
                 f"{shown}{more}")
        inputs.extend((f, os.path.relpath(os.path.dirname(f), path)) for f in found)
    return [(f, "" if sub == os.curdir else sub) for f, sub in inputs]


def build_parser():
    import argparse

    from common.cli import Parser
    from common.context import add_context_args
    from common.pretrained import add_list_models_flag

    parser = Parser(
        description="Semantic segmentation (Cityscapes classes) with D3Net-S / D3Net-L. "
                    "For every input writes, at the input's size, <out-dir>/<stem>_labels.png "
                    "(palette PNG whose pixel values are the trainIds 0..18), "
                    "<stem>_labelIds.png (the same as Cityscapes labelIds 0..33, the ids of "
                    "the benchmark's *_gtFine_labelIds.png; 19-class models only) and "
                    "<stem>_overlay.png (image blended 50/50 with the class colours, a legend "
                    "of the classes present below it).")
    parser.add_argument("images", nargs="*", metavar="IMAGE",
                        help="image files (any size of at least 29x29, any format Pillow "
                             "reads) or folders: every image under a folder, its subfolders "
                             "mirrored in --out-dir")
    # The official script takes one image as -i / --test-image-file.
    parser.add_argument("--test-image-file", "-i", dest="image_options", action="append",
                        default=[], help=argparse.SUPPRESS)
    parser.add_argument("--model", "-m", default="d3net-l", metavar="{d3net-s,d3net-l,PATH.h5}",
                        help="published Cityscapes weights by name (downloaded once into the "
                             "cache) or an nnabla .h5 parameter file (default: %(default)s, as "
                             "the official script)")
    parser.add_argument("--network-config", metavar="{D3Net_S,D3Net_L,PATH.yaml}", default=None,
                        help="network config (our configs/D3Net_*.yaml layout or the official "
                             "flat one); default: the one of the named model; for a .h5 file "
                             f"the {RUN_CONFIG} beside it (training runs write one), else the "
                             "bundled config its parameter shapes match")
    parser.add_alias("--config-file", "network_config")
    parser.add_alias("-cfg", "network_config")
    parser.add_argument("--out-dir", "-o", default="segmentation",
                        help="output folder, created if needed (default: %(default)s)")
    add_backend_args(parser)
    add_context_args(parser)
    add_list_models_flag(parser, PRETRAINED)
    return parser


def network_config_for(weights_path, config_name, network_config=None):
    """The network config to check ``weights_path`` against: ``--network-config`` if given,
    else the bundled one of a named model, else the :data:`RUN_CONFIG` a training run wrote
    beside the weights, else ``None`` (detected from the parameter shapes)."""
    config = network_config if network_config is not None else config_name
    if config is None:
        beside = os.path.join(os.path.dirname(os.path.abspath(weights_path)), RUN_CONFIG)
        config = beside if os.path.isfile(beside) else None
    return None if config is None else load_config(config)


def make_segmenter(args, params, config):
    """The :class:`Segmenter` of ``infer.py`` / ``eval.py``: ``--backend auto`` resolved (and
    announced on stderr) once, the compute context set up only for nnabla."""
    from common.context import context_from_args

    args.backend = choose_backend(args.backend, args.context, AUTO_ORDER,
                                  what="D3Net segmentation", announce=announce_on_stderr)
    ctx = context_from_args(args) if args.backend == "nnabla" else None
    return Segmenter(params, config, context=ctx, backend=args.backend, threads=args.threads)


def infer_main(argv=None):
    """Entry point of ``infer.py`` (run it through :func:`common.cli.run_cli`)."""
    import sys

    from common.data.cityscapes import NUM_CLASSES
    from common.fileio import check_output_location, refuse_overwriting_inputs

    args = build_parser().parse_args(argv)
    arguments = args.images + args.image_options
    if not arguments:
        raise UserError("no input image: give IMAGE or FOLDER ... (see infer.py --help)")
    inputs = collect_inputs(arguments, lambda line: print(line, file=sys.stderr),
                            args.out_dir)
    # Check every input and the output folder before anything is loaded or written.
    outputs = OrderedDict()
    sizes = {}
    for path, subfolder in inputs:
        if path in outputs:
            continue  # the same file given twice (e.g. itself and its folder)
        h, w = read_image(path).shape[:2]
        sizes[path] = (h, w)
        targets = output_paths(args.out_dir, path, subfolder)
        if targets in outputs.values():
            other = next(p for p, t in outputs.items() if t == targets)
            raise UserError(f"{other} and {path} would both write {targets[0]}; rename one")
        outputs[path] = targets
    check_output_location(args.out_dir, "--out-dir")
    refuse_overwriting_inputs([t for paths in outputs.values() for t in paths], list(outputs))
    weights_path, config_name = resolve_model(args.model)
    params, config = load_weights(weights_path, network_config_for(weights_path, config_name,
                                                                   args.network_config))
    low = min_input_size(config)
    for path, (h, w) in sizes.items():
        if min(h, w) < low:
            raise UserError(f"{path}: image of {w}x{h} pixels is too small: D3Net needs at "
                            f"least {low}x{low}")
    seg = make_segmenter(args, params, config)
    label_ids = seg.num_classes == NUM_CLASSES  # the labelId table is the 19-class one
    for path, (labels_path, label_ids_path, overlay_path) in outputs.items():
        image = read_image(path)
        result = seg.segment(image)
        _palette.save_labels(labels_path, result.labels, seg.palette)  # atomic writes
        written = [labels_path]
        if label_ids:
            _palette.save_label_ids(label_ids_path, result.labels)
            written.append(label_ids_path)
        _palette.save_rgb(overlay_path, seg.overlay_with_legend(image, result.labels))
        written.append(overlay_path)
        print(f"{path} -> {', '.join(written)}")
    return 0
