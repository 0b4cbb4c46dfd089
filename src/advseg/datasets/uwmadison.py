"""The study's data: Kaggle's "UW-Madison GI Tract Image Segmentation" MRI slices.

Abdominal MRI scans of cancer patients, labelled large bowel, small bowel and stomach
(Lee et al., Data in Brief 57, 111159 (2024)). The download needs a Kaggle account that
accepted the competition rules::

    kaggle competitions download -c uw-madison-gi-tract-image-segmentation

Unzip it into ``data.uwmadison.root``, which then holds

* ``train/caseN/caseN_dayM/scans/slice_SSSS_W_H_PW_PH.png``: one 16-bit greyscale PNG per
  slice, W x H pixels (so an array of shape (H, W)) of PW x PH mm;
* ``train.csv`` with columns ``id,class,segmentation``: three rows per slice (id
  ``caseN_dayM_slice_SSSS``), one per class, the mask run-length encoded as
  "start length start length ..." with 1-based starts, empty where the organ is absent.

Pixel order: the runs count pixels row by row over the PNG array's (rows, cols) shape,
as the widely used public notebooks decode them (``mask.reshape(image.shape[:2])``),
whose masks line up with the anatomy. ``rle_order: column`` (Fortran order) is kept as
an option. Only non-square slices tell the two orders apart.

As in the study, two scans are excluded (case7_day0, case81_day30), splits keep each case
together (``groups``: all days of a patient), and each slice is resized and divided by its
own maximum (after resizing, so that every slice peaks at exactly 1). ``volumes`` numbers
the scans (caseN_dayM) in sorted order, ``positions`` is the slice number within its scan.
All slices are kept unless ``only_labelled`` (the metrics already skip slices whose mask is
empty). An ``exclude`` entry that names no scan of the data is an error: a typo there would
otherwise silently keep the scan.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from advseg.datasets.slices import SliceDataset, resize_slices, scale_by_max

CLASS_NAMES = ("large_bowel", "small_bowel", "stomach")
COLUMNS = ("id", "class", "segmentation")
ORDERS = {"row": "C", "column": "F"}
DOWNLOAD = ("download the data with a Kaggle account that accepted the competition rules "
            "(kaggle competitions download -c uw-madison-gi-tract-image-segmentation), unzip it "
            "and set data.uwmadison.root to the folder holding train.csv and train/")
SCAN = re.compile(r"case(\d+)_day(\d+)")
SLICE_ID = re.compile(r"case(\d+)_day(\d+)_slice_(\d+)")
SLICE_FILE = re.compile(r"slice_(\d+)_(\d+)_(\d+)_\d+(?:\.\d+)?_\d+(?:\.\d+)?\.png")


def _numpy_order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"data.uwmadison.rle_order: {order!r} is not one of {', '.join(ORDERS)}")
    return ORDERS[order]


def rle_runs(rle: str, n_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """0-based starts and lengths of "start length ..." (1-based starts), checked against n_pixels."""
    try:
        numbers = np.array(rle.split(), dtype=np.int64)
    except ValueError:
        raise ValueError(f"run-length code {rle[:40]!r}: not a list of integers") from None
    if len(numbers) % 2:
        raise ValueError(f"run-length code {rle[:40]!r}: odd number of values ({len(numbers)})")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    if len(starts) and (starts.min() < 0 or lengths.min() < 1 or (starts + lengths).max() > n_pixels):
        raise ValueError(f"run-length code {rle[:40]!r}: runs go beyond an image of {n_pixels} pixels")
    return starts, lengths


def rle_decode(rle: str, shape: tuple[int, int], order: str = "row") -> np.ndarray:
    """(rows, cols) uint8 mask of a run-length code; runs count pixels in ``order`` (row or column)."""
    numpy_order = _numpy_order(order)
    flat = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for start, length in zip(*rle_runs(rle, flat.size)):
        flat[start:start + length] = 1
    return flat.reshape(shape, order=numpy_order)


def rle_encode(mask: np.ndarray, order: str = "row") -> str:
    """Run-length code of a 2-D mask (the inverse of :func:`rle_decode`); "" when empty."""
    flat = np.concatenate([[0], np.asarray(mask).ravel(order=_numpy_order(order)) > 0, [0]])
    edges = np.flatnonzero(flat[1:] != flat[:-1])  # run starts and ends, 0-based
    starts, ends = edges[0::2], edges[1::2]
    return " ".join(f"{start + 1} {end - start}" for start, end in zip(starts, ends))


def parse_slice_path(path) -> tuple[int, int, int, int, int]:
    """(case, day, slice number, width, height) of ``.../caseN_dayM/scans/slice_SSSS_W_H_PW_PH.png``."""
    path = Path(path)
    scan, name = SCAN.fullmatch(path.parent.parent.name), SLICE_FILE.fullmatch(path.name)
    if scan is None or name is None or path.parent.name != "scans":
        raise ValueError(f"{path}: not a slice file (expected caseN_dayM/scans/slice_SSSS_W_H_PW_PH.png)")
    return (int(scan[1]), int(scan[2]), int(name[1]), int(name[2]), int(name[3]))


@dataclass(frozen=True)
class Slice:
    key: tuple[int, int, int]  # (case, day, slice number): the sort order
    path: Path
    height: int
    width: int
    rles: tuple[str, ...]      # one per class, in CLASS_NAMES order


def find_pngs(root: Path) -> dict[tuple[int, int, int], tuple[Path, int, int]]:
    """Every slice PNG under root/train by (case, day, slice): its path, height and width."""
    pngs = {}
    for path in sorted((root / "train").glob("*/*/scans/*.png")):
        case, day, number, width, height = parse_slice_path(path)
        if (case, day, number) in pngs:
            raise ValueError(f"{path}: a second file for slice {number} (also {pngs[case, day, number][0]})")
        pngs[case, day, number] = (path, height, width)
    return pngs


def read_labels(path: Path) -> dict[tuple[int, int, int], list[str]]:
    """The run-length codes of train.csv by (case, day, slice), one per class ("" = absent)."""
    if not path.is_file():
        raise ValueError(f"{path}: train.csv missing; {DOWNLOAD}")
    labels = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in COLUMNS if column not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: column(s) {', '.join(missing)} missing (expected {','.join(COLUMNS)})")
        for line, row in enumerate(reader, start=2):
            match = SLICE_ID.fullmatch(row["id"])
            if match is None:
                raise ValueError(f"{path}, line {line}: id {row['id']!r} is not caseN_dayM_slice_SSSS; "
                                 f"fix that row or download and unzip the data again")
            if row["class"] not in CLASS_NAMES:
                raise ValueError(f"{path}, line {line}: unknown class {row['class']!r} "
                                 f"(expected one of {', '.join(CLASS_NAMES)})")
            codes = labels.setdefault(tuple(int(group) for group in match.groups()), [None] * len(CLASS_NAMES))
            column = CLASS_NAMES.index(row["class"])
            if codes[column] is not None:
                raise ValueError(f"{path}, line {line}: a second row for {row['id']} {row['class']}")
            codes[column] = (row["segmentation"] or "").strip()
    return {key: [code or "" for code in codes] for key, codes in labels.items()}


def find_slices(root, order: str, exclude, only_labelled: bool) -> list[Slice]:
    """The slices to prepare, sorted by (case, day, slice), all checked before any image is read."""
    if root is None or not Path(root).is_dir():
        raise ValueError(f"data.uwmadison.root: {root!r} is not a folder; {DOWNLOAD}")
    root = Path(root)
    _numpy_order(order)
    excluded = {}
    for scan in exclude:
        if SCAN.fullmatch(str(scan)) is None:
            raise ValueError(f"data.uwmadison.exclude: {scan!r} is not a scan id like case7_day0")
        excluded[tuple(int(group) for group in SCAN.fullmatch(scan).groups())] = scan
    labels, pngs = read_labels(root / "train.csv"), find_pngs(root)
    known = {key[:2] for key in labels} | {key[:2] for key in pngs}
    unmatched = [name for scan, name in excluded.items() if scan not in known]
    if unmatched:
        raise ValueError(f"data.uwmadison.exclude: {', '.join(map(repr, unmatched))} matches no scan of "
                         f"{root / 'train.csv'} or {root / 'train'}")
    slices = []
    for key in sorted(labels):
        name = "case{}_day{}_slice_{:04d}".format(*key)
        if key[:2] in excluded or (only_labelled and not any(labels[key])):
            continue
        if key not in pngs:
            raise ValueError(f"train.csv id {name}: no PNG under "
                             f"{root / 'train' / f'case{key[0]}' / f'case{key[0]}_day{key[1]}' / 'scans'}")
        path, height, width = pngs[key]
        for code in labels[key]:
            try:
                rle_runs(code, height * width)
            except ValueError as error:
                raise ValueError(f"{root / 'train.csv'} id {name}: {error}; fix that row or download and unzip "
                                 f"the data again") from None
        slices.append(Slice(key, path, height, width, tuple(labels[key])))
    if not slices:
        raise ValueError(f"{root / 'train.csv'}: no slices left after exclusions")
    return slices


def read_slice(path: Path, height: int, width: int) -> np.ndarray:
    """A 16-bit PNG as float32, checked against the (height, width) its name gives."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            pixels = np.array(image)
    except (OSError, SyntaxError, ValueError) as error:  # PIL: truncated, not an image, bad chunk
        raise ValueError(f"{path}: not a readable PNG ({error}); download and unzip the data again") from None
    if pixels.shape != (height, width):
        raise ValueError(f"{path}: image of shape {pixels.shape}, its name says (height, width) = "
                         f"{(height, width)}")
    return pixels.astype(np.float32)


def prepare(image_size: int, *, root: str | Path | None, rle_order: str, exclude, only_labelled: bool,
            source: str | None, cache: str) -> SliceDataset:
    """Every slice of every scan not excluded (options: ``data.uwmadison``, defaults in the schema)."""
    if source is not None and root is not None:
        raise ValueError("data.uwmadison: give source or root, not both")
    if source is not None:
        from advseg.datasets.sources import resolve_source

        root = resolve_source(source, cache)
    slices = find_slices(root, rle_order, exclude, only_labelled)
    scans = sorted({item.key[:2] for item in slices})
    scan_index = {scan: index for index, scan in enumerate(scans)}
    images = np.empty((len(slices), image_size, image_size), dtype=np.float32)
    masks = np.empty((len(slices), len(CLASS_NAMES), image_size, image_size), dtype=np.uint8)
    for index, item in enumerate(slices):                 # slices differ in size: one at a time
        mask = np.stack([rle_decode(code, (item.height, item.width), rle_order) for code in item.rles])
        image, mask = resize_slices(read_slice(item.path, item.height, item.width)[None], mask[None],
                                    image_size)
        images[index], masks[index] = scale_by_max(image)[0], mask[0]
    return SliceDataset(images=images, masks=masks,
                        groups=np.array([item.key[0] for item in slices], dtype=np.int64),
                        volumes=np.array([scan_index[item.key[:2]] for item in slices], dtype=np.int64),
                        positions=np.array([item.key[2] for item in slices], dtype=np.int64),
                        class_names=CLASS_NAMES, unit="case")
