"""Spectral contrastive loss (HaoChen et al., NeurIPS 2021) against a loop reference."""

from __future__ import annotations

import math

import pytest
import torch

import contrastkit
import contrastkit.functional as F
from conftest import run_seed_script
from contrastkit.losses import SpectralContrastive


def randn(*shape, seed=0, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


# ------------------------------------------------------------------ loop reference


def ref_dot(x, y):
    return sum(x[k] * y[k] for k in range(x.shape[0]))


def ref_feature(z, similarity, variant, mu):
    if similarity == "cosine":
        z = z / torch.sqrt(ref_dot(z, z))
    if variant == "official_code":
        norm = torch.sqrt(ref_dot(z, z))
        if float(norm.detach()) >= math.sqrt(mu):
            z = z / norm * math.sqrt(mu)
    return z


def reference(views, similarity="dot", variant="paper", mu=1.0):
    """Per-row values (view-major) written from L = -2 E[f.f+] + E[(f.f')^2]: for each
    pair of views, positive pairs (i, i) and independent pairs (i, j), i != j."""
    v, n = len(views), views[0].shape[0]
    f = [[ref_feature(views[a][i], similarity, variant, mu) for i in range(n)] for a in range(v)]
    rows = []
    for a in range(v):
        for i in range(n):
            total = 0.0
            for b in range(v):
                if b == a:
                    continue
                term = -2 * ref_dot(f[a][i], f[b][i])
                for j in range(n):
                    if j != i:
                        term = term + ref_dot(f[a][i], f[b][j]) ** 2 / (n - 1)
                total = total + term
            value = total / (v - 1)
            if variant == "official_code":
                value = value / mu
            rows.append(value)
    return torch.stack(rows)


def pair_loss(z1, z2):
    """The two-view batch loss written as in the paper's estimator (one scalar)."""
    n = z1.shape[0]
    pos = sum(ref_dot(z1[i], z2[i]) for i in range(n)) / n
    neg = sum(ref_dot(z1[i], z2[j]) ** 2 for i in range(n) for j in range(n) if i != j)
    return -2 * pos + neg / (n * (n - 1))


CONFIGS = [
    dict(v=2, kwargs={}),
    dict(v=3, kwargs={}),
    dict(v=2, kwargs={"similarity": "cosine"}),
    dict(v=4, kwargs={"similarity": "cosine"}),
    dict(v=2, kwargs={"variant": "official_code", "mu": 1.0}),
    dict(v=3, kwargs={"variant": "official_code", "mu": 4.0}),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"v{c['v']}-{c['kwargs']}")
def test_matches_loop_reference_value_and_gradient(cfg):
    n, d = 5, 4
    # Scale 0.7: with mu = 1 some rows fall inside the ball and some outside.
    views = [randn(n, d, seed=k, scale=0.7).requires_grad_() for k in range(cfg["v"])]
    fast = F.spectral_contrastive(*views, reduction="none", **cfg["kwargs"])
    slow = reference(views, **cfg["kwargs"])
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    cot = randn(*fast.shape, seed=99)
    g_fast = torch.autograd.grad(fast, views, cot)
    g_slow = torch.autograd.grad(slow, views, cot)
    for a, b in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_two_view_mean_is_the_papers_estimator_and_is_symmetric():
    z1, z2 = randn(6, 3, seed=1), randn(6, 3, seed=2)
    value = F.spectral_contrastive(z1, z2)
    torch.testing.assert_close(value, pair_loss(z1, z2), rtol=1e-12, atol=0)
    torch.testing.assert_close(value, F.spectral_contrastive(z2, z1), rtol=1e-12, atol=0)


def test_v_views_is_the_mean_over_pairs_of_views():
    views = [randn(5, 3, seed=k) for k in range(3)]
    pairs = [pair_loss(views[a], views[b]) for a in range(3) for b in range(a + 1, 3)]
    torch.testing.assert_close(F.spectral_contrastive(*views), sum(pairs) / 3, rtol=1e-12, atol=0)


def test_official_code_is_the_paper_on_the_ball_with_weighted_square():
    """D(z1, z2, mu) = -2 u.u+ + mu (u.u')^2 with u = z / sqrt(mu), all rows inside."""
    mu = 9.0
    z1, z2 = randn(5, 3, seed=3, scale=0.5), randn(5, 3, seed=4, scale=0.5)
    assert bool((z1.norm(dim=1) < 3).all() and (z2.norm(dim=1) < 3).all())
    u1, u2 = z1 / 3, z2 / 3
    n = 5
    pos = (u1 * u2).sum() / n
    s = u1 @ u2.T
    neg = (s**2).sum() - (torch.diagonal(s) ** 2).sum()
    expected = -2 * pos + mu * neg / (n * (n - 1))
    value = F.spectral_contrastive(z1, z2, variant="official_code", mu=mu)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
    # With mu = 1 and every row inside the unit ball, the code computes the paper's loss.
    z1s, z2s = z1 / 10, z2 / 10
    torch.testing.assert_close(
        F.spectral_contrastive(z1s, z2s, variant="official_code"),
        F.spectral_contrastive(z1s, z2s),
        rtol=1e-12,
        atol=0,
    )


def test_invariant_to_a_common_rotation_of_the_features():
    """The loss depends on the features only through inner products f(x).f(x')."""
    q, _ = torch.linalg.qr(randn(4, 4, seed=5))
    views = [randn(6, 4, seed=k) for k in range(3)]
    rotated = [z @ q for z in views]
    torch.testing.assert_close(
        F.spectral_contrastive(*views, reduction="none"),
        F.spectral_contrastive(*rotated, reduction="none"),
        rtol=1e-10,
        atol=1e-12,
    )


def test_reductions():
    z1, z2 = randn(5, 3, seed=1), randn(5, 3, seed=2)
    per = F.spectral_contrastive(z1, z2, reduction="none")
    assert per.shape == (10,)
    torch.testing.assert_close(F.spectral_contrastive(z1, z2), per.mean(), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        F.spectral_contrastive(z1, z2, reduction="sum"), per.sum(), rtol=1e-12, atol=0
    )


def test_stacked_views_equal_separate_views():
    z = randn(5, 3, 4, seed=7)
    torch.testing.assert_close(
        F.spectral_contrastive(z), F.spectral_contrastive(z[:, 0], z[:, 1], z[:, 2])
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("kwargs", [{}, {"similarity": "cosine"}, {"variant": "official_code"}])
def test_low_precision_is_finite_and_close_to_float64(dtype, kwargs):
    z1 = randn(8, 6, seed=1, scale=0.3).to(dtype).requires_grad_()
    z2 = randn(8, 6, seed=2, scale=0.3).to(dtype).requires_grad_()
    low = F.spectral_contrastive(z1, z2, **kwargs)
    assert low.dtype == torch.float32
    low.backward()
    d1, d2 = (z.detach().double().requires_grad_() for z in (z1, z2))
    high = F.spectral_contrastive(d1, d2, **kwargs)
    high.backward()
    torch.testing.assert_close(low.double(), high, rtol=1e-5, atol=1e-6)
    for low_g, high_g in ((z1.grad, d1.grad), (z2.grad, d2.grad)):
        assert bool(torch.isfinite(low_g).all())
        torch.testing.assert_close(low_g.double(), high_g, rtol=1e-3, atol=1e-3)


def test_bad_inputs():
    z = randn(4, 3)
    with pytest.raises(ValueError, match=r"`views` holds 1 view\(s\).*at least 2"):
        F.spectral_contrastive(z)
    with pytest.raises(ValueError, match=r"`variant` is 'code'.*one of 'paper'"):
        F.spectral_contrastive(z, z, variant="code")
    with pytest.raises(ValueError, match=r"`similarity` is 'neg_sq_l2'"):
        F.spectral_contrastive(z, z, similarity="neg_sq_l2")
    with pytest.raises(ValueError, match=r"`mu` is 2.0.*variant='official_code'"):
        F.spectral_contrastive(z, z, mu=2.0)
    with pytest.raises(ValueError, match=r"`mu` is -1.*> 0"):
        F.spectral_contrastive(z, z, variant="official_code", mu=-1)
    with pytest.raises(ValueError, match=r"`views\[1\]` has shape \(5, 3\)"):
        F.spectral_contrastive(z, randn(5, 3))
    with pytest.raises(ValueError, match=r"batch of 1"):
        F.spectral_contrastive(z[:1], z[:1])
    with pytest.raises(ValueError, match=r"`reduction` is 'avg'"):
        F.spectral_contrastive(z, z, reduction="avg")
    with pytest.raises(ValueError, match=r"`mu` is 3.*official_code"):
        SpectralContrastive(mu=3)


def test_module_config_round_trip_and_registry():
    module = SpectralContrastive(similarity="cosine", variant="official_code", mu=10.0)
    rebuilt = contrastkit.create_loss("spectral", **module.get_config())
    assert rebuilt.get_config() == module.get_config()
    z1, z2 = randn(8, 6, seed=1), randn(8, 6, seed=2)
    torch.testing.assert_close(
        module(z1, z2),
        F.spectral_contrastive(z1, z2, similarity="cosine", variant="official_code", mu=10.0),
    )
    assert contrastkit.create_loss("spectral").inputs == "views"


def test_results_script_smoke(tmp_path):
    text = run_seed_script("spectral", tmp_path)
    assert "<!-- seed:spectral -->" in text and "### spectral:" in text
    assert "| spectral |" in text and "| infonce |" in text
