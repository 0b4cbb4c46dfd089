"""Train/validation splits that keep related slices together.

Slices of one patient (or one slab of a volume) look alike; putting some in training
and others in validation inflates validation scores. The study used GroupKFold(10)
by case and kept the first fold for validation; so does advseg.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import GroupKFold


def group_kfold_validation(groups: np.ndarray, n_splits: int, fold: int) -> np.ndarray:
    """Boolean mask of the validation slices: fold ``fold`` of GroupKFold(n_splits)."""
    if not 0 <= fold < n_splits:
        raise ValueError(f"data.fold: {fold} is not in [0, {n_splits})")
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ValueError(f"data.folds: {n_splits} folds need at least {n_splits} groups, found {n_groups}")
    _, val_index = list(GroupKFold(n_splits=n_splits).split(groups, groups=groups))[fold]
    is_val = np.zeros(len(groups), dtype=bool)
    is_val[val_index] = True
    return is_val


def slab_groups(positions: np.ndarray, thickness: int) -> np.ndarray:
    """Group slices of one volume into contiguous slabs of ``thickness`` slices."""
    return (positions - positions.min()) // thickness


def away_from_validation(positions: np.ndarray, is_val: np.ndarray, guard: int) -> np.ndarray:
    """Keep validation slices and the training slices more than ``guard`` slices away from any."""
    val_positions = positions[is_val]
    distance = np.abs(positions[:, None] - val_positions[None, :]).min(1)
    return is_val | (distance > guard)
