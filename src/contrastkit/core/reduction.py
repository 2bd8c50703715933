"""The one place that turns per-anchor losses into what the caller asked for."""

from __future__ import annotations

import torch

from contrastkit.core.validation import check_reduction


def reduce(per_anchor: torch.Tensor, reduction: str, owner: str) -> torch.Tensor:
    check_reduction(reduction, owner)
    if reduction == "mean":
        return per_anchor.mean()
    if reduction == "sum":
        return per_anchor.sum()
    return per_anchor
