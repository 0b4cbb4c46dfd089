"""Attacks: the FGSM step, the shared PGD loop (fgsm, pgd, segpgd, cospgd),
the study's options, batch-size invariance, and attack strength on a trained tiny model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advseg.attacks import (FGSM_AS_PGD, METHODS, AttackSettings, attack_sweep, fgsm, image_dice, perturbation_size,
                            study_step)
from advseg.losses import get_loss
from advseg.models import build_model
from advseg.objectives import (cospgd_objective, cospgd_weights, named_loss_objective, segpgd_lambda,
                               segpgd_objective)
from advseg.settings import default

torch.set_num_threads(1)
SIZE = 32
CLASSES = 3


def attack_settings(method: str = "fgsm", **changes) -> AttackSettings:
    """One attack job's settings: the schema's defaults for ``method``, then ``changes`` (unchecked)."""
    return dataclasses.replace(AttackSettings.from_section({"method": method}), **changes)


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


def test_perturbation_size_measures_what_the_clamp_left():
    images = np.array([[[0.0, 0.5]], [[1.0, 0.2]]])          # two 1x2 images
    adversarial = fgsm(torch.from_numpy(images), torch.tensor([[[-1, 1]], [[1, -1]]], dtype=torch.int8), 0.1)
    size = perturbation_size(images, adversarial.numpy())
    assert size["linf"] == pytest.approx(0.1)
    assert size["l2"] == pytest.approx((0.1 + 0.1) / 2)      # each image: one clamped pixel, one moved 0.1


# --- the shared loop: settings ----------------------------------------------------------


@pytest.mark.parametrize("changes, key", [
    ({"method": "bim"}, "attack.method"),
    ({"method": "pgd", "steps": 0}, "attack.pgd.steps"),
    ({"method": "segpgd", "steps": 2.5}, "attack.segpgd.steps"),
    ({"method": "cospgd", "alpha": 0.0}, "attack.cospgd.alpha"),
    ({"method": "pgd", "alpha": -0.1}, "attack.pgd.alpha"),
    ({"method": "pgd", "alpha": float("nan")}, "attack.pgd.alpha"),
    ({"method": "pgd", "restarts": 0}, "attack.pgd.restarts"),
    ({"method": "pgd", "random_start": "yes"}, "attack.pgd.random_start"),
    ({"method": "pgd", "step": "study"}, "attack.step"),
    ({"method": "fgsm", "step": "half"}, "attack.step"),
    ({"loss_argument_order": "swapped"}, "attack.loss_argument_order"),
    ({"input": "rgb"}, "attack.input"),
])
def test_bad_settings_name_their_key(changes, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        dataclasses.replace(attack_settings(), **changes).validate()


def test_settings_from_section_defaults_effective_values_and_variant():
    settings = AttackSettings.from_section({"method": "pgd", "pgd": {"steps": 20}})
    assert {key: getattr(settings, key) for key in FGSM_AS_PGD} == {**default("attack.pgd"), "steps": 20}
    assert settings.variant == "standard" and AttackSettings.from_section(settings.as_section()) == settings
    study = AttackSettings.from_section('{"method": "fgsm", "step": "study", "loss_argument_order": "study", '
                                        '"input": "channels"}')
    assert study.variant == "study-study-channels"
    assert dataclasses.replace(study, steps=7, restarts=3).method_settings() == FGSM_AS_PGD
    assert attack_settings("pgd", random_start=False, restarts=4).method_settings()["restarts"] == 1
    with pytest.raises(ValueError, match=r"attack\.pgd: .*'step_size' was unexpected"):
        AttackSettings.from_section({"method": "pgd", "pgd": {"step_size": 0.1}})
    with pytest.raises(ValueError, match=r"attack\.fgsm: .*'steps' was unexpected"):
        AttackSettings.from_section({"method": "fgsm", "fgsm": {"steps": 3}})  # FGSM has no settings
    with pytest.raises(ValueError, match=r"attack\.pgd\.steps"):
        AttackSettings.from_section({"method": "pgd", "pgd": {"steps": 0}})
    with pytest.raises(ValueError, match=r"attack\.method: one attack job"):
        AttackSettings.from_section({"methods": ["pgd"]})


# --- the shared loop: exact properties on a real smp model -------------------------------


def bounded_batch(n: int, seed: int):
    """Random slices with pixels at 0 and 1, where the [0, 1] clamp must act."""
    images, masks = batch(n, seed)
    images[:, 0, :8] = 0.0
    images[:, 1, :8] = 1.0
    return images, masks


def grey_input(x):
    return x.unsqueeze(1).repeat(1, 3, 1, 1)


@pytest.mark.parametrize("loss_name, input_mode", [("bce", "grey"), ("dicefocal", "channels")])
def test_pgd_with_one_step_no_random_start_and_alpha_eps_equals_fgsm(model, loss_name, input_mode):
    images, masks = bounded_batch(3, seed=8)
    epsilons = [0.01, 0.04]
    fast = attack_sweep(model, images, masks, loss_name, epsilons, attack_settings(method="fgsm", input=input_mode))
    loop = attack_sweep(model, images, masks, loss_name, epsilons,
                        attack_settings(method="pgd", steps=1, alpha=1.0, random_start=False, input=input_mode))
    # an independent FGSM: plain autograd on the model input, one step of eps, clamp
    x = grey_input(images) if input_mode == "grey" else grey_input(images).requires_grad_(True)
    if input_mode == "grey":
        grey = images.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(get_loss(loss_name)(model(grey_input(grey)), masks).sum(), grey)
        grad = grey_input(grad)
    else:
        (grad,) = torch.autograd.grad(get_loss(loss_name)(model(x), masks).sum(), x)
    for eps in epsilons:
        assert np.array_equal(fast[eps].adv_inputs, loop[eps].adv_inputs), f"eps={eps}"
        assert np.array_equal(fast[eps].adv_pred, loop[eps].adv_pred)
        expected = (grey_input(images) + eps * grad.sign()).clamp(0, 1)
        assert np.array_equal(fast[eps].adv_inputs, expected.detach().numpy())
        assert fast[eps].loss_history == [] and len(loop[eps].loss_history) == 1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("input_mode", ["grey", "channels"])
def test_every_method_stays_in_the_eps_ball_and_unit_range(model, method, input_mode):
    images, masks = bounded_batch(2, seed=9)
    eps = 0.03
    settings = attack_settings(method=method, steps=3, alpha=0.5, input=input_mode)
    result = attack_sweep(model, images, masks, "bce", [eps], settings)[eps]
    adversarial, clean = result.adv_inputs, grey_input(images).numpy()
    assert adversarial.shape == clean.shape and adversarial.dtype == np.float32
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    assert np.abs(adversarial - clean).max() <= eps + 1e-6
    assert np.abs(adversarial - clean).max() >= eps - 1e-6        # it does move to the ball's edge
    assert (adversarial[:, :, 0, :8] >= 0).all() and (adversarial[:, :, 1, :8] <= 1).all()
    same_on_channels = np.array_equal(adversarial[:, 0], adversarial[:, 2])
    assert same_on_channels == (input_mode == "grey")
    with torch.no_grad():                                        # the prediction is that of the kept input
        expected = (model(torch.from_numpy(np.ascontiguousarray(adversarial))) > 0).numpy()
    assert np.array_equal(result.adv_pred, expected)
    with torch.no_grad():
        assert np.array_equal(result.clean_pred, (model(grey_input(images)) > 0).numpy())


def test_study_step_on_a_known_gradient():
    x = torch.tensor([0.0, 0.5, 1.0, 0.2, 0.0, 1.0, 0.95])
    sign = torch.tensor([1, -1, -1, 0, -1, 1, 1], dtype=torch.int8)
    # (1 - 0.1)·x + 0.1·sign, by hand: 0.1, 0.35, 0.8, 0.18, -0.1 -> 0, 1.0, 0.955
    expected = torch.tensor([0.1, 0.35, 0.8, 0.18, 0.0, 1.0, 0.955])
    torch.testing.assert_close(study_step(x, sign, 0.1), expected, rtol=0, atol=1e-7)


def test_study_step_in_the_sweep_uses_the_loss_gradient(model):
    images, masks = batch(2, seed=10)
    eps = 0.05
    result = attack_sweep(model, images, masks, "bce", [eps], attack_settings(step="study"))[eps]
    grey = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.binary_cross_entropy_with_logits(
        model(grey_input(grey)), masks.float(), reduction="sum"), grey)
    expected = ((1 - eps) * images + eps * grad.sign()).clamp(0, 1)
    np.testing.assert_allclose(result.adv_inputs[:, 1], expected.numpy(), rtol=0, atol=1e-7)
    assert np.abs(result.adv_inputs[:, 0] - images.numpy()).max() > 1.5 * eps   # not an eps-ball step


def test_study_argument_order_follows_the_gradient_of_loss_of_mask_and_logits(model):
    images, masks = batch(2, seed=11)
    eps = 0.02
    swapped = attack_sweep(model, images, masks, "dicefocal", [eps],
                           attack_settings(loss_argument_order="study"))[eps].adv_inputs[:, 0]
    standard = attack_sweep(model, images, masks, "dicefocal", [eps], attack_settings())[eps].adv_inputs[:, 0]
    grey = images.clone().requires_grad_(True)
    logits = model(grey_input(grey))
    (grad,) = torch.autograd.grad(get_loss("dicefocal")(masks.float(), logits).sum(), grey)
    assert (grad != 0).float().mean() > 0.99
    np.testing.assert_array_equal(swapped, (images + eps * grad.sign()).clamp(0, 1).numpy())
    assert (swapped != standard).mean() > 0.1


def test_study_argument_order_swaps_bce_too_as_the_study_notebook_did(model):
    """The study's FGSM_attack called loss(mask, output) for every loss it was given, BCE included."""
    images, masks = batch(2, seed=11)
    eps = 0.02
    objective = named_loss_objective("bce", "study")
    logits = model(grey_input(images)).detach().requires_grad_(True)
    per_image = objective(logits, masks, 1, 1)
    reference = torch.stack([torch.nn.BCEWithLogitsLoss()(masks[i:i + 1].float(), logits[i:i + 1])
                             for i in range(len(images))])
    torch.testing.assert_close(per_image, reference)
    # swapped BCE's gradient in the logits is -mask / N: it pushes every labelled pixel down
    (grad,) = torch.autograd.grad(per_image.sum(), logits)
    torch.testing.assert_close(grad, -masks.float() / masks[0].numel())
    swapped = attack_sweep(model, images, masks, "bce", [eps],
                           attack_settings(loss_argument_order="study"))[eps].adv_inputs[:, 0]
    grey = images.clone().requires_grad_(True)
    (image_grad,) = torch.autograd.grad(objective(model(grey_input(grey)), masks, 1, 1).sum(), grey)
    np.testing.assert_array_equal(swapped, (images + eps * image_grad.sign()).clamp(0, 1).numpy())
    standard = attack_sweep(model, images, masks, "bce", [eps], attack_settings())[eps].adv_inputs[:, 0]
    assert (swapped != standard).mean() > 0.1


# --- per-method objectives by hand ------------------------------------------------------


def softplus(v: float) -> float:
    return np.log1p(np.exp(v))


# one image, one class, four pixels: right-positive, wrong-negative, wrong-positive, right-negative
Z = [2.0, -1.0, 0.5, -3.0]
Y = [1, 1, 0, 0]
BCE = [softplus(-2.0), softplus(1.0), softplus(0.5), softplus(-3.0)]   # -log p_y


def test_segpgd_lambda_schedule():
    assert [segpgd_lambda(t, 4) for t in (1, 2, 3, 4)] == [0.0, 0.125, 0.25, 0.375]
    assert segpgd_lambda(1, 1) == 0.0


@pytest.mark.parametrize("step, steps", [(1, 2), (2, 2), (5, 10)])
def test_segpgd_objective_and_gradient_by_hand(step, steps):
    logits = torch.tensor(Z, dtype=torch.float64).reshape(1, 1, 1, 4).requires_grad_(True)
    masks = torch.tensor(Y, dtype=torch.uint8).reshape(1, 1, 1, 4)
    lam = (step - 1) / (2 * steps)
    weights = [1 - lam, lam, lam, 1 - lam]                      # correct: pixels 0 and 3
    loss = segpgd_objective(logits, masks, step, steps)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(sum(w * b for w, b in zip(weights, BCE)) / 4, rel=1e-12)
    (grad,) = torch.autograd.grad(loss.sum(), logits)           # m has no gradient: d/dz = w·(p - y)/4
    expected = [w * (1 / (1 + np.exp(-z)) - y) / 4 for w, z, y in zip(weights, Z, Y)]
    np.testing.assert_allclose(grad.flatten().numpy(), expected, rtol=1e-12)


def test_cospgd_weights_and_objective_by_hand():
    logits = torch.tensor(Z + [0.0], dtype=torch.float64).reshape(1, 1, 1, 5).requires_grad_(True)
    masks = torch.tensor(Y + [1], dtype=torch.uint8).reshape(1, 1, 1, 5)
    p = [1 / (1 + np.exp(-z)) for z in Z + [0.0]]
    p_true = [p[0], p[1], 1 - p[2], 1 - p[3], p[4]]
    expected_w = [pt / np.sqrt(q * q + (1 - q) ** 2) for pt, q in zip(p_true, p)]
    assert expected_w[4] == pytest.approx(np.sqrt(0.5))          # undecided pixel: 0.5 / sqrt(0.5)
    weights = cospgd_weights(logits, masks)
    np.testing.assert_allclose(weights.flatten().numpy(), expected_w, rtol=1e-12)
    assert not weights.requires_grad
    loss = cospgd_objective(logits, masks, 3, 10)
    bce = BCE + [np.log(2.0)]
    assert loss.item() == pytest.approx(sum(w * b for w, b in zip(expected_w, bce)) / 5, rel=1e-12)
    (grad,) = torch.autograd.grad(loss.sum(), logits)            # no gradient through w
    expected = [w * (q - y) / 5 for w, q, y in zip(expected_w, p, Y + [1])]
    np.testing.assert_allclose(grad.flatten().numpy(), expected, rtol=1e-12)


def test_image_dice_by_hand():
    truth = torch.zeros(2, 2, 1, 4, dtype=torch.uint8)
    truth[0, 0, 0, :2] = 1                                       # image 0: class 0 on 2 pixels, class 1 absent
    pred = torch.zeros(2, 2, 1, 4, dtype=torch.bool)
    pred[0, 0, 0, 1:3] = True                                    # 1 of 2 right, 1 false positive
    pred[1, 1, 0, 0] = True                                      # image 1: a false positive on an absent class
    dice = image_dice(pred, truth)
    s = 1e-5
    np.testing.assert_allclose(dice.numpy(), [((2 + s) / (4 + s) + 1.0) / 2, (1.0 + s / (1 + s)) / 2])


# --- batch size, seeds, restarts, model state -------------------------------------------


class TinyNet(nn.Module):
    """Three dilated conv-BatchNorm-ReLU blocks and a 1×1 head: a seg model that trains in seconds."""

    def __init__(self, classes: int = 2, width: int = 16):
        super().__init__()
        layers, channels = [], 3
        for dilation in (1, 2, 4):
            layers += [nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation),
                       nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
        self.net = nn.Sequential(*layers, nn.Conv2d(width, classes, 1))

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def tiny64():
    torch.manual_seed(2)
    net = TinyNet(CLASSES).double()
    with torch.no_grad():                                        # non-trivial BatchNorm statistics
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("method", METHODS)
def test_results_do_not_depend_on_the_batch_size(tiny64, method):
    images, masks = batch(5, seed=12, dtype=torch.float64)
    settings = attack_settings(method=method, steps=3, restarts=2, alpha=0.4)
    loss_name = "dicefocal" if method in ("fgsm", "pgd") else "bce"
    runs = [attack_sweep(tiny64, images, masks, loss_name, [0.02, 0.05], settings, seed=3, batch_size=size)
            for size in (5, 2, 1)]
    for eps in (0.02, 0.05):
        whole = runs[0][eps]
        assert not np.array_equal(whole.adv_pred, whole.clean_pred)
        for part in runs[1:]:
            assert np.array_equal(part[eps].adv_inputs, whole.adv_inputs), f"{method} eps={eps}"
            assert np.array_equal(part[eps].adv_pred, whole.adv_pred)
            np.testing.assert_allclose(part[eps].loss_history, whole.loss_history, rtol=1e-12)


def test_random_start_depends_on_the_seed_and_restarts_keep_the_lowest_dice(tiny64):
    images, masks = batch(6, seed=13, dtype=torch.float64)
    eps = 0.05

    def run(seed, restarts):
        settings = attack_settings(method="pgd", steps=2, restarts=restarts)
        return attack_sweep(tiny64, images, masks, "bce", [eps], settings, seed=seed)[eps]

    first, again, other = run(0, 1), run(0, 1), run(1, 1)
    assert np.array_equal(first.adv_inputs, again.adv_inputs)
    assert not np.array_equal(first.adv_inputs, other.adv_inputs)
    # restart 0 of a 3-restart run is the 1-restart run, so per image the kept Dice can only go down
    several = run(0, 3)
    dice = {name: image_dice(torch.from_numpy(r.adv_pred), masks).numpy() for name, r in
            (("one", first), ("three", several))}
    assert (dice["three"] <= dice["one"]).all()
    assert not np.array_equal(several.adv_inputs, first.adv_inputs)


def test_the_attack_runs_in_eval_mode_and_restores_the_model(tiny64):
    images, masks = batch(3, seed=14, dtype=torch.float64)
    settings = attack_settings(method="pgd", steps=2)
    expected = attack_sweep(tiny64, images, masks, "bce", [0.03], settings)[0.03]
    tiny64.train()
    flags = [p.requires_grad for p in tiny64.parameters()]
    try:
        result = attack_sweep(tiny64, images, masks, "bce", [0.03], settings)[0.03]
        assert tiny64.training                                    # the caller's mode is back
    finally:
        tiny64.eval()
    assert [p.requires_grad for p in tiny64.parameters()] == flags
    assert all(p.grad is None for p in tiny64.parameters())
    assert np.array_equal(result.adv_inputs, expected.adv_inputs)  # BatchNorm used its running statistics


def test_loss_history_reaches_on_step_and_bad_input_is_refused(tiny64):
    images, masks = batch(2, seed=15, dtype=torch.float64)
    seen = []
    result = attack_sweep(tiny64, images, masks, "bce", [0.01, 0.02], attack_settings(method="segpgd", steps=3),
                          on_step=lambda eps, step, value: seen.append((eps, step, value)))
    assert [(eps, step) for eps, step, _ in seen] == [(e, s) for e in (0.01, 0.02) for s in (1, 2, 3)]
    assert [value for eps, _, value in seen if eps == 0.02] == result[0.02].loss_history
    with pytest.raises(ValueError, match="attack.epsilons"):
        attack_sweep(tiny64, images, masks, "bce", [1.5], attack_settings())
    with pytest.raises(ValueError, match="attack.pgd.steps"):
        attack_sweep(tiny64, images, masks, "bce", [0.1], attack_settings(method="pgd", steps=0))


def test_perturbation_size_of_three_channel_inputs():
    images = np.zeros((1, 1, 2))
    adversarial = np.array([[[[0.1, 0.0]], [[0.0, 0.0]], [[0.0, -0.2]]]])   # (1, 3, 1, 2)
    size = perturbation_size(images, adversarial)
    assert size["linf"] == pytest.approx(0.2)
    assert size["l2"] == pytest.approx(np.sqrt(0.01 + 0.04))


# --- strength on a trained tiny model ---------------------------------------------------


def shapes(n: int, seed: int):
    """Synthetic slices: a bright disk (class 0) and a dimmer square (class 1) on noise."""
    generator = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    images = 0.25 + 0.08 * torch.rand(n, SIZE, SIZE, generator=generator)
    masks = torch.zeros(n, 2, SIZE, SIZE, dtype=torch.uint8)
    for i in range(n):
        cy, cx, radius, sy, sx = torch.randint(2, 24, (5,), generator=generator).tolist()
        disk = (rows - cy - 4) ** 2 + (cols - cx - 4) ** 2 <= (3 + radius % 5) ** 2
        square = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        square[sy:sy + 8, sx:sx + 8] = True
        square &= ~disk
        images[i][disk] += 0.45
        images[i][square] += 0.25
        masks[i, 0], masks[i, 1] = disk, square
    return images.clamp(0, 1), masks


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    net = TinyNet(2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    images, masks = shapes(64, seed=0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(120):
        rows = torch.randint(0, len(images), (16,), generator=generator)
        loss = F.binary_cross_entropy_with_logits(net(grey_input(images[rows])), masks[rows].float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    held_out = shapes(16, seed=1)
    with torch.no_grad():
        clean = image_dice(net(grey_input(held_out[0])) > 0, held_out[1]).mean().item()
    assert clean > 0.9, f"the tiny model did not learn the shapes (Dice {clean:.3f})"
    return net, held_out, clean


def test_loss_increases_over_pgd_steps(trained):
    net, (images, masks), _ = trained
    history = attack_sweep(net, images, masks, "bce", [0.05], attack_settings("pgd", steps=10))[0.05].loss_history
    print("PGD-10 mean BCE per step:", [round(value, 4) for value in history])
    assert len(history) == 10
    assert history[-1] > 5 * history[0]
    assert sum(b > a for a, b in zip(history, history[1:])) >= 8


def test_iterative_attacks_beat_fgsm_on_a_trained_model(trained):
    net, (images, masks), clean = trained
    eps = 0.05
    dice = {}
    for method in METHODS:
        result = attack_sweep(net, images, masks, "bce", [eps], attack_settings(method=method, steps=10))[eps]
        dice[method] = image_dice(torch.from_numpy(result.adv_pred), masks).mean().item()
    print(f"mean Dice at eps {eps}: clean {clean:.3f}, " + ", ".join(f"{m} {d:.3f}" for m, d in dice.items()))
    assert dice["fgsm"] < clean
    for method in ("pgd", "segpgd", "cospgd"):
        assert dice[method] <= dice["fgsm"], method
