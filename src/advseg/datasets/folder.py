"""Your own 2-D data: a folder of greyscale images and their masks (``data.name: folder``).

``root`` holds ``images/`` and ``masks/``; images are 8- or 16-bit greyscale PNG or TIFF
(float TIFF too), masks are either

* ``labelmap``: one file per image with the image's name (any of the suffixes), pixel
  value 0 = background and k = the k-th class of ``classes``; or
* ``per_class``: one binary file per image and class, ``<image name>_<class>.png``
  (0 = absent, one other value such as 1 or 255 = present).

``group_pattern`` is a regular expression searched in each image's file name whose named
group ``group`` says what a split keeps together (e.g. the patient); an optional named
group ``position`` (digits) gives the slice's index within its scan. Without a pattern
each image is its own group. Images are resized like the study's data (area-averaged,
masks nearest) and each divided by its own maximum. Every problem is a ValueError that
names the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from advseg.datasets.slices import SliceDataset, resize_slices, scale_by_max

KEY = "data.folder"
SUFFIXES = (".png", ".tif", ".tiff")
MASK_FORMATS = ("labelmap", "per_class")
GREY_MODES = ("L", "I;16", "I;16B", "I;16L", "I;16N", "I", "F")
MASK_MODES = (*GREY_MODES, "1", "P")  # palette PNGs store label indices


def read_grey(path: Path, modes=GREY_MODES, what: str = "image") -> np.ndarray:
    """One single-page greyscale image as an array; every failure names the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pages = getattr(image, "n_frames", 1)
            if pages > 1:
                raise ValueError(f"{path}: a multi-page {what} ({pages} pages); save one slice per file")
            if image.mode not in modes:
                raise ValueError(f"{path}: {what} in colour mode {image.mode!r}; save it as 8- or 16-bit "
                                 "greyscale")
            pixels = np.array(image)
    except (OSError, UnidentifiedImageError, SyntaxError, EOFError) as error:
        raise ValueError(f"{path}: unreadable or truncated {what} ({error})") from None
    if pixels.ndim != 2:
        raise ValueError(f"{path}: {what} of shape {pixels.shape}, expected a 2-D greyscale image")
    return pixels


def image_files(folder: Path) -> dict[str, Path]:
    """Image files of a folder by name without suffix; two files of one name are an error."""
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in SUFFIXES:
            if path.stem in files:
                raise ValueError(f"{path}: a second file named {path.stem!r} (also {files[path.stem]})")
            files[path.stem] = path
    return files


def check_options(root, classes, mask_format: str) -> tuple[Path, tuple[str, ...]]:
    if root is None or not Path(root).is_dir():
        raise ValueError(f"{KEY}.root: {root!r} is not a folder (it should hold images/ and masks/)")
    root = Path(root)
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise ValueError(f"{root / sub}: folder missing ({KEY}.root needs images/ and masks/)")
    if isinstance(classes, str) or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"{KEY}.classes: {classes!r} should be a list of distinct class names, in label order")
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"{KEY}.mask_format: {mask_format!r} is not one of {', '.join(MASK_FORMATS)}")
    return root, tuple(str(name) for name in classes)


def mask_paths(images: dict[str, Path], masks: dict[str, Path], classes: tuple[str, ...],
               mask_format: str, folder: Path) -> dict[str, list[Path]]:
    """The mask file(s) of every image; missing or unclaimed mask files are errors."""
    wanted = {stem: [stem] if mask_format == "labelmap" else [f"{stem}_{name}" for name in classes]
              for stem in images}
    claimed = {name for names in wanted.values() for name in names}
    for name, path in masks.items():
        if name not in claimed:
            expected = "<image name>" if mask_format == "labelmap" else "<image name>_<class>"
            raise ValueError(f"{path}: a mask that belongs to no image (expected {expected} with an image in "
                             f"{folder.parent / 'images'}; {KEY}.mask_format is {mask_format})")
    paths = {}
    for stem, names in wanted.items():
        for name in names:
            if name not in masks:
                raise ValueError(f"{images[stem]}: mask missing, expected {folder / (name + '.png')} "
                                 f"({KEY}.mask_format: {mask_format})")
        paths[stem] = [masks[name] for name in names]
    return paths


def split_labels(stems: list[str], images: dict[str, Path], pattern: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(group, position) of every image from group_pattern; without one each image is a group."""
    if pattern is None:
        return np.arange(len(stems)), np.zeros(len(stems), dtype=np.int64)
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"{KEY}.group_pattern: {pattern!r} is not a regular expression ({error})") from None
    if "group" not in regex.groupindex:
        raise ValueError(f"{KEY}.group_pattern: {pattern!r} has no named group (?P<group>...)")
    labels, explicit = [], []
    for stem in stems:
        match = regex.search(images[stem].name)
        if match is None or match["group"] is None:
            raise ValueError(f"{images[stem]}: file name does not match {KEY}.group_pattern {pattern!r}")
        labels.append(match["group"])
        if "position" in regex.groupindex:
            if not (match["position"] or "").isdigit():
                raise ValueError(f"{images[stem]}: position {match['position']!r} of {KEY}.group_pattern "
                                 "is not a number")
            explicit.append(int(match["position"]))
    names = sorted(set(labels))
    groups = np.array([names.index(label) for label in labels])
    if explicit:
        positions = np.array(explicit)
    else:  # the order of the file names within each group
        positions = np.zeros(len(stems), dtype=np.int64)
        for group in range(len(names)):
            members = np.flatnonzero(groups == group)
            positions[members] = np.arange(len(members))
    return groups, positions


def read_mask(paths: list[Path], shape: tuple[int, int], classes: tuple[str, ...], mask_format: str,
              image: Path) -> np.ndarray:
    """(C, H, W) uint8 binary masks of one image, checked against its size and the classes."""
    layers = []
    for path in paths:
        pixels = read_grey(path, MASK_MODES, "mask")
        if pixels.shape != shape:
            raise ValueError(f"{path}: mask of shape {pixels.shape}, its image {image} has {shape}")
        values = np.unique(pixels)
        if mask_format == "labelmap":
            outside = values[(values < 0) | (values > len(classes)) | (values != np.round(values))]
            if len(outside):
                raise ValueError(f"{path}: label value(s) {', '.join(map(str, outside[:5].tolist()))} outside "
                                 f"0..{len(classes)} ({KEY}.classes has {len(classes)}: {', '.join(classes)})")
            return np.stack([pixels == label for label in range(1, len(classes) + 1)]).astype(np.uint8)
        if len(values[values != 0]) > 1 or (values < 0).any():
            raise ValueError(f"{path}: not a binary mask (values {', '.join(map(str, values[:5].tolist()))}); "
                             "per_class masks hold 0 and one other value")
        layers.append(pixels != 0)
    return np.stack(layers).astype(np.uint8)


def prepare(image_size: int, *, root: str | Path | None, classes, mask_format: str,
            group_pattern: str | None) -> SliceDataset:
    """Every image with its masks (options: ``data.folder``, defaults in the schema)."""
    root, classes = check_options(root, classes, mask_format)
    images = image_files(root / "images")
    if not images:
        raise ValueError(f"{root / 'images'}: no {' / '.join(SUFFIXES)} files")
    masks = mask_paths(images, image_files(root / "masks"), classes, mask_format, root / "masks")
    stems = sorted(images)
    groups, positions = split_labels(stems, images, group_pattern)
    prepared_images = np.empty((len(stems), image_size, image_size), dtype=np.float32)
    prepared_masks = np.empty((len(stems), len(classes), image_size, image_size), dtype=np.uint8)
    for index, stem in enumerate(stems):  # images may differ in size: one at a time
        pixels = read_grey(images[stem]).astype(np.float32)
        if not np.isfinite(pixels).all() or pixels.min() < 0:
            raise ValueError(f"{images[stem]}: negative or non-finite intensities; expected grey levels >= 0")
        mask = read_mask(masks[stem], pixels.shape, classes, mask_format, images[stem])
        image, mask = resize_slices(pixels[None], mask[None], image_size)
        prepared_images[index], prepared_masks[index] = scale_by_max(image)[0], mask[0]
    return SliceDataset(images=prepared_images, masks=prepared_masks, groups=groups, volumes=groups.copy(),
                        positions=positions, class_names=classes,
                        unit="group of images (data.folder.group_pattern)" if group_pattern else "image")
