"""Dice/IoU on hand-made masks whose scores are known by counting pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from advseg.metrics import compare_clean_and_attacked, overlap_scores, relative_drop, summarize

H = W = 4


def blank(images: int, classes: int) -> np.ndarray:
    return np.zeros((images, classes, H, W), dtype=np.uint8)


def hand_made():
    """4 images x 2 classes; expected per-image Dice / IoU written next to each case."""
    truth, predicted = blank(4, 2), blank(4, 2)
    # image 0, class 0: truth 3 pixels, prediction 3 pixels, 2 shared -> Dice 2*2/(3+3), IoU 2/4
    truth[0, 0, 0, 0:3] = 1
    predicted[0, 0, 0, 1:4] = 1
    # image 0, class 1: empty truth, something predicted -> NaN (not counted)
    predicted[0, 1, 3, :] = 1
    # image 1, class 0: perfect -> 1; class 1: truth but nothing predicted -> 0
    truth[1, 0, 1:3, 1:3] = 1
    predicted[1, 0, 1:3, 1:3] = 1
    truth[1, 1, 0, 0] = 1
    # image 2, class 0: disjoint -> 0; class 1: perfect -> 1
    truth[2, 0, 0, :] = 1
    predicted[2, 0, 3, :] = 1
    truth[2, 1, :, 0] = 1
    predicted[2, 1, :, 0] = 1
    # image 3: no truth at all, a false positive in class 0 -> NaN, NaN
    predicted[3, 0, 2, 2] = 1
    dice = np.array([[2 * 2 / (3 + 3), np.nan], [1.0, 0.0], [0.0, 1.0], [np.nan, np.nan]])
    iou = np.array([[2 / 4, np.nan], [1.0, 0.0], [0.0, 1.0], [np.nan, np.nan]])
    return predicted, truth, dice, iou


def test_overlap_scores_per_image_and_class():
    predicted, truth, dice, iou = hand_made()
    scores = overlap_scores(predicted, truth)
    np.testing.assert_allclose(scores["dice"], dice, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(scores["iou"], iou, rtol=0, atol=1e-12, equal_nan=True)


def test_perfect_prediction_scores_one():
    truth = blank(2, 3)
    truth[0, 0, :2] = 1
    truth[0, 2, 3, 3] = 1
    truth[1, 1] = 1
    truth[1, 2, 1:3, 1:3] = 1
    summary = summarize(truth.copy(), truth, ["a", "b", "c"])
    assert summary["dice"] == 1.0 and summary["iou"] == 1.0
    assert summary["dice_per_class"] == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_disjoint_prediction_scores_zero():
    truth, predicted = blank(1, 1), blank(1, 1)
    truth[0, 0, :2] = 1
    predicted[0, 0, 2:] = 1
    summary = summarize(predicted, truth, ["a"])
    assert summary["dice"] == 0.0 and summary["iou"] == 0.0


def test_empty_prediction_with_truth_scores_zero():
    truth = blank(1, 1)
    truth[0, 0, 1, 1] = 1
    scores = overlap_scores(blank(1, 1), truth)
    assert scores["dice"][0, 0] == 0.0 and scores["iou"][0, 0] == 0.0


def test_summarize_means_over_slices_with_the_class():
    predicted, truth, _, _ = hand_made()
    summary = summarize(predicted, truth, ["gm", "wm"])
    # class gm: images 0, 1, 2 (image 3 has no truth); class wm: images 1, 2 (image 0 empty)
    gm_dice, wm_dice = (2 / 3 + 1 + 0) / 3, (0 + 1) / 2
    gm_iou, wm_iou = (0.5 + 1 + 0) / 3, (0 + 1) / 2
    assert summary["dice_per_class"] == pytest.approx({"gm": gm_dice, "wm": wm_dice}, abs=1e-12)
    assert summary["iou_per_class"] == pytest.approx({"gm": gm_iou, "wm": wm_iou}, abs=1e-12)
    assert summary["dice"] == pytest.approx((gm_dice + wm_dice) / 2, abs=1e-12)
    assert summary["iou"] == pytest.approx((gm_iou + wm_iou) / 2, abs=1e-12)
    assert summary["n_images"] == 3  # image 3 has no truth in any class


def test_a_class_absent_everywhere_is_nan_and_left_out_of_the_overall_mean():
    truth, predicted = blank(2, 2), blank(2, 2)
    truth[:, 0, :2] = 1
    predicted[:, 0, :1] = 1  # Dice 2*4/(4+8) = 2/3 on each image
    predicted[0, 1, 0, 0] = 1  # false positive in the never-present class
    summary = summarize(predicted, truth, ["a", "b"])
    assert summary["dice_per_class"]["a"] == pytest.approx(2 / 3, abs=1e-12)
    assert math.isnan(summary["dice_per_class"]["b"])
    assert summary["dice"] == pytest.approx(2 / 3, abs=1e-12)


def test_summary_of_all_empty_truth_is_nan():
    predicted = blank(2, 1)
    predicted[0, 0, 0, 0] = 1
    summary = summarize(predicted, blank(2, 1), ["a"])
    assert math.isnan(summary["dice"]) and math.isnan(summary["iou"])
    assert summary["n_images"] == 0


def test_boolean_and_uint8_inputs_agree():
    predicted, truth, _, _ = hand_made()
    a = overlap_scores(predicted, truth)
    b = overlap_scores(predicted.astype(bool), truth.astype(bool))
    np.testing.assert_array_equal(a["dice"], b["dice"])


@pytest.mark.parametrize(("clean", "attacked", "expected"), [
    (0.8, 0.6, 0.25),
    (0.5, 0.5, 0.0),
    (0.5, 0.0, 1.0),
    (0.4, 0.5, -0.25),  # the "attack" helped
])
def test_relative_drop(clean, attacked, expected):
    assert relative_drop(clean, attacked) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("clean", [0.0, -0.1, float("nan")])
def test_relative_drop_without_a_clean_score_is_nan(clean):
    assert math.isnan(relative_drop(clean, 0.3))


def test_compare_clean_and_attacked_reports_the_studys_diff():
    truth = np.zeros((2, 2, 4, 4), dtype=np.uint8)
    truth[:, :, :2, :2] = 1                                  # 4 pixels of each class on each slice
    clean = truth.copy()                                     # perfect before the attack
    attacked = truth.copy()
    attacked[:, 0, 0, :2] = 0                                # class a loses 2 of its 4 pixels
    scores = compare_clean_and_attacked(clean, attacked, truth, ["a", "b"])
    assert scores["clean_dice"] == 1.0
    assert scores["adv_dice_per_class"] == {"a": pytest.approx(2 * 2 / (2 + 4)), "b": 1.0}
    assert scores["diff_per_class"]["a"] == pytest.approx(1 - 2 * 2 / (2 + 4))
    assert scores["diff"] == pytest.approx((1.0 - scores["adv_dice"]) / 1.0)
    assert scores["adv_iou"] == pytest.approx((0.5 + 1.0) / 2)
    assert scores["n_images"] == 2
