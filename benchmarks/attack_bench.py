"""Benchmark: advseg's PGD-10 against torchattacks 3.5.1 PGD on the same model and slices.

torchattacks is a classifier library: its PGD takes (N, K) logits and CrossEntropy. A sigmoid
segmentation model fits it when each (class, pixel) becomes a 2-class decision with logits
[0, z]: softmax([0, z])[1] = sigmoid(z), so its CrossEntropy on per-pixel labels is exactly the
mean BCE, advseg's ``bce`` attack loss. Both then run L∞ PGD with the same eps, alpha, steps
and random start; advseg also keeps the lowest-Dice iterate per image (one more forward) and
returns the clean and adversarial predictions, so torchattacks' time is shown both bare and
with the two forwards that give it the same outputs.

torchattacks pins old requests and conflicts with mlflow, so it is never a dependency: this
script installs it on first use with ``pip install --no-deps --target benchmarks/.cache/...``
(or ``--cache-dir``) and imports it from there. Run: ``python benchmarks/attack_bench.py``.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advseg.attacks import AttackSettings, attack_sweep, image_dice
from advseg.datasets import prepare_dataset
from advseg.inference import batch_slices
from advseg.models import as_model_input, build_model, count_parameters

TORCHATTACKS = "torchattacks==3.5.1"


def import_torchattacks(cache_dir: Path):
    """torchattacks from a private directory, installed there (without dependencies) if missing."""
    target = cache_dir / TORCHATTACKS.replace("==", "-")
    if not (target / "torchattacks").is_dir():
        print(f"installing {TORCHATTACKS} into {target}", flush=True)
        partial = target.with_name(target.name + ".partial")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                        str(partial), TORCHATTACKS], check=True)
        partial.replace(target)
    sys.path.insert(0, str(target))
    import torchattacks
    return torchattacks


class PixelClassifier(nn.Module):
    """A sigmoid seg model seen as a classifier: grey (N, 1, H, W) -> logits (N, 2, C, H, W) = [0, z]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        logits = self.model(as_model_input(grey[:, 0]))
        return torch.stack([torch.zeros_like(logits), logits], dim=1)


def advseg_pgd(model, images, masks, eps, settings, batch_size):
    result = attack_sweep(model, images, masks, "bce", [eps], settings, batch_size=batch_size)[eps]
    return result.adv_inputs[:, 0], result.adv_pred, result.clean_pred


def torchattacks_pgd(attack, model, images, masks, batch_size, predict: bool):
    """torchattacks batch by batch; with ``predict``, also the clean and adversarial predictions."""
    adversarial, adv_pred, clean_pred = [], [], []
    for rows in batch_slices(len(images), batch_size):
        x = attack(images[rows, None], masks[rows].long())[:, 0]
        adversarial.append(x)
        if predict:
            with torch.no_grad():
                adv_pred.append(model(as_model_input(x)) > 0)
                clean_pred.append(model(as_model_input(images[rows])) > 0)
    if not predict:
        return torch.cat(adversarial).numpy(), None, None
    return (torch.cat(adversarial).numpy(), torch.cat(adv_pred).to(torch.uint8).numpy(),
            torch.cat(clean_pred).to(torch.uint8).numpy())


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for option, default in [("--image-size", 64), ("--n-images", 8), ("--batch-size", 8), ("--threads", 2),
                            ("--steps", 10), ("--repeats", 3), ("--seed", 0)]:
        parser.add_argument(option, type=int, default=default)
    parser.add_argument("--eps", type=float, default=0.03)
    parser.add_argument("--alpha", type=float, default=0.25, help="step size as a fraction of eps")
    for option, default in [("--arch", "Unet"), ("--encoder", "resnet18")]:
        parser.add_argument(option, default=default)
    parser.add_argument("--cache-dir", type=Path, default=Path(__file__).resolve().parent / ".cache")
    args = parser.parse_args()

    torchattacks = import_torchattacks(args.cache_dir)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = prepare_dataset("mni152", image_size=args.image_size)
    with_tissue = np.flatnonzero(data.masks.reshape(len(data.masks), -1).any(1))
    chosen = with_tissue[np.linspace(0, len(with_tissue) - 1, args.n_images).astype(int)]
    images, masks = torch.from_numpy(data.images[chosen].copy()), torch.from_numpy(data.masks[chosen].copy())

    model = build_model(args.arch, args.encoder, classes=masks.shape[1]).eval()
    model.requires_grad_(False)              # both attacks need only the input's gradient
    classifier = PixelClassifier(model).eval()
    with torch.no_grad():                    # the objective is the same: CE on [0, z] = mean BCE
        ce = F.cross_entropy(classifier(images[:, None]), masks.long())
        bce = F.binary_cross_entropy_with_logits(model(as_model_input(images)), masks.float())
    # and the attack is the same: one step of eps without a random start is FGSM in both
    fgsm_ta = torchattacks_pgd(torchattacks.PGD(classifier, eps=args.eps, alpha=args.eps, steps=1,
                                                random_start=False), model, images, masks, args.batch_size, False)[0]
    fgsm_advseg = advseg_pgd(model, images, masks, args.eps,
                             AttackSettings.from_section({"method": "pgd", "pgd": {"steps": 1, "alpha": 1.0,
                                                                                    "random_start": False}}),
                             args.batch_size)[0]
    fgsm_gap = float(np.abs(fgsm_ta - fgsm_advseg).max())

    settings = AttackSettings.from_section({"method": "pgd", "pgd": {"steps": args.steps, "alpha": args.alpha,
                                                                     "random_start": True}})
    attack = torchattacks.PGD(classifier, eps=args.eps, alpha=args.alpha * args.eps, steps=args.steps,
                              random_start=True)
    methods = {
        "advseg pgd": lambda: advseg_pgd(model, images, masks, args.eps, settings, args.batch_size),
        "torchattacks PGD + 2 forwards": lambda: torchattacks_pgd(attack, model, images, masks,
                                                                  args.batch_size, True),
        "torchattacks PGD (bare)": lambda: torchattacks_pgd(attack, model, images, masks, args.batch_size, False),
    }
    outputs = {name: run() for name, run in methods.items()}           # warm-up, untimed
    runs = {name: [] for name in methods}
    for _ in range(args.repeats):                                     # interleaved: load drift hits all alike
        for name, run in methods.items():
            seconds, outputs[name] = timed(run)
            runs[name].append(seconds)
    times = {name: statistics.median(seconds) for name, seconds in runs.items()}

    print(f"device cpu, torch threads {torch.get_num_threads()}, model {args.arch}-{args.encoder} "
          f"({count_parameters(build_model(args.arch, args.encoder, masks.shape[1])):,} parameters, random "
          f"weights), {len(images)} mni152 slices {args.image_size}x{args.image_size}, batch {args.batch_size}, "
          f"PGD-{args.steps} eps {args.eps} alpha {args.alpha}·eps, random start, {args.repeats} repeats (median)")
    print(f"objective: torchattacks CE on [0, z] {ce.item():.6f} = mean BCE {bce.item():.6f}; "
          f"1-step FGSM max |advseg - torchattacks| = {fgsm_gap:.2g}")
    truth = masks
    print(f"{'attack':<30} {'median s':>9} {'s/image':>8} {'linf':>7} {'mean Dice':>10}")
    for name in methods:
        adversarial, adv_pred, _ = outputs[name]
        linf = float(np.abs(adversarial - images.numpy()).max())
        if adv_pred is None:
            dice = "-"
        else:
            dice = f"{image_dice(torch.from_numpy(adv_pred), truth).mean().item():.4f}"
        print(f"{name:<30} {times[name]:>9.3f} {times[name] / len(images):>8.4f} {linf:>7.4f} {dice:>10}")
    clean = image_dice(torch.from_numpy(outputs["advseg pgd"][2]), truth).mean().item()
    print(f"clean mean Dice {clean:.4f} (random weights: Dice says nothing about strength here; "
          f"tests/test_attacks.py measures that on a trained model)")
    ratio = times["torchattacks PGD + 2 forwards"] / times["advseg pgd"]
    bare = times["torchattacks PGD (bare)"] / times["advseg pgd"]
    print(f"torchattacks / advseg time: {ratio:.2f}× (same outputs), {bare:.2f}× (torchattacks bare); "
          f"> 1 means advseg is faster")


if __name__ == "__main__":
    main()
