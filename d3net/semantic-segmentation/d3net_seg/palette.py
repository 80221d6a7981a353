"""Colouring and writing segmentation results.

* :func:`colorize` / :func:`overlay` - the official visualisation: ``(1 - opacity) * image +
  opacity * palette colour of the label``, truncated to uint8 (opacity 0.5 by default, as
  officially; then it equals ``(image + colour) // 2`` exactly). Works in any channel order
  as long as image and palette agree (the official code works in BGR, we work in RGB).
* :func:`label_image` / :func:`save_labels` - a palette ("P" mode) PNG whose pixel values are
  the trainIds (0..18; 255 = ignore, shown black) and whose palette is the Cityscapes one, so
  the same file is a valid trainId label map and a coloured picture.
* :func:`save_label_ids` - the same labels as Cityscapes labelIds (0..33, the ids of the
  official benchmark and of ``*_gtFine_labelIds.png``), a palette PNG coloured by id.
* :func:`save_rgb` - an RGB PNG.
* :func:`class_names`, :func:`present_classes`, :func:`draw_legend`, :func:`with_legend`,
  :func:`titled_row` - the class legend (a colour swatch and the name of each class present)
  under an overlay, and titled panels for figures.

Files are written atomically (:func:`common.fileio.atomic_write`).
"""
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.data.cityscapes import LABELS, NUM_CLASSES, PALETTE, TRAIN_CLASSES
from common.data.cityscapes import train_ids_to_label_ids
from common.fileio import atomic_write

# Legend / title layout in pixels.
SWATCH = 12
ROW_HEIGHT = 18
MARGIN = 6
ENTRY_GAP = 14
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


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


def save_label_ids(path, train_ids):
    """Write trainIds ``(H, W)`` as Cityscapes labelIds (trainId 255 -> 0, unlabeled) in a
    palette PNG coloured with the Cityscapes colour of each id, atomically."""
    ids = train_ids_to_label_ids(train_ids)
    colours = np.zeros((256, 3), dtype=np.uint8)
    for label in LABELS:
        if label.id >= 0:
            colours[label.id] = label.color
    return save_labels(path, ids, colours)


def class_names(num_classes):
    """Names of the trainIds: the Cityscapes classes for 19 classes, else ``class <n>``."""
    if num_classes == NUM_CLASSES:
        return list(TRAIN_CLASSES)
    return [f"class {c}" for c in range(num_classes)]


def present_classes(labels, names, palette):
    """``[(trainId, name, (r, g, b)), ...]`` of the classes occurring in ``labels``, by id
    (values outside ``names`` / ``palette``, e.g. 255 = ignore, are left out)."""
    palette = np.asarray(palette)
    ids = np.unique(np.asarray(labels))
    return [(int(c), names[c], tuple(int(v) for v in palette[c]))
            for c in ids if c < min(len(names), len(palette))]


def _font():
    return ImageFont.load_default()


def _text_width(draw, text, font):
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def draw_legend(classes, width):
    """uint8 ``(h, w, 3)`` legend: for each ``(id, name, colour)`` of ``classes`` a swatch
    in exactly that colour and the name, in rows wrapped at ``width`` pixels (``w`` grows
    when one entry is wider)."""
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    entries = [(name, colour, SWATCH + 4 + _text_width(probe, name, font))
               for _, name, colour in classes]
    width = max([width] + [w + 2 * MARGIN for _, _, w in entries])
    rows, x = [[]], MARGIN
    for entry in entries:
        if rows[-1] and x + entry[2] > width - MARGIN:
            rows.append([])
            x = MARGIN
        rows[-1].append((x, entry))
        x += entry[2] + ENTRY_GAP
    canvas = Image.new("RGB", (width, len(rows) * ROW_HEIGHT + MARGIN), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        top = MARGIN // 2 + r * ROW_HEIGHT + (ROW_HEIGHT - SWATCH) // 2
        for x, (name, colour, _) in row:
            draw.rectangle([x, top, x + SWATCH - 1, top + SWATCH - 1], fill=colour)
            draw.text((x + SWATCH + 4, top - 1), name, fill=TEXT, font=font)
    return np.asarray(canvas)


def _stack(top, bottom):
    """``top`` above ``bottom``, both left-aligned on a white canvas of the wider width."""
    width = max(top.shape[1], bottom.shape[1])
    out = np.empty((top.shape[0] + bottom.shape[0], width, 3), dtype=np.uint8)
    out[:] = BACKGROUND
    out[:top.shape[0], :top.shape[1]] = top
    out[top.shape[0]:, :bottom.shape[1]] = bottom
    return out


def with_legend(image, classes):
    """``image`` (H, W, 3) with :func:`draw_legend` of ``classes`` below it; the image keeps
    its pixels in the top-left ``H x W`` corner."""
    image = np.asarray(image, dtype=np.uint8)
    return _stack(image, draw_legend(classes, image.shape[1]))


def titled_row(panels, gap=4):
    """``[(title, image), ...]`` side by side, each with its title above it, ``gap``
    white pixels apart."""
    font = _font()
    height = max(img.shape[0] for _, img in panels)
    columns = []
    for i, (title, img) in enumerate(panels):
        head = Image.new("RGB", (img.shape[1], ROW_HEIGHT), BACKGROUND)
        ImageDraw.Draw(head).text((2, 2), title, fill=TEXT, font=font)
        column = _stack(np.asarray(head), np.asarray(img, dtype=np.uint8))
        pad = np.full((ROW_HEIGHT + height - column.shape[0], column.shape[1], 3),
                      BACKGROUND, np.uint8)
        columns.append(np.concatenate([column, pad], axis=0))
        if i < len(panels) - 1:
            columns.append(np.full((ROW_HEIGHT + height, gap, 3), BACKGROUND, np.uint8))
    return np.concatenate(columns, axis=1)
