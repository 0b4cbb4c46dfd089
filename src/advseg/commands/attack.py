"""advseg attack: one model x method x variant x attack loss, every eps in one process.

A job pays seconds to import torch and smp and to open the tracking store, and an eps
costs a fraction of that: the whole eps sweep runs here, writing per eps a score file,
per-slice scores and an example slice, and one MLflow child run per eps. The
perturbation at the transfer eps is kept, compactly, for the other models to replay.
"""

from __future__ import annotations

import logging
from pathlib import Path

from advseg.commands import add_compute_arguments, add_data_arguments, add_model_arguments, add_tracking_argument

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    add_data_arguments(parser)
    add_tracking_argument(parser)
    add_compute_arguments(parser)
    parser.add_argument("--loss", required=True, help="attack loss, a name from advseg.losses")
    parser.add_argument("--settings", required=True,
                        help="the job's part of the attack section as JSON: method, attack.<method> and the variant "
                             "(step, loss_argument_order, input); what it leaves out comes from the schema")
    parser.add_argument("--epsilons", nargs="+", required=True, help="L-inf sizes in [0, 1], as in file names")
    parser.add_argument("--transfer-eps", required=True, help="eps whose perturbation is kept for transfer")
    parser.add_argument("--out-dir", type=Path, required=True,
                        help="writes eps_<eps>.json, .slices.npz, .example.npz and transfer.npz here")


def run(args) -> None:
    import numpy as np

    from advseg import attacks, metrics, records
    from advseg.checkpoints import load_model
    from advseg.config import Variant
    from advseg.datasets import open_fold
    from advseg.devices import claim_device, set_threads
    from advseg.jobs import read_json, write_json
    from advseg.losses import get_loss
    from advseg.models import as_model_input_array
    from advseg.settings import fill
    from advseg.tracking import Tracking, job_run

    settings = attacks.AttackSettings.from_section(args.settings)
    variant = Variant(settings.step, settings.loss_argument_order, settings.input)  # the label and its parts
    method_settings = settings.method_settings()
    get_loss(args.loss)
    epsilons = {label: _parse_eps(label) for label in args.epsilons}
    fill("attack", {"epsilons": list(epsilons.values()), "batch_size": args.batch_size})  # before any work
    if args.transfer_eps not in epsilons:
        raise ValueError(f"report.transfer_eps: {args.transfer_eps} is not one of the attacked eps {args.epsilons}")
    card = read_json(args.card, ("arch", "encoder", "model", "params", "fold", "seed", "mlflow_run_id",
                                 "class_names"))
    tracking = Tracking.load(args.tracking)
    model, _ = load_model(args.model, card["arch"], card["encoder"])
    fold = open_fold(args.data, args.fold)
    images, masks = fold.val_slices()
    units = fold.val_units()
    class_names = list(card["class_names"])
    set_threads(args.threads)

    with claim_device() as device:
        results = attacks.attack_sweep(model.to(device), images, masks, args.loss, list(epsilons.values()),
                                       settings, seed=card["seed"], batch_size=args.batch_size)
    clean_pred = next(iter(results.values())).clean_pred
    clean_scores = metrics.slice_scores(clean_pred, masks)
    identity = {key: card[key] for key in ("model", "arch", "encoder", "params", "fold", "seed")}
    run_tags = {"stage": "attack", "model": card["model"], "arch": card["arch"], "encoder": card["encoder"],
                "fold": str(card["fold"]), "seed": str(card["seed"]), "attack": settings.method,
                "attack_loss": args.loss, "variant": variant.label, **variant.__dict__}
    example_index = int(np.asarray(masks).reshape(len(masks), -1).sum(1).argmax())
    clean_inputs = as_model_input_array(images)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for label, eps in epsilons.items():
        result, adv_pred = results[eps], results[eps].adv_pred
        adv_inputs = result.adv_inputs
        adv_scores = metrics.slice_scores(adv_pred, masks)
        scores = {**identity, "attack": settings.method, "attack_loss": args.loss, **variant.__dict__,
                  "variant": variant.label, "eps": eps, "method_settings": method_settings,
                  "unit": fold.data.unit, **metrics.compare_scores(clean_scores, adv_scores, class_names, units),
                  **attacks.perturbation_size(np.asarray(images), adv_inputs), "loss_history": list(result.loss_history)}
        records.write_slice_scores(args.out_dir / f"eps_{label}.slices.npz", clean_scores, adv_scores, class_names,
                                   units, fold.data.unit)
        records.write_example(args.out_dir / f"eps_{label}.example.npz", card["model"], eps, class_names,
                              example_index, images, masks, clean_pred, adv_inputs, adv_pred)
        write_json(args.out_dir / f"eps_{label}.json", scores)
        with job_run(tracking, f"{card['model']} {settings.method} {variant.label} {args.loss} eps={label}",
                     {**run_tags, "eps": label}, parent_run_id=card["mlflow_run_id"]) as run:
            run.log_params({**identity, **variant.__dict__, "attack": settings.method, "attack_loss": args.loss,
                            "eps": eps, **method_settings})
            run.log_flat_metrics("", {key: value for key, value in scores.items()
                                      if key not in ("params", "eps", "fold", "seed", "loss_history", "unit")})
            for step, value in enumerate(result.loss_history, start=1):
                run.log_metrics({"attack_objective": value}, step=step)
            run.log_artifact(args.out_dir / f"eps_{label}.json")
        log.info("%s %s %s %s eps=%s: dice %.4f -> %.4f (diff %.3f)", card["model"], settings.method,
                 variant.label, args.loss, label, scores["clean_dice"], scores["adv_dice"], scores["diff"])
    transfer_eps = epsilons[args.transfer_eps]
    _write_transfer(args.out_dir / "transfer.npz", identity, settings, variant, args.loss, transfer_eps,
                    clean_inputs, results[transfer_eps].adv_inputs)


def _parse_eps(label: str) -> float:
    try:
        eps = float(label)
    except ValueError:
        raise ValueError(f"attack.epsilons: {label!r} is not a number") from None
    return eps


def _write_transfer(path: Path, identity: dict, settings, variant, loss: str, eps: float, inputs,
                    adv_inputs) -> None:
    """The perturbation at the transfer eps: int8 signs for standard FGSM, else float16 deltas.

    Replaying ``clamp(x + delta)`` on the same slices reproduces the attacked input: for
    standard FGSM ``clamp(x + eps * sign(delta))`` is exact even where the step was clamped.
    Grey perturbations are stored once, not per input channel.
    """
    import numpy as np

    from advseg.records import write_perturbation

    delta = adv_inputs - inputs
    if settings.input == "grey":
        delta = delta[:, 0]
    if settings.method == "fgsm" and settings.step == "standard":
        stored, scale = np.sign(delta).astype(np.int8), eps
    else:
        stored, scale = delta.astype(np.float16), 1.0
    write_perturbation(path, stored, scale, settings.input,
                       {"source": identity["model"], "attack": settings.method, "attack_loss": loss,
                        "variant": variant.label, "eps": eps, "fold": identity["fold"], "seed": identity["seed"]})
