"""Datasets by name. Each one turns its raw source into a :class:`SliceDataset`.

Every dataset takes the common options (image size, folds, validation fold) and its own
section of the config's ``data`` block (``data.<name>``).
"""

from __future__ import annotations

import importlib
import inspect

from advseg.datasets.slices import SliceDataset

DATASETS = ("mni152", "uwmadison")


def prepare_dataset(name: str, image_size: int = 64, folds: int = 10, fold: int = 0,
                    **options) -> SliceDataset:
    if name not in DATASETS:
        raise ValueError(f"data.name: unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    prepare = importlib.import_module(f"advseg.datasets.{name}").prepare
    unknown = sorted(set(options) - set(inspect.signature(prepare).parameters))
    if unknown:
        raise ValueError(f"data.{name}: unknown option(s) {', '.join(unknown)}")
    return prepare(image_size=image_size, folds=folds, fold=fold, **options)


__all__ = ["DATASETS", "SliceDataset", "prepare_dataset"]
