"""Benchmark: peak memory of jobs on a prepared dataset far larger than they need.

Generates a prepared directory (default 20 000 slices at 224x224, 3 classes: about 7 GB of
arrays, written chunk by chunk so the generator never holds them) and measures, each in a
fresh subprocess, the peak resident memory of:

* ``baseline``: Python with torch and advseg imported, nothing read (the column "before
  data" gives every scenario's own peak after its imports and model, before any data);
* ``attack``: what an attack job touches: open one fold, copy its held-out slices into a
  tensor, run a forward pass of a model over them and score the predictions against the masks;
* ``train``: a training loop: batches streamed from the prepared arrays, forward, backward,
  optimizer step (``--train-steps`` batches);
* ``epoch-read`` / ``epoch-read-mmap``: one epoch of training batches read without a model,
  with advseg's plain file reads and, for comparison, by indexing the memory map (whose pages
  stay mapped into the process and count as resident);
* ``load-all`` (not run by default): every image and mask read into memory, as a job did
  when the prepared data was a single file.

Peak RSS is the process's high-water mark, ``VmHWM`` of /proc/self/status on Linux. Not
``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries that over fork and exec, so a job started
by a large process (a test runner, the generator) reports its parent's peak. Elsewhere
getrusage is the fallback.

Run: ``PYTHONPATH=src python benchmarks/memory.py --dir /tmp/advseg-memory`` (``--help``: options).
The directory is deleted afterwards unless ``--keep``. Check free disk space first
(``df -h``): the data take slices x size^2 x 7 bytes, plus a tenth of that per fold.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SCENARIOS = ("baseline", "attack", "train", "epoch-read", "epoch-read-mmap", "load-all")
DEFAULT_SCENARIOS = SCENARIOS[:-1]  # load-all would need all the arrays in memory


def generate(directory: Path, slices: int, size: int, folds: int, slices_per_volume: int = 50) -> dict:
    """Write a prepared directory of synthetic slices, chunk by chunk."""
    from advseg.datasets.prepared import write_prepared_chunks

    volumes = np.arange(slices) // slices_per_volume
    positions = np.arange(slices) % slices_per_volume
    groups = volumes // 2  # a "case" holds two scans
    yy, xx = np.mgrid[:size, :size] / size

    def chunks(rows: int = 256):
        rng = np.random.default_rng(0)
        for start in range(0, slices, rows):
            n = min(rows, slices - start)
            centres = rng.uniform(0.3, 0.7, (n, 2, 1, 1))
            distance = np.hypot(yy - centres[:, 0], xx - centres[:, 1])
            images = np.clip(1 - 2 * distance + rng.normal(0, 0.05, (n, size, size)), 0, 1).astype(np.float32)
            masks = np.stack([distance < 0.1, (distance >= 0.1) & (distance < 0.2), distance >= 0.4], 1)
            yield images, masks.astype(np.uint8)

    return write_prepared_chunks(directory, chunks(), groups=groups, volumes=volumes, positions=positions,
                                 class_names=("inner", "ring", "outside"), image_size=size, folds=folds,
                                 folds_to_run=[0], guard=2, unit="simulated case")


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (see the module docstring)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def tiny_model():
    import torch

    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(16, 3, 1))


def build(model: str, classes: int):
    if model == "tiny":
        return tiny_model()
    from advseg.models import build_model

    arch, encoder = model.split(":")
    return build_model(arch, encoder, classes=classes)


def measure(scenario: str, directory: Path, model_name: str, batch_size: int, train_steps: int,
            forward_limit: int | None) -> dict:
    """Run one scenario in this process; returns what it touched and its peak RSS."""
    import torch

    from advseg.datasets import open_fold

    def as_model_input(images):  # advseg.models.as_model_input, without importing smp for the tiny model
        return images.unsqueeze(1).expand(-1, 3, -1, -1)

    def plan_batches(n: int, size: int) -> list[slice]:  # advseg.training's, without its imports
        from advseg.training import plan_batches as plan

        return plan(n, size) if scenario == "train" else [slice(s, min(s + size, n)) for s in range(0, n, size)]

    torch.set_num_threads(1)
    classes = len(json.loads((directory / "prepared.json").read_text())["class_names"])
    model = build(model_name, classes) if scenario in ("attack", "train") else None
    before_data = peak_rss_mb()  # imports and model
    started = time.perf_counter()
    touched = 0
    if scenario != "baseline":
        fold = open_fold(directory, 0)
    if scenario == "attack":
        images, masks = fold.val_slices()  # one writable copy in memory
        inputs = torch.from_numpy(images)
        model.eval()
        n = len(inputs) if forward_limit is None else min(forward_limit, len(inputs))
        overlap = np.zeros((len(masks), masks.shape[1]), dtype=np.int64)  # per-slice, per-class scores
        with torch.no_grad():
            for start in range(0, n, batch_size):
                logits = model(as_model_input(inputs[start:start + batch_size]))
                predicted = (logits > 0).numpy()
                overlap[start:start + len(logits)] = (predicted & masks[start:start + len(logits)]).sum((2, 3))
        overlap[n:] = masks[n:].sum((2, 3))  # every mask is read, also past --forward-limit
        touched = images.nbytes + masks.nbytes
    elif scenario == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        order = np.random.default_rng(0).permutation(len(fold.train))
        for batch in plan_batches(len(order), batch_size)[:train_steps]:
            images, masks = (torch.from_numpy(a) for a in fold.train_slices(order[batch]))
            logits = model(as_model_input(images))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, masks.float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            touched += images.nbytes + masks.nbytes
    elif scenario == "load-all":
        images, masks = np.load(directory / "images.npy"), np.load(directory / "masks.npy")
        touched = images.nbytes + masks.nbytes
    elif scenario in ("epoch-read", "epoch-read-mmap"):
        order = np.random.default_rng(0).permutation(len(fold.train))
        images_map, masks_map = fold.data.images, fold.data.masks
        for batch in plan_batches(len(order), batch_size):
            if scenario == "epoch-read":
                images, masks = fold.train_slices(order[batch])
            else:
                rows = np.sort(fold.train[order[batch]])
                images, masks = images_map[rows], masks_map[rows]
            touched += images.nbytes + masks.nbytes
    return {"scenario": scenario, "model": model_name if scenario in ("attack", "train") else "-",
            "touched_mb": touched / 2 ** 20, "seconds": time.perf_counter() - started,
            "before_data_mb": before_data, "max_rss_mb": peak_rss_mb()}


def run_in_subprocess(scenario: str, args) -> dict:
    command = [sys.executable, __file__, "--measure", scenario, "--dir", str(args.dir), "--model", args.model,
               "--batch-size", str(args.batch_size), "--train-steps", str(args.train_steps)]
    if args.forward_limit is not None:
        command += ["--forward-limit", str(args.forward_limit)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="where to generate the prepared dataset")
    parser.add_argument("--slices", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--model", default="tiny", help="tiny (3 convolutions) or arch:encoder, e.g. Unet:resnet18")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--forward-limit", type=int, default=None,
                        help="attack: forward only this many held-out slices (all are still loaded and scored)")
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS), help=f"any of {', '.join(SCENARIOS)}")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--measure", choices=SCENARIOS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.dir, args.model, args.batch_size, args.train_steps,
                                 args.forward_limit)))
        return
    try:
        if not (args.dir / "prepared.json").exists():
            started = time.perf_counter()
            meta = generate(args.dir, args.slices, args.size, args.folds)
            print(f"generated {meta['n_slices']} slices at {args.size}x{args.size} in "
                  f"{time.perf_counter() - started:.0f} s; fold 0: {meta['fold_splits']['0']}")
        total = sum(path.stat().st_size for path in args.dir.rglob("*.npy")) / 2 ** 20
        print(f"prepared arrays on disk: {total:,.0f} MB\n")
        print("| scenario | model | data touched (MB) | peak RSS before data (MB) | peak RSS (MB) | seconds |")
        print("|---|---|---:|---:|---:|---:|")
        for scenario in args.scenarios.split(","):
            row = run_in_subprocess(scenario, args)
            print(f"| {row['scenario']} | {row['model']} | {row['touched_mb']:,.0f} | {row['before_data_mb']:,.0f} "
                  f"| {row['max_rss_mb']:,.0f} | {row['seconds']:.1f} |", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
