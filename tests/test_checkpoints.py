"""Checkpoints: safetensors round trip, weights trained elsewhere, and every bad file is a ValueError naming it."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file

from advseg.checkpoints import load_external_state_dict, load_model, read_metadata, save_weights
from advseg.models import as_model_input, build_model

torch.set_num_threads(1)
CLASSES = ("grey_matter", "white_matter", "other_brain")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An FPN/mobilenet_v2 with non-default BatchNorm statistics, saved once."""
    torch.manual_seed(0)
    model = build_model("FPN", "mobilenet_v2", len(CLASSES))
    model.train()
    with torch.no_grad():  # move the running statistics away from their initial values
        model(as_model_input(torch.rand(4, 32, 32)))
    model.eval()
    path = tmp_path_factory.mktemp("ckpt") / "nested" / "weights.safetensors"
    save_weights(path, model, "FPN", "mobilenet_v2", CLASSES, extra={"best_epoch": 3, "training": {"lr": 0.001}})
    return model, path


def test_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded, metadata = load_model(path, arch="FPN", encoder="mobilenet_v2")
    assert not loaded.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    x = as_model_input(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert metadata == {"arch": "FPN", "encoder": "mobilenet_v2", "class_names": list(CLASSES), "in_channels": 3,
                        "best_epoch": 3, "training": {"lr": 0.001}}
    assert read_metadata(path) == metadata


def test_load_without_expectations(saved):
    _, path = saved
    loaded, metadata = load_model(path)
    assert type(loaded).__name__ == "FPN" and metadata["class_names"] == list(CLASSES)


@pytest.mark.parametrize(("key", "expected"), [("arch", "Unet"), ("encoder", "resnet18")])
def test_wrong_expected_model_names_the_file(saved, key, expected):
    _, path = saved
    with pytest.raises(ValueError) as error:
        load_model(path, **{key: expected})
    assert str(path) in str(error.value) and repr(expected) in str(error.value)


def test_file_is_safetensors_not_pickle(saved):
    _, path = saved
    raw = path.read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    assert 8 + header_length < len(raw)
    header = json.loads(raw[8:8 + header_length])
    assert header["__metadata__"]["arch"] == "FPN"
    assert header["__metadata__"]["encoder"] == "mobilenet_v2"
    assert json.loads(header["__metadata__"]["class_names"]) == list(CLASSES)
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # neither pickle nor torch.save zip


@pytest.mark.parametrize("content", [
    pytest.param(lambda raw: raw[: len(raw) // 2], id="truncated"),
    pytest.param(lambda raw: raw[:5], id="header-cut"),
    pytest.param(lambda raw: b"", id="empty"),
    pytest.param(lambda raw: b"not a checkpoint at all\n" * 20, id="garbage"),
])
def test_unreadable_file_names_the_file(saved, tmp_path, content):
    _, good = saved
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content(good.read_bytes()))
    with pytest.raises(ValueError) as error:
        load_model(path)
    assert str(path) in str(error.value)


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "absent.safetensors"
    with pytest.raises(ValueError) as error:
        load_model(path)
    assert str(path) in str(error.value)


def test_metadata_lacking_model_names_the_file(saved, tmp_path):
    model, _ = saved
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(ValueError) as error:
        load_model(path)
    assert str(path) in str(error.value) and "arch" in str(error.value)


def test_tensors_that_do_not_fit_the_metadata_name_the_file(tmp_path):
    model = build_model("Unet", "resnet18", 3)
    path = tmp_path / "edited.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"arch": "Unet", "encoder": "resnet34", "class_names": json.dumps(list(CLASSES))})
    with pytest.raises(ValueError) as error:
        load_model(path)
    assert str(path) in str(error.value) and "resnet34" in str(error.value)


def test_class_count_that_does_not_fit_names_the_file(saved, tmp_path):
    model, _ = saved
    path = tmp_path / "two_classes.safetensors"
    save_weights(path, model, "FPN", "mobilenet_v2", CLASSES[:2])
    with pytest.raises(ValueError) as error:
        load_model(path)
    assert str(path) in str(error.value)


def test_one_channel_model_round_trip(tmp_path):
    torch.manual_seed(2)
    model = build_model("Unet", "mobilenet_v2", 2, in_channels=1).eval()
    path = tmp_path / "one.safetensors"
    save_weights(path, model, "Unet", "mobilenet_v2", ("a", "b"))
    loaded, metadata = load_model(path)
    assert metadata["in_channels"] == 1 and loaded.encoder._in_channels == 1
    x = as_model_input(torch.rand(2, 32, 32))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert [path.name for path in tmp_path.iterdir()] == ["one.safetensors"], "no temporary file is left"


# --- weights trained elsewhere ------------------------------------------------------------


def external_model(arch="Unet", encoder="resnet18", classes=3, in_channels=3):
    """A model built with smp directly (not through advseg), BatchNorm statistics moved."""
    torch.manual_seed(5)
    model = smp.create_model(arch, encoder_name=encoder, encoder_weights=None, in_channels=in_channels,
                             classes=classes)
    model.train()
    with torch.no_grad():
        model(torch.rand(2, in_channels, 32, 32))
    return model.eval()


@pytest.fixture(scope="module")
def study_pt(tmp_path_factory):
    """A Unet-resnet18 state_dict written with torch.save, as the study's .pt files are."""
    model = external_model()
    path = tmp_path_factory.mktemp("external") / "unet_resnet18.pt"
    torch.save(model.state_dict(), path)
    return model, path


def outputs(model, grey, in_channels=3):
    with torch.no_grad():
        return model(grey.unsqueeze(1).expand(-1, in_channels, -1, -1))


def test_torch_save_state_dict_gives_the_same_model(study_pt):
    original, path = study_pt
    model = load_external_state_dict(path, "Unet", "resnet18", classes=3)
    assert not model.training
    grey = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(3))
    assert torch.equal(outputs(model, grey), outputs(original, grey))


@pytest.mark.parametrize("wrap", [
    pytest.param(lambda state: {"state_dict": state, "epoch": 14}, id="nested-state_dict"),
    pytest.param(lambda state: {"model": state, "optimizer": {"lr": 0.1}}, id="nested-model"),
    pytest.param(lambda state: {f"module.{k}": v for k, v in state.items()}, id="dataparallel-prefix"),
    pytest.param(lambda state: {"state_dict": {f"model.{k}": v for k, v in state.items()}}, id="lightning"),
])
def test_wrapped_state_dicts_are_accepted(study_pt, tmp_path, wrap):
    original, _ = study_pt
    path = tmp_path / "wrapped.pt"
    torch.save(wrap(original.state_dict()), path)
    model = load_external_state_dict(path, "Unet", "resnet18", classes=3)
    for name, tensor in original.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_safetensors_without_metadata_one_channel(tmp_path):
    original = external_model("FPN", "mobilenet_v2", classes=2, in_channels=1)
    path = tmp_path / "fpn.safetensors"
    save_file({k: v.contiguous() for k, v in original.state_dict().items()}, str(path))
    model = load_external_state_dict(path, "FPN", "mobilenet_v2", classes=2, in_channels=1)
    grey = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(4))
    expected = outputs(original, grey, in_channels=1)
    assert torch.allclose(outputs(model, grey, in_channels=3), expected, atol=1e-5)  # the grey copy
    saved = tmp_path / "card.safetensors"                                             # and back through advseg
    save_weights(saved, model, "FPN", "mobilenet_v2", ("a", "b"))
    assert torch.allclose(outputs(load_model(saved)[0], grey), expected, atol=1e-5)


def external_error(path, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as error:
        load_external_state_dict(path, *args, **kwargs)
    assert str(path) in str(error.value)
    return str(error.value)


def test_other_architecture_names_the_first_missing_key(study_pt):
    _, path = study_pt
    message = external_error(path, "FPN", "resnet18", classes=3, key="models[1]")
    assert "missing key 'decoder.p5.weight'" in message and "models[1].arch" in message


def test_other_class_count_names_the_head(study_pt):
    _, path = study_pt
    message = external_error(path, "Unet", "resnet18", classes=2)
    assert "key 'segmentation_head.0.weight' has shape (3, 16, 3, 3), the model expects (2, 16, 3, 3)" in message


def test_other_input_channels_names_the_first_convolution(study_pt):
    _, path = study_pt
    message = external_error(path, "Unet", "resnet18", classes=3, in_channels=1)
    assert "key 'encoder.conv1.weight' has shape (64, 3, 7, 7), the model expects (64, 1, 7, 7)" in message


def test_extra_key_is_named(study_pt, tmp_path):
    original, _ = study_pt
    path = tmp_path / "extra.pt"
    torch.save({**original.state_dict(), "temperature": torch.ones(1)}, path)
    assert "unexpected key 'temperature'" in external_error(path, "Unet", "resnet18", classes=3)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(build_model("FPN", "mobilenet_v2", 1), path)  # a whole nn.Module: code, not weights
    assert "weights_only" in external_error(path, "FPN", "mobilenet_v2", classes=1)


@pytest.mark.parametrize(("content", "expected"), [
    pytest.param(lambda raw: raw[: len(raw) // 2], "not a readable state_dict", id="truncated"),
    pytest.param(lambda raw: b"", "not a readable state_dict", id="empty"),
    pytest.param(lambda raw: b"garbage " * 30, "not a readable state_dict", id="garbage"),
])
def test_unreadable_external_file(study_pt, tmp_path, content, expected):
    _, good = study_pt
    path = tmp_path / "bad.pt"
    path.write_bytes(content(good.read_bytes()))
    assert expected in external_error(path, "Unet", "resnet18", classes=3)


@pytest.mark.parametrize(("saved", "expected"), [
    pytest.param([torch.ones(2)], "holds a list", id="list"),
    pytest.param({}, "holds a dict, not a state_dict", id="empty-dict"),
    pytest.param({"encoder.conv1.weight": torch.ones(1), "epoch": 3}, "entry 'epoch' is not a tensor but int", id="not-tensors"),
])
def test_not_a_state_dict(tmp_path, saved, expected):
    path = tmp_path / "odd.pt"
    torch.save(saved, path)
    assert expected in external_error(path, "Unet", "resnet18", classes=3)


def test_missing_external_file(tmp_path):
    assert "not found" in external_error(tmp_path / "nowhere.pt", "Unet", "resnet18", classes=3)


@pytest.mark.parametrize("config", ["folder.yaml", "nifti.yaml"])
def test_example_configs_import_the_example_weights(tmp_path, monkeypatch, config):
    import importlib.util

    import yaml

    tests = Path(__file__).parent
    spec = importlib.util.spec_from_file_location("make_examples", tests / "data" / "make_examples.py")
    make_examples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_examples)
    settings = yaml.safe_load((tests / "configs" / config).read_text())
    monkeypatch.chdir(tmp_path)
    imported = [(i, model) for i, model in enumerate(settings["models"]) if "checkpoint" in model]
    assert imported
    make_examples.write_checkpoints(Path(imported[0][1]["checkpoint"]).parent)
    classes = len(settings["data"][settings["data"]["name"]]["classes"])
    for index, model in imported:
        loaded = load_external_state_dict(Path(model["checkpoint"]), model["arch"], model["encoder"], classes,
                                          in_channels=model.get("in_channels", 3), key=f"models[{index}]")
        with torch.no_grad():
            assert loaded(as_model_input(torch.rand(1, 32, 32))).shape == (1, classes, 32, 32)
