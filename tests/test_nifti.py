"""NIfTI datasets: image and label volumes, sliced along an axis after turning to RAS+."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import nibabel
import numpy as np
import pytest

from advseg import settings
from advseg.datasets import nifti
from advseg.datasets.slices import resize_slices, scale_by_max
from byod_data import use_contract_dataset

EXAMPLE = Path(__file__).parent / "data" / "nifti_example"
CLASSES = ["liver", "kidney"]
AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])


@pytest.fixture(autouse=True)
def contract(monkeypatch):
    use_contract_dataset(monkeypatch, nifti)


@pytest.fixture(scope="module")
def examples():
    spec = importlib.util.spec_from_file_location("make_examples", Path(__file__).parent / "data" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def phantom_volume(examples, patient: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y, z) image and labels: slice z of the volume is phantom slice z, rows along x."""
    pairs = [examples.phantom(patient, position) for position in range(examples.SLICES)]
    return (np.stack([image for image, _ in pairs], -1).astype(np.int16),
            np.stack([labels for _, labels in pairs], -1))


def save(path: Path, data: np.ndarray, affine=AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(data, affine), path)
    return path


def prepare(**options):
    """nifti.prepare with the schema's defaults for the options not given, as the download job calls it."""
    options = {"classes": CLASSES, **{key: str(v) if isinstance(v, Path) else v for key, v in options.items()}}
    image_size = options.pop("image_size", 32)
    return nifti.prepare(image_size=image_size, **settings.fill("data.nifti", options))


def error_of(**options) -> str:
    with pytest.raises(ValueError) as error:
        prepare(**options)
    return str(error.value)


def expected_slices(image: np.ndarray, labels: np.ndarray, size: int = 32):
    one_hot = np.stack([labels == 1, labels == 2], axis=1).astype(np.uint8)
    images, masks = resize_slices(image.astype(np.float32), one_hot, size)
    return scale_by_max(images), masks


# --- the shipped example and hand-computed volumes ----------------------------------------


def test_shipped_example_is_what_the_generator_writes(examples, tmp_path):
    examples.write_nifti_example(tmp_path)
    names = sorted(path.name for path in EXAMPLE.glob("*.nii.gz"))
    assert names == sorted(path.name for path in tmp_path.glob("*.nii.gz")) and len(names) == 8
    for name in names:
        shipped, fresh = nibabel.load(EXAMPLE / name), nibabel.load(tmp_path / name)
        assert np.array_equal(np.asarray(shipped.dataobj), np.asarray(fresh.dataobj)), name
        assert np.array_equal(shipped.affine, fresh.affine)


def test_shipped_example_axial_slices(examples):
    data = prepare(root=EXAMPLE, clip_percentiles=None)  # no clipping: the phantom's minimum is 0
    assert data.images.shape == (24, 32, 32) and data.masks.shape == (24, 2, 32, 32)
    assert data.class_names == ("liver", "kidney")
    assert data.groups.tolist() == data.volumes.tolist() == [v for v in range(4) for _ in range(6)]
    assert data.positions.tolist() == list(range(6)) * 4
    for patient in range(1, 5):
        image, labels = phantom_volume(examples, patient)
        images, masks = expected_slices(np.moveaxis(image, 2, 0), np.moveaxis(labels, 2, 0))
        rows = slice(6 * (patient - 1), 6 * patient)
        assert np.allclose(data.images[rows], images, atol=1e-6)
        assert np.array_equal(data.masks[rows], masks)


def test_clip_percentiles_by_hand(tmp_path):
    # one 10x10 slice holding 0..99: the 10th and 90th percentiles are 9.9 and 89.1 (linear
    # interpolation at 0.1 * 99 and 0.9 * 99); clipped and shifted, the maximum is 79.2
    values = np.arange(100, dtype=np.int16).reshape(10, 10, 1)
    save(tmp_path / "a_image.nii.gz", values)
    save(tmp_path / "a_label.nii.gz", np.zeros((10, 10, 1), np.uint8))
    data = prepare(root=tmp_path, image_size=10, clip_percentiles=[10, 90])
    expected = (np.clip(np.arange(100.0).reshape(10, 10), 9.9, 89.1) - 9.9) / 79.2
    assert np.allclose(data.images[0], expected, atol=1e-5)
    assert data.images[0, 0, 0] == 0 and data.images[0, 9, 9] == 1


def test_ct_like_negative_intensities_shift_to_zero(tmp_path):
    values = np.array([-1000, -500, 0, 1000], np.int16).reshape(2, 2, 1)
    save(tmp_path / "ct_image.nii.gz", values)
    save(tmp_path / "ct_label.nii.gz", np.zeros((2, 2, 1), np.uint8))
    data = prepare(root=tmp_path, image_size=2, clip_percentiles=None)
    assert np.allclose(data.images[0], [[0, 0.25], [0.5, 1.0]])


def test_storage_orientation_does_not_change_the_slices(examples, tmp_path):
    image, labels = phantom_volume(examples, 2)
    ras, flipped = tmp_path / "ras", tmp_path / "flipped"
    save(ras / "p_image.nii.gz", image)
    save(ras / "p_label.nii.gz", labels)
    # the same scan stored with x running right-to-left: data reversed, affine mirrored
    mirrored = AFFINE.copy()
    mirrored[0, 0], mirrored[0, 3] = -1.5, 1.5 * (image.shape[0] - 1)
    save(flipped / "p_image.nii.gz", image[::-1].copy(), mirrored)
    save(flipped / "p_label.nii.gz", labels[::-1].copy(), mirrored)
    a, b = prepare(root=ras), prepare(root=flipped)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)


def test_axis_zero_slices_along_x(examples, tmp_path):
    image, labels = phantom_volume(examples, 3)
    save(tmp_path / "p_image.nii.gz", image)
    save(tmp_path / "p_label.nii.gz", labels)
    data = prepare(root=tmp_path, axis=0, clip_percentiles=None)
    assert len(data.images) == image.shape[0] == 40
    assert data.positions.tolist() == list(range(40))
    images, masks = expected_slices(image, labels)  # slice r is image[r]: (y, z) = (48, 6)
    assert np.allclose(data.images, images, atol=1e-6) and np.array_equal(data.masks, masks)


def test_empty_slices_dropped_on_request():
    data = prepare(root=EXAMPLE, keep_empty_slices=False)
    assert len(data.images) == 20  # the last slice of each of the 4 scans has no label
    assert data.positions.tolist() == list(range(5)) * 4
    assert data.masks.reshape(20, -1).any(1).all()


def test_pairs_csv_with_groups(tmp_path):
    csv_path = tmp_path / "pairs.csv"  # absolute paths work as well as relative ones
    rows = ["image,label,group"]
    for patient, group in [(3, "anna"), (1, "bert"), (2, "anna")]:
        rows.append(f"{EXAMPLE}/patient{patient}_image.nii.gz,{EXAMPLE}/patient{patient}_label.nii.gz,{group}")
    csv_path.write_text("\n".join(rows) + "\n")
    data = prepare(pairs=csv_path)
    assert data.volumes.tolist() == [v for v in range(3) for _ in range(6)]
    assert data.groups.tolist() == [0] * 6 + [1] * 6 + [0] * 6  # anna, bert, anna
    direct = prepare(root=EXAMPLE)
    assert np.array_equal(data.images[:6], direct.images[12:18])  # patient 3 listed first


def test_relative_paths_in_pairs_csv(tmp_path):
    image, labels = np.zeros((4, 4, 2), np.int16), np.zeros((4, 4, 2), np.uint8)
    image[1, 1, 1] = 5
    save(tmp_path / "scans" / "s.nii", image)
    save(tmp_path / "scans" / "l.nii", labels)
    (tmp_path / "pairs.csv").write_text("image,label\nscans/s.nii,scans/l.nii\n")
    data = prepare(pairs=tmp_path / "pairs.csv", image_size=4, clip_percentiles=None)
    assert data.images.shape == (2, 4, 4) and data.images[1, 1, 1] == 1 and data.images[0].max() == 0


def test_trailing_singleton_fourth_axis(tmp_path):
    save(tmp_path / "v_image.nii.gz", np.ones((4, 4, 3, 1), np.int16))
    save(tmp_path / "v_label.nii.gz", np.zeros((4, 4, 3, 1), np.uint8))
    assert len(prepare(root=tmp_path, image_size=4).images) == 3


# --- errors name the file -----------------------------------------------------------------


@pytest.fixture
def pair(tmp_path):
    image, labels = np.ones((6, 5, 3), np.int16), np.zeros((6, 5, 3), np.uint8)
    labels[2, 2, 1] = 1
    return save(tmp_path / "v_image.nii.gz", image), save(tmp_path / "v_label.nii.gz", labels)


def test_shapes_differ(pair):
    image, label = pair
    save(label, np.zeros((6, 5, 4), np.uint8))
    message = error_of(root=image.parent)
    assert str(label) in message and str(image) in message and "(6, 5, 4)" in message


def test_affines_differ(pair):
    image, label = pair
    shifted = AFFINE.copy()
    shifted[0, 3] = 2.0
    save(label, np.zeros((6, 5, 3), np.uint8), shifted)
    message = error_of(root=image.parent)
    assert str(label) in message and str(image) in message and "affine" in message


@pytest.mark.parametrize(("value", "shown"), [(3, "3"), (1.5, "1.5"), (-1, "-1")])
def test_label_outside_classes(pair, value, shown):
    image, label = pair
    labels = np.zeros((6, 5, 3), np.float32)
    labels[0, 0, 0] = value
    save(label, labels)
    message = error_of(root=image.parent)
    assert str(label) in message and f"label value(s) {shown} outside 0..2" in message


def test_truncated_volume(pair):
    image, _ = pair
    image.write_bytes(image.read_bytes()[:60])
    message = error_of(root=image.parent)
    assert str(image) in message and "unreadable or truncated" in message


def test_truncated_data_with_intact_header(pair):
    image, _ = pair
    raw = gzip.decompress(image.read_bytes())
    image.write_bytes(gzip.compress(raw[: len(raw) - 20]))  # the header reads, the voxels end early
    message = error_of(root=image.parent)
    assert str(image) in message and "unreadable or truncated" in message


def test_not_nifti(pair):
    _, label = pair
    label.write_bytes(b"plain text, not a volume")
    assert str(label) in error_of(root=label.parent)


def test_four_dimensional(pair):
    image, _ = pair
    save(image, np.ones((6, 5, 3, 2), np.int16))
    message = error_of(root=image.parent)
    assert str(image) in message and "3-D" in message


def test_missing_partner_files(pair, tmp_path):
    image, label = pair
    label.unlink()
    message = error_of(root=tmp_path)
    assert str(image) in message and "no label volume" in message
    save(label, np.zeros((6, 5, 3), np.uint8))
    image.unlink()
    message = error_of(root=tmp_path)
    assert str(label) in message and "without its image" in message


def test_no_files_matching(tmp_path):
    save(tmp_path / "scan.nii.gz", np.zeros((2, 2, 2), np.int16))
    message = error_of(root=tmp_path)
    assert str(tmp_path) in message and "no files matching" in message


def test_pairs_csv_errors(pair, tmp_path):
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("image,mask\nv_image.nii.gz,v_label.nii.gz\n")
    message = error_of(pairs=csv_path)
    assert str(csv_path) in message and "label" in message
    csv_path.write_text("image,label\nv_image.nii.gz,v_label.nii.gz\nv_image.nii.gz,gone.nii.gz\n")
    message = error_of(pairs=csv_path)
    assert f"{csv_path}, line 3" in message and "gone.nii.gz" in message
    assert "data.nifti.pairs" in error_of(pairs=tmp_path / "absent.csv")


def test_only_empty_slices_left(pair):
    image, label = pair
    save(label, np.zeros((6, 5, 3), np.uint8))
    assert "keep_empty_slices" in error_of(root=image.parent, keep_empty_slices=False)


def test_bad_options(pair):
    root = pair[0].parent
    assert "set exactly one of root" in error_of(root=root, pairs=root / "x.csv")
    assert "set exactly one of root" in error_of()
    assert "data.nifti.root" in error_of(root=root / "absent")
    assert "data.nifti.classes" in error_of(root=root, classes=[])
    assert "data.nifti.axis" in error_of(root=root, axis=3)
    assert "data.nifti.clip_percentiles" in error_of(root=root, clip_percentiles=[99, 1])
    assert "data.nifti.clip_percentiles" in error_of(root=root, clip_percentiles=[5])


def test_example_config_prepares_the_shipped_example(monkeypatch):
    import yaml

    config = yaml.safe_load((Path(__file__).parent / "configs" / "nifti.yaml").read_text())["data"]
    monkeypatch.chdir(Path(__file__).parents[1])  # the workflow runs from the repository root
    data = nifti.prepare(image_size=config["image_size"], **settings.fill("data.nifti", config["nifti"]))
    assert data.images.shape == (24, 32, 32) and len(set(data.groups.tolist())) == config["folds"]
