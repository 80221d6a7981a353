"""Colouring and writing segmentation results.

* :func:`colorize` / :func:`overlay` - the official visualisation: ``(1 - opacity) * image +
  opacity * palette colour of the label``, truncated to uint8 (opacity 0.5 by default, as
  officially; then it equals ``(image + colour) // 2`` exactly). Works in any channel order
  as long as image and palette agree (the official code works in BGR, we work in RGB).
* :func:`label_image` / :func:`save_labels` - a palette ("P" mode) PNG whose pixel values are
  the trainIds (0..18; 255 = ignore, shown black) and whose palette is the Cityscapes one, so
  the same file is a valid trainId label map and a coloured picture.
* :func:`save_rgb` - an RGB PNG.

Files are written atomically (:func:`common.fileio.atomic_write`).
"""
import numpy as np
from PIL import Image

from common.data.cityscapes import PALETTE
from common.fileio import atomic_write


def _lut(palette):
    palette = np.asarray(PALETTE if palette is None else palette)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:len(palette)] = palette.astype(np.uint8)
    return lut


def colorize(labels, palette=None):
    """``(H, W)`` labels -> ``(H, W, 3)`` uint8 colours (labels outside the palette: black)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("labels must lie in 0..255")
    return _lut(palette)[labels.astype(np.uint8)]


def overlay(image, labels, palette=None, opacity=0.5):
    """Blend ``image`` (H, W, 3) uint8 with the label colours, truncated to uint8."""
    if not 0 < opacity <= 1:
        raise ValueError(f"opacity must lie in (0, 1], got {opacity}")
    image = np.asarray(image)
    colour = colorize(labels, palette)
    if image.shape != colour.shape:
        raise ValueError(f"image {image.shape} and labels {colour.shape[:2]} differ in size")
    blend = image.astype(np.float64) * (1 - opacity) + colour.astype(np.float64) * opacity
    return blend.astype(np.uint8)


def label_image(labels, palette=None):
    """PIL "P" image: pixel values are the labels, the palette the class colours."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("labels must lie in 0..255")
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    img = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.tobytes())
    img.putpalette(_lut(palette).reshape(-1).tolist())
    return img


def save_labels(path, labels, palette=None):
    """Write ``labels`` as a palette PNG (values = trainIds), atomically."""
    img = label_image(labels, palette)
    with atomic_write(path, "wb") as f:
        img.save(f, format="PNG")
    return path


def save_rgb(path, image):
    """Write an ``(H, W, 3)`` uint8 RGB array as PNG, atomically."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {image.shape}")
    img = Image.fromarray(image)
    with atomic_write(path, "wb") as f:
        img.save(f, format="PNG")
    return path
