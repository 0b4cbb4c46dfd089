"""advseg attack: one model x method x variant x attack loss, every eps in one process.

A job pays seconds to import torch and smp and to open the tracking store, and an eps
costs a fraction of that: the whole eps sweep runs here, writing per eps a score file,
per-slice scores and an example slice, and one MLflow child run per eps. The
perturbation at the transfer eps is kept, compactly, for the other models to replay.

A defended model (its card names the defense) is attacked through the view that
``--adaptation`` asks for (plain gradients, EOT, BPDA), or, with ``transfer``, through its
undefended twin; whatever the view, the result is scored on the defended model itself.
"""

from __future__ import annotations

import logging
from pathlib import Path

from advseg.commands import add_scoring_arguments

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_scoring_arguments(parser)
    parser.add_argument("--loss", required=True, help="attack loss, a name from advseg.losses")
    parser.add_argument("--settings", required=True,
                        help="the job's part of the attack section as JSON: method, attack.<method> and the variant "
                             "(step, loss_argument_order, input); what it leaves out comes from the schema")
    parser.add_argument("--epsilons", nargs="+", required=True, help="L-inf sizes in [0, 1], as in file names")
    parser.add_argument("--transfer-eps", required=True, help="eps whose perturbation is kept for transfer")
    parser.add_argument("--out-dir", type=Path, required=True,
                        help="writes eps_<eps>.json, .slices.npz, .example.npz and transfer.npz here")
    parser.add_argument("--adaptation", choices=("plain", "eot", "bpda", "transfer"), default="plain",
                        help="how a defended model is attacked: plain gradients, averaged over its noise (eot), "
                             "straight through its purifier (bpda), or made on its undefended twin (transfer)")
    parser.add_argument("--twin-model", type=Path, help="the twin's checkpoint, for --adaptation transfer")


def run(args) -> None:
    import numpy as np

    from advseg import attacks, metrics, records
    from advseg.checkpoints import load_model
    from advseg.datasets import open_fold
    from advseg.defenses.defended import attacked_model, card_defense, scored_model
    from advseg.devices import claim_device, set_threads
    from advseg.grid import APGD_ONLY_LOSSES, AttackJob
    from advseg.inference import predict_masks
    from advseg.jobs import read_json, write_json
    from advseg.losses import get_loss
    from advseg.models import as_model_input_array
    from advseg.settings import fill
    from advseg.tracking import Tracking, job_run

    sweep = Sweep.from_settings(args.settings)
    variant, method_settings = sweep.variant, sweep.method_settings
    attack_label = AttackJob(sweep.method, variant, args.loss, args.adaptation).label
    if args.loss not in APGD_ONLY_LOSSES:
        get_loss(args.loss)
    epsilons = {label: _parse_eps(label) for label in args.epsilons}
    fill("attack", {"epsilons": list(epsilons.values()), "batch_size": args.batch_size})  # before any work
    if args.transfer_eps not in epsilons:
        raise ValueError(f"report.transfer_eps: {args.transfer_eps} is not one of the attacked eps {args.epsilons}")
    if (args.adaptation == "transfer") != (args.twin_model is not None):
        raise ValueError("advseg attack: --twin-model goes with --adaptation transfer, and only with it")
    card = read_json(args.card, ("arch", "encoder", "model", "params", "fold", "seed", "mlflow_run_id",
                                 "class_names"))
    defense, defense_settings = card_defense(card, args.card)
    tracking = Tracking.load(args.tracking)
    model, _ = load_model(args.model, card["arch"], card["encoder"])
    twin = load_model(args.twin_model)[0] if args.twin_model else None
    fold = open_fold(args.data, args.fold)
    images, masks = fold.val_slices()
    units = fold.val_units()
    class_names = list(card["class_names"])
    set_threads(args.threads)

    with claim_device() as device:
        scored = scored_model(model.to(device), defense, defense_settings, card["seed"])
        attacked = twin.to(device) if twin is not None else attacked_model(
            model, scored, defense, defense_settings, args.adaptation, sweep.eot_draws)
        results = sweep.run(attacked, images, masks, args.loss, list(epsilons.values()), card["seed"],
                            args.batch_size)
        if attacked is not scored:  # made on a view of the defense (or on the twin): score the defense itself
            clean_pred = predict_masks(scored, images, args.batch_size, device)
            for result in results.values():
                result.adv_pred = predict_masks(scored, result.adv_inputs, args.batch_size, device, model_input=True)
                result.clean_pred = clean_pred
    clean_pred = next(iter(results.values())).clean_pred
    clean_scores = metrics.slice_scores(clean_pred, masks)
    identity = {**{key: card[key] for key in ("model", "arch", "encoder", "params", "fold", "seed")},
                "defense": defense, "twin": card.get("twin", card["model"])}
    run_tags = {"stage": "attack", "model": card["model"], "arch": card["arch"], "encoder": card["encoder"],
                "fold": str(card["fold"]), "seed": str(card["seed"]), "attack": attack_label, "defense": defense,
                "attack_loss": args.loss, "variant": variant.label, **variant.__dict__}
    example_index = int(np.asarray(masks).reshape(len(masks), -1).sum(1).argmax())
    clean_inputs = as_model_input_array(images)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for label, eps in epsilons.items():
        result, adv_pred = results[eps], results[eps].adv_pred
        adv_inputs = result.adv_inputs
        adv_scores = metrics.slice_scores(adv_pred, masks)
        scores = {**identity, "attack": attack_label, "attack_loss": args.loss, **variant.__dict__,
                  "variant": variant.label, "eps": eps, "method_settings": method_settings,
                  "unit": fold.data.unit, **metrics.compare_scores(clean_scores, adv_scores, class_names, units),
                  **attacks.perturbation_size(np.asarray(images), adv_inputs), "loss_history": list(result.loss_history)}
        records.write_slice_scores(args.out_dir / f"eps_{label}.slices.npz", clean_scores, adv_scores, class_names,
                                   units, fold.data.unit)
        records.write_example(args.out_dir / f"eps_{label}.example.npz", card["model"], eps, class_names,
                              example_index, images, masks, clean_pred, adv_inputs, adv_pred)
        write_json(args.out_dir / f"eps_{label}.json", scores)
        with job_run(tracking, f"{card['model']} {scores['attack']} {variant.label} {args.loss} eps={label}",
                     {**run_tags, "eps": label}, parent_run_id=card["mlflow_run_id"]) as run:
            run.log_params({**identity, **variant.__dict__, "attack": scores["attack"], "attack_loss": args.loss,
                            "eps": eps, **method_settings})
            run.log_flat_metrics("", {key: value for key, value in scores.items()
                                      if key not in ("params", "eps", "fold", "seed", "loss_history", "unit",
                                                     "defense", "twin")})
            for step, value in enumerate(result.loss_history, start=1):
                run.log_metrics({"attack_objective": value}, step=step)
            run.log_artifact(args.out_dir / f"eps_{label}.json")
        log.info("%s %s %s %s eps=%s: dice %.4f -> %.4f (diff %.3f)", card["model"], scores["attack"],
                 variant.label, args.loss, label, scores["clean_dice"], scores["adv_dice"], scores["diff"])
    transfer_eps = epsilons[args.transfer_eps]
    _write_transfer(args.out_dir / "transfer.npz", identity, sweep.method, attack_label, variant, args.loss, transfer_eps,
                    clean_inputs, results[transfer_eps].adv_inputs)


def _parse_eps(label: str) -> float:
    try:
        eps = float(label)
    except ValueError:
        raise ValueError(f"attack.epsilons: {label!r} is not a number") from None
    return eps


def _write_transfer(path: Path, identity: dict, method: str, label: str, variant, loss: str, eps: float, inputs,
                    adv_inputs) -> None:
    """The perturbation at the transfer eps: int8 signs for standard FGSM, else float16 deltas.

    Replaying ``clamp(x + delta)`` on the same slices reproduces the attacked input: for
    standard FGSM ``clamp(x + eps * sign(delta))`` is exact even where the step was clamped.
    Grey perturbations are stored once, not per input channel.
    """
    import numpy as np

    from advseg.records import write_perturbation

    delta = adv_inputs - inputs
    if variant.input == "grey":
        delta = delta[:, 0]
    if method == "fgsm" and variant.step == "standard":
        stored, scale = np.sign(delta).astype(np.int8), eps
    else:
        stored, scale = delta.astype(np.float16), 1.0
    write_perturbation(path, stored, scale, variant.input,
                       {"source": identity["model"], "attack": label, "attack_loss": loss,
                        "variant": variant.label, "eps": eps, "fold": identity["fold"], "seed": identity["seed"]})


class Sweep:
    """One attack job's method and settings; :meth:`run` is :func:`advseg.attacks.attack_sweep`, or
    :func:`advseg.apgd.apgd_sweep` for apgd, whose settings differ from the other methods'."""

    def __init__(self, method: str, settings, variant, method_settings: dict, eot_draws: int):
        self.method, self.settings, self.variant = method, settings, variant
        self.method_settings, self.eot_draws = method_settings, eot_draws

    @classmethod
    def from_settings(cls, text: str) -> "Sweep":
        import dataclasses

        from advseg import attacks
        from advseg.apgd import APGDSettings
        from advseg.grid import Variant
        from advseg.settings import fill

        section = fill("attack", text)
        if "method" not in section:
            raise ValueError("attack.method: one attack job's settings name its method")
        eot_draws = section.pop("eot")["draws"]
        if section["method"] == "apgd":
            settings = APGDSettings.from_section(section)
            options = {key: value for key, value in dataclasses.asdict(settings).items() if key != "input"}
            return cls("apgd", settings, Variant("standard", "standard", settings.input), options, eot_draws)
        settings = attacks.AttackSettings.from_section(section)
        return cls(settings.method, settings, Variant(settings.step, settings.loss_argument_order, settings.input),
                   settings.method_settings(), eot_draws)

    def run(self, model, images, masks, loss: str, epsilons: list[float], seed: int, batch_size: int) -> dict:
        from advseg import attacks
        from advseg.apgd import apgd_sweep

        if self.method == "apgd":
            return apgd_sweep(model, images, masks, loss, epsilons, self.settings, seed=seed, batch_size=batch_size)
        return attacks.attack_sweep(model, images, masks, loss, epsilons, self.settings, seed=seed,
                                    batch_size=batch_size)
