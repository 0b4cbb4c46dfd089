"""advseg.losses against MONAI, segmentation-models-pytorch, torch and hand arithmetic.

advseg.losses writes MONAI's losses out instead of importing MONAI; here MONAI is the
reference for their values and gradients.

Also the properties the attacks rely on: one value per image that does not depend on the
other images of the batch, and a gradient through either argument (the study's swapped
call ``loss(mask, logits)``).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import monai
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from advseg import losses

CLASSES = 3
S = 1e-5  # MONAI's smoothing, in the hand computations


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


# --- one image: the library's own batch-reduced value -------------------------------------

def _smp_dice(logits, masks):
    return smp.losses.DiceLoss(mode="multilabel", from_logits=True)(logits, masks)


def _smp_focal(logits, masks):
    return smp.losses.FocalLoss(mode="multilabel")(logits, masks)


REFERENCES = {
    # MONAI with nothing but sigmoid=True: its defaults are the study's settings
    "dice": (lambda x, y: monai.losses.DiceLoss(sigmoid=True)(x, y), 1e-12),
    "focal": (lambda x, y: monai.losses.FocalLoss()(x, y), 1e-6),       # MONAI computes it in float32
    "dicefocal": (lambda x, y: monai.losses.DiceFocalLoss(sigmoid=True)(x, y), 1e-6),
    "bce": (lambda x, y: torch.nn.BCEWithLogitsLoss()(x, y), 1e-12),
    "dice_present": (_smp_dice, 1e-12),
    "dicefocal_present": (lambda x, y: _smp_dice(x, y) + _smp_focal(x, y), 1e-6),
}


def test_every_loss_has_a_reference():
    assert set(REFERENCES) == set(losses.LOSSES)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_one_image_equals_the_library_loss(name):
    reference, tolerance = REFERENCES[name]
    logits, masks = logits_and_masks(1)
    ours = losses.get_loss(name)(logits, masks)
    assert ours.shape == (1,)
    expected = reference(logits, masks.double())
    torch.testing.assert_close(ours[0].double(), expected.double(), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("name", ["dice", "focal", "dicefocal"])
def test_batch_mean_equals_monai_mean_reduction(name):
    """MONAI's reduction="mean" over a batch of equal-sized images is the mean of ours."""
    reference, tolerance = REFERENCES[name]
    logits, masks = logits_and_masks(3, seed=2)
    ours = losses.get_loss(name)(logits, masks).mean()
    torch.testing.assert_close(ours.double(), reference(logits, masks.double()).double(),
                               rtol=tolerance, atol=tolerance)


# --- hand arithmetic on a 1x2 image with 2 classes -----------------------------------------

def tiny(absent_class_logit: float):
    """Class 0: truth [1, 0], p = [0.5, 0.5]. Class 1: absent from the truth, both pixels at one logit."""
    logits = torch.tensor([[[[0.0, 0.0]], [[absent_class_logit] * 2]]], dtype=torch.float64)
    masks = torch.tensor([[[[1, 0]], [[0, 0]]]], dtype=torch.uint8)
    return logits, masks


def test_hand_values_with_a_predicted_absent_class():
    logits, masks = tiny(math.log(3))  # p = 0.75 on both pixels of the absent class
    dice_0 = 1 - (2 * 0.5 + S) / (0.5 + 0.5 + 1 + S)         # tp 0.5, sum p 1, sum truth 1
    dice_1 = 1 - (0 + S) / (0.75 + 0.75 + 0 + S)             # nothing to find, 1.5 predicted
    focal = (0.5 ** 2 * math.log(2) * 2                      # class 0: p_t = 0.5 on both pixels
             + 0.75 ** 2 * math.log(4) * 2) / 4              # class 1: p_t = 1 - 0.75 = 0.25
    bce = (math.log(2) * 2 + math.log(4) * 2) / 4
    smp_dice_0 = 1 - 2 * 0.5 / (1 + 1)                       # no smoothing; absent class 1 counts 0
    expected = {
        "dice": (dice_0 + dice_1) / 2,
        "focal": focal,
        "dicefocal": (dice_0 + dice_1) / 2 + focal,
        "bce": bce,
        "dice_present": (smp_dice_0 + 0) / 2,
        "dicefocal_present": (smp_dice_0 + 0) / 2 + focal,
    }
    for name, value in expected.items():
        assert losses.get_loss(name)(logits, masks).item() == pytest.approx(value, rel=1e-6), name


def test_predicting_an_absent_class_is_penalised_only_by_the_monai_dice():
    dice_0 = 1 - (2 * 0.5 + S) / (2 + S)
    confident_absent, confident_present = tiny(-30.0), tiny(30.0)
    # p = sigmoid(-30) ~ 9.4e-14 per pixel: the absent class scores 1 - S / (1.9e-13 + S) ~ 0
    assert losses.dice(*confident_absent).item() == pytest.approx(dice_0 / 2, abs=1e-7)
    # p ~ 1 on both pixels: the absent class scores 1 - S / (2 + S) ~ 1
    assert losses.dice(*confident_present).item() == pytest.approx((dice_0 + 1) / 2, abs=1e-5)
    # smp semantics: the absent class is ignored whatever is predicted
    assert losses.dice_present(*confident_absent).item() == 0.25
    assert losses.dice_present(*confident_present).item() == 0.25
    gap = losses.dicefocal(*confident_present) - losses.dicefocal(*confident_absent)
    gap_present = losses.dicefocal_present(*confident_present) - losses.dicefocal_present(*confident_absent)
    assert gap.item() > gap_present.item() + 0.49  # the Dice term adds ~0.5 on top of the focal term


def test_an_absent_class_at_small_probability_is_still_penalised():
    """The study's smoothing is tiny: p = sigmoid(-10) = 4.54e-5 per pixel already costs ~0.9."""
    logits, masks = tiny(-10.0)
    p = 1 / (1 + math.exp(10))
    dice_0 = 1 - (2 * 0.5 + S) / (2 + S)
    dice_1 = 1 - S / (2 * p + S)
    assert dice_1 == pytest.approx(0.9008, abs=1e-4)
    assert losses.dice(logits, masks).item() == pytest.approx((dice_0 + dice_1) / 2, rel=1e-9)


# --- batch independence --------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_batch_loss_is_the_stack_of_each_images_loss(name):
    loss = losses.get_loss(name)
    logits, masks = logits_and_masks(4, seed=1)
    masks[3] = 0  # an image with no foreground at all
    masks[1, 1] = 0  # a class absent in one image only
    batch = loss(logits, masks)
    assert batch.shape == (4,)
    alone = torch.stack([loss(logits[i:i + 1], masks[i:i + 1])[0] for i in range(4)])
    torch.testing.assert_close(batch, alone, rtol=1e-6, atol=1e-7)
    assert torch.isfinite(batch).all()
    # the images differ, so the per-image values must too (not one pooled value repeated)
    assert len(torch.unique(batch)) == 4


# --- the study's swapped call: loss(mask, logits) -----------------------------------------

MONAI = {
    "dice": monai.losses.DiceLoss(sigmoid=True),
    "focal": monai.losses.FocalLoss(),
    "dicefocal": monai.losses.DiceFocalLoss(sigmoid=True),
}


def random_case(shape, dtype, seed, masks_are="random"):
    """Logits and masks of ``shape``; masks random (last class absent when there are 2+), or all empty."""
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(shape, generator=generator, dtype=torch.float64)
    masks = (torch.rand(shape, generator=generator, dtype=torch.float64) > 0.5).double()
    if masks_are == "empty":
        masks.zero_()
    elif shape[1] > 1:
        masks[:, -1] = 0
    return logits.to(dtype), masks.to(dtype)


CASES = {
    "2x3x16x16": ((2, 3, 16, 16), torch.float64, "random"),
    "3x2x7x5 float32": ((3, 2, 7, 5), torch.float32, "random"),
    "1x1x1x1": ((1, 1, 1, 1), torch.float64, "random"),
    "4x3x1x1": ((4, 3, 1, 1), torch.float64, "random"),
    "2x3x9x9 empty": ((2, 3, 9, 9), torch.float64, "empty"),
    "2x2x8x8 float32 empty": ((2, 2, 8, 8), torch.float32, "empty"),
}


@pytest.mark.parametrize("swapped", [False, True], ids=["loss(logits,mask)", "loss(mask,logits)"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", sorted(MONAI))
def test_values_and_gradients_equal_monai_per_image(name, case, swapped):
    """Each image's value is MONAI's batch-reduced loss of that image alone; so are the gradients
    with respect to both arguments, in the standard and the study's swapped argument order."""
    shape, dtype, masks_are = CASES[case]
    logits, masks = random_case(shape, dtype, seed=sorted(CASES).index(case), masks_are=masks_are)
    arguments = (masks, logits) if swapped else (logits, masks)
    ours_in = [a.clone().requires_grad_(True) for a in arguments]
    monai_in = [a.clone().requires_grad_(True) for a in arguments]
    ours = losses.get_loss(name)(*ours_in)
    reference = torch.stack([MONAI[name](monai_in[0][i:i + 1], monai_in[1][i:i + 1]) for i in range(shape[0])])
    assert ours.shape == (shape[0],) and ours.dtype == reference.dtype  # MONAI's focal is float32
    torch.testing.assert_close(ours.double(), reference.double(), rtol=1e-6, atol=1e-7)
    ours_grads = torch.autograd.grad(ours.sum(), ours_in)
    monai_grads = torch.autograd.grad(reference.sum(), monai_in)
    for ours_grad, monai_grad in zip(ours_grads, monai_grads):
        assert ours_grad.dtype == dtype and torch.isfinite(ours_grad).all()
        torch.testing.assert_close(ours_grad, monai_grad, rtol=1e-6, atol=1e-9)


def test_losses_do_not_import_monai():
    """``import monai`` costs seconds of CPU in every workflow process."""
    code = ("import sys, torch, advseg.losses as L\n"
            "x, y = torch.randn(2, 3, 4, 4), (torch.rand(2, 3, 4, 4) > 0.5).float()\n"
            "[loss(x, y) for loss in L.LOSSES.values()]\n"
            "print('monai' in sys.modules)")
    src = str(Path(losses.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_every_loss_has_a_gradient_through_the_target(name):
    logits, masks = logits_and_masks(2, seed=5)
    logits.requires_grad_(True)
    value = losses.get_loss(name)(masks.float(), logits)
    (grad,) = torch.autograd.grad(value.sum(), logits)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # per image: image 0's loss does not reach image 1's logits
    (grad_0,) = torch.autograd.grad(losses.get_loss(name)(masks.float(), logits)[0], logits)
    assert grad_0[1].abs().sum() == 0 and grad_0[0].abs().sum() > 0


# --- dtypes and bad input ------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_float32_logits_with_uint8_masks(name):
    logits, masks = logits_and_masks(2)
    ours = losses.get_loss(name)(logits.float(), masks)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), losses.get_loss(name)(logits, masks).double(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_half_precision_logits_are_computed_in_float32(name):
    """A 224x224 Dice sum overflows float16 (max 65504 is 1.3 images of ones)."""
    masks = torch.ones(1, 3, 224, 224, dtype=torch.uint8)
    logits = torch.full((1, 3, 224, 224), 4.0, dtype=torch.float16)
    value = losses.get_loss(name)(logits, masks)
    assert value.dtype == torch.float32 and torch.isfinite(value).all()
    torch.testing.assert_close(value, losses.get_loss(name)(logits.float(), masks))


def test_bce_uses_mean_over_pixels_and_classes():
    logits, masks = logits_and_masks(2)
    expected = F.binary_cross_entropy_with_logits(logits, masks.double(), reduction="none").mean((1, 2, 3))
    torch.testing.assert_close(losses.bce(logits, masks), expected, rtol=1e-12, atol=1e-12)


def test_shape_mismatch_is_an_error():
    logits, masks = logits_and_masks(2)
    with pytest.raises(ValueError, match="same"):
        losses.dicefocal(logits, masks[:, :2])


def test_get_loss_unknown_name_lists_choices():
    with pytest.raises(ValueError) as error:
        losses.get_loss("hinge")
    message = str(error.value)
    assert "'hinge'" in message
    for name in ("bce", "dice", "focal", "dicefocal", "dice_present", "dicefocal_present"):
        assert name in message


def test_get_loss_known_names():
    assert set(losses.LOSSES) == {"bce", "dice", "focal", "dicefocal", "dice_present", "dicefocal_present"}
    for name, function in losses.LOSSES.items():
        assert losses.get_loss(name) is function
