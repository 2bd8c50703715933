"""The two losses of Wang & Liu, "Understanding the Behaviour of Contrastive Loss"
(CVPR 2021, arXiv 2012.09740): the simple contrastive loss (eq. 3) and the hard
contrastive loss (eqs. 8-9).

No official code was released; both follow the paper's equations. The paper draws
negatives from a memory bank of the whole data set and keeps the nearest 4095 of them
(``alpha = 0.0819`` on CIFAR, the upper alpha-quantile of each anchor's negatives); here
negatives are the other rows of the batch plus any ``negatives=`` (pass a memory bank
there to match the paper), and ``alpha`` is the fraction of them that is kept.
"""

from __future__ import annotations

import math

import torch

from contrastkit.core.pairs import from_views, keep_hardest_negatives
from contrastkit.core.reduction import reduce
from contrastkit.core.similarity import pairwise
from contrastkit.core.validation import check_in_range, check_positive_number
from contrastkit.losses._inputs import optional_negatives, prepared, stack_views, working_dtype
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.losses.info_nce import _multi_view
from contrastkit.registry import register_loss


def _keep_fraction(alpha, owner):
    """``alpha`` in (0, 1] -> a function giving the number of negatives kept of M."""
    if alpha is None:
        return None
    alpha = check_in_range(alpha, owner, "alpha", 1e-9, 1.0, "pass e.g. alpha=0.0819 or None")
    return lambda m: max(1, math.ceil(alpha * m))


def hard_contrastive(
    *views,
    negatives=None,
    temperature=0.2,
    alpha=0.0819,
    similarity="cosine",
    reduction="mean",
    distributed=False,
):
    """Hard contrastive loss (Wang & Liu 2021, eq. 9)::

        l_i = -log exp(s_ii/t) / (exp(s_ii/t) + sum_{k: s_ik >= s_alpha^(i)} exp(s_ik/t))

    where ``s_alpha^(i)`` is the upper ``alpha`` quantile of anchor i's negative
    similarities, i.e. only the ``ceil(alpha * M)`` nearest negatives are contrasted. The
    selection is a pairing choice of the InfoNCE core; ``alpha=None`` or 1 gives InfoNCE.
    """
    return _multi_view(
        views,
        owner="hard_contrastive",
        negatives=negatives,
        temperature=temperature,
        similarity=similarity,
        reduction=reduction,
        hardest=_keep_fraction(alpha, "hard_contrastive"),
        distributed=distributed,
    )


def simple_contrastive(
    *views, negatives=None, lam=None, alpha=None, similarity="cosine", reduction="mean"
):
    """Simple contrastive loss (Wang & Liu 2021, eq. 3): ``l_i = -s_ii + lam sum_k s_ik``.

    It has no temperature and no hardness awareness: every negative is pushed equally.
    The paper does not state ``lam``; the default ``None`` uses ``1 / M`` (M negatives of
    the anchor), the weight that its tau -> infinity limit of InfoNCE (eq. 7) gives up to
    scale. ``alpha`` keeps only the nearest fraction of negatives, the paper's "hard
    simple loss" (sec. 5). With several positives the ``-s_ip`` terms are averaged.
    """
    owner = "simple_contrastive"
    flat, n, v = stack_views(views, owner)
    negatives = optional_negatives(negatives, flat, owner)
    dtype = working_dtype(flat, negatives)
    anchors = prepared(flat, similarity, owner, "embeddings", dtype)
    candidates = anchors
    pairs = from_views(n, v, flat.device)
    if negatives is not None:
        extra = prepared(negatives, similarity, owner, "negatives", dtype)
        candidates = torch.cat([anchors, extra], 0)
        pairs = pairs.with_extra_negatives(extra.shape[0])
    s = pairwise(anchors, candidates, similarity)
    keep = _keep_fraction(alpha, owner)
    if keep is not None:
        pairs = keep_hardest_negatives(pairs, s, keep(int(pairs.negative.sum(1).min())))
    negative = pairs.negative
    zero = torch.zeros_like(s)
    pull = torch.where(pairs.positive, s, zero).sum(1) / pairs.positive.sum(1)
    push = torch.where(negative, s, zero).sum(1)
    if lam is None:
        weight = 1.0 / negative.sum(1).to(s.dtype)
    else:
        weight = check_positive_number(lam, owner, "lam", "pass e.g. lam=None (1/M) or 0.01")
    return reduce(-pull + weight * push, reduction, owner)


@register_loss(
    "hardcontrastive",
    summary="InfoNCE over only the nearest alpha-fraction of negatives",
    paper="Wang & Liu 2021, Understanding the Behaviour of Contrastive Loss",
)
class HardContrastive(ContrastiveLoss):
    """Module form of :func:`hard_contrastive`."""

    function = staticmethod(hard_contrastive)

    def __init__(
        self,
        temperature=0.2,
        alpha=0.0819,
        similarity="cosine",
        reduction="mean",
        distributed=False,
    ):
        super().__init__()
        self._init_contrastive(temperature, reduction, similarity)
        self.distributed = bool(distributed)
        self.alpha = alpha
        _keep_fraction(alpha, "HardContrastive")


@register_loss(
    "simplecontrastive",
    summary="Linear pull of positives and push of negatives, no hardness awareness",
    paper="Wang & Liu 2021, Understanding the Behaviour of Contrastive Loss",
)
class SimpleContrastive(ContrastiveLoss):
    """Module form of :func:`simple_contrastive`."""

    function = staticmethod(simple_contrastive)

    def __init__(self, lam=None, alpha=None, similarity="cosine", reduction="mean"):
        super().__init__()
        self._init_reduction(reduction)
        if lam is not None:
            check_positive_number(lam, "SimpleContrastive", "lam", "pass e.g. lam=0.01")
        _keep_fraction(alpha, "SimpleContrastive")
        self.lam = lam
        self.alpha = alpha
        self.similarity = similarity
