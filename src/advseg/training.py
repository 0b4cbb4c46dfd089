"""Training a segmentation model the way the study did, at a size a laptop can run.

AdamW with cosine annealing, Dice+Focal on sigmoid outputs, flips/rot90/intensity
augmentation, validation Dice every epoch, and the best epoch's weights kept. After
every epoch the full state (model, optimizer, schedule, random generators) is saved,
so a killed job resumes where it stopped instead of starting over.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from advseg.datasets import SliceDataset
from advseg.inference import batch_slices, predict_masks
from advseg.losses import get_loss
from advseg.metrics import summarize
from advseg.models import as_model_input

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSettings:
    epochs: int = 30              # passes over the training slices
    batch_size: int = 16
    lr: float = 1e-3              # AdamW learning rate at the start of the cosine schedule
    min_lr: float = 5e-6          # learning rate reached at the last epoch
    weight_decay: float = 1e-2
    loss: str = "dicefocal"       # a name from advseg.losses.LOSSES
    augment: bool = True          # random flips, rot90, brightness/contrast
    amp: bool = True              # mixed precision on CUDA (ignored on the CPU)
    seed: int = 42

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrainingResult:
    best_state: dict
    best_epoch: int
    best_dice: float
    history: list[dict]


EpochCallback = Callable[[dict], None]


def augment(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator):
    """Random flips, a random multiple of 90° rotation, and brightness/contrast per slice."""
    out_images, out_masks = [], []
    draws = torch.rand(len(images), 5, generator=generator)
    for image, mask, (flip_h, flip_v, turn, contrast, brightness) in zip(images, masks, draws):
        if flip_h < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        if flip_v < 0.5:
            image, mask = image.flip(-2), mask.flip(-2)
        if image.shape[-1] == image.shape[-2]:
            k = int(turn * 4)
            image, mask = image.rot90(k, (-2, -1)), mask.rot90(k, (-2, -1))
        image = (image * (0.8 + 0.4 * contrast) + (brightness - 0.5) * 0.2).clamp(0, 1)
        out_images.append(image)
        out_masks.append(mask)
    return torch.stack(out_images), torch.stack(out_masks)


def train_model(model: nn.Module, data: SliceDataset, settings: TrainingSettings, device: torch.device,
                resume_path: Path | None = None, on_epoch: EpochCallback | None = None) -> TrainingResult:
    loss_fn = get_loss(settings.loss)
    train_images, train_masks = (torch.from_numpy(a) for a in data.split("train"))
    val_images, val_masks = data.split("val")
    if not val_masks.any():
        raise ValueError("the validation slices have no labelled pixels: no epoch can be scored")
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs, eta_min=settings.min_lr)
    use_amp = settings.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    generator = torch.Generator().manual_seed(settings.seed)
    result = TrainingResult(best_state={}, best_epoch=0, best_dice=-1.0, history=[])

    start_epoch = 1
    if resume_path is not None and resume_path.exists():
        start_epoch = _resume(resume_path, settings, model, optimizer, schedule, scaler, generator, result)

    for epoch in range(start_epoch, settings.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_images), generator=generator)
        total_loss = 0.0
        for batch in batch_slices(len(order), settings.batch_size):
            images, masks = train_images[order[batch]], train_masks[order[batch]]
            if settings.augment:
                images, masks = augment(images, masks, generator)
            images, masks = images.to(device), masks.to(device)
            with torch.autocast(device.type, enabled=use_amp):
                logits = model(as_model_input(images))
            loss = loss_fn(logits.float(), masks).mean()  # pixel sums overflow float16 at 224x224
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total_loss += loss.item() * len(images)
        lr = schedule.get_last_lr()[0]
        schedule.step()
        scores = summarize(predict_masks(model, val_images, settings.batch_size, device), val_masks,
                           list(data.class_names))
        record = {"epoch": epoch, "train_loss": total_loss / len(train_images), "val_dice": scores["dice"],
                  "val_iou": scores["iou"], "lr": lr, "seconds": time.perf_counter() - started}
        result.history.append(record)
        if scores["dice"] > result.best_dice:
            result.best_dice, result.best_epoch = scores["dice"], epoch
            result.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        log.info("epoch %d/%d  loss %.4f  val dice %.4f  (best %.4f @ %d)  %.1fs", epoch, settings.epochs,
                 record["train_loss"], record["val_dice"], result.best_dice, result.best_epoch, record["seconds"])
        if resume_path is not None:
            _save_resume_state(resume_path, settings, model, optimizer, schedule, scaler, generator, result, epoch)
        if on_epoch:
            on_epoch(record)
    model.load_state_dict(result.best_state)
    return result


def _save_resume_state(path, settings, model, optimizer, schedule, scaler, generator, result, epoch) -> None:
    state = {"fingerprint": settings.fingerprint(), "epoch": epoch, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "scaler": scaler.state_dict(),
             "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),  # dropout draws from it
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
             "best_state": result.best_state,
             "best_epoch": result.best_epoch, "best_dice": result.best_dice,
             "history": json.dumps(result.history)}
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)  # atomic: a kill mid-write leaves the previous state intact


def can_resume(path: Path, settings: TrainingSettings) -> bool:
    """Whether ``path`` holds a resume state saved with these settings."""
    if not path.exists():
        return False
    return torch.load(path, map_location="cpu", weights_only=True)["fingerprint"] == settings.fingerprint()


def _resume(path, settings, model, optimizer, schedule, scaler, generator, result) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain types only
    if state["fingerprint"] != settings.fingerprint():
        log.warning("%s: saved with other training settings; starting over", path)
        return 1
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    scaler.load_state_dict(state["scaler"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    result.best_state, result.best_epoch, result.best_dice = state["best_state"], state["best_epoch"], state["best_dice"]
    result.history = json.loads(state["history"])
    log.info("%s: resuming after epoch %d", path, state["epoch"])
    return state["epoch"] + 1


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
