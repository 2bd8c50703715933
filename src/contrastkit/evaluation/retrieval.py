"""Ranking metrics for retrieval: recall@k, hit@k, MRR and nDCG@k.

Definitions (per query, then averaged over the queries that have at least one item with
``relevance > 0``; queries with none are skipped, as trec_eval / BEIR only score judged
queries; if no query has a relevant item a ``ValueError`` is raised):

- candidates are ranked by decreasing score; equal scores keep column order (a stable
  sort), so the result is deterministic;
- ``recall@k``: relevant items (``relevance > 0``) in the top k / all relevant items
  (BEIR's recall@k);
- ``hit@k``: 1 if any relevant item is in the top k (the "R@K" of image-text retrieval
  such as CLIP's COCO image-to-text, where any of five captions counts);
- ``mrr``: 1 / rank of the first relevant item over the full ranking (no cut-off);
- ``ndcg@k``: ``DCG@k / IDCG@k`` with ``DCG@k = sum_{r=1..k} rel_r / log2(r + 1)``, the
  linear gain ``rel`` of trec_eval's ``ndcg_cut`` (used by pytrec_eval and BEIR), not
  Burges' ``2^rel - 1``; IDCG@k is the DCG@k of the relevance sorted in decreasing order.

``k`` larger than the number of candidates is clipped to it (the key keeps the k asked).
"""

from __future__ import annotations

import torch

from contrastkit.core.validation import _fail, check_feature_dim, check_relevance
from contrastkit.diagnostics._inputs import (
    as_embeddings,
    as_tensor,
    check_int,
    chunk_rows,
    compute_dtype,
    unit_rows,
)

__all__ = ["retrieval_from_embeddings", "retrieval_metrics"]


def _check_ks(ks, owner: str) -> tuple[int, ...]:
    fix = "pass positive integers, e.g. ks=(1, 5, 10)"
    if isinstance(ks, int) and not isinstance(ks, bool):
        ks = (ks,)
    if isinstance(ks, str) or not hasattr(ks, "__iter__"):
        _fail(owner, "ks", f"is {ks!r}", "it must be a sequence of integers", fix, TypeError)
    ks = tuple(ks)
    if not ks:
        _fail(owner, "ks", "is empty", "at least one cut-off is needed", fix)
    return tuple(dict.fromkeys(check_int(k, owner, "ks", 1, fix) for k in ks))


def _check_relevance(relevance, shape: tuple[int, int], owner: str, shape_of: str):
    return check_relevance(
        as_tensor(relevance, owner, "relevance"),
        shape,
        owner,
        shape_of=shape_of,
        rule="relevance[q, c] must grade candidate c for query q, one entry per score",
        fix="pass a dense (Q, C) relevance matrix matching the scores",
    )


def _metrics(scores: torch.Tensor, rel: torch.Tensor, ks: tuple[int, ...], owner: str):
    n_queries, n_cand = scores.shape
    rel = rel.to(scores.device)
    discount = 1.0 / torch.log2(
        torch.arange(2, n_cand + 2, dtype=torch.float64, device=scores.device)
    )
    sums = {f"{name}@{k}": 0.0 for k in ks for name in ("recall", "hit", "ndcg")}
    sums["mrr"] = 0.0
    n_valid = 0
    rows = chunk_rows(n_cand)
    for start in range(0, n_queries, rows):
        s, r = scores[start : start + rows], rel[start : start + rows]
        order = torch.sort(s, dim=1, descending=True, stable=True).indices
        ranked = r.gather(1, order)  # graded relevance in rank order
        hits = ranked > 0
        n_rel = hits.sum(dim=1)
        valid = n_rel > 0
        if not bool(valid.any()):
            continue
        ranked, hits, n_rel = ranked[valid], hits[valid], n_rel[valid].to(torch.float64)
        ideal = r[valid].sort(dim=1, descending=True).values
        n_valid += int(valid.sum())
        cum_hits = hits.cumsum(dim=1).to(torch.float64)
        first = hits.to(torch.int8).argmax(dim=1)  # first relevant rank - 1
        sums["mrr"] += float((1.0 / (first + 1).to(torch.float64)).sum())
        dcg = (ranked * discount).cumsum(dim=1)
        idcg = (ideal * discount).cumsum(dim=1)
        for k in ks:
            c = min(k, n_cand) - 1
            sums[f"recall@{k}"] += float((cum_hits[:, c] / n_rel).sum())
            sums[f"hit@{k}"] += float((cum_hits[:, c] > 0).sum())
            sums[f"ndcg@{k}"] += float((dcg[:, c] / idcg[:, c]).sum())
    if n_valid == 0:
        _fail(
            owner,
            "relevance",
            f"has no entry > 0 in any of its {n_queries} queries",
            "ranking metrics average over queries with at least one relevant item",
            "check the relevance matrix (1 or a positive grade marks a relevant item)",
        )
    out = {}
    for k in ks:
        for name in ("recall", "ndcg", "hit"):
            out[f"{name}@{k}"] = sums[f"{name}@{k}"] / n_valid
    out["mrr"] = sums["mrr"] / n_valid
    return out


def retrieval_metrics(scores, relevance, ks=(1, 5, 10)) -> dict[str, float]:
    """Recall@k, hit@k, nDCG@k for each k in ``ks`` and MRR of a score matrix.

    ``scores`` is ``(Q, C)``: higher ranks a candidate higher; ``-inf`` may mask a
    candidate out, NaN is rejected. ``relevance`` is ``(Q, C)``, binary (bool or 0/1) or
    graded (any finite value >= 0). Torch tensors or numpy arrays. Returns keys
    ``recall@k``, ``ndcg@k``, ``hit@k`` (for each k) and ``mrr``; see the module
    docstring for the exact definitions (nDCG uses trec_eval's linear gain ``rel``).
    Queries are processed in blocks, so only a block of sort indices is held at a time.
    """
    owner = "retrieval_metrics"
    scores = as_tensor(scores, owner, "scores")
    if scores.dtype.is_complex or scores.dtype == torch.bool:
        _fail(
            owner,
            "scores",
            f"has dtype {scores.dtype}",
            "scores must be real numbers (higher is better)",
            "pass scores.float()",
            TypeError,
        )
    if scores.dim() != 2 or scores.shape[1] < 1:
        _fail(
            owner,
            "scores",
            f"has shape {tuple(scores.shape)}",
            "it must be a (Q, C) matrix with at least one candidate",
            "pass one row of candidate scores per query",
        )
    if scores.dtype.is_floating_point and bool(torch.isnan(scores).any()):
        rows = torch.isnan(scores).any(dim=1).nonzero().flatten().tolist()
        _fail(
            owner,
            "scores",
            f"contains NaN in rows {rows[:8]}",
            "NaN scores cannot be ranked",
            "fix the scoring model, or use -inf to exclude a candidate",
        )
    ks = _check_ks(ks, owner)
    rel = _check_relevance(relevance, tuple(scores.shape), owner, "`scores`")
    return _metrics(scores, rel, ks, owner)


def retrieval_from_embeddings(query_z, doc_z, relevance, ks=(1, 5, 10)) -> dict[str, float]:
    """Ranking metrics of cosine-similarity retrieval: ``query_z (Q, D)`` over ``doc_z (C, D)``.

    Both sides are L2-normalised, ``scores = query_u @ doc_u.T`` (float32, or float64 when
    an input is float64), then the metrics of ``retrieval_metrics`` are returned.
    """
    owner = "retrieval_from_embeddings"
    query_z = as_embeddings(query_z, owner, "query_z")
    doc_z = as_embeddings(doc_z, owner, "doc_z")
    check_feature_dim(query_z, doc_z, owner, ("query_z", "doc_z"))
    ks = _check_ks(ks, owner)
    shape = (query_z.shape[0], doc_z.shape[0])
    rel = _check_relevance(relevance, shape, owner, "(len(query_z), len(doc_z))")
    dtype = compute_dtype(query_z, doc_z)
    q = unit_rows(query_z, owner, "query_z", dtype)
    d = unit_rows(doc_z.to(q.device), owner, "doc_z", dtype)
    return _metrics(q @ d.T, rel, ks, owner)
