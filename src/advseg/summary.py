"""The attack results as tables: one row per attack job and eps, replicate means, correlations.

This runs in the light reporting job, so it reads only the files the attack jobs wrote (a
summary ``eps_<eps>.json`` and the per-slice scores ``eps_<eps>.slices.npz`` beside it) and
the model cards, and never imports torch. Every score in a row is recomputed from the
per-slice file, so a point estimate and its bootstrap interval come from the same numbers.

Two Dice protocols are always reported (``PROTOCOLS``):
- ``dice``: per class, the mean over slices where the class is present, then the mean over
  classes (columns ``clean_dice``, ``adv_dice``, ``diff``);
- ``dice_study``: the study's per-slice smoothed Dice over all classes, averaged over slices
  with any organ (``clean_dice_study``, ``adv_dice_study``, ``diff_dice_study``).
``report.metric`` picks the one that drives the comparisons, plots and correlations. A
slice's *score* (used by the paired tests and the worst case) is, under ``dice``, the mean of
its per-class Dice over the classes present in its truth, and under ``dice_study`` its study
Dice; slices without any organ have no score. Attack success is the study's
``diff = (clean - adv) / clean``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from advseg import statistics
from advseg.jobs import read_json, read_npz

log = logging.getLogger(__name__)

PROTOCOLS = ("dice", "dice_study")
# protocol -> (clean, attacked, diff) columns
PROTOCOL_COLUMNS = {"dice": ("clean_dice", "adv_dice", "diff"),
                    "dice_study": ("clean_dice_study", "adv_dice_study", "diff_dice_study")}
PER_CLASS_METRICS = ("dice", "iou", "hd95", "nsd")
SLICE_KEYS = ("class_names", "clean_dice", "adv_dice", "clean_iou", "adv_iou", "clean_hd95", "adv_hd95",
              "clean_nsd", "adv_nsd", "clean_dice_study", "adv_dice_study", "has_organ")
ATTACK_KEYS = ("arch", "encoder", "model", "fold", "seed", "attack", "attack_loss", "eps", "linf", "l2")
CARD_KEYS = ("arch", "encoder", "params", "fold", "seed")
VARIANT_DEFAULTS = {"step": "standard", "loss_argument_order": "standard", "input": "grey"}
WORST = "worst"
WORST_LOSS = "all"

ID_COLUMNS = ("arch", "encoder", "model", "params", "seed", "fold", "attack", "attack_loss", "variant",
              "step", "loss_argument_order", "input", "eps")
# Everything a replicate shares except the replicate itself.
GROUP_COLUMNS = tuple(c for c in ID_COLUMNS if c not in ("seed", "fold"))
SCORE_COLUMNS = ("clean_dice", "adv_dice", "diff", "adv_dice_ci_low", "adv_dice_ci_high", "diff_ci_low",
                 "diff_ci_high", "clean_dice_study", "adv_dice_study", "diff_dice_study",
                 "adv_dice_study_ci_low", "adv_dice_study_ci_high", "diff_dice_study_ci_low",
                 "diff_dice_study_ci_high", "clean_iou", "adv_iou", "diff_iou", "clean_hd95", "adv_hd95",
                 "clean_nsd", "adv_nsd")
COUNT_COLUMNS = ("n_images", "n_images_study", "n_slices", "linf", "l2", "worst_of")
SUMMARY_COLUMNS = ID_COLUMNS + SCORE_COLUMNS + COUNT_COLUMNS
PER_CLASS_PREFIXES = ("clean_dice_", "adv_dice_", "diff_", "clean_hd95_", "adv_hd95_", "clean_nsd_", "adv_nsd_")
# Scores averaged over replicates (mean and sd) in the replicate table.
REPLICATED_SCORES = ("clean_dice", "adv_dice", "diff", "clean_dice_study", "adv_dice_study", "diff_dice_study",
                     "clean_iou", "adv_iou", "diff_iou", "clean_hd95", "adv_hd95", "clean_nsd", "adv_nsd")
ATTACK_ORDER = {"fgsm": 0, "pgd": 1, "segpgd": 2, "cospgd": 3, WORST: 9}
# Bootstrap distributions kept per run: (name, protocol, what).
INTERVALS = (("adv_dice", "dice", "adv"), ("diff", "dice", "diff"),
             ("adv_dice_study", "dice_study", "adv"), ("diff_dice_study", "dice_study", "diff"))


@dataclass
class AttackRun:
    """One attack job at one eps: its identity (``info``) and per-slice scores (``slices``)."""

    info: dict
    slices: dict[str, np.ndarray]
    source: str
    loss_history: list[float] = field(default_factory=list)

    @property
    def replicate(self) -> tuple[int, int]:
        return int(self.info["seed"]), int(self.info["fold"])


@dataclass
class ScoredRun:
    """A run's summary row and the bootstrap distributions behind its intervals."""

    run: AttackRun
    row: dict
    distributions: dict[str, np.ndarray]


def metric_columns(metric: str) -> tuple[str, str, str]:
    """(clean, attacked, diff) columns of a Dice protocol; an unknown name names ``report.metric``."""
    if metric not in PROTOCOL_COLUMNS:
        raise ValueError(f"report.metric: unknown protocol {metric!r} (choose from {', '.join(PROTOCOLS)})")
    return PROTOCOL_COLUMNS[metric]


# --- loading --------------------------------------------------------------------------------------

def slices_path(attack_json: Path) -> Path:
    """``eps_0.02.json`` -> ``eps_0.02.slices.npz`` in the same folder."""
    attack_json = Path(attack_json)
    return attack_json.with_name(attack_json.name.removesuffix(".json") + ".slices.npz")


def load_runs(attack_jsons: list[Path], model_cards: list[Path]) -> list[AttackRun]:
    """Every attack JSON with its per-slice scores and its model's parameter count.

    Any unreadable file, missing key, unmatched model, duplicated run or per-slice file whose
    slice count disagrees with another file of the same fold is an error naming the file.
    """
    cards: dict[tuple, tuple[Path, dict]] = {}
    for path in model_cards:
        card = read_json(path, CARD_KEYS)
        key = (card["arch"], card["encoder"], int(card["seed"]), int(card["fold"]))
        if key in cards:
            raise ValueError(f"{path}: second model card for {_model_key(key)} (first: {cards[key][0]})")
        cards[key] = (path, card)

    runs, seen, fold_sizes = [], {}, {}
    for path in attack_jsons:
        record = read_json(path, ATTACK_KEYS)
        key = (record["arch"], record["encoder"], int(record["seed"]), int(record["fold"]))
        if key not in cards:
            raise ValueError(f"{path}: no model card for {_model_key(key)}")
        info = {name: record[name] for name in ATTACK_KEYS}
        info.update({name: str(record.get(name, default)) for name, default in VARIANT_DEFAULTS.items()})
        info["variant"] = str(record.get("variant", "standard"))
        info.update(eps=float(info["eps"]), seed=int(info["seed"]), fold=int(info["fold"]),
                    params=int(cards[key][1]["params"]), linf=float(info["linf"]), l2=float(info["l2"]))
        identity = tuple(info[c] for c in ("model", "seed", "fold", "attack", "attack_loss", "variant", "eps"))
        if identity in seen:
            raise ValueError(f"{path}: duplicates {seen[identity]} (model, seed, fold, attack, attack_loss, "
                             f"variant, eps = {identity})")
        seen[identity] = path
        slices = load_slices(slices_path(path))
        n = len(slices["has_organ"])
        first = fold_sizes.setdefault(info["fold"], (n, slices_path(path)))
        if first[0] != n:
            raise ValueError(f"{slices_path(path)}: {n} slices, but {first[1]} of the same fold "
                             f"{info['fold']} has {first[0]}")
        history = record.get("loss_history") or []
        run = AttackRun(info, slices, str(path), [float(v) for v in history])
        _warn_if_summary_disagrees(run, record)
        runs.append(run)
    if not runs:
        raise ValueError("no attack results given")
    return runs


def examples_by_model(runs: list[AttackRun], examples: list[Path]) -> dict[str, dict[str, Path]]:
    """The example files per model, labelled method/attack loss by the attack result beside each."""
    by_path = {Path(run.source).resolve(): run for run in runs}
    grouped: dict[str, dict[str, Path]] = {}
    for example in examples:
        run = by_path.get(Path(example).with_name(Path(example).name.replace(".example.npz", ".json")).resolve())
        if run is None:
            raise ValueError(f"{example}: no attack result beside it among the attack JSONs given")
        grouped.setdefault(run.info["model"], {})[f"{run.info['attack']}/{run.info['attack_loss']}"] = Path(example)
    return grouped


def load_slices(path: Path) -> dict[str, np.ndarray]:
    """Per-slice scores of one attack job at one eps, checked for keys and shapes."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: per-slice scores not found (written beside the attack JSON)")
    data = read_npz(path, SLICE_KEYS, "'advseg attack' (delete its attack JSON too)")
    names = [str(name) for name in data["class_names"]]
    n = data["has_organ"].shape[0]
    for key in SLICE_KEYS[1:]:
        expected = (n,) if key in ("clean_dice_study", "adv_dice_study", "has_organ") else (n, len(names))
        if data[key].shape != expected:
            raise ValueError(f"{path}: {key} has shape {data[key].shape}, expected {expected}")
    slices = {key: data[key].astype(float) for key in SLICE_KEYS[1:]}
    slices["has_organ"] = data["has_organ"].astype(bool)
    slices["class_names"] = np.array(names)
    return slices


def _model_key(key: tuple) -> str:
    return f"{key[0]}-{key[1]} seed {key[2]} fold {key[3]}"


def _warn_if_summary_disagrees(run: AttackRun, record: dict) -> None:
    for protocol in PROTOCOLS:
        for kind, column in zip(("clean", "adv"), PROTOCOL_COLUMNS[protocol][:2]):
            if column in record and record[column] is not None:
                mine = protocol_statistic(run.slices, kind, protocol)[0]
                if not (math.isnan(mine) and math.isnan(float(record[column]))) and \
                        not math.isclose(mine, float(record[column]), abs_tol=1e-6):
                    log.warning("%s: %s = %s, but its per-slice file gives %s", run.source, column,
                                record[column], mine)


# --- per-slice statistics ----------------------------------------------------------------------

def row_weights(rows: np.ndarray | None, n_items: int) -> np.ndarray:
    """How often each slice is drawn: (k, n_items) counts for a (k, n_items) index matrix; all ones for None."""
    if rows is None:
        return np.ones((1, n_items))
    rows = np.atleast_2d(rows)
    k = rows.shape[0]
    flat = (rows + n_items * np.arange(k)[:, None]).ravel()
    return np.bincount(flat, minlength=k * n_items).reshape(k, n_items).astype(float)


def class_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(k, C) weighted mean over slices of each class, ignoring NaN; NaN where no slice counts."""
    present = ~np.isnan(values)
    sums = weights @ np.where(present, values, 0.0)
    counts = weights @ present.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), np.nan)


def mean_over_classes(per_class: np.ndarray) -> np.ndarray:
    """(k,) mean over the classes that have a score; NaN where none has."""
    present = ~np.isnan(per_class)
    counts = present.sum(axis=1)
    sums = np.where(present, per_class, 0.0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def protocol_statistic(slices: dict, kind: str, protocol: str, rows: np.ndarray | None = None,
                       weights: np.ndarray | None = None) -> np.ndarray:
    """The protocol's score of the clean or attacked (``kind``) predictions on each resample of rows.

    ``weights`` (k, N) slice counts may be given instead of ``rows`` when many runs share them.
    """
    if weights is None:
        weights = row_weights(rows, len(slices["has_organ"]))
    if protocol == "dice":
        return mean_over_classes(class_means(slices[f"{kind}_dice"], weights))
    if protocol == "dice_study":
        values = slices[f"{kind}_dice_study"]
        counted = slices["has_organ"] & ~np.isnan(values)
        sums = weights @ np.where(counted, values, 0.0)
        counts = weights @ counted.astype(float)
        return np.where(counts > 0, sums / np.maximum(counts, 1e-300), np.nan)
    metric_columns(protocol)
    raise AssertionError("unreachable")


def protocol_diff(slices: dict, protocol: str, rows: np.ndarray | None = None,
                  weights: np.ndarray | None = None) -> np.ndarray:
    """(clean - adv) / clean on each resample, NaN where the clean score is not positive."""
    if weights is None:
        weights = row_weights(rows, len(slices["has_organ"]))
    clean = protocol_statistic(slices, "clean", protocol, weights=weights)
    adv = protocol_statistic(slices, "adv", protocol, weights=weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(clean > 0, (clean - adv) / np.where(clean > 0, clean, 1.0), np.nan)


def slice_scores(slices: dict, kind: str, protocol: str) -> np.ndarray:
    """(N,) each slice's score under a protocol (see the module docstring); NaN where it has none."""
    if protocol == "dice":
        return mean_over_classes(slices[f"{kind}_dice"])
    if protocol == "dice_study":
        return np.where(slices["has_organ"], slices[f"{kind}_dice_study"], np.nan)
    metric_columns(protocol)
    raise AssertionError("unreachable")


def relative_drop(clean: float, attacked: float) -> float:
    """The study's attack success: (clean - attacked) / clean, NaN where clean is not positive."""
    return (clean - attacked) / clean if clean > 0 else math.nan


# --- worst case ------------------------------------------------------------------------------------

def worst_case_runs(runs: list[AttackRun]) -> list[AttackRun]:
    """Per model x replicate x variant x eps, the per-slice worst over every method x attack loss run.

    Each protocol picks its own worst run per slice: under ``dice_study`` the lowest study
    Dice; under ``dice`` the run with the lowest slice score (mean Dice over present classes),
    whose per-class Dice, IoU, HD95 and NSD of that slice are then used. Ties go to the first
    run in (method, loss) order. Groups with a single run give no worst-case run.
    """
    groups: dict[tuple, list[AttackRun]] = {}
    for run in runs:
        if run.info["attack"] == WORST:
            continue
        key = tuple(run.info[c] for c in ("model", "seed", "fold", "variant", "eps"))
        groups.setdefault(key, []).append(run)
    worst = []
    for members in groups.values():
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda r: (ATTACK_ORDER.get(r.info["attack"], 5), r.info["attack"],
                                                 r.info["attack_loss"]))
        worst.append(_worst_of(members))
    return worst


def _worst_of(members: list[AttackRun]) -> AttackRun:
    first = members[0]
    n = len(first.slices["has_organ"])
    scores = np.stack([slice_scores(r.slices, "adv", "dice") for r in members])
    chosen = np.argmin(np.where(np.isnan(scores), np.inf, scores), axis=0)
    slices = {key: value for key, value in first.slices.items() if not key.startswith("adv_")}
    for metric in PER_CLASS_METRICS:
        stacked = np.stack([r.slices[f"adv_{metric}"] for r in members])
        slices[f"adv_{metric}"] = stacked[chosen, np.arange(n)]
    study = np.stack([r.slices["adv_dice_study"] for r in members])
    slices["adv_dice_study"] = np.nanmin(np.where(np.isnan(study), np.inf, study), axis=0)
    slices["adv_dice_study"][np.isinf(slices["adv_dice_study"])] = np.nan
    info = dict(first.info, attack=WORST, attack_loss=WORST_LOSS,
                linf=max(r.info["linf"] for r in members), l2=max(r.info["l2"] for r in members))
    info["worst_of"] = ";".join(f"{r.info['attack']}/{r.info['attack_loss']}" for r in members)
    return AttackRun(info, slices, f"worst case of {len(members)} runs ({first.source}, ...)")


# --- tables ------------------------------------------------------------------------------------------

def score_runs(runs: list[AttackRun], n_bootstrap: int = statistics.DEFAULT_RESAMPLES, seed: int = 0,
               level: float = statistics.DEFAULT_LEVEL) -> list[ScoredRun]:
    """Each run's summary row with bootstrap intervals over its slices.

    The resampled slices depend only on (seed, fold), so every run of one fold, whatever the
    model or training seed, is resampled the same way (and the resample counts are built once
    per fold), and replicate means can be bootstrapped by averaging their runs' distributions.
    Rows come back grouped by fold; ``summary_table`` sorts them.
    """
    scored, fold_weights = [], {}
    for run in sorted(runs, key=lambda r: r.info["fold"]):
        slices, n = run.slices, len(run.slices["has_organ"])
        if run.info["fold"] not in fold_weights:  # one fold's resamples in memory at a time
            fold_weights = {run.info["fold"]: row_weights(
                statistics.resample_rows(n, n_bootstrap, (seed, run.info["fold"])), n)}
        weights = fold_weights[run.info["fold"]]
        row = {name: run.info[name] for name in ID_COLUMNS}
        for metric in PER_CLASS_METRICS:
            for kind in ("clean", "adv"):
                per_class = class_means(slices[f"{kind}_{metric}"], row_weights(None, n))[0]
                row[f"{kind}_{metric}"] = float(mean_over_classes(per_class[None])[0])
                if metric != "iou":
                    for name, value in zip(slices["class_names"], per_class):
                        row[f"{kind}_{metric}_{name}"] = float(value)
        row["diff_iou"] = relative_drop(row["clean_iou"], row["adv_iou"])
        for name in slices["class_names"]:
            row[f"diff_{name}"] = relative_drop(row[f"clean_dice_{name}"], row[f"adv_dice_{name}"])
        for protocol, (clean, adv, diff) in PROTOCOL_COLUMNS.items():
            row[clean] = float(protocol_statistic(slices, "clean", protocol)[0])
            row[adv] = float(protocol_statistic(slices, "adv", protocol)[0])
            row[diff] = relative_drop(row[clean], row[adv])
        distributions = interval_distributions(slices, weights)
        for name, _, _ in INTERVALS:
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = statistics.percentile_interval(distributions[name], level)
        row.update(n_images=int(slices["has_organ"].sum()),
                   n_images_study=int((slices["has_organ"] & ~np.isnan(slices["clean_dice_study"])).sum()),
                   n_slices=n, linf=run.info["linf"], l2=run.info["l2"], worst_of=run.info.get("worst_of", ""))
        scored.append(ScoredRun(run, row, distributions))
    return scored


def interval_distributions(slices: dict, weights: np.ndarray) -> dict[str, np.ndarray]:
    """The ``INTERVALS`` statistics on every resample, from one pass over the (k, N) slice counts.

    Equal to ``protocol_statistic``/``protocol_diff`` with the same weights, but one matrix
    product instead of twelve: the weights are the large operand.
    """
    blocks = []
    for kind in ("clean", "adv"):
        dice = slices[f"{kind}_dice"]
        present = ~np.isnan(dice)
        study = slices[f"{kind}_dice_study"]
        counted = slices["has_organ"] & ~np.isnan(study)
        blocks += [np.where(present, dice, 0.0), present, np.where(counted, study, 0.0)[:, None], counted[:, None]]
    widths = [block.shape[1] for block in blocks]
    totals = np.split(weights @ np.hstack(blocks).astype(float), np.cumsum(widths)[:-1], axis=1)
    scores = {}
    for i, kind in enumerate(("clean", "adv")):
        dice_sums, dice_counts, study_sums, study_counts = totals[4 * i:4 * i + 4]
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = np.where(dice_counts > 0, dice_sums / np.where(dice_counts > 0, dice_counts, 1.0), np.nan)
            scores[(kind, "dice")] = mean_over_classes(per_class)
            scores[(kind, "dice_study")] = np.where(study_counts[:, 0] > 0,
                                                    study_sums[:, 0] / np.maximum(study_counts[:, 0], 1e-300), np.nan)
    distributions = {}
    for name, protocol, what in INTERVALS:
        clean, adv = scores[("clean", protocol)], scores[("adv", protocol)]
        if what == "adv":
            distributions[name] = adv
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                distributions[name] = np.where(clean > 0, (clean - adv) / np.where(clean > 0, clean, 1.0), np.nan)
    return distributions


def summary_table(scored: list[ScoredRun]) -> pd.DataFrame:
    """One row per model x replicate x attack x loss x variant x eps (worst case included), sorted."""
    df = pd.DataFrame([s.row for s in scored])
    per_class = [c for prefix in PER_CLASS_PREFIXES for c in df.columns
                 if c.startswith(prefix) and c not in SUMMARY_COLUMNS]
    return sort_rows(df[list(SUMMARY_COLUMNS) + per_class])


def replicate_table(scored: list[ScoredRun], level: float = statistics.DEFAULT_LEVEL) -> pd.DataFrame:
    """Mean and sd over replicates (seeds x folds) per model x attack x loss x variant x eps.

    The intervals are those of the replicate mean: resample slices within each fold (the same
    slices for every seed of that fold), score each replicate, average, take percentiles.
    """
    groups: dict[tuple, list[ScoredRun]] = {}
    for s in scored:
        groups.setdefault(tuple(s.row[c] for c in GROUP_COLUMNS), []).append(s)
    rows = []
    for key, members in groups.items():
        row = dict(zip(GROUP_COLUMNS, key))
        row["n_replicates"] = len(members)
        row["seeds"] = ";".join(str(v) for v in sorted({m.row["seed"] for m in members}))
        row["folds"] = ";".join(str(v) for v in sorted({m.row["fold"] for m in members}))
        for column in REPLICATED_SCORES:
            values = np.array([m.row[column] for m in members], dtype=float)
            row[f"{column}_mean"] = _nanmean(values)
            row[f"{column}_sd"] = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else math.nan
        for name, _, _ in INTERVALS:
            with np.errstate(invalid="ignore"), _quiet():
                pooled = np.nanmean(np.stack([m.distributions[name] for m in members]), axis=0)
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = statistics.percentile_interval(pooled, level)
        rows.append(row)
    return sort_rows(pd.DataFrame(rows))


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Smallest model first, then replicate, attack (worst case last), loss, variant, eps."""
    df = df.assign(attack_rank=df["attack"].map(lambda a: ATTACK_ORDER.get(a, 5)))
    keys = [c for c in ("params", "model", "seed", "fold", "attack_rank", "attack", "attack_loss", "variant", "eps")
            if c in df.columns]
    return df.sort_values(keys, kind="stable").drop(columns="attack_rank").reset_index(drop=True)


def correlation_table(replicates: pd.DataFrame, metric: str, eps: float,
                      n_bootstrap: int = statistics.DEFAULT_RESAMPLES, seed: int = 0,
                      level: float = statistics.DEFAULT_LEVEL) -> pd.DataFrame:
    """Per attack x loss x variant at ``eps``: does attack success grow with size or clean score?

    One point per model (its mean over replicates); Pearson and Spearman with bootstrap
    intervals over models. Both x = params and x = clean score are correlated with the diff
    of ``metric``.
    """
    clean, _, diff = metric_columns(metric)
    at_eps = replicates[np.isclose(replicates["eps"].astype(float), float(eps), rtol=1e-9, atol=1e-12)]
    if at_eps.empty:
        available = ", ".join(f"{e:g}" for e in sorted(replicates["eps"].unique()))
        raise ValueError(f"report.correlation_eps = {eps:g} is not an attacked eps (have: {available})")
    rows = []
    for (attack, loss, variant), group in at_eps.groupby(["attack", "attack_loss", "variant"], sort=False):
        for x_name, x_column in (("params", "params"), ("clean", f"{clean}_mean")):
            result = statistics.correlation_with_ci(group[x_column].to_numpy(float),
                                                    group[f"{diff}_mean"].to_numpy(float), n_bootstrap, seed, level)
            rows.append({"attack": attack, "attack_loss": loss, "variant": variant, "eps": float(eps),
                         "metric": metric, "x": x_name, "y": diff, "n_models": result.pop("n"), **result})
    return pd.DataFrame(rows)


# --- transfer ------------------------------------------------------------------------------------------

TRANSFER_KEYS = ("source_model", "target_model", "fold", "seed", "attack", "attack_loss", "eps",
                 "clean_dice", "adv_dice", "clean_dice_study", "adv_dice_study")
TRANSFER_COLUMNS = ("source_model", "target_model", "white_box", "seed", "fold", "attack", "attack_loss",
                    "variant", "eps", "clean_dice", "adv_dice", "diff", "clean_dice_study", "adv_dice_study",
                    "diff_dice_study")


def transfer_table(transfer_jsons: list[Path], summary: pd.DataFrame, eps: float | None) -> pd.DataFrame:
    """Source x target attacked scores at ``eps``, with white-box rows (source = target) from the attacks.

    Each transfer file is a JSON list of rows with ``TRANSFER_KEYS`` (``variant`` optional);
    the diffs are recomputed from the clean and attacked scores. ``eps`` None takes the
    largest eps among the transfer rows.
    """
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
    table["diff"] = [relative_drop(c, a) for c, a in zip(table["clean_dice"], table["adv_dice"])]
    table["diff_dice_study"] = [relative_drop(c, a) for c, a in zip(table["clean_dice_study"],
                                                                     table["adv_dice_study"])]
    table = table[list(TRANSFER_COLUMNS)].sort_values(["attack", "attack_loss", "variant", "seed", "fold",
                                                       "source_model", "target_model"], kind="stable")
    return table.reset_index(drop=True)


# --- output --------------------------------------------------------------------------------------------

@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Six significant digits: more than any bootstrap interval here can resolve."""
    with atomic_output(path) as temporary:
        df.to_csv(temporary, index=False, float_format="%.6g")


def write_text(text: str, path: Path) -> None:
    with atomic_output(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def format_params(params: float) -> str:
    """Parameter count in millions, e.g. 14328883 -> '14.3M'."""
    return f"{params / 1e6:.1f}M"


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


@contextmanager
def _quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
