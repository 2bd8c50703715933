"""Numerically stable kernels over masked logit matrices."""

from __future__ import annotations

import torch


def masked_logsumexp(x: torch.Tensor, mask: torch.Tensor, dim: int = -1, keepdim=False):
    """``log sum_{mask} exp(x)`` along ``dim``; ``-inf`` where the mask is empty.

    Masked entries become ``-inf`` before ``torch.logsumexp``, which subtracts the row
    maximum, so nothing overflows at temperature 0.01 (logits of +-100).
    """
    return torch.logsumexp(x.masked_fill(~mask, float("-inf")), dim=dim, keepdim=keepdim)


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else (float16, bfloat16, float32) runs in float32."""
    if any(t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32
