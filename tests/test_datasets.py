"""The MNI152 slices (from the template inside nilearn), datasets by name, and SliceDataset."""

from __future__ import annotations

import numpy as np
import pytest

from advseg import settings
from advseg.datasets import DATASETS, SliceDataset, mni152, prepare_dataset
from advseg.splits import fold_split

SIZE, THICKNESS, GUARD = 32, 8, 2


@pytest.fixture(scope="module")
def data() -> SliceDataset:
    return mni152.prepare(image_size=SIZE, **settings.fill("data.mni152", {"slab_thickness": THICKNESS}))


def tiny(n: int = 6, classes: int = 2) -> SliceDataset:
    rng = np.random.default_rng(0)
    images = rng.random((n, 8, 8), dtype=np.float32)
    masks = (rng.random((n, classes, 8, 8)) > 0.5).astype(np.uint8)
    return SliceDataset(images, masks, np.arange(n) // 2, np.zeros(n, np.int64), np.arange(n),
                        tuple(f"c{i}" for i in range(classes)), "pair of slices")


# --- mni152 -----------------------------------------------------------------------------


def test_mni152_shapes_and_ranges(data):
    n = len(data.images)
    assert n > 50
    assert data.images.shape == (n, SIZE, SIZE) and data.images.dtype == np.float32
    assert data.masks.shape == (n, 3, SIZE, SIZE) and data.masks.dtype == np.uint8
    assert data.class_names == mni152.CLASS_NAMES
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0
    assert data.images.reshape(n, -1).max(1).min() > 0.5  # each slice scaled by its own maximum


def test_mni152_masks_are_one_hot_within_the_brain(data):
    assert set(np.unique(data.masks)) == {0, 1}
    labelled = data.masks.sum(1)
    assert labelled.max() == 1  # at most one class per pixel
    assert (data.images[labelled == 1] > 0).all()  # labels only where there is signal
    assert (labelled == 0).any()  # background outside the brain has no class
    assert data.masks.reshape(len(data.masks), -1).any(1).all()  # every slice holds brain
    assert (data.masks.sum((0, 2, 3)) > 0).all()  # every class occurs


def test_mni152_slices_differ(data):
    flat = data.images.reshape(len(data.images), -1)
    assert len(np.unique(flat, axis=0)) == len(flat)
    assert data.masks.sum() > 0


def test_mni152_orientation_rows_are_anterior_to_posterior(data):
    # The template is left-right symmetric: mirroring the columns (left<->right) leaves the
    # slices (almost) unchanged, mirroring the rows (anterior<->posterior) does not.
    images = data.images
    assert np.abs(images - images[:, :, ::-1]).mean() < 1e-3
    assert np.abs(images - images[:, ::-1, :]).mean() > 0.03
    # Anterior up: the brain's extent along the rows follows the template's y axis (which the
    # affine says grows anteriorly) read from high y to low y.
    import nibabel

    t1 = nibabel.load(mni152.template_dir() / mni152.TEMPLATE.format("t1"))
    assert t1.affine[1, 1] > 0
    profile = (np.asarray(t1.dataobj) > 0).sum(axis=(0, 2)).astype(float)
    profile = np.interp(np.linspace(0, len(profile) - 1, SIZE), np.arange(len(profile)), profile)
    rows = data.masks.any(1).sum(axis=(0, 2)).astype(float)
    anterior_up = np.corrcoef(profile[::-1], rows)[0, 1]
    anterior_down = np.corrcoef(profile, rows)[0, 1]
    assert anterior_up > 0.98 and anterior_up > anterior_down + 0.05


def test_mni152_groups_volumes_positions(data):
    n = len(data.images)
    assert data.volumes.tolist() == [0] * n  # one template volume
    assert np.all(np.diff(data.positions) > 0)  # axial slice indices, in order
    # the template has 189 axial slices; the near-empty ones at both ends are dropped
    assert data.positions.min() > 0 and data.positions.max() < 188
    assert np.array_equal(data.groups, (data.positions - data.positions.min()) // THICKNESS)
    counts = np.bincount(data.groups)
    assert counts[:-1].tolist() == [THICKNESS] * (len(counts) - 1)  # full slabs but perhaps the last
    assert data.unit == "slab of the one MNI152 template brain"  # the unit of inference is the slab


def test_mni152_default_fold_split_keeps_slabs_apart_with_a_guard(data):
    split = fold_split(data.groups, data.volumes, data.positions, 10, 0, GUARD)
    val_groups, inner_groups, train_groups = (set(data.groups[rows]) for rows in
                                              (split.val, split.inner_val, split.train))
    assert not val_groups & train_groups and not inner_groups & train_groups and not val_groups & inner_groups
    assert len(val_groups) >= 1 and len(inner_groups) >= 1 and len(train_groups) >= 8
    # no training slice within GUARD positions of a held-out or inner-validation slice
    for row in split.train:
        for others in (split.val, split.inner_val):
            assert np.abs(data.positions[others] - data.positions[row]).min() > GUARD
    assert split.dropped > 0


def test_prepare_dataset_by_name():
    assert "mni152" in DATASETS
    with pytest.raises(ValueError, match=r"data\.name.*mni152"):
        prepare_dataset("brats", image_size=32)
    with pytest.raises(ValueError, match=r"data\.mni152: .*'guard' was unexpected"):
        prepare_dataset("mni152", image_size=32, guard=2)  # the guard belongs to the split (data.guard)


# --- SliceDataset -----------------------------------------------------------------------


def test_slice_dataset_keeps_its_fields():
    dataset = tiny()
    assert dataset.image_size == 8
    assert dataset.groups.tolist() == [0, 0, 1, 1, 2, 2] and dataset.positions.tolist() == list(range(6))


@pytest.mark.parametrize("change", [
    pytest.param(lambda d: {**d, "masks": d["masks"][:, :1]}, id="class-count"),
    pytest.param(lambda d: {**d, "masks": d["masks"][:, :, :4]}, id="mask-size"),
    pytest.param(lambda d: {**d, "masks": d["masks"][:-1]}, id="mask-count"),
    pytest.param(lambda d: {**d, "images": d["images"][:, :, :, None]}, id="image-ndim"),
    pytest.param(lambda d: {**d, "images": d["images"][:, :4], "masks": d["masks"][:, :, :4]}, id="not-square"),
    pytest.param(lambda d: {**d, "groups": d["groups"][:-1]}, id="groups-length"),
    pytest.param(lambda d: {**d, "volumes": d["volumes"][:, None]}, id="volumes-shape"),
    pytest.param(lambda d: {**d, "positions": d["positions"].astype(float)}, id="positions-float"),
    pytest.param(lambda d: {**d, "positions": np.zeros(6, int)}, id="repeated-position"),
    pytest.param(lambda d: {**d, "positions": d["positions"] - 1}, id="negative-position"),
    pytest.param(lambda d: {**d, "unit": ""}, id="unnamed-unit"),
    pytest.param(lambda d: {k: (v[:0] if k != "class_names" else v) for k, v in d.items()}, id="empty"),
])
def test_mismatched_fields_are_rejected(change):
    good = tiny()
    fields = {"images": good.images, "masks": good.masks, "groups": good.groups, "volumes": good.volumes,
              "positions": good.positions, "class_names": good.class_names, "unit": good.unit}
    with pytest.raises(ValueError):
        SliceDataset(**change(fields))


def test_same_position_in_two_volumes_is_fine():
    good = tiny()
    volumes, positions = np.arange(6) % 2, np.arange(6) // 2  # positions 0, 0, 1, 1, 2, 2
    dataset = SliceDataset(good.images, good.masks, good.groups, volumes, positions, good.class_names, good.unit)
    assert np.array_equal(dataset.volumes, volumes) and np.array_equal(dataset.positions, positions)
    with pytest.raises(ValueError, match="position"):  # the same positions within one volume are not
        SliceDataset(good.images, good.masks, good.groups, np.zeros(6, int), positions, good.class_names, good.unit)
