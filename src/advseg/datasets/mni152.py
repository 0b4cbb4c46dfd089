"""The MNI152 2009 brain template that ships inside nilearn: MRI data with no download.

Axial slices of the skull-stripped T1 image, labelled from the tissue probability maps
as three binary channels: grey matter, white matter and the rest of the brain (CSF and
other tissue). Each voxel goes to its most probable tissue. Slices with almost no brain
are dropped. The one volume is split by contiguous slabs (``groups``); ``positions`` are
the axial slice indices, from which the split's guard band drops neighbours of held-out
slices (see :mod:`advseg.splits`).

Template licence: McGill University's permissive notice (see README).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advseg.datasets.slices import SliceDataset, resize_slices, scale_by_max
from advseg.splits import slab_groups

CLASS_NAMES = ("grey_matter", "white_matter", "other_brain")
# One brain: its slabs are the only units there are, and they are not independent subjects.
UNIT = "slab of the one MNI152 template brain"
TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def template_dir() -> Path:
    import nilearn

    return Path(nilearn.__file__).parent / "datasets" / "data"


def load_volumes(directory: Path) -> dict[str, np.ndarray]:
    """The T1 image and the grey/white matter maps, as (x, y, z) uint8 arrays."""
    import nibabel

    volumes = {}
    for kind in ("t1", "gm", "wm"):
        path = directory / TEMPLATE.format(kind)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: MNI152 template file missing (is nilearn installed?)")
        volumes[kind] = np.asarray(nibabel.load(path).dataobj)
    return volumes


def tissue_masks(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """(3, ...) one-hot masks: grey, white, other brain; each brain voxel in its likeliest class."""
    gm, wm = gm.astype(np.int16), wm.astype(np.int16)
    other = 255 - gm - wm
    likeliest = np.argmax(np.stack([gm, wm, other]), axis=0)
    brain = t1 > 0
    return np.stack([(likeliest == c) & brain for c in range(3)]).astype(np.uint8)


def prepare(image_size: int, *, slab_thickness: int, min_brain_fraction: float,
            directory: Path | None = None) -> SliceDataset:
    """Slices with enough brain, grouped in slabs (options: ``data.mni152``, defaults in the schema);
    ``directory`` holds the template files (nilearn's own when None)."""
    if slab_thickness < 1:
        raise ValueError(f"data.mni152.slab_thickness: {slab_thickness} is below 1")
    volumes = load_volumes(directory or template_dir())
    t1 = np.moveaxis(volumes["t1"], -1, 0)                      # (z, x, y): axial slices
    masks = np.moveaxis(tissue_masks(volumes["t1"], volumes["gm"], volumes["wm"]), -1, 0)
    # display orientation: anterior up, as radiologists view an axial slice
    t1, masks = np.rot90(t1, axes=(1, 2)), np.rot90(masks, axes=(2, 3))
    brain_fraction = masks.reshape(len(masks), -1).mean(1) * masks.shape[1]
    positions = np.flatnonzero(brain_fraction >= min_brain_fraction)
    images, masks = resize_slices(scale_by_max(t1[positions]), masks[positions], image_size)
    return SliceDataset(images=images, masks=masks, groups=slab_groups(positions, slab_thickness),
                        volumes=np.zeros(len(positions), dtype=np.int64), positions=positions,
                        class_names=CLASS_NAMES, unit=UNIT)
