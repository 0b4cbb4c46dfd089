"""Benchmark: an FGSM epsilon sweep with one shared gradient vs one gradient per epsilon.

FGSM perturbs an image by ``eps * sign(grad_x L)``; the sign does not depend on eps.
So a sweep over E epsilons needs one forward+backward per batch (which also gives the
clean prediction) and then E forwards for the adversarial predictions, instead of E
forward+backward passes plus E forwards. With a backward costing about two forwards,
expect roughly (3E + E) / (3 + E), i.e. about 2.7x for E = 6.

The shared sweep is advseg's own (``attack_sweep`` with FGSM). Both run on the same model and
data in one process and must give bit-identical adversarial predictions. Run: ``make bench``, i.e. ``python benchmarks/eps_sweep.py`` (``--help``: options).
"""

import argparse
import statistics
import time

import numpy as np
import torch

from advseg.attacks import AttackSettings, attack_sweep, fgsm
from advseg.datasets import prepare_dataset
from advseg.inference import batch_slices
from advseg.losses import get_loss
from advseg.models import as_model_input, build_model, count_parameters

EPSILONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)


def shared_sweep(model, images, masks, loss_name, batch_size, epsilons):
    """advseg's FGSM sweep: one forward+backward per batch (which also gives the clean
    prediction), then one forward per eps."""
    results = attack_sweep(model, images, masks, loss_name, list(epsilons),
                           AttackSettings.from_section({"method": "fgsm"}), batch_size=batch_size)
    clean = torch.from_numpy(results[epsilons[0]].clean_pred).bool()
    return clean, {eps: torch.from_numpy(result.adv_pred).bool() for eps, result in results.items()}


def naive_sweep(model, images, masks, loss_name, batch_size, epsilons):
    """For each eps: forward+backward for the gradient, the FGSM step, one forward."""
    loss = get_loss(loss_name)
    clean, adversarial = [], {eps: [] for eps in epsilons}
    for eps in epsilons:
        for batch in batch_slices(len(images), batch_size):
            x = images[batch].detach().clone().requires_grad_(True)
            logits = model(as_model_input(x))
            (grad,) = torch.autograd.grad(loss(logits, masks[batch]).sum(), x)
            if eps == epsilons[0]:                     # recomputed per eps, kept once
                clean.append((logits.detach() > 0).cpu())
            with torch.no_grad():
                x_adv = fgsm(x.detach(), grad.sign(), eps)
                adversarial[eps].append((model(as_model_input(x_adv)) > 0).cpu())
    return torch.cat(clean), {eps: torch.cat(preds) for eps, preds in adversarial.items()}


def timed(method, device, *args):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    result = method(*args)
    sync()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for option, default in [("--image-size", 96), ("--batch-size", 8), ("--threads", 2),
                            ("--repeats", 3), ("--seed", 0)]:
        parser.add_argument(option, type=int, default=default)
    parser.add_argument("--n-images", type=int, default=32, help="0 = all slices")
    for option, default in [("--arch", "Unet"), ("--encoder", "resnet18"), ("--loss", "bce")]:
        parser.add_argument(option, default=default)
    parser.add_argument("--epsilons", type=float, nargs="+", default=list(EPSILONS))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    data = prepare_dataset("mni152", image_size=args.image_size)
    chosen = slice(0, args.n_images or None)
    images = torch.from_numpy(np.ascontiguousarray(data.images[chosen])).to(device)
    masks = torch.from_numpy(np.ascontiguousarray(data.masks[chosen])).to(device)

    model = build_model(args.arch, args.encoder, classes=masks.shape[1]).to(device).eval()
    print(f"device {device}, torch threads {torch.get_num_threads()}, "
          f"model {args.arch}-{args.encoder} ({count_parameters(model):,} parameters), "
          f"{len(images)} images {args.image_size}x{args.image_size}, batch {args.batch_size}, "
          f"loss {args.loss}, {args.repeats} repeats (median)")
    model.requires_grad_(False)
    inputs = (model, images, masks, args.loss, args.batch_size, args.epsilons)
    methods = {"shared": shared_sweep, "naive": naive_sweep}
    predictions = {name: method(*inputs) for name, method in methods.items()}  # warm-up, untimed
    runs = {name: [] for name in methods}
    for _ in range(args.repeats):                      # interleaved: load drift hits both alike
        for name, method in methods.items():
            seconds, predictions[name] = timed(method, device, *inputs)
            runs[name].append(seconds)
    times = {name: statistics.median(seconds) for name, seconds in runs.items()}

    (clean, adversarial), (naive_clean, naive_adversarial) = predictions.values()
    assert torch.equal(clean, naive_clean), "clean predictions differ"
    for eps in args.epsilons:
        assert torch.equal(adversarial[eps], naive_adversarial[eps]), f"eps {eps} differs"
    print("identical adversarial predictions: yes")

    n_eps = len(args.epsilons)
    print(f"{'method':<8} {'eps count':>9} {'median s':>10} {'s per eps':>10}")
    for name in methods:
        print(f"{name:<8} {n_eps:>9} {times[name]:>10.3f} {times[name] / n_eps:>10.3f}")
    print(f"eps-sweep speedup vs naive: {times['naive'] / times['shared']:.2f}×")


if __name__ == "__main__":
    main()
