"""Group k-fold, the inner validation split, the guard band, and slab groups."""

from __future__ import annotations

import numpy as np
import pytest

from advseg.splits import fold_split, group_kfold_validation, inner_folds, near, slab_groups


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


def test_folds_partition_the_slices():
    groups = np.arange(40) // 4
    folds = np.stack([group_kfold_validation(groups, 5, fold) for fold in range(5)])
    assert np.array_equal(folds.sum(0), np.ones(40, dtype=int))  # every slice held out exactly once
    assert all(len(np.unique(groups[fold])) == 2 for fold in folds)


@pytest.mark.parametrize("fold", [-1, 5, 6])
def test_fold_out_of_range(fold):
    with pytest.raises(ValueError, match=r"^data\.folds_to_run:"):
        group_kfold_validation(np.arange(10), 5, fold)


def test_too_few_groups():
    with pytest.raises(ValueError, match=r"^data\.folds:") as error:
        group_kfold_validation(np.repeat(np.arange(3), 4), 5, 0)
    assert "3" in str(error.value) and "5" in str(error.value)


def test_near_is_per_volume_and_inclusive():
    volumes = np.array([0] * 10 + [1] * 10)
    positions = np.tile(np.arange(10), 2)
    anchors = np.zeros(20, bool)
    anchors[4] = True  # volume 0, position 4
    close = near(volumes, positions, anchors, 2)
    assert np.flatnonzero(close).tolist() == [2, 3, 4, 5, 6]  # volume 1's positions 2..6 are not near
    assert np.array_equal(near(volumes, positions, anchors, 0), anchors)
    anchors[[0, 19]] = True  # the ends of both volumes
    assert np.flatnonzero(near(volumes, positions, anchors, 1)).tolist() == [0, 1, 3, 4, 5, 18, 19]


def test_near_with_unsorted_positions_and_gaps():
    volumes = np.zeros(6, int)
    positions = np.array([30, 10, 12, 20, 11, 25])
    anchors = positions == 20
    assert positions[near(volumes, positions, anchors, 5)].tolist() == [20, 25]


def hand_made():
    """One volume of 40 slices in slabs of 4 (10 groups) and a second volume of 20 (5 groups)."""
    volumes = np.array([0] * 40 + [1] * 20)
    positions = np.concatenate([np.arange(40), np.arange(20)])
    groups = np.concatenate([slab_groups(np.arange(40), 4), 10 + slab_groups(np.arange(20), 4)])
    return groups, volumes, positions


def test_fold_split_partitions_with_guard_dropped():
    groups, volumes, positions = hand_made()
    for fold in range(5):
        split = fold_split(groups, volumes, positions, 5, fold, guard=1)
        train, inner, val = (set(split.train.tolist()), set(split.inner_val.tolist()), set(split.val.tolist()))
        assert not train & inner and not train & val and not inner & val
        assert len(train) + len(inner) + len(val) + split.dropped == 60
        assert np.array_equal(split.val, np.flatnonzero(group_kfold_validation(groups, 5, fold)))
        for rows in (split.train, split.inner_val, split.val):
            assert np.all(np.diff(rows) > 0)
        # groups never straddle: held-out groups are whole, inner groups are absent from training
        assert not set(groups[split.train]) & set(groups[split.inner_val])
        assert not set(groups[split.train]) & set(groups[split.val])
        # guard: no training slice within 1 position of a held-out or inner slice of its volume
        for row in split.train:
            for others in (split.val, split.inner_val):
                same = others[volumes[others] == volumes[row]]
                assert np.all(np.abs(positions[same] - positions[row]) > 1)
        assert split.sizes() == {"train": len(train), "inner_val": len(inner), "val": len(val),
                                 "dropped_by_guard": split.dropped}


def test_fold_split_hand_computed():
    # 8 slabs of 2 in one volume; GroupKFold(4) holds out two slabs, the inner GroupKFold(3)
    # takes slabs of the remaining ones; guard 1 drops one neighbour on each side.
    positions = np.arange(16)
    groups = positions // 2
    volumes = np.zeros(16, int)
    split = fold_split(groups, volumes, positions, 4, 0, guard=1)
    held_out = np.flatnonzero(group_kfold_validation(groups, 4, 0))
    assert np.array_equal(split.val, held_out)
    candidates = [p for p in range(16) if min(abs(p - h) for h in held_out) > 1]
    assert not set(split.inner_val) & set(held_out)
    assert set(split.inner_val) <= set(candidates)
    expected_train = [p for p in candidates if p not in split.inner_val
                      and min(abs(p - i) for i in split.inner_val) > 1]
    assert split.train.tolist() == expected_train
    assert split.dropped == 16 - len(held_out) - len(split.inner_val) - len(expected_train)


def test_guard_zero_drops_nothing_and_groups_with_whole_volumes_are_unaffected():
    groups, volumes, positions = hand_made()
    split = fold_split(groups, volumes, positions, 5, 2, guard=0)
    assert split.dropped == 0
    # one volume per group (as UW-Madison's cases): the guard has no neighbour to drop
    case_volumes = groups.copy()
    for guard in (0, 3):
        assert fold_split(groups, case_volumes, positions, 5, 2, guard=guard).dropped == 0


def test_inner_folds():
    assert inner_folds(10) == 9 and inner_folds(3) == 2 and inner_folds(2) == 2


def test_fold_split_errors_name_the_key():
    groups, volumes, positions = hand_made()
    # two groups: holding one out leaves one, too few for an inner split into two
    two = np.repeat([0, 1], 5)
    with pytest.raises(ValueError, match=r"^data\.folds:.*inner"):
        fold_split(two, np.arange(10), np.zeros(10, int), 2, 0, guard=0)
    with pytest.raises(ValueError, match=r"^data\.folds:.*after data\.guard 50"):
        fold_split(groups, volumes, positions, 5, 0, guard=50)
    # the held-out slabs in a volume of their own; the guard around the inner slabs eats the rest
    groups = np.arange(12) // 2
    held_out = group_kfold_validation(groups, 3, 0)
    volumes = held_out.astype(int)
    positions = np.zeros(12, int)
    positions[~held_out] = np.arange(8)
    positions[held_out] = np.arange(4)
    with pytest.raises(ValueError, match=r"^data\.guard: 8 leaves no training slice in fold 0"):
        fold_split(groups, volumes, positions, 3, 0, guard=8)


def test_slab_groups_are_contiguous_slabs():
    positions = np.arange(7, 50)
    groups = slab_groups(positions, 8)
    assert np.array_equal(np.bincount(groups), [8, 8, 8, 8, 8, 3])


def test_slab_groups_with_gaps_use_positions_not_indices():
    positions = np.array([10, 11, 12, 20, 21, 30])
    assert np.array_equal(slab_groups(positions, 5), [0, 0, 0, 2, 2, 4])
