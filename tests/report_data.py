"""Attack results written as the attack job writes them, with per-slice scores chosen by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from advseg import records
from advseg.report.settings import ReportSettings

CLASSES = ("stomach", "bowel")
VARIANTS = {"standard": ("standard", "standard", "grey"), "study-study-channels": ("study", "study", "channels")}


def settings(**changes) -> ReportSettings:
    values = dict(metric="dice", correlation_eps=0.02, transfer_eps=0.02, alpha=0.05, multiplicity="holm", family="table", min_units=5, min_clean_score=0.3,
                  negligible_correlation=0.3, n_bootstrap=1000, seed=0, training_loss="dicefocal")
    return ReportSettings(**{**values, **changes})


def write_card(root: Path, model: str, params: int, seed: int, fold: int = 0) -> Path:
    arch, encoder = model.split("+")[0].split("-")
    path = root / "models" / model / f"fold_{fold}" / f"seed_{seed}" / "model_card.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"arch": arch, "encoder": encoder, "model": model, "params": params, "fold": fold,
                                "seed": seed, "class_names": list(CLASSES)}))
    return path


def scores(dice: np.ndarray, study: np.ndarray | None = None, has_organ: np.ndarray | None = None) -> dict:
    """Per-slice scores as ``metrics.slice_scores`` gives them, derived from (N, C) Dice."""
    dice = np.asarray(dice, dtype=float)
    study = np.where(np.isnan(dice), 1.0, dice).mean(1) if study is None else np.asarray(study, dtype=float)
    has_organ = ~np.isnan(dice).all(1) if has_organ is None else np.asarray(has_organ)
    return {"dice": dice, "iou": dice * 0.9, "hd95": (1 - dice) * 10, "nsd": dice, "dice_study": study,
            "has_organ": has_organ}


def write_attack(root: Path, model: str, seed: int, method: str, loss: str, eps: float, clean: dict, adv: dict,
                 units, fold: int = 0, variant: str = "standard", history=None, unit: str = "case",
                 defense: str = "none", twin: str | None = None) -> Path:
    step, order, input_ = VARIANTS[variant]
    arch, encoder = model.split("+")[0].split("-")
    path = root / "attacks" / model / f"fold_{fold}" / f"seed_{seed}" / method / variant / loss / f"eps_{eps}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"arch": arch, "encoder": encoder, "model": model, "fold": fold, "seed": seed,
                                "attack": method, "attack_loss": loss, "step": step, "loss_argument_order": order,
                                "input": input_, "variant": variant, "eps": eps, "linf": eps, "l2": eps * 10,
                                "defense": defense, "twin": twin or model,
                                "loss_history": history if history is not None else []}))
    records.write_slice_scores(records.slices_path(path), clean, adv, list(CLASSES), np.asarray(units), unit)
    return path


def random_study(root: Path, models: dict[str, int], n_units: int, slices_per_unit: int = 3, seeds=(1,), folds=(0,),
                 epsilons=(0.01, 0.05), methods=("fgsm",), variants=("standard",), bce_effect: float = 0.05,
                 seed: int = 0, repeat: int = 1) -> tuple[list[Path], list[Path]]:
    """Every model x seed x fold x method x loss (bce, dicefocal) x variant x eps, with noisy Dice.

    Attacks lower each slice's Dice by a factor growing with eps; dicefocal lowers it by
    ``bce_effect`` more (the stronger loss when bce_effect > 0), except under the study variant,
    where it lowers it by that much less (BCE the stronger). ``repeat`` copies every slice that many times within its unit:
    the same data, as far as units go.
    """
    rng = np.random.default_rng(seed)
    attacks, cards = [], []
    for m, (model, params) in enumerate(models.items()):
        for fold in folds:
            units = np.repeat(np.arange(n_units) + 100 * fold, slices_per_unit)
            base = np.clip(rng.normal(0.75, 0.1, (len(units), len(CLASSES))), 0.05, 1)
            for s in seeds:
                cards.append(write_card(root, model, params, s, fold))
                clean_dice = np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1)
                for method in methods:
                    for variant in variants:
                        for loss in ("bce", "dicefocal"):
                            for eps in epsilons:
                                sign = -1 if variant != "standard" else 1
                                k = 4 * eps + (sign * bce_effect if loss == "dicefocal" else 0) + 0.01 * m
                                k = k + rng.normal(0, 0.01, base.shape)
                                adv_dice = np.clip(clean_dice * (1 - np.clip(k, 0, 1)), 0, 1)
                                attacks.append(write_attack(
                                    root, model, s, method, loss, eps, scores(np.repeat(clean_dice, repeat, 0)),
                                    scores(np.repeat(adv_dice, repeat, 0)), np.repeat(units, repeat), fold, variant,
                                    history=[1.0, 2.0] if method == "pgd" else []))
    return attacks, cards
