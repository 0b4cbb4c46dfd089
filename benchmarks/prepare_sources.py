"""What each data source costs to prepare: time and disk, measured on generated data.

Writes N synthetic MRI-like slices (266x266, 16-bit, smooth anatomy plus noise, three
organ masks) in three forms: the competition's archive, an image/mask folder and NIfTI
volumes of 144 slices; then times extracting the archive (data.uwmadison.source: a .zip),
preparing it with the uwmadison loader, preparing the folder and the NIfTI volumes, and
prints a table with the measured numbers and their linear extrapolation to the study's
38,496 slices.

    PYTHONPATH=src python benchmarks/prepare_sources.py --slices 576 --image-size 224
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

STUDY_SLICES = 38_496
SIDE = 266
DEPTH = 144  # slices per scan


def disk_bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def synthetic_slice(rng: np.random.Generator, index: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[:SIDE, :SIDE] / SIDE
    body = ((rows - 0.5) / 0.42) ** 2 + ((cols - 0.5) / 0.46) ** 2 <= 1
    phase = index / DEPTH * 2 * np.pi
    organs = [((rows - 0.35 - 0.05 * np.sin(phase)) / 0.12) ** 2 + ((cols - 0.4) / 0.15) ** 2 <= 1,
              ((rows - 0.65) / 0.1) ** 2 + ((cols - 0.6 - 0.05 * np.cos(phase)) / 0.12) ** 2 <= 1,
              ((rows - 0.45) / 0.08) ** 2 + ((cols - 0.7) / 0.07) ** 2 <= 1]
    texture = 300 * np.sin(9 * rows + index / 7) * np.cos(7 * cols)
    image = body * (700 + texture) + sum(250 * (k + 1) * organ for k, organ in enumerate(organs))
    image = np.clip(image + rng.normal(0, 25, image.shape), 0, 65535).astype(np.uint16)
    masks = np.stack(organs).astype(np.uint8) * body
    return image, masks


def rle(mask: np.ndarray) -> str:
    flat = np.concatenate([[0], mask.ravel(), [0]])
    edges = np.flatnonzero(flat[1:] != flat[:-1])
    return " ".join(f"{start + 1} {end - start}" for start, end in zip(edges[0::2], edges[1::2]))


def write_sources(folder: Path, n: int) -> dict[str, Path]:
    """The same slices as the competition's archive, an image/mask folder and NIfTI volumes."""
    import nibabel
    from PIL import Image

    rng = np.random.default_rng(0)
    archive_path, images_root, nifti_root = folder / "competition.zip", folder / "own", folder / "volumes"
    for sub in ("images", "masks"):
        (images_root / sub).mkdir(parents=True)
    nifti_root.mkdir()
    rows, volume, labels = [], [], []
    with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in range(n):
            case, number = index // DEPTH + 1, index % DEPTH + 1
            image, masks = synthetic_slice(rng, index)
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            archive.writestr(f"train/case{case}/case{case}_day0/scans/slice_{number:04d}_{SIDE}_{SIDE}_1.50_1.50.png",
                             buffer.getvalue())
            rows += [(f"case{case}_day0_slice_{number:04d}", name, rle(mask))
                     for name, mask in zip(("large_bowel", "small_bowel", "stomach"), masks)]
            label = np.zeros((SIDE, SIDE), np.uint8)
            for k, mask in enumerate(masks, start=1):
                label[mask > 0] = k
            (images_root / "images" / f"case{case}_{number:04d}.png").write_bytes(buffer.getvalue())
            Image.fromarray(label).save(images_root / "masks" / f"case{case}_{number:04d}.png")
            volume.append(image)
            labels.append(label)
            if len(volume) == DEPTH or index == n - 1:
                affine = np.diag([1.5, 1.5, 3.0, 1.0])
                nibabel.save(nibabel.Nifti1Image(np.stack(volume, -1).astype(np.int16), affine),
                             nifti_root / f"case{case}_image.nii.gz")
                nibabel.save(nibabel.Nifti1Image(np.stack(labels, -1), affine), nifti_root / f"case{case}_label.nii.gz")
                volume, labels = [], []
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["id", "class", "segmentation"])
        writer.writerows(rows)
        archive.writestr("train.csv", table.getvalue())
    return {"zip": archive_path, "folder": images_root, "nifti": nifti_root}


def contract_dataset(**fields):
    return SimpleNamespace(**fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=576)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()

    from advseg.datasets import folder, nifti, prepare_dataset, sources
    from advseg.datasets.slices import SliceDataset

    if "volumes" not in getattr(SliceDataset, "__dataclass_fields__", {}):  # a branch before the contract's class
        folder.SliceDataset = nifti.SliceDataset = contract_dataset
    work = Path(tempfile.mkdtemp(prefix="advseg-prepare-bench-"))
    try:
        start = time.perf_counter()
        paths = write_sources(work, args.slices)
        print(f"generated {args.slices} slices in {time.perf_counter() - start:.1f} s under {work}")
        rows = []

        start = time.perf_counter()
        root = sources.resolve_source(paths["zip"], work / "cache")
        rows.append(("uwmadison source: .zip -> extracted folder", time.perf_counter() - start,
                     paths["zip"].stat().st_size, disk_bytes(root)))
        start = time.perf_counter()
        prepare_dataset("uwmadison", args.image_size, root=str(root), exclude=[])
        rows.append(("uwmadison prepare (extracted folder)", time.perf_counter() - start, disk_bytes(root), 0))
        start = time.perf_counter()
        prepare_dataset("folder", args.image_size, root=str(paths["folder"]), classes=["a", "b", "c"],
                        group_pattern=r"(?P<group>case\d+)_(?P<position>\d+)")
        rows.append(("folder prepare (PNG images + label maps)", time.perf_counter() - start,
                     disk_bytes(paths["folder"]), 0))
        start = time.perf_counter()
        prepare_dataset("nifti", args.image_size, root=str(paths["nifti"]), classes=["a", "b", "c"])
        rows.append((f"nifti prepare ({DEPTH}-slice .nii.gz volumes)", time.perf_counter() - start,
                     disk_bytes(paths["nifti"]), 0))

        scale = STUDY_SLICES / args.slices
        print(f"\n{args.slices} slices of {SIDE}x{SIDE} -> {args.image_size}x{args.image_size}; "
              f"'x{scale:.0f}' columns extrapolate linearly to {STUDY_SLICES} slices\n")
        print(f"{'step':46s} {'time s':>8s} {'input MB':>9s} {'written MB':>10s} | {'time min x':>10s} "
              f"{'input GB x':>10s} {'written GB x':>12s}")
        for step, seconds, read, written in rows:
            print(f"{step:46s} {seconds:8.1f} {read / 1e6:9.1f} {written / 1e6:10.1f} | {seconds * scale / 60:10.1f} "
                  f"{read * scale / 1e9:10.2f} {written * scale / 1e9:12.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
