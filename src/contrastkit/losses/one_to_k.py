"""1-to-K contrastive learning (CCR^k; Nie et al., KDD 2024, arXiv:2406.18254).

One anchor (an image) has K simultaneous positives (its captions in K languages). The
image-to-text direction puts all N * K texts of the batch in one softmax row, so the K
positives of an anchor sit in the same denominator and compete with each other as well as
with the other anchors' texts; the text-to-image direction is an ordinary one-positive
InfoNCE row over the N anchors. Both directions are presets of ``core.contrast``.
"""

from __future__ import annotations

import torch

from contrastkit.core.contrast import contrast
from contrastkit.core.pairs import from_keys
from contrastkit.core.reduction import reduce
from contrastkit.core.similarity import pairwise
from contrastkit.core.temperature import as_scale
from contrastkit.core.validation import (
    _fail,
    check_batch_size,
    check_choice,
    check_feature_dim,
)
from contrastkit.losses._inputs import check_grouped, prepared, working_dtype
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.registry import register_loss

VARIANTS = ("paper", "official_code")


def one_to_k(
    anchors,
    positives,
    *,
    temperature=0.07,
    variant="paper",
    similarity="cosine",
    reduction="mean",
):
    """1-to-K contrastive loss of CCR^k (Nie et al., KDD 2024, arXiv:2406.18254, Sec. 4.1,
    the 1-to-K contrastive learning objective; official code BUAADreamer/CCRK
    ``models/xvlm.py::XVLMBase.get_unialign_contrastive_loss``).

    ``anchors`` (N, D) (images) and ``positives`` (N, K, D) (the K texts of each image,
    e.g. one caption per language). With ``s`` the similarity, ``t`` the temperature and
    the N * K texts ``t_{j,k}`` flattened instance-major::

        i2t_i = -(1/K) sum_k log( exp(s(a_i, t_{i,k})/t) / sum_{j, k'} exp(s(a_i, t_{j,k'})/t) )
        t2i_{i,k} = -log( exp(s(t_{i,k}, a_i)/t) / sum_j exp(s(t_{i,k}, a_j)/t) )

    ``variant="paper"`` (default): ``loss = (mean_i i2t_i + mean_{i,k} t2i_{i,k}) / 2``;
    every text is one query of the text-to-image direction and the K positives of the
    image-to-text row are averaged, so each language has the same weight in both
    directions. For K = 1 this is CLIP's symmetric loss.

    ``variant="official_code"``: the released code's scaling. It builds an unnormalised
    multi-hot target (all K positives weighted 1), so its image-to-text term is the *sum*
    over the K positives, averages the text-to-image term over the N * K texts, and then
    divides the mean of the two directions by K (``need_divm == 0``)::

        loss_code = (K * mean_i i2t_i + mean_{i,k} t2i_{i,k}) / (2 K)
                  = mean_i i2t_i / 2 + mean_{i,k} t2i_{i,k} / (2 K)

    so the image-to-text terms agree with the paper's form and the text-to-image term is
    down-weighted by 1/K. Both variants have the same minimisers only when the two terms
    are minimised jointly; their gradients differ for K > 1.

    Verification: the code was read in full. The paper's equations could not be read in
    full in this session (only the abstract and a third-party summary quoting the
    image-to-text term with its ``1/K`` factor and the K positives together in the
    denominator); the text-to-image normalisation of the default is the natural per-text
    average and is marked unverified in the report.

    Departures: the code all-gathers features across GPUs (``itc_allgather == 0``); here
    the batch is local. Its optional ``idx`` (duplicate-image ids, normalised targets) is
    not reproduced. ``temperature`` may be a 0-d tensor (learnable; the module uses
    ``LogitScale``, clamped at 1 / temperature <= 100, where the code learns ``temp``
    directly).

    Returns a 0-d tensor, or with ``reduction="none"`` one value per anchor ``(N,)``
    (paper: ``(i2t_i + mean_k t2i_{i,k}) / 2``; code: ``i2t_i / 2 + mean_k t2i_{i,k} /
    (2 K)``) whose mean is the ``"mean"`` result. Half inputs are computed in float32.
    """
    owner = "one_to_k"
    check_choice(variant, owner, "variant", VARIANTS)
    fix = "stack the K positives of anchor i in positives[i]"
    n, k = check_grouped(anchors, positives, owner, ("anchors", "positives"), ("N", "K"), fix)
    if k < 1:
        _fail(owner, "positives", "has K = 0 positives", "K must be >= 1", "pass (N, K, D)")
    check_feature_dim(anchors, positives, owner, ("anchors", "positives"))
    check_batch_size(n, owner, "anchors")
    dtype = working_dtype(anchors, positives)
    a = prepared(anchors, similarity, owner, "anchors", dtype)
    t = prepared(positives.reshape(n * k, -1), similarity, owner, "positives", dtype)
    scale = as_scale(temperature, owner)
    ids = torch.arange(n, device=a.device)
    text_ids = ids.repeat_interleave(k)  # instance-major: row i * K + k
    s = pairwise(a, t, similarity)  # (N, N * K)
    common = dict(scale=scale, similarity=similarity, reduction="none", owner=owner)
    # Image -> text: K positives in one row; contrast averages over them (1/K sum_k).
    i2t = contrast(a, t, from_keys(ids, text_ids), s=s, **common)
    # Text -> image: one positive per text, the N anchors as candidates.
    t2i = contrast(t, a, from_keys(text_ids, ids), s=s.T, **common).view(n, k).mean(1)
    if variant == "paper":
        per_anchor = 0.5 * (i2t + t2i)
    else:
        per_anchor = 0.5 * i2t + t2i / (2 * k)
    return reduce(per_anchor, reduction, owner)


@register_loss(
    "one_to_k",
    summary="1-to-K contrastive loss: one anchor, K simultaneous positives in one softmax row",
    paper="Nie et al. 2024 (KDD), Improving the Consistency in Cross-Lingual Cross-Modal "
    "Retrieval with 1-to-K Contrastive Learning",
)
class OneToK(ContrastiveLoss):
    """Module form of :func:`one_to_k`: ``loss(anchors (N, D), positives (N, K, D))``.

    The temperature is learnable by default (starts at 0.07, as CCR^k's config ``temp``).
    """

    function = staticmethod(one_to_k)

    inputs = "one_to_many"

    def __init__(
        self,
        temperature=0.07,
        learnable=True,
        variant="paper",
        similarity="cosine",
        reduction="mean",
    ):
        super().__init__()
        self._init_contrastive(temperature, reduction, similarity, learnable)
        self.variant = check_choice(variant, "OneToK", "variant", VARIANTS)
