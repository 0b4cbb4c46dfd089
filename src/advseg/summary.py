"""Comparison tables of the attack results: a CSV, a Markdown table and correlations.

This runs in the light reporting job, so it reads only the JSON files written by the
training and attack steps and never imports torch. Attack success is the study's
``diff = (clean - adv) / clean``: larger means the attack hurt the model more.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from advseg.jobs import read_json

ATTACK_KEYS = ("arch", "encoder", "model", "attack", "attack_loss", "eps", "clean_dice", "adv_dice",
               "diff", "clean_iou", "adv_iou", "diff_iou", "n_images", "linf", "l2")
PER_CLASS_KEYS = ("clean_dice_per_class", "adv_dice_per_class", "diff_per_class")
CARD_KEYS = ("arch", "encoder", "params")
SUMMARY_COLUMNS = ("arch", "encoder", "model", "params", "attack", "attack_loss", "eps",
                   "clean_dice", "adv_dice", "diff", "clean_iou", "adv_iou", "diff_iou",
                   "n_images", "linf", "l2")
SORT_KEYS = ["params", "model", "attack_loss", "eps", "attack"]


def load_records(attack_jsons: list[Path], model_cards: list[Path]) -> pd.DataFrame:
    """One row per attack JSON, with the attacked model's parameter count joined in.

    Per-class scores become columns ``clean_dice_<class>``, ``adv_dice_<class>`` and
    ``diff_<class>``. Any unreadable file, missing key or unmatched model is an error.
    """
    cards = {}
    for path in model_cards:
        card = read_json(path, CARD_KEYS)
        key = (card["arch"], card["encoder"])
        if key in cards:
            raise ValueError(f"{path}: second model card for {key[0]}-{key[1]} (first: {cards[key][0]})")
        cards[key] = (path, card)

    rows, seen = [], {}
    for path in attack_jsons:
        record = read_json(path, ATTACK_KEYS + PER_CLASS_KEYS)
        key = (record["arch"], record["encoder"])
        if key not in cards:
            raise ValueError(f"{path}: no model card for arch/encoder {key[0]}-{key[1]}")
        run = (record["model"], record["attack"], record["attack_loss"], float(record["eps"]))
        if run in seen:
            raise ValueError(f"{path}: duplicates {seen[run]} (model, attack, attack_loss, eps = {run})")
        seen[run] = path
        row = {name: record[name] for name in ATTACK_KEYS}
        row["eps"] = float(row["eps"])
        row["params"] = int(cards[key][1]["params"])
        for per_class_key in PER_CLASS_KEYS:
            scores = record[per_class_key]
            if not isinstance(scores, dict):
                raise ValueError(f"{path}: key {per_class_key!r} must map class names to scores")
            prefix = per_class_key.removesuffix("_per_class")
            row.update({f"{prefix}_{name}": float(value) for name, value in scores.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def write_summary_csv(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``attack_summary.csv``: one row per model x attack loss x eps, smallest model first."""
    _require_columns(df, SUMMARY_COLUMNS)
    per_class = [column for prefix in ("clean_dice_", "adv_dice_", "diff_") for column in df.columns
                 if column.startswith(prefix) and column not in SUMMARY_COLUMNS]
    table = df[list(SUMMARY_COLUMNS) + per_class].sort_values(SORT_KEYS, kind="stable")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return table.reset_index(drop=True)


def write_loss_comparison_markdown(df: pd.DataFrame, path: Path) -> str:
    """A Markdown table putting each attack loss's result side by side, per model and eps."""
    _require_columns(df, ("model", "params", "attack_loss", "eps", "clean_dice", "adv_dice", "diff"))
    _require_single_attack(df)
    losses = sorted(df["attack_loss"].unique())
    header = ["model", "params", "eps", "clean Dice"]
    header += [f"{kind} ({loss})" for loss in losses for kind in ("adv Dice", "diff")]
    header.append("larger diff")
    lines = [
        "# Attack losses compared",
        "",
        "Each row is one model attacked at one eps. Attack success is the relative drop in "
        "Dice, diff = (clean − adv) / clean: larger means a more successful attack. The last "
        "column names the attack loss that gave the larger diff.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 4) + ["---"]) + "|",
    ]
    for (_, model, eps), group in df.groupby(["params", "model", "eps"], sort=True):
        by_loss = group.set_index("attack_loss")
        cells = [model, format_params(group["params"].iloc[0]), f"{eps:g}", _num(group["clean_dice"].mean())]
        for loss in losses:
            present = loss in by_loss.index
            cells += [_num(by_loss.at[loss, "adv_dice"]) if present else "–",
                      _num(by_loss.at[loss, "diff"]) if present else "–"]
        cells.append(_winner(by_loss["diff"]))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")
    return text


def correlation(df: pd.DataFrame, eps: float) -> pd.DataFrame:
    """Per attack loss: does attack success at ``eps`` grow with the parameter count?

    Pearson and Spearman statistics are NaN where they are undefined: fewer than three
    models, or parameters or diffs that are all equal.
    """
    _require_columns(df, ("model", "params", "attack_loss", "eps", "diff"))
    _require_single_attack(df)
    at_eps = df[np.isclose(df["eps"].astype(float), float(eps), rtol=1e-9, atol=1e-12)]
    if at_eps.empty:
        available = ", ".join(f"{e:g}" for e in sorted(df["eps"].unique()))
        raise ValueError(f"report.correlation_eps = {eps:g} is not an attacked eps (have: {available})")
    rows = []
    for loss, group in at_eps.groupby("attack_loss", sort=True):
        group = group.dropna(subset=["params", "diff"])
        x, y = group["params"].to_numpy(float), group["diff"].to_numpy(float)
        row = {"attack_loss": loss, "eps": float(eps), "n_models": len(group),
               "pearson_r": math.nan, "pearson_p": math.nan,
               "spearman_rho": math.nan, "spearman_p": math.nan}
        if len(group) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            pearson, spearman = stats.pearsonr(x, y), stats.spearmanr(x, y)
            row.update(pearson_r=float(pearson.statistic), pearson_p=float(pearson.pvalue),
                       spearman_rho=float(spearman.statistic), spearman_p=float(spearman.pvalue))
        rows.append(row)
    return pd.DataFrame(rows)


def format_params(params: float) -> str:
    """Parameter count in millions, e.g. 14328883 -> '14.3M'."""
    return f"{params / 1e6:.1f}M"


def _require_columns(df: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [column for column in columns if column not in df.columns]
    if missing:
        raise ValueError(f"results table lacks column(s) {', '.join(missing)}")


def _require_single_attack(df: pd.DataFrame) -> None:
    """Losses are compared within one attack method; mixing methods would average them."""
    if "attack" in df.columns and df["attack"].nunique() > 1:
        raise ValueError(f"results mix attacks {sorted(df['attack'].unique())}; select one first")


def _num(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:.3f}"


def _winner(diffs: pd.Series) -> str:
    diffs = diffs.dropna()
    if diffs.empty:
        return "–"
    best = diffs[np.isclose(diffs, diffs.max())]
    return "tie" if len(diffs) > 1 and len(best) > 1 else str(best.index[0])
