"""Datasets by name. Each one turns its raw source into a :class:`SliceDataset`.

Every dataset takes the image size and its own section of the config's ``data`` block
(``data.<name>``); splitting is not its business (see :mod:`advseg.splits`). ``advseg
download`` writes the result as a prepared directory (:mod:`advseg.datasets.prepared`).
"""

from __future__ import annotations

import importlib
import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from advseg.datasets.prepared import PreparedData, PreparedFold, open_fold, write_prepared
from advseg.datasets.slices import SliceDataset

DATASETS = ("mni152", "uwmadison", "folder", "nifti")


def prepare_dataset(name: str, image_size: int = 64, **options) -> SliceDataset:
    if name not in DATASETS:
        raise ValueError(f"data.name: unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    prepare = importlib.import_module(f"advseg.datasets.{name}").prepare
    unknown = sorted(set(options) - set(inspect.signature(prepare).parameters) - {"image_size"})
    if unknown:
        raise ValueError(f"data.{name}: unknown option(s) {', '.join(unknown)}")
    return prepare(image_size=image_size, **options)


@dataclass(frozen=True)
class DataSettings:
    """The config's ``data`` section: which dataset, its size, and the folds to prepare."""
    name: str = "mni152"
    image_size: int = 64
    folds: int = 10                    # outer GroupKFold splits
    folds_to_run: tuple[int, ...] = (0,)  # held-out folds to prepare (replicates)
    guard: int = 2                     # positions around a held-out / inner slice dropped from training
    options: dict[str, Any] = field(default_factory=dict)  # data.<name>

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | str) -> "DataSettings":
        if isinstance(values, str):
            values = json.loads(values)
        known = {"name", "image_size", "folds", "folds_to_run", "guard", *DATASETS}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"data: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        name = values.get("name", cls.name)
        if name not in DATASETS:
            raise ValueError(f"data.name: unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
        for key in ("image_size", "folds", "guard"):
            value = values.get(key, getattr(cls, key))
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"data.{key}: expected a non-negative integer, got {value!r}")
        options = values.get(name) or {}
        if not isinstance(options, Mapping):
            raise ValueError(f"data.{name}: expected a mapping of options, got {options!r}")
        from advseg.datasets.prepared import check_folds_to_run

        folds = values.get("folds", cls.folds)
        folds_to_run = check_folds_to_run(folds, values.get("folds_to_run", list(cls.folds_to_run)))
        return cls(name=name, image_size=values.get("image_size", cls.image_size), folds=folds,
                   folds_to_run=tuple(folds_to_run), guard=values.get("guard", cls.guard), options=dict(options))


__all__ = ["DATASETS", "DataSettings", "PreparedData", "PreparedFold", "SliceDataset", "open_fold", "prepare_dataset",
           "write_prepared"]
