"""2-D slices of a dataset in memory, before they are split or written to disk.

Every dataset's ``prepare()`` returns a :class:`SliceDataset`; ``advseg download`` writes it
as a prepared directory (:mod:`advseg.datasets.prepared`) that jobs open memory-mapped.
Besides images and masks it records, per slice, what a split must keep together
(``groups``), which scan it comes from (``volumes``) and where in that scan it lies
(``positions``), so that splits and guard bands can be computed without the pixels.

A split group is also the dataset's independent unit of inference (``unit`` names what it
is: a case, a subject, a volume, a slab of the one template brain): the report aggregates
scores per unit and resamples units, never slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SliceDataset:
    images: np.ndarray       # (N, H, W) float32 in [0, 1]
    masks: np.ndarray        # (N, C, H, W) uint8 in {0, 1}
    groups: np.ndarray       # (N,) int: what a split keeps together (case, slab)
    volumes: np.ndarray      # (N,) int: the scan a slice comes from
    positions: np.ndarray    # (N,) int: the slice's index within its scan
    class_names: tuple[str, ...]
    unit: str                # what one group is, e.g. "case": the independent unit of inference

    def __post_init__(self):
        n = len(self.images)
        if not self.unit:
            raise ValueError("unit: name what one group of slices is (case, subject, volume, slab)")
        if self.images.ndim != 3 or self.images.shape[1] != self.images.shape[2]:
            raise ValueError(f"images of shape {self.images.shape}: expected (N, size, size)")
        if self.masks.shape != (n, len(self.class_names), *self.images.shape[1:]):
            raise ValueError(f"images {self.images.shape} and masks {self.masks.shape} do not match "
                             f"{len(self.class_names)} classes")
        if n == 0:
            raise ValueError("the dataset holds no slices")
        for name in ("groups", "volumes", "positions"):
            values = getattr(self, name)
            if values.shape != (n,) or not np.issubdtype(values.dtype, np.integer):
                raise ValueError(f"{name}: need one integer per slice, got {values.dtype} {values.shape}")
        keys = self.volumes.astype(np.int64) * (int(self.positions.max()) + 1) + self.positions
        if self.positions.min() < 0 or len(np.unique(keys)) != n:
            raise ValueError("positions: two slices share a (volume, position), or a position is negative")

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])


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
