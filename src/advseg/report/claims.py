"""The study's three claims, each with the verdict this run's data can carry: ``claims.md``.

1. *The models are vulnerable*: per eps, the Dice drop (clean - attacked) under the strongest
   attack that ran, averaged over models within each unit, tested over units.
2. *Susceptibility is unrelated to model size*: the size table's Spearman rows (one point per model).
3. *BCE beats the training loss*: per method and eps, the attacked score under BCE minus that
   under the training loss, averaged over models within each unit, tested over units.

Each claim is judged under the standard protocol (standard attack, Dice over present classes)
and the study's (its FGSM step, swapped loss call and per-channel input; its per-slice Dice over
all classes), with the decision rule of :mod:`advseg.report.comparisons`. Any ablation cell
(another attack variant, or the other Dice protocol) whose verdict differs is named beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from advseg import grid, statistics
from advseg.metrics import relative_drop
from advseg.report import markdown as md
from advseg.report.comparisons import NO_DIFFERENCE, adjusted, judged, shown_interval
from advseg.report.runs import WORST
from advseg.report.settings import ReportSettings
from advseg.report.size import LESS, MORE, NONE, at_eps, size_table
from advseg.report.units import PROTOCOL_COLUMNS

STUDY_VARIANT = grid.STUDY_VARIANT.label
PROTOCOLS = {"standard": ("standard", "dice"), "study": (STUDY_VARIANT, "dice_study")}
CLAIMS = ("The models are vulnerable", "Susceptibility is unrelated to model size", "BCE beats the training loss")
HOLDS, CONTRADICTED, PARTLY, UNDECIDED = "holds", "contradicted", "partly holds", "cannot tell"
NOT_RUN = {"standard": "not run: no attack ran with the standard variant",
           "study": "not run: the study's attack variant did not run"}


@dataclass
class Judgement:
    """One claim under one (variant, metric): its rows and the one-line verdict they support."""
    rows: list[dict]
    verdict: str


def vulnerable(units: pd.DataFrame, variant: str, metric: str, settings: ReportSettings) -> Judgement:
    """Claim 1 per eps: is the drop over units above 0 under the strongest attack of ``variant``?"""
    clean, adv = PROTOCOL_COLUMNS[metric][:2]
    rows = units[units["variant"] == variant]
    if rows.empty:
        return Judgement([], "not run")
    attack = WORST if (rows["attack"] == WORST).any() else rows["attack"].iloc[0]
    rows = rows[rows["attack"] == attack]
    if attack != WORST:
        rows = rows[rows["attack_loss"] == rows["attack_loss"].iloc[0]]
    out, tests = [], []
    for eps, at in rows.groupby("eps", sort=True):
        test = statistics.sign_flip_test(_pooled(at.assign(value=at[clean] - at[adv])), settings.alpha,
                                         settings.n_bootstrap, settings.seed)
        per_model = at.groupby("model")[[clean, adv]].mean()
        tests.append(test)
        low, high = shown_interval(test, settings)
        out.append({"eps": eps, "attack": attack if attack != WORST else "worst case", "n_units": test.n,
                    "effect": test.effect, "ci_low": low, "ci_high": high, "p": test.p,
                    "relative_drop": float(np.nanmean(relative_drop(per_model[clean], per_model[adv])))})
    _decide(out, tests, settings, "attack raised the score", "vulnerable")
    return Judgement(out, _summary(out, "vulnerable", "attack raised the score", "eps"))


def bce_stronger(units: pd.DataFrame, variant: str, metric: str, settings: ReportSettings) -> Judgement:
    """Claim 3 per method and eps: attacked score under BCE minus under the training loss, over units."""
    adv = PROTOCOL_COLUMNS[metric][1]
    train = settings.training_loss
    if train == "bce":
        return Judgement([], "not applicable: the models were trained with BCE")
    rows = units[(units["variant"] == variant) & (units["attack"] != WORST)]
    keys = ["model", "attack", "eps", "fold", "seed", "unit"]
    pairs = rows[rows["attack_loss"] == "bce"][keys + [adv]].merge(
        rows[rows["attack_loss"] == train][keys + [adv]], on=keys, suffixes=("_bce", "_train"))
    if pairs.empty:
        return Judgement([], f"not run: needs attack.losses with bce and {train}")
    out, tests = [], []
    for (attack, eps), at in pairs.groupby(["attack", "eps"], sort=True):
        test = statistics.sign_flip_test(_pooled(at.assign(value=at[f"{adv}_bce"] - at[f"{adv}_train"])),
                                         settings.alpha, settings.n_bootstrap, settings.seed)
        tests.append(test)
        low, high = shown_interval(test, settings)
        out.append({"attack": attack, "eps": eps, "n_units": test.n, "effect": test.effect, "ci_low": low,
                    "ci_high": high, "p": test.p})
    _decide(out, tests, settings, "bce stronger", f"{train} stronger")
    return Judgement(out, _summary(out, "bce stronger", f"{train} stronger", "method x eps"))


def unrelated_to_size(replicates: pd.DataFrame, variant: str, metric: str, settings: ReportSettings) -> Judgement:
    """Claim 2: the size table's rows for ``variant`` (every attack x loss) at ``report.correlation_eps``."""
    rows = replicates[replicates["variant"] == variant]
    if at_eps(rows, settings.correlation_eps).empty:
        return Judgement([], "not run")
    table = size_table(rows, replace(settings, metric=metric))
    out = table.to_dict(orient="records")
    supports = [r for r in out if r["verdict"].startswith(NONE)]
    against = [r for r in out if r["verdict"] in (MORE, LESS)]
    if against:
        verdict = f"{CONTRADICTED}: {against[0]['verdict']} ({len(against)} of {len(out)} rows)"
    elif supports and len(supports) == len(out):
        verdict = f"{HOLDS} (every row: |ρ| < {settings.negligible_correlation:g})"
    elif supports:
        verdict = f"{PARTLY}: no correlation in {len(supports)} of {len(out)} rows, the rest inconclusive"
    else:
        verdict = f"{UNDECIDED}: {out[0]['verdict']}" if out else UNDECIDED
    return Judgement(out, verdict)


def _pooled(rows: pd.DataFrame) -> np.ndarray:
    """Per (fold, unit): ``value`` averaged over seeds within each model, then over models."""
    per_model = rows.groupby(["model", "fold", "unit"])["value"].mean()
    return per_model.groupby(level=["fold", "unit"]).mean().to_numpy(float)


def _decide(rows: list[dict], tests: list, settings: ReportSettings, if_negative: str, if_positive: str) -> None:
    """Adjust the rows' p over the claim (one family) and add each row's verdict."""
    frame = pd.DataFrame(rows)
    for row, test, p in zip(rows, tests, adjusted(frame, [], settings.multiplicity) if rows else []):
        row["p_adjusted"] = p
        row["verdict"] = judged(test, p, settings, if_negative, if_positive)


def _summary(rows: list[dict], supports: str, against: str, over: str) -> str:
    if not rows:
        return "not run"
    verdicts = [r["verdict"] for r in rows]
    n_for, n_against = verdicts.count(supports), verdicts.count(against)
    if n_against:
        return f"{CONTRADICTED}: {against} in {n_against} of {len(rows)} {over} rows" + \
            (f" ({supports} in {n_for})" if n_for else "")
    if n_for == len(rows):
        return f"{HOLDS}: {supports} in every {over} row"
    if n_for:
        return f"{PARTLY}: {supports} in {n_for} of {len(rows)} {over} rows"
    if all(v.startswith("too few") for v in verdicts):
        return f"{UNDECIDED}: {verdicts[0]}"
    return f"{UNDECIDED}: {NO_DIFFERENCE} in any {over} row"


def judge_all(units: pd.DataFrame, replicates: pd.DataFrame,
              settings: ReportSettings) -> dict[tuple[int, str], tuple[Judgement, list[str]]]:
    """(claim index, protocol) -> its judgement and the ablation cells that flip its verdict."""
    variants = sorted(units["variant"].unique())

    def judge(claim: int, variant: str, metric: str) -> Judgement:
        if claim == 0:
            return vulnerable(units, variant, metric, settings)
        if claim == 1:
            return unrelated_to_size(replicates, variant, metric, settings)
        return bce_stronger(units, variant, metric, settings)

    out = {}
    for claim in range(len(CLAIMS)):
        for protocol, (variant, metric) in PROTOCOLS.items():
            if variant not in variants:
                out[(claim, protocol)] = (Judgement([], NOT_RUN[protocol]), [])
                continue
            judgement = judge(claim, variant, metric)
            flips = []
            if not judgement.verdict.startswith("not run"):
                cells = [(v, metric) for v in variants if v != variant] + \
                        [(variant, m) for m in PROTOCOL_COLUMNS if m != metric]
                for other_variant, other_metric in cells:
                    other = judge(claim, other_variant, other_metric)
                    if _flipped(judgement.verdict, other.verdict):
                        flips.append(f"{_cell_name(other_variant, other_metric)}: {other.verdict}")
            out[(claim, protocol)] = (judgement, flips)
    return out


def _flipped(verdict: str, other: str) -> bool:
    """A decisive verdict turned around: holds (or partly) against contradicted."""
    def side(text: str) -> str | None:
        head = text.split(":")[0].split(" (")[0]
        return {HOLDS: "for", PARTLY: "for", CONTRADICTED: "against"}.get(head)
    return None not in (side(verdict), side(other)) and side(verdict) != side(other)


def _cell_name(variant: str, metric: str) -> str:
    if variant == "standard":
        options = "standard attack"
    else:
        step, order, input_ = variant.split("-")
        options = f"attack.step={step}, attack.loss_argument_order={order}, attack.input={input_}"
    return f"{options}, report.metric={metric}"


def claims_markdown(judgements: dict, settings: ReportSettings, units: pd.DataFrame, unit: str) -> str:
    """``claims.md``: one verdict per claim and protocol, the rows behind it, and what would flip it."""
    n = int(units[["fold", "unit"]].drop_duplicates().shape[0])
    models = units.drop_duplicates("model")
    seeds, folds = sorted(units["seed"].unique()), sorted(units["fold"].unique())
    smallest = 2.0 / 2 ** n if n <= statistics.EXACT_SIGN_FLIP_UNITS else 0.0
    lines = ["# What this run's data say about the study's claims", "",
             f"- **Independent units:** {unit}; n = {n} (held-out folds {', '.join(map(str, folds))}). "
             "Every interval and test below resamples or pairs these units, never slices.",
             f"- **Models:** {len(models)}, {md.format_params(models['params'].min())} to "
             f"{md.format_params(models['params'].max())} trainable parameters; training seeds "
             f"{', '.join(map(str, seeds))} (averaged within a unit before any test).",
             f"- **Decision rule:** a direction is claimed only where the {settings.multiplicity}-adjusted p < "
             f"{settings.alpha:g} (each claim's rows under one protocol are one family) and the "
             f"{settings.level:.0%} interval excludes 0; with fewer than {settings.min_units} units (or models) "
             "there is no verdict.",
             f"- **Power:** with {n} unit{'s' if n != 1 else ''} the smallest two-sided p a sign-flip test can give "
             f"is {smallest:.2g}"
             + (f", so no test here can reach {settings.alpha:g}." if smallest >= settings.alpha else ".")]
    if "template" in unit:
        lines.append("- **Caution:** the units are slabs of one template brain, not independent subjects: the "
                     "verdicts speak of this one brain and cannot generalise to patients.")
    lines += ["", "## Verdicts", "", md.row(["claim", "standard protocol", "study protocol", "flipped by"]),
              md.rule("llll")]
    for claim, text in enumerate(CLAIMS):
        flips = sorted({f for protocol in PROTOCOLS for f in judgements[(claim, protocol)][1]})
        lines.append(md.row([text, judgements[(claim, "standard")][0].verdict, judgements[(claim, "study")][0].verdict,
                             "; ".join(flips) or "–"]))
    lines += ["", "Standard protocol: the standard attack (x + eps·sign(g), loss(prediction, mask), the grey slice) "
              "scored with Dice over the classes present. Study protocol: the study's FGSM step, its swapped "
              f"loss(mask, prediction) call and per-channel input (attack variant `{STUDY_VARIANT}`), scored with "
              "its per-slice Dice over all classes (`workflow/configs/study_ablation.yaml` runs both). \"Flipped by\" "
              "names every other attack variant or Dice protocol that ran and turns a verdict around.", ""]
    for claim, text in enumerate(CLAIMS):
        lines += [f"## {claim + 1}. {text}", ""]
        for protocol in PROTOCOLS:
            judgement, _ = judgements[(claim, protocol)]
            lines += [f"### {protocol.capitalize()} protocol: {judgement.verdict}", ""]
            if judgement.rows:
                lines += RENDER[claim](judgement.rows, settings) + [""]
    return "\n".join(lines)


def _vulnerable_rows(rows: list[dict], settings: ReportSettings) -> list[str]:
    out = [md.row(["eps", "attack", "units", "drop [CI]", "relative drop", "p", "p adj.", "verdict"]),
           md.rule("rlrrrrrl")]
    out += [md.row([f"{r['eps']:g}", r["attack"], r["n_units"], md.interval(r["effect"], r["ci_low"], r["ci_high"]),
                    md.num(r["relative_drop"]), md.p_value(r["p"]), md.p_value(r["p_adjusted"]), r["verdict"]])
            for r in rows]
    return out + ["", "Drop: clean minus attacked score, averaged over models within each unit (absolute Dice "
                      "points); relative drop: the study's (clean − adv) / clean, mean over models, for reading only."]


def _size_rows(rows: list[dict], settings: ReportSettings) -> list[str]:
    out = [md.row(["attack", "loss", "models", "ρ [CI]", "p adj.", "partial r | clean [CI]", "detectable |ρ|",
                   "verdict"]), md.rule("llrrrrrl")]
    out += [md.row([r["attack"], r["attack_loss"], r["n_models"],
                    md.interval(r["spearman"], r["spearman_ci_low"], r["spearman_ci_high"]),
                    md.p_value(r["spearman_p_adjusted"]), md.interval(r["partial_r"], r["partial_ci_low"],
                                                                      r["partial_ci_high"]),
                    md.num(r["detectable_rho"], 2), r["verdict"]]) for r in rows]
    return out + ["", f"At eps {settings.correlation_eps:g}; one point per model; details in `tables/size.md`."]


def _bce_rows(rows: list[dict], settings: ReportSettings) -> list[str]:
    out = [md.row(["attack", "eps", "units", f"BCE − {settings.training_loss} [CI]", "p", "p adj.", "verdict"]),
           md.rule("lrrrrrl")]
    out += [md.row([r["attack"], f"{r['eps']:g}", r["n_units"], md.interval(r["effect"], r["ci_low"], r["ci_high"]),
                    md.p_value(r["p"]), md.p_value(r["p_adjusted"]), r["verdict"]]) for r in rows]
    return out + ["", "Attacked score under BCE minus under the training loss, averaged over models within each "
                      "unit: negative = BCE the stronger attack. Per-model rows: `tables/attack_losses.md`."]


RENDER = (_vulnerable_rows, _size_rows, _bce_rows)
