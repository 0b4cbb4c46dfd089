"""advseg attack: FGSM at one eps from the shared gradient sign; clean vs attacked scores."""

from __future__ import annotations

import logging
from pathlib import Path

from advseg.commands import add_compute_arguments, add_data_argument, add_model_arguments, add_tracking_argument

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    add_data_argument(parser)
    add_tracking_argument(parser)
    add_compute_arguments(parser)
    parser.add_argument("--gradient", type=Path, required=True, help="output of 'advseg gradient'")
    parser.add_argument("--method", default="fgsm")
    parser.add_argument("--eps", type=float, required=True, help="L-inf step size in [0, 1] intensity units")
    parser.add_argument("--out", type=Path, required=True, help="scores (.json)")
    parser.add_argument("--example", type=Path, required=True, help="one attacked slice for the report (.npz)")


def run(args) -> None:
    import mlflow
    import torch

    from advseg import attacks
    from advseg.catalog import check_choice
    from advseg.checkpoints import load_model
    from advseg.datasets import SliceDataset
    from advseg.devices import claim_device, set_threads
    from advseg.inference import predict_masks
    from advseg.jobs import read_json, write_json
    from advseg.metrics import compare_clean_and_attacked
    from advseg.tracking import Tracking, log_flat_metrics, mlflow_run

    check_choice("attack.method", args.method, attacks.METHODS)
    if not 0 <= args.eps <= 1:
        raise ValueError(f"attack.epsilons: {args.eps} is outside [0, 1]")
    card = read_json(args.card, ("arch", "encoder", "model", "params", "mlflow_run_id"))
    tracking = Tracking.load(args.tracking)
    model, _ = load_model(args.model, card["arch"], card["encoder"])
    data = SliceDataset.load(args.data)
    images, masks = data.split("val")
    grad_sign, clean_pred, attack_loss = _load_gradient(args.gradient, masks.shape)
    set_threads(args.threads)

    adv_images = attacks.fgsm(torch.from_numpy(images), torch.from_numpy(grad_sign), args.eps)
    with claim_device() as device:
        adv_pred = predict_masks(model.to(device), adv_images, args.batch_size, device)
    class_names = list(data.class_names)
    scores = {
        "model": card["model"], "arch": card["arch"], "encoder": card["encoder"], "params": card["params"],
        "attack": args.method, "attack_loss": attack_loss, "eps": args.eps,
        **compare_clean_and_attacked(clean_pred, adv_pred, masks, class_names),
        **attacks.perturbation_size(images, adv_images.numpy()),
    }
    write_json(args.out, scores)
    _write_example(args.example, card["model"], args.eps, class_names, images, masks, clean_pred,
                   adv_images.numpy(), adv_pred)
    tags = {"stage": "attack", "arch": card["arch"], "encoder": card["encoder"], "model": card["model"],
            "attack": args.method, "attack_loss": attack_loss, "eps": f"{args.eps:g}"}
    with mlflow_run(tracking, f"{card['model']} {args.method} {attack_loss} eps={args.eps:g}", tags,
                    parent_run_id=card["mlflow_run_id"]):
        mlflow.log_params({key: scores[key] for key in ("arch", "encoder", "params", "attack", "attack_loss", "eps")})
        log_flat_metrics("", {key: value for key, value in scores.items() if key not in ("params", "eps")})
        mlflow.log_artifact(str(args.out))
    log.info("%s %s eps=%g: dice %.4f -> %.4f (diff %.3f)", card["model"], attack_loss, args.eps,
             scores["clean_dice"], scores["adv_dice"], scores["diff"])


def _load_gradient(path: Path, mask_shape: tuple[int, ...]):
    import numpy as np

    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in ("grad_sign", "clean_pred", "attack_loss") if key not in archive.files]
        if missing:
            raise ValueError(f"{path}: not written by 'advseg gradient', missing {', '.join(missing)}")
        grad_sign, clean_pred, loss = archive["grad_sign"], archive["clean_pred"], str(archive["attack_loss"])
    if clean_pred.shape != mask_shape or grad_sign.shape != (mask_shape[0], *mask_shape[2:]):
        raise ValueError(f"{path}: shapes {grad_sign.shape}/{clean_pred.shape} do not match the validation "
                         f"set {mask_shape}; was it made from another dataset?")
    return grad_sign, clean_pred, loss


def _write_example(path: Path, model: str, eps: float, class_names, images, masks, clean_pred, adv_images,
                   adv_pred) -> None:
    """The validation slice with the most labelled tissue, before and after the attack."""
    import numpy as np

    index = int(masks.reshape(len(masks), -1).sum(1).argmax())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez(handle, image=images[index], truth=masks[index], clean_pred=clean_pred[index],
                 adv_image=adv_images[index], adv_pred=adv_pred[index], class_names=np.array(class_names),
                 eps=np.float64(eps), model=np.array(model), index=np.int64(index))
