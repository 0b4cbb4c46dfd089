"""The prepared directory: layout, folds, fingerprints, atomic writes, and every bad file named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from advseg.datasets import PreparedData, SliceDataset, open_fold, write_prepared
from advseg.datasets import prepared as prepared_mod
from advseg.splits import fold_split

N, SIZE, CLASSES = 40, 8, 2


def dataset(seed: int = 0) -> SliceDataset:
    """Two volumes of 20 slices, slabs of 4 (10 groups); each pixel tells its slice apart."""
    rng = np.random.default_rng(seed)
    images = rng.random((N, SIZE, SIZE), dtype=np.float32)
    masks = (rng.random((N, CLASSES, SIZE, SIZE)) > 0.5).astype(np.uint8)
    volumes = np.repeat([0, 1], 20)
    positions = np.tile(np.arange(20), 2)
    groups = volumes * 5 + positions // 4
    return SliceDataset(images, masks, groups, volumes, positions, ("a", "b"), "case")


@pytest.fixture(scope="module")
def data() -> SliceDataset:
    return dataset()


@pytest.fixture
def written(data, tmp_path) -> Path:
    write_prepared(tmp_path / "prepared", data, folds=5, folds_to_run=[0, 3], guard=1)
    return tmp_path / "prepared"


def test_layout(written):
    names = sorted(str(path.relative_to(written)) for path in written.rglob("*"))
    fold_files = ["inner_val.npy", "train.npy", "val.npy", "val_images.npy", "val_masks.npy"]
    assert names == sorted(["groups.npy", "images.npy", "masks.npy", "positions.npy", "volumes.npy",
                            "prepared.json", "fold_0", "fold_3", *[f"fold_{k}/{name}" for k in (0, 3)
                                                                   for name in fold_files]])
    assert not [path for path in written.parent.iterdir() if path.name.startswith(".")]  # no staging left
    meta = json.loads((written / "prepared.json").read_text())
    assert meta["class_names"] == ["a", "b"] and meta["image_size"] == SIZE and meta["n_slices"] == N
    assert meta["folds"] == 5 and meta["folds_to_run"] == [0, 3] and meta["guard"] == 1
    assert meta["arrays"]["masks"] == {"shape": [N, CLASSES, SIZE, SIZE], "dtype": "uint8"}
    assert meta["inner_split"].startswith("GroupKFold(4)")


def test_arrays_and_folds_round_trip(data, written):
    opened = PreparedData.open(written)
    assert len(opened) == N and opened.class_names == ("a", "b") and opened.image_size == SIZE
    assert isinstance(opened.images, np.memmap) and np.array_equal(opened.images, data.images)
    assert np.array_equal(opened.masks, data.masks)
    for name in ("groups", "volumes", "positions"):
        assert np.array_equal(getattr(opened, name), getattr(data, name))
    for k in (0, 3):
        fold = opened.fold(k)
        split = fold_split(data.groups, data.volumes, data.positions, 5, k, 1)
        for name in ("train", "inner_val", "val"):
            assert np.array_equal(getattr(fold, name), getattr(split, name)), name
        meta_sizes = opened.meta["fold_splits"][str(k)]
        assert meta_sizes["train"] == len(split.train) and meta_sizes["dropped_by_guard"] == split.dropped
        images, masks = fold.val_slices()
        assert images.flags.writeable and not isinstance(images, np.memmap)
        assert np.array_equal(images, data.images[split.val]) and np.array_equal(masks, data.masks[split.val])
        assert isinstance(fold.val_images, np.memmap) and not fold.val_images.flags.writeable
        assert np.array_equal(fold.val_images, images) and np.array_equal(fold.val_masks, masks)
        inner_images, inner_masks = fold.inner_val_slices()
        assert np.array_equal(inner_images, data.images[split.inner_val])
        assert np.array_equal(inner_masks, data.masks[split.inner_val])
        picked = np.array([4, 0, 2, 3])  # training slices by number; read in row order
        images, masks = fold.train_slices(picked)
        rows = np.sort(split.train[picked])
        assert np.array_equal(images, data.images[rows]) and np.array_equal(masks, data.masks[rows])


def test_read_rows_any_order_and_repeats(data, written):
    fold = open_fold(written, 0)
    rows = np.array([7, 8, 9, 3, 3, 39, 0])
    images, masks = fold.read_rows(rows)
    assert np.array_equal(images, data.images[rows]) and np.array_equal(masks, data.masks[rows])
    assert images.flags.writeable and not isinstance(images, np.memmap)
    with pytest.raises(IndexError):
        fold.read_rows(np.array([N]))


def test_fingerprints(data, tmp_path):
    def write(name, dataset_, **options):
        settings = {"folds": 5, "folds_to_run": [0, 1], "guard": 1, **options}
        return write_prepared(tmp_path / name, dataset_, **settings)

    first, again = write("a", data), write("b", dataset())
    assert first["fingerprint"] == again["fingerprint"] and first["fold_splits"] == again["fold_splits"]
    changed = dataset()
    changed.images[5, 0, 0] += 0.25  # one pixel of one slice
    assert write("c", changed)["fingerprint"] != first["fingerprint"]
    relabelled = dataset()
    relabelled.masks[5, 1, 0, 0] ^= 1
    assert write("d", relabelled)["fingerprint"] != first["fingerprint"]
    # the content is the same, the split differs: the fold fingerprint changes, the data's does not
    wider = write("e", data, guard=2)
    assert wider["fingerprint"] == first["fingerprint"]
    assert wider["fold_splits"]["0"]["fingerprint"] != first["fold_splits"]["0"]["fingerprint"]
    assert first["fold_splits"]["0"]["fingerprint"] != first["fold_splits"]["1"]["fingerprint"]
    assert open_fold(tmp_path / "a", 1).fingerprint == first["fold_splits"]["1"]["fingerprint"]


def test_rewrite_replaces_the_directory(data, written):
    (written / "stale.txt").write_text("from an older download")
    write_prepared(written, data, folds=5, folds_to_run=[1], guard=0)
    assert not (written / "stale.txt").exists() and not (written / "fold_0").exists()
    assert PreparedData.open(written).folds_to_run == [1]
    assert [path.name for path in written.parent.iterdir()] == ["prepared"]


def test_a_failed_write_leaves_nothing_and_keeps_the_old_directory(data, written, monkeypatch):
    before = (written / "prepared.json").read_text()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prepared_mod, "_write_fold", broken)
    with pytest.raises(OSError, match="No space left"):
        write_prepared(written, data, folds=5, folds_to_run=[2], guard=0)
    assert (written / "prepared.json").read_text() == before  # the complete old one is untouched
    assert [path.name for path in written.parent.iterdir()] == ["prepared"]
    with pytest.raises(OSError):
        write_prepared(written.parent / "fresh", data, folds=5, folds_to_run=[2], guard=0)
    assert not (written.parent / "fresh").exists()


def test_an_impossible_split_fails_before_writing(data, tmp_path):
    with pytest.raises(ValueError, match=r"^data\.folds"):
        write_prepared(tmp_path / "out", data, folds=11, folds_to_run=[0], guard=0)  # 10 groups
    with pytest.raises(ValueError, match=r"^data\.folds_to_run"):
        write_prepared(tmp_path / "out", data, folds=5, folds_to_run=[5], guard=0)
    assert list(tmp_path.iterdir()) == []


def test_chunked_writer_checks_the_row_count(data, tmp_path):
    chunks = [(data.images[:10], data.masks[:10])]  # 10 of 40 rows
    with pytest.raises(ValueError, match="10 rows written, 40 expected"):
        prepared_mod.write_prepared_chunks(tmp_path / "out", iter(chunks), groups=data.groups,
                                           volumes=data.volumes, positions=data.positions, class_names=("a", "b"),
                                           image_size=SIZE, folds=5, folds_to_run=[0], guard=0, unit="case")
    assert list(tmp_path.iterdir()) == []


# --- every bad file is named before any work ---------------------------------------------


def open_error(directory: Path, fold: int | None = 0) -> str:
    with pytest.raises(ValueError) as error:
        opened = PreparedData.open(directory)
        if fold is not None:
            opened.fold(fold)
    return str(error.value)


def test_missing_directory_or_json(tmp_path, written):
    assert str(tmp_path / "absent" / "prepared.json") in open_error(tmp_path / "absent")
    (written / "prepared.json").unlink()
    assert str(written / "prepared.json") in open_error(written)


@pytest.mark.parametrize("content", ["{not json", '["a list"]', '{"format": 1}', ""])
def test_bad_json(written, content):
    (written / "prepared.json").write_text(content)
    assert str(written / "prepared.json") in open_error(written)


def test_other_format(written):
    meta = json.loads((written / "prepared.json").read_text())
    (written / "prepared.json").write_text(json.dumps({**meta, "format": 99}))
    assert "format 99" in open_error(written)


@pytest.mark.parametrize("name", ["images.npy", "masks.npy", "groups.npy", "fold_0/train.npy",
                                  "fold_0/val_images.npy", "fold_0/val_masks.npy", "fold_0/inner_val.npy"])
def test_missing_array(written, name):
    (written / name).unlink()
    assert str(written / name) in open_error(written)


@pytest.mark.parametrize("name", ["images.npy", "masks.npy", "positions.npy", "fold_0/val.npy",
                                  "fold_0/val_images.npy"])
def test_truncated_array(written, name):
    path = written / name
    path.write_bytes(path.read_bytes()[:-5])
    message = open_error(written)
    assert str(path) in message and "truncated" in message


def test_trailing_data(written):
    with open(written / "images.npy", "ab") as handle:
        handle.write(b"\0" * 8)
    assert "trailing data" in open_error(written, fold=None)


def test_not_an_array(written):
    (written / "masks.npy").write_text("plain text\n")
    assert str(written / "masks.npy") in open_error(written, fold=None)


def test_wrong_shape_or_dtype(data, written):
    np.save(written / "images.npy", data.images[:, :4])
    assert "shape" in open_error(written, fold=None)
    np.save(written / "images.npy", data.images.astype(np.float64))
    assert "float64" in open_error(written, fold=None)


def test_fold_not_prepared(written):
    message = open_error(written, fold=2)
    assert str(written) in message and "data.folds_to_run" in message and "[0, 3]" in message


def test_index_file_changed_after_download(written):
    path = written / "fold_0" / "train.npy"
    train = np.load(path)
    inner = np.load(written / "fold_0" / "inner_val.npy")
    swapped = np.sort(np.append(train[1:], inner[0]))  # same length, another slice
    np.save(path, swapped)
    assert str(written / "fold_0") in open_error(written)


def test_index_out_of_range(written):
    path = written / "fold_0" / "val.npy"
    values = np.load(path)
    values[-1] = N + 3
    np.save(path, values)
    assert str(path) in open_error(written)

