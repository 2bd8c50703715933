"""DebCSE: inverse-propensity-weighted selection of positive and negative pairs.

Miao, Du & Zhang, "DebCSE: Rethinking Unsupervised Contrastive Sentence Embedding
Learning in the Debiasing Perspective", CIKM 2023 (arXiv 2309.07396).

**No official code exists** (none was found), and only the paper's abstract could be read
in this session. What is implemented is the reconstruction in the research notes
(seeds-B sec. 4), marked there as unverified, and every choice below that the abstract
does not fix is ours:

* The abstract: pair construction by simple rules (dropout copies as positives, all other
  sentences as negatives) introduces biases (sentence length, word frequency, false
  negatives); DebCSE "eliminate[s] the impact of these biases by an inverse propensity
  weighted sampling method to select high-quality positive and negative pairs according
  to both the surface and semantic similarity between sentences".
* Reconstruction: over a pool of candidate pairs (i, j) with a surface similarity
  ``u_ij`` in [0, 1] (token overlap, length ratio: precomputed by the caller) and a
  semantic similarity ``s_ij`` (a base encoder's cosine), a pair is a positive candidate
  when ``s_ij >= positive_threshold`` and a negative candidate when
  ``s_ij <= negative_threshold``. The propensity ``e(b) = P(positive | surface bin b)``
  is estimated per equal-width bin of ``u`` over the candidates. Positives are drawn
  with probability proportional to ``1 / e``, negatives to ``1 / (1 - e)`` (clipped to
  ``[0.05, 0.95]``): after weighting each bin holds equal positive and negative mass, so
  surface similarity no longer predicts the label. Training is SimCSE's supervised
  InfoNCE (t = 0.05) over the selected (anchor, positive, hard negative) triples.
* Our choices: equal-width bins (10), thresholds 0.7 / 0.3 on cosine, the clip, the
  sentences without a positive candidate keeping their dropout copy (done in
  ``contrastkit.text.cse``), per-triple weights as an alternative to sampling.

Pure torch: the surface scores are inputs (``contrastkit.text.cse.surface_similarity``
computes token-overlap scores from texts).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from contrastkit.core.logits import compute_dtype
from contrastkit.core.validation import (
    _fail,
    check_batch_size,
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

OWNER = "debcse"


class IPWeights(NamedTuple):
    """Per-pair inverse propensity weights (zero for pairs that are not candidates)."""

    positive: torch.Tensor  # (N, M): 1 / e for positive candidates
    negative: torch.Tensor  # (N, M): 1 / (1 - e) for negative candidates
    propensity: torch.Tensor  # (N, M): e of each pair's surface bin


def _check_matrix(x, shape, owner, arg, low=None, high=None):
    check_tensor(x, owner, arg)
    if not torch.is_floating_point(x):
        _fail(owner, arg, f"has dtype {x.dtype}", "it must be floating point",
              f"pass {arg}.float()", TypeError)  # fmt: skip
    if shape is not None and tuple(x.shape) != tuple(shape):
        _fail(owner, arg, f"has shape {tuple(x.shape)}", f"it must be {tuple(shape)}",
              "build one score per (anchor, candidate) pair")  # fmt: skip
    if x.dim() != 2:
        _fail(owner, arg, f"has shape {tuple(x.shape)}", "it must be 2-D (N, M)",
              "build one score per (anchor, candidate) pair")  # fmt: skip
    bad = ~torch.isfinite(x)
    if low is not None:
        bad |= (x < low) | (x > high)
    if bool(bad.any()):
        rule = f"scores must be finite and in [{low}, {high}]" if low is not None else "finite"
        _fail(owner, arg, "has entries outside the allowed range (or NaN/inf)", rule,
              f"clamp or rescale {arg}")  # fmt: skip
    return x


def _check_clip(clip, owner):
    if clip is None:
        return None
    ok = (
        isinstance(clip, tuple | list)
        and len(clip) == 2
        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in clip)
        and 0.0 < clip[0] <= clip[1] < 1.0
    )
    if not ok:
        _fail(owner, "clip", f"is {clip!r}", "it must be None or (low, high) with 0 < low <= "
              "high < 1", "pass clip=(0.05, 0.95)")  # fmt: skip
    return float(clip[0]), float(clip[1])


def _check_bins(bins, owner):
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        _fail(owner, "bins", f"is {bins!r}", "it must be an int >= 1", "pass e.g. bins=10")
    return bins


def surface_bins(surface: torch.Tensor, bins: int) -> torch.Tensor:
    """Equal-width bin of each surface score in [0, 1] (1.0 falls in the last bin)."""
    return (surface * bins).floor().long().clamp(0, bins - 1)


def debcse_propensity(
    surface: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    *,
    bins: int = 10,
    clip=(0.05, 0.95),
) -> torch.Tensor:
    """Propensity ``e(b) = #positive / (#positive + #negative)`` of each pair's surface bin
    b, estimated over the candidate pairs (``positive`` / ``negative`` bool masks, N x M),
    then clipped to ``clip`` (None: unclipped). Pairs whose bin holds no candidate get
    0.5. Returns (N, M) float64."""
    _check_matrix(surface, None, OWNER, "surface", 0.0, 1.0)
    bins = _check_bins(bins, OWNER)
    clip = _check_clip(clip, OWNER)
    for name, mask in (("positive", positive), ("negative", negative)):
        check_tensor(mask, OWNER, name)
        if mask.dtype != torch.bool or mask.shape != surface.shape:
            _fail(OWNER, name, f"has dtype {mask.dtype} and shape {tuple(mask.shape)}",
                  f"it must be a bool mask of the surface's shape {tuple(surface.shape)}",
                  "pass e.g. semantic >= threshold")  # fmt: skip
    if bool((positive & negative).any()):
        _fail(OWNER, "negative", "overlaps `positive`", "a pair is a positive or a negative "
              "candidate, not both", "use negative_threshold < positive_threshold")  # fmt: skip
    b = surface_bins(surface, bins).flatten()
    pos = torch.zeros(bins, dtype=torch.float64, device=surface.device)
    tot = torch.zeros_like(pos)
    pos.index_add_(0, b, positive.flatten().double())
    tot.index_add_(0, b, (positive | negative).flatten().double())
    e = torch.where(tot > 0, pos / tot.clamp_min(1), torch.full_like(pos, 0.5))
    if clip is not None:
        e = e.clamp(*clip)
    return e[b].view(surface.shape)


def debcse_weights(
    surface: torch.Tensor,
    semantic: torch.Tensor,
    *,
    positive_threshold: float = 0.7,
    negative_threshold: float = 0.3,
    valid: torch.Tensor | None = None,
    bins: int = 10,
    clip=(0.05, 0.95),
) -> IPWeights:
    """Inverse propensity weights of the candidate pairs (see the module docstring).

    ``surface`` (N, M) in [0, 1] and ``semantic`` (N, M) cosines; ``valid`` (N, M) bool
    excludes pairs (an anchor with itself, say). Positive candidates: valid and
    ``semantic >= positive_threshold``, weight ``1 / e``; negative candidates: valid and
    ``semantic <= negative_threshold``, weight ``1 / (1 - e)``; all other pairs 0.
    """
    _check_matrix(surface, None, OWNER, "surface", 0.0, 1.0)
    _check_matrix(semantic, surface.shape, OWNER, "semantic")
    hi = check_in_range(positive_threshold, OWNER, "positive_threshold", -1.0, 1.0,
                        "pass a cosine, e.g. 0.7")  # fmt: skip
    lo = check_in_range(negative_threshold, OWNER, "negative_threshold", -1.0, 1.0,
                        "pass a cosine, e.g. 0.3")  # fmt: skip
    if not lo < hi:
        _fail(OWNER, "negative_threshold", f"is {lo} >= positive_threshold {hi}",
              "negatives must be less similar than positives", "pass e.g. 0.3 and 0.7")  # fmt: skip
    if valid is None:
        valid = torch.ones_like(surface, dtype=torch.bool)
    elif not (isinstance(valid, torch.Tensor) and valid.dtype == torch.bool
              and valid.shape == surface.shape):  # fmt: skip
        _fail(OWNER, "valid", f"is {valid!r}"[:80], "it must be a bool (N, M) mask",
              "pass e.g. ~torch.eye(N, dtype=torch.bool)")  # fmt: skip
    positive = valid & (semantic >= hi)
    negative = valid & (semantic <= lo)
    e = debcse_propensity(surface, positive, negative, bins=bins, clip=clip)
    return IPWeights(positive / e, negative / (1 - e), e)


def debcse_select(
    weights: IPWeights, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw, for each anchor (row), one positive with probability proportional to
    ``weights.positive`` and one negative proportional to ``weights.negative``; a row
    without candidates gets -1. Returns two (N,) long tensors of candidate indices."""
    if generator is not None and not isinstance(generator, torch.Generator):
        _fail(OWNER, "generator", f"is a {type(generator).__name__}",
              "it must be a torch.Generator or None", "pass torch.Generator().manual_seed(0)",
              TypeError)  # fmt: skip

    def draw(w):
        w = w.detach().double().cpu()
        has = w.sum(1) > 0
        idx = torch.full((w.shape[0],), -1, dtype=torch.long)
        if bool(has.any()):
            idx[has] = torch.multinomial(w[has], 1, generator=generator).squeeze(1)
        return idx.to(weights.positive.device)

    return draw(weights.positive), draw(weights.negative)


def debcse(
    anchors,
    positives,
    negatives=None,
    *,
    weights=None,
    temperature=0.05,
    reduction="mean",
):
    """SimCSE's supervised InfoNCE over DebCSE-selected triples: ``anchors``,
    ``positives`` (N, D) row-aligned, optional hard ``negatives`` (M, D) shared by every
    anchor (SimCSE eq. 5)::

        l_i = -log e^{cos(a_i, p_i)/t} / ( sum_j e^{cos(a_i, p_j)/t} + sum_k e^{cos(a_i, n_k)/t} )

    ``weights`` (N,) >= 0, optional: per-triple inverse propensity weights, the weighting
    alternative to sampling (e.g. ``1 / e`` of each selected positive): ``"mean"`` is then
    ``sum_i w_i l_i / sum_i w_i``, ``"sum"`` ``sum_i w_i l_i``, ``"none"`` ``w_i l_i``.
    """
    t = check_temperature(temperature, OWNER)
    check_reduction(reduction, OWNER)
    check_embeddings(anchors, OWNER, "anchors")
    check_embeddings(positives, OWNER, "positives")
    check_same_shape(anchors, positives, OWNER, ("anchors", "positives"))
    check_batch_size(anchors.shape[0], OWNER, "anchors")
    parts = [anchors, positives]
    if negatives is not None:
        check_embeddings(negatives, OWNER, "negatives")
        check_feature_dim(anchors, negatives, OWNER, ("anchors", "negatives"))
        parts.append(negatives)
    for name, x in zip(("anchors", "positives", "negatives"), parts, strict=False):
        check_nonzero_rows(x, OWNER, name)
    dtype = compute_dtype(*parts)
    a, *cands = (F.normalize(x.to(dtype), dim=-1) for x in parts)
    logits = a @ torch.cat(cands, 0).T / t
    n = a.shape[0]
    per = F.cross_entropy(logits, torch.arange(n, device=a.device), reduction="none")
    if weights is None:
        return per.mean() if reduction == "mean" else per.sum() if reduction == "sum" else per
    check_tensor(weights, OWNER, "weights")
    if weights.shape != (n,) or not torch.is_floating_point(weights):
        _fail(OWNER, "weights", f"has shape {tuple(weights.shape)} and dtype {weights.dtype}",
              f"it must be a float tensor (N,) = ({n},)", "pass one weight per triple")  # fmt: skip
    if not bool((torch.isfinite(weights) & (weights >= 0)).all()) or float(weights.sum()) <= 0:
        _fail(OWNER, "weights", "has negative, non-finite or all-zero entries",
              "weights must be finite, >= 0 and not all 0", "pass e.g. 1 / propensity")  # fmt: skip
    w = weights.to(per)
    if reduction == "mean":
        return (w * per).sum() / w.sum()
    return (w * per).sum() if reduction == "sum" else w * per


@register_loss(
    "debcse",
    summary="SimCSE-style InfoNCE over inverse-propensity-selected (anchor, pos, neg) triples",
    paper="Miao, Du & Zhang 2023, DebCSE: Rethinking Unsupervised Contrastive Sentence "
    "Embedding Learning in the Debiasing Perspective (no official code)",
)
class DebCSE(ContrastiveLoss):
    """Module form of :func:`debcse`: ``loss(anchors, positives, negatives=None,
    weights=None)`` (``inputs = "two_tower"``). The selection itself is
    :func:`debcse_weights` + :func:`debcse_select` (done per batch by
    ``contrastkit.text.cse.DebCSEMethod``)."""

    function = staticmethod(debcse)
    inputs = "two_tower"

    def __init__(self, temperature=0.05, reduction="mean"):
        super().__init__()
        self._init_temperature(temperature, False)
        self._init_reduction(reduction)
