"""What each defense buys and what it costs, judged by the strongest attack that applies to it.

A defended model (``defense`` other than none) is scored under the per-slice worst case over
every attack that ran on it: plain gradients, the attacks adapted to it (EOT against a random
defense, BPDA against a purifier), APGD and the transfer from its undefended twin. Per eps:

- ``gain``: its worst-case attacked score minus its twin's, per unit (seeds averaged first),
  sign-flip tested over units: what the defense buys under attack;
- ``cost``: its clean score minus its twin's, tested the same way: what it costs on clean input.

An ensemble's twin is the undefended models it averages (their mean per unit). Each column is one
family for the multiplicity correction, and verdicts follow the rule of
:mod:`advseg.report.comparisons`. Defenses are judged under the standard attack variant.

Certified robustness of randomized smoothing (:func:`certified_table`) needs no attack: the
certificate guarantees the prediction within a radius, and its Dice is aggregated per unit too.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from advseg import statistics
from advseg.metrics import nanmean
from advseg.report import markdown as md
from advseg.report.comparisons import adjusted, judged, shown_interval
from advseg.report.runs import UNDEFENDED, WORST
from advseg.report.settings import ReportSettings
from advseg.report.units import metric_columns

COLUMNS = ("model", "defense", "twin", "params", "eps", "attacks", "n_units", "clean", "robust", "twin_clean",
           "twin_robust", "gain", "gain_ci_low", "gain_ci_high", "gain_p", "gain_p_adjusted", "gain_verdict",
           "cost", "cost_ci_low", "cost_ci_high", "cost_p", "cost_p_adjusted", "cost_verdict")
STANDARD = "standard"


def judged_rows(units: pd.DataFrame) -> pd.DataFrame:
    """Per model and eps the rows of the attack a model is judged by (standard variant): the
    per-slice worst case where several attacks ran, else the one attack; ``attacks`` lists them."""
    rows = units[units["variant"] == STANDARD]
    parts = []
    for (model, eps), group in rows.groupby(["model", "eps"], sort=False):
        ran = group[group["attack"] != WORST]
        attacks = sorted(set(ran["attack"] + "/" + ran["attack_loss"]))
        chosen = group[group["attack"] == WORST] if (group["attack"] == WORST).any() else group
        parts.append(chosen.assign(attacks=";".join(attacks)))
    return pd.concat(parts, ignore_index=True) if parts else rows.assign(attacks="")


def robustness_table(units: pd.DataFrame, settings: ReportSettings) -> pd.DataFrame:
    """One row per model and eps: clean and worst-case scores; for defended models, gain and cost."""
    clean, adv, _ = metric_columns(settings.metric)
    judged_by = judged_rows(units)
    undefended = judged_by[judged_by["defense"] == UNDEFENDED]
    rows, tests = [], []
    for (model, eps), own in judged_by.groupby(["model", "eps"], sort=False):
        first = own.iloc[0]
        row = {"model": model, "defense": first["defense"], "twin": first["twin"], "params": first["params"],
               "eps": eps, "attacks": first["attacks"], "n_units": int(own[["fold", "unit"]].drop_duplicates().shape[0]),
               "clean": nanmean(own[clean].to_numpy()), "robust": nanmean(own[adv].to_numpy())}
        pair = None
        if first["defense"] != UNDEFENDED:
            reference = undefended[undefended["eps"] == eps]
            if first["twin"] != UNDEFENDED:
                reference = reference[reference["model"] == first["twin"]]
            if not reference.empty:
                row.update(twin_clean=nanmean(reference[clean].to_numpy()),
                           twin_robust=nanmean(reference[adv].to_numpy()))
                pair = tuple(statistics.sign_flip_test(_paired(own, reference, column), settings.alpha,
                                                       settings.n_bootstrap, settings.seed) for column in (adv, clean))
                for name, test in zip(("gain", "cost"), pair):
                    low, high = shown_interval(test, settings)
                    row.update({name: test.effect, f"{name}_ci_low": low, f"{name}_ci_high": high,
                                f"{name}_p": test.p})
        rows.append(row)
        tests.append(pair)
    table = pd.DataFrame(rows).reindex(columns=list(COLUMNS))
    if table.empty:
        return table
    for name, (if_negative, if_positive) in (("gain", ("hurts under attack", "helps under attack")),
                                             ("cost", ("lowers the clean score", "raises the clean score"))):
        table[f"{name}_p_adjusted"] = adjusted(table, [], settings.multiplicity, f"{name}_p")
        table[f"{name}_verdict"] = [
            "" if pair is None else judged(pair[0 if name == "gain" else 1], p, settings, if_negative, if_positive)
            for pair, p in zip(tests, table[f"{name}_p_adjusted"])]
    return table.sort_values(["eps", "twin", "defense", "model"], kind="stable").reset_index(drop=True)


def _paired(own: pd.DataFrame, reference: pd.DataFrame, column: str) -> np.ndarray:
    """Per (fold, unit): ``column`` of ``own`` minus that of ``reference`` (each averaged over seeds
    within a model, then over models)."""
    def per_unit(rows):
        per_model = rows.groupby(["model", "fold", "unit"])[column].mean()
        return per_model.groupby(level=["fold", "unit"]).mean()

    both = pd.concat([per_unit(own).rename("own"), per_unit(reference).rename("reference")], axis=1, join="inner")
    return (both["own"] - both["reference"]).to_numpy(float)


def robustness_markdown(table: pd.DataFrame, settings: ReportSettings, unit: str) -> str:
    """``robustness.md``: per defense, model and eps, what it buys under the strongest attack and what it costs."""
    lines = ["# What each defense buys, and what it costs", "",
             f"Scores are `{settings.metric}`, means over independent units ({unit}). `robust` is the score under the "
             "per-slice worst case over every attack listed (plain gradients, the attacks adapted to the defense, the "
             "transfer from its undefended twin); `gain` is the defended model's robust score minus its twin's, `cost` "
             "its clean score minus its twin's, each the mean of unit differences with the interval and p of one "
             f"sign-flip test; p is adjusted ({settings.multiplicity}) over each column. An ensemble's twin is the "
             "undefended models it averages.", ""]
    defended = table[table["defense"] != UNDEFENDED] if not table.empty else table
    if defended.empty:
        return "\n".join(lines + ["No defended model ran: add defenses to `defenses` in the config.", ""])
    lines += [md.row(["model", "defense", "eps", "units", "clean", "robust", "gain [CI]", "p adj.", "verdict",
                      "cost [CI]", "p adj.", "verdict", "attacks"]), md.rule("llrrrrrrlrrll")]
    for r in defended.itertuples():
        lines.append(md.row([r.model, r.defense, f"{r.eps:g}", r.n_units, md.num(r.clean), md.num(r.robust),
                             md.interval(r.gain, r.gain_ci_low, r.gain_ci_high), md.p_value(r.gain_p_adjusted),
                             r.gain_verdict or "–", md.interval(r.cost, r.cost_ci_low, r.cost_ci_high),
                             md.p_value(r.cost_p_adjusted), r.cost_verdict or "–", r.attacks]))
    return "\n".join(lines) + "\n"


# --- certified robustness ---------------------------------------------------------------------------

CERTIFIED_COLUMNS = ("model", "radius", "n_units", "certified_dice", "ci_low", "ci_high", "abstain_rate")


def certified_table(certificates: list[dict], settings: ReportSettings) -> pd.DataFrame:
    """Per smoothed model and radius: certified Dice (mean over units, hierarchical-bootstrap interval) and the
    share of abstained pixels. ``certificates``: :func:`advseg.records.read_certificate` of every file."""
    rows = []
    by_model: dict[str, list[dict]] = {}
    for certificate in certificates:
        by_model.setdefault(certificate["model"], []).append(certificate)
    for model, members in by_model.items():
        radii = members[0]["radii"]
        for member in members[1:]:
            if not np.allclose(member["radii"], radii):
                raise ValueError(f"{member['source']}: radii {member['radii']} differ from {members[0]['source']}")
        for r, radius in enumerate(radii):
            folds: dict[int, list[np.ndarray]] = {}
            abstain = []
            for member in members:
                per_unit = _unit_means(member["certified_dice"][:, r], member["units"])
                folds.setdefault(member["fold"], []).append(per_unit)
                abstain.append(nanmean(_unit_means(member["abstain_rate"], member["units"])))
            arrays = [np.stack(seeds)[:, :, None] for seeds in folds.values()]
            n = sum(a.shape[1] for a in arrays)
            low = high = math.nan
            if not settings.too_few(n):
                means = statistics.hierarchical_means(arrays, settings.n_bootstrap, settings.seed)[:, 0]
                low, high = statistics.percentile_interval(means, settings.level)
            rows.append({"model": model, "radius": float(radius), "n_units": n,
                         "certified_dice": float(statistics.cell_mean(arrays)[0]), "ci_low": low, "ci_high": high,
                         "abstain_rate": float(np.mean(abstain))})
    return pd.DataFrame(rows, columns=list(CERTIFIED_COLUMNS))


def _unit_means(values: np.ndarray, units: np.ndarray) -> np.ndarray:
    """(U,) mean of ``values`` over each unit's slices, units in sorted order."""
    ids, inverse = np.unique(units, return_inverse=True)
    return np.bincount(inverse, weights=values, minlength=len(ids)) / np.bincount(inverse, minlength=len(ids))


def certified_markdown(table: pd.DataFrame, settings: ReportSettings, unit: str) -> str:
    lines = ["# Certified robustness of randomized smoothing", "",
             "Per radius r (L2, in image intensity units), the Dice of the smoothed prediction counting every pixel "
             "that is abstained or certified below r as wrong: no perturbation within r can push it lower. Means over "
             f"independent units ({unit}) with {settings.level:.0%} hierarchical-bootstrap intervals; `abstain` is the "
             "share of pixels where the smoothed model abstains.", ""]
    if table.empty:
        return "\n".join(lines + ["No smoothed model was certified: add smoothing to `defenses`.", ""])
    lines += [md.row(["model", "radius", "units", "certified Dice [CI]", "abstain"]), md.rule("lrrrr")]
    for r in table.itertuples():
        lines.append(md.row([r.model, f"{r.radius:g}", r.n_units,
                             md.interval(r.certified_dice, r.ci_low, r.ci_high, signed=False), md.num(r.abstain_rate)]))
    return "\n".join(lines) + "\n"

