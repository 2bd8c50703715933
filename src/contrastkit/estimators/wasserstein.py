"""Wasserstein dependency measure (WDM) and Wasserstein predictive coding (WPC).

Ozair, Lynch, Bengio, van den Oord, Levine & Sermanet, "Wasserstein Dependency Measure for
Representation Learning", NeurIPS 2019, arXiv 1903.11780. No official code was found
(research notes ``seeds-A.md`` section 3), so nothing here follows a released file.

What we could read of the paper is its abstract: mutual information is
``KL(p(x, y) || p(x) p(y))``; the WDM replaces the KL divergence by the Wasserstein-1
distance, ``I_W(x; y) = W_1(p(x, y), p(x) p(y))``, which by Kantorovich-Rubinstein duality is
``sup_{f 1-Lipschitz} E_{p(x,y)}[f(x, y)] - E_{p(x)p(y)}[f(x, y)]`` (:func:`wdm_dual_bound`);
its practical approximation (WPC) keeps the contrastive CPC / InfoNCE estimator
(van den Oord, Li & Vinyals, arXiv 1807.03748, Eq. 4) and makes the critic Lipschitz with
"Lipschitz constraint techniques from the GAN literature" (:func:`wpc_loss`, with the
WGAN-GP gradient penalty of ``estimators.lipschitz``; a spectrally normalised critic
with ``penalty_weight=0`` is the other technique). The paper's body (equation numbers,
the penalty weight, where the penalty is evaluated, which technique each experiment
used) was **not readable** with our tools; the choices below are ours and stated as such:

- the penalty is taken with respect to the critic's inputs ``(x, y)`` jointly, as in
  WGAN-GP, at points between a joint sample ``(x_i, y_i)`` and a product-of-marginals
  sample ``(x_i, y_pi(i))`` (``penalty_at="interpolate"``, the default: WGAN-GP samples
  between the two distributions it compares), or at both endpoints
  (``penalty_at="pairs"``);
- the default weight 10 is WGAN-GP's (Gulrajani et al. 2017, Sec. 4), not a number
  read from the WDM paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from contrastkit.core.validation import (
    _fail,
    check_choice,
    check_flag,
    check_in_range,
    check_reduction,
    check_tensor,
)
from contrastkit.estimators.bounds import check_scores
from contrastkit.estimators.lipschitz import gradient_penalty

__all__ = ["wdm_dual_bound", "wpc_loss", "wpc_penalty_points"]

OBJECTIVES = ("infonce", "dual")
PENALTY_POINTS = ("interpolate", "pairs")


def _check_pair(x, y, owner: str) -> None:
    """Row-aligned, finite, floating (B, ...) batches x and y with B >= 2."""
    for arg, t in (("x", x), ("y", y)):
        check_tensor(t, owner, arg)
        if not torch.is_floating_point(t):
            _fail(
                owner,
                arg,
                f"has dtype {t.dtype}",
                "inputs must be floating point",
                f"cast with {arg}.float()",
                TypeError,
            )
        if t.dim() < 2:
            _fail(
                owner,
                arg,
                f"has shape {tuple(t.shape)}",
                "it must be (B, ...) with a batch dimension first",
                f"pass {arg}.reshape(B, -1)",
            )
        if not bool(torch.isfinite(t).all()):
            _fail(owner, arg, "contains NaN or inf", "inputs must be finite", "clean the data")
    if x.shape[0] != y.shape[0]:
        _fail(
            owner,
            "y",
            f"has batch size {y.shape[0]} but `x` has {x.shape[0]}",
            "row i of x pairs with row i of y",
            "pass row-aligned batches",
        )
    if x.shape[0] < 2:
        _fail(
            owner,
            "x",
            "has a batch of 1",
            "a contrastive bound needs >= 2 samples (negatives)",
            "use a larger batch",
        )


def _per_row_infonce(scores: torch.Tensor) -> torch.Tensor:
    """CPC / InfoNCE loss of each row (van den Oord et al. 2018, Eq. 4): the cross-entropy
    of picking column i in row i, ``-(S_ii - logsumexp_j S_ij)``; its mean is
    ``log B - I_NCE``. Accumulated in at least float32."""
    s = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    return -torch.diagonal(F.log_softmax(s, dim=1))


def _per_row_dual(scores: torch.Tensor) -> torch.Tensor:
    """``-(S_ii - mean_{j != i} S_ij)``: minus the per-anchor Kantorovich-Rubinstein
    estimate; off-diagonal pairs are the product-of-marginals samples."""
    s = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    b = s.shape[0]
    diag = torch.diagonal(s)
    off = (s.sum(1) - diag) / (b - 1)
    return -(diag - off)


def wdm_dual_bound(scores) -> torch.Tensor:
    """Kantorovich-Rubinstein estimate of the WDM from a (B, B) critic matrix.

    ``mean_i f(x_i, y_i) - mean_{i != j} f(x_i, y_j)``: the joint expectation from the B
    positive pairs, the product-of-marginals one from the ``B (B - 1)`` mixed pairs (the
    diagonal is excluded so the second term is unbiased). It lower-bounds
    ``I_W = W_1(p(x,y), p(x)p(y))`` in expectation only when the critic is 1-Lipschitz;
    the constraint is the caller's (``estimators.lipschitz``). 0-d tensor.
    """
    scores = check_scores(scores, "wdm_dual_bound")
    return -_per_row_dual(scores).mean()


def wpc_penalty_points(
    x, y, penalty_at: str = "interpolate", generator: torch.Generator | None = None
):
    """Where :func:`wpc_loss` evaluates the gradient penalty: ``(xs, ys)``, row-aligned.

    A product-of-marginals sample pairs ``x_i`` with ``y_pi(i)``, ``pi(i) = (i + s) mod B``
    for one random shift ``s`` in ``1..B-1`` (a derangement, so no row meets its own
    positive). ``"interpolate"``: ``(x_i, e_i y_i + (1 - e_i) y_pi(i))`` with ``e_i ~ U[0, 1]``,
    the straight line between a joint and a product sample (WGAN-GP, Gulrajani et al.
    2017, Sec. 4, applied to the two distributions the WDM compares; both endpoints share
    ``x_i``, so only ``y`` moves). ``"pairs"``: the B joint and the B product samples
    themselves, ``2B`` rows (first the joint ones).
    """
    owner = "wpc_penalty_points"
    _check_pair(x, y, owner)
    check_choice(penalty_at, owner, "penalty_at", PENALTY_POINTS)
    b = x.shape[0]
    shift = int(torch.randint(1, b, (1,), generator=generator))
    y_neg = torch.roll(y, shifts=-shift, dims=0)  # row i holds y_{(i + shift) mod B}
    if penalty_at == "pairs":
        return torch.cat([x, x]), torch.cat([y, y_neg])
    eps = torch.rand((b,) + (1,) * (y.dim() - 1), generator=generator, dtype=y.dtype)
    return x, eps * y + (1 - eps) * y_neg


def wpc_loss(
    critic: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x,
    y,
    *,
    penalty_weight: float = 10.0,
    objective: str = "infonce",
    penalty_at: str = "interpolate",
    one_sided: bool = False,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    return_parts: bool = False,
):
    """Wasserstein predictive coding loss: a contrastive bound with a Lipschitz-penalised critic.

    ``critic(x, y)`` returns the (B, B) matrix ``f(x_i, y_j)`` (positives on the diagonal),
    e.g. ``g(x) @ h(y).T`` with the encoders inside the critic, so the Lipschitz constraint
    is on the map from the **data** ``(x, y)`` to the score, as the WDM requires (its
    Wasserstein distance is over the data space). The loss per row i is

    - ``objective="infonce"`` (WPC, the paper's practical method): the CPC loss
      ``-(f(x_i, y_i) - logsumexp_j f(x_i, y_j))`` (van den Oord et al. 2018, Eq. 4), whose
      mean is ``log B - I_NCE``;
    - ``objective="dual"``: minus the Kantorovich-Rubinstein estimate
      ``-(f(x_i, y_i) - mean_{j != i} f(x_i, y_j))`` (the WDM dual form, see
      :func:`wdm_dual_bound`); unbounded below without a Lipschitz constraint;

    plus ``penalty_weight * (||grad_{(x,y)} f(xhat, yhat)|| - 1)^2`` at the points of
    :func:`wpc_penalty_points` (averaged over a row's points for ``"pairs"``;
    ``one_sided=True`` penalises only slopes above 1). ``penalty_weight=0`` skips the
    penalty (and its double backward) and returns exactly the InfoNCE / dual loss: use it
    with a spectrally normalised critic (``estimators.lipschitz.spectral_norm_mlp``).

    The critic must not mix rows (no batch norm): the penalty reads per-pair gradients
    from the diagonal of ``critic(xs, ys)``. ``generator`` seeds the penalty points.
    ``reduction``: "mean" (0-d), "sum", "none" (per row, (B,)). With
    ``return_parts=True`` also returns ``{"bound": ..., "penalty": ...}`` (detached batch
    means: the InfoNCE bound ``log B - mean loss`` or the dual estimate, and the mean
    unweighted penalty).

    Paper equations and the paper's penalty weight/placement could not be read (see the
    module docstring): the penalty placement and the default weight 10 (WGAN-GP's) are
    our choices.
    """
    owner = "wpc_loss"
    if not callable(critic):
        _fail(
            owner,
            "critic",
            f"is a {type(critic).__name__}",
            "it must be callable (x, y) -> (B, B)",
            "pass a critic module",
            TypeError,
        )
    _check_pair(x, y, owner)
    weight = check_in_range(
        penalty_weight,
        owner,
        "penalty_weight",
        0.0,
        math.inf,
        "pass e.g. penalty_weight=10.0 (0 turns the penalty off)",
    )
    check_choice(objective, owner, "objective", OBJECTIVES)
    check_choice(penalty_at, owner, "penalty_at", PENALTY_POINTS)
    check_flag(one_sided, owner, "one_sided")
    check_reduction(reduction, owner)
    check_flag(return_parts, owner, "return_parts")

    scores = check_scores(critic(x, y), owner, "critic(x, y)")
    rows = _per_row_infonce(scores) if objective == "infonce" else _per_row_dual(scores)
    b = scores.shape[0]
    penalty = rows.new_zeros(b)
    if weight > 0:
        xs, ys = wpc_penalty_points(x, y, penalty_at, generator)

        def pair_scores(a, c):
            return torch.diagonal(critic(a, c))

        per_point = gradient_penalty(pair_scores, xs, ys, one_sided=one_sided, reduction="none")
        penalty = per_point.reshape(-1, b).mean(0).to(rows.dtype)  # "pairs": 2 points a row
        rows = rows + weight * penalty
    loss = rows if reduction == "none" else (rows.sum() if reduction == "sum" else rows.mean())
    if not return_parts:
        return loss
    with torch.no_grad():
        if objective == "infonce":
            bound = math.log(b) - _per_row_infonce(scores).mean()
        else:
            bound = -_per_row_dual(scores).mean()
    return loss, {"bound": bound.detach(), "penalty": penalty.detach().mean()}
