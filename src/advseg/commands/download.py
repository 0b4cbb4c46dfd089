"""advseg download: materialise a dataset as prepared slices (the ``download`` rule)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--settings", required=True, help="the config's data section, as JSON")
    parser.add_argument("--out", type=Path, required=True, help="prepared dataset (.npz)")


def run(args) -> None:
    from advseg.datasets import prepare_dataset

    settings = json.loads(args.settings)
    name = settings["name"]
    dataset = prepare_dataset(name, settings["image_size"], settings["folds"], settings["fold"],
                              **settings.get(name, {}))
    dataset.save(args.out)
    log.info("%s: %d train + %d val slices of %s, classes %s", args.out, (~dataset.is_val).sum(),
             dataset.is_val.sum(), "x".join(map(str, dataset.images.shape[1:])), ", ".join(dataset.class_names))
