"""Does model size predict attack success? One point per model, tested as the question deserves.

Per attack x loss x variant at one eps, each model is one point: x = log10 of its trainable
parameters, y = its attack success (the study's ``diff``, mean over replicates), z = its clean
score. Reported side by side:

- Spearman rho (the primary statistic) and Pearson r, each with a bootstrap interval over
  models and a permutation p that is exact for small n (with 4 models rho = 1 has p = 1/12);
- the partial correlation of log size and success with the clean score held fixed, and the
  regression of success on log size and clean score, because a better-trained model has more
  Dice to lose (the two are confounded across architectures);
- the smallest |rho| this n detects with 80% power, so that "no correlation found" is read
  against what could have been found.

Models whose clean score is below ``report.min_clean_score`` are listed and left out: an
untrained model has nothing to lose. Spearman p-values are adjusted over every row of the
table. A direction is claimed only where the adjusted p < alpha and the interval excludes 0;
"no correlation" only where the interval lies within +-``report.negligible_correlation``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from advseg import correlations
from advseg.report.comparisons import adjusted
from advseg.report.settings import ReportSettings
from advseg.report.units import metric_columns

POWER = 0.8
MORE = "larger models more susceptible"
LESS = "larger models less susceptible"
NONE = "no correlation"


def at_eps(table: pd.DataFrame, eps: float) -> pd.DataFrame:
    return table[np.isclose(table["eps"].astype(float), float(eps), rtol=1e-9, atol=1e-12)]


def model_points(replicates: pd.DataFrame, metric: str, eps: float, floor: float) -> pd.DataFrame:
    """One row per model and attack x loss x variant at ``eps``: log10 params, success, clean, kept."""
    clean, _, diff = metric_columns(metric)
    rows = at_eps(replicates, eps)
    if rows.empty:
        available = ", ".join(f"{e:g}" for e in sorted(replicates["eps"].unique()))
        raise ValueError(f"report.correlation_eps = {eps:g} is not an attacked eps (have: {available})")
    return pd.DataFrame({"attack": rows["attack"], "attack_loss": rows["attack_loss"], "variant": rows["variant"],
                         "model": rows["model"], "params": rows["params"],
                         "log10_params": np.log10(rows["params"].astype(float)),
                         "success": rows[f"{diff}_mean"], "clean": rows[f"{clean}_mean"],
                         "kept": rows[f"{clean}_mean"] >= floor}).reset_index(drop=True)


def size_table(replicates: pd.DataFrame, settings: ReportSettings) -> pd.DataFrame:
    """Per attack x loss x variant: every statistic of the size question at ``report.correlation_eps``."""
    eps = settings.correlation_eps
    points = model_points(replicates, settings.metric, eps, settings.min_clean_score)
    rows = []
    for (attack, loss, variant), group in points.groupby(["attack", "attack_loss", "variant"], sort=False):
        kept = group[group["kept"]]
        x, y, z = (kept[c].to_numpy(float) for c in ("log10_params", "success", "clean"))
        row = {"attack": attack, "attack_loss": loss, "variant": variant, "eps": float(eps),
               "metric": settings.metric, "n_models": len(kept),
               "excluded": ";".join(group.loc[~group["kept"], "model"]),
               "log10_params_min": float(x.min()) if x.size else math.nan,
               "log10_params_max": float(x.max()) if x.size else math.nan}
        for kind in ("spearman", "pearson"):
            result = correlations.correlation(x, y, kind, settings.level, settings.n_bootstrap, settings.seed)
            row.update({kind: result.estimate, f"{kind}_ci_low": result.ci_low, f"{kind}_ci_high": result.ci_high,
                        f"{kind}_p": result.p, f"{kind}_exact": result.exact})
        partial = correlations.partial_correlation(x, y, z, settings.level)
        row.update(partial_r=partial.estimate, partial_ci_low=partial.ci_low, partial_ci_high=partial.ci_high,
                   partial_p=partial.p)
        for coefficient in correlations.regression(y, {"log10_params": x, "clean": z}, settings.level)[1:]:
            name = f"slope_{coefficient.name}"
            row.update({name: coefficient.estimate, f"{name}_ci_low": coefficient.ci_low,
                        f"{name}_ci_high": coefficient.ci_high, f"{name}_p": coefficient.p})
        row["detectable_rho"] = correlations.detectable_correlation(len(kept), settings.alpha, POWER)
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["spearman_p_adjusted"] = adjusted(table, [], settings.multiplicity, "spearman_p")
    table["verdict"] = [size_verdict(r, settings) for r in table.itertuples()]
    return table


def size_verdict(row, settings: ReportSettings) -> str:
    """What the Spearman row lets one say, and no more."""
    n = int(row.n_models)
    if settings.too_few(n):
        return f"too few models (n = {n})"
    low, high = row.spearman_ci_low, row.spearman_ci_high
    if row.spearman_p_adjusted < settings.alpha and (low > 0 or high < 0):
        return MORE if row.spearman > 0 else LESS
    if -settings.negligible_correlation < low and high < settings.negligible_correlation:
        return f"{NONE} (|ρ| < {settings.negligible_correlation:g})"
    return (f"inconclusive (only |ρ| ≥ {row.detectable_rho:.2f} is detected with {POWER:.0%} power at n = {n})"
            if not math.isnan(row.detectable_rho) else "inconclusive")


def size_markdown(table: pd.DataFrame, settings: ReportSettings) -> str:
    """``size.md``: the size question's rows, for a reader."""
    from advseg.report import markdown as md

    lines = ["# Does model size predict attack success?", "",
             f"One point per model: log10(trainable parameters) against attack success `(clean − adv) / clean` of "
             f"`{settings.metric}` (mean over replicates). ρ: Spearman, with a {settings.level:.0%} bootstrap "
             "interval over models and a permutation p (exact up to 8 models), adjusted "
             f"({settings.multiplicity}) over the rows below. Partial r: Pearson correlation of log size and success "
             "with the clean score held fixed (t-test). Models with a clean score below "
             f"{settings.min_clean_score:g} are left out.", ""]
    if table.empty:
        return "\n".join(lines + ["No model was attacked at this eps.", ""])
    lines += [md.row(["attack", "loss", "variant", "eps", "models", "ρ [CI]", "p", "p adj.", "partial r [CI]",
                      "partial p", "detectable |ρ|", "verdict", "left out"]), md.rule("llllrrrrrrrll")]
    for r in table.itertuples():
        lines.append(md.row([r.attack, r.attack_loss, r.variant, f"{r.eps:g}", r.n_models,
                             md.interval(r.spearman, r.spearman_ci_low, r.spearman_ci_high), md.p_value(r.spearman_p),
                             md.p_value(r.spearman_p_adjusted), md.interval(r.partial_r, r.partial_ci_low,
                                                                            r.partial_ci_high),
                             md.p_value(r.partial_p), md.num(r.detectable_rho, 2), r.verdict, r.excluded or "–"]))
    return "\n".join(lines) + "\n"
