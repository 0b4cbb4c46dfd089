"""Scores of thresholded predictions per slice and class, aggregated per independent unit.

``slice_scores`` computes everything per slice once; :func:`unit_scores` turns them into one
number per unit (case, subject, volume, slab) under each Dice protocol, and the headline of
a model is the mean over its units. Slices of one unit are not independent, so the report
resamples units, never slices. The two Dice protocols, both always reported (``PROTOCOLS``):

- ``dice``: per unit and class, the mean over the unit's slices whose truth has that class;
  the unit's score is the mean over the classes it has. A prediction on a slice without the
  organ is never seen.
- ``dice_study`` (the study's): per slice ``1 - monai.losses.DiceLoss()(truth, pred)``, i.e.
  the mean over ALL classes of ``(2 |T & P| + 1e-5) / (|T| + |P| + 1e-5)``, so a class absent
  from truth and prediction scores 1 and a false positive on an absent class scores ~0;
  the unit's score is the mean over its slices with any organ (``has_organ``).

HD95 and NSD are MONAI's ``HausdorffDistanceMetric(percentile=95)`` and
``SurfaceDiceMetric(class_thresholds=[NSD_TOLERANCE_PX] * C)`` (include_background=True,
Euclidean, no sub-pixel areas), in pixels of the prepared slices. They are computed here
with the same definitions (edges = mask minus its 4-neighbour erosion, exact Euclidean
distances between edge pixels, linear-interpolated 95th percentile of each direction, the
larger of the two; NSD = share of both edge sets within the tolerance) because MONAI spends
~5 ms per slice and class in per-item cropping; ``tests/test_metrics.py`` checks the values
against MONAI's classes and ``benchmarks/metrics_cost.py`` measures both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

PROTOCOLS = ("dice", "dice_study")
NSD_TOLERANCE_PX = 2.0   # normalised surface distance: boundary pixels within 2 px count as correct
HD_PERCENTILE = 95.0
STUDY_SMOOTH = 1e-5      # MONAI DiceLoss's smooth_nr = smooth_dr, as in the study
PER_CLASS_METRICS = ("dice", "iou", "hd95", "nsd")


def slice_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Every score of binary (N, C, H, W) predictions against the truth, per slice.

    ``dice``, ``iou`` (N, C): NaN where the truth of the class is empty. ``dice_study`` (N,).
    ``has_organ`` (N,): the truth has any class (the slices the study scores). ``hd95`` (N, C):
    NaN where truth or prediction is empty. ``nsd`` (N, C): NaN where the truth is empty
    (0 where only the prediction is).
    """
    pred, truth = _check_masks(pred, truth)
    flat_pred = pred.reshape(*pred.shape[:2], -1)
    flat_truth = truth.reshape(*truth.shape[:2], -1)
    intersection = (flat_pred & flat_truth).sum(-1, dtype=np.int64).astype(np.float64)
    predicted = flat_pred.sum(-1, dtype=np.int64)
    true = flat_truth.sum(-1, dtype=np.int64)
    present = true > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(present, 2 * intersection / (predicted + true), np.nan)
        iou = np.where(present, intersection / (predicted + true - intersection), np.nan)
    study_per_class = (2 * intersection + STUDY_SMOOTH) / (predicted + true + STUDY_SMOOTH)
    hd95, nsd = surface_scores(pred, truth)
    return {"dice": dice, "iou": iou, "dice_study": study_per_class.mean(1), "has_organ": present.any(1),
            "hd95": hd95, "nsd": nsd}


def surface_scores(pred: np.ndarray, truth: np.ndarray,
                   tolerance: float = NSD_TOLERANCE_PX) -> tuple[np.ndarray, np.ndarray]:
    """HD95 and NSD (N, C) in pixels, as MONAI defines them, NaN-safe for empty masks."""
    pred, truth = _check_masks(pred, truth)
    shape = pred.shape[:2]
    hd95 = np.full(shape, np.nan)
    nsd = np.full(shape, np.nan)
    pred_any = pred.reshape(*shape, -1).any(-1)
    truth_any = truth.reshape(*shape, -1).any(-1)
    nsd[truth_any & ~pred_any] = 0.0  # no predicted boundary: none of the true boundary is matched
    both = truth_any & pred_any
    for start in range(0, shape[0], _EDGE_CHUNK):
        stop = start + _EDGE_CHUNK
        pred_points, pred_offsets = _edge_points(pred[start:stop])
        truth_points, truth_offsets = _edge_points(truth[start:stop])
        for item in np.flatnonzero(both[start:stop].ravel()):
            to_truth, to_pred = _nearest_distances(pred_points[pred_offsets[item]:pred_offsets[item + 1]],
                                                   truth_points[truth_offsets[item]:truth_offsets[item + 1]])
            n, c = divmod(int(item), shape[1])
            hd95[start + n, c] = max(_percentile(to_truth, HD_PERCENTILE), _percentile(to_pred, HD_PERCENTILE))
            matched = np.count_nonzero(to_truth <= tolerance) + np.count_nonzero(to_pred <= tolerance)
            nsd[start + n, c] = matched / (to_truth.size + to_pred.size)
    return hd95, nsd


_EDGE_CHUNK = 256       # slices whose edge maps are held at once
_BRUTE_FORCE_PAIRS = 1 << 16


def _edges(masks: np.ndarray) -> np.ndarray:
    """Pixels of each (..., H, W) mask with a 4-neighbour outside it or on the image border.

    MONAI's edges: the mask XOR its scipy binary erosion (cross, border_value=0).
    """
    interior = masks.copy()
    interior[..., 1:, :] &= masks[..., :-1, :]
    interior[..., :-1, :] &= masks[..., 1:, :]
    interior[..., :, 1:] &= masks[..., :, :-1]
    interior[..., :, :-1] &= masks[..., :, 1:]
    interior[..., (0, -1), :] = False
    interior[..., :, (0, -1)] = False
    return masks & ~interior


def _edge_points(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge pixel coordinates (M, 2) of (n, C, H, W) masks, item ``n * C + c`` at rows offsets[i]:offsets[i + 1]."""
    edges = _edges(masks)
    _, _, rows, cols = np.nonzero(edges)  # C order: grouped by slice, then class
    counts = edges.reshape(edges.shape[0] * edges.shape[1], -1).sum(1)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return np.stack([rows, cols], 1).astype(np.int64), offsets


def _nearest_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each point of ``a`` to the nearest of ``b``, and from ``b`` to ``a``."""
    if len(a) * len(b) <= _BRUTE_FORCE_PAIRS:
        dy = a[:, 0:1] - b[:, 0]
        dx = a[:, 1:2] - b[:, 1]
        squared = dy * dy + dx * dx  # exact in integers
        return np.sqrt(squared.min(1)), np.sqrt(squared.min(0))
    return cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]


def _percentile(values: np.ndarray, q: float) -> float:
    """Linear-interpolated percentile (numpy's and torch.quantile's default), without their overhead."""
    ordered = np.sort(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


@dataclass(frozen=True)
class UnitScores:
    """Every score aggregated per independent unit (case, subject, volume, slab): what the
    report's intervals and tests resample. The one place the Dice protocols are aggregated.

    ``per_class[metric]`` (U, C): per unit, each class's mean over the unit's slices where the
    class is defined (NaN if none). ``dice_study`` (U,): per unit, the mean study Dice over the
    unit's slices with any organ. A unit's score under a per-class metric is the mean over the
    classes it has (:meth:`score`). Copying a slice within its unit changes none of these.
    """

    units: np.ndarray
    per_class: dict[str, np.ndarray]
    dice_study: np.ndarray

    def score(self, metric: str) -> np.ndarray:
        """(U,) each unit's score: ``dice_study`` as is, a per-class metric averaged over classes."""
        if metric == "dice_study":
            return self.dice_study
        if metric not in self.per_class:
            raise ValueError(f"unknown metric {metric!r}; choose one of: dice_study, {', '.join(self.per_class)}")
        return nanmean(self.per_class[metric], axis=1)


def unit_scores(scores: dict[str, np.ndarray], units: np.ndarray | None = None) -> UnitScores:
    """Per-slice ``scores`` (of :func:`slice_scores`) aggregated per unit; ``units`` None: one unit."""
    n = len(scores["has_organ"])
    units = np.zeros(n, dtype=np.int64) if units is None else np.asarray(units)
    if units.shape != (n,):
        raise ValueError(f"{units.shape[0] if units.ndim else 0} unit labels for {n} slices")
    ids, inverse = np.unique(units, return_inverse=True)
    per_class = {}
    for metric in PER_CLASS_METRICS:
        values = np.asarray(scores[metric], dtype=float)
        per_class[metric] = np.stack([_grouped_mean(values[:, c], inverse, len(ids))
                                      for c in range(values.shape[1])], axis=1)
    study = np.where(scores["has_organ"], np.asarray(scores["dice_study"], dtype=float), np.nan)
    return UnitScores(ids, per_class, _grouped_mean(study, inverse, len(ids)))


def _grouped_mean(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean of the non-NaN values of each group; NaN for a group without one."""
    valid = ~np.isnan(values)
    sums = np.bincount(groups, weights=np.where(valid, values, 0.0), minlength=n_groups)
    counts = np.bincount(groups, weights=valid.astype(float), minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def nanmean(values: np.ndarray, axis: int | None = None):
    """Mean over the non-NaN entries (NaN where there is none), without numpy's warning."""
    values = np.asarray(values, dtype=float)
    valid = ~np.isnan(values)
    counts = valid.sum(axis=axis)
    sums = np.where(valid, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return float(mean) if axis is None else mean


def summarize_scores(scores: dict[str, np.ndarray], class_names: list[str], units: np.ndarray | None = None) -> dict:
    """Headline scores of per-slice scores: each the mean over units of the unit's score.

    Keys: dice, iou, hd95, nsd, dice_study, the ``*_per_class`` dicts (mean over units of
    each class's unit mean), n_images (slices), n_images_study (slices with any organ) and
    n_units (units with a score). Without ``units`` all slices form one unit.
    """
    if scores["dice"].shape[1] != len(class_names):
        raise ValueError(f"{len(class_names)} class names for {scores['dice'].shape[1]} classes of scores")
    per_unit = unit_scores(scores, units)
    summary: dict = {}
    for metric in PER_CLASS_METRICS:
        summary[metric] = nanmean(per_unit.score(metric))
        summary[f"{metric}_per_class"] = {name: float(v) for name, v in
                                          zip(class_names, nanmean(per_unit.per_class[metric], axis=0))}
    summary["dice_study"] = nanmean(per_unit.dice_study)
    summary["n_images"] = int(len(scores["has_organ"]))
    summary["n_images_study"] = int(scores["has_organ"].sum())
    summary["n_units"] = int((~np.isnan(per_unit.dice_study)).sum())
    return summary


def summarize(pred: np.ndarray, truth: np.ndarray, class_names: list[str], units: np.ndarray | None = None) -> dict:
    """``summarize_scores`` of ``slice_scores``."""
    return summarize_scores(slice_scores(pred, truth), class_names, units)


def compare_scores(clean: dict[str, np.ndarray], adv: dict[str, np.ndarray], class_names: list[str],
                   units: np.ndarray | None = None) -> dict:
    """Clean and attacked headline scores, and the study's diff of each, for an attack's JSON."""
    before, after = summarize_scores(clean, class_names, units), summarize_scores(adv, class_names, units)
    out = {"n_images": before["n_images"], "n_images_study": before["n_images_study"], "n_units": before["n_units"]}
    for metric, diff in (("dice", "diff"), ("dice_study", "diff_dice_study"), ("iou", "diff_iou")):
        out.update({f"clean_{metric}": before[metric], f"adv_{metric}": after[metric],
                    diff: relative_drop(before[metric], after[metric])})
    for metric in ("hd95", "nsd"):
        out.update({f"clean_{metric}": before[metric], f"adv_{metric}": after[metric]})
    for metric in ("dice", "hd95", "nsd"):
        out[f"clean_{metric}_per_class"] = before[f"{metric}_per_class"]
        out[f"adv_{metric}_per_class"] = after[f"{metric}_per_class"]
    out["diff_per_class"] = {name: relative_drop(before["dice_per_class"][name], after["dice_per_class"][name])
                             for name in class_names}
    return out


def relative_drop(clean, attacked):
    """The study's attack success: (clean - attacked) / clean; NaN where clean is not positive.

    Works on numbers and on arrays (each resample of a bootstrap)."""
    clean, attacked = np.asarray(clean, dtype=float), np.asarray(attacked, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        drop = np.where(clean > 0, (clean - attacked) / np.where(clean > 0, clean, 1.0), np.nan)
    return float(drop) if drop.ndim == 0 else drop


def _check_masks(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim != 4:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} must both be (slices, classes, H, W)")
    return _as_bool(pred, "prediction"), _as_bool(truth, "truth")


def _as_bool(masks: np.ndarray, what: str) -> np.ndarray:
    if masks.dtype == bool:
        return masks
    if np.any((masks != 0) & (masks != 1)):
        raise ValueError(f"the {what} must be binary (0/1); threshold probabilities first")
    return masks.astype(bool)
