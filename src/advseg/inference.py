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
                  device: torch.device) -> np.ndarray:
    """Binary (N, C, H, W) predictions: sigmoid > 0.5, i.e. logit > 0."""
    model.eval()
    images = torch.as_tensor(images)
    predictions = []
    for batch in batch_slices(len(images), batch_size):
        logits = model(as_model_input(images[batch].to(device)))
        predictions.append((logits > 0).cpu().numpy())
    return np.concatenate(predictions).astype(np.uint8)
