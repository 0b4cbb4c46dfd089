"""safetensors checkpoints: round trip, and every bad file is a ValueError naming it."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from advseg.checkpoints import load_model, read_metadata, save_weights
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
    assert metadata == {"arch": "FPN", "encoder": "mobilenet_v2", "class_names": list(CLASSES),
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
