"""Builders for the bring-your-own-data tests: the competition's archive, and the contract's dataset.

``write_competition_zip`` writes a small archive in the exact layout of Kaggle's
uw-madison-gi-tract-image-segmentation.zip (train.csv, sample_submission.csv,
train/caseN/caseN_dayM/scans/slice_SSSS_W_H_1.50_1.50.png as 16-bit PNGs) with several
cases and days, non-square slices, empty masks and all three classes. Its run-length codes
come from the small row-major encoder here, independent of advseg's.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from test_uwmadison import encode_row_major  # the RLE writer the loader tests use

CLASS_NAMES = ("large_bowel", "small_bowel", "stomach")
# (case, day) -> (width, height): landscape, portrait and square scans; two days of case 2
SCANS = {(2, 0): (28, 20), (2, 3): (28, 20), (9, 1): (20, 26), (15, 0): (24, 24)}
# slice number -> classes drawn: every organ, two organs, none (an empty mask)
SLICES = {1: CLASS_NAMES, 2: ("large_bowel", "stomach"), 3: ()}
# class -> rectangle (top, bottom, left, right) as fractions of the slice
RECTANGLES = {"large_bowel": (0.1, 0.45, 0.1, 0.5), "small_bowel": (0.55, 0.9, 0.6, 0.95),
              "stomach": (0.6, 0.85, 0.05, 0.4)}


def slice_arrays(case: int, day: int, number: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint16 image (H, W), uint8 masks (3, H, W)) of one slice of the archive."""
    width, height = SCANS[case, day]
    masks = np.zeros((3, height, width), np.uint8)
    for index, name in enumerate(CLASS_NAMES):
        if name in SLICES[number]:
            top, bottom, left, right = RECTANGLES[name]
            masks[index, int(top * height):int(bottom * height), int(left * width):int(right * width)] = 1
    rng = np.random.default_rng(100 * case + 10 * day + number)
    image = rng.integers(0, 300, (height, width)) + 900 * (masks * np.array([1, 2, 3])[:, None, None]).sum(0)
    return image.astype(np.uint16), masks


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")  # uint16 -> a 16-bit greyscale PNG
    return buffer.getvalue()


def write_competition_zip(path: Path, prefix: str = "") -> dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]]:
    """Write the archive; returns (image, masks) by (case, day, slice). ``prefix``: a folder around it all."""
    truth, rows = {}, []
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(prefix + "sample_submission.csv", "id,class,predicted\n")
        for (case, day), (width, height) in SCANS.items():
            scans = f"{prefix}train/case{case}/case{case}_day{day}/scans/"
            archive.writestr(scans, "")  # a directory entry, as zip tools write them
            for number in SLICES:
                image, masks = slice_arrays(case, day, number)
                archive.writestr(f"{scans}slice_{number:04d}_{width}_{height}_1.50_1.50.png", png_bytes(image))
                truth[case, day, number] = (image, masks)
                rows += [(f"case{case}_day{day}_slice_{number:04d}", name, encode_row_major(mask))
                         for name, mask in zip(CLASS_NAMES, masks)]
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["id", "class", "segmentation"])
        writer.writerows(rows)
        archive.writestr(prefix + "train.csv", table.getvalue())
    return truth


@dataclass(frozen=True)
class ContractSliceDataset:
    """The prepared dataset of the shared contract, for branches whose SliceDataset predates it."""
    images: np.ndarray
    masks: np.ndarray
    groups: np.ndarray
    volumes: np.ndarray
    positions: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self):
        n = len(self.images)
        assert self.images.ndim == 3 and self.images.dtype == np.float32
        assert self.masks.shape == (n, len(self.class_names), *self.images.shape[1:])
        assert self.masks.dtype == np.uint8
        for name in ("groups", "volumes", "positions"):
            assert getattr(self, name).shape == (n,), name


def use_contract_dataset(monkeypatch, *modules) -> None:
    """Let ``modules`` build the contract's SliceDataset even where slices.py still has the old one."""
    from advseg.datasets.slices import SliceDataset

    if "volumes" not in getattr(SliceDataset, "__dataclass_fields__", {}):
        for module in modules:
            monkeypatch.setattr(module, "SliceDataset", ContractSliceDataset)
