"""Which attack loss hurts a model more: paired per-slice comparisons, and the ablation table.

Two attack losses are compared on the same slices of the same model: per (replicate, slice)
the attacked slice scores under loss A and loss B (see ``advseg.summary`` for a slice's
score) are paired, every replicate's pairs are pooled, and ``statistics.paired_comparison``
gives the mean difference A - B with its paired bootstrap interval and Wilcoxon's p. A loss is
called stronger only where that interval excludes 0 (lower attacked Dice = stronger attack);
otherwise the verdict is "no significant difference".
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from advseg import statistics
from advseg.summary import AttackRun, format_params, metric_columns, protocol_statistic, slice_scores

CELL_COLUMNS = ("model", "params", "attack", "variant", "step", "loss_argument_order", "input", "eps")
NO_DIFFERENCE = "no significant difference"


def loss_comparisons(runs: list[AttackRun], metric: str, n_bootstrap: int = statistics.DEFAULT_RESAMPLES,
                     seed: int = 0, level: float = statistics.DEFAULT_LEVEL) -> pd.DataFrame:
    """One row per model x attack x variant x eps x pair of attack losses (worst-case runs skipped)."""
    metric_columns(metric)
    cells: dict[tuple, dict[str, dict[tuple, AttackRun]]] = {}
    for run in runs:
        if run.info["attack"] == "worst":
            continue
        cell = cells.setdefault(tuple(run.info[c] for c in CELL_COLUMNS), {})
        cell.setdefault(run.info["attack_loss"], {})[run.replicate] = run
    rows = []
    for key, by_loss in cells.items():
        for loss_a, loss_b in combinations(sorted(by_loss), 2):
            replicates = sorted(set(by_loss[loss_a]) & set(by_loss[loss_b]))
            if not replicates:
                continue
            pairs_a = [by_loss[loss_a][r] for r in replicates]
            pairs_b = [by_loss[loss_b][r] for r in replicates]
            result = statistics.paired_comparison(
                np.concatenate([slice_scores(r.slices, "adv", metric) for r in pairs_a]),
                np.concatenate([slice_scores(r.slices, "adv", metric) for r in pairs_b]),
                n_bootstrap, seed, level)
            stronger = (loss_a if result["ci_high"] < 0 else loss_b) if result["significant"] else ""
            rows.append({**dict(zip(CELL_COLUMNS, key)), "metric": metric, "loss_a": loss_a, "loss_b": loss_b,
                         "n_replicates": len(replicates), "n_pairs": result["n"],
                         "clean": _replicate_mean(pairs_a, "clean", metric),
                         "adv_a": _replicate_mean(pairs_a, "adv", metric),
                         "adv_b": _replicate_mean(pairs_b, "adv", metric),
                         "mean_difference": result["mean_difference"], "ci_low": result["ci_low"],
                         "ci_high": result["ci_high"], "wilcoxon_p": result["wilcoxon_p"],
                         "significant": result["significant"], "stronger": stronger,
                         "verdict": f"{stronger} stronger" if stronger else NO_DIFFERENCE})
    columns = list(CELL_COLUMNS) + ["metric", "loss_a", "loss_b", "n_replicates", "n_pairs", "clean", "adv_a",
                                    "adv_b", "mean_difference", "ci_low", "ci_high", "wilcoxon_p", "significant",
                                    "stronger", "verdict"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["params", "model", "attack", "variant", "eps", "loss_a", "loss_b"],
                             kind="stable").reset_index(drop=True)


def attack_losses_markdown(comparisons: pd.DataFrame, metric: str, level: float = statistics.DEFAULT_LEVEL) -> str:
    """``attack_losses.md``: per model, attack, variant and eps, each pair of losses with its verdict."""
    percent = f"{level * 100:g}%"
    lines = [
        "# Attack losses compared",
        "",
        f"Scores are `{metric}`; each row is one model attacked at one eps with two attack losses. "
        "`adv (A)` and `adv (B)` are the attacked scores (mean over replicates); `A − B` is the mean "
        f"per-slice difference of attacked scores over every (replicate, slice) pair, with its paired "
        f"bootstrap {percent} interval, and `p` is the Wilcoxon signed-rank test on the same pairs. "
        "Lower attacked score = stronger attack. A loss is called stronger only where the interval "
        f"excludes 0; otherwise the verdict is \"{NO_DIFFERENCE}\".",
        "",
    ]
    if comparisons.empty:
        return "\n".join(lines + ["No model was attacked with two attack losses.", ""])
    header = ["model", "params", "attack", "variant", "eps", "replicates", "pairs", "A", "B", "clean",
              "adv (A)", "adv (B)", f"A − B [{percent} CI]", "p", "verdict"]
    lines += [_row(header), "|" + "|".join(["---"] * 5 + ["---:"] * 2 + ["---"] * 2 + ["---:"] * 5 + ["---"]) + "|"]
    for row in comparisons.itertuples():
        lines.append(_row([row.model, format_params(row.params), row.attack, row.variant, f"{row.eps:g}",
                           str(row.n_replicates), str(row.n_pairs), row.loss_a, row.loss_b, _num(row.clean),
                           _num(row.adv_a), _num(row.adv_b), _interval(row), _p(row.wilcoxon_p),
                           _bold(row.verdict, row.significant)]))
    lines += ["", *verdict_counts(comparisons, by=None)]
    return "\n".join(lines) + "\n"


def ablation_markdown(comparisons: pd.DataFrame, metric: str, level: float = statistics.DEFAULT_LEVEL) -> str:
    """``ablation.md``: per model, attack and eps, each attack variant's scores and verdicts side by side."""
    percent = f"{level * 100:g}%"
    lines = ["# Which option of the study's attack decides which loss is stronger", ""]
    variants = sorted(comparisons["variant"].unique()) if not comparisons.empty else []
    if len(variants) < 2:
        ran = variants[0] if variants else "none with two attack losses"
        return "\n".join(lines + [
            f"Only one attack variant ran ({ran}). Give `attack.step`, `attack.loss_argument_order` or "
            "`attack.input` as lists (e.g. `workflow/configs/study_ablation.yaml`) to compare them.", ""])
    lines += [
        f"Scores are `{metric}`. Each cell of the ablation (step × loss argument order × input) attacks "
        "the same model and slices; `A − B` is the mean paired per-slice difference of attacked scores "
        f"with its bootstrap {percent} interval (see `attack_losses.md`). Lower = stronger attack.",
        "",
        _row(["model", "attack", "eps", "step", "loss order", "input", "A", "B", "adv (A)", "adv (B)",
              f"A − B [{percent} CI]", "p", "verdict"]),
        "|" + "|".join(["---"] * 3 + ["---"] * 5 + ["---:"] * 4 + ["---"]) + "|",
    ]
    ordered = comparisons.sort_values(["params", "model", "attack", "eps", "loss_a", "loss_b", "variant"],
                                      kind="stable")
    for row in ordered.itertuples():
        lines.append(_row([row.model, row.attack, f"{row.eps:g}", row.step, row.loss_argument_order, row.input,
                           row.loss_a, row.loss_b, _num(row.adv_a), _num(row.adv_b), _interval(row),
                           _p(row.wilcoxon_p), _bold(row.verdict, row.significant)]))
    lines += ["", "## Per variant", "", *verdict_counts(comparisons, by="variant")]
    return "\n".join(lines) + "\n"


def verdict_counts(comparisons: pd.DataFrame, by: str | None) -> list[str]:
    """One line per (variant and) loss pair: how often each loss was significantly stronger."""
    lines = []
    keys = ([by] if by else []) + ["loss_a", "loss_b"]
    for key, group in comparisons.groupby(keys, sort=True):
        *prefix, loss_a, loss_b = key
        wins_a = int((group["stronger"] == loss_a).sum())
        wins_b = int((group["stronger"] == loss_b).sum())
        label = f"`{prefix[0]}`: " if prefix else ""
        lines.append(f"- {label}{loss_a} significantly stronger than {loss_b} in {wins_a} of {len(group)} rows; "
                     f"{loss_b} significantly stronger in {wins_b}; {NO_DIFFERENCE} in "
                     f"{len(group) - wins_a - wins_b}.")
    return lines


def _replicate_mean(runs: list[AttackRun], kind: str, metric: str) -> float:
    values = np.array([protocol_statistic(r.slices, kind, metric)[0] for r in runs])
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _num(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:.3f}"


def _p(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:.2g}"


def _interval(row) -> str:
    if pd.isna(row.mean_difference):
        return "–"
    return f"{row.mean_difference:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"


def _bold(text: str, significant: bool) -> str:
    return f"**{text}**" if significant else text
