"""CACR: Contrastive Attraction and Contrastive Repulsion (Zheng et al., TMLR 2023).

Paper: H. Zheng, X. Chen, J. Yao, H. Yang, C. Li, Y. Zhang, H. Zhang, I. Tsang, J. Zhou,
M. Zhou, "Contrastive Attraction and Contrastive Repulsion for Representation Learning",
TMLR 2023, arXiv:2105.03746. Code followed: JegZheng/CACR-SSL
``small_scale_experiments/losses/__init__.py`` (``our_loss1``, ``forward_negative_loss``,
``our_loss2``) and ``small_scale_experiments/cifar10/main_ours.py`` (loss = CA + CR).
"""

from __future__ import annotations

import math

import torch

from contrastkit.core.logits import masked_logsumexp
from contrastkit.core.pairs import not_self
from contrastkit.core.reduction import reduce
from contrastkit.core.similarity import pairwise
from contrastkit.core.validation import _fail, check_flag, check_in_range, check_reduction
from contrastkit.losses._inputs import prepared, stack_views, working_dtype
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.registry import register_loss


def _weighted_cost(logits: torch.Tensor, cost: torch.Tensor, mask: torch.Tensor, dim: int):
    """``sum_{mask} softmax_{mask}(logits) * cost`` along ``dim`` (log-domain softmax)."""
    log_w = logits - masked_logsumexp(logits, mask, dim=dim, keepdim=True)
    zero = torch.zeros((), dtype=cost.dtype, device=cost.device)
    return torch.where(mask, log_w.exp() * cost, zero).sum(dim)


def _check_nonnegative(value, owner: str, arg: str) -> float:
    value = check_in_range(value, owner, arg, 0.0, math.inf, f"pass e.g. {arg}=1.0")
    if not math.isfinite(value):
        _fail(owner, arg, f"is {value}", "it must be a finite number >= 0", f"pass e.g. {arg}=1.0")
    return value


def _check_options(owner, alpha, beta, tau_plus, tau_minus, debiased, class_prior, detach):
    """The checked hyperparameters of :func:`cacr` / :class:`CACR`, in signature order
    (``detach`` is ``detach_weights``)."""
    return (
        _check_nonnegative(alpha, owner, "alpha"),
        _check_nonnegative(beta, owner, "beta"),
        _check_nonnegative(tau_plus, owner, "tau_plus"),
        _check_nonnegative(tau_minus, owner, "tau_minus"),
        check_flag(debiased, owner, "debiased"),
        check_in_range(class_prior, owner, "class_prior", 0.0, 0.999, "pass e.g. class_prior=0.1"),
        check_flag(detach, owner, "detach_weights"),
    )


def cacr(
    *views,
    alpha=1.0,
    beta=1.0,
    tau_plus=1.0,
    tau_minus=0.9,
    debiased=False,
    class_prior=0.1,
    detach_weights=False,
    reduction="mean",
):
    """Contrastive Attraction and Contrastive Repulsion over M >= 2 views (CACR).

    Embeddings are L2-normalised (the paper's encoder ends in an ``L2Norm`` layer) and
    ``d(a, b) = ||a - b||^2`` is the squared Euclidean distance, computed once for all
    ``(M N)^2`` row pairs with one matrix product (``core.similarity.pairwise`` with
    ``"neg_sq_l2"``) instead of the official code's per-view-pair loops.

    Contrastive attraction (CA; the code's ``our_loss1``): every view v of sample i is a
    query; its positives are the other M - 1 views u of the same sample, weighted by the
    conditional distribution ``pi+(u) = softmax_u(tau_plus * d(z_i^v, z_i^u))``, which
    puts more weight on *distant* positives::

        CA_i = 1/M sum_v sum_{u != v} pi+(u) * alpha * d(z_i^v, z_i^u)

    Contrastive repulsion (CR; ``our_loss2``): for every pair of views v < w (as the code
    loops), query ``z_i^v`` and negatives ``z_j^w``, j != i, weighted by
    ``pi-(j) = softmax_j(-tau_minus * d(z_i^v, z_j^w))``, which puts more weight on *close*
    negatives::

        CR_i = 1/P sum_{v<w} sum_{j != i} pi-(j) * (-beta) * d(z_i^v, z_j^w),  P = M(M-1)/2

    Only ordered pairs v < w enter, as in the code, so the repulsion is not symmetric in
    the order of the views (the last view is never a query); in expectation over random
    augmentations the views are exchangeable and this does not matter.

    ``debiased=True`` is the code's ``with_debiased`` form: each view pair's repulsion
    becomes ``(-class_prior * d(z_i^v, z_i^w) + sum_j pi-(j) c_ij) / (1 - class_prior)``
    (class prior 0.1 in the code; the positive distance is not scaled by ``beta``, as
    there). The loss is ``CA + CR``. An *anchor* is a sample: ``reduction="none"`` returns
    ``(N,)`` values ``CA_i + CR_i`` (sample i averaged over its query views and view
    pairs), whose mean is the code's ``loss1 + loss2``.

    Gradient through the weights: the paper defines the attraction and repulsion as
    expectations under the conditional distributions ``pi+_theta`` and ``pi-_theta``,
    built from the same encoder ``f_theta`` as the costs: they are part of the objective
    being minimised over theta, not a fixed sampling distribution. So by default the
    gradient flows through ``pi`` (``detach_weights=False``), which is also what the
    small-scale official code does (the code behind the paper's CIFAR-10/100 and STL-10
    tables). The ImageNet MoCo-v3 code (``imagenet_pretraining/moco/builder.py``) computes
    its weights under ``torch.no_grad()``; ``detach_weights=True`` reproduces that choice
    (weights treated as constants). Caveat: the paper's full text could not be retrieved
    here (only its abstract and front matter), so the equations above are those of the
    official small-scale code and the reading of ``pi_theta`` is from memory of the paper;
    equation numbers are not cited for that reason.

    Hyperparameters: ``alpha = beta = 1``, ``tau_plus = 1``; ``tau_minus = 0.9`` is the
    CIFAR-10 setting (2.0 for CIFAR-100 and STL-10 in the authors' settings). ``tau_plus = 0`` or
    ``tau_minus = 0`` gives uniform weights (the code's ``without_w1/w2`` ablations).
    Cost: O(M^2 N^2 d) for the distance matrix, as in the code, but in one product.
    Half-precision inputs are computed and returned in float32.
    """
    owner = "cacr"
    flat, n, v = stack_views(views, owner, min_views=2)
    alpha, beta, tau_plus, tau_minus, debiased, class_prior, detach_weights = _check_options(
        owner, alpha, beta, tau_plus, tau_minus, debiased, class_prior, detach_weights
    )
    check_reduction(reduction, owner)
    z = prepared(flat, "cosine", owner, "embeddings", working_dtype(flat))
    dist = (-pairwise(z, z, "neg_sq_l2")).reshape(v, n, v, n)  # d[v, i, w, j]
    score = dist.detach() if detach_weights else dist  # what the weights are built from

    # Attraction: per (query view v, sample i), softmax over the other views u.
    pos = dist.diagonal(dim1=1, dim2=3)  # (V, V, N): d(z_i^v, z_i^u)
    pos_score = score.diagonal(dim1=1, dim2=3)
    other_view = not_self(v, z.device)[:, :, None].expand_as(pos)
    ca = _weighted_cost(tau_plus * pos_score, alpha * pos, other_view, dim=1).mean(0)  # (N,)

    # Repulsion: per view pair v < w and query i, softmax over negatives j != i.
    qv, kw = torch.triu_indices(v, v, offset=1, device=z.device)
    block = dist[qv, :, kw, :]  # (P, N, N): d(z_i^v, z_j^w)
    block_score = score[qv, :, kw, :]
    negative = not_self(n, z.device).expand_as(block)
    cr = _weighted_cost(-tau_minus * block_score, -beta * block, negative, dim=2)  # (P, N)
    if debiased:
        cr = (-class_prior * block.diagonal(dim1=1, dim2=2) + cr) / (1 - class_prior)
    return reduce(ca + cr.mean(0), reduction, owner)


@register_loss(
    "cacr",
    summary="Contrastive attraction (far positives) and repulsion (close negatives), M views",
    paper="Zheng et al. 2023, Contrastive Attraction and Contrastive Repulsion for "
    "Representation Learning (TMLR)",
)
class CACR(ContrastiveLoss):
    """Module form of :func:`cacr`. See that function for the formula and options."""

    function = staticmethod(cacr)

    def __init__(
        self,
        alpha=1.0,
        beta=1.0,
        tau_plus=1.0,
        tau_minus=0.9,
        debiased=False,
        class_prior=0.1,
        detach_weights=False,
        reduction="mean",
    ):
        super().__init__()
        (
            self.alpha,
            self.beta,
            self.tau_plus,
            self.tau_minus,
            self.debiased,
            self.class_prior,
            self.detach_weights,
        ) = _check_options(
            "CACR", alpha, beta, tau_plus, tau_minus, debiased, class_prior, detach_weights
        )
        self._init_reduction(reduction)
