"""The prepared dataset on disk: a directory of ``.npy`` arrays that jobs open memory-mapped.

A job touches only the slices it uses: an attack job reads the held-out slices of its
fold from their own contiguous copy, a training job reads one batch at a time. Layout::

    <directory>/
      prepared.json          class names, image size, folds, shapes, fingerprints, split sizes
      images.npy             (N, H, W) float32 in [0, 1]
      masks.npy              (N, C, H, W) uint8 in {0, 1}
      groups.npy volumes.npy positions.npy   (N,) int64 (see SliceDataset)
      fold_<k>/              one per fold in folds_to_run
        train.npy inner_val.npy val.npy      sorted int64 row indices into the arrays above
        val_images.npy val_masks.npy         the held-out slices, a contiguous copy

The directory is built beside its final place and renamed into it, so a killed download
leaves nothing that a later job would trust. ``fingerprint`` hashes the content of every
slice; a fold's ``fingerprint`` adds its split, so resumed training can tell that the
slices it trained on are still the ones on disk.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from advseg.datasets.npy_rows import NpyRows, NpyWriter, rows_per_chunk
from advseg.datasets.slices import SliceDataset
from advseg.jobs import atomic_path
from advseg.splits import FoldSplit, fold_split, inner_folds

FORMAT = 2  # 2: records the unit of inference
META = "prepared.json"
ARRAYS = {"images": np.float32, "masks": np.uint8, "groups": np.int64, "volumes": np.int64,
          "positions": np.int64}
INDEXES = ("train", "inner_val", "val")
META_KEYS = ("format", "class_names", "image_size", "n_slices", "folds", "folds_to_run", "guard",
             "arrays", "fingerprint", "fold_splits", "unit")


def fold_directory(directory: Path, fold: int) -> Path:
    return Path(directory) / f"fold_{fold}"


def check_folds_to_run(folds: int, folds_to_run) -> list[int]:
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise ValueError(f"data.folds: {folds!r} is not an integer of at least 2")
    if not isinstance(folds_to_run, (list, tuple)) or not folds_to_run:
        raise ValueError(f"data.folds_to_run: {folds_to_run!r} is not a non-empty list of folds")
    for fold in folds_to_run:
        if not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < folds:
            raise ValueError(f"data.folds_to_run: {fold!r} is not a fold in [0, {folds})")
    if len(set(folds_to_run)) != len(folds_to_run):
        raise ValueError(f"data.folds_to_run: {list(folds_to_run)} repeats a fold")
    return list(folds_to_run)


# --- writing ----------------------------------------------------------------------------------


def _array_chunks(images: np.ndarray, masks: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    step = rows_per_chunk(images[:1].nbytes + masks[:1].nbytes)
    for start in range(0, len(images), step):
        yield images[start:start + step], masks[start:start + step]


def _fold_fingerprint(data_fingerprint: str, folds: int, guard: int, split: FoldSplit) -> str:
    digest = hashlib.sha256(f"{data_fingerprint}|folds={folds}|guard={guard}|fold={split.fold}".encode())
    for name in INDEXES:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(getattr(split, name), dtype=np.int64).data)
    return digest.hexdigest()[:16]


def write_prepared(directory: Path, dataset: SliceDataset, *, folds: int, folds_to_run, guard: int,
                   description: dict | None = None) -> dict:
    """Write ``dataset`` with the splits of ``folds_to_run`` to ``directory``; returns its metadata."""
    return write_prepared_chunks(directory, _array_chunks(dataset.images, dataset.masks),
                                 groups=dataset.groups, volumes=dataset.volumes, positions=dataset.positions,
                                 class_names=dataset.class_names, image_size=dataset.image_size, folds=folds,
                                 folds_to_run=folds_to_run, guard=guard, unit=dataset.unit, description=description)


def write_prepared_chunks(directory: Path, chunks: Iterable[tuple[np.ndarray, np.ndarray]], *,
                          groups: np.ndarray, volumes: np.ndarray, positions: np.ndarray,
                          class_names, image_size: int, folds: int, folds_to_run, guard: int, unit: str,
                          description: dict | None = None) -> dict:
    """Like :func:`write_prepared`, with the pixels given as (images, masks) chunks in row order.

    Datasets larger than memory (and the memory benchmark) stream their slices through here.
    The splits are computed first, so a split that cannot be made fails before any write.
    """
    folds_to_run = check_folds_to_run(folds, folds_to_run)
    if not isinstance(guard, int) or isinstance(guard, bool) or guard < 0:
        raise ValueError(f"data.guard: {guard!r} is not a non-negative integer")
    groups, volumes, positions = (np.asarray(a, dtype=np.int64) for a in (groups, volumes, positions))
    n, size, classes = len(groups), int(image_size), len(class_names)
    # the checks of an in-memory dataset, on zero-stride stand-ins for the pixels
    SliceDataset(_shape_probe(n, size), _shape_probe(n, size, classes), groups, volumes, positions,
                 tuple(class_names), unit)
    splits = {fold: fold_split(groups, volumes, positions, folds, fold, guard) for fold in folds_to_run}
    shapes = {"images": (n, size, size), "masks": (n, classes, size, size), "groups": (n,), "volumes": (n,),
              "positions": (n,)}
    with atomic_path(directory, directory=True) as staging:   # a killed download leaves no directory to trust
        writers = {name: NpyWriter(staging / f"{name}.npy", shapes[name], ARRAYS[name])
                   for name in ("images", "masks")}
        for images, masks in chunks:
            if len(images) != len(masks):
                raise ValueError(f"a chunk of {len(images)} images comes with {len(masks)} masks")
            writers["images"].write(images)
            writers["masks"].write(masks)
        digests = {name: writer.close() for name, writer in writers.items()}
        for name, values in (("groups", groups), ("volumes", volumes), ("positions", positions)):
            np.save(staging / f"{name}.npy", values)
            digests[name] = hashlib.sha256(values.data).hexdigest()
        arrays = {name: {"shape": list(shapes[name]), "dtype": np.dtype(ARRAYS[name]).name} for name in ARRAYS}
        identity = json.dumps({"format": FORMAT, "class_names": list(class_names), "arrays": arrays,
                               "digests": digests}, sort_keys=True)
        fingerprint = hashlib.sha256(identity.encode()).hexdigest()[:16]
        reader = NpyRows(staging / "images.npy"), NpyRows(staging / "masks.npy")
        fold_splits = {}
        for fold, split in splits.items():
            _write_fold(fold_directory(staging, fold), split, reader)
            fold_splits[str(fold)] = {"fingerprint": _fold_fingerprint(fingerprint, folds, guard, split),
                                      **split.sizes()}
        meta = {"format": FORMAT, "class_names": list(class_names), "image_size": size, "n_slices": n,
                "folds": folds, "folds_to_run": folds_to_run, "guard": guard, "unit": unit,
                "inner_split": f"GroupKFold({inner_folds(folds)}) over the training groups, first split",
                "arrays": arrays, "fingerprint": fingerprint, "fold_splits": fold_splits,
                "description": description or {}}
        (staging / META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _shape_probe(n: int, size: int, classes: int | None = None) -> np.ndarray:
    """A zero-stride array of the given shape: lets SliceDataset check metadata without pixels."""
    shape = (n, size, size) if classes is None else (n, classes, size, size)
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=shape, strides=(0,) * len(shape))


def _write_fold(directory: Path, split: FoldSplit, readers: tuple["NpyRows", "NpyRows"]) -> None:
    directory.mkdir()
    for name in INDEXES:
        np.save(directory / f"{name}.npy", np.asarray(getattr(split, name), dtype=np.int64))
    for name, reader in zip(("val_images", "val_masks"), readers):
        writer = NpyWriter(directory / f"{name}.npy", (len(split.val), *reader.shape[1:]), reader.dtype)
        step = rows_per_chunk(reader.row_bytes)
        for start in range(0, len(split.val), step):
            writer.write(reader.read(split.val[start:start + step]))
        writer.close()


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedFold:
    """One outer fold: streamed training slices, the inner validation set, the held-out slices.

    ``train``, ``inner_val`` and ``val`` are sorted row indices into the prepared arrays.
    The held-out slices (row i = ``val[i]``), the ones attack jobs load and nothing else,
    come from their own contiguous copy: :meth:`val_slices` reads them into memory,
    ``val_images``/``val_masks`` map them read-only for a job that needs only a few.
    """
    data: PreparedData
    fold: int
    train: np.ndarray
    inner_val: np.ndarray
    val: np.ndarray
    val_image_rows: NpyRows
    val_mask_rows: NpyRows
    fingerprint: str

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.data.class_names

    @property
    def image_size(self) -> int:
        return self.data.image_size

    @property
    def val_images(self) -> np.ndarray:
        return self.val_image_rows.load(mmap=True)

    @property
    def val_masks(self) -> np.ndarray:
        return self.val_mask_rows.load(mmap=True)

    def read_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images and masks of prepared rows, copied into memory (no memory map kept)."""
        return self.data.image_rows.read(rows), self.data.mask_rows.read(rows)

    def train_slices(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Training slices number ``indices`` (0 .. n_train-1), in increasing row order."""
        return self.read_rows(np.sort(self.train[np.asarray(indices)]))

    def inner_val_slices(self) -> tuple[np.ndarray, np.ndarray]:
        return self.read_rows(self.inner_val)

    def val_slices(self) -> tuple[np.ndarray, np.ndarray]:
        """The held-out images (n_val, H, W) and masks (n_val, C, H, W), one writable copy in memory.

        Read with plain file reads rather than through a memory map, so that a job that
        copies them into a tensor does not hold them twice.
        """
        rows = np.arange(len(self.val))
        return self.val_image_rows.read(rows), self.val_mask_rows.read(rows)

    def val_units(self) -> np.ndarray:
        """(n_val,) the unit (split group) of each held-out slice: the report aggregates by it."""
        return self.data.groups[self.val]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "inner_val": len(self.inner_val), "val": len(self.val)}


class PreparedData:
    """A prepared directory, checked and opened memory-mapped; pixels are read only on demand."""

    def __init__(self, directory: Path, meta: dict, image_rows: NpyRows, mask_rows: NpyRows,
                 index_arrays: dict[str, np.ndarray]):
        self.directory, self.meta = directory, meta
        self.image_rows, self.mask_rows = image_rows, mask_rows
        self.groups, self.volumes, self.positions = (index_arrays[k] for k in ("groups", "volumes", "positions"))

    @classmethod
    def open(cls, directory: Path) -> "PreparedData":
        directory = Path(directory)
        meta_path = directory / META
        if not meta_path.is_file():
            raise ValueError(f"{meta_path}: missing, {directory} is not a prepared dataset; "
                             f"run 'advseg download' (delete a partial directory first)")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{meta_path}: not readable JSON ({error}); rerun 'advseg download'") from None
        missing = [key for key in META_KEYS if not isinstance(meta, dict) or key not in meta]
        if missing:
            raise ValueError(f"{meta_path}: lacks {', '.join(missing)}; rerun 'advseg download'")
        if meta["format"] != FORMAT:
            raise ValueError(f"{meta_path}: format {meta['format']!r}, this advseg reads {FORMAT}; "
                             f"rerun 'advseg download'")
        try:
            shapes = {name: tuple(meta["arrays"][name]["shape"]) for name in ARRAYS}
        except (KeyError, TypeError) as error:
            raise ValueError(f"{meta_path}: arrays lacks {error}; rerun 'advseg download'") from None
        rows = {name: NpyRows(directory / f"{name}.npy", shapes[name], ARRAYS[name]) for name in ARRAYS}
        small = {name: rows[name].load(mmap=False) for name in ("groups", "volumes", "positions")}
        return cls(directory, meta, rows["images"], rows["masks"], small)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.meta["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    @property
    def unit(self) -> str:
        """What one split group is (case, subject, volume, slab): the unit of inference."""
        return self.meta["unit"]

    @property
    def folds_to_run(self) -> list[int]:
        return list(self.meta["folds_to_run"])

    def __len__(self) -> int:
        return int(self.meta["n_slices"])

    @property
    def images(self) -> np.ndarray:
        """All images, memory-mapped read-only (touching them makes them resident)."""
        return self.image_rows.load(mmap=True)

    @property
    def masks(self) -> np.ndarray:
        return self.mask_rows.load(mmap=True)

    def fold(self, fold: int) -> PreparedFold:
        where = fold_directory(self.directory, fold)
        if fold not in self.folds_to_run:
            raise ValueError(f"{self.directory}: fold {fold} was not prepared (folds_to_run "
                             f"{self.folds_to_run}); add it to data.folds_to_run")
        expected = self.meta["fold_splits"].get(str(fold), {})
        indexes = {}
        for name in INDEXES:
            path = where / f"{name}.npy"
            values = NpyRows(path, (expected.get(name, -1),), np.int64).load(mmap=False)
            if len(values) and (values.min() < 0 or values.max() >= len(self) or (np.diff(values) <= 0).any()):
                raise ValueError(f"{path}: not sorted distinct row indices below {len(self)}; "
                                 f"rerun 'advseg download'")
            indexes[name] = values
        split = FoldSplit(fold, indexes["train"], indexes["inner_val"], indexes["val"], 0)
        fingerprint = _fold_fingerprint(self.fingerprint, self.meta["folds"], self.meta["guard"], split)
        if fingerprint != expected.get("fingerprint") or _overlap(indexes):
            raise ValueError(f"{where}: its index files do not match {self.directory / META} "
                             f"(changed after download?); rerun 'advseg download'")
        size = self.image_size
        val_images = NpyRows(where / "val_images.npy", (len(split.val), size, size), np.float32)
        val_masks = NpyRows(where / "val_masks.npy", (len(split.val), len(self.class_names), size, size), np.uint8)
        return PreparedFold(self, fold, split.train, split.inner_val, split.val, val_images, val_masks,
                            fingerprint)


def _overlap(indexes: dict[str, np.ndarray]) -> bool:
    combined = np.concatenate([indexes[name] for name in INDEXES])
    return len(np.unique(combined)) != len(combined)


def open_fold(directory: Path, fold: int) -> PreparedFold:
    """Fold ``fold`` of the prepared directory: what train, checkpoint and attack jobs open."""
    return PreparedData.open(directory).fold(fold)
