"""Computable quantities of the Markov categorical framework for language models
(Y. Zhang, "A Markov Categorical Framework for Language Modeling", arXiv 2507.19247).

The paper has no code and no experiments (asiresearch/lm-theory holds the PDF only); these
are the quantities it defines that need only a model's logits, hidden states and
unembedding, plus the data's tokens:

- :func:`categorical_entropy`: the KL categorical entropy of the head, which equals the
  Shannon entropy of ``softmax(logits)`` (Def. 4.1, Eq. 4.4); its mean over positions is
  the plug-in value of ``H(W_t | H_t)`` under the model (Prop. 4.2).
- :func:`markov_conditional_entropy`: the data side, ``H(W_t | W_{t-1})`` of a Markov
  chain with a known transition matrix (Thm 5.2 says the model's mean categorical entropy
  approaches the data's conditional entropy as NLL reaches its optimum).
- :func:`information_surplus`: a plug-in estimate of ``I(H_t; W_{t+1:t+K-1} | W_t)``
  (Eqs. 4.1-4.2) for discrete (or discretised) states, with its bounds.
- :func:`pullback_fisher_metric` and :func:`fisher_rank`: ``g*(h) = U^T (diag(p) - p p^T)
  U`` for a softmax head ``p = softmax(U h + c)`` (Thm 6.1, Remark 6.2) and its rank,
  at most ``min(d, |V| - 1)`` (Prop. 6.3).
- :func:`spectral_alignment`: the Rayleigh-type score ``mean_{i != j} <h~_i, h~_j> K_ij``
  of the spectral-contrastive form (Thm 7.6) with ``K`` a predictive-similarity kernel
  (Def. 7.3) built from the data's next-token distributions.
"""

from __future__ import annotations

import math

import torch

from contrastkit.core.validation import _fail, check_choice, check_positive_number
from contrastkit.diagnostics._inputs import as_embeddings, as_tensor, check_bool, check_int

KERNELS = ("bhattacharyya", "linear")


def _probabilities(p, owner: str, arg: str, dtype=torch.float64) -> torch.Tensor:
    """Rows of non-negative numbers summing to 1 (within 1e-6), as float64."""
    p = as_tensor(p, owner, arg)
    if not torch.is_floating_point(p) or p.dim() != 2:
        _fail(
            owner,
            arg,
            f"has dtype {p.dtype} and shape {tuple(p.shape)}",
            "it must be a 2-D floating tensor of probability rows",
            f"pass {arg} as an (N, V) float tensor",
        )
    p = p.to(dtype)
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        _fail(owner, arg, "has negative or non-finite entries", "probabilities are >= 0", "fix it")
    err = float((p.sum(1) - 1).abs().max())
    if err > 1e-6:
        _fail(
            owner,
            arg,
            f"has rows summing to 1 +- {err:.2g}",
            "every row must be a distribution (sum 1)",
            f"normalise with {arg} / {arg}.sum(1, keepdim=True)",
        )
    return p


def categorical_entropy(logits, *, reduction: str = "mean"):
    """Shannon entropy (nats) of ``softmax(logits)`` over the last axis.

    The paper's categorical entropy of the head with D = KL (Def. 4.1, Eq. 4.4, Prop. 4.2):
    for each position ``H(p_h) = -sum_w p_h(w) log p_h(w)``, computed from
    ``log_softmax`` (``p log p = 0`` at ``p = 0``). ``logits`` is ``(..., V)``; the mean
    over all positions (``reduction="mean"``, a float) estimates ``H(W_t | H_t)`` under the
    model; ``reduction="none"`` returns the per-position entropies as a tensor ``(...)``.
    It lies in ``[0, log V]``; ``log V`` for uniform logits.
    """
    owner = "categorical_entropy"
    check_choice(reduction, owner, "reduction", ("mean", "none"))
    x = as_tensor(logits, owner, "logits")
    if not torch.is_floating_point(x) or x.dim() < 1 or x.shape[-1] < 1:
        _fail(
            owner,
            "logits",
            f"has dtype {x.dtype} and shape {tuple(x.shape)}",
            "it must be a floating tensor (..., V) of next-token logits",
            "pass the model's logits",
            TypeError,
        )
    if not bool(torch.isfinite(x).all()):
        _fail(owner, "logits", "contains NaN or inf", "logits must be finite", "check the model")
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    logp = torch.log_softmax(x, dim=-1)
    h = -(logp.exp() * logp).sum(-1)
    return float(h.mean()) if reduction == "mean" else h


def markov_conditional_entropy(transition, weights=None) -> float:
    """``H(W_t | W_{t-1}) = sum_a pi(a) H(P[a, :])`` (nats) of a Markov chain with
    transition matrix ``transition`` (V, V) whose rows sum to 1. ``weights`` (V,) is the
    distribution of ``W_{t-1}`` (default: the stationary distribution, the leading left
    eigenvector of ``P``)."""
    owner = "markov_conditional_entropy"
    p = _probabilities(transition, owner, "transition")
    if p.shape[0] != p.shape[1]:
        _fail(owner, "transition", f"has shape {tuple(p.shape)}", "it must be square", "fix it")
    if weights is None:
        weights = stationary_distribution(p)
    else:
        weights = _probabilities(as_tensor(weights, owner, "weights")[None], owner, "weights")[0]
        if weights.shape[0] != p.shape[0]:
            _fail(
                owner,
                "weights",
                f"has {weights.shape[0]} entries",
                f"it needs one per state ({p.shape[0]})",
                "pass a (V,) distribution",
            )
    logp = torch.where(p > 0, p.log(), torch.zeros_like(p))
    return float((weights * -(p * logp).sum(1)).sum())


def stationary_distribution(transition) -> torch.Tensor:
    """The stationary distribution ``pi = pi P`` (float64, (V,)) of an irreducible chain."""
    p = _probabilities(transition, "stationary_distribution", "transition")
    values, vectors = torch.linalg.eig(p.T)
    k = int((values - 1).abs().argmin())
    pi = vectors[:, k].real
    return pi / pi.sum()


def _symbols(x, owner: str, arg: str, n: int) -> torch.Tensor:
    """Integer ids (N,) for discrete symbols: 1-D integer ids as they are, 2-D rows
    (tuples of tokens, or hidden states) mapped to ids by exact equality."""
    x = as_tensor(x, owner, arg)
    if x.shape[0] != n:
        _fail(
            owner,
            arg,
            f"has {x.shape[0]} rows",
            f"it needs one row per position ({n})",
            "pass aligned arrays",
        )
    if x.dim() == 1:
        x = x[:, None]
    if x.dim() != 2:
        _fail(owner, arg, f"has shape {tuple(x.shape)}", "it must be 1-D or 2-D", "reshape it")
    return torch.unique(x, dim=0, return_inverse=True)[1]


def _entropy_of_counts(ids: torch.Tensor) -> float:
    counts = torch.bincount(ids).to(torch.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def _joint(*ids: torch.Tensor) -> torch.Tensor:
    return torch.unique(torch.stack(ids, 1), dim=0, return_inverse=True)[1]


def information_surplus(states, current, future, *, vocab_size: int | None = None) -> dict:
    """Plug-in estimate of the information surplus ``I(H_t; W_{t+1:t+K-1} | W_t)``
    (Eqs. 4.1-4.2) from N positions t.

    ``states`` (N,) ids or (N, d) rows: the hidden state ``H_t`` of each position,
    discretised by exact equality of rows (pass cluster ids, e.g. from k-means, for
    continuous states); ``current`` (N,) the token ``W_t``; ``future`` (N, K-1) the tokens
    ``W_{t+1..t+K-1}`` (K >= 2; a 1-D tensor means K = 2). The estimate is the conditional
    mutual information of the empirical joint distribution::

        S^ = H^(H, W) + H^(W, F) - H^(W) - H^(H, W, F)

    It is exact for the empirical distribution, so ``0 <= S^ <= H^(F | W) <= (K-1) log|V|``
    hold for every sample (the paper's bounds). As an estimate of the population value it
    is biased upward: with finite samples, independent variables show positive plug-in
    information; to first order the bias is ``sum_w (|H_w| - 1)(|F_w| - 1) / (2N)``
    (Miller-Madow for each slice ``W = w``, with ``|H_w|``, ``|F_w|`` the observed support
    sizes), which is returned as ``"bias_first_order"`` and subtracted in
    ``"surplus_corrected"`` (which may be negative). It is not a probe-based estimate:
    for continuous states with no repeated rows the plug-in value degenerates to
    ``H^(F | W)`` (every state is unique), so discretise them first.

    Returns a dict of floats: ``surplus``, ``surplus_corrected``, ``bias_first_order``,
    ``conditional_entropy`` (``H^(F | W)``, the upper bound), ``bound`` (``(K-1) log|V|``
    with ``|V|`` = ``vocab_size`` or the number of distinct tokens seen), ``k``.
    """
    owner = "information_surplus"
    cur = as_tensor(current, owner, "current")
    if cur.dim() != 1 or cur.dtype.is_floating_point:
        _fail(
            owner,
            "current",
            f"has dtype {cur.dtype} and shape {tuple(cur.shape)}",
            "it must be a 1-D integer tensor of tokens W_t",
            "pass current.long()",
        )
    n = cur.shape[0]
    fut = as_tensor(future, owner, "future")
    if fut.dtype.is_floating_point:
        _fail(owner, "future", f"has dtype {fut.dtype}", "tokens must be integers", "use .long()")
    fut2 = fut[:, None] if fut.dim() == 1 else fut
    k = fut2.shape[1] + 1
    h = _symbols(states, owner, "states", n)
    w = _symbols(cur, owner, "current", n)
    f = _symbols(fut2, owner, "future", n)
    if n < 1:
        _fail(owner, "current", "is empty", "it needs at least one position", "pass data")
    hw, wf, hwf = _joint(h, w), _joint(w, f), _joint(h, w, f)
    s = _entropy_of_counts(hw) + _entropy_of_counts(wf) - _entropy_of_counts(w)
    s -= _entropy_of_counts(hwf)
    s = max(s, 0.0)  # exact CMI of the empirical law is >= 0; clear rounding noise
    cond = max(_entropy_of_counts(wf) - _entropy_of_counts(w), 0.0)
    bias = 0.0
    for sym in torch.unique(w):
        sel = w == sym
        bias += (len(torch.unique(h[sel])) - 1) * (len(torch.unique(f[sel])) - 1)
    bias /= 2 * n
    if vocab_size is None:
        vocab = len(torch.unique(torch.cat([cur.flatten(), fut2.flatten()])))
    else:
        vocab = check_int(vocab_size, owner, "vocab_size", 1, "pass the vocabulary size")
    return {
        "surplus": s,
        "surplus_corrected": s - bias,
        "bias_first_order": bias,
        "conditional_entropy": cond,
        "bound": (k - 1) * math.log(vocab),
        "k": k,
    }


def _head(h, unembedding, bias, owner):
    h = as_tensor(h, owner, "h")
    u = as_embeddings(unembedding, owner, "unembedding")
    if not torch.is_floating_point(h) or h.dim() not in (1, 2) or h.shape[-1] != u.shape[1]:
        _fail(
            owner,
            "h",
            f"has shape {tuple(h.shape)}",
            f"it must be (d,) or (N, d) floating with d = unembedding.shape[1] = {u.shape[1]}",
            "pass hidden states matching the unembedding (V, d)",
        )
    dtype = torch.float64 if torch.float64 in (h.dtype, u.dtype) else torch.float32
    h, u = h.to(dtype), u.to(dtype)
    logits = h @ u.T
    if bias is not None:
        c = as_tensor(bias, owner, "bias").to(dtype)
        if c.shape != (u.shape[0],):
            _fail(owner, "bias", f"has shape {tuple(c.shape)}", f"it must be ({u.shape[0]},)", "")
        logits = logits + c
    return torch.softmax(logits, dim=-1), u


def pullback_fisher_metric(h, unembedding, bias=None) -> torch.Tensor:
    """The pullback Fisher-Rao metric of a softmax head at hidden state(s) ``h``
    (Thm 6.1, Remark 6.2)::

        g*(h) = E_{W ~ p_h}[grad_h log p_h(W) grad_h log p_h(W)^T] = U^T (diag(p) - p p^T) U

    with ``p = softmax(U h + bias)``, ``U`` = ``unembedding`` (V, d). ``h`` is (d,) or
    (N, d); returns (d, d) or (N, d, d). ``KL(p_{h + e v} || p_h) = e^2/2 v^T g*(h) v +
    O(e^3)``, so ``g*`` is the Hessian of ``v -> KL(p_{h+v} || p_h)`` at 0.
    """
    p, u = _head(h, unembedding, bias, "pullback_fisher_metric")
    cov = torch.diag_embed(p) - p[..., :, None] * p[..., None, :]
    return u.T @ cov @ u


def fisher_rank(h, unembedding, bias=None, *, rtol: float = 1e-8) -> dict:
    """Numerical rank of ``g*(h)`` (singular values above ``rtol`` times the largest) and
    the bound of Prop. 6.3, ``min(d, |V| - 1)``. For (N, d) states the ranks are a list."""
    owner = "fisher_rank"
    rtol = check_positive_number(rtol, owner, "rtol", "pass e.g. rtol=1e-8")
    g = pullback_fisher_metric(h, unembedding, bias)
    s = torch.linalg.svdvals(g)
    top = s[..., :1].clamp_min(torch.finfo(s.dtype).tiny)
    ranks = (s > rtol * top).sum(-1)
    v, d = as_tensor(unembedding, owner, "unembedding").shape
    return {
        "rank": ranks.tolist() if ranks.dim() else int(ranks),
        "bound": min(d, v - 1),
    }


def predictive_kernel(next_token_probs, kernel: str = "bhattacharyya") -> torch.Tensor:
    """Predictive-similarity kernel between contexts (Def. 7.3) from their next-token
    distributions (N, V): Bhattacharyya ``sum_w sqrt(p_x(w) p_x'(w))`` or linear
    ``<p_x, p_x'>``. Returns (N, N) float64."""
    owner = "predictive_kernel"
    check_choice(kernel, owner, "kernel", KERNELS)
    p = _probabilities(next_token_probs, owner, "next_token_probs")
    if kernel == "bhattacharyya":
        q = p.sqrt()
        return q @ q.T
    return p @ p.T


def _whiten(h: torch.Tensor, eps: float) -> torch.Tensor:
    """Centre and map to identity covariance (biased, 1/N) on the span of the sample;
    directions with variance below ``eps`` times the largest are dropped."""
    h = h - h.mean(0)
    cov = h.T @ h / h.shape[0]
    values, vectors = torch.linalg.eigh(cov)
    keep = values > eps * values.max().clamp_min(torch.finfo(h.dtype).tiny)
    return h @ vectors[:, keep] / values[keep].sqrt()


def spectral_alignment(
    hidden,
    next_token_probs,
    *,
    kernel: str = "bhattacharyya",
    whiten: bool = True,
    normalized: bool = False,
    eps: float = 1e-10,
) -> float:
    """Spectral alignment score of representations with the data's predictive kernel::

        A = 1/(N(N-1)) sum_{i != j} <h~_i, h~_j> K(x_i, x_j)

    ``hidden`` (N, d): the representation of each context x_i; ``next_token_probs``
    (N, V): the *data's* next-token distribution ``P_data(. | x_i)`` (true or empirical;
    the model's own would make the statement circular); ``K`` from
    :func:`predictive_kernel`. With ``whiten=True`` ``h~`` is centred and whitened over the
    sample (``E h~ = 0``, ``E h~ h~^T = I`` on its span), the normalisation under which
    Thm 7.6 says minimising NLL maximises ``E[<h_x, h_x'> K(x, x')]`` (so ``A`` should rise
    with training; about 0 for random features). ``whiten=False`` uses raw ``h``.

    ``normalized=True`` returns instead ``tr(H~^T K H~) / (N sum_{k<=r} lambda_k)``, the
    full quadratic form (diagonal included) over its maximum among whitened
    representations of rank r, with ``lambda_k`` the top eigenvalues of the centred kernel
    ``J K J``: 1 means ``h~`` spans the top-r eigenvectors of the kernel (needs
    ``whiten=True``).
    """
    owner = "spectral_alignment"
    h = as_embeddings(hidden, owner, "hidden", min_rows=2).to(torch.float64)
    k = predictive_kernel(next_token_probs, kernel)
    if k.shape[0] != h.shape[0]:
        _fail(
            owner,
            "next_token_probs",
            f"has {k.shape[0]} rows",
            f"it needs one per row of `hidden` ({h.shape[0]})",
            "pass aligned arrays",
        )
    whiten = check_bool(whiten, owner, "whiten")
    normalized = check_bool(normalized, owner, "normalized")
    eps = check_positive_number(eps, owner, "eps", "pass e.g. eps=1e-10")
    if whiten:
        h = _whiten(h, eps)
    n = h.shape[0]
    gram = h @ h.T
    if normalized:
        if not whiten:
            _fail(owner, "normalized", "is True", "it needs whiten=True", "pass whiten=True")
        r = h.shape[1]
        j = torch.eye(n, dtype=k.dtype) - 1.0 / n
        lam = torch.linalg.eigvalsh(j @ k @ j).flip(0)[:r]
        return float((gram * k).sum() / (n * lam.sum()))
    off = ~torch.eye(n, dtype=torch.bool)
    return float((gram * k)[off].sum() / (n * (n - 1)))
