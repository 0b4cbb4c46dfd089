"""advseg checkpoint: the weights to attack, with a model card of clean held-out scores.

A trained model's best epoch comes with its training history; a model trained
elsewhere comes as a state_dict (torch.save or safetensors) and gets an MLflow run of
its own, so its attacks nest under it like those of a trained model. An ensemble comes
from its members' checkpoints and is saved as one. The card names the model's defense
(with its settings and undefended twin); its clean scores are the defended model's.
"""

from __future__ import annotations

import logging
from pathlib import Path

from advseg.commands import (add_compute_arguments, add_data_arguments, add_defense_arguments, add_in_channels_argument,
                             add_tracking_argument, defense_settings)

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_data_arguments(parser)
    add_tracking_argument(parser)
    add_compute_arguments(parser)
    parser.add_argument("--name", required=True, help="the model's name in paths and tables")
    parser.add_argument("--seed", type=int, required=True, help="training seed (the replicate's label)")
    parser.add_argument("--weights", type=Path,
                        help="best weights of 'advseg train', or a state_dict trained elsewhere (not with --members)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--history", type=Path, help="history JSON of 'advseg train'")
    source.add_argument("--arch", help="architecture of an imported state_dict (with --encoder)")
    source.add_argument("--members", type=Path, nargs="+",
                        help="model cards of the ensemble's members (each beside its checkpoint)")
    parser.add_argument("--encoder", help="encoder of an imported state_dict")
    add_in_channels_argument(parser, "input channels of an imported state_dict")
    parser.add_argument("--key", default="model", help="where the imported model is configured, for messages")
    parser.add_argument("--model-out", type=Path, required=True, help="exported weights (.safetensors)")
    parser.add_argument("--card-out", type=Path, required=True, help="model card (.json)")
    add_defense_arguments(parser)


def run(args) -> None:
    from advseg.checkpoints import load_model, save_weights
    from advseg.datasets import open_fold
    from advseg.defenses.defended import scored_model
    from advseg.devices import claim_device, set_threads
    from advseg.inference import predict_masks
    from advseg.jobs import read_json, write_json
    from advseg.metrics import summarize
    from advseg.models import count_parameters, input_channels
    from advseg.tracking import Tracking, job_run

    if not args.members and args.weights is None:
        raise ValueError("advseg checkpoint: --weights is needed with --history or --arch")
    chosen_defense = defense_settings(args)
    tracking = Tracking.load(args.tracking)
    data = open_fold(args.data, args.fold)
    class_names = list(data.class_names)
    save = None
    if args.members:
        model, arch, encoder, save = _ensemble(args.members, class_names)
        history, provenance = None, {"source": "ensemble", "members": [str(card) for card in args.members]}
    elif args.history:
        history = read_json(args.history, ("arch", "encoder", "mlflow_run_id", "best_epoch", "settings"))
        arch, encoder = history["arch"], history["encoder"]
        model, _ = load_model(args.weights, arch, encoder)
        provenance = {"source": "trained", "best_epoch": history["best_epoch"],
                      "epochs": history["settings"]["epochs"], "training_loss": history["settings"]["loss"]}
    else:
        if not args.encoder:
            raise ValueError("advseg checkpoint: --arch needs --encoder")
        from advseg.checkpoints import load_external_state_dict

        arch, encoder = args.arch, args.encoder
        model = load_external_state_dict(args.weights, arch, encoder, classes=len(class_names),
                                         in_channels=args.in_channels, key=args.key)
        history = None
        provenance = {"source": "imported", "imported_from": str(args.weights)}
    images, masks = data.val_slices()
    set_threads(args.threads)
    with claim_device() as device:
        scored = scored_model(model.to(device), args.defense, chosen_defense, args.seed)
        scores = summarize(predict_masks(scored, images, args.batch_size, device), masks, class_names,
                           data.val_units())
    card = {"model": args.name, "arch": arch, "encoder": encoder, "params": count_parameters(model),
            "in_channels": input_channels(model),
            "fold": args.fold, "seed": args.seed, "dataset": str(args.data), "class_names": class_names,
            "image_size": int(data.image_size),
            **{f"clean_{key}": value for key, value in scores.items() if not key.startswith("n_")},
            "n_images": scores["n_images"], "n_images_study": scores["n_images_study"], "n_units": scores["n_units"],
            "unit": data.data.unit, **provenance, "defense": args.defense, "defense_settings": chosen_defense,
            "twin": args.twin or ("none" if args.members else args.name), "weights": str(args.model_out)}
    # a run of its own unless the model is the one its history trained (quantization wraps its twin's weights)
    own_run = history is not None and history.get("model", args.name) == args.name
    stage = "train" if own_run else "import" if provenance["source"] == "imported" else "defend"
    tags = {"stage": stage, "model": args.name, "arch": arch,
            "encoder": encoder, "fold": str(args.fold), "seed": str(args.seed), "checkpoint": str(args.model_out),
            "defense": args.defense, "twin": card["twin"]}
    with job_run(tracking, args.name, tags, run_id=history["mlflow_run_id"] if own_run else None) as run:
        if not own_run:
            run.log_params({"arch": arch, "encoder": encoder, "params": card["params"], "fold": args.fold,
                            "source": provenance["source"], "weights": str(args.weights or ""),
                            "defense": args.defense,
                            **{f"defense.{key}": value for key, value in chosen_defense.items()}})
        run.log_flat_metrics("clean_", scores)
        card["mlflow_run_id"] = run.run_id
        extra = {"params": card["params"], "clean_dice": card["clean_dice"], "defense": args.defense}
        if save is not None:
            save(args.model_out, extra)
        else:
            save_weights(args.model_out, model, arch, encoder, tuple(class_names), extra=extra)
        write_json(args.card_out, card)
        run.log_artifact(args.card_out)
    log.info("%s (fold %d, seed %d): %s params, clean dice %.4f -> %s", args.name, args.fold, args.seed,
             f"{card['params']:,}", card["clean_dice"], args.model_out)


def _ensemble(member_cards: list[Path], class_names: list[str]):
    """(ensemble, arch, encoder, save) from the members' cards, each checked against this dataset's classes."""
    from advseg.checkpoints import load_model, save_ensemble
    from advseg.grid import ENSEMBLE
    from advseg.defenses.ensemble import Ensemble
    from advseg.jobs import read_json

    cards = [read_json(path, ("model", "arch", "encoder", "in_channels", "class_names", "weights"))
             for path in member_cards]
    for path, card in zip(member_cards, cards):
        if list(card["class_names"]) != class_names:
            raise ValueError(f"{path}: classes {card['class_names']} differ from the dataset's {class_names}")
    ensemble = Ensemble([load_model(Path(path).with_name(Path(card["weights"]).name), card["arch"],
                                    card["encoder"])[0] for path, card in zip(member_cards, cards)])

    def save(path: Path, extra: dict) -> None:
        save_ensemble(path, ensemble, cards, tuple(class_names), extra)

    return ensemble, ENSEMBLE, "+".join(card["model"] for card in cards), save
