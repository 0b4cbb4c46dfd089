"""advseg.catalog mirrors the names of the pinned segmentation-models-pytorch release."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp

from advseg import catalog


def test_encoder_names_match_smp():
    assert catalog.encoder_names() == tuple(sorted(smp.encoders.get_encoder_names()))


def test_architectures_match_smp():
    mapping = smp.MODEL_ARCHITECTURES_MAPPING
    assert sorted(catalog.ARCHITECTURES) == sorted(cls.__name__ for cls in mapping.values())
    assert sorted(name.lower() for name in catalog.ARCHITECTURES) == sorted(mapping)
    for name in catalog.ARCHITECTURES:
        assert mapping[name.lower()].__name__ == name
    assert len(set(catalog.ARCHITECTURES)) == len(catalog.ARCHITECTURES)


def test_check_model_accepts_known_and_timm_names_and_names_the_key_of_others():
    assert catalog.check_model("models[0]", "Unet", "resnet18") is None
    assert catalog.check_model("models[0]", "FPN", "tu-anything") is None  # timm names are checked when built
    with pytest.raises(ValueError, match=r"^models\[1\]\.encoder: unknown value 'resnet19'"):
        catalog.check_model("models[1]", "Unet", "resnet19")
    with pytest.raises(ValueError, match=r"^models\[2\]\.arch: unknown value 'Unet3D'"):
        catalog.check_model("models[2]", "Unet3D", "tu-anything")


def test_check_choice_names_key_and_lists_sorted_choices():
    with pytest.raises(ValueError) as error:
        catalog.check_choice("a.b", "z", ("y", "x"))
    message = str(error.value)
    assert message.startswith("a.b: unknown value 'z'") and message.endswith("choose one of: x, y")



def test_the_build_check_leaves_weight_initialisation_as_it_was(tmp_path):
    """Initialisers are skipped only while the check builds on the meta device, even when a build fails."""
    import torch

    before = dict(vars(torch.nn.init))
    catalog.check_buildable([("models[0]", "Unet", "resnet18")], tmp_path / "cache.json")
    with pytest.raises(ValueError, match=r"models\[1\]: smp cannot build DPT"):
        catalog.check_buildable([("models[1]", "DPT", "resnet18")], tmp_path / "cache.json")
    assert dict(vars(torch.nn.init)) == before
    weight = torch.nn.init.constant_(torch.empty(3), 2.0)
    assert torch.equal(weight, torch.full((3,), 2.0))
