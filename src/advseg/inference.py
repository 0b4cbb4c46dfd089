"""Batched forward passes over arrays of slices."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn

from advseg.models import as_model_input


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


@torch.no_grad()
def predict_masks(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int,
                  device: torch.device, model_input: bool = False) -> np.ndarray:
    """Binary (N, C, H, W) predictions: sigmoid > 0.5, i.e. logit > 0.

    ``images`` are grey (N, H, W) slices, or with ``model_input`` the (N, 3, H, W)
    inputs themselves (an attack on each channel leaves them unequal).
    """
    model.eval()
    predictions = []
    for batch in batch_slices(len(images), batch_size):
        # an attack's grey inputs are a read-only broadcast view: one copy per batch, which torch can own
        inputs = torch.as_tensor(np.ascontiguousarray(images[batch]) if isinstance(images, np.ndarray) else images[batch])
        inputs = inputs.to(device)
        logits = model(inputs if model_input else as_model_input(inputs))
        predictions.append((logits > 0).cpu().numpy())
    return np.concatenate(predictions).astype(np.uint8)
