"""Summary, replicate and transfer tables: means over units with hierarchical-bootstrap intervals.

Every number in a row is a mean over independent units (of the seed-averaged unit scores when
several training seeds ran), every interval resamples (fold, seed, unit) cells
(:func:`advseg.statistics.hierarchical_means`), and the study's attack success
``diff = (clean - adv) / clean`` is the relative drop of those means. With fewer than
``report.min_units`` units a row keeps its estimates but gets no interval.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from advseg import statistics
from advseg.metrics import nanmean, relative_drop
from advseg.report.runs import AttackRun, order_of
from advseg.report.settings import ReportSettings
from advseg.report.units import (GROUP_COLUMNS, ID_COLUMNS, PER_CLASS_REPORTED, PROTOCOL_COLUMNS, class_names,
                                 columns, fold_arrays, n_units)

SCORES = ("dice", "dice_study", "iou", "hd95", "nsd")
DIFFS = {"dice": "diff", "dice_study": "diff_dice_study", "iou": "diff_iou"}
# Columns of the replicate table given as <name>_mean and <name>_sd (over replicates).
REPLICATED_SCORES = ("clean_dice", "adv_dice", "diff", "clean_dice_study", "adv_dice_study", "diff_dice_study",
                     "clean_iou", "adv_iou", "diff_iou", "clean_hd95", "adv_hd95", "clean_nsd", "adv_nsd")
INTERVAL_COLUMNS = tuple(f"{name}_ci_{end}" for protocol in PROTOCOL_COLUMNS
                         for name in PROTOCOL_COLUMNS[protocol][1:] for end in ("low", "high"))


def summary_table(runs: list[AttackRun], units: pd.DataFrame, settings: ReportSettings) -> pd.DataFrame:
    """One row per model x replicate x attack x loss x variant x eps (worst case included), sorted."""
    by_source = {tuple(run.info[c] for c in ID_COLUMNS): run for run in runs}
    data, names = columns(units), class_names(units)
    rows = []
    for key, index in units.groupby(list(ID_COLUMNS), sort=False).indices.items():
        run = by_source[key]
        row = {**dict(zip(ID_COLUMNS, key)), **_estimates(data, index, names, settings)}
        row.update(n_images=int(run.slices["has_organ"].sum()), n_slices=len(run.slices["has_organ"]),
                   linf=run.info["linf"], l2=run.info["l2"], worst_of=run.info.get("worst_of", ""))
        rows.append(row)
    return sort_rows(pd.DataFrame(rows))


def replicate_table(units: pd.DataFrame, summary: pd.DataFrame, settings: ReportSettings) -> pd.DataFrame:
    """Per model x attack x loss x variant x eps: the mean over every (fold, seed, unit) cell.

    ``<score>_mean`` is that mean (for a balanced design, the mean over units of the seed-averaged
    unit scores), ``<score>_sd`` the spread of the per-replicate rows of ``summary``, and the
    intervals resample folds, then seeds and units within each fold.
    """
    replicate_rows = summary.groupby(list(GROUP_COLUMNS), sort=False).indices
    data, names = columns(units), class_names(units)
    per_replicate = {name: summary[name].to_numpy(float) for name in REPLICATED_SCORES}
    rows = []
    for key, index in units.groupby(list(GROUP_COLUMNS), sort=False).indices.items():
        members = replicate_rows[key]
        row = dict(zip(GROUP_COLUMNS, key))
        row.update(n_replicates=len(members),
                   seeds=";".join(str(v) for v in sorted(set(summary["seed"].to_numpy()[members]))),
                   folds=";".join(str(v) for v in sorted(set(summary["fold"].to_numpy()[members]))))
        estimates = _estimates(data, index, names, settings)
        row.update({name: estimates[name] for name in ("n_units",) + INTERVAL_COLUMNS})
        for name in REPLICATED_SCORES:
            row[f"{name}_mean"] = estimates[name]
            values = per_replicate[name][members]
            row[f"{name}_sd"] = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else np.nan
        rows.append(row)
    return sort_rows(pd.DataFrame(rows))


def _estimates(data: dict[str, np.ndarray], rows: np.ndarray, names: list[str], settings: ReportSettings) -> dict:
    """Means over the ``rows`` cells of every score, the diffs, per-class columns and the intervals."""
    out: dict = {"n_units": n_units(data, rows, PROTOCOL_COLUMNS[settings.metric][0])}
    for metric in SCORES:
        for kind in ("clean", "adv"):
            out[f"{kind}_{metric}"] = nanmean(data[f"{kind}_{metric}"][rows])
        if metric in DIFFS:
            out[DIFFS[metric]] = relative_drop(out[f"clean_{metric}"], out[f"adv_{metric}"])
    for name in names:
        for metric in PER_CLASS_REPORTED:
            for kind in ("clean", "adv"):
                out[f"{kind}_{metric}_{name}"] = nanmean(data[f"{kind}_{metric}_{name}"][rows])
        out[f"diff_{name}"] = relative_drop(out[f"clean_dice_{name}"], out[f"adv_dice_{name}"])
    for protocol, (clean, adv, diff) in PROTOCOL_COLUMNS.items():
        low_high = {f"{adv}_ci_low": np.nan, f"{adv}_ci_high": np.nan,
                    f"{diff}_ci_low": np.nan, f"{diff}_ci_high": np.nan}
        if not settings.too_few(n_units(data, rows, clean)):
            means = statistics.hierarchical_means(fold_arrays(data, rows, [clean, adv]), settings.n_bootstrap,
                                                  settings.seed)
            low_high[f"{adv}_ci_low"], low_high[f"{adv}_ci_high"] = \
                statistics.percentile_interval(means[:, 1], settings.level)
            low_high[f"{diff}_ci_low"], low_high[f"{diff}_ci_high"] = \
                statistics.percentile_interval(relative_drop(means[:, 0], means[:, 1]), settings.level)
        out.update(low_high)
    return out


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Smallest model first, then replicate, attack (worst case last), loss, variant, eps."""
    df = df.assign(attack_rank=df["attack"].map(order_of))
    keys = [c for c in ("params", "model", "seed", "fold", "attack_rank", "attack", "attack_loss", "variant", "eps")
            if c in df.columns]
    return df.sort_values(keys, kind="stable").drop(columns="attack_rank").reset_index(drop=True)


# --- transfer ------------------------------------------------------------------------------------------

TRANSFER_KEYS = ("source_model", "target_model", "fold", "seed", "attack", "attack_loss", "eps",
                 "clean_dice", "adv_dice", "diff", "clean_dice_study", "adv_dice_study", "diff_dice_study")
TRANSFER_COLUMNS = ("source_model", "target_model", "white_box", "seed", "fold", "attack", "attack_loss",
                    "variant", "eps", "clean_dice", "adv_dice", "diff", "clean_dice_study", "adv_dice_study",
                    "diff_dice_study")


def transfer_table(transfer_jsons: list[Path], summary: pd.DataFrame, eps: float | None) -> pd.DataFrame:
    """Source x target attacked scores at ``eps`` (means over units, as each transfer job wrote
    them), with white-box rows (source = target) from the attacks. ``eps`` None: the largest."""
    rows = []
    for path in transfer_jsons:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: cannot read JSON ({error})") from error
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of transfer rows, got {type(data).__name__}")
        for i, item in enumerate(data):
            missing = [k for k in TRANSFER_KEYS if not isinstance(item, dict) or k not in item]
            if missing:
                raise ValueError(f"{path}: row {i} lacks key(s) {', '.join(missing)}")
            row = {k: item[k] for k in TRANSFER_KEYS}
            row.update(variant=str(item.get("variant", "standard")), eps=float(row["eps"]), seed=int(row["seed"]),
                       fold=int(row["fold"]), white_box=row["source_model"] == row["target_model"])
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=list(TRANSFER_COLUMNS))
    transfer = pd.DataFrame(rows)
    eps = float(transfer["eps"].max()) if eps is None else float(eps)
    transfer = transfer[np.isclose(transfer["eps"], eps, rtol=1e-9, atol=1e-12)]
    if transfer.empty:
        raise ValueError(f"report.transfer_eps = {eps:g}: no transfer rows at that eps")
    combos = transfer[["attack", "attack_loss", "variant", "seed", "fold"]].drop_duplicates()
    at_eps = summary[np.isclose(summary["eps"].astype(float), eps, rtol=1e-9, atol=1e-12)]
    white = at_eps.merge(combos, on=["attack", "attack_loss", "variant", "seed", "fold"])
    white = white.assign(source_model=white["model"], target_model=white["model"], white_box=True)
    table = pd.concat([transfer[transfer["source_model"] != transfer["target_model"]],
                       white[list(TRANSFER_KEYS) + ["variant", "white_box"]]], ignore_index=True)
    table = table[list(TRANSFER_COLUMNS)].sort_values(["attack", "attack_loss", "variant", "seed", "fold",
                                                       "source_model", "target_model"], kind="stable")
    return table.reset_index(drop=True)
