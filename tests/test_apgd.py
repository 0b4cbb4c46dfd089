"""APGD: SEA's sigmoid losses by hand, the checkpoints, the first step, the shared rules
(eps-ball, [0, 1], eval mode, batch size, seeds) and its strength against PGD on a trained model."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from test_attacks import attack_settings, batch, bounded_batch, grey_input, tiny64, trained  # noqa: F401

from advseg.apgd import APGDSettings, apgd_checkpoints, apgd_sweep, js_objective, masked_bce_objective
from advseg.attacks import attack_sweep, image_dice

torch.set_num_threads(1)
def apgd_settings(**changes) -> APGDSettings:
    """The schema's APGD (the paper's settings) at 10 steps, then ``changes`` (unchecked)."""
    return dataclasses.replace(APGDSettings.from_section({"apgd": {"steps": 10}}), **changes)


# one image, one class, five elements: right-positive, wrong-positive, wrong-negative, right-negative, undecided
Z = [2.0, -1.0, 0.5, -3.0, 0.0]
Y = [1, 1, 0, 0, 1]


def elements():
    logits = torch.tensor(Z, dtype=torch.float64).reshape(1, 1, 1, 5).requires_grad_(True)
    return logits, torch.tensor(Y, dtype=torch.uint8).reshape(1, 1, 1, 5)


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_masked_bce_by_hand():
    logits, masks = elements()
    right = [1, 0, 0, 1, 0]                        # z > 0 == y; z = 0 decides 0, wrong for y = 1
    bce = [-math.log(sigmoid(z)) if y else -math.log(1 - sigmoid(z)) for z, y in zip(Z, Y)]
    loss = masked_bce_objective(logits, masks, 1, 10)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(sum(m * b for m, b in zip(right, bce)) / 5, rel=1e-12)
    (grad,) = torch.autograd.grad(loss.sum(), logits)  # the mask has no gradient: m·(p − y)/5
    expected = [m * (sigmoid(z) - y) / 5 for m, z, y in zip(right, Z, Y)]
    np.testing.assert_allclose(grad.flatten().numpy(), expected, rtol=1e-12, atol=1e-15)


def test_js_matches_scipy_and_is_bounded():
    logits, masks = elements()
    by_scipy = [jensenshannon([sigmoid(z), 1 - sigmoid(z)], [y, 1 - y]) ** 2 for z, y in zip(Z, Y)]
    loss = js_objective(logits, masks, 1, 10)
    assert loss.item() == pytest.approx(np.mean(by_scipy), rel=1e-10)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert (grad.flatten()[[1, 2, 4]].abs() > 0).all()   # flipped elements still pull
    extreme = torch.tensor([[[[-80.0, 80.0, 80.0]]]], dtype=torch.float32, requires_grad=True)
    truth = torch.tensor([[[[1, 0, 1]]]], dtype=torch.uint8)
    values = js_objective(extreme, truth, 1, 1)
    assert torch.isfinite(values).all()
    assert values.item() == pytest.approx((2 * math.log(2) + 0) / 3, rel=1e-6)   # log 2, log 2, 0
    (grad,) = torch.autograd.grad(values.sum(), extreme)
    assert torch.isfinite(grad).all()


def test_checkpoints_follow_the_paper():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (then steps of .06 past 1)
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(10) == [3, 5, 6, 7, 8, 9]
    assert apgd_checkpoints(1) == []


@pytest.mark.parametrize("settings, key", [
    (apgd_settings(steps=0), "attack.apgd.steps"),
    (apgd_settings(restarts=1.5), "attack.apgd.restarts"),
    (apgd_settings(alpha=0), "attack.apgd.alpha"),
    (apgd_settings(momentum=1.5), "attack.apgd.momentum"),
    (apgd_settings(rho=float("nan")), "attack.apgd.rho"),
    (apgd_settings(random_start="no"), "attack.apgd.random_start"),
    (apgd_settings(input="rgb"), "attack.input"),
])
def test_bad_settings_name_their_key(settings, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        settings.validate()


def test_the_schema_holds_the_papers_settings_and_a_bad_loss_is_named(tiny64):
    assert APGDSettings.from_section() == APGDSettings(steps=100, alpha=2.0, momentum=0.75, rho=0.75,
                                                       random_start=False, restarts=1, input="grey")
    images, masks = batch(1, seed=24, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"attack\.losses: unknown value 'ce'"):
        apgd_sweep(tiny64, images, masks, "ce", [0.01], apgd_settings())


def test_one_step_of_alpha_one_is_fgsm(tiny64):
    images, masks = bounded_batch(3, seed=20)
    images = images.double()
    fgsm = attack_sweep(tiny64, images, masks, "bce", [0.02, 0.05], attack_settings("fgsm"))
    apgd = apgd_sweep(tiny64, images, masks, "bce", [0.02, 0.05], apgd_settings(steps=1, alpha=1.0))
    for eps in (0.02, 0.05):
        assert np.array_equal(apgd[eps].adv_inputs, fgsm[eps].adv_inputs)
        assert np.array_equal(apgd[eps].adv_pred, fgsm[eps].adv_pred)
        assert len(apgd[eps].loss_history) == 1


@pytest.mark.parametrize("loss", ["maskedbce", "js", "dicefocal"])
@pytest.mark.parametrize("input_mode", ["grey", "channels"])
def test_stays_in_the_eps_ball_and_unit_range(tiny64, loss, input_mode):
    images, masks = bounded_batch(2, seed=21)
    eps = 0.03
    result = apgd_sweep(tiny64, images.double(), masks, loss, [eps], apgd_settings(steps=5, input=input_mode))[eps]
    adversarial, clean = result.adv_inputs, grey_input(images).numpy()
    assert adversarial.shape == clean.shape and adversarial.dtype == np.float32
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert np.abs(adversarial - clean).max() <= eps + 1e-6
    assert np.abs(adversarial - clean).max() >= eps - 1e-6
    assert np.array_equal(adversarial[:, 0], adversarial[:, 2]) == (input_mode == "grey")
    with torch.no_grad():                                  # the prediction is that of the kept input
        expected = tiny64(torch.from_numpy(np.ascontiguousarray(adversarial)).double()) > 0
        clean_pred = tiny64(grey_input(images).double()) > 0
    assert np.array_equal(result.adv_pred, expected.numpy())
    assert np.array_equal(result.clean_pred, clean_pred.numpy())
    assert len(result.loss_history) == 5


@pytest.mark.parametrize("loss", ["maskedbce", "js"])
def test_results_do_not_depend_on_the_batch_size(tiny64, loss):
    images, masks = batch(5, seed=22, dtype=torch.float64)
    settings = apgd_settings(steps=6, random_start=True, restarts=2)
    runs = [apgd_sweep(tiny64, images, masks, loss, [0.02, 0.05], settings, seed=4, batch_size=size)
            for size in (5, 2, 1)]
    assert all(not np.array_equal(result.adv_pred, result.clean_pred) for result in runs[0].values())
    assert_same_sweeps(runs)


def assert_same_sweeps(runs: list[dict]) -> None:
    """Every sweep gives the first one's adversarial inputs, predictions and loss curve at every eps."""
    expected = runs[0]
    for run, (eps, result) in ((run, item) for run in runs[1:] for item in run.items()):
        assert np.array_equal(result.adv_inputs, expected[eps].adv_inputs), f"eps={eps}"
        assert np.array_equal(result.adv_pred, expected[eps].adv_pred), f"eps={eps}"
        np.testing.assert_allclose(result.loss_history, expected[eps].loss_history, rtol=1e-12)


def test_seeds_restarts_eval_mode_and_callback(tiny64):
    images, masks = batch(4, seed=23, dtype=torch.float64)
    eps = 0.05

    def run(seed, restarts, on_step=None):
        settings = apgd_settings(steps=4, random_start=True, restarts=restarts)
        return apgd_sweep(tiny64, images, masks, "maskedbce", [eps], settings, seed=seed, on_step=on_step)[eps]

    first, other = run(0, 1), run(1, 1)
    assert not np.array_equal(first.adv_inputs, other.adv_inputs)
    several = run(0, 3)                                    # restart 0 is the 1-restart run: Dice only goes down
    dice = [image_dice(torch.from_numpy(r.adv_pred), masks) for r in (first, several)]
    assert (dice[1] <= dice[0]).all()
    seen = []
    tiny64.train()
    try:
        again = run(0, 1, on_step=lambda *values: seen.append(values))
        assert tiny64.training
    finally:
        tiny64.eval()
    assert np.array_equal(again.adv_inputs, first.adv_inputs)
    assert [(e, s) for e, s, _ in seen] == [(eps, s) for s in (1, 2, 3, 4)]
    assert [value for _, _, value in seen] == first.loss_history
    assert all(p.grad is None and p.requires_grad for p in tiny64.parameters())
    with pytest.raises(ValueError, match="attack.epsilons"):
        apgd_sweep(tiny64, images, masks, "js", [2.0], apgd_settings())


@pytest.mark.parametrize("eps", [0.05])  # at 0.03 masked BCE is within 0.001 of PGD
def test_apgd_is_at_least_as_strong_as_pgd_at_equal_iterations(trained, eps):
    net, (images, masks), clean = trained
    steps = 10
    pgd = attack_sweep(net, images, masks, "bce", [eps], attack_settings("pgd", steps=steps))[eps]
    dice = {"pgd": image_dice(torch.from_numpy(pgd.adv_pred), masks).mean().item()}
    for loss in ("bce", "maskedbce", "js"):
        result = apgd_sweep(net, images, masks, loss, [eps], apgd_settings(steps=steps))[eps]
        dice[f"apgd-{loss}"] = image_dice(torch.from_numpy(result.adv_pred), masks).mean().item()
    print(f"mean Dice at eps {eps}, {steps} iterations: clean {clean:.3f}, "
          + ", ".join(f"{name} {value:.3f}" for name, value in dice.items()))
    assert dice["pgd"] < clean
    for name, value in dice.items():
        assert value <= dice["pgd"], name
