"""D3Net semantic segmentation (Cityscapes) on NNabla.

Main objects: :class:`Segmenter` (``Segmenter.from_pretrained("d3net-s")`` or a ``.h5`` path;
``segment(image)`` -> logits, probs, trainId labels; ``overlay`` / ``overlay_with_legend``),
:class:`D3NetSegmentation` (the network), :func:`load_config`, :func:`load_weights`.
Modules: :mod:`d3net_seg.inference`, :mod:`d3net_seg.palette` (colours, label PNGs, legends),
:mod:`d3net_seg.metrics` (mIoU), :mod:`d3net_seg.training`.
"""
from . import palette  # noqa: F401
from .inference import Segmentation, Segmenter, read_image  # noqa: F401
from .model import D3NetSegmentation, load_config  # noqa: F401
from .weights import PRETRAINED, load_weights  # noqa: F401

__all__ = ["Segmenter", "Segmentation", "read_image", "D3NetSegmentation", "load_config",
           "load_weights", "PRETRAINED", "palette"]
