import numpy as np
import pytest

from common.data.image_augment import (PhotometricDistortion, hsv_to_rgb, photometric_distortion,
                                       rgb_to_hsv)


def _px(*rgb):
    return np.array([[rgb]], dtype=np.uint8)


def test_hsv_known_colours_opencv_convention():
    # hue is degrees / 2 (0..179), saturation and value 0..255, as OpenCV's 8-bit HSV
    cases = {(255, 0, 0): (0, 255, 255), (0, 255, 0): (60, 255, 255),
             (0, 0, 255): (120, 255, 255), (255, 255, 0): (30, 255, 255),
             (255, 0, 255): (150, 255, 255), (128, 128, 128): (0, 0, 128),
             (0, 0, 0): (0, 0, 0)}
    for rgb, hsv in cases.items():
        got = tuple(int(v) for v in rgb_to_hsv(_px(*rgb))[0, 0])
        assert got == hsv, (rgb, got, hsv)
    # a hue just below 0 degrees wraps to the top of the range
    assert rgb_to_hsv(_px(255, 0, 40))[0, 0, 0] == 180 - round(30 * 40 / 255)


def test_hsv_round_trip_within_quantisation():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    back = hsv_to_rgb(rgb_to_hsv(img))
    err = np.abs(back.astype(int) - img.astype(int))
    # 180 hue levels for 360 degrees (and S rounded to 8 bits) cost a few levels at most
    assert err.max() <= 6 and err.mean() < 1.0
    grey = np.full((2, 2, 3), 77, np.uint8)
    assert np.array_equal(hsv_to_rgb(rgb_to_hsv(grey)), grey)


class _Scripted:
    """A RandomState stand-in returning scripted draws, to pin each branch."""

    def __init__(self, ints, floats):
        self.ints, self.floats, self.calls = list(ints), list(floats), []

    def randint(self, low, high):
        self.calls.append(("randint", low, high))
        return self.ints.pop(0)

    def uniform(self, low, high):
        self.calls.append(("uniform", low, high))
        return self.floats.pop(0)


def test_brightness_only_truncates_and_clips():
    img = np.array([[[10, 100, 250]]], np.uint8)
    rng = _Scripted(ints=[1, 0, 0, 0, 0], floats=[20.7])
    out = photometric_distortion(img, rng)
    assert out.tolist() == [[[30, 120, 255]]]  # +20.7 truncated, clipped at 255
    assert rng.calls == [("randint", 0, 2), ("uniform", -32, 32), ("randint", 0, 2),
                         ("randint", 0, 2), ("randint", 0, 2), ("randint", 0, 2)]


def test_contrast_first_or_last_draw_order():
    img = np.array([[[100, 50, 200]]], np.uint8)
    # mode 1 (contrast first): brightness off, mode=1, contrast on (alpha 0.5), sat off, hue off
    rng = _Scripted(ints=[0, 1, 1, 0, 0], floats=[0.5])
    assert photometric_distortion(img, rng).tolist() == [[[50, 25, 100]]]
    assert [c[0] for c in rng.calls] == ["randint", "randint", "randint", "uniform",
                                         "randint", "randint"]
    # mode 0 (contrast last): the contrast coin is drawn after hue
    rng = _Scripted(ints=[0, 0, 0, 0, 1], floats=[1.5])
    assert photometric_distortion(img, rng).tolist() == [[[150, 75, 255]]]
    assert rng.calls[-1] == ("uniform", 0.5, 1.5)


def test_hue_shift_rotates_primary_colours():
    img = np.array([[[255, 0, 0], [0, 255, 0]]], np.uint8)
    # brightness off, mode 0, saturation off, hue on (+60 levels = +120 degrees), contrast off
    rng = _Scripted(ints=[0, 0, 0, 1, 60, 0], floats=[])
    out = photometric_distortion(img, rng, hue_delta=90)
    assert out.tolist() == [[[0, 255, 0], [0, 0, 255]]]
    assert ("randint", -90, 90) in rng.calls


def test_saturation_zero_gives_grey():
    img = np.array([[[200, 40, 90]]], np.uint8)
    rng = _Scripted(ints=[0, 0, 1, 0, 0], floats=[0.0])
    out = photometric_distortion(img, rng, saturation_range=(0.0, 0.0))
    assert out.tolist() == [[[200, 200, 200]]]


@pytest.mark.parametrize("make_rng", [np.random.RandomState, np.random.default_rng])
def test_random_use_deterministic_and_in_range(make_rng):
    img = np.random.default_rng(1).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    t = PhotometricDistortion()
    a = [t(img, make_rng(s)) for s in range(12)]
    b = [t(img, make_rng(s)) for s in range(12)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(x.dtype == np.uint8 and x.shape == img.shape for x in a)
    assert sum(not np.array_equal(x, img) for x in a) >= 10  # it does distort
    assert np.array_equal(img, np.random.default_rng(1).integers(0, 256, (16, 24, 3),
                                                                   dtype=np.uint8))  # no in-place


def test_rejects_non_uint8_rgb():
    with pytest.raises(ValueError):
        photometric_distortion(np.zeros((4, 4, 3), np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError):
        rgb_to_hsv(np.zeros((4, 4), np.uint8))
