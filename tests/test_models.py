"""Model construction by name, parameter counts and the grey-to-RGB input."""

from __future__ import annotations

import pytest
import torch

from advseg.models import as_model_input, build_model, count_parameters, input_channels, model_name

torch.set_num_threads(1)


# Counts published in REFERENCE.md (smp 0.6.0, 3 input channels, 3 classes), to 10k parameters.
@pytest.mark.parametrize(("arch", "encoder", "millions"), [
    ("FPN", "resnet18", 13.05),
    ("Unet", "mobilenet_v2", 6.63),
])
def test_count_parameters_matches_published_counts(arch, encoder, millions):
    assert abs(count_parameters(build_model(arch, encoder, 3)) - millions * 1e6) <= 5_000


# Each class adds one output channel to the head's last convolution: Unet's is a 3x3
# convolution over 16 channels (16*9 weights + 1 bias = 145), FPN's a 1x1 over 128 (129).
@pytest.mark.parametrize(("arch", "encoder", "per_class"), [("Unet", "resnet18", 145), ("FPN", "mobilenet_v2", 129)])
def test_each_class_adds_one_head_filter(arch, encoder, per_class):
    assert count_parameters(build_model(arch, encoder, 3)) - count_parameters(build_model(arch, encoder, 1)) \
        == 2 * per_class


# A 1-channel model drops two input channels of the first convolution (no bias):
# resnet18's is 7x7 with 64 filters (2*49*64 = 6272), mobilenet_v2's 3x3 with 32 (2*9*32 = 576).
@pytest.mark.parametrize(("encoder", "fewer"), [("resnet18", 6272), ("mobilenet_v2", 576)])
def test_one_input_channel_shrinks_the_first_convolution(encoder, fewer):
    three, one = build_model("Unet", encoder, 3), build_model("Unet", encoder, 3, in_channels=1)
    assert count_parameters(three) - count_parameters(one) == fewer
    assert input_channels(three) == 3 and input_channels(one) == 1


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


def test_one_channel_model_sees_the_grey_slice():
    """The 3-channel grey copy reaches a 1-channel model as the grey slice itself, gradient included."""
    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", 2, in_channels=1).eval()
    grey = torch.rand(2, 32, 32, requires_grad=True)
    logits = model(as_model_input(grey))
    direct = model(grey.detach().unsqueeze(1))           # what the model computes on one channel
    assert logits.shape == (2, 2, 32, 32)
    assert torch.allclose(logits, direct, atol=1e-5)
    logits.sum().backward()
    alone = grey.detach().clone().requires_grad_(True)
    model(alone.unsqueeze(1)).sum().backward()
    assert torch.allclose(grey.grad, alone.grad, rtol=1e-4, atol=1e-6)


def test_bad_in_channels_names_the_key():
    with pytest.raises(ValueError, match=r"models\[1\]\.in_channels: 2"):
        build_model("Unet", "resnet18", 3, in_channels=2, key="models[1]")


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """The real Hugging Face client with no network and an empty cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_pretrained_encoder_offline_names_the_key(offline_hub):
    with pytest.raises(ValueError) as error:
        build_model("Unet", "resnet18", 3, encoder_weights="imagenet", key="models[0]")
    message = str(error.value)
    assert message.startswith("models[0].encoder_weights: cannot load 'imagenet' weights for encoder 'resnet18'")
    assert "internet" in message and "null" in message


def test_unknown_pretrained_weights_name_the_key(offline_hub):
    with pytest.raises(ValueError, match=r"models\[3\]\.encoder_weights: cannot load 'radimagenet'"):
        build_model("Unet", "resnet18", 3, encoder_weights="radimagenet", key="models[3]")


def test_pretrained_weights_reach_the_encoder(monkeypatch, tmp_path):
    """With the hub answering (faked at hf_hub_download), the downloaded tensors end up in the encoder."""
    from safetensors.torch import save_file
    import segmentation_models_pytorch.encoders as smp_encoders

    reference = build_model("Unet", "resnet18", 3).encoder.state_dict()
    weights = {name: torch.full_like(tensor, 0.25) if tensor.is_floating_point() else tensor
               for name, tensor in reference.items()}
    save_file(weights, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(smp_encoders, "hf_hub_download",
                        lambda repo_id, filename, revision=None, **_: str(tmp_path / filename))
    model = build_model("Unet", "resnet18", 3, encoder_weights="imagenet")
    assert torch.equal(model.encoder.conv1.weight, torch.full((64, 3, 7, 7), 0.25))
