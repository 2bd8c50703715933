"""M3CoL (Kumar, Singhal et al., TMLR 2025): M3Co mixup contrastive and soft-CLIP phases
against loop references that share the random draws."""

from __future__ import annotations

import math

import pytest
import torch

import contrastkit
import contrastkit.functional as F
from conftest import run_seed_script
from contrastkit.losses import M3CoL
from contrastkit.losses.m3col import MixDraw, m3co_draw, mixup_targets


def randn(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


# ------------------------------------------------------------------ loop reference


def dot(x, y):
    return sum(x[k] * y[k] for k in range(x.shape[0]))


def cos(x, y):
    return dot(x, y) / torch.sqrt(dot(x, x) * dot(y, y))


def log_softmax_at(values, k):
    m = max(float(v.detach()) for v in values)
    return values[k] - (m + torch.log(sum(torch.exp(v - m) for v in values)))


def target(draw, i, j, variant):
    """Soft target of mixed row i at fixed column j."""
    lam, p = float(draw.lam[i]), int(draw.perm[i])
    if variant == "official_code":  # probs = diag(lam); probs[i, perm[i]] = 1 - lam (overwrite)
        if j == p:
            return 1 - lam
        return lam if j == i else 0.0
    # The paper's two-term target: lam_i on partner i plus (1 - lam_i) on partner perm(i).
    return (lam if j == i else 0.0) + ((1 - lam) if j == p else 0.0)


def ref_mixco_direction(x, y, draw, t, variant, bidirectional):
    n = x.shape[0]
    mixed = [
        float(draw.lam[i]) * x[i] + (1 - float(draw.lam[i])) * x[int(draw.perm[i])]
        for i in range(n)
    ]
    logits = [[cos(mixed[i], y[j]) / t for j in range(n)] for i in range(n)]
    rows = []
    for i in range(n):
        rows.append(
            -sum(target(draw, i, j, variant) * log_softmax_at(logits[i], j) for j in range(n))
        )
    if not bidirectional:
        return torch.stack(rows)
    cols = []
    for j in range(n):
        column = [logits[i][j] for i in range(n)]
        cols.append(-sum(target(draw, i, j, variant) * log_softmax_at(column, i) for i in range(n)))
    return 0.5 * (torch.stack(rows) + torch.stack(cols))


def ref_soft_clip(p, q, t):
    n = p.shape[0]
    logits = [[cos(p[i], q[j]) / t for j in range(n)] for i in range(n)]
    self_sim = [[cos(q[i], q[j]) / t for j in range(n)] for i in range(n)]
    tgt = [[torch.exp(log_softmax_at(self_sim[i], j)) for j in range(n)] for i in range(n)]
    forward = [-sum(tgt[i][j] * log_softmax_at(logits[i], j) for j in range(n)) for i in range(n)]
    backward = []
    for j in range(n):
        column = [logits[i][j] for i in range(n)]
        backward.append(-sum(tgt[j][i] * log_softmax_at(column, i) for i in range(n)))
    return 0.5 * (torch.stack(forward) + torch.stack(backward))


def reference(a, b, draws, phase="mixco", t=0.1, t_soft=0.125, variant="paper", bidir=True):
    if phase == "soft_clip":
        return ref_soft_clip(a, b, t_soft) + ref_soft_clip(b, a, t_soft)
    return ref_mixco_direction(a, b, draws[0], t, variant, bidir) + ref_mixco_direction(
        b, a, draws[1], t, variant, bidir
    )


def draw_with_fixed_point(n, seed):
    """A draw whose permutation fixes row 0 and whose row 0 is mixed (lam < 1), and whose
    row 1 is a fixed point left unmixed (lam = 1)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.cat([torch.tensor([0, 1]), 2 + torch.randperm(n - 2, generator=g)])
    lam = torch.rand(n, generator=g, dtype=torch.float64)
    lam[1] = 1.0
    return MixDraw(perm, lam)


N, D = 6, 5
CONFIGS = [
    dict(phase="mixco", variant="paper", bidir=True, t=0.1),
    dict(phase="mixco", variant="paper", bidir=False, t=0.3),
    dict(phase="mixco", variant="official_code", bidir=True, t=0.1),
    dict(phase="mixco", variant="paper", bidir=True, t=0.01),
    dict(phase="soft_clip", t_soft=0.125),
    dict(phase="soft_clip", t_soft=0.5),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_matches_loop_reference_value_and_gradient(cfg):
    a = randn(N, D, seed=1).requires_grad_()
    b = randn(N, D, seed=2).requires_grad_()
    draws = (draw_with_fixed_point(N, 3), m3co_draw(N, generator=torch.Generator().manual_seed(4)))
    kwargs = dict(phase=cfg["phase"], draws=draws, reduction="none")
    if cfg["phase"] == "mixco":
        kwargs.update(temperature=cfg["t"], variant=cfg["variant"], bidirectional=cfg["bidir"])
        slow = reference(a, b, draws, t=cfg["t"], variant=cfg["variant"], bidir=cfg["bidir"])
    else:
        kwargs.update(soft_clip_temperature=cfg["t_soft"])
        slow = reference(a, b, draws, phase="soft_clip", t_soft=cfg["t_soft"])
    fast = F.m3col(a, b, **kwargs)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    cot = randn(N, seed=9)
    g_fast = torch.autograd.grad(fast, (a, b), cot)
    g_slow = torch.autograd.grad(slow, (a, b), cot)
    for x, y in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)


def test_generator_draws_are_the_ones_used_and_reproducible():
    a, b = randn(N, D, seed=1), randn(N, D, seed=2)
    g = torch.Generator().manual_seed(11)
    draws = (m3co_draw(N, generator=g), m3co_draw(N, generator=g))
    from_generator = F.m3col(a, b, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(from_generator, F.m3col(a, b, draws=draws), rtol=0, atol=0)
    torch.testing.assert_close(from_generator, reference(a, b, draws).mean(), rtol=1e-10, atol=0)


def test_draw_statistics_follow_beta_and_s_thresh():
    g = torch.Generator().manual_seed(0)
    lam = torch.cat([m3co_draw(400, beta=0.15, s_thresh=0.5, generator=g).lam for _ in range(25)])
    mixed = lam[lam < 1]
    # About half the rows are selected (binomial sd ~ 0.007 of 10000).
    assert abs(mixed.numel() / lam.numel() - 0.5) < 0.03
    # Beta(0.15, 0.15) is symmetric with variance 1 / (4 (2 * 0.15 + 1)) = 0.1923.
    assert abs(float(mixed.mean()) - 0.5) < 0.02
    assert abs(float(mixed.var()) - 1 / (4 * 1.3)) < 0.01


def test_fixed_target_rows_sum_to_one_and_official_rows_do_not():
    draw = draw_with_fixed_point(N, 3)
    fixed = mixup_targets(draw, "paper")
    torch.testing.assert_close(fixed.sum(1), torch.ones(N, dtype=torch.float64))
    official = mixup_targets(draw, "official_code")
    sums = official.sum(1)
    assert math.isclose(float(sums[0]), 1 - float(draw.lam[0]), rel_tol=1e-12)
    assert float(sums[1]) == 0.0  # unselected fixed point: the row is all zeros
    torch.testing.assert_close(sums[2:], torch.ones(N - 2, dtype=torch.float64))
    # Without fixed points the two constructions agree.
    free = MixDraw(torch.tensor([1, 2, 3, 4, 5, 0]), draw.lam)
    torch.testing.assert_close(mixup_targets(free, "paper"), mixup_targets(free, "official_code"))


def test_no_mixing_is_clip_in_both_directions_twice():
    """lam = 1 everywhere: the mixed embeddings are the originals and the targets the
    identity, so M3Co = 2 x symmetric CLIP at the same temperature."""
    a, b = randn(N, D, seed=1), randn(N, D, seed=2)
    draw = MixDraw(
        torch.randperm(N, generator=torch.Generator().manual_seed(0)),
        torch.ones(N, dtype=torch.float64),
    )
    value = F.m3col(a, b, draws=(draw, draw), temperature=0.2)
    torch.testing.assert_close(value, 2 * F.clip(a, b, temperature=0.2), rtol=1e-12, atol=0)


def test_soft_clip_with_sharp_targets_tends_to_clip():
    """As the target-modality self-similarity becomes one-hot (orthogonal rows), the
    soft-CLIP loss is 2 x CLIP."""
    a = randn(4, 4, seed=1)
    b = torch.eye(4, dtype=torch.float64)
    value = F.m3col(a, b, phase="soft_clip", soft_clip_temperature=0.01)
    torch.testing.assert_close(value, 2 * F.clip(a, b, temperature=0.01), rtol=1e-10, atol=0)


def test_reductions():
    a, b = randn(N, D, seed=1), randn(N, D, seed=2)
    for phase in ("mixco", "soft_clip"):
        per = F.m3col(
            a, b, phase=phase, reduction="none", generator=torch.Generator().manual_seed(0)
        )
        assert per.shape == (N,)
        mean = F.m3col(a, b, phase=phase, generator=torch.Generator().manual_seed(0))
        total = F.m3col(
            a, b, phase=phase, reduction="sum", generator=torch.Generator().manual_seed(0)
        )
        torch.testing.assert_close(mean, per.mean(), rtol=1e-12, atol=0)
        torch.testing.assert_close(total, per.sum(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("phase", ["mixco", "soft_clip"])
def test_low_precision_at_temperature_001(dtype, phase):
    a = randn(8, 6, seed=1).to(dtype).requires_grad_()
    b = randn(8, 6, seed=2).to(dtype).requires_grad_()
    g = torch.Generator().manual_seed(5)
    draws = (m3co_draw(8, generator=g), m3co_draw(8, generator=g))
    kw = dict(phase=phase, draws=draws, temperature=0.01, soft_clip_temperature=0.01)
    low = F.m3col(a, b, **kw)
    assert low.dtype == torch.float32 and bool(torch.isfinite(low))
    low.backward()
    a64, b64 = (x.detach().double().requires_grad_() for x in (a, b))
    high = F.m3col(a64, b64, **kw)
    high.backward()
    torch.testing.assert_close(low.double(), high, rtol=1e-4, atol=1e-4)
    for lo, hi in ((a.grad, a64.grad), (b.grad, b64.grad)):
        assert bool(torch.isfinite(lo).all())
        # The gradient is stored in the input's dtype: allow its rounding (2^-8 for bf16).
        tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 1e-5}[dtype]
        scale = float(hi.abs().max())
        torch.testing.assert_close(lo.double(), hi, rtol=tol, atol=tol * scale)


def test_bad_inputs():
    a = randn(4, 3)
    with pytest.raises(ValueError, match=r"`b` has shape \(5, 3\) but `a` has \(4, 3\)"):
        F.m3col(a, randn(5, 3))
    with pytest.raises(ValueError, match=r"`phase` is 'clip'.*one of 'mixco', 'soft_clip'"):
        F.m3col(a, a, phase="clip")
    with pytest.raises(ValueError, match=r"`variant` is 'x'"):
        F.m3col(a, a, variant="x")
    with pytest.raises(ValueError, match=r"`temperature` is 0.*> 0"):
        F.m3col(a, a, temperature=0.0)
    with pytest.raises(ValueError, match=r"`s_thresh` is 1.5.*\[0.0, 1.0\]"):
        F.m3col(a, a, s_thresh=1.5)
    with pytest.raises(ValueError, match=r"`beta` is -1.*> 0"):
        F.m3col(a, a, beta=-1)
    with pytest.raises(ValueError, match=r"`draws\[0\].perm`.*permutation of range\(4\)"):
        bad = MixDraw(torch.tensor([0, 0, 1, 2]), torch.ones(4, dtype=torch.float64))
        F.m3col(a, a, draws=(bad, bad))
    with pytest.raises(TypeError, match=r"`draws\[1\]` is a tuple.*MixDraw"):
        ok = MixDraw(torch.arange(4), torch.ones(4))
        F.m3col(a, a, draws=(ok, (1, 2)))
    with pytest.raises(ValueError, match=r"batch of 1"):
        F.m3col(a[:1], a[:1])
    x = a.clone()
    x[2] = float("nan")
    with pytest.raises(ValueError, match=r"`a` contains NaN or inf in rows \[2\]"):
        F.m3col(x, a)


def test_module_config_round_trip_learnable_and_registry():
    module = M3CoL(phase="soft_clip", temperature=0.2, variant="official_code", s_thresh=0.3)
    rebuilt = contrastkit.create_loss("m3col", **module.get_config())
    assert rebuilt.get_config() == module.get_config()
    a, b = randn(8, 6, seed=1), randn(8, 6, seed=2)
    torch.testing.assert_close(module(a, b), F.m3col(a, b, phase="soft_clip"))
    default = contrastkit.create_loss("m3col")
    assert default.inputs == "two_tower"
    value = default(a.float(), b.float(), generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(value))
    learn = M3CoL(learnable=True)
    learn(a, b, generator=torch.Generator().manual_seed(0)).backward()
    assert learn.logit_scale.log_scale.grad is not None


def test_results_script_smoke(tmp_path):
    text = run_seed_script("m3col", tmp_path)
    assert "<!-- seed:m3col -->" in text and "### m3col:" in text
    assert "| CE + 0.1 M3Co |" in text and "| CE only |" in text
