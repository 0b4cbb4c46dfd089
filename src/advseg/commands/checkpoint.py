"""advseg checkpoint: export the best weights with a model card of clean validation scores."""

from __future__ import annotations

import logging
from pathlib import Path

from advseg.commands import add_compute_arguments, add_data_argument, add_tracking_argument

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_data_argument(parser)
    add_tracking_argument(parser)
    add_compute_arguments(parser)
    parser.add_argument("--weights", type=Path, required=True, help="best weights from 'advseg train'")
    parser.add_argument("--history", type=Path, required=True, help="history JSON from 'advseg train'")
    parser.add_argument("--model-out", type=Path, required=True, help="exported weights (.safetensors)")
    parser.add_argument("--card-out", type=Path, required=True, help="model card (.json)")


def run(args) -> None:
    import mlflow

    from advseg.checkpoints import load_model, save_weights
    from advseg.datasets import SliceDataset
    from advseg.devices import claim_device, set_threads
    from advseg.inference import predict_masks
    from advseg.jobs import read_json, write_json
    from advseg.metrics import summarize
    from advseg.models import count_parameters, model_name
    from advseg.tracking import Tracking, log_flat_metrics, mlflow_run

    history = read_json(args.history, ("arch", "encoder", "mlflow_run_id", "best_epoch", "settings"))
    tracking = Tracking.load(args.tracking)
    model, _ = load_model(args.weights, history["arch"], history["encoder"])
    data = SliceDataset.load(args.data)
    set_threads(args.threads)
    val_images, val_masks = data.split("val")
    with claim_device() as device:
        scores = summarize(predict_masks(model.to(device), val_images, args.batch_size, device), val_masks,
                           list(data.class_names))
    name = model_name(history["arch"], history["encoder"])
    card = {"model": name, "arch": history["arch"], "encoder": history["encoder"],
            "params": count_parameters(model), "dataset": str(args.data), "class_names": list(data.class_names),
            "image_size": int(data.images.shape[-1]),
            **{f"clean_{key}": value for key, value in scores.items() if key != "n_images"},
            "n_images": scores["n_images"], "best_epoch": history["best_epoch"],
            "epochs": history["settings"]["epochs"], "training_loss": history["settings"]["loss"],
            "weights": str(args.model_out), "mlflow_run_id": history["mlflow_run_id"]}
    save_weights(args.model_out, model, history["arch"], history["encoder"], data.class_names,
                 extra={"params": card["params"], "clean_dice": card["clean_dice"]})
    write_json(args.card_out, card)
    with mlflow_run(tracking, name, {"checkpoint": str(args.model_out)}, run_id=history["mlflow_run_id"]):
        log_flat_metrics("clean_", scores)
        mlflow.log_artifact(str(args.card_out))
    log.info("%s: %s params, clean val dice %.4f -> %s", name, f"{card['params']:,}", card["clean_dice"],
             args.model_out)
