"""Checks on the workflow config that a JSON schema cannot express.

The Snakefile validates the config against ``workflow/schemas/config.schema.yaml``
(types, ranges, defaults), then calls :func:`check_config` for the cross-field rules
and the names that come from segmentation-models-pytorch. Both run before any job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advseg import catalog


def check_config(config: dict[str, Any]) -> None:
    """Raise ValueError naming the first key that cannot work."""
    for index, model in enumerate(config["models"]):
        catalog.check_model(f"models[{index}]", model["arch"], model["encoder"])
    data = config["data"]
    if data["fold"] >= data["folds"]:
        raise ValueError(f"data.fold: {data['fold']} must be smaller than data.folds ({data['folds']})")
    if data["name"] == "uwmadison":
        root = data.get("uwmadison", {}).get("root")
        if not root or not Path(root).is_dir():
            raise ValueError(f"data.uwmadison.root: {root!r} is not a folder; download the Kaggle competition "
                             "data (see workflow/configs/uwmadison_study.yaml) and point root at it")
    eps = config["report"]["correlation_eps"]
    if eps is not None and eps not in config["attack"]["epsilons"]:
        raise ValueError(f"report.correlation_eps: {eps} is not one of attack.epsilons "
                         f"{config['attack']['epsilons']}")


def correlation_eps(config: dict[str, Any]) -> float:
    """The eps at which model size is compared with attack success (default: the largest)."""
    eps = config["report"]["correlation_eps"]
    return max(config["attack"]["epsilons"]) if eps is None else eps


def eps_label(eps: float) -> str:
    """How an eps appears in file names: 0.002 -> '0.002', 1e-05 -> '1e-05'."""
    return format(eps, "g")
