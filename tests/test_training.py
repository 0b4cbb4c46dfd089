"""Training on a tiny learnable dataset: history, best epoch, and resuming after a kill."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from advseg.datasets import SliceDataset
from advseg.inference import predict_masks
from advseg.metrics import summarize
from advseg.models import build_model
from advseg.training import TrainingSettings, augment, train_model

torch.set_num_threads(1)
CPU = torch.device("cpu")
SETTINGS = TrainingSettings(epochs=2, batch_size=8, lr=1e-3, augment=True, amp=False, seed=0)
ARCH, ENCODER = "Unet", "mobilenet_v2"  # small, and without dropout


class Interrupted(Exception):
    pass


def blobs(n: int = 24, size: int = 32) -> SliceDataset:
    """Gaussian blobs; the masks threshold the image, so the task is learnable."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, size, size), np.float32)
    for image in images:
        for _ in range(3):
            cy, cx = rng.uniform(6, size - 6, 2)
            radius = rng.uniform(3, 7)
            image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2))
    images = np.clip(images + rng.normal(0, 0.05, images.shape), 0, 1).astype(np.float32)
    masks = np.stack([images > 0.5, (images > 0.2) & (images <= 0.5)], 1).astype(np.uint8)
    is_val = np.arange(n) >= n - 4
    return SliceDataset(images, masks, is_val, np.arange(n) // 4, ("core", "rim"))


@pytest.fixture(scope="module")
def data() -> SliceDataset:
    return blobs()


def train(data, settings=SETTINGS, resume_path=None, on_epoch=None, arch=ARCH, encoder=ENCODER, kill_in=None):
    torch.manual_seed(123)  # the same initial weights every time
    model = build_model(arch, encoder, classes=len(data.class_names))
    if kill_in is not None:
        model.register_forward_hook(kill_in_epoch(kill_in, data, settings))
    result = train_model(model, data, settings, CPU, resume_path=resume_path, on_epoch=on_epoch)
    return model, result


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def saved_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """A 2-epoch run whose resume file keeps the last epoch's full state for comparison."""
    path = tmp_path_factory.mktemp("full") / "state.pt"
    calls = []
    model, result = train(data, resume_path=path, on_epoch=calls.append)
    return model, result, saved_state(path), calls


def test_two_epochs(data, uninterrupted):
    model, result, last, calls = uninterrupted
    assert [record["epoch"] for record in result.history] == [1, 2]
    assert [record["epoch"] for record in calls] == [1, 2]
    losses = [record["train_loss"] for record in result.history]
    assert all(math.isfinite(loss) for loss in losses) and losses[1] < losses[0]
    assert [record["lr"] for record in result.history] == pytest.approx(
        [SETTINGS.lr, SETTINGS.min_lr + (SETTINGS.lr - SETTINGS.min_lr) / 2])
    dice = [record["val_dice"] for record in result.history]
    assert all(0 <= d <= 1 for d in dice)
    assert result.best_epoch in (1, 2)
    assert result.best_dice == max(dice) == dice[result.best_epoch - 1]
    # the model ends with the best epoch's weights
    assert states_equal(model.state_dict(), result.best_state)
    val_images, val_masks = data.split("val")
    scores = summarize(predict_masks(model, val_images, 8, CPU), val_masks, list(data.class_names))
    assert scores["dice"] == result.best_dice
    assert last["epoch"] == 2 and last["fingerprint"] == SETTINGS.fingerprint()
    if result.best_epoch == 1:
        assert not states_equal(last["model"], result.best_state)


def test_training_is_reproducible(data, uninterrupted):
    _, reference, reference_last, _ = uninterrupted
    model, result = train(data)
    assert states_equal(model.state_dict(), reference.best_state)
    assert without_seconds(result.history) == without_seconds(reference.history)


def kill_in_epoch(epoch: int, data: SliceDataset, settings: TrainingSettings):
    """A forward hook that stops training at the first training batch of ``epoch``."""
    batches = math.ceil(int((~data.is_val).sum()) / settings.batch_size)
    seen = [0]

    def hook(module, inputs, output):
        if module.training:
            seen[0] += 1
            if seen[0] == (epoch - 1) * batches + 1:
                raise Interrupted

    return hook


def interrupt_at(epoch: int):
    def on_epoch(record: dict) -> None:
        if record["epoch"] == epoch:
            raise Interrupted

    return on_epoch


def check_resumed(data, path, uninterrupted):
    _, reference, reference_last, _ = uninterrupted
    calls = []
    model, result = train(data, resume_path=path, on_epoch=calls.append)
    assert [record["epoch"] for record in calls] == [2]  # only the remaining epoch ran
    assert [record["epoch"] for record in result.history] == [1, 2]
    assert without_seconds(result.history) == without_seconds(reference.history)
    assert result.best_epoch == reference.best_epoch and result.best_dice == reference.best_dice
    # on the CPU with one thread the runs are bit-for-bit reproducible, so compare exactly
    assert states_equal(saved_state(path)["model"], reference_last["model"])
    assert states_equal(model.state_dict(), reference.best_state)


def test_resume_after_a_kill_during_epoch_two(data, tmp_path, uninterrupted):
    path = tmp_path / "state.pt"
    calls = []
    with pytest.raises(Interrupted):  # epoch 1 done and saved, then killed in epoch 2
        train(data, resume_path=path, on_epoch=calls.append, kill_in=2)
    assert [record["epoch"] for record in calls] == [1]
    assert saved_state(path)["epoch"] == 1
    check_resumed(data, path, uninterrupted)


def test_resume_after_the_epoch_callback_fails(data, tmp_path, uninterrupted):
    path = tmp_path / "state.pt"
    with pytest.raises(Interrupted):
        train(data, resume_path=path, on_epoch=interrupt_at(1))
    check_resumed(data, path, uninterrupted)


def test_resume_reproduces_dropout(data, tmp_path):
    full_path, path = tmp_path / "full.pt", tmp_path / "state.pt"
    train(data, resume_path=full_path, arch="FPN", encoder="mobilenet_v2")
    with pytest.raises(Interrupted):
        train(data, resume_path=path, arch="FPN", encoder="mobilenet_v2", kill_in=2)
    train(data, resume_path=path, arch="FPN", encoder="mobilenet_v2")
    assert states_equal(saved_state(path)["model"], saved_state(full_path)["model"])


def test_resume_file_from_other_settings_is_ignored(data, tmp_path):
    path = tmp_path / "state.pt"
    other = dataclasses.replace(SETTINGS, epochs=1, lr=5e-4)
    train(data, settings=other, resume_path=path)
    assert saved_state(path)["fingerprint"] == other.fingerprint()
    calls = []
    _, result = train(data, resume_path=path, on_epoch=calls.append)
    assert [record["epoch"] for record in calls] == [1, 2]
    assert [record["epoch"] for record in result.history] == [1, 2]
    assert saved_state(path)["fingerprint"] == SETTINGS.fingerprint()


def test_fingerprint_changes_with_every_setting():
    base = TrainingSettings()
    assert base.fingerprint() == TrainingSettings().fingerprint()
    def other(value):  # a different value of the same type
        if isinstance(value, bool):
            return not value
        if isinstance(value, (int, float)):
            return value * 2 + 1
        return "bce" if value != "bce" else "dice"

    changed = {field.name: other(getattr(base, field.name)) for field in dataclasses.fields(TrainingSettings)}
    assert len(changed) >= 9
    prints = {base.fingerprint()}
    for name, value in changed.items():
        prints.add(dataclasses.replace(base, **{name: value}).fingerprint())
    assert len(prints) == len(changed) + 1


def test_augment_keeps_images_and_masks_aligned():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(16, 8, 8, generator=generator)
    masks = (images > 0.5).to(torch.uint8).unsqueeze(1).repeat(1, 2, 1, 1)
    out_images, out_masks = augment(images, masks, generator)
    assert out_images.shape == images.shape and out_masks.shape == masks.shape
    assert out_images.min() >= 0 and out_images.max() <= 1
    assert torch.equal(out_masks[:, 0], out_masks[:, 1])
    # geometry only moves pixels: each mask keeps its pixel count
    assert torch.equal(out_masks.sum((1, 2, 3)), masks.sum((1, 2, 3)))
    # brightness/contrast are monotone, so a mask still marks the brighter pixels of its image
    for image, mask in zip(out_images, out_masks[:, 0].bool()):
        if mask.any() and (~mask).any():
            assert image[mask].min() >= image[~mask].max()
