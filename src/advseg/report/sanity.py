"""Checks that the attacks did their job, as robustness reviewers ask (Carlini et al. 2019).

Each check gives rows with a ``status`` of ``pass`` or ``flag``; a flag is something to look
at, not an error. Scores are the replicate means of ``report.metric`` from the replicate table.
- iterative ≥ single-step: per model, loss, variant and eps, each iterative method's drop
  (clean - attacked) is at least FGSM's;
- monotone in eps: attacked scores never rise as eps grows (clean counts as eps 0);
- largest eps near 0: at the largest eps the attacked score is at most ``NEAR_ZERO``,
  otherwise "possible gradient masking (or the largest eps is too small)";
- white-box ≥ transfer: per target, no other model's perturbation hurts it more than its own;
- loss increases: an iterative attack's mean loss at its last step exceeds its first;
- EOT ≥ plain gradient: against a random defense, the attack that averages the defense's draws
  (``pgd+eot``) lowers the score at least as much as the same attack on one draw;
- no gradient masking: on a defended model, no adapted attack (``+bpda``) and no transfer from
  the undefended twin beats the plain gradient attacks by more than ``MASKING_MARGIN``;
  otherwise the defense masks gradients and plain attacks over-credit it.
"""

from __future__ import annotations

import pandas as pd

from advseg.report.runs import TRANSFER, WORST, AttackRun, base_method
from advseg.report.units import metric_columns

NEAR_ZERO = 0.1
TOLERANCE = 1e-9
MASKING_MARGIN = 0.01  # Dice points an adapted attack may beat the plain ones by before masking is flagged
SINGLE_STEP = "fgsm"
ITERATIVE = ("pgd", "segpgd", "cospgd", "apgd")
COLUMNS = ("check", "status", "model", "attack", "attack_loss", "variant", "eps", "value", "reference", "note")
CHECKS = {
    "iterative ≥ single-step": "each iterative method lowers the score at least as much as FGSM "
                               "(value: its drop clean − adv; reference: FGSM's drop)",
    "monotone in eps": "the attacked score never rises with eps (value: the largest rise between "
                       "consecutive eps; reference: 0)",
    "largest eps near 0": f"the largest eps drives the score to at most {NEAR_ZERO} (value: attacked "
                          "score; reference: the threshold)",
    "white-box ≥ transfer": "no other model's perturbation hurts a target more than its own "
                            "(value: transferred attacked score; reference: white-box attacked score)",
    "loss increases": "an iterative attack's mean loss rises from its first to its last step "
                      "(value: last step; reference: first step)",
    "EOT ≥ plain gradient": "against a random defense, averaging the defense's draws lowers the score at least "
                            "as much as one draw (value: the EOT attack's drop; reference: the plain attack's drop)",
    "no gradient masking": f"on a defended model, no straight-through (BPDA) attack and no transfer from the "
                           f"undefended twin scores more than {MASKING_MARGIN} below the strongest plain gradient "
                           "attack (value: the adapted attack's score; reference: the plain attacks' lowest)",
}


def sanity_checks(replicates: pd.DataFrame, runs: list[AttackRun], transfer: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Every check's rows, in the order of ``CHECKS``."""
    clean, adv, _ = metric_columns(metric)
    scores = replicates.assign(clean=replicates[f"{clean}_mean"], adv=replicates[f"{adv}_mean"])
    parts = [_iterative(scores), _monotone(scores), _near_zero(scores), _transfer(transfer, adv), _loss_rises(runs),
             _eot(scores), _masking(scores)]
    return pd.DataFrame([row for part in parts for row in part], columns=list(COLUMNS))


def sanity_markdown(checks: pd.DataFrame, metric: str) -> str:
    """``sanity.md``: per check what it tests, how many rows pass, and every row, flags first."""
    lines = ["# Sanity checks of the attacks", "",
             f"Scores are `{metric}`, mean over replicates. A flag marks a row to look at.", ""]
    for check, description in CHECKS.items():
        rows = checks[checks["check"] == check]
        flagged = int((rows["status"] == "flag").sum())
        lines += [f"## {check}", "", description[0].upper() + description[1:] + ".", ""]
        if rows.empty:
            lines += ["Not applicable: no results of the kind this check needs.", ""]
            continue
        lines += [f"{len(rows) - flagged} pass, {flagged} flagged.", "",
                  "| status | model | attack | loss | variant | eps | value | reference | note |",
                  "|---|---|---|---|---|---:|---:|---:|---|"]
        for row in rows.sort_values("status", key=lambda s: s != "flag", kind="stable").itertuples():
            eps = "–" if pd.isna(row.eps) else f"{row.eps:g}"
            lines.append(f"| {'**flag**' if row.status == 'flag' else 'pass'} | {row.model} | {row.attack} | "
                         f"{row.attack_loss} | {row.variant} | {eps} | {row.value:.3f} | {row.reference:.3f} | "
                         f"{row.note} |")
        lines.append("")
    return "\n".join(lines)


def _row(check: str, flagged: bool, model: str, attack: str, loss: str, variant: str, eps: float, value: float,
         reference: float, note: str = "") -> dict:
    return {"check": check, "status": "flag" if flagged else "pass", "model": model, "attack": attack,
            "attack_loss": loss, "variant": variant, "eps": eps, "value": float(value),
            "reference": float(reference), "note": note}


def _iterative(scores: pd.DataFrame) -> list[dict]:
    return _as_strong_as("iterative ≥ single-step", scores, scores[scores["attack"].isin(ITERATIVE)],
                         lambda row: SINGLE_STEP, f"weaker than {SINGLE_STEP}")


def _as_strong_as(check: str, scores: pd.DataFrame, candidates: pd.DataFrame, reference_attack,
                  note: str) -> list[dict]:
    """Each candidate attack's drop (clean - adv) against that of ``reference_attack(row)`` on the
    same model, loss, variant and eps; flagged where it is smaller."""
    references = scores.set_index(["model", "attack", "attack_loss", "variant", "eps"])
    rows = []
    for row in candidates.itertuples():
        key = (row.model, reference_attack(row), row.attack_loss, row.variant, row.eps)
        if key not in references.index:
            continue
        reference = references.loc[key]
        drop, reference_drop = row.clean - row.adv, reference["clean"] - reference["adv"]
        flagged = drop < reference_drop - TOLERANCE
        rows.append(_row(check, flagged, row.model, row.attack, row.attack_loss, row.variant, row.eps, drop,
                         reference_drop, note if flagged else ""))
    return rows


def _monotone(scores: pd.DataFrame) -> list[dict]:
    rows = []
    for (model, attack, loss, variant), group in scores.groupby(["model", "attack", "attack_loss", "variant"],
                                                                sort=False):
        group = group.sort_values("eps")
        sequence = [float(group["clean"].iloc[0])] + group["adv"].astype(float).tolist()
        steps = [0.0] + group["eps"].astype(float).tolist()
        rises = [(b - a, steps[i], steps[i + 1]) for i, (a, b) in enumerate(zip(sequence, sequence[1:]))]
        largest, start, end = max(rises, key=lambda r: r[0])
        flagged = largest > TOLERANCE
        rows.append(_row("monotone in eps", flagged, model, attack, loss, variant, float("nan"), max(largest, 0.0),
                         0.0, f"rises {largest:.3f} from eps {start:g} to {end:g}" if flagged else ""))
    return rows


def _near_zero(scores: pd.DataFrame) -> list[dict]:
    rows = []
    for (model, attack, loss, variant), group in scores.groupby(["model", "attack", "attack_loss", "variant"],
                                                                sort=False):
        last = group.loc[group["eps"].astype(float).idxmax()]
        flagged = not last["adv"] <= NEAR_ZERO
        rows.append(_row("largest eps near 0", flagged, model, attack, loss, variant, float(last["eps"]), last["adv"],
                         NEAR_ZERO, "possible gradient masking (or the largest eps is too small)" if flagged else ""))
    return rows


def _transfer(transfer: pd.DataFrame, adv: str) -> list[dict]:
    if transfer.empty:
        return []
    keys = ["attack", "attack_loss", "variant", "eps"]
    means = transfer.groupby(["source_model", "target_model", "white_box"] + keys, as_index=False)[adv].mean()
    white = means[means["white_box"]].set_index(["target_model"] + keys)[adv]
    rows = []
    for row in means[~means["white_box"]].itertuples():
        key = (row.target_model, row.attack, row.attack_loss, row.variant, row.eps)
        if key not in white.index:
            continue
        transferred, own = getattr(row, adv), float(white.loc[key])
        flagged = transferred < own - TOLERANCE
        rows.append(_row("white-box ≥ transfer", flagged, row.target_model, row.attack, row.attack_loss, row.variant,
                         row.eps, transferred, own,
                         f"from {row.source_model}" + (": transfer beats white-box" if flagged else "")))
    return rows


def _loss_rises(runs: list[AttackRun]) -> list[dict]:
    rows = []
    for run in runs:
        history = run.loss_history
        if len(history) < 2:
            continue
        info = run.info
        flagged = not history[-1] > history[0]
        rows.append(_row("loss increases", flagged, info["model"], info["attack"], info["attack_loss"],
                         info["variant"], info["eps"], history[-1], history[0],
                         f"seed {info['seed']} fold {info['fold']}" + (": loss did not rise" if flagged else "")))
    return rows


def _eot(scores: pd.DataFrame) -> list[dict]:
    return _as_strong_as("EOT ≥ plain gradient", scores, scores[scores["attack"].str.endswith("+eot")],
                         lambda row: base_method(row.attack), "weaker than one draw: too few draws?")


def _masking(scores: pd.DataFrame) -> list[dict]:
    defended = scores[scores["defense"] != "none"] if "defense" in scores else scores.iloc[:0]
    adapted = defended["attack"].str.endswith("+bpda") | (defended["attack"] == TRANSFER)
    plain = defended[~adapted & ~defended["attack"].str.endswith("+eot") & (defended["attack"] != WORST)]
    lowest = plain.groupby(["model", "attack_loss", "variant", "eps"])["adv"].min()
    rows = []
    for row in defended[adapted].itertuples():
        key = (row.model, row.attack_loss, row.variant, row.eps)
        if key not in lowest.index:
            continue
        flagged = row.adv < lowest[key] - MASKING_MARGIN
        rows.append(_row("no gradient masking", flagged, row.model, row.attack, row.attack_loss, row.variant,
                         row.eps, row.adv, lowest[key],
                         f"{row.defense} masks gradients: plain attacks over-credit it" if flagged else ""))
    return rows
