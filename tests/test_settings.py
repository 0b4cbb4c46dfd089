"""The schema as the one source of defaults, typed settings from config sections, and the
axes the workflow expands over."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import pkgutil
from pathlib import Path

import pytest

import advseg
from advseg import settings as schema
from advseg.apgd import APGDSettings
from advseg.attacks import AttackSettings
from advseg.config import correlation_eps, eps_label, transfer_eps
from advseg.grid import Variant, attack_jobs, job_settings, methods, model_specs, replicates, variants
from advseg.datasets import DataSettings
from advseg.defenses.smoothing import SmoothingSettings
from advseg.defenses.training_inputs import FastATSettings, NoiseSettings, PGDATSettings
from advseg.report.settings import ReportSettings
from advseg.settings import as_dict, default, fill, from_mapping
from advseg.training import TrainingSettings

# every settings class: the config key each of its fields comes from
SETTINGS_CLASSES = {
    TrainingSettings: {**{name: f"training.{name}" for name in schema.node("training")["properties"]},
                       "seed": "seeds"},
    DataSettings: {name: f"data.{name}" for name in schema.node("data")["properties"]},
    ReportSettings: {**{name: f"report.{name}" for name in schema.node("report")["properties"]},
                     "training_loss": "training.loss"},
    AttackSettings: {"method": "attack.method", **{name: f"attack.pgd.{name}" for name in schema.node("attack.pgd")
                                                   ["properties"]},
                     **{name: f"attack.{name}" for name in ("step", "loss_argument_order", "input")}},
    APGDSettings: {**{name: f"attack.apgd.{name}" for name in schema.node("attack.apgd")["properties"]},
                   "input": "attack.input"},
    **{cls: {name: f"defense.{section}.{name}" for name in schema.node(f"defense.{section}")["properties"]}
       for cls, section in ((SmoothingSettings, "smoothing"), (NoiseSettings, "noise"), (FastATSettings, "fast_at"),
                            (PGDATSettings, "pgd_at"))},
}


# --- the schema is the only place a default lives ----------------------------------------


def advseg_dataclasses() -> set[type]:
    found = set()
    for module in pkgutil.walk_packages(advseg.__path__, "advseg."):
        for value in vars(importlib.import_module(module.name)).values():
            if dataclasses.is_dataclass(value) and isinstance(value, type) and value.__module__ == module.name:
                found.add(value)
    return found


def test_every_settings_class_is_walked():
    """A new settings class (a dataclass named *Settings) must join SETTINGS_CLASSES, and so this walk."""
    assert {cls for cls in advseg_dataclasses() if cls.__name__.endswith("Settings")} == set(SETTINGS_CLASSES)


@pytest.mark.parametrize("cls", list(SETTINGS_CLASSES), ids=lambda cls: cls.__name__)
def test_settings_classes_hold_no_defaults_and_each_field_is_a_config_key(cls):
    fields = {field.name: field for field in dataclasses.fields(cls)}
    with_default = [name for name, field in fields.items()
                    if field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING]
    assert with_default == [], f"{cls.__name__}: defaults belong in {schema.SCHEMA_PATH.name}"
    assert set(fields) == set(SETTINGS_CLASSES[cls])
    for name, key in SETTINGS_CLASSES[cls].items():
        schema.node(key)  # raises KeyError naming a key the schema lacks


def test_every_key_a_settings_class_reads_has_its_default_in_the_schema():
    """Walk the schema: each key a settings class reads has a default there (or is one the user must
    give: attack.method names the job, seeds' items are the DAG's axis)."""
    chosen_per_job = {"attack.method", "seeds"}
    for cls, keys in SETTINGS_CLASSES.items():
        for name, key in keys.items():
            if key not in chosen_per_job:
                assert "default" in schema.node(key), f"{cls.__name__}.{name}: {key} has no default in the schema"


def test_the_workflow_reads_the_schema_the_package_ships():
    linked = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"
    assert linked.resolve() == schema.SCHEMA_PATH.resolve()


# --- filling a section from the schema -------------------------------------------------------


def test_fill_gives_every_default_at_every_depth():
    data = fill("data", {"name": "uwmadison", "uwmadison": {"root": "/data"}})
    assert data["uwmadison"] == {**default("data.uwmadison"), "root": "/data"}
    assert data["folds"] == schema.node("data.folds")["default"] and data["mni152"] == default("data.mni152")
    attack = fill("attack")
    assert attack["pgd"] == attack["cospgd"] == default("attack.pgd") != {}, "defaults behind a $ref too"
    assert fill("attack", '{"pgd": {"steps": 3}}')["pgd"] == {**default("attack.pgd"), "steps": 3}


def test_complete_fills_a_whole_config_and_its_list_items():
    config = schema.complete({"models": [{"arch": "Unet", "encoder": "resnet18"}]})
    assert config["models"][0]["in_channels"] == schema.node("models.in_channels")["default"]
    assert config["training"] == default("training") and config["results_dir"] == default("results_dir")


@pytest.mark.parametrize(("values", "message"), [
    ({"epochs": "20"}, "training.epochs: '20' is not of type 'integer'"),
    ({"epochs": 2.5}, "training.epochs: 2.5 is not of type 'integer'"),
    ({"batch_size": True}, "training.batch_size: True is not of type 'integer'"),
    ({"batch_size": 0}, "training.batch_size: 0 is less than the minimum of 1"),
    ({"lr": True}, "training.lr: True is not of type 'number'"),
    ({"lr": "fast"}, "training.lr: 'fast' is not of type 'number'"),
    ({"lr": None}, "training.lr: None is not of type 'number'"),
    ({"lr": float("inf")}, "training.lr: inf is not a finite number"),
    ({"augment": "no"}, "training.augment: 'no' is not of type 'boolean'"),
    ({"loss": 3}, "training.loss: 3 is not of type 'string'"),
    ({"loss": "hinge"}, "training.loss: 'hinge' is not one of"),
    ({"epochs": 2, "learning_rate": 0.1}, "training: Additional properties are not allowed ('learning_rate' was "
                                          "unexpected); known: epochs, batch_size, lr"),
])
def test_a_bad_value_names_section_and_key(values, message):
    with pytest.raises(ValueError) as error:
        fill("training", values)
    assert str(error.value).startswith(message)


# --- advseg.settings.from_mapping -------------------------------------------------------


def test_from_mapping_builds_the_dataclass_with_the_schemas_defaults():
    given = {"epochs": 3, "lr": 0.01, "loss": "bce", "augment": False}
    settings = from_mapping(TrainingSettings, given, "training", seed=7)
    assert as_dict(settings) == {**default("training"), **given, "seed": 7}
    assert from_mapping(TrainingSettings, json.dumps(given), "training", seed=7) == settings


def test_int_for_float_becomes_float():
    settings = from_mapping(TrainingSettings, {"lr": 1, "weight_decay": 0}, "training", seed=0)
    assert type(settings.lr) is float and settings.lr == 1.0
    assert type(settings.weight_decay) is float and settings.weight_decay == 0.0


def test_as_dict_round_trips():
    settings = from_mapping(TrainingSettings, {"epochs": 4, "lr": 0.5}, "training", seed=3)
    values = as_dict(settings)
    assert from_mapping(TrainingSettings, values, "training", seed=values.pop("seed")) == settings


def test_data_settings_are_the_data_section():
    chosen = from_mapping(DataSettings, '{"name": "uwmadison", "folds": 5, "folds_to_run": [4, 1], "guard": 0,'
                                        ' "uwmadison": {"root": "/data"}, "mni152": {"slab_thickness": 4}}', "data")
    assert chosen.folds_to_run == [4, 1] and chosen.guard == 0 and chosen.image_size == default("data.image_size")
    assert chosen.options == {**default("data.uwmadison"), "root": "/data"}
    assert chosen.description()["options"] == chosen.options and chosen.mni152["slab_thickness"] == 4


@pytest.mark.parametrize("values, key", [
    ({"fold": 0}, r"data: .*'fold' was unexpected"),
    ({"name": "brats"}, r"data\.name"),
    ({"folds_to_run": []}, r"data\.folds_to_run"),
    ({"folds_to_run": [1, 1]}, r"data\.folds_to_run: .*non-unique"),
    ({"folds_to_run": 0}, r"data\.folds_to_run"),
    ({"folds": 1}, r"data\.folds"),
    ({"guard": -1}, r"data\.guard"),
    ({"guard": True}, r"data\.guard"),
    ({"image_size": "64"}, r"data\.image_size"),
    ({"mni152": [1]}, r"data\.mni152"),
    ({"mni152": {"guard": 2}}, r"data\.mni152: .*'guard' was unexpected"),
])
def test_data_settings_errors_name_the_key(values, key):
    with pytest.raises(ValueError, match=key):
        from_mapping(DataSettings, values, "data")


# --- advseg.config: the DAG's axes ----------------------------------------------------------


def filled(**sections) -> dict:
    """A config with the schema's defaults filled in, as the Snakefile sees it."""
    return schema.complete({"models": [{"arch": "Unet", "encoder": "resnet18"}], **copy.deepcopy(sections)})


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


def test_the_study_protocol_adds_the_studys_own_attack_once():
    config = filled(attack={"methods": ["fgsm", "pgd"], "losses": ["bce", "dicefocal"], "study_protocol": True})
    jobs = {(job.method, job.variant.label, job.attack_loss) for job in attack_jobs(config)}
    assert jobs == {("fgsm", "standard", "bce"), ("fgsm", "standard", "dicefocal"), ("pgd", "standard", "bce"),
                    ("pgd", "standard", "dicefocal"), ("fgsm", "study-study-channels", "bce"),
                    ("fgsm", "study-study-channels", "dicefocal")}, "the study's step is FGSM's"
    crossed = filled(attack={"step": ["standard", "study"], "loss_argument_order": ["standard", "study"],
                             "input": ["grey", "channels"], "study_protocol": True})
    assert [v.label for v in variants(crossed)].count("study-study-channels") == 1


def test_method_shorthand_and_each_jobs_settings():
    config = filled(attack={"method": "pgd", "pgd": {"steps": 3}})
    assert methods(config) == ["pgd"]
    job = attack_jobs(config)[0]
    assert job_settings(config, job) == {"method": "pgd", "pgd": {**default("attack.pgd"), "steps": 3},
                                         "step": "standard", "loss_argument_order": "standard", "input": "grey"}
    settings = AttackSettings.from_section(job_settings(config, job))
    assert (settings.method, settings.steps, settings.variant) == ("pgd", 3, job.variant.label)
    fgsm = filled()
    assert job_settings(fgsm, attack_jobs(fgsm)[0])["fgsm"] == {}


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
