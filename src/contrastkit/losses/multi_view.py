"""Multi-view objectives of Koromilas et al. (2025): MV-InfoNCE and MV-DHEL, and the
pairwise NT-Xent baseline (PWE) they are compared against.

Paper: P. Koromilas, E. Georgiou, G. Bouritsas, T. Giannakopoulos, M. A. Nicolaou,
Y. Panagakis, "A Principled Framework for Multi-View Contrastive Learning",
arXiv:2507.06979 (2025). Code: pakoromilas/Multi-View-CL ``models/losses.py``
(``MVINFONCE``, ``MVDHEL``, ``NTXent(pwe=True)``). DHEL itself, the two-view loss
MV-DHEL extends, is from Koromilas et al., "Bridging Mini-Batch and Asymptotic Analysis
in Contrastive Learning: From InfoNCE to Kernel-Based Losses", ICML 2024.

Notation as in the paper: M samples (here N, the batch), N views (here V), ``U_{i,l}``
the L2-normalised embedding of sample i in view l, ``s = U^T U' / t``.

Where the paper's equations come from: the paper's body could not be retrieved in this
environment; the equations below are those the authors print in their repository's README
(in the paper's notation, as the paper's method). The code computes different
denominators; ``variant="official_code"`` reproduces it (see each function).
"""

from __future__ import annotations

import math

import torch

from contrastkit.core.logits import masked_logsumexp
from contrastkit.core.pairs import not_self
from contrastkit.core.reduction import reduce
from contrastkit.core.temperature import as_scale
from contrastkit.core.validation import check_choice, check_reduction
from contrastkit.losses._inputs import prepared, stack_views, working_dtype
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.losses.info_nce import info_nce
from contrastkit.registry import register_loss

VARIANTS = ("paper", "official_code")


def _normalised_views(views, owner: str):
    """``(V, N, D)`` unit vectors in the compute dtype, and N, V."""
    flat, n, v = stack_views(views, owner, min_views=2)
    z = prepared(flat, "cosine", owner, "embeddings", working_dtype(flat))
    return z.reshape(v, n, -1), n, v


def _log_positive(z: torch.Tensor, scale, pairs: str) -> torch.Tensor:
    """``log sum exp(U_{i,l}^T U_{i,l'} / t)`` over view pairs l != l' ("ordered") or
    l < l' ("upper"), per sample: ``(N,)``."""
    v = z.shape[0]
    s = torch.einsum("lid,mid->ilm", z * scale, z)  # (N, V, V)
    mask = not_self(v, z.device) if pairs == "ordered" else torch.ones(v, v).triu(1).bool()
    return masked_logsumexp(s.flatten(1), mask.to(z.device).flatten()[None, :], dim=1)


def mv_info_nce(*views, temperature=0.5, variant="paper", reduction="mean"):
    """MV-InfoNCE (Koromilas et al. 2025): one InfoNCE term per sample over all its views.

    ``variant="paper"`` (the default; the equation printed in the authors' README)::

        l_i = -log [ sum_{l, l' != l} e^{U_il.U_il'/t}
                     / sum_{l, m != l, j} e^{U_il.U_jm/t} ]

    The denominator holds every *cross-view* pair (m != l) of view l of sample i with any
    sample j, the positives (j = i) included. ``variant="official_code"`` (``MVINFONCE``
    in ``models/losses.py``) sums over every other row of the ``(V N, D)`` batch instead,
    i.e. it also contains the same-view negatives ``U_il.U_jl`` (j != i); its numerator
    ``2 sum_{l<l'}`` is the same sum.

    With two views, ``l_i`` is the log of the mean of ``exp`` of the two one-directional
    losses of sample i: CLIP's two directions for the paper's form, the two NT-Xent
    anchors for the code's (tested). Computed with ``logsumexp``, so it is stable at
    small temperatures. Returns the mean, sum, or per-sample ``(N,)`` values.
    """
    owner = "mv_info_nce"
    check_choice(variant, owner, "variant", VARIANTS)
    check_reduction(reduction, owner)
    z, n, v = _normalised_views(views, owner)
    scale = as_scale(temperature, owner)
    flat = z.reshape(v * n, -1)
    s = (flat * scale) @ flat.T  # (V N, V N), row (l, i), column (m, j)
    s = s.reshape(v, n, v, n).permute(1, 0, 2, 3).reshape(n, v * v * n)  # [i, (l, m, j)]
    cross_view = not_self(v, z.device)[:, :, None].expand(v, v, n)  # m != l
    if variant == "paper":
        mask = cross_view.reshape(1, -1).expand(n, -1)
    else:  # every row but (i, l) itself
        eye = torch.eye(n, dtype=torch.bool, device=z.device)
        same_row = (
            torch.eye(v, dtype=torch.bool, device=z.device)[None, :, :, None]
            & eye[:, None, None, :]
        )
        mask = ~same_row.reshape(n, -1)
    log_neg = masked_logsumexp(s, mask, dim=1)
    return reduce(log_neg - _log_positive(z, scale, "ordered"), reduction, owner)


def mv_dhel(*views, temperature=0.5, variant="paper", reduction="mean"):
    """MV-DHEL (Koromilas et al. 2025): multi-view decoupled hyperspherical energy loss.

    ``variant="paper"`` (the default; the equation printed in the authors' README)::

        l_i = -log [ sum_{l, l' != l} e^{U_il.U_il'/t}
                     / prod_l sum_j e^{U_il.U_jl/t} ]
            = -log sum_{l != l'} e^{U_il.U_il'/t} + sum_l log sum_j e^{U_il.U_jl/t}

    Alignment (numerator) and uniformity (one same-view energy per view) are decoupled;
    the uniformity sum runs over all j, so it contains the self term ``e^{1/t}``.
    ``variant="official_code"`` (``MVDHEL`` in ``models/losses.py``) differs in two
    places: the numerator sums over ``l < l'`` only (a constant ``-log 2``, the same
    gradient) and the uniformity sums exclude ``j = i``.

    Numerics: the code computes ``pos / prod_l neg_l``, a product of V sums of
    exponentials, which overflows float32 already for 6 views at ``t = 0.05``
    (``e^{20}`` per sum); here it is always ``log pos - sum_l log neg_l`` with
    ``logsumexp`` (as the repository's own ``CL_2`` does), so both variants are finite at
    any temperature and view count. Cost O(V N^2 d): only the V same-view Gram matrices
    and the V x V positive similarities are formed, never the ``(V N)^2`` matrix.

    With two views, the code's form equals ``DHEL_1 + DHEL_2 + U_i1.U_i2/t`` per sample,
    where ``DHEL_l = -U_i1.U_i2/t + log sum_{j != i} e^{U_il.U_jl/t}`` is the
    one-directional decoupled loss of view l (tested against the core's decoupled
    weighting). Returns the mean, sum, or per-sample ``(N,)`` values.
    """
    owner = "mv_dhel"
    check_choice(variant, owner, "variant", VARIANTS)
    check_reduction(reduction, owner)
    z, n, v = _normalised_views(views, owner)
    scale = as_scale(temperature, owner)
    same_view = torch.bmm(z * scale, z.transpose(1, 2))  # (V, N, N): [l, i, j]
    if variant == "paper":
        log_neg = torch.logsumexp(same_view, dim=2)
        pairs = "ordered"
    else:
        log_neg = masked_logsumexp(same_view, not_self(n, z.device)[None], dim=2)
        pairs = "upper"
    return reduce(log_neg.sum(0) - _log_positive(z, scale, pairs), reduction, owner)


def pairwise_info_nce(*views, temperature=0.5, reduction="mean"):
    """PWE baseline: the mean over view pairs ``l < l'`` of 2-view NT-Xent.

    Koromilas et al. compare against this aggregation of pairwise losses
    (``NTXent(pwe=True)`` in ``models/losses.py``): for each of the V(V-1)/2 pairs, the
    2-view NT-Xent of :func:`contrastkit.functional.info_nce` on ``(z_l, z_l')``, then
    the mean over pairs. ``reduction="none"`` gives one value per sample, the mean over
    pairs of its two anchors' losses ``(N,)``, whose mean is the ``"mean"`` result.
    """
    owner = "pairwise_info_nce"
    check_reduction(reduction, owner)
    stack_views(views, owner, min_views=2)  # validation only
    if len(views) == 1:
        views = tuple(views[0].unbind(1))
    v, n = len(views), views[0].shape[0]
    total = 0.0
    for a in range(v):
        for b in range(a + 1, v):
            per_anchor = info_nce(views[a], views[b], temperature=temperature, reduction="none")
            total = total + per_anchor.reshape(2, n).mean(0)
    return reduce(total / math.comb(v, 2), reduction, owner)


# ----------------------------------------------------------------------------- modules


class _MultiView(ContrastiveLoss):
    def __init__(self, temperature=0.5, learnable=False, variant="paper", reduction="mean"):
        super().__init__()
        self._init_temperature(temperature, learnable)
        self._init_reduction(reduction)
        self.variant = check_choice(variant, type(self).__name__, "variant", VARIANTS)


@register_loss(
    "mv_infonce",
    summary="MV-InfoNCE: one InfoNCE term per sample over all V views",
    paper="Koromilas et al. 2025, A Principled Framework for Multi-View Contrastive Learning",
)
class MVInfoNCE(_MultiView):
    """Module form of :func:`mv_info_nce` (default ``temperature=0.5``, the paper's CIFAR
    configuration). See that function for the formula and ``variant``."""

    function = staticmethod(mv_info_nce)


@register_loss(
    "mv_dhel",
    summary="MV-DHEL: multi-view alignment decoupled from per-view uniformity energies",
    paper="Koromilas et al. 2025, A Principled Framework for Multi-View Contrastive Learning",
)
class MVDHEL(_MultiView):
    """Module form of :func:`mv_dhel` (default ``temperature=0.5``, the paper's CIFAR
    configuration; the code's class default is 0.2). See that function for ``variant``."""

    function = staticmethod(mv_dhel)


@register_loss(
    "pairwise_infonce",
    summary="PWE baseline: NT-Xent averaged over all pairs of views",
    paper="Koromilas et al. 2025, A Principled Framework for Multi-View Contrastive Learning",
)
class PairwiseInfoNCE(ContrastiveLoss):
    """Module form of :func:`pairwise_info_nce`."""

    function = staticmethod(pairwise_info_nce)

    def __init__(self, temperature=0.5, learnable=False, reduction="mean"):
        super().__init__()
        self._init_temperature(temperature, learnable)
        self._init_reduction(reduction)
