"""SogCLR and iSogCLR: loop references of the surrogate and of the state update (float64),
the moving average over steps, temperature clipping, eval mode, state_dict, equivalences
(fresh state = tau x DCL gradient; the released SogCLR formula), resume in the training
loop, and the results script."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch

import contrastkit
import contrastkit.functional as F
from conftest import run_seed_script
from contrastkit.losses import ISogCLR, SogCLR

N, D = 5, 4


def randn(*shape, seed=0, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


def views(seed=0, n=N, dtype=torch.float64):
    return randn(n, D, seed=seed, dtype=dtype), randn(n, D, seed=seed + 100, dtype=dtype)


# ---------------------------------------------------------------------------- loop reference


def ref_sim(a, b, similarity):
    if similarity == "neg_sq_l2":
        return -((a - b) ** 2).sum()
    if similarity == "cosine":
        a, b = a / a.norm(), b / b.norm()
    return (a * b).sum()


def ref_step(z1, z2, tau, s, seen, gamma, similarity="cosine", variant="paper"):
    """One step written from the papers' formulas with scalar loops.

    ``tau``, ``s`` (moving averages, not logs), ``seen``: per-sample python lists. Returns
    the per-anchor surrogates (autograd scalars, view-major), the new s per sample and the
    unclipped tau-gradient without rho, per sample (mean of the two views)."""
    n = z1.shape[0]
    rows = [z1[i] for i in range(n)] + [z2[i] for i in range(n)]
    losses, s_prime, grad_tau = [], [], []
    for a in range(2 * n):
        i, p = a % n, (a + n) % (2 * n)
        t = tau[i]
        negatives = [j for j in range(2 * n) if j not in (a, p)]
        pos = ref_sim(rows[a], rows[p], similarity)
        sims = {j: ref_sim(rows[a], rows[j], similarity) for j in negatives}
        if variant == "paper":
            h = {j: sims[j] - pos for j in negatives}
        else:
            h = dict(sims)
        hv = {j: float(h[j].detach()) for j in negatives}
        g = sum(math.exp(hv[j] / t) for j in negatives) / len(negatives)
        sp = (1 - gamma) * s[i] + gamma * g if seen[i] else g
        w = {j: math.exp(hv[j] / t) / sp for j in negatives}
        if variant == "paper":
            loss = sum(w[j] * h[j] for j in negatives) / len(negatives)
        else:
            loss = sum(w[j] * sims[j] for j in negatives) / len(negatives) - pos
        losses.append(loss)
        s_prime.append(sp)
        grad_tau.append(math.log(sp) - sum(w[j] * hv[j] / t for j in negatives) / len(negatives))
    new_s = [(s_prime[i] + s_prime[i + n]) / 2 for i in range(n)]
    grads = [(grad_tau[i] + grad_tau[i + n]) / 2 for i in range(n)]
    return torch.stack(losses), new_s, grads


def ref_tau_update(grads, tau, u, rho, eta, beta_u, tau_min, tau_max, clip=None):
    new_tau, new_u = [], []
    for gr, t, m in zip(grads, tau, u, strict=True):
        gr = gr + rho
        if clip is not None:
            gr = min(max(gr, -clip), clip)
        m = (1 - beta_u) * m + beta_u * gr
        new_u.append(m)
        new_tau.append(min(max(t - eta * m, tau_min), tau_max))
    return new_tau, new_u


STATE_TAU = [0.3, 0.5, 0.2, 0.7, 0.4]
STATE_S = [0.8, 1.7, 0.05, 3.0, 1.1]
STATE_SEEN = [True, False, True, True, False]

CONFIGS = [
    # (similarity, variant, gamma, per-sample tau?, state?)
    ("cosine", "paper", 0.8, True, True),
    ("cosine", "official_code", 0.8, True, True),
    ("cosine", "paper", 0.9, False, False),
    ("dot", "paper", 0.5, True, True),
    ("dot", "official_code", 1.0, True, True),
    ("neg_sq_l2", "paper", 0.3, True, True),
]


def _inputs(per_sample_tau, with_state):
    tau = STATE_TAU if per_sample_tau else [0.25] * N
    s = STATE_S if with_state else [1.0] * N
    seen = STATE_SEEN if with_state else [False] * N
    return tau, s, seen


def _state_kwargs(tau, s, seen, with_state):
    kw = {"temperature": torch.tensor(tau, dtype=torch.float64)}
    if with_state:
        kw["log_s"] = torch.tensor(s, dtype=torch.float64).log()
        kw["seen"] = torch.tensor(seen)
    return kw


@pytest.mark.parametrize("similarity, variant, gamma, per_sample_tau, with_state", CONFIGS)
def test_surrogate_matches_loop_reference(similarity, variant, gamma, per_sample_tau, with_state):
    scale = 0.3 if similarity != "cosine" else 1.0  # keep dot / -|a-b|^2 logits moderate
    z1, z2 = (x.mul(scale).requires_grad_() for x in views(seed=3))
    tau, s, seen = _inputs(per_sample_tau, with_state)
    fast = F.isogclr(
        z1,
        z2,
        gamma=gamma,
        similarity=similarity,
        variant=variant,
        reduction="none",
        **_state_kwargs(tau, s, seen, with_state),
    )
    a1, a2 = (x.detach().clone().requires_grad_() for x in (z1, z2))
    slow, _, _ = ref_step(a1, a2, tau, s, seen, gamma, similarity, variant)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    cot = randn(2 * N, seed=11)
    g_fast = torch.autograd.grad(fast, (z1, z2), cot)
    g_slow = torch.autograd.grad(slow, (a1, a2), cot)
    for a, b in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("similarity, variant, gamma, per_sample_tau, with_state", CONFIGS)
@pytest.mark.parametrize("clip", [None, 0.5])
def test_update_matches_loop_reference(
    similarity, variant, gamma, per_sample_tau, with_state, clip
):
    scale = 0.3 if similarity != "cosine" else 1.0
    z1, z2 = (x * scale for x in views(seed=4))
    tau, s, seen = _inputs(per_sample_tau, with_state)
    u = [0.2, -0.1, 0.0, 1.5, -2.0]
    hyper = {"rho": 0.7, "eta": 0.05, "beta_u": 0.6, "tau_min": 0.22, "tau_max": 0.6}
    new = F.isogclr_update(
        z1,
        z2,
        u=torch.tensor(u, dtype=torch.float64),
        gamma=gamma,
        tau_grad_clip=clip,
        similarity=similarity,
        variant=variant,
        **hyper,
        **_state_kwargs(tau, s, seen, with_state),
    )
    _, ref_s, grads = ref_step(z1, z2, tau, s, seen, gamma, similarity, variant)
    ref_tau, ref_u = ref_tau_update(grads, tau, u, clip=clip, **hyper)
    f64 = dict(dtype=torch.float64)
    torch.testing.assert_close(new.log_s.exp(), torch.tensor(ref_s, **f64), rtol=1e-10, atol=0)
    torch.testing.assert_close(new.u, torch.tensor(ref_u, **f64), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(new.temperature, torch.tensor(ref_tau, **f64), rtol=1e-10, atol=0)
    if clip is not None:
        assert bool((new.tau_grad.abs() <= clip).all())


def test_sogclr_update_matches_reference_and_isogclr_at_constant_temperature():
    z1, z2 = views(seed=5)
    s, seen = STATE_S, STATE_SEEN
    log_s, seen_t = torch.tensor(s, dtype=torch.float64).log(), torch.tensor(seen)
    new = F.sogclr_update(z1, z2, log_s=log_s, seen=seen_t, temperature=0.3, gamma=0.7)
    _, ref_s, _ = ref_step(z1, z2, [0.3] * N, s, seen, 0.7)
    torch.testing.assert_close(
        new.exp(), torch.tensor(ref_s, dtype=torch.float64), rtol=1e-10, atol=0
    )
    # iSogCLR with every tau_i equal to SogCLR's temperature is SogCLR.
    kw = {"log_s": log_s, "seen": seen_t, "gamma": 0.7, "reduction": "none"}
    torch.testing.assert_close(
        F.isogclr(z1, z2, temperature=torch.full((N,), 0.3, dtype=torch.float64), **kw),
        F.sogclr(z1, z2, temperature=0.3, **kw),
        rtol=1e-12,
        atol=0,
    )


# ---------------------------------------------------------------------------- module state


def test_module_moving_average_over_steps_matches_reference():
    """Several steps over overlapping index sets: only the batch's entries change, s is the
    running average (s = g on the first visit), tau and u follow the momentum update."""
    hyper = {"gamma": 0.7, "rho": 0.5, "eta": 0.1, "beta_u": 0.6, "tau_min": 0.1, "tau_max": 0.9}
    loss = ISogCLR(num_samples=9, temperature=0.3, **hyper).double()
    tau0 = float(torch.tensor(0.3))  # the buffers start in float32, then .double()
    s, tau, u, seen = [1.0] * 9, [tau0] * 9, [0.0] * 9, [False] * 9
    batches = [[0, 1, 2, 3], [4, 2, 7, 0], [8, 5, 1, 2], [3, 0, 6, 4]]
    for step, idx in enumerate(batches):
        z1, z2 = views(seed=20 + step, n=4)
        value = loss(z1, z2, index=torch.tensor(idx))
        bt, bs, bseen = [tau[i] for i in idx], [s[i] for i in idx], [seen[i] for i in idx]
        per, new_s, grads = ref_step(z1, z2, bt, bs, bseen, hyper["gamma"])
        torch.testing.assert_close(value, per.mean(), rtol=1e-10, atol=0)
        new_tau, new_u = ref_tau_update(
            grads,
            bt,
            [u[i] for i in idx],
            hyper["rho"],
            hyper["eta"],
            hyper["beta_u"],
            hyper["tau_min"],
            hyper["tau_max"],
        )
        for k, i in enumerate(idx):
            s[i], tau[i], u[i], seen[i] = new_s[k], new_tau[k], new_u[k], True
        f64 = dict(dtype=torch.float64)
        expected_s = [x if v else 0.0 for x, v in zip(s, seen, strict=True)]
        torch.testing.assert_close(loss.s, torch.tensor(expected_s, **f64), rtol=1e-10, atol=0)
        torch.testing.assert_close(loss.tau, torch.tensor(tau, **f64), rtol=1e-10, atol=0)
        torch.testing.assert_close(loss.u, torch.tensor(u, **f64), rtol=1e-10, atol=1e-14)
        assert loss.seen.tolist() == seen
    assert all(seen)


def test_moving_average_converges_to_g_for_fixed_embeddings():
    """With the same batch every step, s' = (1-gamma) s + gamma g converges geometrically
    to g: after k visits s - g = (1 - gamma)^(k-1) (s_1 - g) with s_1 = g, i.e. s = g."""
    z1, z2 = views(seed=6)
    loss = SogCLR(num_samples=N, temperature=0.2, gamma=0.3).double()
    idx = torch.arange(N)
    loss(z1, z2, index=idx)
    first = loss.s.clone()
    for _ in range(3):
        loss(z1, z2, index=idx)
    # Each view has its own g; the stored s is the mean of the two views' s', which for a
    # fixed batch stays the mean of the two g's.
    torch.testing.assert_close(loss.s, first, rtol=1e-12, atol=0)
    # A different batch moves s by exactly gamma of the way to its g.
    y1, y2 = views(seed=7)
    g_new = F.sogclr_update(y1, y2, temperature=0.2).exp()  # fresh state: the mean of g
    loss(y1, y2, index=idx)
    torch.testing.assert_close(loss.s, 0.7 * first + 0.3 * g_new, rtol=1e-12, atol=0)


@pytest.mark.parametrize("rho, bound", [(20.0, "tau_min"), (0.0, "tau_max")])
def test_temperatures_stay_in_range(rho, bound):
    # grad_tau = rho - KL on a fresh state, KL <= log(2N - 2): rho = 20 pushes every tau
    # down, rho = 0 pushes it up; a large eta reaches the bound in one step.
    loss = ISogCLR(num_samples=N, temperature=0.3, rho=rho, eta=50.0, tau_min=0.12, tau_max=0.8)
    z1, z2 = views(seed=8, dtype=torch.float32)
    loss(z1, z2, index=torch.arange(N))
    expected = 0.12 if bound == "tau_min" else 0.8
    torch.testing.assert_close(loss.tau, torch.full((N,), expected))
    # The reported temperature is the mean over seen samples (the start value before any).
    torch.testing.assert_close(loss.current_temperature(), torch.tensor(expected))
    assert ISogCLR(num_samples=N, temperature=0.3).current_temperature() == 0.3


def test_tau_gradient_is_rho_minus_kl_on_a_fresh_state():
    """The DRO reading of tau (paper, Sec. 3): with s' = g the tau-gradient is
    rho - KL(softmax(h_a / tau) || uniform over S_a), averaged over the two views."""
    z1, z2 = views(seed=9)
    tau = torch.tensor(STATE_TAU, dtype=torch.float64)
    new = F.isogclr_update(z1, z2, temperature=tau, rho=0.4)
    x = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sims = x @ x.T
    kl = []
    for a in range(2 * N):
        p = (a + N) % (2 * N)
        keep = [j for j in range(2 * N) if j not in (a, p)]
        q = torch.softmax((sims[a, keep] - sims[a, p]) / tau[a % N], 0)
        kl.append((q * (q * len(keep)).log()).sum())
    kl = torch.stack(kl).view(2, N).mean(0)
    torch.testing.assert_close(new.tau_grad, 0.4 - kl, rtol=1e-10, atol=1e-12)


def test_eval_mode_reads_but_does_not_change_state():
    loss = ISogCLR(num_samples=12).double()
    z1, z2 = views(seed=10)
    loss(z1, z2, index=torch.arange(N))  # some state
    loss.eval()
    before = copy.deepcopy(loss.state_dict())
    idx = torch.tensor([1, 3, 5, 7, 9])
    value = loss(z2, z1, index=idx)
    for k, v in loss.state_dict().items():
        assert torch.equal(v, before[k]), k
    expected = F.isogclr(
        z2, z1, temperature=loss.tau[idx], log_s=loss.log_s[idx], seen=loss.seen[idx]
    )
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)
    loss.train()
    loss(z2, z1, index=idx)
    assert not torch.equal(loss.tau, before["tau"])


@pytest.mark.parametrize("name", ["isogclr", "sogclr"])
def test_state_dict_and_config_round_trip(name):
    loss = contrastkit.create_loss(name, num_samples=20, variant="official_code")
    for step in range(3):
        z1, z2 = views(seed=30 + step, dtype=torch.float32)
        loss(z1, z2, index=torch.arange(step, step + N))
    clone = contrastkit.create_loss(name, **loss.get_config())
    assert clone.get_config() == loss.get_config()
    clone.load_state_dict(copy.deepcopy(loss.state_dict()))
    keys = {"log_s", "seen", "tau", "u"} if name == "isogclr" else {"log_s", "seen"}
    assert set(loss.state_dict()) == keys
    z1, z2 = views(seed=40, dtype=torch.float32)
    idx = torch.tensor([0, 2, 4, 19, 6])
    torch.testing.assert_close(clone(z1, z2, index=idx), loss(z1, z2, index=idx))
    for k, v in loss.state_dict().items():
        assert torch.equal(v, clone.state_dict()[k]), k


# ---------------------------------------------------------------------------- equivalences


@pytest.mark.parametrize("variant", ["paper", "official_code"])
def test_fresh_state_gradient_is_temperature_times_dcl(variant):
    """With s' = g (first visit) the surrogate's gradient is that of
    tau * log mean exp((s_aj - s_a+)/tau) = tau * (DCL_a - log |S|): SogCLR's objective on the
    batch; the objective's value is tau * (DCL_a - log(2N - 2))."""
    z1, z2 = (x.requires_grad_() for x in views(seed=12))
    t = 0.2
    ours = F.sogclr(z1, z2, temperature=t, variant=variant, reduction="none")
    dcl = F.dcl(z1, z2, temperature=t, reduction="none")
    cot = randn(2 * N, seed=13)
    g_ours = torch.autograd.grad(ours, (z1, z2), cot)
    g_dcl = torch.autograd.grad(t * dcl, (z1, z2), cot)
    for a, b in zip(g_ours, g_dcl, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    objective = F.global_contrastive_objective(z1, z2, temperature=t, reduction="none")
    expected = t * (dcl - math.log(2 * N - 2))
    torch.testing.assert_close(objective, expected, rtol=1e-10, atol=1e-12)
    module = SogCLR(num_samples=N, temperature=t)
    torch.testing.assert_close(module.objective(z1, z2), expected.mean(), rtol=1e-10, atol=0)


def official_sogclr(h1, h2, u, index, gamma, temperature):
    """SogCLR as the released code computes it (Optimization-AI/SogCLR, LibAUC GCLoss_v1):
    B x 2B logits [ab | aa] with the self-similarity masked by a large number, negatives
    weighted by exp(logit / T) / u, u initialised to g on the first visit (LibAUC) and stored
    as the mean of the two views. Returns the code's loss (mean of loss_a + loss_b)."""
    h1 = torch.nn.functional.normalize(h1, dim=1)
    h2 = torch.nn.functional.normalize(h2, dim=1)
    b = h1.shape[0]
    labels = torch.nn.functional.one_hot(torch.arange(b), 2 * b).to(h1.dtype)
    masks = torch.nn.functional.one_hot(torch.arange(b), b).to(h1.dtype)
    ab_aa = torch.cat([h1 @ h2.T, h1 @ h1.T - masks * 1e9], 1)
    ba_bb = torch.cat([h2 @ h1.T, h2 @ h2.T - masks * 1e9], 1)
    neg = 1 - labels
    e1 = torch.exp(ab_aa / temperature) * neg
    e2 = torch.exp(ba_bb / temperature) * neg
    if float(u[index].sum()) == 0:
        u1 = e1.sum(1, keepdim=True) / (2 * (b - 1))
        u2 = e2.sum(1, keepdim=True) / (2 * (b - 1))
    else:
        u1 = (1 - gamma) * u[index] + gamma * e1.sum(1, keepdim=True) / (2 * (b - 1))
        u2 = (1 - gamma) * u[index] + gamma * e2.sum(1, keepdim=True) / (2 * (b - 1))
    u[index] = ((u1 + u2) / 2).detach()
    w1, w2 = (e1 / u1).detach(), (e2 / u2).detach()

    def ce(lab, logits, w):
        return -(lab * (logits - (w * logits).sum(1, keepdim=True) / (2 * (b - 1)))).sum(1)

    return (ce(labels, ab_aa, w1) + ce(labels, ba_bb, w2)).mean()


def test_sogclr_official_code_variant_equals_the_released_formula():
    t, gamma = 0.3, 0.9
    module = SogCLR(num_samples=8, temperature=t, gamma=gamma, variant="official_code").double()
    u = torch.zeros(8, 1, dtype=torch.float64)
    # The released code initialises a whole batch at once (u[index].sum() == 0), so the
    # batches here are either all new or all seen.
    for step, idx in enumerate([[0, 1, 2, 3], [4, 5, 6, 7], [3, 1, 0, 2], [7, 4, 6, 5]]):
        index = torch.tensor(idx)
        z1, z2 = (x.requires_grad_() for x in views(seed=50 + step, n=4))
        a1, a2 = (x.detach().clone().requires_grad_() for x in (z1, z2))
        ours = module(z1, z2, index=index)
        theirs = official_sogclr(a1, a2, u, index, gamma, t)
        # The code sums the two views' losses per sample; contrastkit averages all anchors.
        torch.testing.assert_close(2 * ours, theirs, rtol=1e-10, atol=1e-12)
        g_ours = torch.autograd.grad(2 * ours, (z1, z2))
        g_theirs = torch.autograd.grad(theirs, (a1, a2))
        for a, b in zip(g_ours, g_theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(module.s, u.flatten(), rtol=1e-10, atol=0)


def test_variants_agree_on_a_fresh_state_and_differ_with_state():
    z1, z2 = views(seed=14)
    kw = {"temperature": torch.tensor(STATE_TAU, dtype=torch.float64), "reduction": "none"}
    torch.testing.assert_close(
        F.isogclr(z1, z2, variant="paper", **kw),
        F.isogclr(z1, z2, variant="official_code", **kw),
        rtol=1e-10,
        atol=1e-12,
    )
    log_s = torch.tensor(STATE_S, dtype=torch.float64).log()
    state = {"log_s": log_s, "seen": torch.ones(N, dtype=torch.bool)}
    paper = F.isogclr(z1, z2, variant="paper", **kw, **state)
    code = F.isogclr(z1, z2, variant="official_code", **kw, **state)
    assert not torch.allclose(paper, code)


# ---------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs_close_to_float64(dtype):
    z1, z2 = (x.to(dtype).requires_grad_() for x in views(seed=15, dtype=torch.float32))
    tau = torch.tensor(STATE_TAU)
    state = {"log_s": torch.tensor(STATE_S).log(), "seen": torch.tensor(STATE_SEEN)}
    value = F.isogclr(z1, z2, temperature=tau, **state)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    g = torch.autograd.grad(value, (z1, z2))
    r1, r2 = (x.detach().double().requires_grad_() for x in (z1, z2))
    ref = F.isogclr(r1, r2, temperature=tau.double(), **state)
    g_ref = torch.autograd.grad(ref, (r1, r2))
    torch.testing.assert_close(value.double(), ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(g, g_ref, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("variant", ["paper", "official_code"])
def test_temperature_001_is_finite_in_float32(variant):
    # exp(+-2 / 0.01) = e^200 overflows float32 and e^-200 underflows: the log domain keeps
    # every value, weight and the state finite.
    z1, z2 = (x.requires_grad_() for x in views(seed=16, dtype=torch.float32))
    loss = ISogCLR(num_samples=N, temperature=0.05, tau_min=0.01, variant=variant)
    loss.tau.fill_(0.01)
    for _ in range(2):
        value = loss(z1, z2, index=torch.arange(N))
        assert torch.isfinite(value)
        (g,) = torch.autograd.grad(value, z1)
        assert torch.isfinite(g).all()
    assert torch.isfinite(loss.log_s).all() and torch.isfinite(loss.u).all()


def test_reductions():
    z1, z2 = views(seed=17)
    per = F.isogclr(z1, z2, reduction="none")
    assert per.shape == (2 * N,)
    torch.testing.assert_close(F.isogclr(z1, z2), per.mean())
    torch.testing.assert_close(F.isogclr(z1, z2, reduction="sum"), per.sum())
    loss = SogCLR(num_samples=N, reduction="none").double()
    assert loss(z1, z2, index=torch.arange(N)).shape == (2 * N,)
    stacked = torch.stack([z1, z2], 1)  # (N, 2, D) layout
    torch.testing.assert_close(F.sogclr(stacked), F.sogclr(z1, z2))


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "index, kind, pattern",
    [
        (None, ValueError, r"`index` is None.*Fix: call loss\(z1, z2, index=idx\)"),
        (torch.arange(N).float(), TypeError, r"`index` has dtype torch.float32.*integer"),
        (torch.arange(N - 1), ValueError, r"`index` has shape \(4,\).*one dataset index"),
        (torch.tensor([0, 1, 2, 3, 12]), ValueError, r"`index` holds values \[12\] outside"),
        (torch.tensor([0, -1, 2, 3, 4]), ValueError, r"`index` holds values \[-1\] outside"),
        (torch.tensor([0, 1, 1, 3, 3]), ValueError, r"`index` repeats the values \[1, 3\]"),
    ],
)
def test_bad_index(index, kind, pattern):
    loss = ISogCLR(num_samples=10)
    z1, z2 = views(dtype=torch.float32)
    with pytest.raises(kind, match=pattern):
        loss(z1, z2, index=index)


def test_bad_arguments():
    z1, z2 = views(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"`views` holds 3 views.*exactly two views"):
        F.isogclr(z1, z2, z1)
    with pytest.raises(ValueError, match=r"`temperature` has invalid entries at \[1\]"):
        F.isogclr(z1, z2, temperature=torch.tensor([0.1, -0.1, 0.1, 0.1, 0.1]))
    with pytest.raises(ValueError, match=r"`temperature` has shape \(3,\)"):
        F.isogclr(z1, z2, temperature=torch.ones(3))
    with pytest.raises(ValueError, match=r"`log_s` is None while `seen`"):
        F.isogclr(z1, z2, seen=torch.ones(N, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"`gamma` is 0.0; it must lie in \(0, 1\]"):
        F.sogclr(z1, z2, gamma=0.0)
    with pytest.raises(ValueError, match=r"`variant` is 'code'"):
        SogCLR(variant="code")
    with pytest.raises(ValueError, match=r"`num_samples` is 1; it must be an int >= 2"):
        ISogCLR(num_samples=1)
    with pytest.raises(ValueError, match=r"`tau_min` is 0.5 > tau_max=0.2"):
        ISogCLR(tau_min=0.5, tau_max=0.2, temperature=0.3)
    with pytest.raises(ValueError, match=r"`temperature` is 0.01; the initial temperature"):
        ISogCLR(temperature=0.01)
    with pytest.raises(ValueError, match=r"`temperature` is -1.*> 0"):
        SogCLR(temperature=-1)


# ---------------------------------------------------------------------------- training loop


def test_training_loop_resume_is_exact(tmp_path):
    """Two epochs straight, and one epoch + resume from its checkpoint, reach the same
    per-sample state (s, seen, tau, u) and the same history."""
    from contrastkit.train import TrainConfig, apply_overrides, load_checkpoint, train

    base = {
        "epochs": 2,
        "batch_size": 64,
        "eval_every": 1,
        "progress": False,
        "threads": 1,
        "data": {"name": "digits", "subset": 300},
        "model": {"width": 64, "feature_dim": 32, "proj_hidden": 32, "proj_dim": 16},
        "eval": {"linear_probe": False},
        "loss": {"name": "isogclr", "params": {"rho": 0.3}},
    }

    def cfg(**over):
        return TrainConfig.from_dict(apply_overrides(base, over))

    straight = train(cfg(out=str(tmp_path / "a")))
    assert straight.loss_fn.num_samples == 240  # filled by the loop: the training split
    train(cfg(epochs=1, out=str(tmp_path / "b")))
    ckpt = tmp_path / "b" / "checkpoint.pt"
    assert load_checkpoint(ckpt)["epoch"] == 1
    assert bool(load_checkpoint(ckpt)["loss"]["seen"].any())
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    resumed = train(cfg(out=str(tmp_path / "b"), resume=str(ckpt)))
    for k, v in straight.loss_fn.state_dict().items():
        assert torch.equal(v, resumed.loss_fn.state_dict()[k]), k
    drop = ("time",)
    strip = [{k: v for k, v in h.items() if k not in drop} for h in straight.history]
    assert strip == [{k: v for k, v in h.items() if k not in drop} for h in resumed.history]
    # Temperatures moved away from their start and stayed in range.
    tau = straight.loss_fn.tau
    assert not torch.all(tau == 0.1) and bool(((tau >= 0.05) & (tau <= 1.0)).all())


# ---------------------------------------------------------------------------- results script


def test_results_script_smoke(tmp_path):
    text = run_seed_script("isogclr", tmp_path)
    assert "<!-- seed:isogclr -->" in text and "<!-- /seed:isogclr -->" in text
    assert "### isogclr:" in text and "| isogclr" in text and "Smoke run" in text
