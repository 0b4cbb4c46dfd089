"""Typed settings from config sections, and the cross-field config checks."""

from __future__ import annotations

import copy
import json

import pytest

from advseg.config import check_config, correlation_eps, eps_label
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


# --- advseg.config ----------------------------------------------------------------------

VALID = {
    "data": {"name": "mni152", "image_size": 32, "folds": 10, "fold": 0},
    "models": [{"arch": "Unet", "encoder": "resnet18"}, {"arch": "FPN", "encoder": "mobilenet_v2"}],
    "training": {"epochs": 1},
    "attack": {"losses": ["bce", "dicefocal"], "epsilons": [0.05, 0.002, 0.01]},
    "report": {"correlation_eps": 0.01},
    "seed": 0,
}


def config(**changes) -> dict:
    result = copy.deepcopy(VALID)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        result[section][key] = value
    return result


def test_valid_config_passes():
    check_config(config())
    check_config(config(report__correlation_eps=None))


def test_unknown_arch_names_the_model():
    bad = config()
    bad["models"][1]["arch"] = "Unet4"
    with pytest.raises(ValueError, match=r"^models\[1\]\.arch: .*'Unet4'"):
        check_config(bad)


def test_unknown_encoder_names_the_model():
    bad = config()
    bad["models"][0]["encoder"] = "resnet7"
    with pytest.raises(ValueError, match=r"^models\[0\]\.encoder: .*'resnet7'"):
        check_config(bad)


@pytest.mark.parametrize("fold", [10, 11])
def test_fold_not_below_folds(fold):
    with pytest.raises(ValueError, match=r"^data\.fold:"):
        check_config(config(data__fold=fold))


def test_correlation_eps_must_be_attacked():
    with pytest.raises(ValueError, match=r"^report\.correlation_eps:"):
        check_config(config(report__correlation_eps=0.02))


def test_correlation_eps_default_is_the_largest():
    assert correlation_eps(config(report__correlation_eps=None)) == 0.05
    assert correlation_eps(config()) == 0.01


@pytest.mark.parametrize(("eps", "label"), [(0.002, "0.002"), (1e-5, "1e-05"), (0.05, "0.05"), (0.1, "0.1")])
def test_eps_label(eps, label):
    assert eps_label(eps) == label
    assert float(label) == eps
