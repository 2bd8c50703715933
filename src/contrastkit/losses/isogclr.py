"""SogCLR and iSogCLR: global contrastive losses with per-sample moving-average state.

* **SogCLR**: Yuan, Wu, Qiu, Du, Zhang, Zhou, Yang. *Provable Stochastic Optimization for
  Global Contrastive Learning: Small Batch Does Not Harm Performance.* ICML 2022,
  arXiv:2202.12387. Code: Optimization-AI/SogCLR ``sogclr/builder.py``
  (``dynamic_contrastive_loss``); LibAUC ``GCLoss_v1``.
* **iSogCLR**: Qiu, Hu, Yuan, Zhou, Zhang, Yang. *Not All Semantics are Created Equal:
  Contrastive Self-supervised Learning with Automatic Temperature Individualization.*
  ICML 2023, arXiv:2305.11965. Code: zhqiu/contrastive-learning-iSogCLR
  ``unimodal_exps/losses.py`` (``SogCLR_Loss``, ``SogCLR_DRO_Loss`` = iSogCLR) and
  ``unimodal_exps/readme.md`` (the CIFAR run); LibAUC ``GCLoss_v1(enable_isogclr=True)``.

The objectives
--------------
Two augmented views ``A(x_i)``, ``A'(x_i)`` of each of the N samples of a batch give
2N rows (view-major: row ``v * N + i``). Each row ``a`` is an anchor; its positive is the
other view of the same sample, its negatives ``S_a`` are the other ``2N - 2`` rows. With
``h_a(z) = sim(a, z) - sim(a, pos(a))`` the paper defines, per anchor,

    g_a(w, tau)    = 1/|S_a| sum_{z in S_a} exp(h_a(z) / tau)
    SogCLR  (GCL):  F = 1/n sum_i  tau   * log g_i(w, tau)                    (global tau)
    iSogCLR (RGCL): F = 1/n sum_i [tau_i * log g_i(w, tau_i) + tau_i * rho]   (own tau_i)

the latter minimised over the encoder ``w`` and ``tau_i in [tau_min, tau_max]`` (it is the
dual of a KL-constrained distributionally robust loss; ``rho`` is the KL radius).
``log g`` averages over the whole data set in the paper's F; a mini-batch only gives an
unbiased estimate of g, not of log g, hence the algorithms below.

The algorithms (state per sample i of the data set)
---------------------------------------------------
``s_i``: moving average of g_i (SogCLR and iSogCLR); ``tau_i``, ``u_i`` (iSogCLR):

1. ``s'_a = (1 - gamma) * s_i + gamma * g_a`` for both views a of sample i, with
   ``s'_a = g_a`` the first time sample i is seen (a per-sample ``seen`` flag, so random
   order and resume work; the official code uses ``epoch == 0`` instead);
   the stored ``s_i`` becomes the mean of its two views' ``s'_a`` (as both codes do).
2. Encoder gradient: ``tau_a / s'_a * grad_w g_a``. The loss returned is the
   **surrogate** whose gradient is that estimator, with detached weights
   ``p_aj = exp(h_aj / tau_a) / s'_a``::

       L_a = 1/|S_a| sum_{j in S_a} p_aj * h_aj

   Its value is **not** the objective's value (use ``objective`` /
   :func:`global_contrastive_objective` for that); with a fresh state (``s' = g``) its
   gradient is exactly that of ``tau * log g_a`` = ``tau`` times the gradient of DCL.
3. iSogCLR only: ``grad_tau_a = log s'_a + rho - 1/|S_a| sum_j p_aj * h_aj / tau_a``
   (the partial derivative of ``tau log g + tau rho`` with g replaced by s'; with s' = g it
   is ``rho - KL(softmax(h_a / tau_a) || uniform)``), averaged over the two views;
   ``u_i = (1 - beta_u) u_i + beta_u grad_tau_i``;
   ``tau_i = clip(tau_i - eta u_i, tau_min, tau_max)``.

All of it runs in the log domain (``log s`` is stored, ``logsumexp`` gives ``log g``), so
``exp(h / tau)`` never overflows or underflows, even at tau = 0.01 in float32; ``log s``
is never taken of 0.

Paper versus released code (``variant``)
----------------------------------------
* ``variant="paper"`` (default): g and the weights use ``h_a(z) = sim(a, z) - sim(a, pos)``
  as the papers define it (notation as in LibAUC's docstring, see below); the positive's
  gradient weight is ``sum_j p_aj / |S|``.
* ``variant="official_code"``: both released codes (and LibAUC) drop the positive from
  g (``exp(sim(a, z) / tau)``) and give the positive the weight 1:
  ``L_a = 1/|S| sum_j p_aj * sim_aj - sim(a, pos)``. With an exact g (s' = g) both give the
  same value and gradient; they differ through the moving average (the positive moves
  between visits).

Other departures, all documented choices:

* Loss scale: the codes return the mean over samples of (view-1 + view-2) surrogate;
  here ``reduction="mean"`` averages over the 2N anchors (half the code's number), as
  every contrastkit loss does.
* SogCLR's official code stores ``u1 + u2`` (not their mean) and starts from s = 0
  (``zhqiu`` ``SogCLR_Loss`` likewise); LibAUC stores the mean and sets s = g when the
  stored values of the whole batch are all 0. Here: the mean, and s = g on each sample's
  own first visit (the ``seen`` flag).
* iSogCLR's official code clips ``grad_tau`` to [-3, 3]; LibAUC does not (whether the
  paper's Algorithm 1 does was not checked): ``tau_grad_clip=None`` (default) or
  ``tau_grad_clip=3.0`` for the code's.
* The codes' per-step learning-rate schedule for tau (``eta_sched``) is not built in:
  set ``module.eta`` from a training callback if wanted.
* The paper's Algorithm 1 (arXiv:2305.11965) was not read directly (the stored copy was
  not reachable); the objective and h are as LibAUC's docstring (written by the paper's
  authors) states them, the updates as both codes implement them.

Hyperparameters
---------------
iSogCLR defaults are those of the authors' README command that reproduces the paper's
unimodal (CIFAR) runs: ``gamma=0.8, rho=0.4, beta_u=0.5, temperature (tau_init)=0.1,
eta=0.03, tau_min=0.05, tau_max=1.0``. The ``SogCLR_DRO_Loss`` class defaults differ
(``rho=6.0, beta_u=0.9, tau_init=0.07, eta=1e-3``): since ``grad_tau -> rho - KL`` and
``KL <= log |S| = log(2N - 2)``, ``rho=6`` drives every tau_i to ``tau_min`` for batches
below ~200 samples; LibAUC recommends ``rho`` in [0.1, 0.5] for unimodal data.
SogCLR defaults follow LibAUC ``GCLoss_v1``: ``temperature=0.1, gamma=0.9``.

Not supported: several processes (no ``distributed`` option; the training loop refuses to
run these losses under torchrun), and more than two views.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from contrastkit.core.logits import masked_logsumexp
from contrastkit.core.reduction import reduce
from contrastkit.core.similarity import SIMILARITIES, pairwise
from contrastkit.core.validation import (
    _fail,
    _preview,
    check_choice,
    check_in_range,
    check_positive_number,
    check_reduction,
    check_temperature,
    check_tensor,
)
from contrastkit.losses._inputs import prepared, stack_views, working_dtype
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.registry import register_loss

VARIANTS = ("paper", "official_code")


class ISogCLRState(NamedTuple):
    """New per-sample state of the batch's samples (each ``(N,)``), from ``isogclr_update``.

    ``log_s``: log of the moving average s; ``temperature``: the updated tau_i; ``u``: the
    momentum of the tau-gradient; ``tau_grad``: this step's (clipped) tau-gradient."""

    log_s: torch.Tensor
    temperature: torch.Tensor
    u: torch.Tensor
    tau_grad: torch.Tensor


class _Step(NamedTuple):
    surrogate: torch.Tensor  # (2N,) per anchor, view-major, with grad
    log_s: torch.Tensor  # (N,) new stored log s (mean of the two views' s'), detached
    tau_grad: torch.Tensor  # (N,) unclipped tau-gradient, mean over the two views, detached


# ---------------------------------------------------------------------------- checks


def _two_views(views, owner):
    flat, n, v = stack_views(views, owner)
    if v != 2:
        _fail(
            owner,
            "views",
            f"holds {v} views",
            "this objective is defined for exactly two views A(x_i), A'(x_i) of each sample",
            "pass loss(z1, z2) or an (N, 2, D) tensor",
        )
    return flat, n


def _per_sample(value, n, owner, arg, dtype, device, positive=False):
    """A float or an (n,) tensor, as an (n,) tensor of ``dtype``; None stays None."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        if positive:
            value = check_positive_number(value, owner, arg, f"pass e.g. {arg}=0.1")
        return torch.full((n,), float(value), dtype=dtype, device=device)
    if value.dim() == 0:
        value = value.expand(n)
    if value.shape != (n,):
        _fail(
            owner,
            arg,
            f"has shape {tuple(value.shape)}",
            f"it must be a number or a 1-D tensor with one entry per sample ({n})",
            "pass the batch's entries of the per-sample state, e.g. state[index]",
        )
    value = value.detach().to(device=device, dtype=dtype)
    bad = ~torch.isfinite(value) if not positive else ~(torch.isfinite(value) & (value > 0))
    if bool(bad.any()):
        rule = "finite and > 0" if positive else "finite"
        _fail(
            owner,
            arg,
            f"has invalid entries at [{_preview(bad.nonzero().flatten())}]",
            f"every entry must be {rule}",
            "check the state tensor (a fresh state is log_s=None, seen=None)",
        )
    return value


def _seen(seen, n, owner, device):
    if seen is None:
        return torch.zeros(n, dtype=torch.bool, device=device)
    check_tensor(seen, owner, "seen")
    if seen.shape != (n,):
        _fail(
            owner,
            "seen",
            f"has shape {tuple(seen.shape)}",
            f"it must be a 1-D bool tensor with one entry per sample ({n})",
            "pass the batch's entries of the seen flags, e.g. seen[index]",
        )
    return seen.to(device=device, dtype=torch.bool)


def _check_gamma(gamma, owner) -> float:
    """The moving-average weight: a number in (0, 1]."""
    gamma = check_in_range(gamma, owner, "gamma", 0.0, 1.0, "pass e.g. gamma=0.8")
    if gamma == 0.0:
        _fail(owner, "gamma", "is 0.0", "it must lie in (0, 1]", "pass e.g. gamma=0.8")
    return gamma


def check_index(index, n: int, num_samples: int, owner: str) -> torch.Tensor:
    """Dataset indices of the batch: a 1-D integer tensor of n distinct values in
    ``[0, num_samples)``."""
    if index is None:
        _fail(
            owner,
            "index",
            "is None",
            "this loss keeps per-sample state and needs the dataset index of every sample",
            "call loss(z1, z2, index=idx) with idx the (N,) dataset indices of the batch",
        )
    check_tensor(index, owner, "index")
    if index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
        _fail(
            owner,
            "index",
            f"has dtype {index.dtype}",
            "dataset indices must be an integer tensor",
            "pass index.long()",
            TypeError,
        )
    if index.dim() != 1 or index.shape[0] != n:
        _fail(
            owner,
            "index",
            f"has shape {tuple(index.shape)}",
            f"it must be 1-D with one dataset index per sample ({n})",
            "pass the (N,) dataset indices of the batch's samples",
        )
    out = (index < 0) | (index >= num_samples)
    if bool(out.any()):
        _fail(
            owner,
            "index",
            f"holds values [{_preview(index[out])}] outside [0, {num_samples})",
            f"indices must lie in [0, num_samples) with num_samples={num_samples}",
            "build the loss with num_samples = the training-set size",
        )
    if torch.unique(index).numel() != n:
        values, counts = torch.unique(index, return_counts=True)
        _fail(
            owner,
            "index",
            f"repeats the values [{_preview(values[counts > 1])}]",
            "each sample may appear once per batch (its state is updated once per step)",
            "sample batches without replacement (e.g. a permutation of the data set)",
        )
    return index


# ---------------------------------------------------------------------------- core


def _pairs(x, n, similarity):
    """The similarities of the 2N view-major rows ``x`` (with grad), each row's positive
    similarity ``sim(a, pos(a))`` (2N,) and the mask of its negatives ``S_a`` (2N, 2N)."""
    rows = 2 * n
    sims = pairwise(x, x, similarity)  # (2N, 2N)
    ar = torch.arange(rows, device=x.device)
    pos_col = (ar + n) % rows
    negative = torch.ones(rows, rows, dtype=torch.bool, device=x.device)
    negative[ar, ar] = False
    negative[ar, pos_col] = False
    return sims, sims[ar, pos_col], negative


def _global_step(owner, views, temperature, log_s, seen, gamma, similarity, variant) -> _Step:
    """One step of the moving-average estimator shared by SogCLR and iSogCLR (the
    arguments as :func:`isogclr`'s, ``owner`` naming the caller in errors)."""
    check_choice(similarity, owner, "similarity", SIMILARITIES)
    check_choice(variant, owner, "variant", VARIANTS)
    gamma = _check_gamma(gamma, owner)
    flat, n = _two_views(views, owner)
    dtype = working_dtype(flat)
    x = prepared(flat, similarity, owner, "embeddings", dtype)
    device = x.device
    tau = _per_sample(temperature, n, owner, "temperature", dtype, device, positive=True)
    log_s = _per_sample(log_s, n, owner, "log_s", dtype, device)
    seen = _seen(seen, n, owner, device)
    if log_s is None:
        if bool(seen.any()):
            _fail(
                owner,
                "log_s",
                "is None while `seen` marks samples as seen",
                "a seen sample needs its moving average",
                "pass log_s=state[index] (or seen=None for a fresh state)",
            )
        log_s = torch.zeros(n, dtype=dtype, device=device)

    sims, pos, negative = _pairs(x, n, similarity)  # (2N, 2N), (2N,), with grad
    count = 2 * n - 2  # |S_a|
    tau_a = tau.repeat(2)  # both views of sample i use tau_i
    h = sims - pos[:, None] if variant == "paper" else sims  # the exponent's similarity
    with torch.no_grad():
        logits = h.detach() / tau_a[:, None]
        log_g = masked_logsumexp(logits, negative, dim=1) - math.log(count)
        old = (math.log1p(-gamma) if gamma < 1.0 else float("-inf")) + log_s.repeat(2)
        mixed = torch.logaddexp(old, math.log(gamma) + log_g)
        log_s_new = torch.where(seen.repeat(2), mixed, log_g)  # s'_a, per anchor
        weights = torch.exp(logits - log_s_new[:, None]).masked_fill(~negative, 0.0) / count
        stored = torch.logsumexp(log_s_new.view(2, n), dim=0) - math.log(2.0)
        grad_tau = log_s_new - (weights * logits.masked_fill(~negative, 0.0)).sum(1)
        grad_tau = grad_tau.view(2, n).mean(0)
    if variant == "paper":
        surrogate = (weights * h.masked_fill(~negative, 0.0)).sum(1)
    else:
        surrogate = (weights * sims.masked_fill(~negative, 0.0)).sum(1) - pos
    return _Step(surrogate, stored, grad_tau)


# ---------------------------------------------------------------------------- functions


def isogclr(
    *views,
    temperature=0.1,
    log_s=None,
    seen=None,
    gamma=0.8,
    similarity="cosine",
    variant="paper",
    reduction="mean",
):
    """iSogCLR surrogate loss (Qiu et al., ICML 2023, arXiv:2305.11965) for one batch.

    ``temperature``: the batch's individual temperatures tau_i, ``(N,)`` (or one number);
    ``log_s``, ``seen``: the batch's entries of the per-sample state (log of the moving
    average s_i and whether sample i was seen before); ``None`` for a fresh state, where
    s' = g exactly. Returns the surrogate whose gradient is the algorithm's estimator of
    the robust global contrastive objective's gradient (see the module docstring); its
    value is not the objective's (see :func:`global_contrastive_objective`). The state
    update is :func:`isogclr_update`; the module :class:`ISogCLR` keeps and updates it.

    Shapes: ``views`` is two tensors ``(N, D)`` or one ``(N, 2, D)``. Returns a 0-d tensor,
    or ``(2N,)`` per-anchor values (view-major) with ``reduction="none"``. Half-precision
    inputs are computed and returned in float32.
    """
    check_reduction(reduction, "isogclr")
    step = _global_step("isogclr", views, temperature, log_s, seen, gamma, similarity, variant)
    return reduce(step.surrogate, reduction, "isogclr")


@torch.no_grad()
def isogclr_update(
    *views,
    temperature=0.1,
    log_s=None,
    seen=None,
    u=None,
    gamma=0.8,
    rho=0.4,
    eta=0.03,
    beta_u=0.5,
    tau_min=0.05,
    tau_max=1.0,
    tau_grad_clip=None,
    similarity="cosine",
    variant="paper",
) -> ISogCLRState:
    """The new iSogCLR state of the batch's samples after one step (no gradient).

    ``log_s = log mean_views((1 - gamma) s + gamma g)`` (``log g`` on a first visit);
    ``tau_grad = mean_views(log s' + rho - sum_j p_aj h_aj / tau / |S|)``, clipped to
    ``[-tau_grad_clip, tau_grad_clip]`` when set; ``u = (1 - beta_u) u + beta_u tau_grad``;
    ``temperature = clip(tau - eta u, tau_min, tau_max)``. ``u=None`` means zeros.
    """
    owner = "isogclr_update"
    _check_isogclr_hyper(owner, rho, eta, beta_u, tau_min, tau_max, tau_grad_clip)
    step = _global_step(owner, views, temperature, log_s, seen, gamma, similarity, variant)
    n = step.log_s.shape[0]
    dtype, device = step.log_s.dtype, step.log_s.device
    tau = _per_sample(temperature, n, owner, "temperature", dtype, device, positive=True)
    u = _per_sample(u, n, owner, "u", dtype, device)
    u = torch.zeros_like(tau) if u is None else u
    grad, u_new, tau_new = _tau_step(
        step.tau_grad, tau, u, rho, eta, beta_u, tau_min, tau_max, tau_grad_clip
    )
    return ISogCLRState(step.log_s, tau_new, u_new, grad)


def _tau_step(tau_grad, tau, u, rho, eta, beta_u, tau_min, tau_max, clip):
    """Momentum step on the individual temperatures, projected onto [tau_min, tau_max]."""
    grad = tau_grad + rho
    if clip is not None:
        grad = grad.clamp(-clip, clip)
    u_new = (1.0 - beta_u) * u + beta_u * grad
    return grad, u_new, (tau - eta * u_new).clamp(tau_min, tau_max)


def sogclr(
    *views,
    log_s=None,
    seen=None,
    temperature=0.1,
    gamma=0.9,
    similarity="cosine",
    variant="paper",
    reduction="mean",
):
    """SogCLR surrogate loss (Yuan et al., ICML 2022, arXiv:2202.12387) for one batch: the
    global contrastive loss with one fixed ``temperature`` and the moving average s_i.

    Arguments and return as :func:`isogclr` (with a scalar temperature). With a fresh
    state its gradient is ``temperature`` times DCL's (Yeh et al. 2022) on the same batch.
    """
    check_temperature(temperature, "sogclr")
    check_reduction(reduction, "sogclr")
    step = _global_step("sogclr", views, temperature, log_s, seen, gamma, similarity, variant)
    return reduce(step.surrogate, reduction, "sogclr")


@torch.no_grad()
def sogclr_update(
    *views, log_s=None, seen=None, temperature=0.1, gamma=0.9, similarity="cosine", variant="paper"
) -> torch.Tensor:
    """The new ``log s`` (``(N,)``) of the batch's samples after one SogCLR step."""
    owner = "sogclr_update"
    check_temperature(temperature, owner)
    return _global_step(owner, views, temperature, log_s, seen, gamma, similarity, variant).log_s


def global_contrastive_objective(
    *views, temperature=0.1, rho=0.0, similarity="cosine", reduction="mean"
):
    """The (robust) global contrastive objective's per-anchor value on this batch:
    ``tau_a * log(1/|S_a| sum_{z in S_a} exp(h_a(z) / tau_a)) + tau_a * rho`` with
    ``h_a(z) = sim(a, z) - sim(a, pos(a))`` (the batch standing in for the data set).

    ``temperature``: a number (SogCLR, ``rho=0``) or ``(N,)`` per-sample temperatures
    (iSogCLR). This is the value the surrogates of :func:`sogclr` / :func:`isogclr`
    descend; computed with ``logsumexp``. Returns a 0-d tensor or ``(2N,)`` values.
    """
    owner = "global_contrastive_objective"
    check_reduction(reduction, owner)
    check_choice(similarity, owner, "similarity", SIMILARITIES)
    rho = check_in_range(rho, owner, "rho", 0.0, math.inf, "pass e.g. rho=0.4")
    flat, n = _two_views(views, owner)
    dtype = working_dtype(flat)
    x = prepared(flat, similarity, owner, "embeddings", dtype)
    tau = _per_sample(temperature, n, owner, "temperature", dtype, x.device, positive=True)
    sims, pos, negative = _pairs(x, n, similarity)
    tau_a = tau.repeat(2)
    h = sims - pos[:, None]
    log_g = masked_logsumexp(h / tau_a[:, None], negative, dim=1) - math.log(2 * n - 2)
    return reduce(tau_a * (log_g + rho), reduction, owner)


def _check_isogclr_hyper(owner, rho, eta, beta_u, tau_min, tau_max, tau_grad_clip):
    check_in_range(rho, owner, "rho", 0.0, math.inf, "pass e.g. rho=0.4")
    check_positive_number(eta, owner, "eta", "pass e.g. eta=0.03")
    check_in_range(beta_u, owner, "beta_u", 0.0, 1.0, "pass e.g. beta_u=0.5")
    check_positive_number(tau_min, owner, "tau_min", "pass e.g. tau_min=0.05")
    check_positive_number(tau_max, owner, "tau_max", "pass e.g. tau_max=1.0")
    if tau_min > tau_max:
        _fail(
            owner,
            "tau_min",
            f"is {tau_min} > tau_max={tau_max}",
            "the temperature range must be non-empty",
            "pass tau_min <= tau_max",
        )
    if tau_grad_clip is not None:
        check_positive_number(tau_grad_clip, owner, "tau_grad_clip", "pass e.g. 3.0 or None")


# ---------------------------------------------------------------------------- modules


class _GlobalContrastive(ContrastiveLoss):
    """Shared state handling: per-sample buffers sized ``num_samples``, updated in
    training mode only (``self.training``), under no_grad; saved in ``state_dict``."""

    inputs = "index"

    def _init_common(self, num_samples, gamma, similarity, variant, reduction):
        owner = type(self).__name__
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
            _fail(
                owner,
                "num_samples",
                f"is {num_samples!r}",
                "it must be an int >= 2 (the training-set size)",
                "pass num_samples=len(train_set)",
            )
        self.num_samples = num_samples
        self.gamma = _check_gamma(gamma, owner)
        self.similarity = check_choice(similarity, owner, "similarity", SIMILARITIES)
        self.variant = check_choice(variant, owner, "variant", VARIANTS)
        self._init_reduction(reduction)
        self.logit_scale = None  # no learnable global temperature (ContrastiveLoss API)
        self.register_buffer("log_s", torch.zeros(num_samples))
        self.register_buffer("seen", torch.zeros(num_samples, dtype=torch.bool))

    @property
    def s(self) -> torch.Tensor:
        """The moving averages s_i (0 for samples not seen yet)."""
        return torch.where(self.seen, self.log_s.exp(), torch.zeros_like(self.log_s))

    def _batch_index(self, views, index):
        owner = type(self).__name__
        flat, n = _two_views(views, owner)
        idx = check_index(index, n, self.num_samples, owner)
        return idx.to(self.log_s.device)

    def _step(self, views, idx, temperature) -> _Step:
        """One step on the stored state of the samples ``idx``; in training mode the new
        ``log_s`` and ``seen`` are written back (under no_grad)."""
        step = _global_step(
            type(self).__name__,
            views,
            temperature,
            self.log_s[idx],
            self.seen[idx],
            self.gamma,
            self.similarity,
            self.variant,
        )
        if self.training:
            with torch.no_grad():
                self.log_s[idx] = step.log_s.to(self.log_s.dtype)
                self.seen[idx] = True
        return step


@register_loss(
    "sogclr",
    summary="Global contrastive loss with per-sample moving averages (small-batch SogCLR)",
    paper="Yuan et al. 2022, Provable Stochastic Optimization for Global Contrastive Learning",
)
class SogCLR(_GlobalContrastive):
    """Module form of :func:`sogclr`: keeps ``log_s`` and ``seen`` for ``num_samples``
    samples; call ``loss(z1, z2, index=idx)`` with the batch's dataset indices. In training
    mode each call also updates the batch's state; in eval mode it only reads it.
    ``objective(z1, z2)`` gives the objective's value (the return value is the surrogate).
    """

    function = staticmethod(sogclr)

    def __init__(
        self,
        num_samples=1024,
        temperature=0.1,
        gamma=0.9,
        similarity="cosine",
        variant="paper",
        reduction="mean",
    ):
        super().__init__()
        self.temperature = check_temperature(temperature, "SogCLR")
        self._init_common(num_samples, gamma, similarity, variant, reduction)

    def forward(self, *views, index=None):
        step = self._step(views, self._batch_index(views, index), self.temperature)
        return reduce(step.surrogate, self.reduction, "SogCLR")

    @torch.no_grad()
    def objective(self, *views, reduction="mean"):
        """The global contrastive objective on this batch (no state read or written)."""
        return global_contrastive_objective(
            *views, temperature=self.temperature, similarity=self.similarity, reduction=reduction
        )


@register_loss(
    "isogclr",
    summary="Robust global contrastive loss with learned per-sample temperatures (iSogCLR)",
    paper="Qiu et al. 2023, Not All Semantics are Created Equal (ICML 2023)",
)
class ISogCLR(_GlobalContrastive):
    """Module form of :func:`isogclr` and :func:`isogclr_update`: keeps ``log_s``,
    ``seen``, ``tau`` (individual temperatures, starting at ``temperature``) and ``u``
    (momentum of the tau-gradient) for ``num_samples`` samples as buffers, so they are in
    ``state_dict`` and in training checkpoints. Call ``loss(z1, z2, index=idx)``; in
    training mode each call also updates the batch's state (with the temperatures it used
    for the loss), in eval mode it only reads it. ``objective(z1, z2, index=idx)`` gives
    the robust objective's value with the current temperatures.
    """

    function = staticmethod(isogclr)

    def __init__(
        self,
        num_samples=1024,
        temperature=0.1,
        gamma=0.8,
        rho=0.4,
        eta=0.03,
        beta_u=0.5,
        tau_min=0.05,
        tau_max=1.0,
        tau_grad_clip=None,
        similarity="cosine",
        variant="paper",
        reduction="mean",
    ):
        super().__init__()
        owner = "ISogCLR"
        self.temperature = check_temperature(temperature, owner)
        _check_isogclr_hyper(owner, rho, eta, beta_u, tau_min, tau_max, tau_grad_clip)
        if not tau_min <= self.temperature <= tau_max:
            _fail(
                owner,
                "temperature",
                f"is {self.temperature}",
                f"the initial temperature must lie in [tau_min, tau_max] = [{tau_min}, {tau_max}]",
                "pass a temperature inside the range or widen it",
            )
        self.rho, self.eta, self.beta_u = float(rho), float(eta), float(beta_u)
        self.tau_min, self.tau_max = float(tau_min), float(tau_max)
        self.tau_grad_clip = None if tau_grad_clip is None else float(tau_grad_clip)
        self._init_common(num_samples, gamma, similarity, variant, reduction)
        self.register_buffer("tau", torch.full((num_samples,), self.temperature))
        self.register_buffer("u", torch.zeros(num_samples))

    def current_temperature(self):
        """The mean individual temperature of the samples seen so far (the initial
        ``temperature`` before any)."""
        if not bool(self.seen.any()):
            return self.temperature
        return self.tau[self.seen].mean()

    def forward(self, *views, index=None):
        idx = self._batch_index(views, index)
        tau = self.tau[idx]
        step = self._step(views, idx, tau)  # writes log_s and seen in training mode
        if self.training:
            with torch.no_grad():
                dtype = step.tau_grad.dtype
                _, u, new_tau = _tau_step(
                    step.tau_grad,
                    tau.to(dtype),
                    self.u[idx].to(dtype),
                    self.rho,
                    self.eta,
                    self.beta_u,
                    self.tau_min,
                    self.tau_max,
                    self.tau_grad_clip,
                )
                self.u[idx] = u.to(self.u.dtype)
                self.tau[idx] = new_tau.to(self.tau.dtype)
        return reduce(step.surrogate, self.reduction, "ISogCLR")

    @torch.no_grad()
    def objective(self, *views, index=None, reduction="mean"):
        """The robust objective ``tau_i log g_i + tau_i rho`` on this batch with the
        current individual temperatures (no state written)."""
        idx = self._batch_index(views, index)
        return global_contrastive_objective(
            *views,
            temperature=self.tau[idx],
            rho=self.rho,
            similarity=self.similarity,
            reduction=reduction,
        )
