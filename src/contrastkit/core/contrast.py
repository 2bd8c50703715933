"""The one InfoNCE core: pairing x similarity x temperature x weighting x reduction.

Every InfoNCE-family objective in ``contrastkit.losses`` (NT-Xent, SupCon, DCL, DCLW,
HCL, debiased, CLIP, MoCo, ...) is this function with a different ``Pairs`` and
weighting. See ``core.weighting`` for the per-pair formula.
"""

from __future__ import annotations

import torch

from contrastkit.core.pairs import Pairs
from contrastkit.core.reduction import reduce
from contrastkit.core.similarity import pairwise
from contrastkit.core.validation import check_choice, check_has_negative, check_has_positive
from contrastkit.core.weighting import (
    NEGATIVE_WEIGHTINGS,
    POSITIVE_WEIGHTINGS,
    log_denominator,
    vmf_weights,
)

NO_POSITIVE_HINT = (
    "give every class at least two samples in the batch (a class-balanced sampler), "
    "or pass two or more views per sample"
)
NO_NEGATIVE_HINT = "make sure each batch holds more than one class or pass extra negatives"


def contrast(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    pairs: Pairs,
    *,
    scale,
    similarity: str = "cosine",
    negative_weighting: str = "uniform",
    positive_weighting: str = "uniform",
    beta: float = 0.0,
    tau_plus: float = 0.0,
    sigma: float = 0.5,
    reduction: str = "mean",
    owner: str = "info_nce",
    s: torch.Tensor | None = None,
    pairs_arg: str = "labels",
    all_reduce=None,
) -> torch.Tensor:
    """Per-anchor ``mean_p [-w_ip z_ip + log D_ip]`` over prepared embeddings, reduced.

    ``anchors`` (N, D) and ``candidates`` (M, D) are already prepared for ``similarity``
    (normalised for cosine) and in the compute dtype; ``scale`` is 1 / temperature.
    Anchors with several positives average their per-positive terms (SupCon's L_out);
    when ``pairs.weight`` holds soft positive weights a_ip in [0, 1], the average is
    ``sum_p a_ip (.) / sum_p a_ip`` instead (SupCon with a soft mask, see ``core.pairs``).
    ``s`` may pass the similarity matrix when the caller already computed it;
    ``pairs_arg`` names the argument that defined the pairs, for error messages;
    ``all_reduce`` makes batch-wide statistics (DCLW's weights) span all processes.
    """
    check_choice(negative_weighting, owner, "negative_weighting", NEGATIVE_WEIGHTINGS)
    check_choice(positive_weighting, owner, "positive_weighting", POSITIVE_WEIGHTINGS)
    positive = pairs.positive
    check_has_positive(positive, owner, NO_POSITIVE_HINT, pairs_arg)
    if negative_weighting in ("decoupled", "debiased"):
        check_has_negative(pairs.negative, owner, NO_NEGATIVE_HINT, pairs_arg)
    if s is None and similarity != "neg_sq_l2":
        z = pairwise(anchors * scale, candidates, similarity)  # scale folded into the product
    else:
        z = (pairwise(anchors, candidates, similarity) if s is None else s) * scale  # (N, M)
    log_d = log_denominator(
        z,
        positive,
        pairs.valid,
        negative_weighting,
        beta=beta,
        tau_plus=tau_plus,
        scale=scale,
    )
    w_z = z
    if positive_weighting == "vmf":
        # Detached, as in lightly's DCLWLoss: the weight rescales the positive's pull.
        w_z = vmf_weights(z.detach() / scale, positive, sigma, all_reduce) * z
    zero = torch.zeros((), dtype=z.dtype, device=z.device)
    if pairs.weight is None:
        n_pos = positive.sum(1)
        pull = torch.where(positive, w_z, zero).sum(1) / n_pos
    else:  # soft positives: weighted mean over the positives, normalised per anchor
        soft = torch.where(positive, pairs.weight.to(z.dtype), zero)
        n_pos = soft.sum(1)
        w_z = soft * w_z
        pull = torch.where(positive, w_z, zero).sum(1) / n_pos
    if log_d.shape[1] == 1:  # one denominator per anchor (uniform, decoupled)
        per_anchor = log_d[:, 0] - pull
    else:
        if pairs.weight is not None:
            log_d = soft * log_d
        push = torch.where(positive, log_d, zero).sum(1) / n_pos
        per_anchor = push - pull
    return reduce(per_anchor, reduction, owner)
