"""Write the small example datasets shipped in tests/data (and, on request, example weights).

Synthetic phantoms, not anatomy: an elliptical body with a "liver" and a "kidney" that
move from slice to slice and are absent from some slices, so the examples hold empty
masks, single-class slices and non-square images. Deterministic: running this again
writes the same pixels.

    python tests/data/make_examples.py                       # folder_example/ and nifti_example/
    python tests/data/make_examples.py --checkpoints results/imported   # weights for tests/configs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
CLASSES = ("liver", "kidney")
PATIENTS = 4
SLICES = 6
ROWS, COLS = 40, 48  # non-square, as many scans are
VOXEL_MM = (1.5, 1.5, 3.0)
# the weights tests/configs/{folder,nifti}.yaml import: file name -> (arch, encoder, in_channels)
CHECKPOINTS = {"Unet-resnet18.pt": ("Unet", "resnet18", 3), "FPN-mobilenet_v2-1ch.pt": ("FPN", "mobilenet_v2", 1)}


def ellipse(centre_row: float, centre_col: float, radius_rows: float, radius_cols: float) -> np.ndarray:
    rows, cols = np.mgrid[:ROWS, :COLS]
    return ((rows - centre_row) / radius_rows) ** 2 + ((cols - centre_col) / radius_cols) ** 2 <= 1


def phantom(patient: int, position: int) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 (ROWS, COLS), labels uint8) of one slice: 0 background, 1 liver, 2 kidney."""
    rng = np.random.default_rng(1000 * patient + position)
    body = ellipse(20, 24, 17, 21 + patient)
    liver = ellipse(15 + position, 16 + patient, 6 + (position % 3), 8) & body
    kidney = ellipse(26, 32 - patient, 4, 3) & body & (position % 3 != 0)  # absent from every third slice
    labels = np.zeros((ROWS, COLS), np.uint8)
    if position < SLICES - 1:  # the last slice of each scan has no organ at all
        labels[liver] = 1
        labels[kidney & ~liver] = 2
    image = 60.0 * body + 80.0 * (labels == 1) + 140.0 * (labels == 2) + rng.integers(0, 2, (ROWS, COLS))
    return np.clip(image, 0, 255).astype(np.uint8), labels


def write_folder_example(root: Path) -> None:
    """images/patientP_sliceSS.png and masks/patientP_sliceSS.png (label maps)."""
    from PIL import Image

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for patient in range(1, PATIENTS + 1):
        for position in range(SLICES):
            image, labels = phantom(patient, position)
            name = f"patient{patient}_slice{position:02d}.png"
            Image.fromarray(image).save(root / "images" / name, optimize=True)
            Image.fromarray(labels).save(root / "masks" / name, optimize=True)


def write_nifti_example(root: Path) -> None:
    """patientP_image.nii.gz and patientP_label.nii.gz, slices stacked along the third (axial) axis."""
    import nibabel

    root.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*VOXEL_MM, 1.0])
    for patient in range(1, PATIENTS + 1):
        pairs = [phantom(patient, position) for position in range(SLICES)]
        # array axes (x, y, z): a slice's rows run along x, its columns along y
        image = np.stack([image for image, _ in pairs], axis=-1).astype(np.int16)
        labels = np.stack([labels for _, labels in pairs], axis=-1)
        for kind, data in (("image", image), ("label", labels)):
            volume = nibabel.Nifti1Image(data, affine)
            volume.header.set_xyzt_units("mm")
            nibabel.save(volume, root / f"patient{patient}_{kind}.nii.gz")


def write_checkpoints(folder: Path, classes: int = len(CLASSES)) -> None:
    """Random-weight state_dicts saved with torch.save, standing in for models trained elsewhere."""
    import segmentation_models_pytorch as smp
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    for name, (arch, encoder, in_channels) in CHECKPOINTS.items():
        torch.manual_seed(0)
        model = smp.create_model(arch, encoder_name=encoder, encoder_weights=None, in_channels=in_channels,
                                 classes=classes)
        torch.save(model.state_dict(), folder / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where folder_example/ and nifti_example/ go")
    parser.add_argument("--checkpoints", type=Path, help="also write the example weights into this folder")
    args = parser.parse_args()
    write_folder_example(args.out / "folder_example")
    write_nifti_example(args.out / "nifti_example")
    if args.checkpoints:
        write_checkpoints(args.checkpoints)


if __name__ == "__main__":
    main()
