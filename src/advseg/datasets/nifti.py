"""Your own 3-D scans: NIfTI image volumes with label volumes (``data.name: nifti``).

Volumes come as pairs, either found in ``root`` (``<id>_image.nii.gz`` with
``<id>_label.nii.gz``; ``.nii`` works too) or listed in a CSV (``pairs``) with columns
``image,label`` and optionally ``group`` (volumes of one patient kept together), paths
relative to the CSV. A label volume holds 0 = background and k = the k-th class of
``classes``; image and label must have the same shape and affine.

Each volume is turned to the closest RAS+ orientation first, so ``axis`` means the same
for every scan whatever its storage order: 0 sagittal, 1 coronal, 2 axial (the default).
Intensities are clipped to the volume's ``clip_percentiles`` and shifted so the lower
bound is 0; slices are then resized and divided by their own maximum like the other
datasets. One volume is one split group unless the CSV says otherwise; slices without
any label are dropped unless ``keep_empty_slices``.
"""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

import numpy as np

from advseg.datasets.slices import SliceDataset, resize_slices, scale_by_max

KEY = "data.nifti"
IMAGE_SUFFIXES = ("_image.nii.gz", "_image.nii")
AFFINE_TOLERANCE_MM = 1e-3


def read_volume(path: Path, what: str):
    """A 3-D NIfTI volume in RAS+ orientation, as (nibabel image, data); errors name the file."""
    import nibabel
    from nibabel.filebasedimages import ImageFileError

    try:
        image = nibabel.load(path)
        if len(image.shape) == 4 and image.shape[3] == 1:
            image = image.slicer[..., 0]
        if len(image.shape) == 3:
            canonical = nibabel.as_closest_canonical(image)
            data = np.asarray(canonical.dataobj, dtype=np.float32)
    except (OSError, EOFError, zlib.error, ImageFileError, ValueError) as error:
        raise ValueError(f"{path}: unreadable or truncated {what} ({type(error).__name__}: {error})") from None
    if len(image.shape) != 3:
        raise ValueError(f"{path}: a {what} of shape {image.shape}, expected a 3-D volume")
    return image, data


def find_pairs(root, pairs) -> list[tuple[Path, Path, str]]:
    """(image, label, group name) of every volume, from root's file names or the pairs CSV."""
    if (root is None) == (pairs is None):
        raise ValueError(f"{KEY}: set exactly one of root (a folder of <id>_image.nii.gz + <id>_label.nii.gz) "
                         f"and pairs (a CSV with columns image,label)")
    if pairs is not None:
        return read_pairs_csv(Path(pairs))
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{KEY}.root: {str(root)!r} is not a folder")
    found, labels = [], set()
    for path in sorted(root.iterdir()):
        for suffix in IMAGE_SUFFIXES:
            if path.name.endswith(suffix):
                volume_id = path.name[: -len(suffix)]
                candidates = [root / f"{volume_id}_label{ending}" for ending in (".nii.gz", ".nii")]
                label = next((candidate for candidate in candidates if candidate.is_file()), None)
                if label is None:
                    raise ValueError(f"{path}: no label volume, expected {candidates[0]}")
                found.append((path, label, volume_id))
                labels.add(label.name)
                break
    for path in sorted(root.glob("*_label.nii*")):
        if path.name not in labels:
            raise ValueError(f"{path}: a label volume without its image (<id>_image.nii.gz)")
    if not found:
        raise ValueError(f"{root}: no files matching <id>_image.nii.gz (or .nii) with <id>_label.nii.gz")
    return found


def read_pairs_csv(path: Path) -> list[tuple[Path, Path, str]]:
    if not path.is_file():
        raise ValueError(f"{KEY}.pairs: {str(path)!r} is not a file")
    found = []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in ("image", "label") if column not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: column(s) {', '.join(missing)} missing (expected image,label[,group])")
        for line, row in enumerate(reader, start=2):
            files = []
            for column in ("image", "label"):
                file = path.parent / (row[column] or "").strip()
                if not (row[column] or "").strip() or not file.is_file():
                    raise ValueError(f"{path}, line {line}: {column} file {str(file)!r} not found")
                files.append(file)
            group = (row.get("group") or "").strip() or str(files[0])
            found.append((files[0], files[1], group))
    if not found:
        raise ValueError(f"{path}: no volume pairs listed")
    return found


def check_options(classes, axis: int, clip_percentiles) -> tuple[tuple[str, ...], tuple[float, float] | None]:
    if isinstance(classes, str) or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"{KEY}.classes: {classes!r} should be a list of distinct class names (label 1, 2, ...)")
    if axis not in (0, 1, 2):
        raise ValueError(f"{KEY}.axis: {axis!r} is not 0, 1 or 2")
    if clip_percentiles is not None:
        if (len(clip_percentiles) != 2 or not 0 <= clip_percentiles[0] < clip_percentiles[1] <= 100):
            raise ValueError(f"{KEY}.clip_percentiles: {clip_percentiles!r} should be [low, high] "
                             "with 0 <= low < high <= 100, or null")
        clip_percentiles = (float(clip_percentiles[0]), float(clip_percentiles[1]))
    return tuple(str(name) for name in classes), clip_percentiles


def read_pair(image_path: Path, label_path: Path, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Image data and integer labels of one volume pair, checked against each other and the classes."""
    image, data = read_volume(image_path, "image volume")
    label, labels = read_volume(label_path, "label volume")
    if image.shape != label.shape:
        raise ValueError(f"{label_path}: shape {label.shape} differs from its image {image_path} {image.shape}")
    difference = np.abs(image.affine - label.affine).max()
    if difference > AFFINE_TOLERANCE_MM:
        raise ValueError(f"{label_path}: affine differs from its image {image_path}'s by up to {difference:.4g} "
                         "(the label must lie on the image's voxel grid)")
    if not np.isfinite(data).all():
        raise ValueError(f"{image_path}: non-finite intensities (NaN or inf)")
    values = np.unique(labels)
    outside = values[(values < 0) | (values > len(classes)) | (values != np.round(values))]
    if len(outside):
        raise ValueError(f"{label_path}: label value(s) {', '.join(f'{v:g}' for v in outside[:5])} outside "
                         f"0..{len(classes)} ({KEY}.classes has {len(classes)}: {', '.join(classes)})")
    return data, labels.astype(np.int16)


def clip_intensities(data: np.ndarray, percentiles: tuple[float, float] | None) -> np.ndarray:
    """Clip to the volume's percentiles and shift the lower bound to 0."""
    low, high = np.percentile(data, percentiles) if percentiles else (data.min(), data.max())
    return np.clip(data, low, high) - low


def prepare(image_size: int, *, root: str | Path | None, pairs: str | Path | None, classes, axis: int,
            clip_percentiles, keep_empty_slices: bool) -> SliceDataset:
    """Every (kept) slice of every volume (options: ``data.nifti``, defaults in the schema)."""
    classes, percentiles = check_options(classes, axis, clip_percentiles)
    volumes = find_pairs(root, pairs)
    group_names = sorted({group for _, _, group in volumes})
    images, masks, groups, volume_ids, positions = [], [], [], [], []
    for volume, (image_path, label_path, group) in enumerate(volumes):
        data, labels = read_pair(image_path, label_path, classes)
        data = np.moveaxis(clip_intensities(data, percentiles), axis, 0)
        labels = np.moveaxis(labels, axis, 0)
        kept = np.arange(len(data)) if keep_empty_slices else np.flatnonzero(labels.reshape(len(labels), -1).any(1))
        if not len(kept):
            continue
        one_hot = np.stack([labels[kept] == k for k in range(1, len(classes) + 1)], axis=1).astype(np.uint8)
        resized_images, resized_masks = resize_slices(data[kept], one_hot, image_size)
        images.append(scale_by_max(resized_images))
        masks.append(resized_masks)
        groups.append(np.full(len(kept), group_names.index(group)))
        volume_ids.append(np.full(len(kept), volume))
        positions.append(kept)
    if not images:
        raise ValueError(f"{KEY}: no slice with a label in any volume (set keep_empty_slices: true to keep them)")
    return SliceDataset(images=np.concatenate(images), masks=np.concatenate(masks), groups=np.concatenate(groups),
                        volumes=np.concatenate(volume_ids), positions=np.concatenate(positions),
                        class_names=classes,
                        unit="volume" if len(group_names) == len(volumes) else "group of volumes (the pairs CSV's group)")
