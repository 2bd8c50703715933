"""Entropic optimal transport in the log domain, and BECLR's OpTA (inference-time alignment).

Poulakakis-Daktylidis & Jamali-Rad, "BECLR: Batch Enhanced Contrastive Few-Shot
Learning", ICLR 2024 (arXiv:2402.02444). Code followed: stypoumic/BECLR
``utils/sinkhorn.py`` (``Sinkhorn``, ``distributed_sinkhorn``),
``utils/optimal_transport.py`` (``OpTA``) and ``evaluate.py`` (``evaluate_fewshot``).
The paper's PDF could not be read here; the formulas below were taken from that code and
every departure from it is stated where it happens.

- :func:`sinkhorn`: entropic OT plan for a cost matrix and two marginals (Cuturi 2013),
  iterated on the dual potentials with ``logsumexp``, so it stays finite at any
  ``epsilon`` (1e-5 included) in float32.
- :func:`opta`: transport class prototypes toward the query features by the barycentric
  map of the plan, repeated ``passes`` times, then blended with the original prototypes.
"""

from __future__ import annotations

import math

import torch

from contrastkit.core.validation import (
    _fail,
    check_embeddings,
    check_feature_dim,
    check_in_range,
    check_positive_number,
    check_tensor,
)

__all__ = ["opta", "opta_passes", "sinkhorn", "squared_distances"]


def _check_int(value, owner: str, arg: str, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(owner, arg, f"is {value!r}", "it must be an integer", fix, TypeError)
    if value < minimum:
        _fail(owner, arg, f"is {value}", f"it must be an integer >= {minimum}", fix)
    return value


def _marginal(m, n: int, owner: str, arg: str, dtype, device) -> torch.Tensor:
    """``None`` -> uniform ``1/n``; else a positive vector of length ``n`` summing to 1."""
    if m is None:
        return torch.full((n,), 1.0 / n, dtype=dtype, device=device)
    check_tensor(m, owner, arg)
    if m.dim() != 1 or m.shape[0] != n:
        _fail(
            owner,
            arg,
            f"has shape {tuple(m.shape)}",
            f"it must be 1-D with one weight per {'row' if arg == 'a' else 'column'} ({n})",
            f"pass a vector of {n} weights or None for uniform",
        )
    m = m.to(dtype)
    if not bool(torch.isfinite(m).all()) or bool((m <= 0).any()):
        _fail(
            owner,
            arg,
            f"has entries in [{float(m.min()):g}, {float(m.max()):g}]",
            "marginal weights must be finite and > 0 (log-domain iterations take log(weight))",
            "drop zero-weight points before calling, or add a tiny positive weight",
        )
    if abs(float(m.sum()) - 1.0) > 1e-4:
        _fail(
            owner,
            arg,
            f"sums to {float(m.sum()):.6g}",
            "a marginal must be a probability vector (sum 1)",
            f"pass {arg} / {arg}.sum()",
        )
    return m


def sinkhorn(
    cost: torch.Tensor,
    epsilon: float = 0.05,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    max_iter: int = 1000,
    tol: float = 1e-4,
) -> tuple[torch.Tensor, int]:
    """Entropic OT plan ``P = argmin <P, C> - epsilon H(P)`` s.t. ``P 1 = a``, ``P^T 1 = b``.

    Sinkhorn-Knopp (Cuturi, NeurIPS 2013) on the dual potentials ``f, g`` in the log
    domain: ``f = eps (log a - LSE_j((g_j - C_ij) / eps))``, then
    ``g = eps (log b - LSE_i((f_i - C_ij) / eps))``, and ``P = exp((f_i + g_j - C_ij)/eps)``.
    Nothing is exponentiated before the last step, so any ``epsilon > 0`` is finite in
    float32 (the scaling form ``exp(-C/eps)`` underflows or overflows near 1e-3).

    Each iteration ends with the column update, so the column marginal ``b`` holds to
    rounding; iterations stop when the row marginal error ``||P 1 - a||_1 <= tol`` or after
    ``max_iter`` iterations (``tol=0`` runs exactly ``max_iter``, as SwAV-style code does).
    The official ``utils/sinkhorn.py`` stops on the change of its row potential
    (``sum |u - u_prev| < thresh``) and adds 1e-8 inside ``log(mu)``; we stop on the
    marginal error, which is what the tolerance is meant to bound, and take ``log`` of the
    exact weights. Unlike that class we do not normalise ``cost``; :func:`opta` does, as
    the code does.

    Args:
        cost: ``(n, m)`` finite cost matrix (lower = preferred).
        epsilon: entropic regularisation > 0.
        a, b: row / column marginals, positive and summing to 1; ``None`` = uniform.
        max_iter: iteration cap (>= 1).
        tol: stopping tolerance on the row-marginal L1 error (>= 0).

    Returns:
        ``(plan, iterations)``: the ``(n, m)`` plan in ``cost``'s dtype (float32 for half
        inputs) and the number of iterations run.
    """
    owner = "sinkhorn"
    check_embeddings(cost, owner, "cost")
    epsilon = check_positive_number(epsilon, owner, "epsilon", "pass e.g. epsilon=0.05")
    max_iter = _check_int(max_iter, owner, "max_iter", 1, "pass e.g. max_iter=1000")
    tol = check_in_range(tol, owner, "tol", 0.0, math.inf, "pass e.g. tol=1e-4")
    dtype = torch.float64 if cost.dtype == torch.float64 else torch.float32
    c = cost.to(dtype)
    n, m = c.shape
    log_a = _marginal(a, n, owner, "a", dtype, c.device).log()
    log_b = _marginal(b, m, owner, "b", dtype, c.device).log()
    scaled = -c / epsilon  # log kernel; f and g below are the potentials divided by epsilon
    f = torch.zeros(n, dtype=dtype, device=c.device)
    g = torch.zeros(m, dtype=dtype, device=c.device)
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        f = log_a - torch.logsumexp(scaled + g[None, :], dim=1)
        g = log_b - torch.logsumexp(scaled + f[:, None], dim=0)
        if tol > 0:
            rows = torch.logsumexp(scaled + f[:, None] + g[None, :], dim=1).exp()
            if float((rows - log_a.exp()).abs().sum()) <= tol:
                break
    return (scaled + f[:, None] + g[None, :]).exp(), iterations


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``C_ij = ||x_i - y_j||^2`` computed from differences (no cancellation)."""
    return (x[:, None, :] - y[None, :, :]).pow(2).sum(-1)


def opta_passes(k_shot: int) -> tuple[int, float]:
    """The official ``evaluate.py`` schedule: ``(passes, blend)`` = ``(5, 1.0)`` for 1-shot,
    ``(1, 0.7)`` otherwise (``one_shot_ot_passes=5``, ``five_shot_ot_passes=1``,
    ``ratio_OT=0.7`` applied only when ``n_shot != 1``)."""
    return (5, 1.0) if k_shot == 1 else (1, 0.7)


def opta(
    prototypes: torch.Tensor,
    queries: torch.Tensor,
    *,
    passes: int = 5,
    blend: float = 1.0,
    epsilon: float = 0.05,
    max_iter: int = 1000,
    tol: float = 1e-4,
) -> torch.Tensor:
    """OpTA: optimal-transport alignment of support prototypes to the query distribution.

    BECLR (ICLR 2024), the inference stage; code: ``utils/optimal_transport.py::OpTA`` and
    ``evaluate.py::evaluate_fewshot``. One pass: cost ``C_ij = ||P_i - Q_j||^2 / max C``
    (the ``Sinkhorn`` class normalises by the largest entry "to be consistent with reg"),
    uniform marginals, entropic plan ``pi`` (:func:`sinkhorn`, ``epsilon=0.05``,
    ``max_iter=1000``, ``tol=1e-4`` as in the code), then the barycentric map
    ``P <- (pi / pi.sum(1)) Q``: each prototype moves to the plan-weighted mean of the
    queries it sends mass to. Pass ``t+1`` starts from the prototypes of pass ``t``; the
    queries never move. Finally ``P <- blend * P_OT + (1 - blend) * P_before``.

    The code's schedule is :func:`opta_passes`: 5 passes and no blend for 1-shot, 1 pass
    and ``blend=0.7`` otherwise (``ratio_OT``, applied only when ``n_shot != 1``).
    ``evaluate.py`` standardises each feature vector (zero mean, unit std across its own
    dimensions) before prototypes are formed; :func:`contrastkit.evaluation.few_shot.
    episode_accuracy` does that, this function does not.

    Args:
        prototypes: ``(n_way, D)`` class prototypes (the mean of each class's shots).
        queries: ``(n_query_total, D)`` unlabelled query features of the episode.
        passes: number of transport passes (>= 1).
        blend: weight of the transported prototypes in ``[0, 1]``.
        epsilon, max_iter, tol: passed to :func:`sinkhorn`.

    Returns:
        ``(n_way, D)`` transported prototypes (float32, or float64 for float64 inputs).
    """
    owner = "opta"
    check_embeddings(prototypes, owner, "prototypes")
    check_embeddings(queries, owner, "queries")
    check_feature_dim(prototypes, queries, owner, ("prototypes", "queries"))
    passes = _check_int(passes, owner, "passes", 1, "pass e.g. passes=5 (1-shot) or 1")
    blend = check_in_range(blend, owner, "blend", 0.0, 1.0, "pass e.g. blend=0.7")
    dtype = torch.float64 if torch.float64 in (prototypes.dtype, queries.dtype) else torch.float32
    before = prototypes.to(dtype)
    q = queries.to(dtype)
    p = before
    for _ in range(passes):
        cost = squared_distances(p, q)
        top = cost.max()
        # All prototypes on all queries: every cost is 0 and any plan is optimal.
        cost = cost / top if float(top) > 0 else cost
        plan, _ = sinkhorn(cost, epsilon, max_iter=max_iter, tol=tol)
        p = (plan / plan.sum(dim=1, keepdim=True)) @ q
    return blend * p + (1.0 - blend) * before
