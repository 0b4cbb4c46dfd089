"""The GPU paths, checked on a machine with a GPU; prints a table of checks and one of timings.

What the CPU test suite cannot run: a job's GPU claim against the real driver, training with
mixed precision on CUDA, a resume state carried between CPU and CUDA in both directions,
every attack method on CUDA against the same attack on the CPU, batch-size invariance on
CUDA, and what training and PGD cost at the study's 224x224.

    python benchmarks/gpu_check.py results/data/mni152 [--out gpu_check.json]

Needs torch with CUDA, segmentation-models-pytorch and a prepared dataset (``advseg
download``); not MLflow or Snakemake.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLAIM_PROBE = """
import json, os, sys, time
from advseg.devices import claim_gpu
with claim_gpu(poll_seconds=0.2) as claim:
    import torch
    started = time.time()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    count = torch.cuda.device_count()
    torch.ones(1, device="cuda")
    time.sleep(2)
    print(json.dumps({"device": claim.device, "source": claim.source, "visible": visible, "count": count,
                      "start": started, "end": time.time()}))
"""


GPU = "cuda"  # the device under test (a CPU dry run of the checks sets "cpu")


class Interrupted(Exception):
    """Stands in for a kill after the first epoch: the resume state is on disk, training stops."""


def check_claims(lock_dir: Path) -> dict:
    """Two jobs claim the GPU at once on a 1-GPU machine: both see one device, never at the same time."""
    env = {**os.environ, "ADVSEG_GPU_LOCK_DIR": str(lock_dir)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("ADVSEG_GPUS", None)
    jobs = [subprocess.Popen([sys.executable, "-c", CLAIM_PROBE], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    records = [json.loads(job.communicate(timeout=300)[0].strip().splitlines()[-1]) for job in jobs]
    first, second = sorted(records, key=lambda record: record["start"])
    return {"claims": records, "ok": all(r["source"] == "lock" and r["count"] == 1 for r in records)
            and second["start"] >= first["end"] - 0.05}


def train(data, device, epochs, amp, resume_path, stop_after=None, seed=0):
    import torch

    from advseg.models import build_model
    from advseg.settings import from_mapping
    from advseg.training import ResumeFile, TrainingSettings, resume_fingerprint, train_model

    settings = from_mapping(TrainingSettings, {"epochs": epochs, "batch_size": 16, "amp": amp}, "training", seed=seed)
    torch.manual_seed(seed)
    model = build_model("Unet", "resnet18", classes=len(data.class_names))
    resume = ResumeFile.open(resume_path, resume_fingerprint(settings, data, "Unet", "resnet18"))
    resumed_from = resume.state["epoch"] if resume.state else 0

    def stop(record):
        if stop_after is not None and record["epoch"] >= stop_after:
            raise Interrupted

    try:
        result = train_model(model, data, settings, torch.device(device), resume=resume, on_epoch=stop)
    except Interrupted:
        return {"resumed_from": resumed_from, "interrupted": True}
    return {"model": model, "resumed_from": resumed_from, "best_epoch": result.best_epoch,
            "best_inner_val_dice": result.best_inner_val_dice,
            "losses": [record["train_loss"] for record in result.history]}


def check_resume(data, workdir: Path) -> dict:
    """Epoch 1 on one device, epochs 2-3 on the other (and mixed precision on CUDA only)."""
    out = {}
    for first, second in (("cpu", GPU), (GPU, "cpu")):
        path = workdir / f"resume_{first}_{second}.pt"
        train(data, first, 3, True, path, stop_after=1)
        finished = train(data, second, 3, True, path)
        out[f"{first}->{second}"] = {"resumed_from": finished["resumed_from"],
                                     "best_epoch": finished["best_epoch"], "losses": finished["losses"]}
    out["ok"] = all(record["resumed_from"] == 1 and len(record["losses"]) == 3 for record in out.values())
    return out


def check_attacks(model, data) -> dict:
    """Every method on CUDA and on the CPU from the same model; batch size 4 vs 16 on CUDA."""
    import copy

    import numpy as np
    import torch

    from advseg.attacks import METHODS, AttackSettings, attack_sweep
    from advseg.metrics import slice_scores, summarize_scores
    from advseg.models import as_model_input_array

    images, masks = data.val_slices()
    epsilons = [0.01, 0.05]
    names = list(data.class_names)
    cpu_model = copy.deepcopy(model).cpu().float()
    gpu_model = copy.deepcopy(model).to(GPU).float()
    rows = []
    for method in METHODS:
        settings = dataclasses.replace(AttackSettings.from_section({"method": method}), steps=5, random_start=False)
        loss = "dicefocal" if method in ("fgsm", "pgd") else "bce"
        on_gpu = attack_sweep(gpu_model, images, masks, loss, epsilons, settings, batch_size=16)
        small = attack_sweep(gpu_model, images, masks, loss, epsilons, settings, batch_size=4)
        on_cpu = attack_sweep(cpu_model, images, masks, loss, epsilons, settings, batch_size=16)
        for eps in epsilons:
            gpu, cpu = on_gpu[eps], on_cpu[eps]
            delta = np.asarray(gpu.adv_inputs) - as_model_input_array(images)
            rows.append({
                "method": method, "eps": eps,
                "dice_clean": summarize_scores(slice_scores(gpu.clean_pred, masks), names)["dice"],
                "dice_cuda": summarize_scores(slice_scores(gpu.adv_pred, masks), names)["dice"],
                "dice_cpu": summarize_scores(slice_scores(cpu.adv_pred, masks), names)["dice"],
                "pred_agreement_cuda_cpu": float((gpu.adv_pred == cpu.adv_pred).mean()),
                "pred_agreement_batch_4_16": float((gpu.adv_pred == small[eps].adv_pred).mean()),
                "linf": float(np.abs(delta).max()),
                "in_domain": bool(np.asarray(gpu.adv_inputs).min() >= 0 and np.asarray(gpu.adv_inputs).max() <= 1),
            })
    ok = all(row["linf"] <= row["eps"] + 1e-6 and row["in_domain"] and row["pred_agreement_cuda_cpu"] > 0.99
             and row["pred_agreement_batch_4_16"] > 0.99 for row in rows)
    del gpu_model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"rows": rows, "ok": ok}


def time_study_size(arch: str, encoder: str, n: int = 64, size: int = 224) -> dict:
    """Training steps (mixed precision) and PGD-10 at the study's slice size, on random data."""
    import torch

    from advseg.attacks import AttackSettings, attack_sweep
    from advseg.losses import get_loss
    from advseg.models import as_model_input, build_model

    torch.manual_seed(0)
    model = build_model(arch, encoder, classes=3).cuda()
    images = torch.rand(n, size, size)
    masks = (torch.rand(n, 3, size, size) > 0.7).float()
    loss_fn = get_loss("dicefocal")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    scaler = torch.amp.GradScaler("cuda")
    batch = 16

    def epoch():
        model.train()
        for start in range(0, n, batch):
            x, y = images[start:start + batch].cuda(), masks[start:start + batch].cuda()
            with torch.autocast("cuda"):
                logits = model(as_model_input(x))
            loss = loss_fn(logits.float(), y).mean()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        torch.cuda.synchronize()

    epoch()  # warm-up: cuDNN autotuning, allocator
    started = time.perf_counter()
    epoch()
    train_rate = n / (time.perf_counter() - started)
    settings = AttackSettings.from_section({"method": "pgd", "pgd": {"steps": 10, "random_start": True}})
    attack_sweep(model, images[:batch], masks[:batch], "bce", [0.01], settings, batch_size=batch)
    torch.cuda.synchronize()
    started = time.perf_counter()
    attack_sweep(model, images, masks, "bce", [0.01], settings, batch_size=32)
    torch.cuda.synchronize()
    pgd_rate = n / (time.perf_counter() - started)
    return {"model": f"{arch}-{encoder}", "size": size, "train_slices_per_s": train_rate,
            "pgd10_slices_per_s_per_eps": pgd_rate, "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a prepared dataset directory (advseg download)")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; this check is for a machine with a GPU")
    from advseg.datasets import open_fold

    data = open_fold(args.data, 0)
    report = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
    with tempfile.TemporaryDirectory() as workdir:
        report["claims"] = check_claims(Path(workdir) / "locks")
        report["resume"] = check_resume(data, Path(workdir))
    trained = train(data, GPU, 15, True, Path(tempfile.mkdtemp()) / "resume.pt")
    report["train_cuda_amp"] = {key: trained[key] for key in ("best_epoch", "best_inner_val_dice")}
    report["attacks"] = check_attacks(trained["model"], data)
    report["timings"] = [time_study_size(*pair) for pair in (("Unet", "resnet34"), ("Unet", "efficientnet-b7"),
                                                                ("UnetPlusPlus", "efficientnet-b7"))]

    print(f"{report['gpu']}, torch {report['torch']}")
    print(f"claims: {'ok' if report['claims']['ok'] else 'FAILED'}  {report['claims']['claims']}")
    print(f"resume across devices: {'ok' if report['resume']['ok'] else 'FAILED'}  "
          f"{ {k: v for k, v in report['resume'].items() if k != 'ok'} }")
    print(f"training on CUDA with mixed precision, 15 epochs: {report['train_cuda_amp']}")
    print(f"attacks: {'ok' if report['attacks']['ok'] else 'FAILED'}")
    print(f"{'method':8} {'eps':>5} {'clean':>6} {'cuda':>6} {'cpu':>6} {'agree':>7} {'b4/b16':>7} {'linf':>6}")
    for row in report["attacks"]["rows"]:
        print(f"{row['method']:8} {row['eps']:5.2f} {row['dice_clean']:6.3f} {row['dice_cuda']:6.3f} "
              f"{row['dice_cpu']:6.3f} {row['pred_agreement_cuda_cpu']:7.4f} {row['pred_agreement_batch_4_16']:7.4f} "
              f"{row['linf']:6.4f}")
    print(f"\n{'model (224x224)':32} {'train slices/s':>15} {'PGD-10 slices/s':>16} {'peak GPU MB':>12}")
    for row in report["timings"]:
        print(f"{row['model']:32} {row['train_slices_per_s']:15.1f} {row['pgd10_slices_per_s_per_eps']:16.1f} "
              f"{row['peak_gpu_mb']:12.0f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=float))
    if not (report["claims"]["ok"] and report["resume"]["ok"] and report["attacks"]["ok"]):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
