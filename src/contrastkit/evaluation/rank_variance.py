"""Mean Rank Variance (MRV) of CCR^k (Nie et al., KDD 2024, arXiv:2406.18254).

Each of N instances is queried K times (once per language, paraphrase or view). For
instance i and query k, ``r_{i,k}`` is the rank (1 = top) of the correct candidate. MRV
averages over instances the variance of the K ranks of an instance::

    MRV = (1/N) sum_i (1/(K - ddof)) sum_k (r_{i,k} - mean_k r_{i,k})^2

Lower is better: 0 means every language places the correct candidate at the same rank.
The paper introduces MRV "to reflect the rank inconsistency across languages within each
instance" (abstract); its exact equation could not be read in this session, and the
official repository does not implement it. The default ``ddof=0`` (population variance
over the K languages) is our reading; ``ddof=1`` gives the sample variance.

Ranks follow ``retrieval_metrics``: candidates sorted by decreasing score, ties kept in
column order (a stable sort), so ``r = 1 + #{j: s_j > s_c} + #{j < c: s_j == s_c}``.

Both retrieval directions give an ``(N, K, N)`` score tensor ``scores[i, k, j]``, whose
correct candidate is ``j = i``:

* text-to-image (``direction="t2i"``): query = text k of instance i, candidates = the N
  items, ``scores[i, k, j] = s(query_{i,k}, item_j)``;
* image-to-text per language (``direction="i2t"``): query = item i, candidates = the N
  texts of language k (each language is a separate retrieval, as in per-language CCR
  evaluation), ``scores[i, k, j] = s(item_i, query_{j,k})``.
"""

from __future__ import annotations

import torch

from contrastkit.core.validation import _fail, check_choice, check_embeddings
from contrastkit.diagnostics._inputs import as_embeddings, as_tensor, compute_dtype, unit_rows

__all__ = ["instance_ranks", "mean_rank_variance"]

DIRECTIONS = ("t2i", "i2t")


def _check_scores(scores, owner: str) -> torch.Tensor:
    scores = as_tensor(scores, owner, "scores")
    if not scores.dtype.is_floating_point:
        scores = scores.to(torch.float64)
    if scores.dim() != 3 or scores.shape[0] != scores.shape[2]:
        _fail(
            owner,
            "scores",
            f"has shape {tuple(scores.shape)}",
            "it must be (N, K, N): scores[i, k, j] scores candidate j for query k of "
            "instance i, and candidate i is the correct one",
            "build it as in the module docstring or pass items= and queries=",
        )
    if scores.shape[0] < 1 or scores.shape[1] < 1:
        _fail(owner, "scores", f"has shape {tuple(scores.shape)}", "N, K >= 1", "pass data")
    if bool(torch.isnan(scores).any()):
        _fail(owner, "scores", "contains NaN", "NaN scores cannot be ranked", "fix the model")
    return scores


def _scores_from_embeddings(items, queries, direction: str, owner: str) -> torch.Tensor:
    check_choice(direction, owner, "direction", DIRECTIONS)
    items = as_embeddings(items, owner, "items")
    queries = check_embeddings(as_tensor(queries, owner, "queries"), owner, "queries", (3,))
    if queries.shape[0] != items.shape[0]:
        _fail(
            owner,
            "queries",
            f"has shape {tuple(queries.shape)} but `items` has {tuple(items.shape)}",
            "queries must be (N, K, D): K queries of each of the N items",
            "stack the K queries of item i in queries[i]",
        )
    if queries.shape[2] != items.shape[1]:
        _fail(
            owner,
            "queries",
            f"has feature dimension {queries.shape[2]} but `items` has {items.shape[1]}",
            "similarities need the same embedding dimension",
            "project both to the same dimension",
        )
    n, k, d = queries.shape
    dtype = compute_dtype(items, queries)
    u = unit_rows(items, owner, "items", dtype)
    q = unit_rows(queries.reshape(n * k, d), owner, "queries", dtype).view(n, k, d)
    if direction == "t2i":
        return torch.einsum("ikd,jd->ikj", q, u)
    return torch.einsum("id,jkd->ikj", u, q)


def instance_ranks(scores=None, *, items=None, queries=None, direction="t2i") -> torch.Tensor:
    """``(N, K)`` float64 ranks (1 = top) of the correct candidate for each instance and
    query, from an ``(N, K, N)`` score tensor or from cosine similarities of ``items``
    (N, D) and ``queries`` (N, K, D) in the given ``direction`` (see the module docstring)."""
    owner = "instance_ranks"
    if (scores is None) == (items is None or queries is None):
        _fail(
            owner,
            "scores",
            "and `items`/`queries` are both given or both missing",
            "pass either an (N, K, N) score tensor or both embeddings",
            "call instance_ranks(scores) or instance_ranks(items=..., queries=...)",
        )
    if scores is None:
        scores = _scores_from_embeddings(items, queries, direction, owner)
    scores = _check_scores(scores, owner)
    n = scores.shape[0]
    idx = torch.arange(n, device=scores.device)
    correct = scores[idx, :, idx]  # (N, K)
    above = (scores > correct[..., None]).sum(-1)
    before = (idx[None, None, :] < idx[:, None, None]) & (scores == correct[..., None])
    return (1 + above + before.sum(-1)).to(torch.float64)


def mean_rank_variance(scores=None, *, items=None, queries=None, direction="t2i", ddof=0) -> float:
    """Mean Rank Variance (lower is better): the variance over the K queries of an
    instance of the rank of its correct candidate, averaged over the N instances.

    Pass ``scores`` (N, K, N) or ``items`` (N, D) with ``queries`` (N, K, D) (cosine
    similarity, ``direction`` "t2i" or "i2t"); see the module docstring for both layouts
    and the tie rule. ``ddof=0`` divides by K (population variance, our reading of the
    paper), ``ddof=1`` by K - 1 (needs K >= 2).
    """
    owner = "mean_rank_variance"
    if ddof not in (0, 1):
        _fail(owner, "ddof", f"is {ddof!r}", "it must be 0 or 1", "pass ddof=0 or ddof=1")
    ranks = instance_ranks(scores, items=items, queries=queries, direction=direction)
    k = ranks.shape[1]
    if k - ddof < 1:
        _fail(
            owner,
            "scores",
            f"has K = {k} queries per instance",
            f"a variance with ddof={ddof} needs K >= {ddof + 1}",
            "pass at least two queries per instance",
        )
    centred = ranks - ranks.mean(1, keepdim=True)
    return float(((centred**2).sum(1) / (k - ddof)).mean())
