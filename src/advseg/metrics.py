"""Overlap scores of thresholded predictions, per image and class.

As in the study, a class's score is the mean over the slices whose true mask for that
class is non-empty; slices without the organ do not count (their Dice is undefined or
trivially 1). The overall score is the mean over classes.
"""

from __future__ import annotations

import numpy as np


def overlap_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Dice and IoU of boolean arrays shaped (images, classes, H, W), per image and class.

    Entries where the truth is empty are NaN.
    """
    predicted = predicted.astype(bool).reshape(*predicted.shape[:2], -1)
    truth = truth.astype(bool).reshape(*truth.shape[:2], -1)
    intersection = (predicted & truth).sum(-1).astype(float)
    total = predicted.sum(-1) + truth.sum(-1)
    union = (predicted | truth).sum(-1)
    present = truth.any(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(present, 2 * intersection / total, np.nan)
        iou = np.where(present, intersection / union, np.nan)
    return {"dice": dice, "iou": iou}


def summarize(predicted: np.ndarray, truth: np.ndarray, class_names: list[str]) -> dict:
    """Mean Dice and IoU over slices with a non-empty mask: overall and per class."""
    scores = overlap_scores(predicted, truth)
    summary: dict = {}
    for metric, values in scores.items():
        per_class = {name: _nanmean(values[:, c]) for c, name in enumerate(class_names)}
        summary[metric] = _nanmean(np.array([v for v in per_class.values()], dtype=float))
        summary[f"{metric}_per_class"] = per_class
    summary["n_images"] = int(truth.reshape(*truth.shape[:2], -1).any(-1).any(-1).sum())
    return summary


def compare_clean_and_attacked(clean_pred: np.ndarray, adv_pred: np.ndarray, truth: np.ndarray,
                               class_names: list[str]) -> dict:
    """Clean and attacked Dice/IoU, overall and per class, and the study's diff of each."""
    clean, adv = summarize(clean_pred, truth, class_names), summarize(adv_pred, truth, class_names)
    return {
        "clean_dice": clean["dice"], "adv_dice": adv["dice"], "diff": relative_drop(clean["dice"], adv["dice"]),
        "clean_iou": clean["iou"], "adv_iou": adv["iou"], "diff_iou": relative_drop(clean["iou"], adv["iou"]),
        "clean_dice_per_class": clean["dice_per_class"], "adv_dice_per_class": adv["dice_per_class"],
        "diff_per_class": {name: relative_drop(clean["dice_per_class"][name], adv["dice_per_class"][name])
                           for name in class_names},
        "n_images": clean["n_images"],
    }


def relative_drop(clean: float, attacked: float) -> float:
    """The study's attack success: (clean - attacked) / clean."""
    return (clean - attacked) / clean if clean > 0 else float("nan")


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")
