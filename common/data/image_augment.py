"""Image-only augmentations on uint8 RGB arrays (``(H, W, 3)``), numpy only.

:func:`photometric_distortion` is the colour jitter of mmsegmentation's
``PhotoMetricDistortion``, the one the official D3Net segmentation training
(sony/ai-research-code ``d3net/semantic-segmentation/image_preprocess.py``)
applies to every training crop. Applied in this order, each step with
probability 1/2:

1. brightness: add ``U(-brightness_delta, brightness_delta)``;
2. contrast, if drawn to come first ("mode 0" below is "mode 1" upstream):
   multiply by ``U(*contrast_range)``;
3. saturation: multiply the HSV saturation by ``U(*saturation_range)``;
4. hue: add ``randint(-hue_delta, hue_delta)`` (upper bound exclusive) to the
   HSV hue, modulo 180;
5. contrast, if drawn to come last.

Every arithmetic step is followed by a clip to 0..255 and a *truncating*
cast to uint8, as upstream does. The HSV colour space is OpenCV's 8-bit
convention (hue 0..179 in steps of 2 degrees, saturation and value 0..255);
:func:`rgb_to_hsv` / :func:`hsv_to_rgb` implement it in numpy so no OpenCV is
needed. They follow OpenCV's formulas with float arithmetic and round to
nearest, so a pixel may differ from ``cv2.cvtColor`` by one level.

Random draws are made in upstream's order with upstream's calls, so a
``numpy.random.RandomState`` gives the same decisions and amounts as the
official code seeded identically; a ``numpy.random.Generator`` (what
:class:`common.data.loader.BatchLoader` hands each sample) is accepted too.
"""
import numpy as np

__all__ = ["rgb_to_hsv", "hsv_to_rgb", "photometric_distortion", "PhotometricDistortion"]


def _randint(rng, low, high):
    """An int in ``[low, high)`` from a RandomState or a Generator."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(low, high))
    return int(rng.randint(low, high))


def _check_rgb(image):
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} "
                         f"{image.shape}")
    return image


def rgb_to_hsv(image):
    """uint8 RGB ``(H, W, 3)`` -> uint8 HSV in OpenCV's 8-bit convention
    (H = hue degrees / 2 in 0..179, S and V in 0..255)."""
    rgb = _check_rgb(image).astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    diff = v - rgb.min(axis=-1)
    safe_v = np.where(v > 0, v, 1.0)
    safe_d = np.where(diff > 0, diff, 1.0)
    s = np.where(v > 0, diff * 255.0 / safe_v, 0.0)
    # OpenCV picks the sector by which channel equals the max, red first, then green.
    h = np.where(v == r, (g - b), np.where(v == g, (b - r) + 2 * diff, (r - g) + 4 * diff))
    h = np.where(diff > 0, h * 30.0 / safe_d, 0.0)
    h = np.floor(h + 0.5)
    h = np.where(h < 0, h + 180.0, h)
    out = np.stack([h, np.floor(s + 0.5), v], axis=-1)
    return np.clip(out, 0, 255).astype(np.uint8)


def hsv_to_rgb(hsv):
    """Inverse of :func:`rgb_to_hsv`: uint8 HSV (OpenCV 8-bit convention) -> uint8 RGB."""
    hsv = np.asarray(hsv)
    if hsv.dtype != np.uint8 or hsv.ndim != 3 or hsv.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) HSV image, got {hsv.dtype} {hsv.shape}")
    h = hsv[..., 0].astype(np.float64) * 2.0 / 60.0  # sector units, 0..6
    s = hsv[..., 1].astype(np.float64) / 255.0
    v = hsv[..., 2].astype(np.float64)
    h = np.mod(h, 6.0)
    sector = np.floor(h).astype(np.int64)
    f = h - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # (r, g, b) per sector 0..5
    r = np.choose(sector, [v, q, p, p, t, v])
    g = np.choose(sector, [t, v, v, q, p, p])
    b = np.choose(sector, [p, p, t, v, v, q])
    out = np.rint(np.stack([r, g, b], axis=-1))
    return np.clip(out, 0, 255).astype(np.uint8)


def _convert(x, alpha=1.0, beta=0.0):
    """``clip(x * alpha + beta, 0, 255)`` truncated to uint8 (upstream's ``convert``)."""
    x = x.astype(np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(x, 0, 255).astype(np.uint8)


def photometric_distortion(image, rng, brightness_delta=32, contrast_range=(0.5, 1.5),
                           saturation_range=(0.5, 1.5), hue_delta=18):
    """Random brightness, contrast, saturation and hue of a uint8 RGB image
    (see the module docstring for the exact recipe). Returns a new uint8 array."""
    image = _check_rgb(image)
    c_lo, c_hi = contrast_range
    s_lo, s_hi = saturation_range

    def contrast(img):
        if _randint(rng, 0, 2):
            return _convert(img, alpha=rng.uniform(c_lo, c_hi))
        return img

    if _randint(rng, 0, 2):
        image = _convert(image, beta=rng.uniform(-brightness_delta, brightness_delta))
    contrast_first = _randint(rng, 0, 2) == 1
    if contrast_first:
        image = contrast(image)
    if _randint(rng, 0, 2):
        hsv = rgb_to_hsv(image)
        hsv[..., 1] = _convert(hsv[..., 1], alpha=rng.uniform(s_lo, s_hi))
        image = hsv_to_rgb(hsv)
    if _randint(rng, 0, 2):
        hsv = rgb_to_hsv(image)
        shift = _randint(rng, -hue_delta, hue_delta)
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + shift) % 180
        image = hsv_to_rgb(hsv)
    if not contrast_first:
        image = contrast(image)
    return np.ascontiguousarray(image)


class PhotometricDistortion:
    """:func:`photometric_distortion` with its settings bound: ``t(image, rng) -> image``."""

    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5),
                 saturation_range=(0.5, 1.5), hue_delta=18):
        self.kwargs = dict(brightness_delta=brightness_delta,
                           contrast_range=tuple(contrast_range),
                           saturation_range=tuple(saturation_range), hue_delta=hue_delta)

    def __call__(self, image, rng):
        return photometric_distortion(image, rng, **self.kwargs)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"PhotometricDistortion({args})"
