"""MultiCSR's in-batch refinement: false negatives masked by a frozen encoder.

Wang et al., "Large Language Models can Contrastively Refine their Generation for Better
Sentence Representation Learning" (MultiCSR), NAACL 2024 (arXiv 2310.10962); official
code Circle-Ming/MultiCSR ``simcse/models.py::cl_masked_forward`` (read in full), with
``phi`` = 0.95 (``train.py``) and t = 0.05.

A frozen pre-trained sentence encoder E' embeds the same (anchor, positive, hard
negative) triples; every in-batch candidate whose E'-cosine with the anchor exceeds
``threshold`` (phi) is treated as a false negative. The anchor's own positive is never
masked. With C = [cos(z1, z2) | cos(z1, z3)] / t (N x (N + M)) and the same C' from E'::

    paper (default):  masked logits set to -inf (removed from the softmax), then SimCSE's
                      InfoNCE  l_i = -log softmax(C_masked)_{i, i}
    official_code:    W = 1[C' <= 20 phi] (20 = 1 / 0.05 hard-coded), diag of the first
                      block forced to 1; P = softmax(C * W) (a masked logit becomes 0, it
                      stays in the denominator); Y = [I | 0];
                      loss = mean over all N (N + M) entries of
                             -[Y log P + (1 - Y) log(1 - P)]

The paper's PDF could not be read in this session; the research notes (seeds-B sec. 10)
say the paper describes SimCSE's InfoNCE with the false negatives masked, which the
default implements by removing them; the released code's element-wise binary cross-
entropy on softmax outputs, with masked logits set to 0, is ``variant="official_code"``.
There ``log(1 - P)`` is computed as ``log(-expm1(log P))`` and clamped at the smallest
normal number of the dtype (the code has no clamp and gives -inf when P rounds to 1).
Without ``frozen_similarity`` nothing is masked (plain supervised SimCSE, or the code's
BCE form).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastkit.core.logits import compute_dtype
from contrastkit.core.validation import (
    _fail,
    check_batch_size,
    check_choice,
    check_embeddings,
    check_feature_dim,
    check_in_range,
    check_nonzero_rows,
    check_reduction,
    check_same_shape,
    check_temperature,
    check_tensor,
)
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.registry import register_loss

OWNER = "multicsr"
VARIANTS = ("paper", "official_code")


def false_negative_mask(
    frozen_similarity: torch.Tensor,
    threshold: float = 0.95,
    *,
    temperature: float = 0.05,
    variant: str = "paper",
) -> torch.Tensor:
    """Which in-batch candidates are masked: ``frozen_similarity`` (N, N + M) holds the
    frozen encoder's cosines [cos(z1', z2') | cos(z1', z3')]; a candidate is masked when
    its cosine exceeds ``threshold`` (official code: ``cos' / t > 20 * threshold``, equal
    at t = 0.05). The anchor's own positive (i, i) is never masked. Returns bool (N, N + M).
    """
    check_choice(variant, OWNER, "variant", VARIANTS)
    n = frozen_similarity.shape[0]
    if variant == "paper":
        mask = frozen_similarity > threshold
    else:
        mask = frozen_similarity / temperature > threshold * 20
    own = torch.zeros_like(mask)
    own[:, :n] = torch.eye(n, dtype=torch.bool, device=mask.device)
    return mask & ~own


def multicsr(
    anchors,
    positives,
    negatives=None,
    *,
    frozen_similarity=None,
    threshold=0.95,
    temperature=0.05,
    variant="paper",
    reduction="mean",
):
    """MultiCSR's loss (module docstring): ``anchors``, ``positives`` (N, D) row-aligned,
    optional hard ``negatives`` (M, D) shared by every anchor; ``frozen_similarity``
    (N, N + M) the frozen encoder's cosines in the same column order (None: no masking).

    Returns the mean, sum or per-anchor ``(N,)`` values (for ``official_code``, the
    per-anchor value is the row mean of the element-wise cross-entropy, so their mean is
    the code's loss).
    """
    t = check_temperature(temperature, OWNER)
    check_reduction(reduction, OWNER)
    check_choice(variant, OWNER, "variant", VARIANTS)
    phi = check_in_range(threshold, OWNER, "threshold", -1.0, 1.0, "pass e.g. threshold=0.95")
    check_embeddings(anchors, OWNER, "anchors")
    check_embeddings(positives, OWNER, "positives")
    check_same_shape(anchors, positives, OWNER, ("anchors", "positives"))
    n = anchors.shape[0]
    check_batch_size(n, OWNER, "anchors")
    parts = [anchors, positives]
    if negatives is not None:
        check_embeddings(negatives, OWNER, "negatives")
        check_feature_dim(anchors, negatives, OWNER, ("anchors", "negatives"))
        parts.append(negatives)
    for name, x in zip(("anchors", "positives", "negatives"), parts, strict=False):
        check_nonzero_rows(x, OWNER, name)
    cols = n + (0 if negatives is None else negatives.shape[0])
    dtype = compute_dtype(*parts)
    a, *cands = (F.normalize(x.to(dtype), dim=-1) for x in parts)
    logits = a @ torch.cat(cands, 0).T / t  # (N, N + M)
    mask = torch.zeros_like(logits, dtype=torch.bool)
    if frozen_similarity is not None:
        check_tensor(frozen_similarity, OWNER, "frozen_similarity")
        if tuple(frozen_similarity.shape) != (n, cols) or not torch.is_floating_point(
            frozen_similarity
        ):
            _fail(OWNER, "frozen_similarity",
                  f"has shape {tuple(frozen_similarity.shape)} and dtype {frozen_similarity.dtype}",
                  f"it must be float (N, N + M) = ({n}, {cols}): the frozen encoder's cosines "
                  "[cos(z1', z2') | cos(z1', z3')]", "build it with the frozen encoder's "
                  "embeddings of the same batch")  # fmt: skip
        if not bool(torch.isfinite(frozen_similarity).all()):
            _fail(OWNER, "frozen_similarity", "contains NaN or inf", "cosines are finite",
                  "check the frozen encoder")  # fmt: skip
        mask = false_negative_mask(
            frozen_similarity.detach().to(logits.device), phi, temperature=t, variant=variant
        )
    target = torch.arange(n, device=logits.device)
    if variant == "paper":
        per = F.cross_entropy(logits.masked_fill(mask, float("-inf")), target, reduction="none")
    else:
        log_p = torch.log_softmax(logits.masked_fill(mask, 0.0), dim=1)
        tiny = torch.finfo(log_p.dtype).tiny
        log_not_p = torch.log((-torch.expm1(log_p)).clamp_min(tiny))
        y = torch.zeros_like(log_p)
        y[target, target] = 1.0
        per = -(y * log_p + (1 - y) * log_not_p).mean(dim=1)
    if reduction == "mean":
        return per.mean()
    return per.sum() if reduction == "sum" else per


@register_loss(
    "multicsr",
    summary="SimCSE InfoNCE with in-batch false negatives masked by a frozen encoder",
    paper="Wang et al. 2024, Large Language Models can Contrastively Refine their Generation "
    "for Better Sentence Representation Learning (MultiCSR)",
)
class MultiCSR(ContrastiveLoss):
    """Module form of :func:`multicsr`: ``loss(anchors, positives, negatives=None,
    frozen_similarity=None)`` (``inputs = "two_tower"``)."""

    function = staticmethod(multicsr)
    inputs = "two_tower"

    def __init__(self, temperature=0.05, threshold=0.95, variant="paper", reduction="mean"):
        super().__init__()
        self._init_temperature(temperature, False)
        self._init_reduction(reduction)
        self.threshold = check_in_range(threshold, "MultiCSR", "threshold", -1.0, 1.0,
                                        "pass e.g. threshold=0.95")  # fmt: skip
        self.variant = check_choice(variant, "MultiCSR", "variant", VARIANTS)
