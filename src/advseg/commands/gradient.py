"""advseg gradient: sign(grad_x loss) for one model and attack loss, shared by every eps.

Also stores the clean predictions: the forward pass that feeds the gradient already
made them, so the per-eps attack jobs need only their adversarial forward pass.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from advseg.commands import add_compute_arguments, add_data_argument, add_model_arguments, add_tracking_argument

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    add_data_argument(parser)
    add_tracking_argument(parser)
    add_compute_arguments(parser)
    parser.add_argument("--loss", required=True, help="attack loss, a name from advseg.losses")
    parser.add_argument("--out", type=Path, required=True, help="gradient signs and clean predictions (.npz)")


def run(args) -> None:
    import mlflow
    import numpy as np
    import torch

    from advseg.attacks import gradient_sign
    from advseg.checkpoints import load_model
    from advseg.datasets import SliceDataset
    from advseg.devices import claim_device, set_threads
    from advseg.inference import batch_slices
    from advseg.jobs import read_json
    from advseg.losses import get_loss
    from advseg.tracking import Tracking, mlflow_run

    loss = get_loss(args.loss)
    card = read_json(args.card, ("arch", "encoder", "model", "mlflow_run_id"))
    tracking = Tracking.load(args.tracking)
    model, _ = load_model(args.model, card["arch"], card["encoder"])
    model.requires_grad_(False)  # only the input needs a gradient
    data = SliceDataset.load(args.data)
    set_threads(args.threads)
    images, masks = (torch.from_numpy(a) for a in data.split("val"))
    started = time.perf_counter()
    signs, predictions = [], []
    with claim_device() as device:
        model.to(device)
        for batch in batch_slices(len(images), args.batch_size):
            sign, logits = gradient_sign(model, images[batch].to(device), masks[batch].to(device), loss)
            signs.append(sign.cpu().numpy())
            predictions.append((logits > 0).cpu().numpy().astype(np.uint8))
    seconds = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as handle:
        np.savez(handle, grad_sign=np.concatenate(signs), clean_pred=np.concatenate(predictions),
                 attack_loss=np.array(args.loss))
    tags = {"stage": "gradient", "arch": card["arch"], "encoder": card["encoder"], "attack_loss": args.loss}
    with mlflow_run(tracking, f"{card['model']} grad {args.loss}", tags, parent_run_id=card["mlflow_run_id"]):
        mlflow.log_params({"arch": card["arch"], "encoder": card["encoder"], "attack_loss": args.loss,
                           "n_images": len(images)})
        mlflow.log_metric("seconds", seconds)
    log.info("%s: sign(grad %s) of %d slices in %.2fs -> %s", card["model"], args.loss, len(images), seconds,
             args.out)
