"""Training on a tiny learnable prepared dataset: streamed batches, the inner validation
split, the best epoch, the last batch of one slice, and resuming after a kill."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from advseg.datasets import SliceDataset, open_fold, write_prepared
from advseg.inference import predict_masks
from advseg.metrics import summarize
from advseg.models import as_model_input, build_model
from advseg.settings import from_mapping
from advseg.training import (ResumeFile, TrainingSettings, augment, plan_batches, restore_scaler,
                             resume_fingerprint, train_model)

pytestmark = pytest.mark.slow  # real training runs of tiny models

torch.set_num_threads(1)
CPU = torch.device("cpu")
SETTINGS = from_mapping(TrainingSettings, {"epochs": 2, "batch_size": 8, "lr": 1e-3, "augment": True, "amp": False},
                        "training", seed=0)
ARCH, ENCODER = "Unet", "mobilenet_v2"  # small, and without dropout
FOLDS = 4  # 8 groups of 4 slices: 2 groups held out, 2 inner-validation groups, 4 training groups


class Interrupted(Exception):
    pass


def blobs(n: int = 32, size: int = 32) -> SliceDataset:
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
    # each slice its own scan: the guard band has nothing to drop
    return SliceDataset(images, masks, np.arange(n) // 4, np.arange(n), np.zeros(n, np.int64), ("core", "rim"), "blob")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("data") / "blobs"
    write_prepared(directory, blobs(), folds=FOLDS, folds_to_run=[0, 1], guard=2)
    return directory


@pytest.fixture(scope="module")
def data(prepared):
    fold = open_fold(prepared, 0)
    assert fold.sizes() == {"train": 16, "inner_val": 8, "val": 8}
    return fold


def fingerprint(data, settings=SETTINGS, arch=ARCH, encoder=ENCODER) -> str:
    return resume_fingerprint(settings, data, arch, encoder)


def train(data, settings=SETTINGS, resume_path=None, on_epoch=None, arch=ARCH, encoder=ENCODER, kill_in=None):
    torch.manual_seed(123)  # the same initial weights every time
    model = build_model(arch, encoder, classes=len(data.class_names))
    if kill_in is not None:
        model.register_forward_hook(kill_in_epoch(kill_in, data, settings))
    resume = None if resume_path is None else ResumeFile.open(resume_path, fingerprint(data, settings, arch, encoder))
    result = train_model(model, data, settings, CPU, resume=resume, on_epoch=on_epoch)
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


def test_two_epochs_pick_the_best_on_the_inner_validation_slices(data, uninterrupted):
    model, result, last, calls = uninterrupted
    assert [record["epoch"] for record in result.history] == [1, 2]
    assert [record["epoch"] for record in calls] == [1, 2]
    losses = [record["train_loss"] for record in result.history]
    assert all(math.isfinite(loss) for loss in losses) and losses[1] < losses[0]
    assert [record["lr"] for record in result.history] == pytest.approx(
        [SETTINGS.lr, SETTINGS.min_lr + (SETTINGS.lr - SETTINGS.min_lr) / 2])
    dice = [record["inner_val_dice"] for record in result.history]
    assert all(0 <= d <= 1 for d in dice)
    assert result.best_inner_val_dice == max(dice) == dice[result.best_epoch - 1]
    # the model ends with the best epoch's weights, and the score is the inner validation one
    assert states_equal(model.state_dict(), result.best_state)
    inner_images, inner_masks = data.inner_val_slices()
    scores = summarize(predict_masks(model, inner_images, 8, CPU), inner_masks, list(data.class_names))
    assert scores["dice"] == result.best_inner_val_dice
    assert last["epoch"] == 2 and last["fingerprint"] == fingerprint(data)
    if result.best_epoch == 1:
        assert not states_equal(last["model"], result.best_state)


class Unreadable:
    """Stands in for the held-out slices: training must never touch them."""

    def __getattr__(self, name):
        raise AssertionError(f"training read the held-out slices ({name})")

    def __len__(self):
        raise AssertionError("training read the held-out slices")

    def __array__(self, *args, **kwargs):
        raise AssertionError("training read the held-out slices")


def test_training_streams_batches_and_never_reads_the_held_out_slices(data, uninterrupted, monkeypatch):
    blind = dataclasses.replace(data, val_image_rows=Unreadable(), val_mask_rows=Unreadable())
    reads = []
    real_read = type(data.data.image_rows).read

    def recording_read(self, rows):
        if self is data.data.image_rows:
            reads.append(np.asarray(rows).copy())
        return real_read(self, rows)

    monkeypatch.setattr(type(data.data.image_rows), "read", recording_read)
    model, result = train(blind)
    held_out, inner, training = set(data.val.tolist()), set(data.inner_val.tolist()), set(data.train.tolist())
    read_rows = set(np.concatenate(reads).tolist())
    assert not read_rows & held_out
    assert reads[0].tolist() == data.inner_val.tolist()  # read once, at the start
    batches = reads[1:]
    assert len(batches) == 2 * len(plan_batches(16, SETTINGS.batch_size))  # one read per batch, no more
    assert all(len(rows) <= SETTINGS.batch_size and set(rows.tolist()) <= training for rows in batches)
    for epoch in (0, 1):  # every training slice once per epoch
        assert sorted(np.concatenate(batches[2 * epoch:2 * epoch + 2]).tolist()) == sorted(training)
    assert not inner & set(np.concatenate(batches).tolist())
    assert states_equal(model.state_dict(), uninterrupted[1].best_state)  # same training as with the fold


def test_training_is_reproducible(data, uninterrupted):
    _, reference, _, _ = uninterrupted
    model, result = train(data)
    assert states_equal(model.state_dict(), reference.best_state)
    assert without_seconds(result.history) == without_seconds(reference.history)


# --- the last batch of one slice ----------------------------------------------------------


@pytest.mark.parametrize("n, batch_size, sizes", [
    (16, 5, [5, 5, 6]),      # 5, 5, 5, 1: the one joins the batch before
    (16, 8, [8, 8]),
    (17, 8, [8, 9]),
    (9, 8, [9]),
    (2, 8, [2]),
    (16, 15, [16]),
    (13, 4, [4, 4, 5]),
])
def test_plan_batches(n, batch_size, sizes):
    batches = plan_batches(n, batch_size)
    assert [b.stop - b.start for b in batches] == sizes
    assert batches[0].start == 0 and batches[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(batches, batches[1:]))


def test_plan_batches_refuses_a_single_slice():
    with pytest.raises(ValueError, match="1 training slice"):
        plan_batches(1, 8)


def test_a_batch_of_one_slice_breaks_pooled_batchnorm():
    """Why the batch plan merges: PSPNet/DeepLabV3 fail in train mode on one slice."""
    model = build_model("DeepLabV3", "resnet18", classes=2).train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model(as_model_input(torch.rand(1, 32, 32)))


@pytest.mark.parametrize("arch", ["DeepLabV3", "DeepLabV3Plus", "PSPNet"])
def test_pooled_batchnorm_architectures_train_when_one_slice_is_left_over(data, arch):
    settings = dataclasses.replace(SETTINGS, epochs=1, batch_size=5, augment=False)  # 16 = 5 + 5 + 5 + 1
    assert len(data.train) % settings.batch_size == 1
    _, result = train(data, settings=settings, arch=arch, encoder="resnet18")
    assert math.isfinite(result.history[0]["train_loss"])


# --- resuming -------------------------------------------------------------------------------


def kill_in_epoch(epoch: int, data, settings: TrainingSettings):
    """A forward hook that stops training at the first training batch of ``epoch``."""
    batches = len(plan_batches(len(data.train), settings.batch_size))
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
    assert result.best_epoch == reference.best_epoch
    assert result.best_inner_val_dice == reference.best_inner_val_dice
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


def test_the_resume_file_is_read_once(data, tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    with pytest.raises(Interrupted):
        train(data, resume_path=path, on_epoch=interrupt_at(1))
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(args[0]) or real_load(*args, **kwargs))
    resume = ResumeFile.open(path, fingerprint(data))
    assert resume.state["epoch"] == 1 and len(loads) == 1
    torch.manual_seed(123)
    train_model(build_model(ARCH, ENCODER, classes=2), data, SETTINGS, CPU, resume=resume)
    assert len(loads) == 1


def started_over(data, path, caplog, **changes) -> bool:
    """Train with ``changes`` on a file saved by the default training; whether it started over."""
    settings = dataclasses.replace(SETTINGS, **changes.pop("settings", {}))
    calls = []
    with caplog.at_level(logging.WARNING, logger="advseg.training"):
        train(data if "data" not in changes else changes.pop("data"), settings=settings, resume_path=path,
              on_epoch=calls.append, **changes)
    return [record["epoch"] for record in calls] == list(range(1, settings.epochs + 1))


@pytest.fixture
def half_done(data, tmp_path) -> Path:
    path = tmp_path / "state.pt"
    with pytest.raises(Interrupted):
        train(data, resume_path=path, on_epoch=interrupt_at(1))
    return path


def test_resume_state_from_another_fold_is_refused(prepared, half_done, caplog):
    other_fold = open_fold(prepared, 1)
    assert started_over(other_fold, half_done, caplog)
    assert "starting over" in caplog.text and str(half_done) in caplog.text
    assert saved_state(half_done)["fingerprint"] == fingerprint(other_fold)


def test_resume_state_from_other_settings_is_refused(data, half_done, caplog):
    assert started_over(data, half_done, caplog, settings={"lr": 5e-4})


def test_resume_state_from_another_model_is_refused(data, half_done, caplog):
    assert started_over(data, half_done, caplog, arch="FPN")


def test_resume_state_with_the_same_fingerprint_is_used(data, half_done, caplog):
    assert not started_over(data, half_done, caplog)


def test_a_corrupt_resume_file_starts_over(data, tmp_path, caplog):
    path = tmp_path / "state.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    assert started_over(data, path, caplog)
    assert "unreadable resume state" in caplog.text
    assert saved_state(path)["epoch"] == 2


def test_a_resume_state_lacking_keys_starts_over(data, tmp_path, caplog):
    path = tmp_path / "state.pt"
    torch.save({"fingerprint": fingerprint(data), "epoch": 1}, path)
    assert started_over(data, path, caplog)
    assert "lacks device, model" in caplog.text


def test_resume_fingerprint_covers_settings_data_model_classes_precision(prepared, data):
    base = fingerprint(data)
    assert base == fingerprint(open_fold(prepared, 0))
    others = {
        fingerprint(open_fold(prepared, 1)),                                 # other slices / split
        fingerprint(data, settings=dataclasses.replace(SETTINGS, seed=1)),   # other settings
        fingerprint(data, settings=dataclasses.replace(SETTINGS, amp=True)),  # other precision
        fingerprint(data, arch="FPN"),
        fingerprint(data, encoder="resnet18"),
        resume_fingerprint(SETTINGS, dataclasses.replace(data, data=RenamedClasses(data.data)), ARCH, ENCODER),
    }
    assert base not in others and len(others) == 6


class RenamedClasses:
    """The same prepared data with other class names."""

    def __init__(self, data):
        self._data = data

    def __getattr__(self, name):
        return getattr(self._data, name)

    @property
    def class_names(self):
        return ("core", "edge")


def test_resume_fingerprint_changes_with_every_setting(data):
    base = SETTINGS

    def other(value):  # a different value of the same type
        if isinstance(value, bool):
            return not value
        if isinstance(value, (int, float)):
            return value * 2 + 1
        return "bce" if value != "bce" else "dice"

    changed = {field.name: other(getattr(base, field.name)) for field in dataclasses.fields(TrainingSettings)}
    assert len(changed) >= 9
    prints = {fingerprint(data, base)}
    for name, value in changed.items():
        prints.add(fingerprint(data, dataclasses.replace(base, **{name: value})))
    assert len(prints) == len(changed) + 1


def test_grad_scaler_states_cross_precisions():
    """A state saved without mixed precision (CPU) resumes with it (CUDA), and vice versa."""
    enabled_state = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0).state_dict()
    disabled_state = torch.amp.GradScaler("cpu", enabled=False).state_dict()
    assert disabled_state == {}
    with pytest.raises(RuntimeError):  # what restore_scaler guards against
        torch.amp.GradScaler("cpu", enabled=True).load_state_dict(disabled_state)
    fresh = torch.amp.GradScaler("cpu", enabled=True)
    restore_scaler(fresh, disabled_state)
    assert fresh.is_enabled() and fresh.get_scale() == 65536.0  # a fresh loss scale
    off = torch.amp.GradScaler("cpu", enabled=False)
    restore_scaler(off, enabled_state)
    assert not off.is_enabled()
    same = torch.amp.GradScaler("cpu", enabled=True)
    restore_scaler(same, enabled_state)
    assert same.get_scale() == 1024.0


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
