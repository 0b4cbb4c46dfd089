"""Typed settings from config sections, and the axes the workflow expands over."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from advseg.config import (ITERATIVE_DEFAULTS, Variant, attack_jobs, correlation_eps, eps_label, method_settings,
                           methods, model_specs, replicates, transfer_eps)
from advseg.settings import as_dict, from_mapping
from advseg.training import TrainingSettings

# --- advseg.settings.from_mapping -------------------------------------------------------


def test_from_mapping_builds_the_dataclass():
    settings = from_mapping(TrainingSettings, {"epochs": 3, "lr": 0.01, "loss": "bce", "augment": False},
                            "training")
    assert settings == TrainingSettings(epochs=3, lr=0.01, loss="bce", augment=False)
    assert settings.batch_size == TrainingSettings().batch_size  # defaults fill the rest


def test_from_mapping_accepts_json_text():
    text = json.dumps({"epochs": 2, "min_lr": 1e-6, "seed": 7})
    assert from_mapping(TrainingSettings, text, "training") == TrainingSettings(epochs=2, min_lr=1e-6, seed=7)
    assert from_mapping(TrainingSettings, "{}", "training") == TrainingSettings()


def test_int_for_float_becomes_float():
    settings = from_mapping(TrainingSettings, {"lr": 1, "weight_decay": 0}, "training")
    assert type(settings.lr) is float and settings.lr == 1.0
    assert type(settings.weight_decay) is float and settings.weight_decay == 0.0


def test_unknown_key_names_section_and_key():
    with pytest.raises(ValueError) as error:
        from_mapping(TrainingSettings, {"epochs": 2, "learning_rate": 0.1}, "training")
    message = str(error.value)
    assert message.startswith("training:") and "learning_rate" in message
    assert "lr" in message  # the known keys are listed


@pytest.mark.parametrize(("key", "value"), [
    ("epochs", "20"),      # string for int
    ("epochs", 2.5),       # float for int
    ("batch_size", True),  # bool for int
    ("lr", True),          # bool for float
    ("seed", None),
])
def test_wrong_type_names_section_and_key(key, value):
    with pytest.raises(ValueError) as error:
        from_mapping(TrainingSettings, {key: value}, "training")
    assert f"training.{key}" in str(error.value)


@pytest.mark.parametrize(("key", "value"), [
    pytest.param("lr", "fast", id="string-for-float"),
    pytest.param("lr", None, id="null-for-float"),
    pytest.param("augment", "no", id="string-for-bool"),
    pytest.param("loss", 3, id="int-for-string"),
])
def test_other_wrong_types_name_section_and_key(key, value):
    with pytest.raises(ValueError) as error:
        from_mapping(TrainingSettings, {key: value}, "training")
    assert f"training.{key}" in str(error.value)


def test_as_dict_round_trips():
    settings = TrainingSettings(epochs=4, lr=0.5)
    assert from_mapping(TrainingSettings, as_dict(settings), "training") == settings


# --- advseg.config: the DAG's axes ----------------------------------------------------------

SCHEMA = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"


def filled(**sections) -> dict:
    """A config with the schema's defaults filled in, as the Snakefile sees it."""
    from snakemake.utils import validate

    config = {"models": [{"arch": "Unet", "encoder": "resnet18"}], **copy.deepcopy(sections)}
    validate(config, str(SCHEMA))
    return config


def test_correlation_eps_defaults_to_the_middle_eps():
    assert correlation_eps(filled(attack={"epsilons": [0.05, 0.002, 0.01]})) == 0.01
    assert correlation_eps(filled(attack={"epsilons": [0.4, 0.1, 0.2, 0.3]})) == 0.3
    assert correlation_eps(filled(attack={"epsilons": [0.3]})) == 0.3
    assert correlation_eps(filled(attack={"epsilons": [0.1, 0.2]}, report={"correlation_eps": 0.2})) == 0.2
    config = filled(attack={"epsilons": [0.1, 0.2, 0.3]}, report={"transfer_eps": 0.3})
    assert transfer_eps(config) == 0.3 and transfer_eps(filled(attack={"epsilons": [0.1, 0.2, 0.3]})) == 0.2


def test_attack_jobs_skip_combinations_that_change_nothing():
    config = filled(attack={"methods": ["fgsm", "pgd", "segpgd"], "losses": ["bce", "dicefocal"],
                            "step": ["standard", "study"]})
    jobs = {(job.method, job.variant.label, job.attack_loss) for job in attack_jobs(config)}
    assert jobs == {("fgsm", "standard", "bce"), ("fgsm", "standard", "dicefocal"),
                    ("fgsm", "study-standard-grey", "bce"), ("fgsm", "study-standard-grey", "dicefocal"),
                    ("pgd", "standard", "bce"), ("pgd", "standard", "dicefocal"),
                    ("segpgd", "standard", "bce")}, "study step is FGSM's; SegPGD weights BCE itself"


def test_method_shorthand_and_settings_defaults():
    config = filled(attack={"method": "pgd", "pgd": {"steps": 3}})
    assert methods(config) == ["pgd"]
    assert method_settings(config, "pgd") == {"steps": 3, "alpha": 0.25, "random_start": True, "restarts": 1}
    assert method_settings(config, "fgsm") == {}


def test_iterative_defaults_match_the_schema():
    schema = yaml.safe_load(SCHEMA.read_text())["$defs"]["iterative_attack"]["properties"]
    assert {key: value["default"] for key, value in schema.items()} == ITERATIVE_DEFAULTS


def test_variant_labels():
    assert Variant("standard", "standard", "grey").label == "standard"
    assert Variant("study", "study", "channels").label == "study-study-channels"


def test_models_are_named_and_imported_ones_are_not_repeated_per_seed(tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"")
    config = filled(models=[{"arch": "Unet", "encoder": "resnet18"},
                            {"arch": "Unet", "encoder": "resnet18", "name": "mine", "checkpoint": str(weights)}],
                    data={"folds_to_run": [0, 2]}, seeds=[1, 2])
    specs = model_specs(config)
    assert list(specs) == ["Unet-resnet18", "mine"] and specs["mine"].key == "models[1]"
    assert replicates(config, specs["Unet-resnet18"]) == [(0, 1), (0, 2), (2, 1), (2, 2)]
    assert replicates(config, specs["mine"]) == [(0, 1), (2, 1)]


@pytest.mark.parametrize(("eps", "label"), [(0.002, "0.002"), (1e-5, "1e-05"), (0.05, "0.05"), (0.1, "0.1"),
                                            (0.1234567, "0.1234567")])
def test_eps_label_is_exact(eps, label):
    assert eps_label(eps) == label
    assert float(label) == eps
