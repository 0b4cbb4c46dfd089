"""An ensemble of segmentation models as one model: the mean of their sigmoid outputs.

Every attack must see the ensemble as one white-box model (attacking a member alone would
measure transfer, not the ensemble), so it is an ``nn.Module`` that returns logits like any
other: logit(mean_m sigmoid(z_m)). That logit is computed exactly in log space,
log Σ_m σ(z_m) − log Σ_m σ(−z_m) (the 1/M cancels), rather than as logit(clamp(mean)): it
is finite for finite logits, and its gradient does not vanish where every member is
confident, as it would through a clamp (a gradient-masking artefact of the wrapper itself).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def mean_probability_logits(logits: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """logit of the mean sigmoid over the first axis (or the sequence), exact in log space."""
    stacked = logits if isinstance(logits, torch.Tensor) else torch.stack(list(logits))
    return torch.logsumexp(F.logsigmoid(stacked), 0) - torch.logsumexp(F.logsigmoid(-stacked), 0)


class Ensemble(nn.Module):
    """Models that take the same input and give (N, C, H, W) logits, averaged in probability."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        models = list(models)
        if len(models) < 1:
            raise ValueError("defense.ensemble.models: an ensemble needs at least one model")
        self.members = nn.ModuleList(models)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs = [member(inputs) for member in self.members]
        shapes = {tuple(output.shape) for output in outputs}
        if len(shapes) > 1:
            raise ValueError(f"defense.ensemble.models: the members' outputs differ in shape ({sorted(shapes)}); "
                             "they must segment the same classes at the same size")
        return mean_probability_logits(outputs)
