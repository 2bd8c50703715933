"""Batch-level (non-contrastive) objectives on two views: Barlow Twins and VICReg.

Both are defined over the whole batch, not per anchor, so they take no ``reduction``
(``per_anchor = False``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastkit.core.validation import (
    check_batch_size,
    check_choice,
    check_embeddings,
    check_positive_number,
    check_same_shape,
)
from contrastkit.losses._inputs import working_dtype
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.registry import register_loss


def _two_views(z1, z2, owner):
    check_embeddings(z1, owner, "z1")
    check_embeddings(z2, owner, "z2")
    check_same_shape(z1, z2, owner, ("z1", "z2"))
    check_batch_size(z1.shape[0], owner, "z1")
    dtype = working_dtype(z1, z2)
    return z1.to(dtype), z2.to(dtype)


def _off_diagonal(c: torch.Tensor) -> torch.Tensor:
    return c - torch.diag_embed(torch.diagonal(c))


def barlow_twins(z1, z2, *, lambd=5e-3, eps=1e-5):
    """Barlow Twins (Zbontar et al., ICML 2021, eq. 1)::

        C = bn(z1)^T bn(z2) / N,   L = sum_i (1 - C_ii)^2 + lambd sum_{i != j} C_ij^2

    ``bn`` standardises each feature over the batch with the biased variance and ``eps``,
    as ``BatchNorm1d(affine=False)`` in facebookresearch/barlowtwins ``main.py`` does.
    ``lambd`` defaults to the paper's 5e-3 (the official script uses 0.0051).
    """
    z1, z2 = _two_views(z1, z2, "barlow_twins")
    n = z1.shape[0]
    a = F.batch_norm(z1, None, None, training=True, eps=eps)
    b = F.batch_norm(z2, None, None, training=True, eps=eps)
    c = a.T @ b / n
    on = (1 - torch.diagonal(c)).pow(2).sum()
    return on + lambd * _off_diagonal(c).pow(2).sum()


def _variance(z, eps):
    return F.relu(1 - torch.sqrt(z.var(0) + eps)).mean()


def _covariance(z):
    n, d = z.shape
    z = z - z.mean(0)
    cov = z.T @ z / (n - 1)
    return _off_diagonal(cov).pow(2).sum() / d


VICREG_VARIANTS = ("paper", "official_code")


def vicreg(z1, z2, *, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, eps=1e-4, variant="paper"):
    """VICReg (Bardes, Ponce & LeCun, ICLR 2022, eqs. 1-6)::

        L = lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]
        s = 1/n sum_i |z_i - z'_i|^2,  v = 1/d sum_j relu(1 - sqrt(Var(z^j) + eps)),
        c = 1/d sum_{i != j} Cov(Z)_ij^2       (unbiased variance and covariance)

    ``variant="official_code"`` computes what facebookresearch/vicreg ``main_vicreg.py``
    (and lightly, pytorch-metric-learning) compute: ``s`` as ``F.mse_loss`` (also averaged
    over the d features) and the two variance terms averaged instead of summed.
    """
    owner = "vicreg"
    check_choice(variant, owner, "variant", VICREG_VARIANTS)
    z1, z2 = _two_views(z1, z2, owner)
    invariance = (z1 - z2).pow(2).sum(1).mean()
    variance = _variance(z1, eps) + _variance(z2, eps)
    if variant == "official_code":
        invariance = invariance / z1.shape[1]
        variance = variance / 2
    covariance = _covariance(z1) + _covariance(z2)
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


@register_loss(
    "barlowtwins",
    summary="Cross-correlation of the two views driven to the identity",
    paper="Zbontar et al. 2021, Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
)
class BarlowTwins(ContrastiveLoss):
    """Module form of :func:`barlow_twins`."""

    function = staticmethod(barlow_twins)

    per_anchor = False

    def __init__(self, lambd=5e-3, eps=1e-5):
        super().__init__()
        self.lambd = check_positive_number(lambd, "BarlowTwins", "lambd", "pass e.g. 5e-3")
        self.eps = check_positive_number(eps, "BarlowTwins", "eps", "pass e.g. 1e-5")


@register_loss(
    "vicreg",
    summary="Variance-invariance-covariance regularisation of two views",
    paper="Bardes et al. 2022, VICReg: Variance-Invariance-Covariance Regularization",
)
class VICReg(ContrastiveLoss):
    """Module form of :func:`vicreg`."""

    function = staticmethod(vicreg)

    per_anchor = False

    def __init__(self, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, eps=1e-4, variant="paper"):
        super().__init__()
        for name, value in (
            ("sim_coeff", sim_coeff),
            ("std_coeff", std_coeff),
            ("cov_coeff", cov_coeff),
            ("eps", eps),
        ):
            check_positive_number(value, "VICReg", name, f"pass a positive {name}")
        self.sim_coeff, self.std_coeff, self.cov_coeff = sim_coeff, std_coeff, cov_coeff
        self.eps = eps
        self.variant = check_choice(variant, "VICReg", "variant", VICREG_VARIANTS)
