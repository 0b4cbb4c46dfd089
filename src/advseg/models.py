"""Segmentation models by name, built from segmentation-models-pytorch.

Every caller feeds grey slices copied to 3 channels (:func:`as_model_input`) and gets one
sigmoid logit map per class (multi-label), as in the study. A model built with
``in_channels=1`` (for weights trained elsewhere on single-channel input) takes that same
3-channel input and averages it back to one channel before its first layer: for the grey
copy this is the grey slice itself, and the gradient reaching the grey slice is the same
as the 1-channel model's, so training, attacks and scoring need no second code path.

Weights start random unless ``encoder_weights`` names smp's pretrained encoder weights
(e.g. ``imagenet``), which are downloaded from the Hugging Face hub on first use.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import nn

from advseg import catalog

IN_CHANNELS = 3
INPUT_CONVENTIONS = (1, 3)  # grey copied to 3 channels (the study's) or the grey slice alone


def _grey_copy_to_one_channel(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook of 1-channel models: the 3-channel grey copy becomes one channel."""
    x = args[0]
    if x.ndim == 4 and x.shape[1] == IN_CHANNELS:
        return (x.mean(dim=1, keepdim=True), *args[1:])
    return args


def build_model(arch: str, encoder: str, classes: int, in_channels: int = IN_CHANNELS,
                encoder_weights: str | None = None, key: str = "model") -> nn.Module:
    """An smp model; ``key`` is the config entry (e.g. ``models[2]``) that errors name."""
    catalog.check_model(key, arch, encoder)
    if in_channels not in INPUT_CONVENTIONS:
        raise ValueError(f"{key}.in_channels: {in_channels!r} is not one of "
                         f"{', '.join(map(str, INPUT_CONVENTIONS))}")
    try:
        model = smp.create_model(arch, encoder_name=encoder, encoder_weights=encoder_weights,
                                 in_channels=in_channels, classes=classes)
    except (OSError, KeyError) as error:
        if encoder_weights is None:
            raise
        # the hub raises OSError subclasses when offline or unreachable, KeyError for a
        # weights name the encoder does not have: neither should surface as a traceback
        raise ValueError(
            f"{key}.encoder_weights: cannot load {encoder_weights!r} weights for encoder {encoder!r} "
            f"({type(error).__name__}: {str(error).strip()[:300]}). They are downloaded from the "
            "Hugging Face hub on first use: run once on a machine with internet access (the files are "
            "cached under ~/.cache/huggingface, or $HF_HOME), copy that cache here, or set "
            f"{key}.encoder_weights to null for random initial weights") from None
    if in_channels == 1:
        model.register_forward_pre_hook(_grey_copy_to_one_channel)
    return model


def input_channels(model: nn.Module) -> int:
    """The channels the model's first layer takes (1 or 3); an ensemble's, its first member's."""
    members = getattr(model, "members", None)
    if members:
        return input_channels(members[0])
    return int(getattr(getattr(model, "encoder", None), "_in_channels", IN_CHANNELS))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters: the study's model-size axis."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def as_model_input(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W) grey slices in [0, 1] -> (N, 3, H, W), the grey copied to each channel."""
    return images.unsqueeze(1).expand(-1, IN_CHANNELS, -1, -1)


def as_model_input_array(images):
    """as_model_input for numpy arrays: float32 (N, 3, H, W) copies, e.g. to store or replay attacks."""
    import numpy as np

    return np.repeat(np.asarray(images, dtype=np.float32)[:, None], IN_CHANNELS, axis=1)


def model_name(arch: str, encoder: str) -> str:
    return f"{arch}-{encoder}"
