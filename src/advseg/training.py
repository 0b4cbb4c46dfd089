"""Training a segmentation model the way the study did, at a size a laptop can run.

AdamW with cosine annealing, Dice+Focal on sigmoid outputs, flips/rot90/intensity
augmentation. Training batches are read from the prepared directory one at a time, so
the training set never has to fit in memory. The best epoch is picked on the fold's inner
validation slices; the held-out slices, which are attacked later, are never looked at.
After every epoch the full state (model, optimizer, schedule, random generators) is
saved, so a killed job resumes where it stopped instead of starting over; the state
carries a fingerprint of everything that shaped it, and one that does not match is
ignored (training starts over).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import pickle
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from advseg.datasets.prepared import PreparedFold
from advseg.defenses.training_inputs import BatchMaker
from advseg.inference import predict_masks
from advseg.jobs import atomic_path
from advseg.losses import get_loss
from advseg.metrics import summarize
from advseg.models import as_model_input

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSettings:
    """The config's ``training`` section (meaning and defaults: the schema) and one of its ``seeds``."""
    epochs: int
    batch_size: int
    lr: float
    min_lr: float
    weight_decay: float
    loss: str
    augment: bool
    amp: bool
    seed: int


@dataclass
class TrainingResult:
    best_state: dict
    best_epoch: int
    best_inner_val_dice: float   # the score the best epoch was picked by
    history: list[dict]


EpochCallback = Callable[[dict], None]


def plan_batches(n: int, batch_size: int) -> list[slice]:
    """Batches over n slices; a last batch of one slice joins the one before.

    In train mode a BatchNorm after global pooling (DeepLabV3, DeepLabV3Plus, PSPNet)
    sees one value per channel in a batch of one slice and fails.
    """
    if n < 2:
        raise ValueError(f"the fold has {n} training slice(s); at least 2 are needed (fewer data.folds, "
                         f"a smaller data.guard?)")
    starts = list(range(0, n, batch_size))
    if n - starts[-1] == 1 and len(starts) > 1:
        starts.pop()
    return [slice(start, end) for start, end in zip(starts, starts[1:] + [n])]


def resume_fingerprint(settings: TrainingSettings, data: PreparedFold, arch: str, encoder: str,
                       defense: dict | None = None) -> str:
    """What a resume state must have been trained with: settings, slices and split, model, classes, and
    the defense with its settings (``{"defense": name, "settings": ...}``; None: standard training)."""
    identity = {"settings": dataclasses.asdict(settings), "data": data.fingerprint, "arch": arch,
                "encoder": encoder, "classes": list(data.class_names),
                "precision": "amp" if settings.amp else "float32", **({"defense": defense} if defense else {})}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


STATE_KEYS = ("epoch", "device", "model", "optimizer", "schedule", "scaler", "generator", "torch_rng", "cuda_rng",
              "best_state", "best_epoch", "best_inner_val_dice", "history")


@dataclass
class ResumeFile:
    """The resume state of one training, read once: ``state`` is None when training starts over."""
    path: Path
    fingerprint: str
    state: dict | None

    @classmethod
    def open(cls, path: Path, fingerprint: str) -> "ResumeFile":
        path = Path(path)
        state = None
        if path.exists():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain types only
            except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError,
                    zipfile.BadZipFile) as error:
                log.warning("%s: unreadable resume state (%s); starting over", path, error)
            else:
                saved = state.get("fingerprint") if isinstance(state, dict) else None
                missing = [key for key in STATE_KEYS if saved == fingerprint and key not in state]
                if missing:
                    log.warning("%s: resume state lacks %s; starting over", path, ", ".join(missing))
                    state = None
                elif saved != fingerprint:
                    log.warning("%s: saved with other training settings, data, split, model or precision "
                                "(%s, now %s); starting over", path, saved, fingerprint)
                    state = None
        return cls(path, fingerprint, state)

    def save(self, state: dict) -> None:
        with atomic_path(self.path) as temporary:  # a kill mid-write leaves the previous state intact
            torch.save({**state, "fingerprint": self.fingerprint}, temporary)


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


def train_model(model: nn.Module, data: PreparedFold, settings: TrainingSettings, device: torch.device,
                resume: ResumeFile | None = None, on_epoch: EpochCallback | None = None,
                make_inputs: BatchMaker | None = None) -> TrainingResult:
    """Train on ``data``'s training slices, keep the epoch best on its inner validation slices.

    ``make_inputs`` (a defense's, :mod:`advseg.defenses.training_inputs`) turns each augmented batch
    into the inputs trained on, in float32 and from the training's generator."""
    loss_fn = get_loss(settings.loss)
    batches = plan_batches(len(data.train), settings.batch_size)
    inner_images, inner_masks = data.inner_val_slices()
    if not inner_masks.any():
        raise ValueError(f"{data.data.directory}: the inner validation slices of fold {data.fold} have no "
                         f"labelled pixels, no epoch can be scored")
    model.to(device)
    # the fused kernel updates all parameters at once: 6x faster than the per-tensor loop on the CPU
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay,
                                  fused=device.type in ("cpu", "cuda"))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs, eta_min=settings.min_lr)
    use_amp = settings.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    generator = torch.Generator().manual_seed(settings.seed)
    result = TrainingResult(best_state={}, best_epoch=0, best_inner_val_dice=-1.0, history=[])

    start_epoch = 1
    if resume is not None and resume.state is not None:
        start_epoch = _restore(resume, model, optimizer, schedule, scaler, generator, result)

    for epoch in range(start_epoch, settings.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(data.train), generator=generator).numpy()
        total_loss = 0.0
        for batch in batches:
            images, masks = (torch.from_numpy(array) for array in data.train_slices(order[batch]))
            if settings.augment:
                images, masks = augment(images, masks, generator)
            images, masks = images.to(device), masks.to(device)
            if make_inputs is not None:
                images = make_inputs(model, images, masks, loss_fn, generator)
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
        scores = summarize(predict_masks(model, inner_images, settings.batch_size, device), inner_masks,
                           list(data.class_names))
        record = {"epoch": epoch, "train_loss": total_loss / len(data.train), "inner_val_dice": scores["dice"],
                  "inner_val_iou": scores["iou"], "lr": lr, "seconds": time.perf_counter() - started}
        result.history.append(record)
        if scores["dice"] > result.best_inner_val_dice:
            result.best_inner_val_dice, result.best_epoch = scores["dice"], epoch
            result.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        log.info("epoch %d/%d  loss %.4f  inner val dice %.4f  (best %.4f @ %d)  %.1fs", epoch, settings.epochs,
                 record["train_loss"], record["inner_val_dice"], result.best_inner_val_dice, result.best_epoch,
                 record["seconds"])
        if resume is not None:
            resume.save(_state(model, optimizer, schedule, scaler, generator, result, epoch, device))
        if on_epoch:
            on_epoch(record)
    model.load_state_dict(result.best_state)
    return result


def _state(model, optimizer, schedule, scaler, generator, result, epoch, device) -> dict:
    return {"epoch": epoch, "device": str(device), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "scaler": scaler.state_dict(),
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),  # dropout draws from it
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "best_state": result.best_state, "best_epoch": result.best_epoch,
            "best_inner_val_dice": result.best_inner_val_dice, "history": json.dumps(result.history)}


def restore_scaler(scaler: torch.amp.GradScaler, saved: dict) -> None:
    """Load a grad scaler's state when both sides use one.

    A disabled scaler saves an empty state, which an enabled one refuses; a state resumed
    on another device may switch mixed precision on or off, and then the loss scale
    simply starts afresh.
    """
    if scaler.is_enabled() and saved:
        scaler.load_state_dict(saved)
    elif scaler.is_enabled() or saved:
        log.info("mixed precision differs from the saved state's device; the loss scale starts afresh")


def _restore(resume: ResumeFile, model, optimizer, schedule, scaler, generator, result) -> int:
    state = resume.state
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])  # moves the moments to the parameters' device
    schedule.load_state_dict(state["schedule"])
    restore_scaler(scaler, state["scaler"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if torch.cuda.is_available() and state["cuda_rng"]:
        for index, rng in enumerate(state["cuda_rng"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(rng, index)
    result.best_state, result.best_epoch = state["best_state"], state["best_epoch"]
    result.best_inner_val_dice = state["best_inner_val_dice"]
    result.history = json.loads(state["history"])
    log.info("%s: resuming after epoch %d (saved on %s)", resume.path, state["epoch"], state["device"])
    return state["epoch"] + 1


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
