"""The UW-Madison GI tract dataset, on a small fixture written in the real Kaggle layout.

The fixture has non-square 16-bit PNG slices (a square slice cannot tell row-major from
column-major run-length codes) and a train.csv whose codes come from a little encoder
written here, independent of uwmadison.rle_encode.
"""

from __future__ import annotations

import csv
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from advseg import settings
from advseg.datasets import PreparedData, SliceDataset, prepare_dataset, uwmadison
from advseg.datasets.slices import resize_slices, scale_by_max

SIZE = 32
SCHEMA = Path(__file__).parents[1] / "workflow" / "schemas" / "config.schema.yaml"  # a link into the package
# scan -> (width, height); case7_day0 and case81_day30 are excluded by default
SCANS = {(7, 0): (20, 14), (7, 1): (20, 14), (12, 0): (20, 14), (30, 2): (20, 14), (30, 5): (18, 24),
         (81, 30): (20, 14)}
DEFAULT_EXCLUDED = {(7, 0), (81, 30)}
SLICE_NUMBERS = (1, 2, 5)  # slice 1: every organ, slice 2: stomach only, slice 5: nothing labelled
# class -> rectangle as fractions (top, bottom, left, right) of the slice: off-centre, not square
RECTANGLES = {"large_bowel": (0.1, 0.4, 0.15, 0.6), "small_bowel": (0.5, 0.9, 0.7, 0.9),
              "stomach": (0.6, 0.8, 0.05, 0.35)}
LABELLED = {1: tuple(uwmadison.CLASS_NAMES), 2: ("stomach",), 5: ()}



def prepare(image_size: int, **options):
    """uwmadison.prepare with the schema's defaults for the options not given, as the download job calls it."""
    options = {key: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
               for key, v in options.items()}
    return uwmadison.prepare(image_size=image_size, **settings.fill("data.uwmadison", options))

def encode_row_major(mask: np.ndarray) -> str:
    """Run-length code ("start length ...", 1-based starts) counting pixels row by row."""
    runs, start = [], None
    for index, value in enumerate([*mask.flatten().tolist(), 0]):
        if value and start is None:
            start = index
        elif not value and start is not None:
            runs += [start + 1, index - start]
            start = None
    return " ".join(map(str, runs))


def rectangle(name: str, height: int, width: int) -> np.ndarray:
    top, bottom, left, right = RECTANGLES[name]
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[int(top * height):int(bottom * height), int(left * width):int(right * width)] = 1
    return mask


def slice_id(case: int, day: int, number: int) -> str:
    return f"case{case}_day{day}_slice_{number:04d}"


def png_path(root: Path, case: int, day: int, number: int, width: int, height: int) -> Path:
    return (root / "train" / f"case{case}" / f"case{case}_day{day}" / "scans"
            / f"slice_{number:04d}_{width}_{height}_1.50_1.50.png")


def build_root(root: Path) -> dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]]:
    """Write the fixture; returns (uint16 image, (3, H, W) mask) by (case, day, slice)."""
    rng = np.random.default_rng(7)
    truth, rows = {}, []
    for (case, day), (width, height) in SCANS.items():
        for number in SLICE_NUMBERS:
            masks = np.stack([rectangle(name, height, width) if name in LABELLED[number]
                              else np.zeros((height, width), np.uint8) for name in uwmadison.CLASS_NAMES])
            image = rng.integers(0, 400, (height, width)) + 700 * (masks * [[[1]], [[2]], [[3]]]).sum(0)
            image = image.astype(np.uint16)
            path = png_path(root, case, day, number, width, height)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)  # uint16 -> mode I;16, a 16-bit greyscale PNG
            truth[case, day, number] = (image, masks)
            rows += [(slice_id(case, day, number), name, encode_row_major(mask))
                     for name, mask in zip(uwmadison.CLASS_NAMES, masks)]
    with open(root / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "class", "segmentation"])
        writer.writerows(rows[::-1])  # not in (case, day, slice) order: prepare sorts
    return truth


def expected(truth, keys) -> tuple[np.ndarray, np.ndarray]:
    """Images and masks as prepare should give them, built from the hand-made arrays."""
    images, masks = [], []
    for key in keys:
        image, mask = resize_slices(truth[key][0][None].astype(np.float32), truth[key][1][None], SIZE)
        images.append(scale_by_max(image)[0])
        masks.append(mask[0])
    return np.stack(images), np.stack(masks)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("uwmadison")
    return root, build_root(root)


@pytest.fixture(scope="module")
def data(fixture) -> SliceDataset:
    return prepare(image_size=SIZE, root=fixture[0])


@pytest.fixture
def fresh(tmp_path) -> Path:
    build_root(tmp_path)
    return tmp_path


# --- run-length codes and file names ------------------------------------------------------


def test_rle_decode_hand_written_on_a_non_square_slice():
    # 2 rows x 3 columns; runs cover 1-based pixels 2, 3 and 6
    assert uwmadison.rle_decode("2 2 6 1", (2, 3)).tolist() == [[0, 1, 1], [0, 0, 1]]
    # column order counts down the columns: pixel 2 = (1, 0), 3 = (0, 1), 6 = (1, 2)
    assert uwmadison.rle_decode("2 2 6 1", (2, 3), order="column").tolist() == [[0, 1, 0], [1, 0, 1]]
    empty = uwmadison.rle_decode("", (2, 3))
    assert empty.dtype == np.uint8 and empty.shape == (2, 3) and not empty.any()


@pytest.mark.parametrize("order", ["row", "column"])
def test_rle_round_trip(order):
    rng = np.random.default_rng(1)
    for shape in [(5, 7), (7, 5), (1, 9)]:
        mask = (rng.random(shape) > 0.5).astype(np.uint8)
        code = uwmadison.rle_encode(mask, order)
        assert np.array_equal(uwmadison.rle_decode(code, shape, order), mask)
    full = np.ones((3, 4), np.uint8)
    assert uwmadison.rle_encode(full, order) == "1 12"
    assert uwmadison.rle_encode(np.zeros((3, 4)), order) == ""


def test_rle_encode_agrees_with_the_fixture_encoder():
    mask = rectangle("small_bowel", 14, 20)
    assert uwmadison.rle_encode(mask) == encode_row_major(mask)


@pytest.mark.parametrize("code", ["1 2 3", "5 3", "0 2", "3 0", "1 x"])
def test_rle_decode_rejects_bad_codes(code):
    with pytest.raises(ValueError, match="run-length code"):
        uwmadison.rle_decode(code, (2, 3))


def test_rle_order_must_be_row_or_column():
    with pytest.raises(ValueError, match=r"rle_order.*diagonal"):
        uwmadison.rle_decode("1 1", (2, 3), order="diagonal")


def test_parse_slice_path():
    path = Path("train/case12/case12_day0/scans/slice_0007_360_310_1.50_1.50.png")
    assert uwmadison.parse_slice_path(path) == (12, 0, 7, 360, 310)
    for bad in ["train/case12/case12_day0/scans/slice_0007_360_310.png",
                "train/case12/case12/scans/slice_0007_360_310_1.50_1.50.png",
                "train/case12/case12_day0/slice_0007_360_310_1.50_1.50.png"]:
        with pytest.raises(ValueError) as error:
            uwmadison.parse_slice_path(bad)
        assert bad in str(error.value)


# --- prepare on the fixture ---------------------------------------------------------------


def test_prepare_shapes_and_ranges(data):
    n = 4 * len(SLICE_NUMBERS)  # six scans less case7_day0 and case81_day30
    assert data.images.shape == (n, SIZE, SIZE) and data.images.dtype == np.float32
    assert data.masks.shape == (n, 3, SIZE, SIZE) and data.masks.dtype == np.uint8
    assert data.class_names == ("large_bowel", "small_bowel", "stomach")
    assert data.images.min() >= 0 and np.allclose(data.images.reshape(n, -1).max(1), 1.0)
    assert set(np.unique(data.masks)) == {0, 1}


def test_prepare_matches_the_hand_made_slices_in_order(fixture, data):
    root, truth = fixture
    keys = sorted(key for key in truth if key[:2] not in DEFAULT_EXCLUDED)  # case7_day1 kept
    images, masks = expected(truth, keys)
    assert np.allclose(data.images, images, atol=1e-6)
    assert np.array_equal(data.masks, masks)
    assert data.groups.tolist() == [case for case, _, _ in keys]
    scans = sorted({key[:2] for key in keys})  # (7, 1), (12, 0), (30, 2), (30, 5): numbered 0..3
    assert data.volumes.tolist() == [scans.index(key[:2]) for key in keys]
    assert data.positions.tolist() == [number for _, _, number in keys]


def test_mask_lands_where_the_rectangle_was(data):
    # first slice of case30_day5 (portrait, 24 rows x 18 columns): its small-bowel rectangle
    # covers rows 12..21 and columns 12..15, centre (16.5, 13.5) in pixel units
    index = 3 * len(SLICE_NUMBERS)
    mask = data.masks[index, uwmadison.CLASS_NAMES.index("small_bowel")]
    rows, cols = np.nonzero(mask)
    centre_row = (rows.mean() + 0.5) * 24 / SIZE - 0.5  # back in the original pixel grid
    centre_col = (cols.mean() + 0.5) * 18 / SIZE - 0.5
    assert abs(centre_row - 16.5) < 0.6 and abs(centre_col - 13.5) < 0.6
    assert mask.sum() == pytest.approx(10 * 4 * SIZE * SIZE / (24 * 18), rel=0.15)


def test_column_order_misreads_row_major_codes(fixture, data):
    column = prepare(image_size=SIZE, root=fixture[0], rle_order="column")
    assert np.array_equal(column.images, data.images)
    assert not np.array_equal(column.masks, data.masks)


def test_exclude_is_an_option(fixture, data):
    root, truth = fixture
    everything = prepare(image_size=SIZE, root=root, exclude=())
    assert len(everything.images) == len(data.images) + 2 * len(SLICE_NUMBERS)
    images, _ = expected(truth, [(7, 0, number) for number in SLICE_NUMBERS])
    assert np.allclose(everything.images[:len(SLICE_NUMBERS)], images, atol=1e-6)
    assert np.array_equal(everything.images[len(SLICE_NUMBERS):-len(SLICE_NUMBERS)], data.images)
    one = prepare(image_size=SIZE, root=root, exclude=["case30_day5"])
    assert one.groups.tolist() == [7] * 6 + [12] * 3 + [30] * 3 + [81] * 3


def test_an_exclude_entry_matching_no_scan_is_an_error(fixture):
    message = prepare_error(root=fixture[0], exclude=["case7_day0", "case12_day9", "case99_day1"])
    assert "data.uwmadison.exclude" in message and "'case12_day9'" in message and "'case99_day1'" in message
    assert "'case7_day0'" not in message


def test_split_keeps_cases_together(data):
    from advseg.splits import fold_split

    folds = 3
    held_out = []
    for fold in range(folds):
        split = fold_split(data.groups, data.volumes, data.positions, folds, fold, guard=2)
        assert split.dropped == 0  # a case holds whole scans: the guard has nothing to drop
        parts = [set(data.groups[rows]) for rows in (split.train, split.inner_val, split.val)]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
        held_out.append(split.val)
    # every slice (and so every case) is held out in exactly one fold
    assert sorted(np.concatenate(held_out).tolist()) == list(range(len(data.groups)))
    # three cases, three folds: one case per fold, with all its days
    assert sorted(len(set(data.groups[rows])) for rows in held_out) == [1, 1, 1]


def test_only_labelled_drops_empty_slices(fixture, data):
    labelled = prepare(image_size=SIZE, root=fixture[0], only_labelled=True)
    keep = data.masks.reshape(len(data.masks), -1).any(1)
    assert len(labelled.images) == 4 * 2 and keep.sum() == 8
    assert np.array_equal(labelled.images, data.images[keep])
    assert np.array_equal(labelled.masks, data.masks[keep])


def test_prepare_dataset_by_name(fixture, data):
    dataset = prepare_dataset("uwmadison", image_size=SIZE, root=str(fixture[0]))
    assert np.array_equal(dataset.masks, data.masks)
    with pytest.raises(ValueError, match=r"data\.uwmadison.*slab_thickness"):
        prepare_dataset("uwmadison", image_size=SIZE, root=str(fixture[0]), slab_thickness=4)


def test_cli_download(fixture, data, tmp_path):
    settings = {"name": "uwmadison", "image_size": SIZE, "folds": 3, "folds_to_run": [2, 0], "guard": 2,
                "mni152": {"slab_thickness": 8, "min_brain_fraction": 0.05},
                "uwmadison": {"root": str(fixture[0]), "rle_order": "row",
                              "exclude": ["case7_day0", "case81_day30"], "only_labelled": False}}
    out = tmp_path / "prepared"
    advseg = Path(sys.executable).with_name("advseg")
    result = subprocess.run([str(advseg), "download", "--settings", json.dumps(settings), "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    opened = PreparedData.open(out)
    assert np.array_equal(opened.masks, data.masks) and np.allclose(opened.images, data.images)
    assert opened.class_names == uwmadison.CLASS_NAMES and opened.folds_to_run == [2, 0]
    assert sorted(path.name for path in out.glob("fold_*")) == ["fold_0", "fold_2"]
    for fold in (0, 2):
        held_out = opened.fold(fold)
        assert np.array_equal(held_out.val_masks, data.masks[held_out.val])
        assert len(set(data.groups[held_out.val])) == 1  # one case of three
    assert "fold 2:" in result.stderr and "held out" in result.stderr


def test_prepare_takes_every_option_of_the_schema_and_defaults_none():
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]["data"]["properties"]
    assert "uwmadison" in schema["name"]["enum"]
    parameters = inspect.signature(uwmadison.prepare).parameters
    assert set(schema["uwmadison"]["properties"]) == set(parameters) - {"image_size"}
    assert all(p.default is inspect.Parameter.empty for p in parameters.values()), "defaults live in the schema"


# --- errors name what is wrong --------------------------------------------------------------


def prepare_error(**options) -> str:
    with pytest.raises(ValueError) as error:
        prepare(image_size=SIZE, **options)
    assert not isinstance(error.value, FileNotFoundError)
    return str(error.value)


def test_root_not_set_or_missing(tmp_path):
    message = prepare_error(root=None)
    assert "data.uwmadison.root" in message and "kaggle competitions download" in message
    message = prepare_error(root=tmp_path / "absent")
    assert "data.uwmadison.root" in message and str(tmp_path / "absent") in message


def test_the_workflow_default_root_null_is_explained(tmp_path):
    settings = {"name": "uwmadison", "image_size": SIZE, "folds": 2, "folds_to_run": [0],
                "uwmadison": {"root": None}}
    result = subprocess.run([str(Path(sys.executable).with_name("advseg")), "download", "--settings",
                             json.dumps(settings), "--out", str(tmp_path / "prepared")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "data.uwmadison.root" in result.stderr


def test_train_csv_missing(fresh):
    (fresh / "train.csv").unlink()
    assert str(fresh / "train.csv") in prepare_error(root=fresh)


def test_train_csv_lacking_a_column(fresh):
    (fresh / "train.csv").write_text("id,class\ncase7_day1_slice_0001,stomach\n")
    message = prepare_error(root=fresh)
    assert str(fresh / "train.csv") in message and "segmentation" in message


def test_unknown_class(fresh):
    with open(fresh / "train.csv", "a") as handle:
        handle.write("case12_day0_slice_0001,liver,1 3\n")
    message = prepare_error(root=fresh)
    assert "liver" in message and str(fresh / "train.csv") in message


def test_csv_id_without_png(fresh):
    png_path(fresh, 12, 0, 2, 20, 14).unlink()
    assert "case12_day0_slice_0002" in prepare_error(root=fresh)


def test_excluded_scan_needs_no_png(fresh):
    for number in SLICE_NUMBERS:
        png_path(fresh, 7, 0, number, 20, 14).unlink()
    assert len(prepare(image_size=SIZE, root=fresh).images) == 12


def test_png_size_differs_from_its_name(fresh):
    path = png_path(fresh, 30, 2, 1, 20, 14)
    Image.fromarray(np.ones((20, 14), np.uint16)).save(path)  # transposed: 14 wide, 20 high
    message = prepare_error(root=fresh)
    assert str(path) in message and "(14, 20)" in message


def test_malformed_file_name(fresh):
    path = fresh / "train" / "case12" / "case12_day0" / "scans" / "slice_0009_20_14.png"
    Image.fromarray(np.ones((14, 20), np.uint16)).save(path)
    assert str(path) in prepare_error(root=fresh)


def test_code_beyond_the_slice(fresh):
    csv_path = fresh / "train.csv"
    lines = [line for line in csv_path.read_text().splitlines()
             if not line.startswith("case12_day0_slice_0005,stomach,")]
    csv_path.write_text("\n".join(lines + ["case12_day0_slice_0005,stomach,270 20"]) + "\n")  # 280 pixels
    message = prepare_error(root=fresh)
    assert "case12_day0_slice_0005" in message and "run-length code" in message


def test_bad_options(fixture):
    assert "data.uwmadison.rle_order" in prepare_error(root=fixture[0], rle_order="col")
    assert "data.uwmadison.exclude" in prepare_error(root=fixture[0], exclude=["case7"])


def test_a_repeated_csv_row_is_refused(fresh):
    csv_path = fresh / "train.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(ValueError, match=f"{csv_path}, line {len(lines) + 1}: a second row for"):
        prepare(image_size=32, root=fresh)
