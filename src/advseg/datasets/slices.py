"""Prepared 2-D slices: the one file every training and attack job loads.

A prepared dataset is an uncompressed ``.npz``: grey images in [0, 1] (N, H, W),
binary masks (N, C, H, W), the validation flag and split group of each slice, and
the class names. Loading it takes milliseconds, so no job re-reads raw scans.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FIELDS = ("images", "masks", "is_val", "groups", "class_names")


@dataclass(frozen=True)
class SliceDataset:
    images: np.ndarray       # (N, H, W) float32 in [0, 1]
    masks: np.ndarray        # (N, C, H, W) uint8 in {0, 1}
    is_val: np.ndarray       # (N,) bool: the held-out split
    groups: np.ndarray       # (N,) int: what the split kept together (case, slab)
    class_names: tuple[str, ...]

    def __post_init__(self):
        n = len(self.images)
        if self.images.ndim != 3 or self.masks.shape != (n, len(self.class_names), *self.images.shape[1:]):
            raise ValueError(f"images {self.images.shape} and masks {self.masks.shape} do not match "
                             f"{len(self.class_names)} classes")
        if self.is_val.shape != (n,) or self.groups.shape != (n,):
            raise ValueError("is_val and groups need one entry per slice")
        if not (self.is_val.any() and (~self.is_val).any()):
            raise ValueError("the split leaves the training or the validation set empty")

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images and masks of the 'train' or 'val' slices."""
        chosen = {"train": ~self.is_val, "val": self.is_val}[name]
        return self.images[chosen], self.masks[chosen]

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as handle:  # a file object keeps np.savez from appending '.npz'
            np.savez(handle, images=self.images.astype(np.float32), masks=self.masks.astype(np.uint8),
                     is_val=self.is_val, groups=self.groups, class_names=np.array(self.class_names))
        partial.replace(path)  # a killed job leaves no half-written dataset behind

    @classmethod
    def load(cls, path: Path) -> "SliceDataset":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = [field for field in FIELDS if field not in archive.files]
                if missing:
                    raise ValueError(f"{path}: not a prepared dataset, missing {', '.join(missing)}")
                arrays = {field: archive[field] for field in FIELDS}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
            if isinstance(error, ValueError) and str(path) in str(error):
                raise
            raise ValueError(f"{path}: cannot read prepared dataset ({error})") from error
        arrays["class_names"] = tuple(str(name) for name in arrays["class_names"])
        return cls(**arrays)


def resize_slices(images: np.ndarray, masks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize (N, H, W) images (area-averaged) and (N, C, H, W) masks (nearest) to size×size."""
    import torch
    import torch.nn.functional as F

    image_tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    resized_images = F.interpolate(image_tensor, size=(size, size), mode="area").squeeze(1)
    mask_tensor = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))
    resized_masks = F.interpolate(mask_tensor, size=(size, size), mode="nearest-exact")
    return resized_images.numpy(), resized_masks.numpy().astype(np.uint8)


def scale_by_max(images: np.ndarray) -> np.ndarray:
    """Divide each slice by its own maximum, as the study did; all-zero slices stay zero."""
    images = images.astype(np.float32)
    peaks = images.reshape(len(images), -1).max(1).reshape(-1, 1, 1)
    return np.divide(images, peaks, out=np.zeros_like(images), where=peaks > 0)
