"""mIoU metric: hand-computed confusion matrices, ignore label, NaN for absent classes,
and summing over the set versus averaging per image."""
import csv
import json
import math

import numpy as np
import pytest

from d3net_seg.metrics import ConfusionMatrix, confusion_matrix, format_markdown, save_iou_table


def test_hand_computed_three_classes_with_ignore():
    pred = np.array([[0, 0, 1], [1, 2, 2]])
    target = np.array([[0, 1, 1], [1, 2, 255]])  # the last pixel is ignored, whatever predicted
    m = confusion_matrix(pred, target, num_classes=3)
    assert m.tolist() == [[1, 0, 0],   # rows: ground truth, columns: prediction
                          [1, 2, 0],
                          [0, 0, 1]]
    cm = ConfusionMatrix(3).update(pred, target)
    inter, union = cm.intersection_union()
    assert inter.tolist() == [1, 2, 1] and union.tolist() == [2, 3, 1]
    np.testing.assert_allclose(cm.iou(), [1 / 2, 2 / 3, 1.0])
    assert cm.miou() == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 5)
    np.testing.assert_allclose(cm.class_accuracy(), [1.0, 2 / 3, 1.0])
    assert cm.total == 5


def test_ignored_pixels_do_not_count_even_if_predicted_wrong():
    target = np.full((4, 4), 255)
    target[0, 0] = 1
    pred = np.zeros((4, 4), int)
    pred[0, 0] = 1
    cm = ConfusionMatrix(2).update(pred, target)
    assert cm.total == 1 and cm.miou() == 1.0  # class 0 predicted only on ignored pixels
    assert math.isnan(cm.iou()[0])


def test_absent_class_is_nan_and_excluded_predicted_only_class_counts_zero():
    target = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])  # class 2 predicted but not in GT; class 3 nowhere
    cm = ConfusionMatrix(4).update(pred, target)
    iou = cm.iou()
    assert iou[:3].tolist() == [0.5, 1.0, 0.0] and math.isnan(iou[3])
    assert cm.miou() == pytest.approx(0.5)  # (0.5 + 1 + 0) / 3: NaN left out, 0 kept
    assert math.isnan(cm.class_accuracy()[2]) and math.isnan(cm.class_accuracy()[3])
    empty = ConfusionMatrix(4)
    assert math.isnan(empty.miou()) and math.isnan(empty.pixel_accuracy())


def test_sum_over_set_differs_from_per_image_mean():
    # image A: 9 pixels of class 0 and one of class 1, everything predicted as 0
    ta, pa = np.array([0] * 9 + [1]), np.zeros(10, int)
    # image B: all class 1, all right
    tb, pb = np.ones(10, int), np.ones(10, int)
    a = ConfusionMatrix(2).update(pa, ta)
    b = ConfusionMatrix(2).update(pb, tb)
    assert a.miou() == pytest.approx((0.9 + 0.0) / 2)  # 0.45
    assert b.miou() == pytest.approx(1.0)  # class 0 absent -> NaN, not averaged
    per_image = (a.miou() + b.miou()) / 2  # 0.725
    total = ConfusionMatrix(2).update(pa, ta).update(pb, tb)
    # summed: class 0: 9 / (9 + 1) = 0.9; class 1: 10 / (10 + 1) = 0.909...
    np.testing.assert_allclose(total.iou(), [0.9, 10 / 11])
    assert total.miou() == pytest.approx((0.9 + 10 / 11) / 2)
    assert abs(total.miou() - per_image) > 0.15
    # a batch update and a merge give the same totals as image by image
    batch = ConfusionMatrix(2).update(np.stack([pa, pb]), np.stack([ta, tb]))
    merged = ConfusionMatrix(2).merge(a).merge(b)
    assert np.array_equal(batch.matrix, total.matrix) and np.array_equal(merged.matrix,
                                                                         total.matrix)


def test_bincount_matches_bruteforce_on_random_data():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 19, (3, 40, 50))
    target[rng.random(target.shape) < 0.1] = 255
    pred = rng.integers(0, 19, target.shape)
    brute = np.zeros((19, 19), np.int64)
    for t, p in zip(target.ravel(), pred.ravel()):
        if t != 255:
            brute[t, p] += 1
    assert np.array_equal(confusion_matrix(pred, target), brute)
    cm = ConfusionMatrix().update(pred.astype(np.uint8), target.astype(np.uint8))
    assert np.array_equal(cm.matrix, brute)


@pytest.mark.parametrize("pred,target,match", [
    (np.array([0, 1]), np.array([0, 1, 1]), "shape"),
    (np.array([0, 5]), np.array([0, 1]), "prediction holds class id 5"),
    (np.array([0, 1]), np.array([0, 7]), "label holds class id 7"),
    (np.array([0, 1]), np.array([-1, 1]), "label holds class id -1"),
    (np.array([0.0, 1.0]), np.array([0, 1]), "integer"),
])
def test_bad_inputs_are_errors(pred, target, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(pred, target, num_classes=3)


def test_tables_written(tmp_path):
    cm = ConfusionMatrix(3).update(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 255]))
    names = ("road", "sidewalk", "building")
    csv_path, md_path, json_path = save_iou_table(cm, tmp_path, names, extra={"model": "x"})
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["class"] for r in rows] == ["road", "sidewalk", "building", "mean"]
    assert float(rows[0]["iou"]) == pytest.approx(0.5) and rows[2]["iou"] == "nan"
    assert float(rows[3]["iou"]) == pytest.approx(0.5)  # (0.5 + 0.5) / 2, building excluded
    md = md_path.read_text()
    assert "| 2 | building | n/a |" in md and "mIoU 50.00 %" in md
    assert md == format_markdown(cm, names)
    data = json.loads(json_path.read_text())
    assert data["mIoU"] == pytest.approx(0.5) and data["iou"][2] is None
    assert data["confusion_matrix"] == cm.matrix.tolist() and data["model"] == "x"
