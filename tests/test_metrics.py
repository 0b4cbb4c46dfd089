"""Metrics on hand-made masks whose scores are known by counting pixels, and against MONAI."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from advseg import metrics
from advseg import records
from advseg.metrics import (PROTOCOLS, compare_scores, relative_drop, slice_scores, summarize, surface_scores,
                            unit_scores)

H = W = 4
S = 1e-5  # MONAI DiceLoss's smoothing, in the hand computations
NAN = np.nan


def blank(images: int, classes: int, size: int = H) -> np.ndarray:
    return np.zeros((images, classes, size, size), dtype=np.uint8)


def hand_made():
    """4 images x 2 classes; the expected per-image scores are written next to each case."""
    truth, predicted = blank(4, 2), blank(4, 2)
    # image 0, class 0: truth 3 pixels, prediction 3 pixels, 2 shared -> Dice 2*2/(3+3), IoU 2/4
    truth[0, 0, 0, 0:3] = 1
    predicted[0, 0, 0, 1:4] = 1
    # image 0, class 1: empty truth, 4 pixels predicted -> NaN (not counted); study: S/(4+S)
    predicted[0, 1, 3, :] = 1
    # image 1, class 0: perfect -> 1; class 1: 1 true pixel, nothing predicted -> 0
    truth[1, 0, 1:3, 1:3] = 1
    predicted[1, 0, 1:3, 1:3] = 1
    truth[1, 1, 0, 0] = 1
    # image 2, class 0: disjoint rows of 4 -> 0; class 1: perfect -> 1
    truth[2, 0, 0, :] = 1
    predicted[2, 0, 3, :] = 1
    truth[2, 1, :, 0] = 1
    predicted[2, 1, :, 0] = 1
    # image 3: no truth at all, a false positive of 1 pixel in class 0 -> NaN, NaN
    predicted[3, 0, 2, 2] = 1
    dice = np.array([[2 * 2 / (3 + 3), NAN], [1.0, 0.0], [0.0, 1.0], [NAN, NAN]])
    iou = np.array([[2 / 4, NAN], [1.0, 0.0], [0.0, 1.0], [NAN, NAN]])
    dice_study = np.array([
        ((2 * 2 + S) / (3 + 3 + S) + S / (0 + 4 + S)) / 2,   # FP on an absent class: ~0
        (1.0 + S / (1 + 0 + S)) / 2,                          # missed 1-pixel organ: ~0
        (S / (4 + 4 + S) + 1.0) / 2,
        (S / (0 + 1 + S) + 1.0) / 2,                          # empty vs empty: S/S = 1
    ])
    return predicted, truth, dice, iou, dice_study


# --- Dice, IoU and the study's Dice per slice ----------------------------------------------

def test_slice_scores_per_image_and_class():
    predicted, truth, dice, iou, dice_study = hand_made()
    scores = slice_scores(predicted, truth)
    np.testing.assert_allclose(scores["dice"], dice, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(scores["iou"], iou, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(scores["dice_study"], dice_study, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(scores["has_organ"], [True, True, True, False])
    assert scores["dice_study"][0] == pytest.approx(1 / 3, abs=1e-5)  # 2/3 and ~0
    assert scores["dice_study"][3] == pytest.approx(0.5, abs=1e-5)    # ~0 and exactly 1


def test_study_dice_of_absent_classes_by_hand():
    truth, predicted = blank(1, 3), blank(1, 3)
    truth[0, 0, 0, :] = 1           # class 0: 4 true pixels, 2 of them predicted
    predicted[0, 0, 0, :2] = 1
    predicted[0, 2, 3, 3] = 1       # class 1: absent from both; class 2: absent, 1 pixel predicted
    expected = ((2 * 2 + S) / (4 + 2 + S) + S / S + S / (1 + S)) / 3
    assert slice_scores(predicted, truth)["dice_study"][0] == pytest.approx(expected, abs=1e-15)
    assert expected == pytest.approx((2 / 3 + 1 + 0) / 3, abs=1e-5)


def random_masks(images: int, classes: int = 3, size: int = 12, seed: int = 0):
    """Random predictions and truths with absent classes, empty slices and false positives."""
    rng = np.random.default_rng(seed)
    truth = rng.random((images, classes, size, size)) > 0.7
    predicted = rng.random((images, classes, size, size)) > 0.7
    truth[::3, 1] = False                 # absent class, sometimes predicted
    truth[1::4] = False                   # slices without any organ
    predicted[::5, 2] = False             # missed classes
    predicted[2::7] = truth[2::7]         # perfect slices
    truth[3::6, 0] = predicted[3::6, 0] = False  # empty vs empty
    return predicted, truth


def test_study_dice_is_one_minus_monai_dice_loss_per_slice():
    from monai.losses import DiceLoss

    predicted, truth = random_masks(24)
    ours = slice_scores(predicted, truth)["dice_study"]
    for i in range(len(truth)):  # the study's own call, one slice at a time
        loss = DiceLoss()(torch.from_numpy(truth[i:i + 1]).double(), torch.from_numpy(predicted[i:i + 1]).double())
        assert ours[i] == pytest.approx(1 - loss.item(), abs=1e-12), i


def test_dice_and_iou_of_extreme_cases():
    truth = blank(3, 1)
    truth[:, 0, :2] = 1                   # 8 true pixels on each slice
    predicted = truth.copy()
    predicted[1] = 0                      # slice 1: nothing predicted -> 0
    predicted[2, 0] = 1 - truth[2, 0]     # slice 2: disjoint -> 0
    scores = slice_scores(predicted, truth)
    np.testing.assert_array_equal(scores["dice"][:, 0], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(scores["iou"][:, 0], [1.0, 0.0, 0.0])


def test_boolean_and_uint8_inputs_agree():
    predicted, truth, *_ = hand_made()
    a = slice_scores(predicted, truth)
    b = slice_scores(predicted.astype(bool), truth.astype(bool))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("bad", ["shape", "dims", "probabilities"])
def test_bad_masks_are_errors(bad):
    predicted, truth, *_ = hand_made()
    if bad == "shape":
        predicted, match = predicted[:, :1], "same|both"
    elif bad == "dims":
        predicted, truth, match = predicted[0], truth[0], "slices, classes"
    else:
        predicted, match = predicted * 0.4, "binary"
    with pytest.raises(ValueError, match=match):
        slice_scores(predicted, truth)


# --- HD95 and NSD ---------------------------------------------------------------------------

def one_class(size: int = 8):
    return blank(1, 1, size), blank(1, 1, size)


def surface(predicted, truth, tolerance=metrics.NSD_TOLERANCE_PX):
    hd95, nsd = surface_scores(predicted, truth, tolerance)
    return float(hd95[0, 0]), float(nsd[0, 0])


@pytest.mark.parametrize(("column", "hd95", "nsd"), [(0, 0.0, 1.0), (2, 2.0, 1.0), (3, 3.0, 0.0)])
def test_hd95_and_nsd_of_two_pixels(column, hd95, nsd):
    """One true pixel at (0, 0), one predicted at (0, column): both distances are `column`."""
    predicted, truth = one_class()
    truth[0, 0, 0, 0] = 1
    predicted[0, 0, 0, column] = 1
    assert surface(predicted, truth) == pytest.approx((hd95, nsd), abs=1e-12)


def test_hd95_interpolates_the_95th_percentile():
    predicted, truth = one_class()
    truth[0, 0, 0, :4] = 1        # a line: every pixel is an edge
    predicted[0, 0, 0, 0] = 1
    # prediction -> truth: [0]; truth -> prediction: [0, 1, 2, 3], 95th percentile at
    # position 3 * 0.95 = 2.85 -> 2 + 0.85 * (3 - 2)
    # NSD at 2 px: 1 of 1 predicted and 3 of 4 true edge pixels within 2 -> 4 / 5
    assert surface(predicted, truth) == pytest.approx((2.85, 0.8), abs=1e-12)


def test_interior_pixels_are_not_edges():
    predicted, truth = one_class()
    truth[0, 0, 0:3, 0:3] = 1     # 3x3 blocks: 8 edge pixels each, the centre is interior
    predicted[0, 0, 0:3, 3:6] = 1
    # truth edges -> nearest predicted edge: column 2: 1, 1, 1; column 1 (top, bottom): 2, 2;
    # column 0: 3, 3, 3. Sorted [1,1,1,2,2,3,3,3]: position 7 * 0.95 = 6.65 -> 3. Symmetric.
    # NSD: 5 of 8 within 2 px on each side -> 10 / 16 (with the centres it would be 12 / 18)
    assert surface(predicted, truth) == pytest.approx((3.0, 10 / 16), abs=1e-12)


def test_pixels_on_the_image_border_are_edges():
    predicted, truth = one_class(4)
    truth[:] = 1                  # the whole image: its edge is the ring of 12 border pixels
    predicted[0, 0, 1:3, 1:3] = 1  # a 2x2 block in the middle: 4 edge pixels, each 1 from the ring
    # ring -> block: 8 side pixels at 1, 4 corners at sqrt(2); position 11 * 0.95 = 10.45 -> sqrt(2)
    assert surface(predicted, truth) == pytest.approx((math.sqrt(2), 1.0), abs=1e-12)
    assert surface(predicted, truth, tolerance=1.0) == pytest.approx((math.sqrt(2), 12 / 16), abs=1e-12)


def test_empty_masks_give_nan_or_zero():
    truth, predicted = blank(3, 1), blank(3, 1)
    truth[0, 0, 1, 1] = 1         # slice 0: organ missed
    predicted[1, 0, 1, 1] = 1     # slice 1: organ invented; slice 2: both empty
    hd95, nsd = surface_scores(predicted, truth)
    assert np.isnan(hd95).all()
    np.testing.assert_array_equal(nsd[:, 0], [0.0, NAN, NAN])


def monai_surface(predicted: np.ndarray, truth: np.ndarray, tolerance: float):
    from monai.metrics import HausdorffDistanceMetric, SurfaceDiceMetric

    p, t = torch.from_numpy(predicted).float(), torch.from_numpy(truth).float()
    classes = truth.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about every empty mask
        hd95 = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(p, t)
        nsd = SurfaceDiceMetric([tolerance] * classes, include_background=True, reduction="none")(p, t)
    return hd95.numpy().astype(float), nsd.numpy().astype(float)


def blobs_and_noise(images: int, size: int, seed: int):
    """Discs (some cut by the image border), speckle, and empty classes."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    truth, predicted = blank(images, 3, size).astype(bool), blank(images, 3, size).astype(bool)
    for masks in (truth, predicted):
        for n in range(images):
            for c in range(3):
                cy, cx = rng.integers(-2, size + 2, 2)
                masks[n, c] = (rows - cy) ** 2 + (cols - cx) ** 2 < rng.integers(1, size // 2) ** 2
    predicted[::4, 1] |= rng.random((len(predicted[::4]), size, size)) > 0.9
    predicted[1::5, 2] = False
    truth[2::5, 0] = False
    return predicted, truth


@pytest.mark.parametrize("tolerance", [1.0, 2.0, 3.5])
def test_hd95_and_nsd_equal_monai(tolerance):
    predicted, truth = blobs_and_noise(12, 20, seed=int(tolerance * 10))
    hd95, nsd = surface_scores(predicted, truth, tolerance)
    monai_hd95, monai_nsd = monai_surface(predicted, truth, tolerance)
    truth_any = truth.any((2, 3))
    both = truth_any & predicted.any((2, 3))
    assert both.sum() >= 20 and (truth_any & ~both).any() and (~truth_any).any()
    np.testing.assert_allclose(hd95[both], monai_hd95[both], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(nsd[truth_any], monai_nsd[truth_any], rtol=0, atol=1e-6)
    # where MONAI gives inf (one side empty) or NaN (both empty), ours is NaN
    assert not np.isfinite(monai_hd95[~both]).any() and np.isnan(hd95[~both]).all()
    assert np.isnan(nsd[~truth_any]).all()


def test_large_edge_sets_use_a_kd_tree_with_the_same_result(monkeypatch):
    predicted, truth = blobs_and_noise(6, 20, seed=7)
    brute = surface_scores(predicted, truth)
    monkeypatch.setattr(metrics, "_BRUTE_FORCE_PAIRS", 0)
    tree = surface_scores(predicted, truth)
    for a, b in zip(brute, tree):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12, equal_nan=True)


def test_surface_scores_of_many_slices_span_edge_chunks(monkeypatch):
    predicted, truth = blobs_and_noise(7, 16, seed=3)
    whole = surface_scores(predicted, truth)
    monkeypatch.setattr(metrics, "_EDGE_CHUNK", 2)
    chunked = surface_scores(predicted, truth)
    for a, b in zip(whole, chunked):
        np.testing.assert_array_equal(a, b)


# --- per-unit aggregation, protocols and summaries -----------------------------------------

def test_unit_scores_by_hand():
    predicted, truth, dice, _, dice_study = hand_made()
    scores = slice_scores(predicted, truth)
    units = np.array([7, 7, 3, 3])           # images 0, 1 form unit 7; images 2, 3 unit 3
    per_unit = unit_scores(scores, units)
    assert per_unit.units.tolist() == [3, 7]
    # unit 3: class 0 image 2 -> 0, class 1 image 2 -> 1 (image 3 has no truth); unit 7: class 0 (2/3 + 1) / 2,
    # class 1 image 1 -> 0 (image 0's class 1 is absent)
    np.testing.assert_allclose(per_unit.per_class["dice"], [[0.0, 1.0], [(2 / 3 + 1) / 2, 0.0]], atol=1e-12)
    np.testing.assert_allclose(per_unit.score("dice"), [0.5, ((2 / 3 + 1) / 2 + 0) / 2], atol=1e-12)
    # the study's Dice: unit 3 has one slice with an organ (image 2), unit 7 two
    np.testing.assert_allclose(per_unit.score("dice_study"), [dice_study[2], dice_study[:2].mean()], atol=1e-12)
    assert PROTOCOLS == ("dice", "dice_study")


def test_a_unit_without_an_organ_has_no_score():
    predicted, truth, *_ = hand_made()
    per_unit = unit_scores(slice_scores(predicted, truth), np.array([0, 0, 0, 1]))   # image 3: no truth
    assert np.isnan(per_unit.score("dice")[1]) and np.isnan(per_unit.score("dice_study")[1])
    with pytest.raises(ValueError, match="unknown metric 'dice_macro'"):
        per_unit.score("dice_macro")
    with pytest.raises(ValueError, match="3 unit labels for 4 slices"):
        unit_scores(slice_scores(predicted, truth), np.array([0, 0, 1]))


def test_copying_slices_within_their_unit_changes_no_unit_score():
    predicted, truth, *_ = hand_made()
    units = np.array([0, 0, 1, 1])
    once = unit_scores(slice_scores(predicted, truth), units)
    thrice = unit_scores(slice_scores(np.repeat(predicted, 3, 0), np.repeat(truth, 3, 0)), np.repeat(units, 3))
    for metric in ("dice", "dice_study", "iou", "hd95", "nsd"):
        np.testing.assert_allclose(once.score(metric), thrice.score(metric), rtol=1e-12)   # up to rounding


def test_summary_is_the_mean_over_units():
    predicted, truth, *_, dice_study = hand_made()
    units = np.array([7, 7, 3, 3])
    summary = summarize(predicted, truth, ["gm", "wm"], units)
    assert summary["dice"] == pytest.approx((0.5 + ((2 / 3 + 1) / 2) / 2) / 2, abs=1e-12)
    assert summary["dice_study"] == pytest.approx((dice_study[2] + dice_study[:2].mean()) / 2, abs=1e-12)
    assert summary["dice_per_class"] == pytest.approx({"gm": (0 + (2 / 3 + 1) / 2) / 2, "wm": (1 + 0) / 2})
    assert summary["n_units"] == 2 and summary["n_images"] == 4


def test_summarize_by_hand():
    predicted, truth, *_, dice_study = hand_made()
    summary = summarize(predicted, truth, ["gm", "wm"])
    assert set(summary) == {"dice", "iou", "dice_study", "hd95", "nsd", "dice_per_class", "iou_per_class",
                            "hd95_per_class", "nsd_per_class", "n_images", "n_images_study", "n_units"}
    gm_dice, wm_dice = (2 / 3 + 1 + 0) / 3, (0 + 1) / 2
    gm_iou, wm_iou = (0.5 + 1 + 0) / 3, (0 + 1) / 2
    assert summary["dice_per_class"] == pytest.approx({"gm": gm_dice, "wm": wm_dice}, abs=1e-12)
    assert summary["iou_per_class"] == pytest.approx({"gm": gm_iou, "wm": wm_iou}, abs=1e-12)
    assert summary["dice"] == pytest.approx((gm_dice + wm_dice) / 2, abs=1e-12)
    assert summary["iou"] == pytest.approx((gm_iou + wm_iou) / 2, abs=1e-12)
    assert summary["dice_study"] == pytest.approx(dice_study[:3].mean(), abs=1e-12)
    assert summary["n_images"] == 4 and summary["n_images_study"] == 3
    # HD95: gm image 0 row 0 cols 0-2 vs 1-3 -> [0, 0, 1] each way, 95th pct at 1.9 -> 0.9;
    # image 1 perfect -> 0; image 2 rows 0 and 3 -> 3. wm: image 1 missed -> NaN; image 2 -> 0
    assert summary["hd95_per_class"] == pytest.approx({"gm": (0.9 + 0 + 3) / 3, "wm": 0.0}, abs=1e-12)
    # NSD at 2 px: gm image 0, 1 -> 1; image 2: distance 3 -> 0. wm: image 1 missed -> 0; image 2 -> 1
    assert summary["nsd_per_class"] == pytest.approx({"gm": 2 / 3, "wm": 0.5}, abs=1e-12)
    assert summary["hd95"] == pytest.approx(((0.9 + 3) / 3 + 0) / 2, abs=1e-12)


def test_perfect_prediction_scores_one():
    truth = blank(2, 3)
    truth[0, 0, :2] = 1
    truth[0, 2, 3, 3] = 1
    truth[1, 1] = 1
    truth[1, 2, 1:3, 1:3] = 1
    summary = summarize(truth.copy(), truth, ["a", "b", "c"])
    assert summary["dice"] == 1.0 and summary["iou"] == 1.0 and summary["dice_study"] == 1.0
    assert summary["hd95"] == 0.0 and summary["nsd"] == 1.0
    assert summary["dice_per_class"] == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_a_class_absent_everywhere_is_nan_and_left_out_of_the_overall_mean():
    truth, predicted = blank(2, 2), blank(2, 2)
    truth[:, 0, :2] = 1
    predicted[:, 0, :1] = 1  # Dice 2*4/(4+8) = 2/3 on each image
    predicted[0, 1, 0, 0] = 1  # false positive in the never-present class
    summary = summarize(predicted, truth, ["a", "b"])
    assert summary["dice_per_class"]["a"] == pytest.approx(2 / 3, abs=1e-12)
    assert math.isnan(summary["dice_per_class"]["b"])
    assert summary["dice"] == pytest.approx(2 / 3, abs=1e-12)
    # the study sees the false positive: image 0 scores (2/3 + ~0) / 2, image 1 (2/3 + 1) / 2
    image_0 = ((2 * 4 + S) / (8 + 4 + S) + S / (1 + S)) / 2
    image_1 = ((2 * 4 + S) / (8 + 4 + S) + 1.0) / 2
    assert summary["dice_study"] == pytest.approx((image_0 + image_1) / 2, abs=1e-12)


def test_summary_of_all_empty_truth_is_nan():
    predicted = blank(2, 1)
    predicted[0, 0, 0, 0] = 1
    summary = summarize(predicted, blank(2, 1), ["a"])
    for key in ("dice", "iou", "dice_study", "hd95", "nsd"):
        assert math.isnan(summary[key]), key
    assert summary["n_images"] == 2 and summary["n_images_study"] == 0


def test_summarize_needs_a_name_per_class():
    with pytest.raises(ValueError, match="class names"):
        summarize(*hand_made()[:2], ["gm"])


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


def test_relative_drop_of_arrays():
    np.testing.assert_allclose(relative_drop(np.array([0.8, 0.0]), np.array([0.6, 0.1])), [0.25, np.nan])


def test_compare_scores_reports_the_studys_diff():
    truth = np.zeros((2, 2, 4, 4), dtype=np.uint8)
    truth[:, :, :2, :2] = 1                                  # 4 pixels of each class on each slice
    clean = truth.copy()                                     # perfect before the attack
    attacked = truth.copy()
    attacked[:, 0, 0, :2] = 0                                # class a loses 2 of its 4 pixels
    scores = compare_scores(slice_scores(clean, truth), slice_scores(attacked, truth), ["a", "b"])
    adv_a = 2 * 2 / (2 + 4)                                  # 2/3 on both slices
    assert scores["clean_dice"] == 1.0 and scores["clean_dice_study"] == 1.0
    assert scores["adv_dice_per_class"] == {"a": pytest.approx(adv_a, abs=1e-12), "b": 1.0}
    assert scores["diff_per_class"] == {"a": pytest.approx(1 / 3, abs=1e-12), "b": 0.0}
    assert scores["adv_dice"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-12)
    assert scores["diff"] == pytest.approx(1 / 6, abs=1e-12)
    adv_study = ((2 * 2 + S) / (2 + 4 + S) + 1) / 2
    assert scores["adv_dice_study"] == pytest.approx(adv_study, abs=1e-12)
    assert scores["diff_dice_study"] == pytest.approx(1 - adv_study, abs=1e-12)
    assert scores["adv_iou"] == pytest.approx((2 / 4 + 1.0) / 2, abs=1e-12)
    assert scores["diff_iou"] == pytest.approx(0.25, abs=1e-12)
    # class a: truth the 2x2 block, prediction its bottom row: edges [0, 0] -> truth top row at 1
    # -> distances truth->pred [1, 1, 0, 0], 95th pct at 2.85 -> 1; HD95 mean over classes (1 + 0) / 2
    assert scores["adv_hd95_per_class"] == {"a": pytest.approx(1.0, abs=1e-12), "b": 0.0}
    assert scores["adv_hd95"] == pytest.approx(0.5, abs=1e-12) and scores["clean_hd95"] == 0.0
    assert scores["adv_nsd"] == 1.0 and scores["clean_nsd"] == 1.0
    assert scores["n_images"] == 2 and scores["n_images_study"] == 2 and scores["n_units"] == 1


def test_slice_scores_round_trip_through_the_report_reader(tmp_path):
    predicted, truth, dice, _, dice_study = hand_made()
    clean, adv = slice_scores(truth, truth), slice_scores(predicted, truth)
    path = tmp_path / "eps_0.01.slices.npz"
    records.write_slice_scores(path, clean, adv, ["gm", "wm"], np.array([0, 0, 1, 1]), "case")
    loaded = records.read_slice_scores(path)
    assert list(loaded["class_names"]) == ["gm", "wm"] and loaded["unit"] == "case"
    assert loaded["units"].tolist() == [0, 0, 1, 1]
    back = records.per_slice(loaded, "adv")
    np.testing.assert_allclose(back["dice"], dice, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(back["dice_study"], dice_study, atol=1e-12)
    assert unit_scores(records.per_slice(loaded, "clean"), loaded["units"]).score("dice").tolist() == [1.0, 1.0]
    arrays = dict(np.load(path))
    del arrays["adv_hd95"]
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="adv_hd95"):
        records.read_slice_scores(path)
