"""MIM / cMIM (contrastkit.methods.cmim): each log density and the A-MIM loss against
independently written formulas (float64 value and gradient), the contrastive term against
a Python loop, the full CMIM loss recomputed by hand from the same noise, informative
embeddings against a manual decoder pass, shapes, bad inputs, determinism, and the
results script."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import run_seed_script
from contrastkit.methods.cmim import (
    CMIM,
    MIM,
    GaussianMLPEncoder,
    MLPDecoder,
    a_mim_loss,
    bernoulli_log_prob,
    cmim_contrastive,
    gaussian_log_prob,
    informative_embeddings,
)

N, D = 5, 3


def randn(*shape, seed=0, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


def rand(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=dtype)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return CMIM((1, 4, 4), latent_dim=3, hidden=(8, 6), **kw).double()


# ---------------------------------------------------------------------------- log densities


def ref_gaussian(z, mean, logvar):
    total = 0.0
    for d in range(len(z)):
        var = math.exp(logvar[d])
        total += -0.5 * math.log(2 * math.pi * var) - (z[d] - mean[d]) ** 2 / (2 * var)
    return total


def test_gaussian_log_prob_matches_scalar_formula_and_distributions():
    z, mean, logvar = randn(N, D, seed=1), randn(N, D, seed=2), randn(N, D, seed=3)
    got = gaussian_log_prob(z, mean, logvar)
    want = [ref_gaussian(z[i].tolist(), mean[i].tolist(), logvar[i].tolist()) for i in range(N)]
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), atol=1e-12, rtol=0)
    normal = torch.distributions.Normal(mean, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    assert torch.allclose(got, normal, atol=1e-12, rtol=0)
    unit = gaussian_log_prob(z, torch.zeros_like(z))
    want_unit = [ref_gaussian(z[i].tolist(), [0.0] * D, [0.0] * D) for i in range(N)]
    assert torch.allclose(unit, torch.tensor(want_unit, dtype=torch.float64), atol=1e-12, rtol=0)


def test_gaussian_log_prob_gradient_closed_form():
    z = randn(N, D, seed=1).requires_grad_()
    mean, logvar = randn(N, D, seed=2), randn(N, D, seed=3)
    gaussian_log_prob(z, mean, logvar).sum().backward()
    # d/dz log N(z; m, v) = -(z - m) / v
    assert torch.allclose(z.grad, -(z.detach() - mean) / torch.exp(logvar), atol=1e-12, rtol=0)


def test_bernoulli_log_prob_matches_loop_with_soft_targets():
    x, logits = rand(N, 2, 2, seed=4), randn(N, 2, 2, seed=5, scale=3.0)
    got = bernoulli_log_prob(x, logits)
    for i in range(N):
        want = 0.0
        for xv, lv in zip(x[i].flatten().tolist(), logits[i].flatten().tolist(), strict=True):
            p = 1.0 / (1.0 + math.exp(-lv))
            want += xv * math.log(p) + (1.0 - xv) * math.log(1.0 - p)
        assert abs(float(got[i]) - want) < 1e-12


def test_bernoulli_log_prob_gradient_and_extreme_logits():
    x = rand(N, 4, seed=4)
    logits = randn(N, 4, seed=5, scale=3.0).requires_grad_()
    bernoulli_log_prob(x, logits).sum().backward()
    # d/dl [x log s(l) + (1 - x) log(1 - s(l))] = x - s(l)
    assert torch.allclose(logits.grad, x - torch.sigmoid(logits.detach()), atol=1e-12, rtol=0)
    big = torch.tensor([[200.0, -200.0]], dtype=torch.float32)
    value = bernoulli_log_prob(torch.tensor([[1.0, 0.0]]), big)
    assert torch.isfinite(value).all() and abs(float(value)) < 1e-6


# ---------------------------------------------------------------------------- A-MIM


def test_a_mim_loss_value_and_gradient():
    a, b, c = (randn(N, seed=s).requires_grad_() for s in (6, 7, 8))
    loss = a_mim_loss(a, b, c, beta=0.7)
    want = sum(-(a[i] + b[i] + 0.7 * c[i]) / 2 for i in range(N)) / N
    assert torch.allclose(loss, want, atol=1e-12, rtol=0)
    loss.backward()
    assert torch.allclose(a.grad, torch.full((N,), -0.5 / N, dtype=torch.float64))
    assert torch.allclose(c.grad, torch.full((N,), -0.35 / N, dtype=torch.float64))
    per = a_mim_loss(a, b, c, reduction="none")
    assert per.shape == (N,)
    assert torch.allclose(per, -(a + b + c).detach() / 2, atol=1e-12, rtol=0)
    assert torch.allclose(a_mim_loss(a, b, c, reduction="sum"), per.sum())


# ---------------------------------------------------------------------------- contrastive


def unit_list(row):
    norm = math.sqrt(sum(v * v for v in row))
    return [v / norm for v in row]


def ref_contrastive(z, keys, t):
    z = [unit_list(row) for row in z.tolist()]
    k = z if keys is None else [unit_list(row) for row in keys.tolist()]
    out = []
    for i in range(len(z)):
        s = [sum(a * b for a, b in zip(z[i], k[j], strict=True)) / t for j in range(len(k))]
        m = max(s)
        out.append(-(s[i] - m - math.log(sum(math.exp(v - m) for v in s))))
    return out


@pytest.mark.parametrize("use_keys", [False, True])
@pytest.mark.parametrize("t", [0.05, 0.5])
def test_contrastive_matches_loop(use_keys, t):
    z, mu = randn(N, D, seed=9), randn(N, D, seed=10)
    keys = mu if use_keys else None
    got = cmim_contrastive(z, keys, temperature=t, reduction="none")
    want = torch.tensor(ref_contrastive(z, keys, t), dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-10, rtol=0)
    assert torch.allclose(cmim_contrastive(z, keys, temperature=t), want.mean(), atol=1e-10)


def test_contrastive_self_is_logsumexp_minus_inverse_temperature():
    z, t = randn(N, D, seed=11), 0.2
    u = z / z.norm(dim=1, keepdim=True)
    closed = torch.logsumexp(u @ u.T / t, dim=1) - 1 / t
    assert torch.allclose(cmim_contrastive(z, temperature=t, reduction="none"), closed, atol=1e-12)


@pytest.mark.parametrize("use_keys", [False, True])
def test_contrastive_gradient_gradcheck(use_keys):
    z = randn(N, D, seed=12).requires_grad_()
    mu = randn(N, D, seed=13).requires_grad_()
    if use_keys:
        assert torch.autograd.gradcheck(
            lambda a, b: cmim_contrastive(a, b, temperature=0.3), (z, mu)
        )
    else:
        assert torch.autograd.gradcheck(lambda a: cmim_contrastive(a, temperature=0.3), (z,))


def test_contrastive_gradient_matches_loop_reference():
    z0, t = randn(N, D, seed=14), 0.3
    z = z0.clone().requires_grad_()
    cmim_contrastive(z, temperature=t).backward()
    zr = z0.clone().requires_grad_()
    u = [zr[i] / zr[i].norm() for i in range(N)]
    total = 0
    for i in range(N):
        s = torch.stack([u[i] @ u[j] / t for j in range(N)])
        total = total + (torch.logsumexp(s, 0) - s[i])
    (total / N).backward()
    assert torch.allclose(z.grad, zr.grad, atol=1e-12, rtol=0)


def test_contrastive_prefers_spread_codes_and_half_precision():
    close = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.98, -0.1]])
    spread = torch.tensor([[1.0, 0.0], [-0.5, 0.87], [-0.5, -0.87]])
    assert cmim_contrastive(spread) < cmim_contrastive(close)
    half = cmim_contrastive(close.half())
    assert half.dtype == torch.float32
    assert torch.allclose(half, cmim_contrastive(close.half().float()))


# ---------------------------------------------------------------------------- full model


def hand_cmim_loss(model, x, eps, weight):
    """The cMIM loss recomputed from the model's layers with torch.distributions."""
    flat = x.reshape(x.shape[0], -1)
    h = model.encoder.head(model.encoder.body(flat))
    mu, logvar = h[:, :3], h[:, 3:].clamp(-6.0, 6.0)
    z = mu + torch.exp(logvar / 2) * eps
    logits = model.decoder.net(z)
    p = torch.sigmoid(logits)
    log_px = (flat * torch.log(p) + (1 - flat) * torch.log(1 - p)).sum(1)
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    log_qz = torch.distributions.Normal(mu, torch.exp(logvar / 2)).log_prob(z).sum(1)
    mim = (-(log_px + log_pz + log_qz) / 2).mean()
    con = torch.tensor(ref_contrastive(z.detach(), None, 0.1), dtype=torch.float64).mean()
    return mim, con, mim + weight * con


@pytest.mark.parametrize("weight", [0.0, 1.0, 2.5])
def test_cmim_loss_matches_hand_computation(weight):
    model = tiny_model(contrastive_weight=weight)
    x = rand(6, 1, 4, 4, seed=15)
    out = model.loss(x, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(6, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mim, con, total = hand_cmim_loss(model, x, eps, weight)
    assert torch.allclose(out["mim"], mim, atol=1e-10, rtol=0)
    assert torch.allclose(out["contrastive"], con, atol=1e-10, rtol=0)
    assert torch.allclose(out["loss"], total, atol=1e-10, rtol=0)


def test_cmim_gradient_matches_hand_computation():
    model = tiny_model()
    x = rand(6, 1, 4, 4, seed=16)
    model.loss(x, generator=torch.Generator().manual_seed(4))["loss"].backward()
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eps = torch.randn(6, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    flat = x.reshape(6, -1)
    h = model.encoder.head(model.encoder.body(flat))
    mu, logvar = h[:, :3], h[:, 3:]
    z = mu + torch.exp(logvar / 2) * eps
    mim, _, _ = hand_cmim_loss(model, x, eps, 0.0)
    u = z / z.norm(dim=1, keepdim=True)
    con = sum(torch.logsumexp(u[i] @ u.T / 0.1, 0) - 1 / 0.1 for i in range(6)) / 6
    (mim + con).backward()
    for g, p in zip(got, model.parameters(), strict=True):
        assert torch.allclose(g, p.grad, atol=1e-10, rtol=0)


def test_mean_positive_uses_encoder_means():
    model = tiny_model(positive="mean")
    x = rand(6, 1, 4, 4, seed=17)
    out = model.loss(x, generator=torch.Generator().manual_seed(5))
    want = ref_contrastive(out["z"].detach(), out["mu"].detach(), 0.1)
    assert abs(out["contrastive"].item() - sum(want) / 6) < 1e-10


def test_mim_is_cmim_without_contrastive_term():
    x = rand(6, 1, 4, 4, seed=18)
    torch.manual_seed(0)
    mim = MIM((1, 4, 4), latent_dim=3, hidden=(8, 6)).double()
    cm = tiny_model(0, contrastive_weight=0.0)
    a = mim.loss(x, torch.Generator().manual_seed(1))
    b = cm.loss(x, torch.Generator().manual_seed(1))
    assert torch.equal(a["loss"], a["mim"]) and torch.equal(a["loss"], b["loss"])


def test_gaussian_likelihood():
    model = tiny_model(likelihood="gaussian", x_std=0.5)
    x = randn(6, 16, seed=19)  # any real values, flat input accepted
    out = model.loss(x, torch.Generator().manual_seed(2))
    want = torch.distributions.Normal(out["x_param"], 0.5).log_prob(x).sum(1).mean()
    assert torch.allclose(out["log_px_given_z"], want, atol=1e-10, rtol=0)


def test_shapes_and_determinism():
    model = tiny_model()
    x = rand(7, 1, 4, 4, seed=20)
    out = model.loss(x, torch.Generator().manual_seed(0))
    assert out["loss"].dim() == 0 and out["z"].shape == (7, 3) and out["x_param"].shape == (7, 16)
    again = model.loss(x, torch.Generator().manual_seed(0))
    other = model.loss(x, torch.Generator().manual_seed(1))
    assert torch.equal(out["loss"], again["loss"])
    assert not torch.equal(out["loss"], other["loss"])
    assert model.reconstruct(x).shape == x.shape
    torch.manual_seed(5)
    a = CMIM((1, 4, 4), latent_dim=3, hidden=(8,))
    torch.manual_seed(5)
    b = CMIM((1, 4, 4), latent_dim=3, hidden=(8,))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_logvar_is_clamped():
    enc = GaussianMLPEncoder(4, (5,), 2, min_logvar=-1.0, max_logvar=1.0)
    with torch.no_grad():
        enc.head.bias.fill_(50.0)
    _, logvar = enc(torch.zeros(3, 4))
    assert torch.equal(logvar, torch.ones(3, 2))


def test_training_reduces_loss():
    torch.manual_seed(0)
    model = CMIM((1, 4, 4), latent_dim=2, hidden=(16,))
    x = (torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    first = model.loss(x, g)["loss"].item()
    for _ in range(100):
        opt.zero_grad()
        model.loss(x, g)["loss"].backward()
        opt.step()
    assert model.loss(x, g)["loss"].item() < first - 1.0


# ---------------------------------------------------------------------------- informative embeddings


def test_informative_embeddings_match_manual_decoder_pass():
    model = tiny_model()
    model.train()
    x = rand(5, 1, 4, 4, seed=21)
    got = informative_embeddings(model, x)
    mu = model.encoder(x)[0]
    h1 = torch.relu(model.decoder.net[0](mu))
    h2 = torch.relu(model.decoder.net[2](h1))
    assert torch.allclose(got, torch.cat([mu, h1, h2], 1), atol=1e-12, rtol=0)
    assert got.shape == (5, 3 + 8 + 6)
    assert model.training  # training flag restored
    no_latent = informative_embeddings(model, x, include_latent=False)
    assert torch.allclose(no_latent, torch.cat([h1, h2], 1), atol=1e-12, rtol=0)
    last = informative_embeddings(model, x, hidden_modules=[model.decoder.net[3]])
    assert torch.allclose(last, torch.cat([mu, h2], 1), atol=1e-12, rtol=0)


def test_informative_embeddings_any_encoder_decoder():
    class AE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(6, 2)
            self.decoder = nn.Sequential(nn.Linear(2, 4), nn.GELU(), nn.Linear(4, 6))

        def encode(self, x):
            return self.enc(x)

    torch.manual_seed(0)
    ae = AE()
    x = torch.randn(3, 6)
    got = informative_embeddings(ae, x)
    z = ae.enc(x)
    want = torch.cat([z, torch.nn.functional.gelu(ae.decoder[0](z))], 1)
    assert torch.allclose(got, want, atol=1e-6) and not got.requires_grad


# ---------------------------------------------------------------------------- bad inputs


def test_bad_inputs():
    z = randn(N, D)
    with pytest.raises(ValueError, match="temperature.*> 0"):
        cmim_contrastive(z, temperature=0.0)
    with pytest.raises(ValueError, match="batch of 1"):
        cmim_contrastive(z[:1])
    with pytest.raises(ValueError, match="`keys` has shape"):
        cmim_contrastive(z, randn(N, D + 1))
    with pytest.raises(ValueError, match="all-zero rows"):
        cmim_contrastive(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="NaN or inf"):
        cmim_contrastive(torch.tensor([[1.0, float("nan")], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="reduction"):
        cmim_contrastive(z, reduction="avg")
    with pytest.raises(ValueError, match=r"`x` has values in .*\[0, 1\]"):
        bernoulli_log_prob(torch.full((2, 3), 2.0), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="`log_pz` has shape"):
        a_mim_loss(randn(N), randn(N, 2), randn(N))
    with pytest.raises(ValueError, match="beta"):
        a_mim_loss(randn(N), randn(N), randn(N), beta=0)
    model = tiny_model()
    with pytest.raises(ValueError, match=r"`x` has shape \(4, 1, 5, 5\)"):
        model.loss(torch.rand(4, 1, 5, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="`x` has values"):
        model.loss(torch.full((4, 1, 4, 4), 3.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="batch of 1"):
        model.loss(torch.rand(1, 1, 4, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="`x` has dtype torch.int64"):
        model.loss(torch.ones(4, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="`positive` is 'other'"):
        CMIM(positive="other")
    with pytest.raises(ValueError, match="`likelihood` is 'poisson'"):
        CMIM(likelihood="poisson")
    with pytest.raises(ValueError, match="contrastive_weight"):
        CMIM(contrastive_weight=-1.0)
    with pytest.raises(TypeError, match="MIM has no contrastive term"):
        MIM(contrastive_weight=1.0)
    with pytest.raises(TypeError, match="`hidden` is 256"):
        MLPDecoder(hidden=256)
    with pytest.raises(ValueError, match="min_logvar must be below"):
        GaussianMLPEncoder(min_logvar=1.0, max_logvar=0.0)
    with pytest.raises(TypeError, match="without `encode`"):
        informative_embeddings(nn.Linear(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="`hidden_modules` is empty"):
        informative_embeddings(model, torch.rand(2, 16), hidden_modules=[], include_latent=False)


# ---------------------------------------------------------------------------- results script


def test_results_script_smoke(tmp_path):
    text = run_seed_script("cmim", tmp_path)
    assert "<!-- seed:cmim -->" in text and "<!-- /seed:cmim -->" in text
    assert "### cmim:" in text and "| cmim" in text and "Smoke run" in text
