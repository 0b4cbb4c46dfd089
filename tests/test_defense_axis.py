"""The defenses axis without Snakemake: which models and attack jobs a config plans, how a defended
checkpoint is scored and attacked, the ensemble as one checkpoint, training with a defense."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from advseg import settings
from advseg.checkpoints import load_model, save_ensemble
from advseg.commands.attack import Sweep
from advseg.config import validate_config
from advseg.grid import ENSEMBLE, TRANSFER, attack_jobs, defended_specs, model_attack_jobs, replicates
from advseg.defenses.defended import attacked_model, scored_model, training_batch_maker
from advseg.defenses.ensemble import Ensemble
from advseg.defenses.eot import ExpectationOverTransformation
from advseg.defenses.smoothing import SmoothedModel
from advseg.models import build_model

TWO_MODELS = """
models:
  - {arch: Unet, encoder: resnet18}
  - {arch: Linknet, encoder: resnet18, checkpoint: CHECKPOINT}
seeds: [1, 2]
attack: {methods: [fgsm, apgd], losses: [bce, js]}
defenses: [none, pgd_at, smoothing, quantization, ensemble]
"""


@pytest.fixture
def config(tmp_path):
    checkpoint = tmp_path / "linknet.pt"
    checkpoint.write_bytes(b"weights trained elsewhere")
    found = yaml.safe_load(TWO_MODELS.replace("CHECKPOINT", str(checkpoint)))
    validate_config(found, build_cache=tmp_path / "buildable.json")
    return found


def test_defended_models_are_named_by_their_defense_and_know_their_twin(config):
    specs = defended_specs(config)
    assert list(specs) == ["Unet-resnet18", "Linknet-resnet18", "Unet-resnet18+pgd_at", "Unet-resnet18+smoothing",
                           "Unet-resnet18+quantization", "Linknet-resnet18+quantization", ENSEMBLE]
    assert specs["Unet-resnet18+pgd_at"].twin == "Unet-resnet18" and specs["Unet-resnet18+pgd_at"].trains
    # training defenses need a model the workflow trains; the imported one is only wrapped
    assert not specs["Linknet-resnet18+quantization"].trains
    assert specs["Linknet-resnet18+quantization"].checkpoint == specs["Linknet-resnet18"].checkpoint
    ensemble = specs[ENSEMBLE]
    assert ensemble.members == ("Unet-resnet18", "Linknet-resnet18") and ensemble.twin is None
    # an imported member is scored under the first seed only, and so is the ensemble it joins
    assert replicates(config, ensemble) == [(0, 1)] and replicates(config, specs["Unet-resnet18+pgd_at"]) == [(0, 1), (0, 2)]


def test_each_model_gets_the_attacks_that_apply_to_its_defense(config):
    specs = defended_specs(config)
    # SEA's js goes with apgd only
    plain = {(job.label, job.attack_loss) for job in attack_jobs(config)}
    assert plain == {("fgsm", "bce"), ("apgd", "bce"), ("apgd", "js")}

    def labels(name):
        return {(job.label, job.attack_loss) for job in model_attack_jobs(config, specs[name])}

    assert labels("Unet-resnet18") == plain and labels(ENSEMBLE) == plain
    # the transfer is made with defense.transfer_method (pgd), which takes bce but not js
    assert labels("Unet-resnet18+pgd_at") == plain | {(TRANSFER, "bce")}
    assert labels("Unet-resnet18+smoothing") == plain | {("fgsm+eot", "bce"), ("apgd+eot", "bce"),
                                                         ("apgd+eot", "js"), (TRANSFER, "bce")}
    assert labels("Unet-resnet18+quantization") - plain == {("fgsm+bpda", "bce"), ("apgd+bpda", "bce"),
                                                            ("apgd+bpda", "js"), (TRANSFER, "bce")}
    transfer = next(job for job in model_attack_jobs(config, specs["Unet-resnet18+pgd_at"]) if job.label == TRANSFER)
    assert (transfer.method, transfer.variant.label) == ("pgd", "standard")


def test_apgd_runs_the_standard_loss_order_only(config):
    config["attack"]["loss_argument_order"] = ["standard", "study"]
    jobs = {(job.method, job.variant.label) for job in attack_jobs(config)}
    assert ("apgd", "standard-study-grey") not in jobs and ("fgsm", "standard-study-grey") in jobs


def test_each_job_settings_build_their_sweep():
    apgd = Sweep.from_settings(json.dumps({"method": "apgd", "apgd": {"steps": 7}, "eot": {"draws": 3}}))
    assert (apgd.method, apgd.settings.steps, apgd.eot_draws, apgd.variant.label) == ("apgd", 7, 3, "standard")
    assert apgd.method_settings["momentum"] == 0.75 and "input" not in apgd.method_settings
    fgsm = Sweep.from_settings(json.dumps({"method": "fgsm", "step": "study"}))
    assert (fgsm.variant.label, fgsm.eot_draws) == ("study-standard-grey", settings.default("attack.eot.draws"))


def tiny_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("Unet", "resnet18", classes=2).eval()


def test_the_scored_and_the_attacked_model_of_each_defense():
    base = tiny_unet()
    smoothing = {"n": 4, "n0": 2}
    assert scored_model(base, "pgd_at", {}, 0) is base
    assert isinstance(scored_model(base, "smoothing", smoothing, 0), SmoothedModel)
    smoothed = scored_model(base, "smoothing", smoothing, 0)
    one_draw = attacked_model(base, smoothed, "smoothing", smoothing, "plain", 8)
    eot = attacked_model(base, smoothed, "smoothing", smoothing, "eot", 8)
    assert isinstance(one_draw, ExpectationOverTransformation) and (one_draw.draws, eot.draws) == (1, 8)
    inputs = torch.rand(2, 3, 32, 32)
    purified = scored_model(base, "quantization", {"levels": 4}, 0)
    through = attacked_model(base, purified, "quantization", {"levels": 4}, "bpda", 8)
    with torch.no_grad():
        assert torch.equal(purified(inputs), through(inputs)), "BPDA changes the backward pass only"
    with pytest.raises(ValueError, match="attack 'eot' does not apply to defense 'quantization'"):
        attacked_model(base, purified, "quantization", {"levels": 4}, "eot", 8)
    with pytest.raises(ValueError, match="does not apply to defense 'none'"):
        attacked_model(base, base, "none", {}, "bpda", 8)


def test_smoothing_trains_its_base_with_noise_at_its_sigma():
    make = training_batch_maker("smoothing", {"sigma": 0.5})
    images = torch.zeros(4, 16, 16)
    noisy = make(None, images, None, None, torch.Generator().manual_seed(0))
    assert abs(float(noisy.std()) - 0.5) < 0.05
    assert training_batch_maker("quantization", {"levels": 8}) is None and training_batch_maker("none", {}) is None
    with pytest.raises(ValueError, match="defense.smoothing.sigma"):
        training_batch_maker("smoothing", {"sigma": -1})


def test_the_ensemble_is_one_checkpoint_that_rebuilds_its_members(tmp_path):
    torch.manual_seed(0)
    members = [build_model("Unet", "resnet18", classes=2).eval(), build_model("Linknet", "resnet18", classes=2).eval()]
    ensemble = Ensemble(members).eval()
    cards = [{"model": "Unet-resnet18", "arch": "Unet", "encoder": "resnet18", "in_channels": 3},
             {"model": "Linknet-resnet18", "arch": "Linknet", "encoder": "resnet18", "in_channels": 3}]
    save_ensemble(tmp_path / "ensemble.safetensors", ensemble, cards, ("grey", "white"))
    loaded, metadata = load_model(tmp_path / "ensemble.safetensors", ENSEMBLE, "Unet-resnet18+Linknet-resnet18")
    assert metadata["members"] == [{k: card[k] for k in ("arch", "encoder", "in_channels")} for card in cards]
    inputs = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded(inputs).numpy(), ensemble(inputs).numpy())


def test_the_defense_is_part_of_what_a_resumed_training_must_match(tmp_path):
    from advseg.training import TrainingSettings, resume_fingerprint

    class Fold:
        fingerprint, class_names = "data", ("grey",)

    training = settings.from_mapping(TrainingSettings, {}, "training", seed=0)
    plain = resume_fingerprint(training, Fold(), "Unet", "resnet18")
    assert plain == resume_fingerprint(training, Fold(), "Unet", "resnet18", None)
    noise = resume_fingerprint(training, Fold(), "Unet", "resnet18", {"defense": "noise", "settings": {"sigma": 0.1}})
    other = resume_fingerprint(training, Fold(), "Unet", "resnet18", {"defense": "noise", "settings": {"sigma": 0.2}})
    assert len({plain, noise, other}) == 3
