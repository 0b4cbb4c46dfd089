"""Segmentation models by name, built from segmentation-models-pytorch.

Inputs are grey slices copied to 3 channels, outputs one sigmoid logit map per class
(multi-label), as in the study. Weights start random: no ImageNet download.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import nn

from advseg import catalog

IN_CHANNELS = 3


def build_model(arch: str, encoder: str, classes: int) -> nn.Module:
    catalog.check_model("model", arch, encoder)
    return smp.create_model(arch, encoder_name=encoder, encoder_weights=None,
                            in_channels=IN_CHANNELS, classes=classes)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters: the study's model-size axis."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def as_model_input(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W) grey slices in [0, 1] -> (N, 3, H, W), the grey copied to each channel."""
    return images.unsqueeze(1).expand(-1, IN_CHANNELS, -1, -1)


def model_name(arch: str, encoder: str) -> str:
    return f"{arch}-{encoder}"
