"""Folder datasets: images/ and masks/ of PNG or TIFF slices, label maps or one mask per class."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from advseg import settings
from advseg.datasets import folder
from advseg.datasets.slices import resize_slices, scale_by_max
from byod_data import use_contract_dataset

EXAMPLE = Path(__file__).parent / "data" / "folder_example"
PATTERN = r"(?P<group>patient\d+)_slice(?P<position>\d+)"


@pytest.fixture(autouse=True)
def contract(monkeypatch):
    use_contract_dataset(monkeypatch, folder)


def load_examples_module():
    spec = importlib.util.spec_from_file_location("make_examples", Path(__file__).parent / "data" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def prepare(root, **options):
    """folder.prepare with the schema's defaults for the options not given, as the download job calls it."""
    options = {"classes": ["liver", "kidney"], "root": str(root), **options}
    image_size = options.pop("image_size", 32)
    return folder.prepare(image_size=image_size, **settings.fill("data.folder", options))


def error_of(root, **options) -> str:
    with pytest.raises(ValueError) as error:
        prepare(root, **options)
    return str(error.value)


# --- the shipped example ------------------------------------------------------------------


def test_shipped_example_is_what_the_generator_writes(tmp_path):
    make_examples = load_examples_module()
    make_examples.write_folder_example(tmp_path)
    shipped = sorted(path.relative_to(EXAMPLE) for path in EXAMPLE.rglob("*.png"))
    assert shipped == sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*.png"))
    assert len(shipped) == 2 * make_examples.PATIENTS * make_examples.SLICES
    for name in shipped:
        assert np.array_equal(np.array(Image.open(EXAMPLE / name)), np.array(Image.open(tmp_path / name))), name


def test_shipped_example_prepares_as_the_readme_says():
    make_examples = load_examples_module()
    data = prepare(EXAMPLE, group_pattern=PATTERN)
    assert data.images.shape == (24, 32, 32) and data.images.dtype == np.float32
    assert data.masks.shape == (24, 2, 32, 32) and data.masks.dtype == np.uint8
    assert data.class_names == ("liver", "kidney")
    assert data.groups.tolist() == [g for g in range(4) for _ in range(6)]
    assert data.volumes.tolist() == data.groups.tolist()
    assert data.positions.tolist() == list(range(6)) * 4
    for index in range(24):
        image, labels = make_examples.phantom(index // 6 + 1, index % 6)
        one_hot = np.stack([labels == 1, labels == 2]).astype(np.uint8)
        expected_image, expected_mask = resize_slices(image[None].astype(np.float32), one_hot[None], 32)
        assert np.allclose(data.images[index], scale_by_max(expected_image)[0], atol=1e-6)
        assert np.array_equal(data.masks[index], expected_mask[0])
    present = data.masks.reshape(24, 2, -1).any(2)
    assert not present[5::6].any()                      # the last slice of every scan is empty
    assert not present[0::3, 1].any() and present[1::3, 1].all()  # the kidney skips every third slice


# --- hand-computed slices -----------------------------------------------------------------


def test_non_square_16_bit_slice_by_hand(tmp_path):
    # 4 rows x 8 columns: left half 100, right half 300; label 1 on the right half, 2 at one corner block
    image = np.full((4, 8), 100, np.uint16)
    image[:, 4:] = 300
    labels = np.zeros((4, 8), np.uint8)
    labels[:, 4:] = 1
    labels[:2, :2] = 2
    save(tmp_path / "images" / "a.png", image)
    save(tmp_path / "masks" / "a.png", labels)
    data = prepare(tmp_path, image_size=4)
    # area resize 4x8 -> 4x4 averages column pairs; the slice is then divided by its maximum, 300
    assert np.allclose(data.images[0], np.tile([1 / 3, 1 / 3, 1, 1], (4, 1)))
    assert data.masks[0, 0].tolist() == [[0, 0, 1, 1]] * 4
    assert data.masks[0, 1].tolist() == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_per_class_tiff_matches_label_maps(tmp_path):
    make_examples = load_examples_module()
    labelmap, per_class = tmp_path / "labelmap", tmp_path / "per_class"
    for patient, position in [(1, 0), (1, 1), (2, 4), (3, 5)]:
        image, labels = make_examples.phantom(patient, position)
        name = f"p{patient}_s{position}"
        wide = image.astype(np.uint16) * 200  # 16-bit grey levels
        save(labelmap / "images" / f"{name}.tif", wide)
        save(labelmap / "masks" / f"{name}.png", labels)
        save(per_class / "images" / f"{name}.tiff", wide)
        for value, cls in enumerate(["liver", "kidney"], start=1):
            save(per_class / "masks" / f"{name}_{cls}.png", np.where(labels == value, 255, 0).astype(np.uint8))
    a = prepare(labelmap)
    b = prepare(per_class, mask_format="per_class")
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.images, b.images)
    assert a.masks[:, 1].any() and a.masks[:, 0].any()
    assert a.groups.tolist() == [0, 1, 2, 3] and a.positions.tolist() == [0, 0, 0, 0]


def test_group_pattern_without_position_orders_by_name(tmp_path):
    for name in ["bob_b", "ann_z", "bob_a", "ann_c", "cid_q"]:
        save(tmp_path / "images" / f"{name}.png", np.full((6, 5), 9, np.uint8))
        save(tmp_path / "masks" / f"{name}.png", np.zeros((6, 5), np.uint8))
    data = prepare(tmp_path, group_pattern=r"^(?P<group>[a-z]+)_")
    # sorted names: ann_c ann_z bob_a bob_b cid_q
    assert data.groups.tolist() == [0, 0, 1, 1, 2]
    assert data.positions.tolist() == [0, 1, 0, 1, 0]
    assert not data.masks.any()


# --- errors name the file -----------------------------------------------------------------


@pytest.fixture
def small(tmp_path) -> Path:
    make_examples = load_examples_module()
    for patient in (1, 2):
        image, labels = make_examples.phantom(patient, 1)
        save(tmp_path / "images" / f"patient{patient}_slice01.png", image)
        save(tmp_path / "masks" / f"patient{patient}_slice01.png", labels)
    return tmp_path


def test_truncated_image(small):
    path = small / "images" / "patient2_slice01.png"
    path.write_bytes(path.read_bytes()[:120])
    message = error_of(small)
    assert str(path) in message and "unreadable or truncated image" in message


def test_not_an_image(small):
    path = small / "images" / "patient1_slice01.png"
    path.write_text("not a png")
    assert str(path) in error_of(small)


def test_colour_image(small):
    path = small / "images" / "patient1_slice01.png"
    save(path, np.zeros((40, 48, 3), np.uint8))
    message = error_of(small)
    assert str(path) in message and "'RGB'" in message and "greyscale" in message


def test_multi_page_tiff(small):
    path = small / "images" / "patient1_slice01.png"
    path.unlink()
    tiff = small / "images" / "patient1_slice01.tif"
    pages = [Image.fromarray(np.zeros((40, 48), np.uint8)) for _ in range(2)]
    pages[0].save(tiff, save_all=True, append_images=pages[1:])
    message = error_of(small)
    assert str(tiff) in message and "2 pages" in message


def test_mask_of_another_size(small):
    path = save(small / "masks" / "patient1_slice01.png", np.zeros((48, 40), np.uint8))
    message = error_of(small)
    assert str(path) in message and "(48, 40)" in message and str(small / "images" / "patient1_slice01.png") in message


def test_label_outside_the_classes(small):
    labels = np.zeros((40, 48), np.uint8)
    labels[3, 3] = 3
    path = save(small / "masks" / "patient2_slice01.png", labels)
    message = error_of(small)
    assert str(path) in message and "label value(s) 3 outside 0..2" in message


def test_per_class_mask_not_binary(small, tmp_path):
    root = tmp_path / "pc"
    save(root / "images" / "x.png", np.ones((4, 4), np.uint8))
    save(root / "masks" / "x_liver.png", np.array([[0, 1], [2, 0]], np.uint8).repeat(2, 0).repeat(2, 1))
    path = save(root / "masks" / "x_kidney.png", np.zeros((4, 4), np.uint8))
    message = error_of(root, mask_format="per_class")
    assert str(root / "masks" / "x_liver.png") in message and "not a binary mask" in message
    path.unlink()
    message = error_of(root, mask_format="per_class")
    assert str(root / "images" / "x.png") in message and str(path) in message


def test_missing_and_orphan_masks(small):
    (small / "masks" / "patient1_slice01.png").unlink()
    message = error_of(small)
    assert str(small / "images" / "patient1_slice01.png") in message and "mask missing" in message
    orphan = save(small / "masks" / "patient9_slice01.png", np.zeros((40, 48), np.uint8))
    save(small / "masks" / "patient1_slice01.png", np.zeros((40, 48), np.uint8))
    assert str(orphan) in error_of(small)


def test_no_images(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("x")
    message = error_of(tmp_path)
    assert str(tmp_path / "images") in message and "no .png" in message


def test_two_files_of_one_name(small):
    second = save(small / "images" / "patient1_slice01.tif", np.zeros((40, 48), np.uint8))
    assert str(second) in error_of(small)


@pytest.mark.parametrize(("pattern", "expected"), [
    ("(", "not a regular expression"),
    (r"patient\d+", "no named group"),
    (r"(?P<group>case\d+)", "does not match"),
    (r"(?P<group>patient\d)_slice(?P<position>[a-z]*)", "is not a number"),
])
def test_bad_group_pattern(small, pattern, expected):
    message = error_of(small, group_pattern=pattern)
    assert expected in message and ("data.folder.group_pattern" in message)


def test_bad_options(small, tmp_path):
    assert "data.folder.root" in error_of(tmp_path / "absent")
    assert "data.folder.classes" in error_of(small, classes=[])
    assert "data.folder.classes" in error_of(small, classes=["a", "a"])
    assert "data.folder.mask_format" in error_of(small, mask_format="rle")
    shutil.rmtree(small / "masks")
    assert str(small / "masks") in error_of(small)


def test_example_config_prepares_the_shipped_example(monkeypatch):
    import yaml

    config = yaml.safe_load((Path(__file__).parent / "configs" / "folder.yaml").read_text())["data"]
    monkeypatch.chdir(Path(__file__).parents[1])  # the workflow runs from the repository root
    data = folder.prepare(image_size=config["image_size"], **settings.fill("data.folder", config["folder"]))
    assert data.images.shape == (24, 32, 32) and len(set(data.groups.tolist())) == config["folds"]
