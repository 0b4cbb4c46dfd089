"""Datasets by name. Each one turns its raw source into a :class:`SliceDataset`."""

from __future__ import annotations

from advseg.datasets.slices import SliceDataset

DATASETS = ("mni152",)


def prepare_dataset(name: str, **options) -> SliceDataset:
    if name == "mni152":
        from advseg.datasets import mni152

        return mni152.prepare(**options)
    raise ValueError(f"data.name: unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")


__all__ = ["DATASETS", "SliceDataset", "prepare_dataset"]
