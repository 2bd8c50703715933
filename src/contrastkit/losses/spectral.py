"""Spectral contrastive loss (HaoChen, Wei, Gaidon & Ma, NeurIPS 2021).

Not a softmax loss, so it does not go through the InfoNCE core: it is a quadratic
(positive pairs) plus a squared-inner-product (independent pairs) term on the
similarities of ``core.similarity``.
"""

from __future__ import annotations

import math

import torch

from contrastkit.core.reduction import reduce
from contrastkit.core.similarity import pairwise, prepare
from contrastkit.core.validation import _fail, check_choice, check_positive_number
from contrastkit.losses._inputs import stack_views, working_dtype
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.registry import register_loss

SPECTRAL_VARIANTS = ("paper", "official_code")
SPECTRAL_SIMILARITIES = ("dot", "cosine")


def _project_to_ball(z: torch.Tensor, mu: float) -> torch.Tensor:
    """jhaochenz96/spectral_contrastive_learning ``models/spectral.py::D``: rows with norm
    >= sqrt(mu) are rescaled to norm sqrt(mu); shorter rows are left as they are."""
    radius = math.sqrt(mu)
    norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    inside = (norm < radius).detach()
    return torch.where(inside, z, z / norm.clamp_min(torch.finfo(z.dtype).tiny) * radius)


def spectral_contrastive(
    *views, similarity="dot", variant="paper", mu=1.0, reduction="mean"
) -> torch.Tensor:
    """Spectral contrastive loss (HaoChen et al., NeurIPS 2021, arXiv 2106.04156, Section 3)::

        L(f) = -2 E_{x, x+}[f(x)^T f(x+)] + E_{x, x'}[(f(x)^T f(x'))^2]

    with (x, x+) a positive pair (two augmentations of one image) and x, x' independent.
    Mini-batch estimator, for two views ``z1, z2`` of N samples: the N pairs
    ``(z1_i, z2_i)`` are the positives and the N(N - 1) cross-view pairs ``(z1_i, z2_j)``,
    i != j, the independent pairs (augmentations of different images)::

        L = -2/N sum_i z1_i . z2_i + 1/(N(N-1)) sum_{i != j} (z1_i . z2_j)^2

    This is what the official code computes (jhaochenz96/spectral_contrastive_learning,
    ``models/spectral.py::D``: ``loss_part1`` and ``loss_part2``) with ``mu = 1`` and
    feature norms below 1.

    V > 2 views: the mean of the two-view loss over the V(V - 1)/2 pairs of views (every
    pair of views is a positive pair; the estimator is symmetric in the two views).

    Anchor decomposition (``reduction="none"``): row i of view v (view-major, ``(V * N,)``)
    gets ``1/(V-1) sum_{w != v} [-2 z_vi . z_wi + 1/(N-1) sum_{j != i} (z_vi . z_wj)^2]``;
    their mean is the loss (each positive pair and each independent pair is shared by its
    two rows).

    Options:

    * ``similarity="dot"`` (the paper's raw inner product of the features, default) or
      ``"cosine"`` (rows L2-normalised first, a bounded variant, not in the paper);
    * ``variant="official_code"``: what ``models/spectral.py::D`` computes: each row is
      first projected onto the ball of radius ``sqrt(mu)`` (rows longer than that are
      rescaled to it; the mask is not differentiated) and the loss is divided by ``mu``.
      This equals the paper's loss on ``u = z / sqrt(mu)`` (inside the unit ball) with the
      squared term weighted by ``mu``: ``-2 u.u+ + mu (u.u')^2``. The released configs use
      ``mu = 1`` (CIFAR) and ``mu = 10`` (ImageNet). The paper's text does not state this
      projection (we could not read its appendix in this session, so whether it describes
      it there is not verified); ``mu`` is rejected under ``variant="paper"``.

    Shapes: ``views`` is one ``(N, V, D)`` tensor or V tensors ``(N, D)``, V >= 2, N >= 2.
    Half-precision inputs are computed and returned in float32.
    """
    owner = "spectral_contrastive"
    check_choice(variant, owner, "variant", SPECTRAL_VARIANTS)
    check_choice(similarity, owner, "similarity", SPECTRAL_SIMILARITIES)
    mu = check_positive_number(mu, owner, "mu", "pass e.g. mu=1.0")
    if variant == "paper" and mu != 1.0:
        _fail(
            owner,
            "mu",
            f"is {mu}",
            "mu (the radius of the official code's norm ball) only exists in "
            "variant='official_code'",
            "pass variant='official_code' with mu, or leave mu=1.0",
        )
    flat, n, v = stack_views(views, owner, min_views=2)
    z = prepare(flat.to(working_dtype(flat)), similarity, owner, "embeddings")
    if variant == "official_code":
        z = _project_to_ball(z, mu)
    z = z.reshape(v, n, -1)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=z.device)
    per_row = torch.zeros(v, n, dtype=z.dtype, device=z.device)
    for a in range(v):
        for b in range(a + 1, v):
            s = pairwise(z[a], z[b], "dot")  # (N, N): s_ij = z_ai . z_bj
            positive = -2.0 * torch.diagonal(s)
            squared = (s * s).masked_fill(~off_diagonal, 0.0)
            per_row[a] += positive + squared.sum(1) / (n - 1)
            per_row[b] += positive + squared.sum(0) / (n - 1)
    per_row = per_row / (v - 1)
    if variant == "official_code":
        per_row = per_row / mu
    return reduce(per_row.reshape(v * n), reduction, owner)


@register_loss(
    "spectral",
    summary="Spectral contrastive loss: -2 E[f(x).f(x+)] + E[(f(x).f(x'))^2]",
    paper="HaoChen et al. 2021, Provable Guarantees for Self-Supervised Deep Learning "
    "with Spectral Contrastive Loss",
)
class SpectralContrastive(ContrastiveLoss):
    """Module form of :func:`spectral_contrastive`. No temperature: the loss is a
    polynomial in the features' inner products."""

    function = staticmethod(spectral_contrastive)

    def __init__(self, similarity="dot", variant="paper", mu=1.0, reduction="mean"):
        super().__init__()
        owner = "SpectralContrastive"
        self.similarity = check_choice(similarity, owner, "similarity", SPECTRAL_SIMILARITIES)
        self.variant = check_choice(variant, owner, "variant", SPECTRAL_VARIANTS)
        self.mu = check_positive_number(mu, owner, "mu", "pass e.g. mu=1.0")
        if variant == "paper" and self.mu != 1.0:
            _fail(
                owner,
                "mu",
                f"is {mu}",
                "mu only exists in variant='official_code'",
                "pass variant='official_code' with mu, or leave mu=1.0",
            )
        self._init_reduction(reduction)
