"""advseg certify: what randomized smoothing guarantees on the held-out slices, no attack needed.

Per slice, the certified Dice at each of ``defense.smoothing.radii`` (a decision holds against
every L2 perturbation below the radius, or it abstains and counts as wrong) and the share of
decisions that abstain at the smoothing's tau; written with each slice's unit for the report.
"""

from __future__ import annotations

import logging
from pathlib import Path

from advseg.commands import add_scoring_arguments

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_scoring_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="certificate.npz")


def run(args) -> None:
    from advseg import records
    from advseg.checkpoints import load_model
    from advseg.datasets import open_fold
    from advseg.defenses.certification import certify
    from advseg.defenses.defended import card_defense
    from advseg.defenses.smoothing import SmoothingSettings
    from advseg.devices import claim_device, set_threads
    from advseg.jobs import read_json
    from advseg.metrics import nanmean
    from advseg.tracking import Tracking, job_run

    card = read_json(args.card, ("model", "arch", "encoder", "fold", "seed", "class_names", "mlflow_run_id",
                                 "defense", "defense_settings"))
    defense, chosen = card_defense(card, args.card)
    if defense != "smoothing":
        raise ValueError(f"{args.card}: defense {defense!r}; only a smoothed model has a certificate")
    settings = SmoothingSettings.from_section(chosen)
    tracking = Tracking.load(args.tracking)
    model, _ = load_model(args.model, card["arch"], card["encoder"])
    fold = open_fold(args.data, args.fold)
    images, masks = fold.val_slices()
    set_threads(args.threads)
    with claim_device() as device:
        certificate = certify(model.to(device), images, settings, seed=card["seed"], batch_size=args.batch_size)
    dice = certificate.certified_dice(masks, settings.radii)
    abstain = certificate.abstain_rate()
    records.write_certificate(args.out, card["model"], card["fold"], card["seed"], card["class_names"],
                              fold.val_units(), fold.data.unit, settings.radii, dice, abstain)
    tags = {"stage": "certify", "model": card["model"], "fold": str(card["fold"]), "seed": str(card["seed"]),
            "defense": "smoothing"}
    with job_run(tracking, f"{card['model']} certificate", tags, parent_run_id=card["mlflow_run_id"]) as run:
        run.log_params({f"smoothing.{key}": value for key, value in vars(settings).items()})
        run.log_metrics({"abstain_rate": float(abstain.mean()),
                         **{f"certified_dice_r{radius:g}": nanmean(dice[:, column])
                            for column, radius in enumerate(settings.radii)}})
        run.log_artifact(args.out)
    log.info("%s fold %d seed %d: certified Dice %s at radii %s, abstain rate %.3f", card["model"], card["fold"],
             card["seed"], [round(nanmean(dice[:, c]), 4) for c in range(len(settings.radii))], settings.radii,
             float(abstain.mean()))
