"""Datasets by name. Each one turns its raw source into a :class:`SliceDataset`.

Every dataset takes the image size and its own section of the config's ``data`` block
(``data.<name>``); splitting is not its business (see :mod:`advseg.splits`). ``advseg
download`` writes the result as a prepared directory (:mod:`advseg.datasets.prepared`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from advseg import settings
from advseg.datasets.prepared import PreparedData, PreparedFold, open_fold, write_prepared
from advseg.datasets.slices import SliceDataset

DATASETS = tuple(settings.node("data.name")["enum"])


def prepare_dataset(name: str, image_size: int, **options) -> SliceDataset:
    """Dataset ``name`` with its options (``data.<name>``): checked, and completed from the schema."""
    settings.fill("data", {"name": name, "image_size": image_size})
    options = settings.fill(f"data.{name}", options)
    return importlib.import_module(f"advseg.datasets.{name}").prepare(image_size=image_size, **options)


@dataclass(frozen=True)
class DataSettings:
    """The config's ``data`` section (meaning and defaults: the schema): which dataset, its size, the folds.

    Built by ``advseg.settings.from_mapping(DataSettings, values, "data")``.
    """
    name: str
    image_size: int
    folds: int                  # outer GroupKFold splits
    folds_to_run: list[int]     # held-out folds to prepare (replicates)
    guard: int                  # positions around a held-out / inner slice dropped from training
    mni152: dict[str, Any]      # each dataset's own options, data.<name>
    uwmadison: dict[str, Any]
    folder: dict[str, Any]
    nifti: dict[str, Any]

    @property
    def options(self) -> dict[str, Any]:
        """The chosen dataset's options."""
        return getattr(self, self.name)

    def description(self) -> dict[str, Any]:
        """What the prepared directory records of how it was made."""
        return {"name": self.name, "image_size": self.image_size, "folds": self.folds,
                "folds_to_run": self.folds_to_run, "guard": self.guard, "options": self.options}


__all__ = ["DATASETS", "DataSettings", "PreparedData", "PreparedFold", "SliceDataset", "open_fold", "prepare_dataset",
           "write_prepared"]
