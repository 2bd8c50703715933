"""Markov categorical diagnostics (Zhang, arXiv 2507.19247) on tiny known distributions."""

from __future__ import annotations

import math

import pytest
import torch

from contrastkit.diagnostics import (
    categorical_entropy,
    fisher_rank,
    information_surplus,
    markov_conditional_entropy,
    predictive_kernel,
    pullback_fisher_metric,
    spectral_alignment,
    stationary_distribution,
)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------ categorical entropy


def test_entropy_of_uniform_is_log_v_and_of_one_hot_is_zero():
    assert math.isclose(categorical_entropy(torch.zeros(3, 7)), math.log(7), rel_tol=1e-6)
    assert math.isclose(categorical_entropy(torch.full((2, 5), 3.0)), math.log(5), rel_tol=1e-6)
    sharp = torch.tensor([[0.0, -1e4, -1e4], [-1e4, 0.0, -1e4]])
    assert categorical_entropy(sharp) == 0.0


def test_entropy_matches_hand_computed_values():
    p = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]], dtype=torch.float64)
    logits = p.log() + 2.0  # a shift does not change softmax
    per = categorical_entropy(logits, reduction="none")
    h0 = 1.5 * math.log(2)  # -(.5 log .5 + 2 * .25 log .25)
    h1 = -(0.1 * math.log(0.1) + 0.6 * math.log(0.6) + 0.3 * math.log(0.3))
    torch.testing.assert_close(per, torch.tensor([h0, h1], dtype=torch.float64), rtol=1e-12, atol=0)
    assert math.isclose(categorical_entropy(logits), (h0 + h1) / 2, rel_tol=1e-12)
    # Extra leading axes (batch, time) are averaged over.
    assert math.isclose(
        categorical_entropy(logits[None].repeat(3, 1, 1)), (h0 + h1) / 2, rel_tol=1e-12
    )


def test_markov_conditional_entropy_and_stationary_distribution():
    p = torch.tensor([[0.9, 0.1], [0.5, 0.5]], dtype=torch.float64)
    pi = stationary_distribution(p)
    # pi P = pi: pi_1 = 0.1 / 0.6
    torch.testing.assert_close(pi, torch.tensor([5 / 6, 1 / 6], dtype=torch.float64))
    h = markov_conditional_entropy(p)
    expected = 5 / 6 * -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) + 1 / 6 * math.log(2)
    assert math.isclose(h, expected, rel_tol=1e-12)
    # A model whose logits are log P gives categorical entropy = H(W_t | W_{t-1}) (Prop 4.2).
    contexts = torch.tensor([0] * 5 + [1])  # sampled in proportion to pi
    assert math.isclose(categorical_entropy(p.log()[contexts]), expected, rel_tol=1e-12)


# ------------------------------------------------------------------ pullback Fisher metric


def test_fisher_metric_is_the_hessian_of_kl_and_the_score_outer_product():
    v, d = 5, 3
    u, h, c = randn(v, d, seed=1), randn(d, seed=2), randn(v, seed=3)
    g = pullback_fisher_metric(h, u, c)
    p0 = torch.softmax(u @ h + c, 0)

    def kl(delta):
        logq = torch.log_softmax(u @ (h + delta) + c, 0)
        return (p0 * (p0.log() - logq)).sum()

    hessian = torch.autograd.functional.hessian(kl, torch.zeros(d, dtype=torch.float64))
    torch.testing.assert_close(g, hessian, rtol=1e-10, atol=1e-12)
    # E_{W ~ p}[s s^T] with the score s = grad_h log p_h(W), by autograd per token.
    outer = torch.zeros(d, d, dtype=torch.float64)
    for w in range(v):
        hh = h.clone().requires_grad_()
        (s,) = torch.autograd.grad(torch.log_softmax(u @ hh + c, 0)[w], hh)
        outer += p0[w] * torch.outer(s, s)
    torch.testing.assert_close(g, outer, rtol=1e-10, atol=1e-12)
    # Second-order expansion KL(p_{h + e v} || p_h) = e^2 / 2 v^T g v + O(e^3).
    vec, eps = randn(d, seed=4), 1e-4
    p_eps = torch.softmax(u @ (h + eps * vec) + c, 0)
    kl_eps = (p_eps * (p_eps.log() - p0.log())).sum()
    assert math.isclose(float(kl_eps), 0.5 * eps**2 * float(vec @ g @ vec), rel_tol=1e-3)


def test_fisher_metric_batched_equals_one_at_a_time():
    u, hs = randn(6, 4, seed=1), randn(3, 4, seed=2)
    batched = pullback_fisher_metric(hs, u)
    for i in range(3):
        torch.testing.assert_close(batched[i], pullback_fisher_metric(hs[i], u))


@pytest.mark.parametrize("v,d", [(3, 5), (4, 4), (8, 3), (2, 6)])
def test_fisher_rank_bound(v, d):
    """Prop 6.3: rank g*(h) <= min(d, |V| - 1), with equality for a generic head."""
    u, h = randn(v, d, seed=v), randn(d, seed=d)
    out = fisher_rank(h, u)
    assert out["bound"] == min(d, v - 1)
    assert out["rank"] == out["bound"]
    # A rank-1 unembedding gives rank 1 whatever d and V.
    low = fisher_rank(h, randn(v, 1, seed=1) @ randn(1, d, seed=2))
    assert low["rank"] == 1


# ------------------------------------------------------------------ information surplus


def repeat_rows(table):
    """Positions whose empirical law is exactly the table of (count, state, w, future)."""
    states, cur, fut = [], [], []
    for count, s, w, f in table:
        states += [s] * count
        cur += [w] * count
        fut += [f] * count
    return torch.tensor(states), torch.tensor(cur), torch.tensor(fut)


def test_surplus_is_zero_when_the_state_adds_nothing_beyond_w_t():
    # Future depends on W_t only; the state is independent of it given W_t.
    table = [(1, s, w, f) for s in (0, 1) for w in (0, 1) for f in (0, 1)]
    out = information_surplus(*repeat_rows(table))
    assert out["surplus"] == pytest.approx(0.0, abs=1e-12)
    assert out["conditional_entropy"] == pytest.approx(math.log(2), rel=1e-12)
    assert out["bound"] == pytest.approx(math.log(2), rel=1e-12) and out["k"] == 2


def test_surplus_equals_the_conditional_entropy_when_the_state_decides_the_future():
    # Given W_t, the state (e.g. W_{t-1} of a 2nd-order chain) fixes W_{t+1}: S = H(F | W).
    table = [(1, 0, 0, 0), (1, 1, 0, 1), (2, 0, 1, 2), (2, 1, 1, 0)]
    states, cur, fut = repeat_rows(table)
    out = information_surplus(states, cur, fut, vocab_size=3)
    assert out["surplus"] == pytest.approx(math.log(2), rel=1e-12)
    assert out["conditional_entropy"] == pytest.approx(math.log(2), rel=1e-12)
    assert out["bound"] == pytest.approx(math.log(3), rel=1e-12)


def test_surplus_hand_computed_partial_value_and_bounds_with_k3():
    # W_t fixed (one symbol); two states, future pairs (K = 3, two future tokens).
    # Joint: state 0 -> future A (3x), B (1x); state 1 -> future B (2x), C (2x).
    table = [(3, 0, 0, (0, 0)), (1, 0, 0, (0, 1)), (2, 1, 0, (0, 1)), (2, 1, 0, (1, 1))]
    states = torch.tensor(sum(([s] * c for c, s, _, _ in table), []))
    cur = torch.zeros(8, dtype=torch.long)
    fut = torch.tensor(sum(([list(f)] * c for c, _, _, f in table), []))
    out = information_surplus(states, cur, fut, vocab_size=2)

    def h(*ps):
        return -sum(p * math.log(p) for p in ps if p > 0)

    # I(S; F) = H(F) - H(F | S); H(F) over {A: 3/8, B: 3/8, C: 2/8}.
    expected = h(3 / 8, 3 / 8, 2 / 8) - 0.5 * h(3 / 4, 1 / 4) - 0.5 * h(1 / 2, 1 / 2)
    assert out["surplus"] == pytest.approx(expected, rel=1e-12)
    assert out["k"] == 3 and out["bound"] == pytest.approx(2 * math.log(2), rel=1e-12)
    assert 0 <= out["surplus"] <= out["conditional_entropy"] <= out["bound"]
    # Miller-Madow first-order bias: (|H_w| - 1)(|F_w| - 1) / 2N = (1)(2) / 16.
    assert out["bias_first_order"] == pytest.approx(2 / 16, rel=1e-12)


def test_surplus_bounds_hold_on_random_samples():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        n = 200
        states = torch.randint(0, 4, (n,), generator=g)
        cur = torch.randint(0, 3, (n,), generator=g)
        fut = torch.randint(0, 3, (n, 2), generator=g)
        out = information_surplus(states, cur, fut, vocab_size=3)
        assert 0 <= out["surplus"] <= out["conditional_entropy"] + 1e-12
        assert out["conditional_entropy"] <= out["bound"] + 1e-12
        # Independent variables: the plug-in surplus is positive, of the size of its bias.
        assert out["surplus_corrected"] < out["surplus"]


def test_hidden_state_rows_are_discretised_by_equality():
    states = torch.tensor([[0.5, 1.0], [0.5, 1.0], [2.0, 0.0], [2.0, 0.0]])
    ids = torch.tensor([0, 0, 1, 1])
    cur = torch.zeros(4, dtype=torch.long)
    fut = torch.tensor([0, 0, 1, 1])
    assert information_surplus(states, cur, fut) == information_surplus(ids, cur, fut)


# ------------------------------------------------------------------ spectral alignment


def test_kernels_hand_computed():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.25, 0.5, 0.25]], dtype=torch.float64)
    bc = predictive_kernel(p)
    assert bc[0, 0] == pytest.approx(1.0) and bc[0, 1] == pytest.approx(0.5)
    assert bc[0, 2] == pytest.approx(math.sqrt(0.125) + 0.5)
    lin = predictive_kernel(p, "linear")
    assert lin[0, 1] == pytest.approx(0.25) and lin[2, 2] == pytest.approx(0.375)


def test_spectral_alignment_loop_and_normalised_maximum():
    g = torch.Generator().manual_seed(0)
    n, v, d = 8, 5, 2
    probs = torch.softmax(torch.randn(n, v, generator=g, dtype=torch.float64) * 2, 1)
    h = randn(n, d, seed=3)
    a = spectral_alignment(h, probs, whiten=False)
    k = predictive_kernel(probs)
    loop = sum(float(h[i] @ h[j]) * float(k[i, j]) for i in range(n) for j in range(n) if i != j)
    assert a == pytest.approx(loop / (n * (n - 1)), rel=1e-12)
    # The top eigenvectors of the centred kernel reach the normalised maximum 1 ...
    j = torch.eye(n, dtype=torch.float64) - 1.0 / n
    _, vecs = torch.linalg.eigh(j @ k @ j)
    best = vecs[:, -d:] @ randn(d, d, seed=4)  # any invertible mix of them
    assert spectral_alignment(best, probs, normalized=True) == pytest.approx(1.0, rel=1e-9)
    # ... and any other representation stays below it.
    assert spectral_alignment(h, probs, normalized=True) < 1.0
    # Whitening makes the score invariant to invertible linear maps of h.
    m = randn(d, d, seed=5)
    assert spectral_alignment(h @ m, probs) == pytest.approx(spectral_alignment(h, probs), rel=1e-9)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"`next_token_probs` has rows summing to 1"):
        spectral_alignment(randn(3, 2), torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"`next_token_probs` has 2 rows.*\(3\)"):
        spectral_alignment(randn(3, 2), torch.full((2, 2), 0.5))
    with pytest.raises(ValueError, match=r"`kernel` is 'rbf'"):
        predictive_kernel(torch.full((2, 2), 0.5), "rbf")
    with pytest.raises(ValueError, match=r"`h` has shape \(4,\).*d = unembedding.shape\[1\] = 3"):
        pullback_fisher_metric(torch.zeros(4), randn(5, 3))
    with pytest.raises(ValueError, match=r"`states` has 3 rows.*\(4\)"):
        information_surplus(
            torch.zeros(3), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)
        )
    with pytest.raises(ValueError, match=r"`current` has dtype torch.float32"):
        information_surplus(torch.zeros(4), torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`logits` contains NaN"):
        categorical_entropy(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(TypeError, match=r"`logits` is a list"):
        categorical_entropy([[0.0, 1.0]])
    with pytest.raises(ValueError, match=r"`transition` has shape \(2, 3\).*square"):
        markov_conditional_entropy(torch.full((2, 3), 1 / 3))
