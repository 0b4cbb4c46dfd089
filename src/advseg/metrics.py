"""Scores of thresholded predictions per slice and class, and the two Dice protocols.

``slice_scores`` computes everything per slice once; the summaries, the protocols and the
bootstrap (``rows``) all work on its arrays. Two ways to turn them into one Dice, both
always reported (``PROTOCOLS``):

- ``dice``: per class, the mean over the slices whose truth has that class, then the mean
  over classes. A prediction on a slice without the organ is never seen.
- ``dice_study`` (the study's): per slice ``1 - monai.losses.DiceLoss()(truth, pred)``, i.e.
  the mean over ALL classes of ``(2 |T & P| + 1e-5) / (|T| + |P| + 1e-5)``, so a class absent
  from truth and prediction scores 1 and a false positive on an absent class scores ~0;
  then the mean over the slices with any organ (``has_organ``).

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


def protocol_score(scores: dict[str, np.ndarray], protocol: str, rows: np.ndarray | None = None) -> float:
    """One Dice under a protocol (``PROTOCOLS``), over all slices or the slices ``rows`` (repeats allowed)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"report.metric: unknown Dice protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    if protocol == "dice":
        return class_mean(scores["dice"], rows)
    values, has_organ = scores["dice_study"], scores["has_organ"]
    if rows is not None:
        values, has_organ = values[rows], has_organ[rows]
    return float(values[has_organ].mean()) if has_organ.any() else float("nan")


def class_mean(values: np.ndarray, rows: np.ndarray | None = None) -> float:
    """Mean over classes of each class's mean over the slices where it is defined (not NaN)."""
    per_class = per_class_mean(values, rows)
    return _nanmean(per_class)


def per_class_mean(values: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """(N, C) -> (C,): the mean of each column over its non-NaN entries; NaN for an all-NaN column."""
    if rows is not None:
        values = values[rows]
    valid = ~np.isnan(values)
    counts = valid.sum(0)
    sums = np.where(valid, values, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def summarize_scores(scores: dict[str, np.ndarray], class_names: list[str]) -> dict:
    """Overall and per-class means of per-slice scores, both Dice protocols, and the slice counts.

    ``n_images``: slices scored; ``n_images_study``: those with any organ (the only ones that
    count for either protocol).
    """
    if scores["dice"].shape[1] != len(class_names):
        raise ValueError(f"{len(class_names)} class names for {scores['dice'].shape[1]} classes of scores")
    summary: dict = {}
    for metric in PER_CLASS_METRICS:
        per_class = per_class_mean(scores[metric])
        summary[metric] = _nanmean(per_class)
        summary[f"{metric}_per_class"] = {name: float(v) for name, v in zip(class_names, per_class)}
    summary["dice_study"] = protocol_score(scores, "dice_study")
    summary["n_images"] = int(len(scores["has_organ"]))
    summary["n_images_study"] = int(scores["has_organ"].sum())
    return summary


def summarize(pred: np.ndarray, truth: np.ndarray, class_names: list[str]) -> dict:
    """``summarize_scores`` of ``slice_scores``: keys dice, iou, dice_study, hd95, nsd, their
    ``*_per_class`` dicts (not dice_study), n_images, n_images_study."""
    return summarize_scores(slice_scores(pred, truth), class_names)


def compare_scores(clean: dict[str, np.ndarray], adv: dict[str, np.ndarray], class_names: list[str]) -> dict:
    """Clean and attacked summaries of per-slice scores, and the study's diff of each Dice."""
    before, after = summarize_scores(clean, class_names), summarize_scores(adv, class_names)
    return {
        "clean_dice": before["dice"], "adv_dice": after["dice"], "diff": relative_drop(before["dice"], after["dice"]),
        "clean_dice_study": before["dice_study"], "adv_dice_study": after["dice_study"],
        "diff_dice_study": relative_drop(before["dice_study"], after["dice_study"]),
        "clean_iou": before["iou"], "adv_iou": after["iou"], "diff_iou": relative_drop(before["iou"], after["iou"]),
        "clean_hd95": before["hd95"], "adv_hd95": after["hd95"],
        "clean_nsd": before["nsd"], "adv_nsd": after["nsd"],
        "clean_dice_per_class": before["dice_per_class"], "adv_dice_per_class": after["dice_per_class"],
        "diff_per_class": {name: relative_drop(before["dice_per_class"][name], after["dice_per_class"][name])
                           for name in class_names},
        "clean_hd95_per_class": before["hd95_per_class"], "adv_hd95_per_class": after["hd95_per_class"],
        "clean_nsd_per_class": before["nsd_per_class"], "adv_nsd_per_class": after["nsd_per_class"],
        "n_images": before["n_images"], "n_images_study": before["n_images_study"],
    }


def compare_clean_and_attacked(clean_pred: np.ndarray, adv_pred: np.ndarray, truth: np.ndarray,
                               class_names: list[str]) -> dict:
    """``compare_scores`` straight from clean and attacked binary predictions."""
    return compare_scores(slice_scores(clean_pred, truth), slice_scores(adv_pred, truth), class_names)


SLICE_ARRAY_KEYS = ("dice", "iou", "hd95", "nsd", "dice_study")


def slice_arrays(clean: dict[str, np.ndarray], adv: dict[str, np.ndarray], class_names: list[str]) -> dict:
    """The per-slice arrays of an attack's ``eps_<eps>.slices.npz``: clean_*/adv_* scores, has_organ, class_names."""
    arrays = {"class_names": np.array(class_names, dtype=str), "has_organ": clean["has_organ"]}
    for key in SLICE_ARRAY_KEYS:
        arrays[f"clean_{key}"], arrays[f"adv_{key}"] = clean[key], adv[key]
    return arrays


def scores_from_arrays(arrays, which: str) -> dict[str, np.ndarray]:
    """``clean`` or ``adv`` scores back from ``slice_arrays`` (or its loaded .npz), for ``protocol_score``."""
    if which not in ("clean", "adv"):
        raise ValueError(f"which must be 'clean' or 'adv', not {which!r}")
    missing = [f"{which}_{key}" for key in SLICE_ARRAY_KEYS if f"{which}_{key}" not in arrays]
    if missing or "has_organ" not in arrays:
        raise ValueError(f"per-slice scores lack {', '.join(missing or ['has_organ'])}")
    scores = {key: np.asarray(arrays[f"{which}_{key}"]) for key in SLICE_ARRAY_KEYS}
    scores["has_organ"] = np.asarray(arrays["has_organ"], dtype=bool)
    return scores


def relative_drop(clean: float, attacked: float) -> float:
    """The study's attack success: (clean - attacked) / clean."""
    return (clean - attacked) / clean if clean > 0 else float("nan")


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


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")
