"""Every attack result as one row per (run, unit): the table all inference starts from.

A unit is the dataset's independent unit (case, subject, volume, slab). Each row holds the
unit's clean and attacked score under every metric (:func:`advseg.metrics.unit_scores`), so
an estimate is a mean over rows and an interval resamples rows of whole units; slices never
appear again after this step.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from advseg.metrics import PROTOCOLS
from advseg.report.runs import AttackRun

ID_COLUMNS = ("arch", "encoder", "model", "defense", "twin", "params", "seed", "fold", "attack", "attack_loss",
              "variant", "step", "loss_argument_order", "input", "eps")
# Everything a replicate (seed x fold) shares.
GROUP_COLUMNS = tuple(c for c in ID_COLUMNS if c not in ("seed", "fold"))
METRICS = ("dice", "dice_study", "iou", "hd95", "nsd")
PER_CLASS_REPORTED = ("dice", "hd95", "nsd")
# protocol -> (clean, attacked, diff) columns of the tables
PROTOCOL_COLUMNS = {protocol: (f"clean_{protocol}", f"adv_{protocol}", "diff" if protocol == "dice" else f"diff_{protocol}")
                    for protocol in PROTOCOLS}


def metric_columns(metric: str) -> tuple[str, str, str]:
    """(clean, attacked, diff) columns of a Dice protocol; an unknown name names ``report.metric``."""
    if metric not in PROTOCOL_COLUMNS:
        raise ValueError(f"report.metric: unknown protocol {metric!r} (choose from {', '.join(PROTOCOLS)})")
    return PROTOCOL_COLUMNS[metric]


def unit_table(runs: list[AttackRun]) -> pd.DataFrame:
    """One row per run and unit with a score: ID columns, ``unit``, ``clean_<metric>``/``adv_<metric>``
    for every metric, and ``clean_<metric>_<class>``/``adv_<metric>_<class>`` for Dice, HD95, NSD."""
    parts = []
    for run in runs:
        clean, adv = run.clean_units, run.adv_units
        columns = {"unit": clean.units}
        for kind, scores in (("clean", clean), ("adv", adv)):
            for metric in METRICS:
                columns[f"{kind}_{metric}"] = scores.score(metric)
            for metric in PER_CLASS_REPORTED:
                for c, name in enumerate(run.slices["class_names"]):
                    columns[f"{kind}_{metric}_{name}"] = scores.per_class[metric][:, c]
        part = pd.DataFrame(columns)
        part = part[~np.isnan(part["clean_dice_study"])]   # a unit without any organ has no score
        for name in reversed(ID_COLUMNS):
            part.insert(0, name, run.info[name])
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def columns(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """The unit table's design and score columns as numpy arrays: estimates and resamples index
    these with a group's rows (``table.groupby(...).indices``) instead of slicing frames."""
    design = {name: table[name].to_numpy(np.int64) for name in ("fold", "seed", "unit")}
    scores = {name: table[name].to_numpy(float) for name in table.columns if name.startswith(("clean_", "adv_"))}
    return {**design, **scores}


def fold_arrays(data: dict[str, np.ndarray], rows: np.ndarray, names: list[str]) -> list[np.ndarray]:
    """Per fold, a (seeds, units, K) array of the ``names`` columns of ``rows``, for
    :func:`advseg.statistics.hierarchical_means`. A unit missing (or NaN) for any seed of its
    fold is left out, so every seed scores the same units."""
    folds = []
    for fold in np.unique(data["fold"][rows]):
        chosen = rows[data["fold"][rows] == fold]
        seeds, seed_index = np.unique(data["seed"][chosen], return_inverse=True)
        units, unit_index = np.unique(data["unit"][chosen], return_inverse=True)
        values = np.full((len(seeds), len(units), len(names)), np.nan)
        values[seed_index, unit_index] = np.column_stack([data[name][chosen] for name in names])
        complete = ~np.isnan(values).any(axis=(0, 2))
        if complete.any():
            folds.append(values[:, complete])
    return folds


def n_units(data: dict[str, np.ndarray], rows: np.ndarray, name: str) -> int:
    """Independent units with a score in column ``name`` (a unit counts once, whatever its seeds)."""
    scored = rows[~np.isnan(data[name][rows])]
    return len(set(zip(data["fold"][scored].tolist(), data["unit"][scored].tolist())))


def class_names(table: pd.DataFrame) -> list[str]:
    """The class names behind the per-class columns of a unit table."""
    prefix = "clean_dice_"
    return [c[len(prefix):] for c in table.columns if c.startswith(prefix) and c != "clean_dice_study"]

