"""Group k-fold validation, the guard band around validation slabs, and slab groups."""

from __future__ import annotations

import numpy as np
import pytest

from advseg.splits import away_from_validation, group_kfold_validation, slab_groups


def test_group_kfold_is_deterministic_and_keeps_groups_together():
    groups = np.repeat(np.arange(12), [3, 5, 2, 4, 4, 1, 6, 3, 2, 5, 3, 2])
    for fold in range(4):
        first = group_kfold_validation(groups, 4, fold)
        assert first.dtype == bool and first.shape == groups.shape
        assert np.array_equal(first, group_kfold_validation(groups.copy(), 4, fold))
        assert first.any() and (~first).any()
        for group in np.unique(groups):
            members = first[groups == group]
            assert members.all() or not members.any(), f"group {group} straddles the split"
        assert not set(groups[first]) & set(groups[~first])


def test_folds_partition_the_slices():
    groups = np.arange(40) // 4
    folds = np.stack([group_kfold_validation(groups, 5, fold) for fold in range(5)])
    assert np.array_equal(folds.sum(0), np.ones(40, dtype=int))  # every slice validated exactly once
    assert all(len(np.unique(groups[fold])) == 2 for fold in folds)


@pytest.mark.parametrize("fold", [-1, 5, 6])
def test_fold_out_of_range(fold):
    with pytest.raises(ValueError, match=r"^data\.fold:"):
        group_kfold_validation(np.arange(10), 5, fold)


def test_too_few_groups():
    with pytest.raises(ValueError, match=r"^data\.folds:") as error:
        group_kfold_validation(np.repeat(np.arange(3), 4), 5, 0)
    assert "3" in str(error.value) and "5" in str(error.value)


def test_away_from_validation_leaves_a_guard_band():
    positions = np.arange(5, 70)
    groups = slab_groups(positions, 6)
    guard = 2
    for fold in range(5):
        is_val = group_kfold_validation(groups, 5, fold)
        keep = away_from_validation(positions, is_val, guard)
        assert keep[is_val].all()  # validation slices are all kept
        val_positions = positions[is_val]
        distance = np.abs(positions[:, None] - val_positions[None, :]).min(1)
        train_kept = keep & ~is_val
        assert (distance[train_kept] > guard).all()
        # and only the slices that are too close go
        assert (distance[~keep] <= guard).all() and (~keep).sum() > 0


def test_away_from_validation_drops_exactly_the_neighbours():
    positions = np.arange(20)
    is_val = (positions >= 8) & (positions < 12)
    keep = away_from_validation(positions, is_val, 3)
    assert np.array_equal(np.flatnonzero(~keep), [5, 6, 7, 12, 13, 14])
    keep0 = away_from_validation(positions, is_val, 0)
    assert keep0.all()


def test_slab_groups_are_contiguous_slabs():
    positions = np.arange(7, 50)
    groups = slab_groups(positions, 8)
    assert groups[0] == 0
    assert np.all(np.diff(groups) >= 0) and set(np.diff(groups)) <= {0, 1}
    for group in np.unique(groups):
        members = positions[groups == group]
        assert np.array_equal(members, np.arange(members[0], members[0] + len(members)))
        assert len(members) == 8 or group == groups.max()
    assert np.array_equal(np.bincount(groups), [8, 8, 8, 8, 8, 3])


def test_slab_groups_with_gaps_use_positions_not_indices():
    positions = np.array([10, 11, 12, 20, 21, 30])
    assert np.array_equal(slab_groups(positions, 5), [0, 0, 0, 2, 2, 4])
