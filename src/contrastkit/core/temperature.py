"""Temperature: a fixed number, or a learnable logit scale clamped like CLIP's (at most 100)."""

from __future__ import annotations

import math

import torch
from torch import nn

from contrastkit.core.validation import check_positive_number, check_temperature

MAX_LOGIT_SCALE = 100.0  # CLIP (Radford et al. 2021): 1 / temperature never exceeds 100


class LogitScale(nn.Module):
    """A learnable ``1 / temperature`` stored as its logarithm (as CLIP does).

    The scale is clamped to ``max_scale`` in the forward pass, so the temperature never
    falls below ``1 / max_scale``; past the clamp the gradient is zero, which has the same
    effect as CLIP's in-place clamp after each optimiser step.
    """

    def __init__(self, temperature: float, max_scale: float = MAX_LOGIT_SCALE):
        super().__init__()
        temperature = check_temperature(temperature, "LogitScale")
        self.max_scale = check_positive_number(
            max_scale, "LogitScale", "max_scale", "pass e.g. max_scale=100"
        )
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(self.max_scale)).exp()

    def temperature(self) -> torch.Tensor:
        return 1.0 / self()


def as_scale(temperature, owner: str):
    """``1 / temperature`` for a float or a 0-d tensor (which keeps its gradient)."""
    if isinstance(temperature, torch.Tensor) and temperature.requires_grad:
        if temperature.numel() != 1 or not bool(temperature.detach() > 0):
            check_temperature(float(temperature.detach().flatten()[0]), owner)
        return 1.0 / temperature
    return 1.0 / check_temperature(temperature, owner)
