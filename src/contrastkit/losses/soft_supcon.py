"""Supervised contrastive loss with soft, graded positives (SPACE-2's tree-weighted SupCon).

He et al., "SPACE-2: Tree-Structured Semi-Supervised Contrastive Pre-training for
Task-Oriented Dialog Understanding", COLING 2022 (Sec. 3.2-3.3). Released code:
AlibabaResearch/DAMO-ConvAI ``space-2/space/models/unified_transformer.py``
(``_collect_metrics``: ``SupConLoss(features, mask=scores[i])`` per subspace) and
``space-2/space/utils/scores.py::hierarchical_set_score`` (the tree score; here
``losses.tree_scores.hierarchical_set_score`` / ``tree_similarity``, re-exported below).
"""

from __future__ import annotations

from contrastkit.core.contrast import contrast
from contrastkit.core.pairs import from_scores, not_self
from contrastkit.core.temperature import as_scale
from contrastkit.core.validation import check_has_positive, check_unit_scores
from contrastkit.losses._inputs import prepared, stack_views, working_dtype
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.losses.tree_scores import TREE_VIEWS, hierarchical_set_score, tree_similarity
from contrastkit.registry import register_loss

__all__ = [
    "TREE_VIEWS",
    "SoftSupCon",
    "hierarchical_set_score",
    "soft_sup_con",
    "tree_similarity",
]

NO_SOFT_POSITIVE_HINT = (
    "give each sample a score > 0 with some other row: pass two views (the diagonal of "
    "scores weights a sample's own other view) or make sure related samples share a batch"
)


def soft_sup_con(
    *views,
    scores,
    temperature=0.07,
    similarity="cosine",
    reduction="mean",
):
    """SupCon (L_out) whose positive mask is a soft score matrix in [0, 1].

    Rows are the V views of N samples in view-major order (row ``v * N + i`` is view v of
    sample i); every other row is a candidate. With ``S = scores`` (N, N) and
    ``a_ij = S[sample(i), sample(j)]`` for rows i != j, anchor i's loss is::

        l_i = - sum_{j != i} a_ij log( exp(s_ij / t) / sum_{k != i} exp(s_ik / t) )
              / sum_{j != i} a_ij

    i.e. SupCon's L_out (Khosla et al. 2020, eq. 2) with the 0/1 same-class mask replaced
    by graded weights, normalised per anchor by the sum of its weights. This is how SPACE-2
    feeds its tree-similarity matrices to a Khosla-style ``SupConLoss(features, mask=S)``
    (the mask is tiled over views and the self-pair removed; pairs with score 0 are pure
    negatives). ``S[i, i]`` weights the pair (view 1 of i, view 2 of i): SPACE-2 sets it
    to 1 (same sample), as ``tree_similarity`` does. A 0/1 ``scores`` from labels gives
    exactly ``sup_con``. ``temperature`` defaults to SPACE-2's 0.07.

    Not verified: SPACE-2's ``space/utils/criterions.py`` (its ``SupConLoss``) is not in
    the public index we could read. We follow the Khosla et al. reference ``SupConLoss``
    that its call signature ``(features (B, 2, D), mask=S)`` matches: normalisation by
    ``mask.sum(1)`` (sum of weights), denominator over all other rows, and
    ``base_temperature = temperature`` (no extra ``t / base_t`` factor). If the released
    file divides by the number of nonzero weights or rescales by ``t / base_t``, results
    differ by that per-anchor factor.

    Shapes: ``views`` is one ``(N, V, D)`` tensor or V >= 1 tensors ``(N, D)`` (one view
    is allowed: anchors then pair only with other samples); ``scores`` ``(N, N)`` floats
    in [0, 1]. Returns a 0-d tensor, or ``(V * N,)`` per-anchor values (view-major) with
    ``reduction="none"``. An anchor whose weights are all 0 raises the core's "no
    positive" error. Half-precision inputs are computed and returned in float32.
    """
    owner = "soft_sup_con"
    flat, n, v = stack_views(views, owner, min_views=1)
    check_unit_scores(scores, (n, n), owner)
    dtype = working_dtype(flat)
    rows = prepared(flat, similarity, owner, "embeddings", dtype)
    weight = scores.to(device=rows.device, dtype=dtype).repeat(v, v)
    pairs = from_scores(weight, not_self(v * n, rows.device))
    check_has_positive(pairs.positive, owner, NO_SOFT_POSITIVE_HINT, "scores")
    return contrast(
        rows,
        rows,
        pairs,
        scale=as_scale(temperature, owner),
        similarity=similarity,
        reduction=reduction,
        owner=owner,
        pairs_arg="scores",
    )


@register_loss(
    "soft_supcon",
    summary="SupCon with graded positives weighted by a [0, 1] score matrix (tree similarity)",
    paper="He et al. 2022, SPACE-2: Tree-Structured Semi-Supervised Contrastive Pre-training "
    "for Task-Oriented Dialog Understanding (COLING)",
)
class SoftSupCon(ContrastiveLoss):
    """Module form of :func:`soft_sup_con`: ``loss(z1, z2, scores=S)`` with ``S`` (N, N)
    in [0, 1], e.g. ``tree_similarity(frames)``."""

    function = staticmethod(soft_sup_con)

    inputs = "scores"

    def __init__(self, temperature=0.07, similarity="cosine", learnable=False, reduction="mean"):
        super().__init__()
        self._init_contrastive(temperature, reduction, similarity, learnable)
