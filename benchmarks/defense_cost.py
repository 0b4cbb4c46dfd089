"""Benchmark: what each defense costs in training, and what adaptive attacks cost per eps.

Training: one epoch over MNI152 slices (AdamW, the study's Dice+Focal loss) with each
training defense's batch maker (advseg.defenses.training_inputs) against standard training;
the median of ``--repeats`` epochs after one untimed warm-up epoch, all runs
interleaved so that load drift on a shared machine hits them alike. Attacks: one eps on the
same slices with PGD, APGD (same iterations), and PGD through EOT with k draws against
randomized smoothing (each draw is one more forward and backward per step); also the
smoothed prediction (n draws) and its certificate (n0 + n draws). The model has random
weights: this measures time, not strength (tests/test_apgd.py and tests/test_defenses.py
measure strength on trained models). On a shared machine torch's threads spin while other
processes hold the cores, which can inflate a whole section several-fold: read the load
averages printed, and compare rows within a section. Run: ``python benchmarks/defense_cost.py``.
"""

import argparse
import os
import statistics
import time

import numpy as np
import torch

from advseg.apgd import APGDSettings, apgd_sweep
from advseg.attacks import AttackSettings, attack_sweep
from advseg.datasets import prepare_dataset
from advseg.defenses.certification import certify
from advseg.defenses.eot import ExpectationOverTransformation
from advseg.defenses.smoothing import SmoothedModel, SmoothingSettings
from advseg.defenses.training_inputs import training_inputs
from advseg.inference import batch_slices, predict_masks
from advseg.losses import get_loss
from advseg.models import as_model_input, build_model, count_parameters


def train_epoch(model, optimizer, images, masks, batch_size, batch_maker, generator) -> None:
    loss = get_loss("dicefocal")
    model.train()
    for rows in batch_slices(len(images), batch_size):
        inputs = images[rows] if batch_maker is None else batch_maker(model, images[rows], masks[rows], loss, generator)
        value = loss(model(as_model_input(inputs)), masks[rows]).mean()
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()


def median_seconds(runs: dict, repeats: int) -> dict[str, float]:
    """Each run once untimed, then ``repeats`` interleaved rounds (load drift hits all alike); the medians."""
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for option, default in [("--image-size", 64), ("--n-images", 16), ("--batch-size", 16), ("--threads", 2),
                            ("--repeats", 3), ("--steps", 10), ("--pgd-at-steps", 7), ("--smoothing-n", 32),
                            ("--smoothing-n0", 8), ("--draws-per-forward", 4)]:
        parser.add_argument(option, type=int, default=default)
    parser.add_argument("--eps", type=float, default=8 / 255)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--eot-draws", type=int, nargs="+", default=[4, 8])
    for option, default in [("--arch", "Unet"), ("--encoder", "resnet18")]:
        parser.add_argument(option, default=default)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    data = prepare_dataset("mni152", image_size=args.image_size)
    chosen = np.linspace(0, len(data.images) - 1, args.n_images).astype(int)
    images, masks = torch.from_numpy(data.images[chosen].copy()), torch.from_numpy(data.masks[chosen].copy())
    model = build_model(args.arch, args.encoder, classes=masks.shape[1])
    initial = {key: value.clone() for key, value in model.state_dict().items()}

    def epoch_of(batch_maker):
        """One epoch of its own model (from the same start) and optimizer, so that runs can interleave."""
        trained = build_model(args.arch, args.encoder, classes=masks.shape[1])
        trained.load_state_dict(initial)
        optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        return lambda: train_epoch(trained, optimizer, images, masks, args.batch_size, batch_maker, generator)

    training = median_seconds({
        "standard": epoch_of(None),
        "noise": epoch_of(training_inputs("noise", {"sigma": args.sigma})),
        "fast_at": epoch_of(training_inputs("fast_at", {"eps": args.eps})),
        "pgd_at": epoch_of(training_inputs("pgd_at", {"eps": args.eps, "steps": args.pgd_at_steps})),
    }, args.repeats)
    model.eval()

    smoothing = SmoothingSettings.from_section({"sigma": args.sigma, "n": args.smoothing_n, "n0": args.smoothing_n0,
                                                "draws_per_forward": args.draws_per_forward})
    smoothed = SmoothedModel(model, smoothing, seed=0)
    pgd = AttackSettings.from_section({"method": "pgd", "pgd": {"steps": args.steps}})   # the schema's PGD
    apgd = APGDSettings.from_section({"apgd": {"steps": args.steps}})                     # the schema's APGD
    eps, size = args.eps, args.batch_size
    attacks = {f"PGD-{args.steps}": lambda: attack_sweep(model, images, masks, "bce", [eps], pgd, batch_size=size),
               f"APGD-{args.steps} (masked BCE)":
                   lambda: apgd_sweep(model, images, masks, "maskedbce", [eps], apgd, batch_size=size)}
    for draws in args.eot_draws:
        eot = ExpectationOverTransformation(smoothed, draws)
        attacks[f"PGD-{args.steps} + EOT({draws}) on smoothing"] = \
            (lambda eot=eot: attack_sweep(eot, images, masks, "bce", [eps], pgd, batch_size=size))
    attacks[f"smoothed prediction (n {args.smoothing_n})"] = lambda: predict_masks(smoothed, images, size,
                                                                                   torch.device("cpu"))
    attacks[f"certificate (n0 {args.smoothing_n0} + n {args.smoothing_n})"] = \
        lambda: certify(model, images, smoothing, batch_size=size)
    attack_times = median_seconds(attacks, args.repeats)

    print(f"device cpu, torch threads {torch.get_num_threads()}, model {args.arch}-{args.encoder} "
          f"({count_parameters(model):,} parameters, random weights), {len(images)} mni152 slices "
          f"{args.image_size}x{args.image_size}, batch {args.batch_size}, eps {eps:.4f}, median of {args.repeats} "
          f"interleaved rounds after a warm-up; load average before {load_before[0]:.2f}, "
          f"after {os.getloadavg()[0]:.2f}")
    print(f"\n{'training defense':<22} {'s/epoch':>8} {'x standard':>11}")
    for name, seconds in training.items():
        print(f"{name:<22} {seconds:>8.2f} {seconds / training['standard']:>11.2f}")
    print(f"(noise sigma {args.sigma}; fast_at: FGSM of 1.25 eps from a random start; pgd_at: {args.pgd_at_steps} "
          f"steps of 0.25 eps)")
    reference = attack_times[f"PGD-{args.steps}"]
    print(f"\n{'attack or inference, one eps':<42} {'s/eps':>8} {'x PGD':>7}   "
          f"(noisy copies per forward: {args.draws_per_forward} x {args.batch_size} slices)")
    for name, seconds in attack_times.items():
        print(f"{name:<42} {seconds:>8.2f} {seconds / reference:>7.2f}")


if __name__ == "__main__":
    main()
