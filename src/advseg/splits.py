"""Cross-validation splits that keep related slices together.

Slices of one patient (or one slab of a volume) look alike; putting some in training
and others in validation inflates validation scores. The outer split is GroupKFold over
``groups`` (the study used GroupKFold(10) by case); fold k is held out: its slices are
attacked and scored, never trained on nor used to pick an epoch.

The best epoch is picked on an inner validation split carved from the remaining slices
the same way: GroupKFold(max(folds - 1, 2)) over their groups, first split. A guard band
drops every training or inner-validation slice within ``guard`` positions of a held-out
slice of the same volume, and every training slice within ``guard`` positions of an
inner-validation slice, so that neighbouring slices of one scan never straddle a split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def group_kfold_validation(groups: np.ndarray, n_splits: int, fold: int, key: str = "data.folds") -> np.ndarray:
    """Boolean mask of the slices of fold ``fold`` of GroupKFold(n_splits) over ``groups``."""
    from sklearn.model_selection import GroupKFold  # only download splits: jobs opening data skip sklearn

    if not 0 <= fold < n_splits:
        raise ValueError(f"data.folds_to_run: fold {fold} is not in [0, {n_splits})")
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ValueError(f"{key}: {n_splits} folds need at least {n_splits} groups, found {n_groups}")
    _, held_out = list(GroupKFold(n_splits=n_splits).split(groups, groups=groups))[fold]
    mask = np.zeros(len(groups), dtype=bool)
    mask[held_out] = True
    return mask


def slab_groups(positions: np.ndarray, thickness: int) -> np.ndarray:
    """Group slices of one volume into contiguous slabs of ``thickness`` slices."""
    return (positions - positions.min()) // thickness


def near(volumes: np.ndarray, positions: np.ndarray, anchors: np.ndarray, guard: int) -> np.ndarray:
    """Slices within ``guard`` positions of an ``anchors`` slice of the same volume (anchors included)."""
    close = anchors.copy()
    if guard <= 0 or not anchors.any():
        return close
    for volume in np.unique(volumes[anchors]):
        in_volume = volumes == volume
        anchor_positions = np.sort(positions[anchors & in_volume])
        candidates = positions[in_volume]
        right = np.searchsorted(anchor_positions, candidates)  # first anchor at or after each slice
        left = right.clip(1, len(anchor_positions)) - 1
        right = right.clip(0, len(anchor_positions) - 1)
        distance = np.minimum(np.abs(candidates - anchor_positions[left]),
                              np.abs(candidates - anchor_positions[right]))
        close[np.flatnonzero(in_volume)[distance <= guard]] = True
    return close


@dataclass(frozen=True)
class FoldSplit:
    """Sorted row indices of one outer fold; ``dropped`` counts the slices lost to the guard."""
    fold: int
    train: np.ndarray
    inner_val: np.ndarray
    val: np.ndarray
    dropped: int

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "inner_val": len(self.inner_val), "val": len(self.val),
                "dropped_by_guard": self.dropped}


def inner_folds(folds: int) -> int:
    return max(folds - 1, 2)


def fold_split(groups: np.ndarray, volumes: np.ndarray, positions: np.ndarray, folds: int, fold: int,
               guard: int) -> FoldSplit:
    """The training, inner-validation and held-out rows of outer fold ``fold`` (``guard``: data.guard, >= 0)."""
    held_out = group_kfold_validation(groups, folds, fold)
    candidates = ~near(volumes, positions, held_out, guard)
    rows = np.flatnonzero(candidates)
    n_inner = inner_folds(folds)
    if len(np.unique(groups[rows])) < n_inner:
        raise ValueError(f"data.folds: fold {fold} leaves {len(np.unique(groups[rows]))} training groups "
                         f"(after data.guard {guard}), too few for an inner validation split into {n_inner}")
    inner = np.zeros(len(groups), dtype=bool)
    inner[rows[group_kfold_validation(groups[rows], n_inner, 0)]] = True
    train = candidates & ~near(volumes, positions, inner, guard)
    if not train.any():
        raise ValueError(f"data.guard: {guard} leaves no training slice in fold {fold}")
    return FoldSplit(fold=fold, train=np.flatnonzero(train), inner_val=np.flatnonzero(inner),
                     val=np.flatnonzero(held_out), dropped=int(len(groups) - held_out.sum() - inner.sum()
                                                                - train.sum()))
