"""M3CoL's multimodal mixup contrastive loss (M3Co) and its soft-CLIP phase
(Kumar, Singhal, Kulkarni, Mehta & Jadhav, TMLR 2025, arXiv 2409.17777)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from contrastkit.core.reduction import reduce
from contrastkit.core.similarity import pairwise, prepare
from contrastkit.core.temperature import as_scale
from contrastkit.core.validation import (
    _fail,
    check_batch_size,
    check_choice,
    check_embeddings,
    check_flag,
    check_in_range,
    check_positive_number,
    check_same_shape,
    check_tensor,
)
from contrastkit.losses._inputs import working_dtype
from contrastkit.losses.base import ContrastiveLoss, SeededDraws
from contrastkit.registry import register_loss

M3COL_PHASES = ("mixco", "soft_clip")
M3COL_VARIANTS = ("paper", "official_code")


class MixDraw(NamedTuple):
    """One modality's mixup draw: partner ``perm[i]`` and weight ``lam[i]`` of row i itself
    (``1 - lam[i]`` goes to the partner; ``lam[i] = 1`` for rows not selected)."""

    perm: torch.Tensor  # (N,) long
    lam: torch.Tensor  # (N,) float in [0, 1]


def m3co_draw(n: int, *, beta=0.15, s_thresh=0.5, generator=None, device=None) -> MixDraw:
    """Draw the mixup of one modality as ``model/utils.py::mixco_text`` does: a random
    permutation, ``lam_i ~ Beta(beta, beta)`` and a selection ``u_i <= s_thresh`` with
    ``u_i ~ U(0, 1)``; unselected rows get ``lam_i = 1``.

    ``generator`` (a ``torch.Generator``) makes the draw reproducible; the Beta variates
    come from a numpy generator seeded from it (torch's Beta sampler takes no generator).
    """
    perm = torch.randperm(n, generator=generator)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    lam = torch.from_numpy(np.random.default_rng(seed).beta(beta, beta, size=n))
    select = torch.rand(n, generator=generator, dtype=torch.float64) <= s_thresh
    lam = torch.where(select, lam, torch.ones_like(lam))
    return MixDraw(perm.to(device), lam.to(device))


def mixup_targets(draw: MixDraw, variant: str = "paper") -> torch.Tensor:
    """The soft target matrix ``P`` (N, N) of one mixed modality.

    ``variant="paper"``: ``P[i, i] += lam_i`` and ``P[i, perm(i)] += 1 - lam_i``, so every
    row sums to 1, also when ``perm(i) = i`` (the mixed sample is then sample i itself).
    ``variant="official_code"``: ``P = diag(lam)`` then ``P[i, perm(i)] = 1 - lam_i``
    (assignment, as ``mixco_nce`` does), which overwrites the diagonal at fixed points of
    the permutation: such a row sums to ``1 - lam_i`` (0 for an unselected row).
    """
    n = draw.perm.shape[0]
    rows = torch.arange(n, device=draw.perm.device)
    lam = draw.lam
    if variant == "official_code":
        p = torch.diag(lam)
        p[rows, draw.perm] = 1 - lam
        return p
    p = torch.diag(lam)
    return p.index_put((rows, draw.perm), 1 - lam, accumulate=True)


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Row-wise ``-sum_j targets_ij log softmax(logits)_ij``."""
    return -(targets * torch.log_softmax(logits, dim=1)).sum(1)


def _mixco(mixed, fixed, draw, scale, variant, bidirectional):
    """Per-sample values of ``mixco_nce(mix(a), b)``: half the row term of mixed sample i
    plus half the column term of fixed sample i (their means are the two directions)."""
    logits = pairwise(mixed, fixed, "dot") * scale
    p = mixup_targets(draw, variant).to(logits.dtype)
    forward = _soft_cross_entropy(logits, p)
    if not bidirectional:
        return forward
    return 0.5 * (forward + _soft_cross_entropy(logits.T, p.T))


def _soft_clip(preds, targs, scale_targets, scale):
    """Per-sample values of ``soft_clip_loss(preds, targs)``: targets ``softmax(targs
    targs^T / t)`` for both the preds->targs rows and the targs->preds rows."""
    logits = pairwise(preds, targs, "dot") * scale
    q = torch.softmax(pairwise(targs, targs, "dot") * scale_targets, dim=1)
    return 0.5 * (_soft_cross_entropy(logits, q) + _soft_cross_entropy(logits.T, q))


def _check_draw(draw, n, owner, arg):
    if not isinstance(draw, MixDraw):
        _fail(
            owner,
            arg,
            f"is a {type(draw).__name__}",
            "it must be a MixDraw(perm, lam)",
            "build it with m3co_draw(n, generator=g)",
            TypeError,
        )
    check_tensor(draw.perm, owner, f"{arg}.perm")
    check_tensor(draw.lam, owner, f"{arg}.lam")
    ok_perm = draw.perm.shape == (n,) and bool(
        (draw.perm.sort().values.cpu() == torch.arange(n)).all()
    )
    if not ok_perm:
        _fail(
            owner,
            f"{arg}.perm",
            f"is {draw.perm.tolist() if draw.perm.numel() <= 8 else tuple(draw.perm.shape)}",
            f"it must be a permutation of range({n})",
            "use torch.randperm(n) or m3co_draw",
        )
    if draw.lam.shape != (n,) or not bool(((draw.lam >= 0) & (draw.lam <= 1)).all()):
        _fail(
            owner,
            f"{arg}.lam",
            f"has shape {tuple(draw.lam.shape)} or values outside [0, 1]",
            f"it must hold {n} mixing weights in [0, 1]",
            "use m3co_draw",
        )


def m3col(
    a,
    b,
    *,
    phase="mixco",
    temperature=0.1,
    soft_clip_temperature=0.125,
    beta=0.15,
    s_thresh=0.5,
    bidirectional=True,
    variant="paper",
    generator=None,
    draws=None,
    reduction="mean",
):
    """M3CoL's contrastive term for two modality embeddings ``a``, ``b`` (N, D), row i of
    each from sample i (Kumar, Singhal et al., TMLR 2025, arXiv 2409.17777, the M3Co loss;
    official RaghavSinghal10/M3CoL ``model/utils.py::mixco_text``, ``mixco_nce``,
    ``soft_clip_loss`` and ``model/model.py::MMC.forward``).

    ``phase="mixco"`` (the M3Co loss, used for the first 33% of the epochs in the released
    training scripts). For modality a: a random permutation pi, ``lam_i ~ Beta(beta,
    beta)`` for a random fraction ``s_thresh`` of the rows (``lam_i = 1`` for the others),
    ``a~_i = lam_i a_i + (1 - lam_i) a_pi(i)`` (mixed *embeddings*, as the code does; the
    paper mixes raw inputs of non-text modalities), cosine logits ``C = a~ b^T / t`` and
    soft targets ``P[i, i] = lam_i``, ``P[i, pi(i)] = 1 - lam_i``::

        L_mix(a~, b) = 1/2 [ -1/N sum_i sum_j P_ij log softmax_j(C_i.)
                             -1/N sum_j sum_i P_ij log softmax_i(C_.j) ]
        L_M3Co = L_mix(mix(a), b) + L_mix(mix(b), a)

    with an independent draw for each modality (``bidirectional=False`` keeps only the
    first, mixed->fixed, direction of each ``L_mix``). The target rows are the paper's
    equation, a ``lam_i``-weighted log-likelihood of partner i plus a ``(1 - lam_i)``
    weighted one of partner pi(i); when pi(i) = i both weights fall on the same entry, so
    they add up (``P[i, i] = 1``). ``variant="official_code"`` builds ``P`` as ``mixco_nce``
    does, ``probs = diag(lam); probs[i, perm] = 1 - lam``, which overwrites the diagonal
    at fixed points: that row then sums to ``1 - lam_i`` (0 when the row was not selected).
    The column (fixed->mixed) direction uses ``P^T`` as released, whose columns need not
    sum to 1 (their mean is 1). We could not read the paper's equation text in this
    session; the accumulation follows from the two-term form of the mixup target.

    ``phase="soft_clip"`` (after 33% of the epochs), temperature ``soft_clip_temperature``::

        soft_clip(p, q) = 1/2 [ -1/N sum_i sum_j Q_ij log softmax_j(p q^T / t)_ij
                                -1/N sum_j sum_i Q_ji log softmax_i(p q^T / t)_ij ],
        Q = softmax_row(q q^T / t),     L = soft_clip(a, b) + soft_clip(b, a)

    (targets from the target modality's self-similarity, cosine throughout).

    Randomness: ``generator`` (``torch.Generator``) seeds the draws; ``draws=(draw_a,
    draw_b)`` (:class:`MixDraw`, e.g. from :func:`m3co_draw`) fixes them instead. The
    soft-CLIP phase draws nothing. In the paper the total training loss is
    ``CE(fusion) + CE(unimodal heads) + lambda * this``, lambda = 0.1.

    ``reduction="none"``: per-sample ``(N,)`` values whose mean is the loss (sample i
    gets its mixed row and its fixed column of each of the two terms, halved as above).
    Half-precision inputs are computed and returned in float32.
    """
    owner = "m3col"
    check_choice(phase, owner, "phase", M3COL_PHASES)
    check_choice(variant, owner, "variant", M3COL_VARIANTS)
    check_embeddings(a, owner, "a")
    check_embeddings(b, owner, "b")
    check_same_shape(a, b, owner, ("a", "b"))
    n = a.shape[0]
    check_batch_size(n, owner, "a")
    bidirectional = check_flag(bidirectional, owner, "bidirectional")
    dtype = working_dtype(a, b)
    za = prepare(a.to(dtype), "cosine", owner, "a")
    zb = prepare(b.to(dtype), "cosine", owner, "b")
    if phase == "soft_clip":
        scale = as_scale(soft_clip_temperature, owner)
        per_sample = _soft_clip(za, zb, scale, scale) + _soft_clip(zb, za, scale, scale)
        return reduce(per_sample, reduction, owner)
    scale = as_scale(temperature, owner)
    if draws is None:
        beta = check_positive_number(beta, owner, "beta", "pass e.g. beta=0.15 (the paper's)")
        s_thresh = check_in_range(s_thresh, owner, "s_thresh", 0.0, 1.0, "pass e.g. 0.5")
        draws = tuple(
            m3co_draw(n, beta=beta, s_thresh=s_thresh, generator=generator, device=a.device)
            for _ in range(2)
        )
    elif not (isinstance(draws, tuple | list) and len(draws) == 2):
        _fail(
            owner,
            "draws",
            f"is {type(draws).__name__}",
            "it must be a pair (draw for a, draw for b)",
            "pass draws=(m3co_draw(n), m3co_draw(n)) or leave it None",
            TypeError,
        )
    for k, draw in enumerate(draws):
        _check_draw(draw, n, owner, f"draws[{k}]")
    per_sample = 0
    for x, y, draw in ((a, zb, draws[0]), (b, za, draws[1])):
        lam = draw.lam.to(device=x.device, dtype=dtype)
        perm = draw.perm.to(x.device)
        x = x.to(dtype)
        mixed = lam[:, None] * x + (1 - lam[:, None]) * x[perm]
        mixed = prepare(mixed, "cosine", owner, "mixed embeddings")
        per_sample = per_sample + _mixco(
            mixed, y, MixDraw(perm, lam), scale, variant, bidirectional
        )
    return reduce(per_sample, reduction, owner)


@register_loss(
    "m3col",
    summary="Multimodal mixup contrastive loss (M3Co), then soft-CLIP, for two modalities",
    paper="Kumar, Singhal et al. 2025, Harnessing Shared Relations via Multimodal Mixup "
    "Contrastive Learning for Multimodal Classification (TMLR)",
)
class M3CoL(SeededDraws, ContrastiveLoss):
    """Module form of :func:`m3col` for ``loss(a, b)``. Switch to the second phase by
    setting ``module.phase = "soft_clip"`` (the released scripts do so after 33% of the
    epochs). The mixup draws come from the module's own generator seeded by ``seed``
    (saved in ``state_dict``; ``seed=None``: torch's global generator), unless a call
    passes ``generator=`` or ``draws=``."""

    function = staticmethod(m3col)

    inputs = "two_tower"

    def __init__(
        self,
        phase="mixco",
        temperature=0.1,
        soft_clip_temperature=0.125,
        beta=0.15,
        s_thresh=0.5,
        bidirectional=True,
        variant="paper",
        learnable=False,
        reduction="mean",
        seed=0,
    ):
        super().__init__()
        owner = "M3CoL"
        self._init_generator(seed)
        self._init_temperature(temperature, learnable)
        self._init_reduction(reduction)
        self.phase = check_choice(phase, owner, "phase", M3COL_PHASES)
        self.soft_clip_temperature = check_positive_number(
            soft_clip_temperature, owner, "soft_clip_temperature", "pass e.g. 0.125"
        )
        self.beta = check_positive_number(beta, owner, "beta", "pass e.g. beta=0.15")
        self.s_thresh = check_in_range(s_thresh, owner, "s_thresh", 0.0, 1.0, "pass e.g. 0.5")
        self.bidirectional = check_flag(bidirectional, owner, "bidirectional")
        self.variant = check_choice(variant, owner, "variant", M3COL_VARIANTS)

    def forward(self, a, b, generator=None, draws=None):
        if generator is None and draws is None:
            generator = self.generator
        return super().forward(a, b, generator=generator, draws=draws)
