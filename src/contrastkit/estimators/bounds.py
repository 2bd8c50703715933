"""Variational lower bounds on mutual information, as functions of a critic's score matrix.

Convention shared by every function here: ``scores`` is a (B, B) matrix with
``scores[i, j] = f(x_i, y_j)`` for a batch of B joint samples ``(x_i, y_i) ~ p(x, y)``.

* "p" (the joint) is the diagonal: the B pairs ``(x_i, y_i)``.
* "q" (the product of marginals p(x)p(y)) is every off-diagonal entry: the B(B - 1)
  pairs ``(x_i, y_j)``, ``i != j``, each weighted equally. This is the choice of the
  reference code of Poole et al. (``reduce_logmeanexp_nodiag``; also Song & Ermon's
  ``ermongroup/smile-mi-estimator/estimators.py``). It is not independent sampling (the
  pairs share samples), so these terms are unbiased but correlated estimates of E_q.

Every estimate is in nats. Notation and bounds follow Poole, Ozair, van den Oord, Alemi &
Tucker, "On Variational Bounds of Mutual Information", ICML 2019 (Sec. 2). Equation
numbers are not given: the papers' PDFs could not be opened for this work, so the
formulas were checked against the reference code and against closed forms in the tests,
and section numbers are from memory. Poole et al.'s
reference code is the Colab ``vmi_bounds`` (TensorFlow), read through copies of it and
through the PyTorch port in ``ermongroup/smile-mi-estimator/estimators.py``.

Bias and variance at a glance (Poole et al. Sec. 2-3; Song & Ermon, ICLR 2020):

* InfoNCE (``infonce_bound``): low variance, but <= log B on every batch, so it cannot
  report more than log B however large the MI is.
* NWJ (``nwj_bound``): an unbiased batch estimate of a true lower bound, with no log B
  ceiling, but its variance grows like e^MI / B (the E_q[e^f] term).
* DV (``dv_bound``): a tighter bound than NWJ for the same critic, but the batch estimate
  puts a log outside a batch mean, so it is biased upwards relative to the DV bound
  (Jensen) and its gradient is biased; same exponential variance.
* MINE (``mine_bound``, ``MINE``): DV's value with a moving-average correction of the
  gradient's bias (Belghazi et al. Sec. 3.2).
* JS (``js_bound``): the critic is trained with the Jensen-Shannon f-GAN objective
  (bounded, low-variance gradients) and its density ratio is plugged into NWJ, so the
  reported value has NWJ's variance; the JS objective itself (``js_fgan_bound``) is not
  an MI estimate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.core.validation import _fail, check_choice, check_in_range, check_tensor

JS_VARIANTS = ("paper", "official_code")


def check_scores(scores, owner: str, arg: str = "scores") -> torch.Tensor:
    """A floating, square (B, B) matrix with B >= 2 and finite entries."""
    check_tensor(scores, owner, arg)
    if not torch.is_floating_point(scores):
        _fail(
            owner,
            arg,
            f"has dtype {scores.dtype}",
            "critic scores must be floating point",
            f"pass {arg}.float()",
            TypeError,
        )
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        _fail(
            owner,
            arg,
            f"has shape {tuple(scores.shape)}",
            "it must be a square (B, B) matrix with scores[i, j] = f(x_i, y_j)",
            "score every x of the batch against every y of the same batch (critic(x, y))",
        )
    if scores.shape[0] < 2:
        _fail(
            owner,
            arg,
            f"has a batch of {scores.shape[0]}",
            "the product of marginals is estimated from off-diagonal pairs, so B >= 2",
            "use a batch of at least 2 (in practice 64 or more)",
        )
    if not bool(torch.isfinite(scores).all()):
        rows = (~torch.isfinite(scores)).any(dim=1).nonzero().flatten().tolist()
        _fail(
            owner,
            arg,
            f"contains NaN or inf in rows {rows[:8]}",
            "critic scores must be finite",
            "check the critic for overflow (lower the learning rate or the temperature)",
        )
    return scores


def _off_diagonal(scores: torch.Tensor) -> torch.Tensor:
    """The B(B - 1) off-diagonal entries (the product-of-marginals samples), flattened."""
    b = scores.shape[0]
    keep = ~torch.eye(b, dtype=torch.bool, device=scores.device)
    return scores[keep]


def log_mean_exp_off_diagonal(scores: torch.Tensor) -> torch.Tensor:
    """log of the mean of exp(scores[i, j]) over i != j, i.e. log E_q[e^f] on the batch."""
    off = _off_diagonal(scores)
    return torch.logsumexp(off, dim=0) - math.log(off.numel())


def infonce_bound(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE: ``log B + mean_i [f_ii - logsumexp_j f_ij]`` (nats).

    Poole et al. (ICML 2019) Sec. 2.3, I_NCE (van den Oord et al. 2018, CPC): each x_i picks its
    own y_i among the B candidates y_j of the batch, the positive included in the
    denominator. Every term ``f_ii - logsumexp_j f_ij`` is <= 0, so the estimate is
    <= log B on every batch: with MI > log B it saturates at log B (the "log B ceiling").
    Its expectation is a lower bound on MI for any critic; the variance is low.

    Departure: the reference code takes the log-sum-exp over x for each y (its separable
    critic returns h(y) g(x)^T); here it is over y for each x (row-wise, with
    ``scores[i, j] = f(x_i, y_j)``). Both are valid InfoNCE bounds, equal when the critic
    is symmetric.

    Args:
        scores: (B, B) critic values, ``scores[i, j] = f(x_i, y_j)``, B >= 2.

    Returns:
        A 0-d tensor, the estimate in nats (maximise it to train the critic).
    """
    scores = check_scores(scores, "infonce_bound")
    b = scores.shape[0]
    return math.log(b) + (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean()


def nwj_bound(scores: torch.Tensor) -> torch.Tensor:
    """NWJ (f-divergence / MINE-f / TUBA with a(y) = e): ``E_p[f] - e^{-1} E_q[e^f]`` (nats).

    Poole et al. (ICML 2019) Sec. 2.2, I_NWJ (Nguyen, Wainwright & Jordan 2010); their code computes
    it as ``tuba_lower_bound(scores - 1)``. Convention, as in the paper: the "-1" sits in
    the e^{-1} factor, so the optimal critic is ``f* = 1 + log p(x, y) / (p(x) p(y))``.
    A critic equal to the log density ratio itself scores ``MI - e^{-1}`` in expectation.

    The batch estimate is unbiased for the bound (it is linear in the two expectations),
    has no log B ceiling, and its variance grows like e^MI / B (Song & Ermon, ICLR 2020).

    Args:
        scores: (B, B) critic values, diagonal = joint pairs, off-diagonal = marginals.

    Returns:
        A 0-d tensor, the estimate in nats.
    """
    scores = check_scores(scores, "nwj_bound")
    # e^{-1} E_q[e^f] in the log domain: exp(log-mean-exp - 1) never forms e^f itself.
    return scores.diagonal().mean() - torch.exp(log_mean_exp_off_diagonal(scores) - 1.0)


def dv_bound(scores: torch.Tensor) -> torch.Tensor:
    """Donsker-Varadhan: ``E_p[f] - log E_q[e^f]`` (nats).

    Poole et al. (ICML 2019) Sec. 2.2, I_DV, code ``dv_upper_lower_bound``; the value MINE
    reports (Belghazi et al., ICML 2018, Sec. 3). Optimal critic: the log density ratio
    plus any constant. For the same critic, DV >= NWJ on every batch (log m <= m / e).
    The batch estimate has the log outside a batch mean, so by Jensen it is biased
    upwards relative to the bound (it is not a guaranteed lower bound on a finite batch),
    and its gradient is biased; see :func:`mine_bound` for the corrected gradient.

    Args:
        scores: (B, B) critic values, diagonal = joint pairs, off-diagonal = marginals.

    Returns:
        A 0-d tensor, the estimate in nats.
    """
    scores = check_scores(scores, "dv_bound")
    return scores.diagonal().mean() - log_mean_exp_off_diagonal(scores)


def _check_momentum(momentum, owner: str) -> float:
    momentum = check_in_range(momentum, owner, "momentum", 0.0, 1.0, "pass e.g. momentum=0.9")
    if momentum >= 1.0:
        _fail(
            owner,
            "momentum",
            "is 1.0",
            "it must be < 1 (at 1 the average never sees a batch)",
            "pass e.g. momentum=0.9",
        )
    return momentum


def mine_bound(
    scores: torch.Tensor, running_log_mean: torch.Tensor | None = None, momentum: float = 0.9
) -> tuple[torch.Tensor, torch.Tensor]:
    """MINE with the moving-average gradient correction (Belghazi et al., ICML 2018).

    The value is the DV estimate (:func:`dv_bound`). The gradient is Belghazi et al.'s
    bias-corrected one (Sec. 3.2, Algorithm 1): the batch mean ``E_q[e^f]`` in the
    denominator of ``grad log E_q[e^f] = grad E_q[e^f] / E_q[e^f]`` is replaced by an
    exponential moving average ``m_t`` over steps::

        grad = mean_i grad f_ii - (grad mean_{i != j} e^{f_ij}) / m_t
        m_t  = momentum * m_{t-1} + (1 - momentum) * mean_{i != j} e^{f_ij}

    ``m_t`` includes the current batch, as in the reference code (``mine_lower_bound`` in
    Poole et al.'s Colab and ``ermongroup/smile-mi-estimator/estimators.py``, momentum
    0.9 there). The paper's moving-average rate could not be read; 0.9 is the code's.

    Departures from that code, and why: the average is kept in the log domain
    (``log m_t``, updated with ``logaddexp``) so that e^f is never formed at large MI; the
    first call (``running_log_mean=None``) starts the average at the current batch rather
    than at the code's constant 1.0, so the first gradient is the plain DV gradient
    instead of one scaled by an arbitrary initial value; no 1e-4 floor is needed.

    Args:
        scores: (B, B) critic values, diagonal = joint pairs, off-diagonal = marginals.
        running_log_mean: 0-d tensor, ``log m_{t-1}`` from the previous call, or None.
        momentum: weight of the past in the average, in [0, 1).

    Returns:
        ``(estimate, running_log_mean)``: the estimate (value = DV, gradient = corrected;
        maximise it) and ``log m_t`` (detached) to pass to the next call.
    """
    scores = check_scores(scores, "mine_bound")
    momentum = _check_momentum(momentum, "mine_bound")
    log_mean = log_mean_exp_off_diagonal(scores)
    batch = log_mean.detach()
    if running_log_mean is None:
        new = batch
    else:
        check_tensor(running_log_mean, "mine_bound", "running_log_mean")
        past = running_log_mean.detach().to(batch)
        if momentum == 0.0:
            new = batch
        else:
            new = torch.logaddexp(past + math.log(momentum), batch + math.log1p(-momentum))
    # exp(log_mean - new) has value E_q/m_t and gradient grad(E_q)/m_t; subtracting its
    # detached copy keeps the value at DV while the gradient becomes the corrected one.
    ratio = torch.exp(log_mean - new)
    estimate = scores.diagonal().mean() - batch - (ratio - ratio.detach())
    return estimate, new


class MINE(nn.Module):
    """MINE estimator state: the moving average of E_q[e^f] (Belghazi et al., ICML 2018).

    ``mine = MINE(momentum=0.9); estimate = mine(scores); (-estimate).backward()``. In
    training mode each call updates the buffer ``running_log_mean`` (log of the moving
    average) and returns :func:`mine_bound`'s estimate (value = DV, gradient =
    bias-corrected); in eval mode the buffer is left alone and the plain DV estimate is
    returned. ``reset()`` forgets the average (e.g. when the data distribution changes).
    """

    def __init__(self, momentum: float = 0.9):
        super().__init__()
        self.momentum = _check_momentum(momentum, "MINE")
        self.register_buffer("running_log_mean", torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def reset(self) -> None:
        self.initialized.fill_(False)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return dv_bound(scores)
        past = self.running_log_mean if bool(self.initialized) else None
        estimate, new = mine_bound(scores, past, self.momentum)
        self.running_log_mean.copy_(new)
        self.initialized.fill_(True)
        return estimate

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}"


def js_fgan_bound(scores: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon f-GAN objective: ``E_p[-softplus(-f)] - E_q[softplus(f)]``.

    Nowozin, Cseke & Tomioka (NeurIPS 2016) with the JS generator function; Hjelm et al.
    (DIM, ICLR 2019) use this as their "JSD MI estimator"; Poole et al.'s
    code ``js_fgan_lower_bound``. Its supremum is ``2 JSD(p || q) - log 4``, reached at
    ``f* = log p(x, y) / (p(x) p(y))``; it is a dependence score, not MI in nats (it is
    bounded above by 0 whatever the MI). Use :func:`js_bound` for an MI estimate.
    """
    scores = check_scores(scores, "js_fgan_bound")
    return -F.softplus(-scores.diagonal()).mean() - F.softplus(_off_diagonal(scores)).mean()


def js_bound(scores: torch.Tensor, variant: str = "paper") -> torch.Tensor:
    """Poole et al.'s I_JS: train with the JS objective, report the NWJ estimate (nats).

    The returned tensor has the value of an NWJ MI estimate and the gradient of
    :func:`js_fgan_bound` (Poole et al., ICML 2019, Sec. 2.3; Hjelm et al. train the critic
    this way). The JS optimum is ``f = log r`` (r = the density ratio) while the NWJ
    optimum is ``1 + log r``, so:

    * ``variant="paper"`` (default) reports ``nwj_bound(f + 1) = E_p[f] + 1 - E_q[e^f]``
      (TUBA with a = 1), tight at the JS optimum. This follows from the two optima; the
      exact equation of the paper's I_JS could not be read, so this default is derived,
      not quoted.
    * ``variant="official_code"`` reports ``nwj_bound(f)``, as the reference code does
      (``js_lower_bound``: ``nwj_lower_bound(f)``, in Poole et al.'s Colab and in
      ``ermongroup/smile-mi-estimator/estimators.py``); at the JS optimum this is
      ``MI - e^{-1}``, e^{-1} ~ 0.37 nats below the paper-derived value on average.

    Args:
        scores: (B, B) critic values, diagonal = joint pairs, off-diagonal = marginals.
        variant: ``"paper"`` or ``"official_code"``, see above.
    """
    variant = check_choice(variant, "js_bound", "variant", JS_VARIANTS)
    js = js_fgan_bound(scores)
    shift = 1.0 if variant == "paper" else 0.0
    mi = nwj_bound(scores.detach() + shift)
    return js + (mi - js.detach())


__all__ = [
    "MINE",
    "check_scores",
    "dv_bound",
    "infonce_bound",
    "js_bound",
    "js_fgan_bound",
    "log_mean_exp_off_diagonal",
    "mine_bound",
    "nwj_bound",
]
