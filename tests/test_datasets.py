"""The MNI152 slices (from the template inside nilearn) and the prepared-dataset file."""

from __future__ import annotations

import numpy as np
import pytest

from advseg.datasets import DATASETS, SliceDataset, prepare_dataset
from advseg.datasets import mni152

SIZE, THICKNESS, GUARD = 32, 8, 2


@pytest.fixture(scope="module")
def data() -> SliceDataset:
    return mni152.prepare(image_size=SIZE, folds=10, fold=0, slab_thickness=THICKNESS, guard=GUARD)


def tiny(n: int = 6, classes: int = 2) -> SliceDataset:
    rng = np.random.default_rng(0)
    images = rng.random((n, 8, 8), dtype=np.float32)
    masks = (rng.random((n, classes, 8, 8)) > 0.5).astype(np.uint8)
    is_val = np.arange(n) < 2
    return SliceDataset(images, masks, is_val, np.arange(n) // 2, tuple(f"c{i}" for i in range(classes)))


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


def test_mni152_split_keeps_slabs_apart(data):
    assert data.is_val.any() and (~data.is_val).any()
    val_groups, train_groups = set(data.groups[data.is_val]), set(data.groups[~data.is_val])
    assert not val_groups & train_groups
    assert len(val_groups) >= 1 and len(train_groups) >= 8
    # slices are kept in position order, so slabs appear as contiguous runs
    assert np.all(np.diff(data.groups) >= 0)
    counts = {int(group): int((data.groups == group).sum()) for group in np.unique(data.groups)}
    assert max(counts.values()) <= THICKNESS
    # positions are not stored; the guard shows in the training slabs next to a validation
    # slab, which lose the GUARD slices nearest to it (full slabs hold THICKNESS slices)
    neighbours = {g + step for g in val_groups for step in (-1, 1)} & train_groups
    assert neighbours
    for group in neighbours:
        if group in (min(counts), max(counts)):
            continue  # an end slab may be partial for other reasons
        assert counts[group] == THICKNESS - GUARD, (group, counts)


def test_mni152_guard_zero_keeps_more_training_slices():
    wide = mni152.prepare(image_size=16, folds=10, fold=0, slab_thickness=THICKNESS, guard=0)
    assert not set(wide.groups[wide.is_val]) & set(wide.groups[~wide.is_val])
    counts = np.bincount(wide.groups)
    assert counts[1:-1].min() == THICKNESS  # no slices dropped next to validation slabs


def test_prepare_dataset_by_name():
    assert "mni152" in DATASETS
    with pytest.raises(ValueError, match=r"data\.name.*mni152"):
        prepare_dataset("brats")


# --- SliceDataset -----------------------------------------------------------------------


def test_save_load_round_trip(data, tmp_path):
    path = tmp_path / "sub" / "prepared.npz"
    data.save(path)
    assert path.is_file()
    loaded = SliceDataset.load(path)
    for field in ("images", "masks", "is_val", "groups"):
        original, copy = getattr(data, field), getattr(loaded, field)
        assert copy.dtype == original.dtype and np.array_equal(copy, original), field
    assert loaded.class_names == data.class_names and isinstance(loaded.class_names, tuple)


def test_save_keeps_the_given_name(tmp_path):
    path = tmp_path / "prepared.data"
    tiny().save(path)
    assert path.is_file() and not (tmp_path / "prepared.data.npz").exists()
    assert np.array_equal(SliceDataset.load(path).images, tiny().images)


def test_load_missing_file_names_it(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(ValueError) as error:
        SliceDataset.load(path)
    assert str(path) in str(error.value)


def test_load_non_npz_names_it(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("these are not arrays\n")
    with pytest.raises(ValueError) as error:
        SliceDataset.load(path)
    assert str(path) in str(error.value)


def test_load_truncated_npz_names_it(tmp_path):
    good = tmp_path / "good.npz"
    tiny().save(good)
    path = tmp_path / "truncated.npz"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError) as error:
        SliceDataset.load(path)
    assert str(path) in str(error.value)


def test_load_npz_lacking_fields_names_it_and_them(tmp_path):
    path = tmp_path / "partial.npz"
    with open(path, "wb") as handle:
        np.savez(handle, images=np.zeros((2, 4, 4), np.float32), groups=np.arange(2))
    with pytest.raises(ValueError) as error:
        SliceDataset.load(path)
    message = str(error.value)
    assert str(path) in message
    for field in ("masks", "is_val", "class_names"):
        assert field in message


def test_split():
    dataset = tiny()
    val_images, val_masks = dataset.split("val")
    train_images, train_masks = dataset.split("train")
    assert np.array_equal(val_images, dataset.images[:2]) and np.array_equal(val_masks, dataset.masks[:2])
    assert np.array_equal(train_images, dataset.images[2:]) and np.array_equal(train_masks, dataset.masks[2:])


@pytest.mark.parametrize("change", [
    pytest.param(lambda d: {**d, "masks": d["masks"][:, :1]}, id="class-count"),
    pytest.param(lambda d: {**d, "masks": d["masks"][:, :, :4]}, id="mask-size"),
    pytest.param(lambda d: {**d, "masks": d["masks"][:-1]}, id="mask-count"),
    pytest.param(lambda d: {**d, "images": d["images"][:, :, :, None]}, id="image-ndim"),
    pytest.param(lambda d: {**d, "is_val": d["is_val"][:-1]}, id="is_val-length"),
    pytest.param(lambda d: {**d, "groups": d["groups"][:, None]}, id="groups-shape"),
    pytest.param(lambda d: {**d, "is_val": np.zeros_like(d["is_val"])}, id="no-validation"),
    pytest.param(lambda d: {**d, "is_val": np.ones_like(d["is_val"])}, id="no-training"),
])
def test_mismatched_fields_are_rejected(change):
    good = tiny()
    fields = {"images": good.images, "masks": good.masks, "is_val": good.is_val, "groups": good.groups,
              "class_names": good.class_names}
    with pytest.raises(ValueError):
        SliceDataset(**change(fields))
