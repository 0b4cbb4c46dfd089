"""Randomized smoothing: the keyed noise, the smoothed prediction, and the certificate checked
by hand (binomial tests, Holm and Bonferroni, Clopper-Pearson bounds, radii, certified Dice)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import beta, binom, norm
from test_attacks import batch, tiny64  # noqa: F401 (fixture)
from torch import nn

from advseg.defenses.certification import Certificate, binomial_p_values, certify, rejected
from advseg.defenses.smoothing import SmoothedModel, SmoothingSettings, keyed_noise
from advseg.inference import predict_masks
from advseg.models import as_model_input

torch.set_num_threads(1)
CPU = torch.device("cpu")
S = 1e-5  # the study's Dice smoothing


def smoothing_settings(**changes) -> SmoothingSettings:
    """The schema's smoothing settings, then ``changes`` (unchecked)."""
    return dataclasses.replace(SmoothingSettings.from_section(), **changes)


class ConstantModel(nn.Module):
    """Ignores its input: the same logits for every image and every noisy copy."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, inputs):
        return self.logits.expand(len(inputs), *self.logits.shape)


class Inputs(nn.Module):
    """Returns the (noisy) model input itself as 3 'class' logits, to look at the noise."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, inputs):
        return inputs


@pytest.mark.parametrize("changes, key", [
    ({"sigma": 0}, "defense.smoothing.sigma"),
    ({"n": 0}, "defense.smoothing.n"),
    ({"n0": 2.5}, "defense.smoothing.n0"),
    ({"tau": 0.4}, "defense.smoothing.tau"),
    ({"tau": 1.0}, "defense.smoothing.tau"),
    ({"alpha": 0}, "defense.smoothing.alpha"),
    ({"correction": "bh"}, "defense.smoothing.correction"),
    ({"draws_per_forward": 0}, "defense.smoothing.draws_per_forward"),
])
def test_bad_settings_name_their_key(changes, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        smoothing_settings(**changes).validate()


def test_noise_is_gaussian_the_same_on_each_channel_and_keyed_by_the_image():
    images, _ = batch(3, seed=30, dtype=torch.float64)
    inputs = as_model_input(images)
    smoothed = SmoothedModel(Inputs(), smoothing_settings(sigma=0.5), seed=7)
    draws = smoothed.sample(inputs, range(40), stream=0)
    assert draws.shape == (40, 3, 3, 32, 32)
    noise = (draws - inputs) / 0.5
    assert torch.equal(noise[:, :, 0], noise[:, :, 2])
    assert abs(noise.mean().item()) < 0.01 and abs(noise[:, :, 0].std().item() - 1) < 0.01
    alone = keyed_noise(inputs[1:2], range(3, 5), 0, seed=7)          # another batch, other draws around it
    assert torch.equal(alone[:, 0], keyed_noise(inputs, range(5), 0, seed=7)[3:5, 1])
    assert not torch.equal(alone, keyed_noise(inputs[1:2], range(3, 5), 1, seed=7))    # another stream
    assert not torch.equal(alone, keyed_noise(inputs[1:2], range(3, 5), 0, seed=8))    # another seed
    assert not torch.equal(alone, keyed_noise(inputs[2:3], range(3, 5), 0, seed=7))    # another image


def test_the_smoothed_prediction_is_the_majority_vote_and_ignores_the_batch_size(tiny64):
    images, _ = batch(5, seed=31, dtype=torch.float64)
    settings = smoothing_settings(sigma=0.25, n=9, draws_per_forward=4)
    smoothed = SmoothedModel(tiny64, settings, seed=3)
    with torch.no_grad():
        logits = smoothed(as_model_input(images))
        votes = (smoothed.sample(as_model_input(images), range(9), 0) > 0).sum(0)
    assert torch.equal(logits > 0, 2 * votes > 9)
    assert 0 < (logits > 0).double().mean() < 1
    whole = predict_masks(smoothed, images, 5, CPU)
    for size in (2, 1):
        assert np.array_equal(predict_masks(smoothed, images, size, CPU), whole), f"batches of {size}"
    again = SmoothedModel(tiny64, smoothing_settings(sigma=0.25, n=9, draws_per_forward=9), seed=3)
    assert np.array_equal(predict_masks(again, images, 5, CPU), whole)      # draws per forward: speed only
    other = SmoothedModel(tiny64, settings, seed=4)
    assert not np.array_equal(predict_masks(other, images, 5, CPU), whole)


@pytest.mark.parametrize("n, certified", [(29, True), (28, False)])
def test_certificate_of_a_constant_model_by_hand(n, certified):
    # every draw agrees with the sign: counts = n; each p-value is tau^n, and Holm over K equal
    # p-values rejects all exactly when tau^n <= alpha / K. K = 2·4·4 = 32, tau 0.75, alpha 0.01:
    # 0.75^29 = 2.4e-4 <= 3.1e-4 < 0.75^28 = 3.2e-4.
    logits = torch.tensor([1.0, -2.0]).repeat_interleave(16).reshape(2, 4, 4)
    settings = smoothing_settings(sigma=0.5, n=n, n0=3, tau=0.75, alpha=0.01)
    images = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0))
    result = certify(ConstantModel(logits), images, settings, batch_size=2)
    assert np.array_equal(result.prediction, np.broadcast_to((logits > 0).numpy(), (3, 2, 4, 4)))
    assert (result.counts == n).all()
    lower_bound = beta.ppf(0.01 / 32, n, 1)                             # Clopper-Pearson, Bonferroni level
    assert (lower_bound > 0.75) == certified
    assert result.radius == pytest.approx(0.5 * norm.ppf(0.75), rel=1e-12)
    assert result.certified().all() == certified and result.certified().any() == certified
    np.testing.assert_array_equal(result.abstain_rate(), 0.0 if certified else 1.0)
    with pytest.raises(ValueError, match="grey slices"):
        certify(ConstantModel(logits), images[:, None], settings)
    with pytest.raises(ValueError, match="defense.smoothing.n0"):
        certify(ConstantModel(logits), images, smoothing_settings(n0=0))


def test_binomial_p_values_and_their_clopper_pearson_inversion():
    counts, n = np.arange(60, 101), 100
    p_values = binomial_p_values(counts, n, 0.75)
    np.testing.assert_allclose(p_values, [binom.sf(k - 1, n, 0.75) for k in counts], rtol=1e-12)
    for level in (0.05, 0.001):                       # p <= level exactly where the CP bound exceeds tau
        bound = beta.ppf(level, counts, n - counts + 1)
        assert np.array_equal(p_values <= level, bound > 0.75)


def test_holm_and_bonferroni_by_hand():
    # n 100, tau 0.75: p(100) = 3e-13, p(95) = 1.2e-7, p(85) = 0.0111, p(84) = 0.0211, p(60) = 1
    p_values = binomial_p_values(np.array([[100, 95, 85, 84], [84, 100, 60, 84]]), 100, 0.75)
    # Bonferroni: p <= 0.05 / 4 = 0.0125, i.e. the Clopper-Pearson bound at 0.0125 above tau
    assert rejected(p_values, 0.05, "bonferroni").tolist() == [[True, True, True, False],
                                                               [False, True, False, False]]
    # Holm, sorted p against 0.05/4, 0.05/3, 0.05/2, 0.05/1: row 0 passes all four; row 1 stops at
    # its second smallest (0.0211 > 0.0167), so its third (0.0211 <= 0.025) is not rejected either
    assert rejected(p_values, 0.05, "holm").tolist() == [[True, True, True, True], [False, True, False, False]]


def test_certified_dice_by_hand():
    # one image, one class, four pixels; sigma 0.25, n 100, alpha 0.05
    truth = np.array([1, 1, 0, 0]).reshape(1, 1, 1, 4)
    prediction = np.array([1, 0, 0, 1], dtype=np.uint8).reshape(1, 1, 1, 4)
    counts = np.array([100, 100, 62, 75], dtype=np.int32).reshape(1, 1, 1, 4)
    settings = smoothing_settings(sigma=0.25, n=100, tau=0.75, alpha=0.05)
    certificate = Certificate(prediction, counts, settings)
    # r = 0: tau 0.5, p = (~0, ~0, 0.0105, 2.8e-7): Holm certifies all; Dice of the prediction itself
    # r = 0.1: tau = Φ(0.4) = 0.655, p = (~0, ~0, 0.80, 0.0275): the 3rd smallest 0.0275 > 0.05/2 stops,
    #   pixels 2 and 3 abstain and count as false positives (truth 0)
    # r = 1: tau = Φ(4), p(100) = 0.997: everything abstains, all wrong
    scores = certificate.certified_dice(truth, [0.0, 0.1, 1.0])
    np.testing.assert_allclose(scores, [[(2 + S) / (4 + S), (2 + S) / (5 + S), S / (4 + S)]], rtol=1e-9)
    assert certificate.certified(norm.cdf(0.4)).ravel().tolist() == [True, True, False, False]
    # at tau 0.75: p = (3e-13, 3e-13, 1.0, 0.553): two abstain
    np.testing.assert_allclose(certificate.abstain_rate(), [0.5])
    with pytest.raises(ValueError, match="radii"):
        certificate.certified_dice(truth, [-0.1])


def test_certification_ignores_the_batch_size_and_its_curve_never_rises(tiny64):
    images, masks = batch(4, seed=32, dtype=torch.float64)
    settings = smoothing_settings(sigma=0.1, n=30, n0=4, tau=0.6, alpha=0.1, draws_per_forward=7)
    whole = certify(tiny64, images, settings, seed=1, batch_size=4)
    for size in (3, 1):
        part = certify(tiny64, images, settings, seed=1, batch_size=size)
        assert np.array_equal(part.prediction, whole.prediction) and np.array_equal(part.counts, whole.counts)
    assert (whole.counts == 30).any() and (whole.counts < 30).any()  # sure and unsure decisions
    curve = whole.certified_dice(masks.numpy(), [0.0, 0.02, 0.05, 0.1, 0.5])
    assert curve.shape == (4, 5)
    assert (np.diff(curve, axis=1) <= 1e-12).all() and curve[:, 0].min() > curve[:, -1].max()
    assert 0 < whole.abstain_rate().mean() < 1
