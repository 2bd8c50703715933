"""GroCo: learning by sorting with group ordering constraints.

Shvetsova, Petersen, Kukleva, Schiele & Kuehne, "Learning by Sorting: Self-supervised
Learning with Group Ordering Constraints", ICCV 2023 (arXiv:2301.02009). Official code:
ninatu/learning_by_sorting ``learning_by_sorting/losses/groco.py`` (``GroCo``), which
sorts with the authors' PyPI package ``diffsort`` (``DiffSortNet``); the sorting network
here is our own (``losses/_diffsort.py``), checked against ``diffsort`` in the tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastkit.core.reduction import reduce
from contrastkit.core.validation import _fail, check_reduction
from contrastkit.losses._diffsort import (
    SortingNetwork,
    check_sorting_args,
    network_tensors,
    soft_sort,
)
from contrastkit.losses._inputs import prepared, stack_views, working_dtype
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.registry import register_loss


def _check_topk(topk_neg, owner):
    if isinstance(topk_neg, bool) or not isinstance(topk_neg, int) or topk_neg < 1:
        _fail(
            owner,
            "topk_neg",
            f"is {topk_neg!r}",
            "it must be an int >= 1 (the number of hardest negatives sorted per anchor)",
            "pass e.g. topk_neg=10",
        )
    return topk_neg


def groco_sims(flat: torch.Tensor, n: int, v: int, topk_neg: int, stop_grad: bool):
    """The pre-ordered similarities ``[negatives ascending, positives ascending]``,
    ``(V * N, k + V - 1)`` view-major, from prepared (unit-norm) view-major rows."""
    z = flat.reshape(v, n, -1)
    target = z.detach() if stop_grad else z
    # positives: the same sample in the other views
    pos = torch.einsum("aid,uid->aiu", z, target)  # (V, N, V)
    others = torch.tensor(
        [[u for u in range(v) if u != a] for a in range(v)], device=flat.device
    )  # (V, V - 1)
    pos = pos.gather(2, others[:, None, :].expand(v, n, v - 1)).sort(dim=2).values
    # negatives: the other samples of the anchor's own view, the k most similar
    neg = torch.einsum("aid,ajd->aij", z, target)  # (V, N, N)
    eye = torch.eye(n, dtype=torch.bool, device=flat.device)
    neg = neg.masked_fill(eye, float("-inf"))
    neg = neg.topk(topk_neg, dim=2).values.flip(2)  # ascending
    return torch.cat([neg, pos], dim=2).reshape(v * n, topk_neg + v - 1)


def groco(
    *views,
    topk_neg=10,
    steepness=1.0,
    interpolation="cauchy",
    art_lambda=0.25,
    stop_grad=True,
    sorting_network="odd_even",
    reduction="mean",
    network=None,
):
    """GroCo loss (Shvetsova et al., ICCV 2023; official ``losses/groco.py``).

    For every anchor view a and sample i (cosine similarities of L2-normalised rows):

    1. positives ``p_u = cos(z_i^a, z_i^u)`` for the other views u (P = V - 1 of them),
       sorted ascending; the targets ``z_i^u`` are detached when ``stop_grad``;
    2. negatives ``cos(z_i^a, z_j^a)``, j != i, **within the anchor's own view**; the
       k = ``topk_neg`` largest, ascending; the ``z_j^a`` side is detached when
       ``stop_grad``;
    3. ``s = [negatives..., positives...]`` (length k + P) is the desired order: every
       positive above every negative. A differentiable sorting network
       (``sorting_network``, relaxed with ``interpolation`` at ``steepness``) sorts ``s``
       and gives the relaxed permutation ``P`` (k + P, k + P), ``P[r, c]`` = probability
       that element r lands at rank c (ascending);
    4. the ranks collapse to two groups: ``pi_pos[r] = sum_{c >= k} P[r, c]`` (element r
       lands among the top P ranks) and ``pi_neg[r] = sum_{c < k} P[r, c]``, both clipped
       to [0, 1]; the group targets are ``t_pos[r] = [r >= k]``, ``t_neg = 1 - t_pos``;
    5. ``l_{a,i} = 1/2 (mean_r BCE(pi_pos[r], t_pos[r]) + mean_r BCE(pi_neg[r], t_neg[r]))``
       (``torch.nn.BCELoss``, whose logs are clamped at -100).

    The loss is the mean of ``l_{a,i}`` over the V * N anchors (the official code averages
    each anchor view's batch mean over the views: the same number). Sorting only has to
    fix the groups, not the order inside a group: a positive that is already above every
    negative costs (almost) nothing, so the loss concentrates on the strong negatives and
    weak positives that violate the group order.

    Paper vs. code: the paper's method section could not be read here (only its
    abstract: "sorting the distances of positive and negative pairs ... matching a
    differentiable permutation matrix ... to a ground truth permutation matrix ... applied
    to groupwise pre-ordered inputs"), so every detail above follows the official code
    and its defaults (``topk_neg=10``, ``steepness=1``, odd-even network, Cauchy
    interpolation, ``art_lambda=0.25``, ``stop_grad=True``). Departures, all for inputs
    the official code cannot take:

    * ``art_lambda`` only acts with ``interpolation="logistic_phi"``; with the default
      Cauchy sigmoid it has no effect, exactly as in ``diffsort`` (the official code
      passes 0.25 to a Cauchy sorter);
    * a batch with fewer than ``topk_neg + 1`` samples uses all N - 1 negatives (the
      official ``torch.topk`` raises); the rank groups are then [N - 1 | P];
    * V views give P = V - 1 positives and a network of size k + P (official: the same;
      its multi-crop ``n_pos_augs`` option, where small crops are anchors but never
      positives, is not offered);
    * half-precision inputs are computed in float32 (as the official ``.float()``),
      float64 stays float64.

    ``reduction="none"`` returns the ``(V * N,)`` per-anchor values (view-major).
    ``network`` may pass a :class:`~contrastkit.losses._diffsort.SortingNetwork` of size
    k + P (the module keeps one as buffers); otherwise the layout is built (cached).
    """
    owner = "groco"
    topk_neg = _check_topk(topk_neg, owner)
    steepness, interpolation, art_lambda, sorting_network = check_sorting_args(
        owner, steepness, interpolation, art_lambda, sorting_network
    )
    check_reduction(reduction, owner)
    flat, n, v = stack_views(views, owner, min_views=2)
    dtype = working_dtype(flat)
    z = prepared(flat, "cosine", owner, "embeddings", dtype)
    k = min(topk_neg, n - 1)
    sims = groco_sims(z, n, v, k, bool(stop_grad))
    size = sims.shape[1]
    if network is not None and network.size == size and network.kind == sorting_network:
        partner, sign = network.partner, network.sign
    else:
        partner, sign = network_tensors(sorting_network, size, device=sims.device)
    _, perm = soft_sort(
        sims,
        partner,
        sign,
        steepness=steepness,
        interpolation=interpolation,
        art_lambda=art_lambda,
    )
    pi_neg = perm[:, :, :k].sum(2).clamp(0, 1)
    pi_pos = perm[:, :, k:].sum(2).clamp(0, 1)
    t_pos = (torch.arange(size, device=sims.device) >= k).to(dtype).expand_as(pi_pos)
    bce_pos = F.binary_cross_entropy(pi_pos, t_pos, reduction="none").mean(1)
    bce_neg = F.binary_cross_entropy(pi_neg, 1 - t_pos, reduction="none").mean(1)
    return reduce(0.5 * (bce_pos + bce_neg), reduction, owner)


@register_loss(
    "groco",
    summary="Group ordering constraints: differentiable sorting of positives above negatives",
    paper="Shvetsova et al. 2023, Learning by Sorting: Self-supervised Learning with "
    "Group Ordering Constraints (ICCV)",
)
class GroCo(ContrastiveLoss):
    """Module form of :func:`groco`. The sorting network's layout is kept as buffers
    (``self.sorter``, sized ``topk_neg + 1`` for two views) and rebuilt on the input's
    device when a batch needs another size (more views, or fewer than ``topk_neg + 1``
    samples)."""

    function = staticmethod(groco)

    def __init__(
        self,
        topk_neg=10,
        steepness=1.0,
        interpolation="cauchy",
        art_lambda=0.25,
        stop_grad=True,
        sorting_network="odd_even",
        reduction="mean",
    ):
        super().__init__()
        owner = "GroCo"
        self.topk_neg = _check_topk(topk_neg, owner)
        self.steepness, self.interpolation, self.art_lambda, self.sorting_network = (
            check_sorting_args(owner, steepness, interpolation, art_lambda, sorting_network)
        )
        self.stop_grad = bool(stop_grad)
        self._init_reduction(reduction)
        self.sorter = SortingNetwork(sorting_network, topk_neg + 1)

    def forward(self, *views):
        x = views[0] if views else None
        if isinstance(x, torch.Tensor) and x.dim() in (2, 3):
            n = x.shape[0]
            v = x.shape[1] if len(views) == 1 and x.dim() == 3 else len(views)
            size = min(self.topk_neg, n - 1) + v - 1
            stale = self.sorter.size != size or self.sorter.partner.device != x.device
            if n >= 2 and v >= 2 and stale:
                self.sorter = SortingNetwork(self.sorting_network, size).to(x.device)
        return super().forward(*views, network=self.sorter)
