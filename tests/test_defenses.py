"""Defenses and the adaptive attacks that judge them, on tiny real models: training batch makers
(noise, fast and PGD adversarial training), the ensemble, purification with BPDA and the masking
flag, and EOT against randomized smoothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_apgd import apgd_settings, assert_same_sweeps
from test_attacks import TinyNet, attack_settings, batch, grey_input, shapes, tiny64  # noqa: F401 (fixture)
from test_smoothing import smoothing_settings
from torch import nn

from advseg.apgd import apgd_sweep
from advseg.attacks import attack_sweep, image_dice
from advseg.defenses.ensemble import Ensemble, mean_probability_logits
from advseg.defenses.eot import ExpectationOverTransformation, objective_gradient
from advseg.defenses.purification import Quantization, StraightThrough, bpda, masking_check, purified
from advseg.defenses.smoothing import SmoothedModel
from advseg.defenses.training_inputs import training_inputs
from advseg.inference import predict_masks
from advseg.losses import get_loss
from advseg.models import as_model_input

torch.set_num_threads(1)
CPU = torch.device("cpu")
BCE = get_loss("bce")
EPS = 0.05


def train_tiny(batch_maker=None, iterations: int = 120) -> nn.Module:
    """TinyNet on the synthetic shapes: the same start, batches and steps whatever the batch maker
    (which draws from a generator of its own)."""
    torch.manual_seed(0)
    net = TinyNet(2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    images, masks = shapes(64, seed=0)
    order, draws = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    for _ in range(iterations):
        rows = torch.randint(0, len(images), (16,), generator=order)
        inputs = images[rows] if batch_maker is None else batch_maker(net, images[rows], masks[rows], BCE, draws)
        loss = BCE(net(grey_input(inputs)), masks[rows]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


@pytest.fixture(scope="module")
def held_out():
    return shapes(16, seed=1)


@pytest.fixture(scope="module")
def standard():
    return train_tiny()


def dice(prediction: np.ndarray, masks: torch.Tensor) -> np.ndarray:
    return image_dice(torch.from_numpy(prediction), masks).numpy()


def pgd(model, images, masks, eps=EPS, steps=10):
    return attack_sweep(model, images, masks, "bce", [eps], attack_settings("pgd", steps=steps))[eps]


# --- training batch makers --------------------------------------------------------------


def test_noise_inputs_add_unclamped_gaussian_noise_from_the_generator():
    images, masks = batch(4, seed=40)
    make = training_inputs("noise", {"sigma": 0.3})
    noisy = make(None, images, masks, BCE, torch.Generator().manual_seed(5))
    expected = images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(5))
    assert torch.equal(noisy, expected)
    assert noisy.min() < 0 and noisy.max() > 1          # as randomized smoothing adds it


def test_fast_at_is_one_fgsm_step_of_1_25_eps_from_a_random_start(tiny64):
    images, masks = batch(3, seed=41, dtype=torch.float64)
    eps = 0.04
    make = training_inputs("fast_at", {"eps": eps})          # the schema's alpha: Wong et al.'s 1.25
    adversarial = make(tiny64, images, masks, BCE, torch.Generator().manual_seed(6))
    start = 2 * torch.rand(images.shape, generator=torch.Generator().manual_seed(6)) - 1   # by hand
    x0 = (images + eps * start.double()).clamp(0, 1).requires_grad_(True)
    (grad,) = torch.autograd.grad(BCE(tiny64(grey_input(x0)), masks).sum(), x0)
    expected = torch.minimum(torch.maximum(x0 + 1.25 * eps * grad.sign(), images - eps), images + eps).clamp(0, 1)
    torch.testing.assert_close(adversarial, expected.detach(), rtol=0, atol=1e-12)


def test_pgd_at_inputs_stay_in_the_ball_raise_the_loss_and_leave_the_model_alone(tiny64):
    images, masks = batch(3, seed=42, dtype=torch.float64)
    images[:, 0, :4] = 0.0
    make = training_inputs("pgd_at", {"eps": 0.03, "steps": 4, "alpha": 0.5})
    tiny64.train()
    try:
        adversarial = make(tiny64, images, masks, BCE, torch.Generator().manual_seed(7))
        assert tiny64.training
    finally:
        tiny64.eval()
    assert (adversarial - images).abs().max() <= 0.03 + 1e-12 and adversarial.min() >= 0
    assert not adversarial.requires_grad
    assert all(p.grad is None for p in tiny64.parameters())
    with torch.no_grad():
        assert (BCE(tiny64(grey_input(adversarial)), masks) > BCE(tiny64(grey_input(images)), masks)).all()


@pytest.mark.parametrize("name, options, message", [
    ("mixup", {}, "defenses: 'mixup' is not a training defense"),
    ("pgd_at", {"epsilon": 0.1}, r"defense\.pgd_at: .*'epsilon'.*known: eps, steps, alpha"),
    ("pgd_at", {"steps": 0}, r"defense\.pgd_at\.steps"),
    ("fast_at", {"eps": 1.5}, r"defense\.fast_at\.eps"),
    ("noise", {"sigma": -1}, r"defense\.noise\.sigma"),
])
def test_bad_training_defenses_are_refused_before_training(name, options, message):
    with pytest.raises(ValueError, match=message):
        training_inputs(name, options)


def test_pgd_adversarial_training_raises_the_attacked_score_at_its_eps(standard, held_out):
    images, masks = held_out
    robust = train_tiny(training_inputs("pgd_at", {"eps": EPS, "steps": 3, "alpha": 0.5}))
    scores = {}
    for name, model in (("standard", standard), ("pgd_at", robust)):
        result = pgd(model, images, masks)
        scores[name] = (dice(result.clean_pred, masks).mean(), dice(result.adv_pred, masks).mean())
    print("clean, PGD-10 attacked mean Dice at eps 0.05:", scores)
    assert scores["pgd_at"][1] > scores["standard"][1] + 0.05
    assert scores["pgd_at"][0] > 0.9                     # it still segments


# --- ensemble ---------------------------------------------------------------------------


def test_ensemble_logits_are_the_mean_probability_and_keep_their_gradient():
    z = torch.tensor([[-3.0, 0.5, 40.0], [1.0, -2.0, 60.0]], dtype=torch.float64, requires_grad=True)
    logits = mean_probability_logits(z)
    mean = z.sigmoid().mean(0)
    torch.testing.assert_close(logits[:2], torch.log(mean / (1 - mean))[:2], rtol=1e-12, atol=0)
    assert torch.isfinite(logits).all() and logits[2] > 39                 # a clamp at 1 - 1e-6 would say 13.8
    (grad,) = torch.autograd.grad(logits[2], z)
    assert (grad[:, 2] > 0).all()                                            # not masked by saturation


def test_the_ensemble_is_attacked_as_one_white_box_model(standard, held_out):
    images, masks = held_out
    other = train_tiny(training_inputs("noise", {"sigma": 0.1}))
    ensemble = Ensemble([standard, other])
    with torch.no_grad():
        x = grey_input(images)
        expected = mean_probability_logits([standard(x), other(x)])
        torch.testing.assert_close(ensemble(x), expected)
    white_box = pgd(ensemble, images, masks)
    from_member = pgd(standard, images, masks)                               # transfer from one member
    transfer = predict_masks(ensemble, from_member.adv_inputs[:, 0].copy(), 16, CPU)
    assert dice(white_box.adv_pred, masks).mean() < dice(transfer, masks).mean()
    with pytest.raises(ValueError, match="defense.ensemble.models"):
        Ensemble([])


# --- purification, BPDA and the masking flag --------------------------------------------


def test_quantization_and_the_straight_through_gradient():
    x = torch.tensor([0.0, 0.07, 0.08, 0.5, 0.93, 1.2, -0.1], requires_grad=True)
    out = Quantization(8)(x)
    torch.testing.assert_close(out, torch.tensor([0, 0, 1, 4, 7, 7, 0]) / 7)      # round(x·7)/7 on [0, 1]
    (grad,) = torch.autograd.grad((out * torch.arange(7.0)).sum(), x)
    assert (grad == 0).all()                                                     # the masked gradient
    straight = StraightThrough(Quantization(levels=8))(x)
    assert torch.equal(straight, out)
    (grad,) = torch.autograd.grad((straight * torch.arange(7.0)).sum(), x)
    assert torch.equal(grad, torch.arange(7.0))                                  # identity backward
    with pytest.raises(ValueError, match="defense.quantization.levels"):
        Quantization(levels=1)


def test_the_purification_baseline_is_flagged_as_gradient_masking(standard, held_out):
    images, masks = held_out
    purifier = Quantization(levels=16)
    clean = dice(predict_masks(purified(standard, purifier), images, 16, CPU), masks).mean()
    plain = dice(pgd(purified(standard, purifier), images, masks).adv_pred, masks)
    adaptive = dice(pgd(bpda(standard, purifier), images, masks).adv_pred, masks)
    check = masking_check(plain, {"bpda": adaptive}, margin=0.02)
    print(f"quantisation (16 levels), clean {clean:.3f}:", check.describe())
    assert clean > 0.95 and check.flagged and check.strongest == "bpda"
    assert plain.mean() > clean - 0.02                   # plain gradients barely move it
    # control: without a purifier, plain gradients and BPDA are the same attack
    identity = [dice(pgd(model, images, masks).adv_pred, masks)
                for model in (purified(standard, nn.Identity()), bpda(standard, nn.Identity()))]
    assert not masking_check(identity[0], {"bpda": identity[1]}, margin=0.0).flagged


def test_masking_check_compares_like_with_like():
    plain = np.array([0.9, 0.8])
    check = masking_check(plain, {"bpda": [0.85, 0.8], "transfer": [0.5, 0.4]}, margin=0.05)
    assert (check.strongest, check.flagged) == ("transfer", True)
    assert check.gap == pytest.approx(0.4)
    assert not masking_check(plain, {"bpda": [0.88, 0.8]}, margin=0.05).flagged
    with pytest.raises(ValueError, match="transfer has scores"):
        masking_check(plain, {"transfer": [0.5]}, margin=0.02)
    with pytest.raises(ValueError, match="no adaptive attack"):
        masking_check(plain, {}, margin=0.02)


# --- EOT against randomized smoothing ---------------------------------------------------


def bce_objective(logits, masks, step, steps):
    return BCE(logits, masks)


def test_eot_averages_the_objective_and_its_gradient_over_the_draws(tiny64):
    images, masks = batch(2, seed=43, dtype=torch.float64)
    smoothed = SmoothedModel(tiny64, smoothing_settings(sigma=0.2, draws_per_forward=2), seed=2)
    eot = ExpectationOverTransformation(smoothed, draws=3)                  # chunks of 2 draws and 1
    logits, loss, grad = objective_gradient(eot, as_model_input, images, masks, bce_objective, 1, 1)
    per_draw = []
    for draw in range(3):                                  # one draw at a time, by hand
        grey = images.clone().requires_grad_(True)
        value = BCE(smoothed.sample(as_model_input(grey), range(draw, draw + 1), 2)[0], masks)
        per_draw.append((value.detach(), torch.autograd.grad(value.sum(), grey)[0]))
    torch.testing.assert_close(loss, sum(v for v, _ in per_draw) / 3, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, sum(g for _, g in per_draw) / 3, rtol=1e-10, atol=1e-14)
    with torch.no_grad():
        torch.testing.assert_close(logits, eot(as_model_input(images)))
    # a deterministic model: one forward, one backward
    plain_logits, plain_loss, plain_grad = objective_gradient(tiny64, as_model_input, images, masks,
                                                              bce_objective, 1, 1)
    grey = images.clone().requires_grad_(True)
    expected = BCE(tiny64(as_model_input(grey)), masks)
    torch.testing.assert_close(plain_loss, expected.detach())
    torch.testing.assert_close(plain_grad, torch.autograd.grad(expected.sum(), grey)[0])
    with pytest.raises(ValueError, match="attack.eot.draws"):
        ExpectationOverTransformation(smoothed, draws=0)
    with pytest.raises(TypeError, match="not a random defense"):
        ExpectationOverTransformation(tiny64, draws=2)


def test_eot_attacks_do_not_depend_on_the_batch_size(tiny64):
    images, masks = batch(4, seed=44, dtype=torch.float64)
    eot = ExpectationOverTransformation(SmoothedModel(tiny64, smoothing_settings(sigma=0.2, n=4), seed=1), draws=2)
    settings = attack_settings("pgd", steps=3)
    assert_same_sweeps([attack_sweep(eot, images, masks, "bce", [0.05], settings, batch_size=size)
                        for size in (4, 3, 1)])
    assert_same_sweeps([apgd_sweep(eot, images, masks, "maskedbce", [0.05], apgd_settings(steps=3), batch_size=size)
                        for size in (4, 1)])


@pytest.fixture(scope="module")
def smoothed_model():
    sigma = 0.25
    base = train_tiny(training_inputs("noise", {"sigma": sigma}))
    return SmoothedModel(base, smoothing_settings(sigma=sigma, n=32), seed=0)


@pytest.mark.parametrize("attack", ["pgd", "apgd"])
def test_eot_is_at_least_as_strong_as_a_single_draw_against_smoothing(smoothed_model, held_out, attack):
    images, masks = held_out
    eps, scores = 0.06, {}
    for draws in (1, 8):
        eot = ExpectationOverTransformation(smoothed_model, draws)
        if attack == "pgd":
            result = pgd(eot, images, masks, eps=eps)
        else:
            result = apgd_sweep(eot, images, masks, "bce", [eps], apgd_settings(steps=10))[eps]
        # scored by the defense itself: the majority over n = 32 draws of its own noise
        scores[draws] = dice(predict_masks(smoothed_model, result.adv_inputs.copy(), 16, CPU, model_input=True),
                             masks).mean()
    clean = dice(predict_masks(smoothed_model, images, 16, CPU), masks).mean()
    print(f"smoothed model (sigma 0.25, n 32), {attack}-10 at eps {eps}: clean {clean:.3f}, "
          f"one draw {scores[1]:.3f}, EOT-8 {scores[8]:.3f}")
    assert scores[1] < clean
    assert scores[8] <= scores[1]
