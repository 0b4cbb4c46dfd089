"""The attack results the report reads, checked: one :class:`AttackRun` per attack job and eps.

An attack job writes, per eps, ``eps_<eps>.json`` (its identity and headline scores) and the
per-slice scores beside it (:mod:`advseg.records`); a model card gives the model's size. Any
unreadable file, missing key, unmatched model, duplicated run, or per-slice file whose units
disagree with another of the same fold is an error naming the file, before any output.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from advseg import metrics, records
from advseg.jobs import read_json

log = logging.getLogger(__name__)

ATTACK_KEYS = ("arch", "encoder", "model", "fold", "seed", "attack", "attack_loss", "eps", "linf", "l2")
CARD_KEYS = ("model", "arch", "encoder", "params", "fold", "seed")
VARIANT_DEFAULTS = {"step": "standard", "loss_argument_order": "standard", "input": "grey"}
WORST = "worst"
WORST_LOSS = "all"
TRANSFER = "transfer"   # another model's perturbation replayed: a defended model's undefended twin's
ATTACK_ORDER = {"fgsm": 0, "pgd": 1, "segpgd": 2, "cospgd": 3, "apgd": 4, TRANSFER: 8, WORST: 9}
ADAPTIVE = ("+eot", "+bpda")    # suffixes of attacks adapted to a defense: expectation over its draws, straight-through
UNDEFENDED = "none"


@dataclass
class AttackRun:
    """One attack job at one eps: its identity (``info``) and per-slice scores (``slices``)."""

    info: dict
    slices: dict
    source: str
    loss_history: list[float] = field(default_factory=list)

    @property
    def replicate(self) -> tuple[int, int]:
        return int(self.info["seed"]), int(self.info["fold"])

    @cached_property
    def clean_units(self) -> metrics.UnitScores:
        """The clean scores aggregated per unit."""
        return metrics.unit_scores(records.per_slice(self.slices, "clean"), self.slices["units"])

    @cached_property
    def adv_units(self) -> metrics.UnitScores:
        """The attacked scores aggregated per unit."""
        return metrics.unit_scores(records.per_slice(self.slices, "adv"), self.slices["units"])


def load_runs(attack_jsons: list[Path], model_cards: list[Path]) -> list[AttackRun]:
    """Every attack JSON with its per-slice scores and its model's parameter count (see module doc)."""
    cards: dict[tuple, tuple[Path, dict]] = {}
    for path in model_cards:
        card = read_json(path, CARD_KEYS)
        key = (card["model"], int(card["seed"]), int(card["fold"]))
        if key in cards:
            raise ValueError(f"{path}: second model card for {_model_key(key)} (first: {cards[key][0]})")
        cards[key] = (path, card)

    runs, seen, fold_units, unit_kind = [], {}, {}, None
    for path in attack_jsons:
        record = read_json(path, ATTACK_KEYS)
        key = (record["model"], int(record["seed"]), int(record["fold"]))
        if key not in cards:
            raise ValueError(f"{path}: no model card for {_model_key(key)}")
        info = {name: record[name] for name in ATTACK_KEYS}
        info.update({name: str(record.get(name, default)) for name, default in VARIANT_DEFAULTS.items()})
        info["variant"] = str(record.get("variant", "standard"))
        info["defense"] = str(record.get("defense", UNDEFENDED))
        info["twin"] = str(record.get("twin", record["model"]))
        info.update(eps=float(info["eps"]), seed=int(info["seed"]), fold=int(info["fold"]),
                    params=int(cards[key][1]["params"]), linf=float(info["linf"]), l2=float(info["l2"]))
        identity = tuple(info[c] for c in ("model", "seed", "fold", "attack", "attack_loss", "variant", "eps"))
        if identity in seen:
            raise ValueError(f"{path}: duplicates {seen[identity]} (model, seed, fold, attack, attack_loss, "
                             f"variant, eps = {identity})")
        seen[identity] = path
        scores_path = records.slices_path(path)
        slices = records.read_slice_scores(scores_path)
        if unit_kind is None:
            unit_kind = (slices["unit"], scores_path)
        elif slices["unit"] != unit_kind[0]:
            raise ValueError(f"{scores_path}: unit {slices['unit']!r}, but {unit_kind[1]} has {unit_kind[0]!r}: "
                             "one report covers one dataset")
        first = fold_units.setdefault(info["fold"], (slices["units"], scores_path))
        if not np.array_equal(first[0], slices["units"]):
            raise ValueError(f"{scores_path}: {len(slices['units'])} slices and their units differ from {first[1]} "
                             f"of the same fold {info['fold']}")
        run = AttackRun(info, slices, str(path), [float(v) for v in record.get("loss_history") or []])
        _warn_if_summary_disagrees(run, record)
        runs.append(run)
    if not runs:
        raise ValueError("no attack results given")
    return runs


def unit_kind(runs: list[AttackRun]) -> str:
    """What the runs' units are (case, subject, volume, slab)."""
    return runs[0].slices["unit"]


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


def worst_case_runs(runs: list[AttackRun]) -> list[AttackRun]:
    """Per model x replicate x variant x eps, the per-slice worst over every method x attack loss run.

    The attacker picks, for each slice, the run that hurts it most: under ``dice_study`` the
    lowest study Dice; under ``dice`` the lowest mean Dice over the classes present, whose
    per-class Dice, IoU, HD95 and NSD of that slice are then used. Ties go to the first run in
    (method, loss) order. Groups with a single run give no worst-case run.
    """
    groups: dict[tuple, list[AttackRun]] = {}
    for run in runs:
        if run.info["attack"] != WORST:
            key = tuple(run.info[c] for c in ("model", "seed", "fold", "variant", "eps"))
            groups.setdefault(key, []).append(run)
    return [_worst_of(sorted(members, key=attack_rank)) for members in groups.values() if len(members) > 1]


def attack_rank(run: AttackRun) -> tuple:
    return order_of(run.info["attack"]), run.info["attack"], run.info["attack_loss"]


def order_of(attack: str) -> float:
    """Where an attack sorts: by method, an adapted one (pgd+eot) just after its plain method."""
    base, adapted = base_method(attack), attack != base_method(attack)
    return ATTACK_ORDER.get(base, 5) + (0.5 if adapted else 0.0)


def base_method(attack: str) -> str:
    """The method of an attack label: 'pgd+eot' -> 'pgd'."""
    for suffix in ADAPTIVE:
        if attack.endswith(suffix):
            return attack.removesuffix(suffix)
    return attack


def _worst_of(members: list[AttackRun]) -> AttackRun:
    first = members[0]
    n = len(first.slices["has_organ"])
    scores = np.stack([metrics.nanmean(r.slices["adv_dice"], axis=1) for r in members])
    chosen = np.argmin(np.where(np.isnan(scores), np.inf, scores), axis=0)
    slices = {key: value for key, value in first.slices.items() if not key.startswith("adv_")}
    for metric in metrics.PER_CLASS_METRICS:
        stacked = np.stack([r.slices[f"adv_{metric}"] for r in members])
        slices[f"adv_{metric}"] = stacked[chosen, np.arange(n)]
    study = np.stack([r.slices["adv_dice_study"] for r in members])
    worst_study = np.min(np.where(np.isnan(study), np.inf, study), axis=0)
    slices["adv_dice_study"] = np.where(np.isinf(worst_study), np.nan, worst_study)
    info = dict(first.info, attack=WORST, attack_loss=WORST_LOSS,
                linf=max(r.info["linf"] for r in members), l2=max(r.info["l2"] for r in members))
    info["worst_of"] = ";".join(f"{r.info['attack']}/{r.info['attack_loss']}" for r in members)
    return AttackRun(info, slices, f"worst case of {len(members)} runs ({first.source}, ...)")


def _model_key(key: tuple) -> str:
    return f"{key[0]} seed {key[1]} fold {key[2]}"


def _warn_if_summary_disagrees(run: AttackRun, record: dict) -> None:
    """The JSON's headline scores should be the unit means of its per-slice file."""
    for metric in metrics.PROTOCOLS:
        for kind in ("clean", "adv"):
            column = f"{kind}_{metric}"
            if record.get(column) is None:
                continue
            mine = metrics.nanmean(getattr(run, f"{kind}_units").score(metric))
            if not (math.isnan(mine) and math.isnan(float(record[column]))) and \
                    not math.isclose(mine, float(record[column]), abs_tol=1e-6):
                log.warning("%s: %s = %s, but its per-slice file gives %s", run.source, column, record[column], mine)
