"""advseg download: materialise a dataset as a prepared directory (the ``download`` rule).

The directory holds the slices once and, for every fold in ``data.folds_to_run``, its
training / inner-validation / held-out row indices and a copy of the held-out slices
(see advseg.datasets.prepared). It appears at ``--out`` only when complete.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--settings", required=True,
                        help="the config's data section as JSON: name, image_size, folds, folds_to_run, guard "
                             "and the dataset's own options under its name; what it leaves out comes from the schema")
    parser.add_argument("--out", type=Path, required=True, help="prepared dataset directory")


def run(args) -> None:
    from advseg.datasets import DataSettings, prepare_dataset, write_prepared
    from advseg.settings import from_mapping

    settings = from_mapping(DataSettings, args.settings, "data")
    dataset = prepare_dataset(settings.name, settings.image_size, **settings.options)
    meta = write_prepared(args.out, dataset, folds=settings.folds, folds_to_run=settings.folds_to_run,
                          guard=settings.guard, description=settings.description())
    log.info("%s: %d slices of %s, classes %s, fingerprint %s", args.out, meta["n_slices"],
             "x".join(map(str, dataset.images.shape[1:])), ", ".join(dataset.class_names), meta["fingerprint"])
    for fold, sizes in meta["fold_splits"].items():
        log.info("fold %s: %d train, %d inner validation, %d held out, %d dropped by the guard band", fold,
                 sizes["train"], sizes["inner_val"], sizes["val"], sizes["dropped_by_guard"])
