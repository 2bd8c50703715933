"""The geometry of an embedding set: alignment, uniformity, rank, isotropy, similarity gaps.

Every function takes ``(N, D)`` torch tensors (numpy arrays are accepted too), computes
in float32 (float64 when an input is float64) on the input's device and returns Python
floats. Functions defined on the unit sphere L2-normalise rows first and reject
all-zero rows; ``effective_rank`` and ``isotropy`` use the raw matrix by default, as
their papers do.
"""

from __future__ import annotations

import math

import torch

from contrastkit.core.validation import (
    _fail,
    check_positive_number,
    check_same_shape,
)
from contrastkit.diagnostics._inputs import (
    as_embeddings,
    as_labels,
    check_bool,
    check_int,
    chunk_rows,
    compute_dtype,
    unit_rows,
)


def _pair(z1, z2, owner: str, min_rows: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    z1 = as_embeddings(z1, owner, "z1", min_rows)
    z2 = as_embeddings(z2, owner, "z2", min_rows)
    check_same_shape(z1, z2, owner, ("z1", "z2"))
    dtype = compute_dtype(z1, z2)
    return unit_rows(z1, owner, "z1", dtype), unit_rows(z2.to(z1.device), owner, "z2", dtype)


def alignment(z1, z2, alpha: float = 2.0) -> float:
    """Alignment of positive pairs (Wang & Isola, ICML 2020, Eq. 1).

    ``E_i ||f(x_i) - f(y_i)||_2 ** alpha`` with row i of ``z1`` and row i of ``z2`` a
    positive pair, both L2-normalised. Lower is better; 0 when ``z1 == z2`` up to scale,
    4 ** (alpha / 2) for antipodal pairs. Matches the paper's ``align_loss``.
    """
    owner = "alignment"
    alpha = check_positive_number(alpha, owner, "alpha", "pass e.g. alpha=2.0 (the paper's)")
    u1, u2 = _pair(z1, z2, owner)
    return float(torch.linalg.vector_norm(u1 - u2, dim=1).pow(alpha).mean())


def uniformity(z, t: float = 2.0, *, chunk_size: int | None = None) -> float:
    """Uniformity (Wang & Isola, ICML 2020, Eq. 2): ``log E_{i<j} exp(-t ||u_i - u_j||^2)``.

    ``u`` are the L2-normalised rows of ``z``; the mean runs over the N(N-1)/2 distinct
    pairs (the paper's ``torch.pdist``). Lower (more negative) is more uniform; the
    minimum for two points is ``-4 t`` (antipodal). Computed as a log-sum-exp over row
    blocks of the upper triangle, so nothing overflows at large ``t`` and memory stays
    ``O(chunk_size * N)`` (about 4M entries per block by default, N = 10000 is fine).
    """
    owner = "uniformity"
    t = check_positive_number(t, owner, "t", "pass e.g. t=2.0 (the paper's)")
    if chunk_size is not None:
        check_int(chunk_size, owner, "chunk_size", 1, "pass chunk_size=None or e.g. 1024")
    u = unit_rows(as_embeddings(z, owner, "z", min_rows=2), owner, "z")
    n = u.shape[0]
    rows = chunk_rows(n, chunk_size)
    parts = []
    for start in range(0, n - 1, rows):
        stop = min(start + rows, n - 1)
        # Rows i in [start, stop) against columns j in [start + 1, n); keep j > i.
        block = u[start:stop] @ u[start + 1 :].T
        sq_dist = (2.0 - 2.0 * block).clamp_min(0.0)
        i = torch.arange(start, stop, device=u.device)[:, None]
        j = torch.arange(start + 1, n, device=u.device)[None, :]
        logits = (-t * sq_dist).masked_fill(j <= i, float("-inf"))
        parts.append(torch.logsumexp(logits.flatten(), dim=0))
    total = torch.logsumexp(torch.stack(parts), dim=0)
    return float(total) - math.log(n * (n - 1) / 2)


def effective_rank(z, center: bool = False) -> float:
    """Effective rank (Roy & Vetterli, EUSIPCO 2007): ``exp(H(p))``, ``p_k = s_k / sum s``.

    ``s`` are the singular values of ``z`` itself (the paper's definition, as in RankMe,
    Garrido et al. 2023); ``center=True`` subtracts the column means first, which
    measures the spread around the mean instead (a shared offset no longer counts as a
    dimension). ``H`` is the Shannon entropy in nats with ``0 log 0 = 0``. Singular
    values below ``max(N, D) * eps * ||z||_F`` are rounding noise and count as zero (the
    ``numpy.linalg.matrix_rank`` tolerance), so a rank-1 matrix gives exactly 1 and a
    matrix with no singular value above that (all zeros; all rows equal under
    ``center=True``, i.e. a collapsed encoder) gives 0.0. Otherwise
    ``1 <= effective_rank <= rank(z)``.
    """
    owner = "effective_rank"
    center = check_bool(center, owner, "center")
    z = as_embeddings(z, owner, "z")
    x = z.to(compute_dtype(z))
    scale = torch.linalg.vector_norm(x)
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x)
    tol = max(x.shape) * torch.finfo(x.dtype).eps * scale
    s = torch.where(s > tol, s, torch.zeros_like(s))
    total = s.sum()
    if not bool(total > 0):
        return 0.0
    return float(torch.exp(torch.special.entr(s / total).sum()))


def mean_pairwise_cosine(z) -> float:
    """Mean cosine similarity over the N(N-1) ordered pairs of distinct rows.

    Computed in O(N D) as ``(||sum_i u_i||^2 - sum_i ||u_i||^2) / (N (N - 1))``. Near 1
    means collapse; for uniform directions in D dimensions it is near 0.
    """
    owner = "mean_pairwise_cosine"
    u = unit_rows(as_embeddings(z, owner, "z", min_rows=2), owner, "z")
    n = u.shape[0]
    s = u.sum(dim=0)
    return float((s @ s - (u * u).sum()) / (n * (n - 1)))


def isotropy(z, *, normalize: bool = False) -> float:
    """Isotropy ``I(W)`` of Mu & Viswanath (ICLR 2018, "All-but-the-Top", Sec. 2).

    With the partition function ``Z(c) = sum_i exp(c^T w_i)`` of Arora et al. (2016),
    ``I(W) = min_{||c||=1} Z(c) / max_{||c||=1} Z(c)``, approximated, as in the paper, over
    the eigenvectors ``c`` of ``W^T W``. An eigenvector's sign is arbitrary, so both
    ``+c`` and ``-c`` enter the min and max (the exact min/max over the sphere is sign
    symmetric too); the result is then a deterministic function of ``W``. In ``(0, 1]``;
    1 is perfectly isotropic. ``log Z`` is a log-sum-exp, so large norms cannot overflow.

    The paper applies it to the raw vectors (``normalize=False``, the default); the
    measure then depends on their scale. ``normalize=True`` L2-normalises rows first,
    giving a scale-free number for embeddings used with cosine similarity.
    """
    owner = "isotropy"
    normalize = check_bool(normalize, owner, "normalize")
    z = as_embeddings(z, owner, "z")
    x = unit_rows(z, owner, "z") if normalize else z.to(compute_dtype(z))
    _, vectors = torch.linalg.eigh(x.T @ x)
    proj = x @ vectors  # (N, D): c_k^T w_i for every eigenvector c_k
    log_z = torch.cat([torch.logsumexp(proj, dim=0), torch.logsumexp(-proj, dim=0)])
    return float(torch.exp(log_z.min() - log_z.max()))


def similarity_gap(z1, z2) -> dict[str, float]:
    """Mean positive cosine, mean negative cosine and their difference.

    ``pos_sim`` averages ``cos(z1_i, z2_i)``; ``neg_sim`` averages ``cos(z1_i, z2_j)`` over
    the N(N-1) pairs ``i != j``; ``gap = pos_sim - neg_sim``. O(N D): the sum over all
    pairs is ``(sum_i u1_i) . (sum_j u2_j)``.
    """
    owner = "similarity_gap"
    u1, u2 = _pair(z1, z2, owner, min_rows=2)
    n = u1.shape[0]
    pos_total = (u1 * u2).sum()
    all_total = u1.sum(dim=0) @ u2.sum(dim=0)
    pos = float(pos_total / n)
    neg = float((all_total - pos_total) / (n * (n - 1)))
    return {"pos_sim": pos, "neg_sim": neg, "gap": pos - neg}


def tolerance(z, labels) -> float:
    """Tolerance (Wang & Liu, CVPR 2021, "Understanding the Behaviour of Contrastive Loss").

    The paper writes ``T = E_{x,y}[(f(x)^T f(y)) I(l(x) = l(y))]`` and describes it as
    "the mean similarities between samples belonging to the same classes"; we compute
    that mean: cosine similarity averaged over the ordered pairs ``(i, j)``, ``i != j``,
    with ``labels[i] == labels[j]`` (self-pairs, always 1, are excluded). Higher means
    same-class samples sit closer. O(N D) through per-class sums of unit vectors.
    """
    owner = "tolerance"
    z = as_embeddings(z, owner, "z")
    u = unit_rows(z, owner, "z")
    y = as_labels(labels, u.shape[0], owner, "labels", device=u.device)
    _, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    n_pairs = int((counts * (counts - 1)).sum())
    if n_pairs == 0:
        _fail(
            owner,
            "labels",
            f"has {y.numel()} samples in {counts.numel()} distinct classes, none repeated",
            "tolerance averages over pairs of distinct samples with the same label",
            "pass labels where at least one class has two or more samples",
        )
    sums = torch.zeros(counts.numel(), u.shape[1], dtype=u.dtype, device=u.device)
    sums.index_add_(0, inverse, u)
    return float(((sums * sums).sum() - (u * u).sum()) / n_pairs)


def summarize(z1, z2, labels=None) -> dict[str, float]:
    """All diagnostics of two views in one dict of floats.

    Pair metrics (``alignment``, ``pos_sim``, ``neg_sim``, ``gap``) use row i of ``z1``
    with row i of ``z2``. Single-set metrics (``uniformity``, ``effective_rank``,
    ``mean_cosine``, ``isotropy`` and, when ``labels`` are given, ``tolerance``) are
    computed on ``z1``, the anchor view, with each function's defaults; ``labels``
    label the rows of ``z1``.
    """
    owner = "summarize"
    z1 = as_embeddings(z1, owner, "z1", min_rows=2)
    z2 = as_embeddings(z2, owner, "z2", min_rows=2)
    check_same_shape(z1, z2, owner, ("z1", "z2"))
    out = {
        "alignment": alignment(z1, z2),
        "uniformity": uniformity(z1),
        "effective_rank": effective_rank(z1),
        "mean_cosine": mean_pairwise_cosine(z1),
        "isotropy": isotropy(z1),
    }
    out.update(similarity_gap(z1, z2))
    if labels is not None:
        out["tolerance"] = tolerance(z1, labels)
    return out
