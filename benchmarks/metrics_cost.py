"""Benchmark: the cost of per-slice scores, and advseg's HD95/NSD against MONAI's classes.

``advseg.metrics.slice_scores`` computes Dice, IoU, the study's Dice, HD95 and NSD of every
slice and class. HD95 and NSD follow MONAI's ``HausdorffDistanceMetric(percentile=95)`` and
``SurfaceDiceMetric``; MONAI spends most of its ~5 ms per slice and class cropping each mask
with its transform machinery, so advseg computes the same distances directly. This script
times both on the same random discs (CPU seconds of this process, and wall seconds), checks
that they agree, and prints one table row per image size. MONAI runs on a subset and is
scaled to the full count.

Run: ``PYTHONPATH=src python benchmarks/metrics_cost.py`` (``--help``: options).
"""

import argparse
import time
import warnings

import numpy as np
import torch

from advseg.metrics import NSD_TOLERANCE_PX, slice_scores, surface_scores

CLASSES = 3


def discs(slices: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Masks of one disc per class, radius 5-20 % of the image, some cut by the border, some empty."""
    rows, cols = np.mgrid[:size, :size]
    masks = np.zeros((slices, CLASSES, size, size), dtype=bool)
    centres = rng.uniform(0.1, 0.9, (slices, CLASSES, 2)) * size
    radii = rng.uniform(0.05, 0.2, (slices, CLASSES)) * size
    for n in range(slices):
        for c in range(CLASSES):
            (cy, cx), r = centres[n, c], radii[n, c]
            masks[n, c] = (rows - cy) ** 2 + (cols - cx) ** 2 < r * r
    masks[rng.random((slices, CLASSES)) < 0.2] = False  # absent classes
    return masks


def timed(function, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def monai_surface(pred: np.ndarray, truth: np.ndarray):
    from monai.metrics import HausdorffDistanceMetric, SurfaceDiceMetric

    p, t = torch.from_numpy(pred).float(), torch.from_numpy(truth).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd95 = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(p, t)
        nsd = SurfaceDiceMetric([NSD_TOLERANCE_PX] * CLASSES, include_background=True, reduction="none")(p, t)
    return hd95.numpy(), nsd.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--monai-slices", type=int, default=50, help="slices MONAI is timed on (scaled up)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import monai.metrics  # noqa: F401  (import cost kept out of the timings)

    rng = np.random.default_rng(0)
    print(f"{args.slices} slices x {CLASSES} classes; seconds as CPU (wall)")
    print("| size | slice_scores | of which HD95+NSD | MONAI HD95+NSD (scaled) | speed-up (CPU) | max |HD95 diff| "
          "| max |NSD diff| |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        pred, truth = discs(args.slices, size, rng), discs(args.slices, size, rng)
        _, all_cpu, all_wall = timed(slice_scores, pred, truth)
        (hd95, nsd), surf_cpu, surf_wall = timed(surface_scores, pred, truth)
        k = min(args.monai_slices, args.slices)
        (monai_hd95, monai_nsd), monai_cpu, monai_wall = timed(monai_surface, pred[:k], truth[:k])
        scale = args.slices / k
        both = truth[:k].any((2, 3)) & pred[:k].any((2, 3))
        defined = truth[:k].any((2, 3))
        hd_diff = np.abs(hd95[:k][both] - monai_hd95[both]).max()
        nsd_diff = np.abs(nsd[:k][defined] - monai_nsd[defined]).max()
        print(f"| {size}x{size} | {all_cpu:.2f} ({all_wall:.2f}) | {surf_cpu:.2f} ({surf_wall:.2f}) | "
              f"{monai_cpu * scale:.1f} ({monai_wall * scale:.1f}) | {monai_cpu * scale / surf_cpu:.0f}x | "
              f"{hd_diff:.1e} | {nsd_diff:.1e} |")


if __name__ == "__main__":
    main()
