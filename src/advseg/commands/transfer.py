"""advseg transfer: other models' perturbations replayed on one target model.

Writes a JSON list with one row per source perturbation: source_model, target_model,
fold, seed, attack, attack_loss, variant, eps and the target's clean and attacked
scores under both Dice protocols.

A white-box attack sees the target's gradient; a transferred one does not. If
transferred perturbations hurt a model as much as its own, the white-box attack is
weaker than it should be (Carlini et al. 2019): the aggregate step checks it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from advseg.commands import add_compute_arguments, add_data_arguments, add_model_arguments

log = logging.getLogger(__name__)
IDENTITY = ("source", "attack", "attack_loss", "variant", "eps", "fold", "seed")
# means over the held-out units, as in the attack results
SCORES = ("clean_dice", "adv_dice", "diff", "clean_dice_study", "adv_dice_study", "diff_dice_study", "n_units")


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    add_data_arguments(parser)
    add_compute_arguments(parser)
    parser.add_argument("--perturbation-list", type=Path, required=True,
                        help="JSON list of transfer.npz files of 'advseg attack' (this fold and seed); "
                             "those of the target model itself are skipped")
    parser.add_argument("--out", type=Path, required=True, help="one row per source perturbation (.json list)")


def run(args) -> None:
    import numpy as np

    from advseg.checkpoints import load_model
    from advseg.datasets import open_fold
    from advseg.devices import claim_device, set_threads
    from advseg.inference import predict_masks
    from advseg.jobs import read_file_list, read_json, write_json
    from advseg.metrics import compare_scores, slice_scores
    from advseg.records import read_perturbation

    card = read_json(args.card, ("arch", "encoder", "model", "fold", "seed", "class_names"))
    perturbations = {}
    for path in read_file_list(args.perturbation_list):
        perturbation = read_perturbation(path, card["fold"])
        if perturbation["source"] != card["model"]:  # its own are white-box, in the attack results
            perturbations[path] = perturbation
    model, _ = load_model(args.model, card["arch"], card["encoder"])
    fold = open_fold(args.data, args.fold)
    images, masks = fold.val_slices()
    units = fold.val_units()
    images = np.asarray(images, dtype=np.float32)
    for path, perturbation in perturbations.items():
        if perturbation["delta"].shape[0] != len(images) or perturbation["delta"].shape[-2:] != images.shape[-2:]:
            raise ValueError(f"{path}: perturbation of shape {perturbation['delta'].shape} does not fit the "
                             f"{len(images)} held-out {images.shape[-2]}x{images.shape[-1]} slices of fold {args.fold}")
    set_threads(args.threads)
    class_names = list(card["class_names"])
    rows = []
    with claim_device() as device:
        model.to(device)
        clean = slice_scores(predict_masks(model, images, args.batch_size, device), masks)
        for perturbation in perturbations.values():
            adv_inputs = replay(images, perturbation)
            adv = slice_scores(predict_masks(model, adv_inputs, args.batch_size, device, model_input=True), masks)
            scores = compare_scores(clean, adv, class_names, units)
            rows.append({"source_model": perturbation["source"], "target_model": card["model"],
                         **{key: perturbation[key] for key in IDENTITY if key != "source"},
                         **{key: scores[key] for key in SCORES}})
            log.info("%s -> %s (%s %s eps=%g): dice %.4f -> %.4f", perturbation["source"], card["model"],
                     perturbation["attack"], perturbation["attack_loss"], perturbation["eps"], scores["clean_dice"],
                     scores["adv_dice"])
    write_json(args.out, rows)


def replay(images, perturbation: dict):
    """The attacked (N, 3, H, W) inputs: clamp(x + delta) on the slices the delta was made on."""
    import numpy as np

    from advseg.models import as_model_input_array

    delta = perturbation["delta"].astype(np.float32) * perturbation["scale"]
    if perturbation["input"] == "grey":
        delta = as_model_input_array(delta)
    return np.clip(as_model_input_array(images) + delta, 0.0, 1.0)
