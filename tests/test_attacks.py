"""FGSM: the step, the gradient sign, the shared-gradient sweep and batch-size invariance."""

from __future__ import annotations

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from advseg.attacks import fgsm, gradient_sign, perturbation_size
from advseg.losses import get_loss
from advseg.models import build_model

torch.set_num_threads(1)
SIZE = 32
CLASSES = 3


def batch(n: int, seed: int = 0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, SIZE, SIZE, generator=generator).to(dtype)
    masks = (torch.rand(n, CLASSES, SIZE, SIZE, generator=generator) > 0.5).to(torch.uint8)
    masks[:, 2] = 0  # a class absent from the truth
    return images, masks


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("Unet", "resnet18", CLASSES).eval()


@pytest.fixture(scope="module")
def model64():
    torch.manual_seed(1)
    return build_model("Unet", "resnet18", CLASSES).eval().double()


def independent_sign(model, images, masks, loss_name):
    """sign(d loss / d image) with plain autograd and no advseg helpers."""
    x = images.detach().clone().requires_grad_(True)
    logits = model(x.unsqueeze(1).repeat(1, 3, 1, 1))
    target = masks.to(logits.dtype)
    if loss_name == "bce":  # per-image mean, summed over images: a positive multiple of the total sum
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
    elif loss_name == "dice":  # smp's DiceLoss pools the batch, so take it one image at a time
        dice = smp.losses.DiceLoss(mode="multilabel", from_logits=True)
        loss = sum(dice(logits[i:i + 1], target[i:i + 1]) for i in range(len(x)))
    else:  # an advseg loss, summed over images as an attack does
        loss = get_loss(loss_name)(logits, masks).sum()
    (grad,) = torch.autograd.grad(loss, x)
    return grad


# --- fgsm -------------------------------------------------------------------------------


def test_fgsm_moves_each_pixel_by_eps_unless_clamped():
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(2, SIZE, SIZE, generator=generator)
    images[0, 0, :4] = torch.tensor([0.0, 1.0, 0.004, 0.997])  # pixels at and near the bounds
    sign = torch.randint(-1, 2, images.shape, generator=generator, dtype=torch.int8)
    sign[0, 0, :4] = torch.tensor([-1, 1, -1, 1], dtype=torch.int8)  # pushed out of [0, 1]
    eps = 0.01
    adv = fgsm(images, sign, eps)
    assert adv.dtype == images.dtype and adv.shape == images.shape
    target = images.double() + eps * sign.double()
    clamped_low, clamped_high = target < 0, target > 1
    free = ~(clamped_low | clamped_high)
    assert clamped_low.sum() >= 2 and clamped_high.sum() >= 2 and free.sum() > 1000
    torch.testing.assert_close((adv - images)[free], eps * sign.float()[free], rtol=0, atol=1e-7)
    assert (adv[clamped_low] == 0.0).all()
    assert (adv[clamped_high] == 1.0).all()
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert torch.equal(adv[sign == 0], images[sign == 0])
    assert (adv - images).abs().max() <= eps + 1e-7


def test_fgsm_with_zero_eps_is_identity():
    images, _ = batch(2)
    sign = torch.ones_like(images, dtype=torch.int8)
    assert torch.equal(fgsm(images, sign, 0.0), images)


# --- gradient_sign ----------------------------------------------------------------------


@pytest.mark.parametrize("loss_name", ["bce", "dice"])
def test_gradient_sign_matches_autograd(model, loss_name):
    images, masks = batch(2, seed=4)
    sign, logits = gradient_sign(model, images, masks, get_loss(loss_name))
    grad = independent_sign(model, images, masks, loss_name)
    assert sign.dtype == torch.int8 and sign.shape == images.shape
    # compare where the gradient is not vanishingly small (a rounding-level difference between
    # two summation orders could flip the sign of a ~0 gradient)
    clear = grad.abs() > 1e-9 * grad.abs().max()
    assert clear.float().mean() > 0.99
    assert torch.equal(sign[clear], grad.sign().to(torch.int8)[clear])
    with torch.no_grad():
        expected_logits = model(images.unsqueeze(1).repeat(1, 3, 1, 1))
    torch.testing.assert_close(logits, expected_logits)
    assert not logits.requires_grad


def test_gradient_sign_leaves_model_and_images_alone(model):
    images, masks = batch(2, seed=5)
    before = images.clone()
    for parameter in model.parameters():
        parameter.grad = None
    gradient_sign(model, images, masks, get_loss("dicefocal"))
    assert all(parameter.grad is None for parameter in model.parameters())
    assert not images.requires_grad and torch.equal(images, before)
    assert not model.training


def test_shared_gradient_sweep_equals_per_eps_recomputation(model):
    images, masks = batch(3, seed=6)
    shared, _ = gradient_sign(model, images, masks, get_loss("dicefocal"))
    previous = None
    for eps in (0.002, 0.01, 0.05):
        grad = independent_sign(model, images, masks, "dicefocal")  # from scratch for this eps
        expected = (images + eps * grad.sign()).clamp(0.0, 1.0)
        adv = fgsm(images, shared, eps)
        assert torch.equal(adv, expected), f"eps={eps}"
        assert not torch.equal(adv, images)
        if previous is not None:
            assert not torch.equal(adv, previous)
        previous = adv


@pytest.mark.parametrize("loss_name", ["bce", "dicefocal", "dice"])
def test_gradient_sign_does_not_depend_on_batch_size(model64, loss_name):
    # float64 and eval mode (BatchNorm uses running statistics), so each image's gradient is
    # its own; with float32 these comparisons also came out exact on the CPU.
    images, masks = batch(6, seed=7, dtype=torch.float64)
    loss = get_loss(loss_name)
    whole, whole_logits = gradient_sign(model64, images, masks, loss)
    assert (whole != 0).float().mean() > 0.99
    for size in (1, 2, 3):
        parts = [gradient_sign(model64, images[i:i + size], masks[i:i + size], loss) for i in range(0, 6, size)]
        assert torch.equal(torch.cat([sign for sign, _ in parts]), whole), f"batches of {size}"
        torch.testing.assert_close(torch.cat([logits for _, logits in parts]), whole_logits,
                                   rtol=1e-12, atol=1e-12)


def test_batch_pooled_loss_would_fail_the_invariance_check(model64):
    """Control: smp's DiceLoss pools over the batch, and the comparison above catches that."""
    images, masks = batch(6, seed=7, dtype=torch.float64)
    dice = smp.losses.DiceLoss(mode="multilabel", from_logits=True)

    def pooled(logits, target):
        return dice(logits, target.to(logits.dtype)).reshape(1)

    whole, _ = gradient_sign(model64, images, masks, pooled)
    alone = torch.cat([gradient_sign(model64, images[i:i + 1], masks[i:i + 1], pooled)[0] for i in range(6)])
    assert not torch.equal(alone, whole)


def test_perturbation_size_measures_what_the_clamp_left():
    images = np.array([[[0.0, 0.5]], [[1.0, 0.2]]])          # two 1x2 images
    adversarial = fgsm(torch.from_numpy(images), torch.tensor([[[-1, 1]], [[1, -1]]], dtype=torch.int8), 0.1)
    size = perturbation_size(images, adversarial.numpy())
    assert size["linf"] == pytest.approx(0.1)
    assert size["l2"] == pytest.approx((0.1 + 0.1) / 2)      # each image: one clamped pixel, one moved 0.1
