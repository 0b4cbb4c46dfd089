"""Model construction by name, parameter counts and the grey-to-RGB input."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch

from advseg.models import as_model_input, build_model, count_parameters, model_name

torch.set_num_threads(1)


@pytest.mark.parametrize(("arch", "encoder", "classes"), [
    ("Unet", "resnet18", 3),
    ("FPN", "mobilenet_v2", 2),
    ("Linknet", "resnet18", 1),
])
def test_count_parameters_matches_smp(arch, encoder, classes):
    ours = build_model(arch, encoder, classes)
    reference = smp.create_model(arch, encoder_name=encoder, encoder_weights=None, in_channels=3, classes=classes)
    assert type(ours) is type(reference)
    assert count_parameters(ours) == sum(p.numel() for p in reference.parameters())


def test_unet_resnet18_parameter_count():
    assert count_parameters(build_model("Unet", "resnet18", 3)) == 14_328_499


def test_count_parameters_counts_trainable_only():
    model = build_model("FPN", "mobilenet_v2", 3)
    total = count_parameters(model)
    frozen = sum(p.numel() for p in model.encoder.parameters())
    for parameter in model.encoder.parameters():
        parameter.requires_grad_(False)
    assert count_parameters(model) == total - frozen > 0


def test_build_model_output_shape():
    model = build_model("FPN", "mobilenet_v2", 3).eval()
    with torch.no_grad():
        logits = model(as_model_input(torch.rand(2, 32, 32)))
    assert logits.shape == (2, 3, 32, 32)


def test_build_model_unknown_arch():
    with pytest.raises(ValueError) as error:
        build_model("Unet3D", "resnet18", 3)
    message = str(error.value)
    assert "model.arch" in message and "'Unet3D'" in message
    for arch in ("Unet", "FPN", "DeepLabV3Plus", "Segformer"):
        assert arch in message


def test_build_model_unknown_encoder():
    with pytest.raises(ValueError) as error:
        build_model("Unet", "resnet19", 3)
    message = str(error.value)
    assert "model.encoder" in message and "'resnet19'" in message
    for encoder in ("resnet18", "resnet34", "mobilenet_v2"):
        assert encoder in message


def test_as_model_input_copies_grey_to_three_channels():
    images = torch.rand(4, 8, 6)
    x = as_model_input(images)
    assert x.shape == (4, 3, 8, 6)
    for channel in range(3):
        assert torch.equal(x[:, channel], images)


def test_as_model_input_gradient_sums_the_channels():
    images = torch.rand(2, 5, 5, requires_grad=True)
    weights = torch.tensor([1.0, 2.0, 4.0]).reshape(1, 3, 1, 1)
    (as_model_input(images) * weights).sum().backward()
    assert torch.equal(images.grad, torch.full((2, 5, 5), 7.0))


def test_model_name():
    assert model_name("Unet", "resnet18") == "Unet-resnet18"
