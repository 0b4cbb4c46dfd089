"""Which attack loss hurts a model more: paired sign-flip tests on units, with multiplicity control.

Two attack losses are compared on the same units of the same model. Per unit, the attacked
score under loss A minus that under loss B is averaged over training seeds (seeds of one
fold score the same units: pooling them as extra pairs would be pseudo-replication), and the
units of every fold are pooled. The row's ``effect`` is the mean of those unit differences;
its interval and ``p`` come from one sign-flip distribution (:func:`advseg.statistics.sign_flip_test`),
and ``p_adjusted`` corrects p over the declared family (``report.family``, ``report.multiplicity``).
A loss is called stronger only where the adjusted p is below ``report.alpha`` and the interval
excludes 0; with fewer than ``report.min_units`` units there is no verdict.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd

from advseg import statistics
from advseg.report import markdown as md
from advseg.report.runs import WORST
from advseg.report.settings import ReportSettings
from advseg.metrics import nanmean
from advseg.report.units import columns, metric_columns

CELL_COLUMNS = ("model", "params", "attack", "variant", "step", "loss_argument_order", "input", "eps")
NO_DIFFERENCE = "no significant difference"
COLUMNS = (*CELL_COLUMNS, "metric", "loss_a", "loss_b", "n_replicates", "n_units", "clean", "adv_a", "adv_b",
           "effect", "ci_low", "ci_high", "p", "p_adjusted", "verdict", "stronger")
FAMILY_KEYS = {"table": [], "model": ["model"], "eps": ["eps"]}


def too_few_units(n: int) -> str:
    return f"too few independent units (n = {n})"


def unit_differences(data: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray, column: str) -> np.ndarray:
    """Per (fold, unit): ``column`` of rows ``a`` minus that of rows ``b``, averaged over the seeds
    both have (``data``: :func:`advseg.report.units.columns`)."""
    def by_cell(rows):
        keys = zip(data["fold"][rows].tolist(), data["unit"][rows].tolist(), data["seed"][rows].tolist())
        return dict(zip(keys, data[column][rows].tolist()))

    first, second = by_cell(a), by_cell(b)
    per_unit: dict[tuple, list[float]] = {}
    for key in sorted(first.keys() & second.keys()):
        per_unit.setdefault(key[:2], []).append(first[key] - second[key])
    return np.array([np.mean(values) for values in per_unit.values()], dtype=float)


def shown_interval(test: statistics.PairedTest, settings: ReportSettings) -> tuple[float, float]:
    """The test's interval, or none (NaN) where too few units carry one."""
    return (math.nan, math.nan) if settings.too_few(test.n) else (test.ci_low, test.ci_high)


def judged(test: statistics.PairedTest, p_adjusted: float, settings: ReportSettings, if_negative: str,
           if_positive: str) -> str:
    """The one decision rule: a direction only when the adjusted p < alpha and the interval excludes 0."""
    if settings.too_few(test.n):
        return too_few_units(test.n)
    if p_adjusted < settings.alpha and (test.ci_high < 0 or test.ci_low > 0):
        return if_negative if test.effect < 0 else if_positive
    return NO_DIFFERENCE


def adjusted(table: pd.DataFrame, family: list[str], method: str, column: str = "p") -> np.ndarray:
    """``column`` adjusted within each family (rows sharing the ``family`` columns; [] = the whole table)."""
    out = np.full(len(table), np.nan)
    groups = table.groupby(family, sort=False).indices.values() if family else [np.arange(len(table))]
    for rows in groups:
        out[rows] = statistics.adjust(table[column].to_numpy(float)[rows], method)
    return out


def loss_comparisons(units: pd.DataFrame, settings: ReportSettings) -> pd.DataFrame:
    """One row per model x attack x variant x eps x pair of attack losses (worst case skipped)."""
    clean, adv, _ = metric_columns(settings.metric)
    data = columns(units)
    cells: dict[tuple, dict[str, np.ndarray]] = {}
    attacked = units[units["attack"] != WORST]
    for key, index in attacked.groupby([*CELL_COLUMNS, "attack_loss"], sort=False).indices.items():
        cells.setdefault(key[:-1], {})[key[-1]] = attacked.index.to_numpy()[index]
    tests, rows = [], []
    for key, by_loss in cells.items():
        for loss_a, loss_b in combinations(sorted(by_loss), 2):
            a, b = _common_replicates(data, by_loss[loss_a], by_loss[loss_b])
            if not len(a):
                continue
            test = statistics.sign_flip_test(unit_differences(data, a, b, adv), settings.alpha, settings.n_bootstrap,
                                             settings.seed)
            tests.append((test, loss_a, loss_b))
            low, high = shown_interval(test, settings)
            rows.append({**dict(zip(CELL_COLUMNS, key)), "metric": settings.metric, "loss_a": loss_a,
                         "loss_b": loss_b, "n_replicates": len(set(zip(data["seed"][a], data["fold"][a]))),
                         "n_units": test.n, "clean": nanmean(data[clean][a]), "adv_a": nanmean(data[adv][a]),
                         "adv_b": nanmean(data[adv][b]), "effect": test.effect, "ci_low": low, "ci_high": high,
                         "p": test.p})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    if table.empty:
        return table
    table["p_adjusted"] = adjusted(table, FAMILY_KEYS[settings.family], settings.multiplicity)
    verdicts = [judged(test, p, settings, f"{a} stronger", f"{b} stronger")
                for (test, a, b), p in zip(tests, table["p_adjusted"])]
    table["verdict"] = verdicts
    table["stronger"] = [v.removesuffix(" stronger") if v.endswith(" stronger") else "" for v in verdicts]
    return table.sort_values(["params", "model", "attack", "variant", "eps", "loss_a", "loss_b"],
                             kind="stable").reset_index(drop=True)


def _common_replicates(data: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``a`` and of ``b`` whose (seed, fold) both have."""
    replicates = set(zip(data["seed"][a].tolist(), data["fold"][a].tolist())) & \
        set(zip(data["seed"][b].tolist(), data["fold"][b].tolist()))

    def kept(rows):
        return rows[[pair in replicates for pair in zip(data["seed"][rows].tolist(), data["fold"][rows].tolist())]]
    return kept(a), kept(b)


def method_note(settings: ReportSettings, unit: str) -> str:
    """What every comparison table states about its estimand and decision rule."""
    percent = f"{settings.level * 100:g}%"
    family = {"table": "every comparison of this table", "model": "the comparisons of one model",
              "eps": "the comparisons at one eps"}[settings.family]
    return (f"Scores are `{settings.metric}`, aggregated per independent unit ({unit}). `A − B` is the mean over "
            "units of the attacked score under loss A minus that under B (seeds averaged within a unit), with the "
            f"{percent} interval and the two-sided p of one sign-flip test on those unit differences. "
            f"`p adj.` corrects p over {family} ({settings.multiplicity}). Lower attacked score = stronger attack. "
            f"A loss is called stronger only where the adjusted p < {settings.alpha:g} and the interval excludes 0; "
            f"with fewer than {settings.min_units} units there is no verdict.")


def attack_losses_markdown(comparisons: pd.DataFrame, settings: ReportSettings, unit: str) -> str:
    """``attack_losses.md``: per model, attack, variant and eps, each pair of losses with its verdict."""
    lines = ["# Attack losses compared", "", method_note(settings, unit), ""]
    if comparisons.empty:
        return "\n".join(lines + ["No model was attacked with two attack losses.", ""])
    lines += [md.row(["model", "params", "attack", "variant", "eps", "units", "A", "B", "clean", "adv (A)",
                      "adv (B)", "A − B [CI]", "p", "p adj.", "verdict"]), md.rule("lllllrllrrrrrrl")]
    for r in comparisons.itertuples():
        lines.append(md.row([r.model, md.format_params(r.params), r.attack, r.variant, f"{r.eps:g}", r.n_units,
                             r.loss_a, r.loss_b, md.num(r.clean), md.num(r.adv_a), md.num(r.adv_b),
                             md.interval(r.effect, r.ci_low, r.ci_high), md.p_value(r.p), md.p_value(r.p_adjusted),
                             md.bold_if(r.verdict, bool(r.stronger))]))
    lines += ["", *verdict_counts(comparisons, by=None)]
    return "\n".join(lines) + "\n"


def ablation_markdown(comparisons: pd.DataFrame, settings: ReportSettings, unit: str) -> str:
    """``ablation.md``: per model, attack and eps, each attack variant's verdicts side by side."""
    lines = ["# Which option of the study's attack decides which loss is stronger", ""]
    variants = sorted(comparisons["variant"].unique()) if not comparisons.empty else []
    if len(variants) < 2:
        ran = variants[0] if variants else "none with two attack losses"
        return "\n".join(lines + [
            f"Only one attack variant ran ({ran}). Give `attack.step`, `attack.loss_argument_order` or "
            "`attack.input` as lists (e.g. `workflow/configs/study_ablation.yaml`) to compare them.", ""])
    lines += [method_note(settings, unit), "",
              md.row(["model", "attack", "eps", "step", "loss order", "input", "A", "B", "adv (A)", "adv (B)",
                      "A − B [CI]", "p adj.", "verdict"]), md.rule("lllllllllrrrl")]
    ordered = comparisons.sort_values(["params", "model", "attack", "eps", "loss_a", "loss_b", "variant"],
                                      kind="stable")
    for r in ordered.itertuples():
        lines.append(md.row([r.model, r.attack, f"{r.eps:g}", r.step, r.loss_argument_order, r.input, r.loss_a,
                             r.loss_b, md.num(r.adv_a), md.num(r.adv_b), md.interval(r.effect, r.ci_low, r.ci_high),
                             md.p_value(r.p_adjusted), md.bold_if(r.verdict, bool(r.stronger))]))
    lines += ["", "## Per variant", "", *verdict_counts(comparisons, by="variant")]
    return "\n".join(lines) + "\n"


def verdict_counts(comparisons: pd.DataFrame, by: str | None) -> list[str]:
    """One line per (variant and) loss pair: how often each loss won after adjustment."""
    lines = []
    keys = ([by] if by else []) + ["loss_a", "loss_b"]
    for key, group in comparisons.groupby(keys, sort=True):
        *prefix, loss_a, loss_b = key
        wins_a = int((group["stronger"] == loss_a).sum())
        wins_b = int((group["stronger"] == loss_b).sum())
        undecided = int(group["verdict"].str.startswith("too few").sum())
        label = f"`{prefix[0]}`: " if prefix else ""
        lines.append(f"- {label}{loss_a} stronger than {loss_b} in {wins_a} of {len(group)} rows after "
                     f"adjustment; {loss_b} stronger in {wins_b}; {NO_DIFFERENCE} in "
                     f"{len(group) - wins_a - wins_b - undecided}; too few units for a verdict in {undecided}.")
    return lines
