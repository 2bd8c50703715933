"""Turning the documented input layouts into prepared tensors (shared by every loss)."""

from __future__ import annotations

import torch

from contrastkit.core.logits import compute_dtype
from contrastkit.core.similarity import prepare
from contrastkit.core.validation import (
    _fail,
    check_batch_size,
    check_embeddings,
    check_feature_dim,
    check_labels,
    check_same_shape,
)


def stack_views(views, owner: str, min_views: int = 2) -> tuple[torch.Tensor, int, int]:
    """``(N, V, D)`` or V tensors ``(N, D)`` -> view-major ``(V * N, D)``, N, V."""
    if len(views) == 1 and isinstance(views[0], torch.Tensor) and views[0].dim() == 3:
        x = check_embeddings(views[0], owner, "embeddings", ndim=(3,))
        n, v, d = x.shape
        flat = x.transpose(0, 1).reshape(v * n, d)
    else:
        for k, view in enumerate(views):
            check_embeddings(view, owner, f"views[{k}]", ndim=(2,))
            check_same_shape(views[0], view, owner, ("views[0]", f"views[{k}]"))
        if not views:
            _fail(owner, "views", "is empty", "pass at least one tensor", "call loss(z1, z2)")
        v = len(views)
        n = views[0].shape[0]
        flat = torch.cat(views, 0)
    if v < min_views:
        _fail(
            owner,
            "views",
            f"holds {v} view(s)",
            f"this objective needs at least {min_views} views of each sample",
            "pass loss(z1, z2) or an (N, V, D) tensor with V >= 2",
        )
    check_batch_size(n * v if min_views == 1 else n, owner)
    return flat, n, v


def check_grouped(
    single, grouped, owner: str, names: tuple[str, str], letters: tuple[str, str], fix: str
) -> tuple[int, int]:
    """``single`` ``(B, D)`` and ``grouped`` ``(B, G, D)`` (G rows per row of ``single``):
    both finite floating tensors of those ranks with the same B. Returns ``(B, G)``.

    ``names`` are the two arguments, ``letters`` the caller's letters for B and G (as its
    docstring writes the shapes), ``fix`` the advice for a mismatched B. The feature
    dimensions are not compared here (``check_feature_dim``)."""
    check_embeddings(single, owner, names[0], ndim=(2,))
    check_embeddings(grouped, owner, names[1], ndim=(3,))
    if grouped.shape[0] != single.shape[0]:
        b, g = letters
        _fail(
            owner,
            names[1],
            f"has shape {tuple(grouped.shape)} but `{names[0]}` has {tuple(single.shape)}",
            f"{names[1]} must be ({b}, {g}, D) with the same {b} as {names[0]} ({b}, D)",
            fix,
        )
    return grouped.shape[0], grouped.shape[1]


def prepared(x: torch.Tensor, similarity: str, owner: str, arg: str, dtype) -> torch.Tensor:
    return prepare(x.to(dtype), similarity, owner, arg)


def optional_negatives(negatives, like: torch.Tensor, owner: str):
    if negatives is None:
        return None
    check_embeddings(negatives, owner, "negatives", ndim=(2,))
    check_feature_dim(like, negatives, owner, ("embeddings", "negatives"))
    return negatives


def optional_labels(labels, n: int, owner: str):
    return None if labels is None else check_labels(labels, n, owner)


def working_dtype(*tensors):
    return compute_dtype(*[t for t in tensors if t is not None])
