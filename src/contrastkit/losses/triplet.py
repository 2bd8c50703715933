"""Triplet margin loss with batch-hard mining (Hermans, Beyer & Leibe 2017, "In Defense
of the Triplet Loss for Person Re-Identification", eq. 5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastkit.core.contrast import NO_NEGATIVE_HINT, NO_POSITIVE_HINT
from contrastkit.core.pairs import from_view_labels
from contrastkit.core.reduction import reduce
from contrastkit.core.validation import (
    check_choice,
    check_has_negative,
    check_has_positive,
    check_positive_number,
)
from contrastkit.losses._inputs import optional_labels, stack_views, working_dtype
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.registry import register_loss

DISTANCES = ("euclidean", "squared_euclidean", "cosine")


def pairwise_distance(x: torch.Tensor, distance: str) -> torch.Tensor:
    """``(N, D) -> (N, N)`` distances; Euclidean is clamped at 1e-12 inside the root so
    the gradient of a zero distance is finite."""
    if distance == "cosine":
        x = F.normalize(x, dim=-1)
        return 1 - x @ x.T
    norms = (x * x).sum(-1)
    # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: one matrix product instead of an (N, N, D) tensor.
    sq = (norms[:, None] + norms[None, :] - 2 * x @ x.T).clamp_min(0)
    return sq if distance == "squared_euclidean" else sq.clamp_min(1e-12).sqrt()


def triplet_margin(
    *views, labels, margin=0.2, distance="euclidean", normalize=True, reduction="mean"
):
    """Batch-hard triplet loss: for every anchor, its farthest positive and nearest
    negative in the batch, ``l_i = max(0, d(a, p_hard) - d(a, n_hard) + margin)``.

    ``margin=None`` uses the soft margin ``softplus(d_ap - d_an)`` of the same paper.
    ``normalize`` puts embeddings on the unit sphere first (as pytorch-metric-learning's
    default ``LpDistance`` does); Hermans et al. use raw embeddings (``normalize=False``).
    Several views of a sample (``(N, V, D)``) are positives of each other.
    """
    owner = "triplet_margin"
    check_choice(distance, owner, "distance", DISTANCES)
    if margin is not None:
        margin = check_positive_number(margin, owner, "margin", "pass e.g. margin=0.2")
    flat, n, v = stack_views(views, owner, min_views=1)
    labels = optional_labels(labels, n, owner)
    x = flat.to(working_dtype(flat))
    if normalize:
        x = F.normalize(x, dim=-1)
    pairs = from_view_labels(labels, v)
    check_has_positive(pairs.positive, owner, NO_POSITIVE_HINT)
    check_has_negative(pairs.negative, owner, NO_NEGATIVE_HINT)
    d = pairwise_distance(x, distance)
    d_ap = d.masked_fill(~pairs.positive, float("-inf")).amax(1)
    d_an = d.masked_fill(~pairs.negative, float("inf")).amin(1)
    gap = d_ap - d_an
    per_anchor = F.softplus(gap) if margin is None else F.relu(gap + margin)
    return reduce(per_anchor, reduction, owner)


@register_loss(
    "triplet",
    summary="Triplet margin loss on the hardest positive and negative in the batch",
    paper="Hermans et al. 2017, In Defense of the Triplet Loss for Person Re-Identification",
)
class TripletMargin(ContrastiveLoss):
    """Module form of :func:`triplet_margin`."""

    function = staticmethod(triplet_margin)

    inputs = "labels"

    def __init__(self, margin=0.2, distance="euclidean", normalize=True, reduction="mean"):
        super().__init__()
        self._init_reduction(reduction)
        if margin is not None:
            check_positive_number(margin, "TripletMargin", "margin", "pass e.g. margin=0.2")
        check_choice(distance, "TripletMargin", "distance", DISTANCES)
        self.margin = margin
        self.distance = distance
        self.normalize = bool(normalize)
