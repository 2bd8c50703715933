"""How a pair is scored: cosine, dot product or negative squared Euclidean distance.

Larger always means closer, so every loss can treat a similarity as a logit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastkit.core.validation import check_choice, check_nonzero_rows

SIMILARITIES = ("cosine", "dot", "neg_sq_l2")


def prepare(x: torch.Tensor, similarity: str, owner: str, arg: str) -> torch.Tensor:
    """Map embeddings to the space the similarity is a plain product in (unit sphere for cosine)."""
    check_choice(similarity, owner, "similarity", SIMILARITIES)
    if similarity == "cosine":
        check_nonzero_rows(x, owner, arg)
        return F.normalize(x, dim=-1)
    return x


def pairwise(a: torch.Tensor, b: torch.Tensor, similarity: str) -> torch.Tensor:
    """All-pairs similarity ``(N, D) x (M, D) -> (N, M)`` of prepared embeddings."""
    if similarity == "neg_sq_l2":
        # -|a - b|^2 = 2 a.b - |a|^2 - |b|^2, one matrix product like the others.
        return 2 * a @ b.T - (a * a).sum(-1, keepdim=True) - (b * b).sum(-1)
    return a @ b.T


def paired(a: torch.Tensor, b: torch.Tensor, similarity: str) -> torch.Tensor:
    """Row-wise similarity ``(N, D), (N, D) -> (N,)`` of prepared embeddings."""
    if similarity == "neg_sq_l2":
        return -((a - b) ** 2).sum(-1)
    return (a * b).sum(-1)
