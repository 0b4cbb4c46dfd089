"""advseg.losses against segmentation-models-pytorch and torch, and their per-image property."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from advseg import losses

CLASSES = 3


def logits_and_masks(batch: int, seed: int = 0, size: int = 16):
    """float64 logits and uint8 masks; class 2 is absent from every mask."""
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(batch, CLASSES, size, size, generator=generator, dtype=torch.float64)
    masks = (torch.rand(batch, CLASSES, size, size, generator=generator) > 0.6).to(torch.uint8)
    masks[:, 2] = 0
    return logits, masks


def test_fixture_has_present_and_absent_classes():
    _, masks = logits_and_masks(1)
    assert masks[0, 0].any() and masks[0, 1].any() and not masks[0, 2].any()


def test_dice_equals_smp_dice_loss_for_one_image():
    logits, masks = logits_and_masks(1)
    expected = smp.losses.DiceLoss(mode="multilabel", from_logits=True)(logits, masks.double())
    ours = losses.dice(logits, masks)
    assert ours.shape == (1,)
    torch.testing.assert_close(ours[0], expected, rtol=1e-12, atol=1e-12)


def test_dice_of_absent_class_counts_as_zero():
    logits, masks = logits_and_masks(1)
    # only the absent class changes: the loss must not move
    shifted = logits.clone()
    shifted[:, 2] += 5.0
    torch.testing.assert_close(losses.dice(shifted, masks), losses.dice(logits, masks), rtol=0, atol=0)
    # a perfect, confident prediction of the present classes scores ~0
    perfect = (masks.double() * 2 - 1) * 50
    assert losses.dice(perfect, masks).item() == pytest.approx(0.0, abs=1e-9)


def test_focal_equals_smp_focal_loss_for_one_image():
    logits, masks = logits_and_masks(1)
    expected = smp.losses.FocalLoss(mode="multilabel")(logits, masks.double())
    torch.testing.assert_close(losses.focal(logits, masks)[0], expected, rtol=1e-12, atol=1e-12)


def test_focal_matches_the_focal_formula():
    """Independent of smp: the mean over pixels of (1 - p_t)^2 * -log p_t, for one class."""
    logits, masks = logits_and_masks(2)
    logits, masks = logits[:, :1], masks[:, :1]
    p = logits.sigmoid()
    y = masks.double()
    p_t = p * y + (1 - p) * (1 - y)
    expected = ((1 - p_t) ** 2 * -torch.log(p_t)).flatten(1).mean(1)
    torch.testing.assert_close(losses.focal(logits, masks), expected, rtol=1e-10, atol=1e-12)


def test_bce_equals_torch_bce_with_logits_mean_for_one_image():
    logits, masks = logits_and_masks(1)
    expected = torch.nn.BCEWithLogitsLoss()(logits, masks.double())
    torch.testing.assert_close(losses.bce(logits, masks)[0], expected, rtol=1e-12, atol=1e-12)


def test_dice_focal_is_dice_plus_focal():
    logits, masks = logits_and_masks(3)
    expected = losses.dice(logits, masks) + losses.focal(logits, masks)
    assert torch.equal(losses.dice_focal(logits, masks), expected)
    assert losses.get_loss("dicefocal") is losses.dice_focal


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_batch_loss_is_the_stack_of_each_images_loss(name):
    loss = losses.get_loss(name)
    logits, masks = logits_and_masks(4, seed=1)
    masks[3] = 0  # an image with no foreground at all
    masks[1, 1] = 0  # a class absent in one image only
    batch = loss(logits, masks)
    assert batch.shape == (4,)
    alone = torch.stack([loss(logits[i:i + 1], masks[i:i + 1])[0] for i in range(4)])
    torch.testing.assert_close(batch, alone, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(batch).all()
    # the images differ, so the per-image values must too (not one pooled value repeated)
    assert len(torch.unique(batch)) == 4


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_float32_logits_with_uint8_masks(name):
    logits, masks = logits_and_masks(2)
    ours = losses.get_loss(name)(logits.float(), masks)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), losses.get_loss(name)(logits, masks), rtol=1e-5, atol=1e-6)


def test_bce_uses_mean_over_pixels_and_classes():
    logits, masks = logits_and_masks(2)
    expected = F.binary_cross_entropy_with_logits(logits, masks.double(), reduction="none").mean((1, 2, 3))
    torch.testing.assert_close(losses.bce(logits, masks), expected, rtol=1e-12, atol=1e-12)


def test_get_loss_unknown_name_lists_choices():
    with pytest.raises(ValueError) as error:
        losses.get_loss("hinge")
    message = str(error.value)
    assert "'hinge'" in message
    for name in ("bce", "dice", "focal", "dicefocal"):
        assert name in message


def test_get_loss_known_names():
    for name, function in losses.LOSSES.items():
        assert losses.get_loss(name) is function
