"""Metrics on hand-made confusion matrices, and the two protocols."""
import math

import numpy as np
import pytest

from ovss_ros.evaluation.datasets import to_protocol
from ovss_ros.evaluation.metrics import ConfusionMatrix, PresenceCounter
from ovss_ros.evaluation.runner import Accumulator


def test_iou_and_accuracy_by_hand():
    gt = np.array([[0, 0, 1, 1], [2, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 0]])
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(gt, pred)
    # class 0: tp 1, gt 2, pred 2 -> 1/3; class 1: tp 2, gt 2, pred 3 -> 2/3; class 2: tp 2, gt 3, pred 2 -> 2/3
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 2 / 3])
    m = cm.metrics(["bg", "a", "b"])
    assert m["mIoU"] == pytest.approx(5 / 9)
    assert m["pixel_accuracy"] == pytest.approx(5 / 7)     # the void pixel is not counted
    assert m["pixels"] == 7 and m["per_class_iou"]["a"] == pytest.approx(2 / 3)


def test_classes_without_ground_truth_do_not_enter_the_mean():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 0, 1]), np.array([0, 2, 1]))     # class 2 predicted but never true
    iou = cm.iou()
    assert math.isnan(iou[2])
    assert cm.metrics()["mIoU"] == pytest.approx((0.5 + 1.0) / 2)


def test_out_of_range_predictions_are_misses_not_false_positives():
    cm = ConfusionMatrix(2, ignore_index=None)
    cm.update(np.array([0, 1, 1]), np.array([-1, 1, 7]))
    np.testing.assert_allclose(cm.iou(), [0.0, 0.5])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        ConfusionMatrix(2).update(np.zeros((2, 2)), np.zeros((2, 3)))


def test_presence_precision_recall():
    p = PresenceCounter()
    p.update([0, 1], [1, 2])
    p.update([3], [3])
    m = p.metrics()
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)


def test_protocols_on_a_dataset_without_background_class():
    gt = np.array([0, 1, 2, 255, 2])       # segmenter space: 0 = unlabelled/other
    pred = np.array([0, 1, 0, 1, 2])
    g, q, n, bg = to_protocol(gt, pred, 2, "standard", background_is_class=False)
    assert n == 2 and not bg
    np.testing.assert_array_equal(g, [255, 0, 1, 255, 1])
    np.testing.assert_array_equal(q, [-1, 0, -1, 0, 1])
    g, q, n, bg = to_protocol(gt, pred, 2, "reference", background_is_class=False)
    assert n == 3 and bg
    np.testing.assert_array_equal(g, [0, 1, 2, 0, 2])       # void scored as background (reference section 7)


def test_accumulator_gives_different_numbers_per_protocol():
    acc = Accumulator(["a", "b"], background_is_class=False)
    acc.update(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [2, 0]]), [0, 1])
    r = acc.results()
    assert r["standard"]["mIoU"] == pytest.approx((1.0 + 0.5) / 2)
    assert r["reference"]["mIoU"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert list(r["reference"]["per_class_iou"]) == ["background", "a", "b"]
    assert r["presence"]["precision"] == 1.0
