"""MI estimators and critics: hand-computed score matrices, the analytic log density ratio of
correlated Gaussians, known inequalities, MINE's corrected gradient, bad inputs, and a
smoke run of the known-MI benchmark."""

from __future__ import annotations

import math

import pytest
import torch

from contrastkit.estimators import (
    MINE,
    BilinearCritic,
    ConcatCritic,
    SeparableCritic,
    dv_bound,
    infonce_bound,
    js_bound,
    js_fgan_bound,
    mine_bound,
    mlp,
    nwj_bound,
)

LN = math.log
E = math.e


def t64(rows):
    return torch.tensor(rows, dtype=torch.float64)


# ---------------------------------------------------------------- hand-computed matrices

# 2x2: f_ii = ln 3, f_ij = 0. Rows: ln3 - ln(3 + 1) = ln(3/4); E_p f = ln 3; E_q e^f = 1.
S2 = t64([[LN(3), 0.0], [0.0, LN(3)]])
# 3x3, worked by hand in the comments of each expected value below.
S3 = t64([[LN(2), 0.0, LN(2)], [0.0, LN(4), 0.0], [LN(3), 0.0, 0.0]])
# Row log-softmax of the positive: ln(2/5), ln(4/6), ln(1/5); E_p f = (ln2 + ln4)/3 = ln 2;
# off-diagonal e^f = 1, 2, 1, 1, 3, 1: mean 9/6 = 1.5; softplus(off) = ln of 2,3,2,2,4,2.
HAND = {
    "infonce_2x2": (infonce_bound, S2, LN(2) + LN(3 / 4)),
    "nwj_2x2": (nwj_bound, S2, LN(3) - 1 / E),
    "dv_2x2": (dv_bound, S2, LN(3)),
    "js_fgan_2x2": (js_fgan_bound, S2, -LN(4 / 3) - LN(2)),
    "js_paper_2x2": (js_bound, S2, LN(3) + 1 - 1.0),  # NWJ(f + 1) = E_p f + 1 - E_q e^f
    "js_code_2x2": (lambda s: js_bound(s, variant="official_code"), S2, LN(3) - 1 / E),
    "infonce_3x3": (infonce_bound, S3, LN(3) + (LN(2 / 5) + LN(4 / 6) + LN(1 / 5)) / 3),
    "nwj_3x3": (nwj_bound, S3, LN(2) - 1.5 / E),
    "dv_3x3": (dv_bound, S3, LN(2) - LN(1.5)),
    "js_fgan_3x3": (
        js_fgan_bound,
        S3,
        -(LN(1.5) + LN(1.25) + LN(2)) / 3 - (4 * LN(2) + LN(3) + LN(4)) / 6,
    ),
    "js_paper_3x3": (js_bound, S3, LN(2) + 1 - 1.5),
}


@pytest.mark.parametrize("name", HAND)
def test_hand_computed_values(name):
    fn, scores, expected = HAND[name]
    assert fn(scores).item() == pytest.approx(expected, abs=1e-12)


def test_mine_value_is_dv():
    estimate, log_mean = mine_bound(S3)
    assert estimate.item() == pytest.approx(LN(2) - LN(1.5), abs=1e-12)
    assert log_mean.item() == pytest.approx(LN(1.5), abs=1e-12)  # first call: the batch


# ---------------------------------------------------------------- gradients (float64)


def _random_scores(b=5, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(b, b, generator=g, dtype=torch.float64)).requires_grad_()


@pytest.mark.parametrize("fn", [infonce_bound, nwj_bound, dv_bound, js_fgan_bound])
def test_gradient_matches_finite_differences(fn):
    assert torch.autograd.gradcheck(fn, (_random_scores(),))


def test_infonce_gradient_closed_form():
    """d/df_ij of log B + mean_i [f_ii - lse_j f_ij] = (1[i=j] - softmax_j(f_i.)_j) / B."""
    s = _random_scores(4, seed=3)
    infonce_bound(s).backward()
    b = s.shape[0]
    expected = torch.empty(b, b, dtype=torch.float64)
    with torch.no_grad():
        for i in range(b):
            z = sum(math.exp(s[i, k]) for k in range(b))
            for j in range(b):
                expected[i, j] = ((i == j) - math.exp(s[i, j]) / z) / b
    torch.testing.assert_close(s.grad, expected, rtol=0, atol=1e-14)


def test_mine_gradient_uses_moving_average_denominator():
    """grad = 1/B on the diagonal, -e^{f_ij} / (B (B - 1) m_t) off it, with
    m_t = momentum * m_{t-1} + (1 - momentum) * mean_{i != j} e^{f_ij}."""
    s = _random_scores(4, seed=1)
    b, momentum, past = 4, 0.9, 0.7
    estimate, new = mine_bound(s, torch.tensor(LN(past), dtype=torch.float64), momentum)
    estimate.backward()
    with torch.no_grad():
        off = [math.exp(s[i, j]) for i in range(b) for j in range(b) if i != j]
        m_t = momentum * past + (1 - momentum) * sum(off) / len(off)
        expected = torch.empty(b, b, dtype=torch.float64)
        for i in range(b):
            for j in range(b):
                expected[i, j] = 1 / b if i == j else -math.exp(s[i, j]) / (b * (b - 1) * m_t)
    torch.testing.assert_close(s.grad, expected, rtol=0, atol=1e-14)
    assert new.item() == pytest.approx(LN(m_t), abs=1e-14)
    assert estimate.item() == pytest.approx(dv_bound(s.detach()).item(), abs=1e-14)


def test_mine_first_step_gradient_is_dv_gradient():
    s1, s2 = _random_scores(5, seed=2), _random_scores(5, seed=2)
    mine_bound(s1)[0].backward()
    dv_bound(s2).backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=0, atol=1e-14)


def test_mine_module_tracks_moving_average_and_eval_is_dv():
    mine = MINE(momentum=0.5).double()
    a, b = _random_scores(4, seed=4).detach(), _random_scores(4, seed=5).detach()

    def batch_mean(s):
        return sum(math.exp(s[i, j]) for i in range(4) for j in range(4) if i != j) / 12

    mine(a)
    assert mine.running_log_mean.item() == pytest.approx(LN(batch_mean(a)), abs=1e-12)
    mine(b)
    expected = 0.5 * batch_mean(a) + 0.5 * batch_mean(b)
    assert mine.running_log_mean.item() == pytest.approx(LN(expected), abs=1e-12)
    mine.eval()
    assert mine(a).item() == pytest.approx(dv_bound(a).item(), abs=1e-14)
    assert mine.running_log_mean.item() == pytest.approx(LN(expected), abs=1e-12)
    mine.train()
    mine.reset()
    mine(b)
    assert mine.running_log_mean.item() == pytest.approx(LN(batch_mean(b)), abs=1e-12)


@pytest.mark.parametrize("variant", ["paper", "official_code"])
def test_js_bound_gradient_is_js_fgan_gradient(variant):
    s1, s2 = _random_scores(5, seed=6), _random_scores(5, seed=6)
    js_bound(s1, variant=variant).backward()
    js_fgan_bound(s2).backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=0, atol=1e-14)


# ---------------------------------------------------------------- inequalities


@pytest.mark.parametrize("seed", range(6))
def test_dv_at_least_nwj_and_infonce_at_most_log_b(seed):
    """DV - NWJ = m/e - log m >= 0 with m = E_q[e^f] (log m <= m/e); InfoNCE <= log B."""
    b = 3 + seed
    s = _random_scores(b, seed=seed, scale=1.0 + 3 * seed).detach()
    s += 5.0 * torch.eye(b, dtype=torch.float64)  # large positives: near the ceiling
    assert dv_bound(s).item() >= nwj_bound(s).item()
    assert infonce_bound(s).item() <= math.log(b)


def test_dv_equals_nwj_when_marginal_mean_is_e():
    s = torch.ones(4, 4, dtype=torch.float64)  # off-diagonal e^f = e: log m = m/e = 1
    s.diagonal().copy_(t64([0.5, -1.0, 2.0, 3.0]))
    assert dv_bound(s).item() == pytest.approx(nwj_bound(s).item(), abs=1e-14)


def test_log_domain_in_float32():
    """Scores near 100 overflow exp in float32 (max ~ e^88); the bounds must not."""
    s = torch.full((4, 4), 80.0)
    s.diagonal().fill_(100.0)
    assert dv_bound(s).item() == pytest.approx(20.0, abs=1e-4)
    assert infonce_bound(s).item() == pytest.approx(math.log(4), abs=1e-4)
    estimate, log_mean = mine_bound(s, torch.tensor(85.0))
    assert torch.isfinite(estimate) and torch.isfinite(log_mean)


# ---------------------------------------------------------------- the true log density ratio


def gaussian_log_ratio(x, y, rho):
    """log p(y_j | x_i) / p(y_j) for y = rho x + sqrt(1 - rho^2) eps, all pairs (i, j)."""
    var = 1.0 - rho * rho
    d = x.shape[1]
    diff = y[None, :, :] - rho * x[:, None, :]
    return -0.5 * d * math.log(var) - (diff**2).sum(-1) / (2 * var) + (y[None] ** 2).sum(-1) / 2


def gaussian_scores(mi, d, b, n_batches, seed=0):
    rho = math.sqrt(-math.expm1(-2.0 * mi / d))
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_batches):
        x = torch.randn(b, d, generator=g, dtype=torch.float64)
        y = rho * x + math.sqrt(1 - rho * rho) * torch.randn(b, d, generator=g, dtype=torch.float64)
        yield gaussian_log_ratio(x, y, rho)


def mean_and_se(values):
    v = torch.stack(values)
    return v.mean().item(), v.std().item() / math.sqrt(len(values))


MI_SMALL = 0.5  # nats, d = 2: small enough for NWJ/DV's e^f term to have low variance

# (estimator applied to log r, its expected value): NWJ's optimum is 1 + log r.
TRUE_CRITIC = {
    "nwj_at_1_plus_log_r": (lambda s: nwj_bound(s + 1.0), MI_SMALL),
    "nwj_at_log_r": (nwj_bound, MI_SMALL - 1 / E),
    "dv_at_log_r": (dv_bound, MI_SMALL),
    "js_paper_at_log_r": (js_bound, MI_SMALL),  # the JS optimum is log r
    "js_code_at_log_r": (lambda s: js_bound(s, variant="official_code"), MI_SMALL - 1 / E),
}


@pytest.mark.parametrize("name", TRUE_CRITIC)
def test_true_density_ratio_critic_reaches_known_value(name):
    """Averaged over 40 batches of 256, within 4 standard errors of the analytic value."""
    fn, expected = TRUE_CRITIC[name]
    m, se = mean_and_se([fn(s) for s in gaussian_scores(MI_SMALL, 2, 256, 40)])
    assert abs(m - expected) < 4 * se
    assert se < 0.02  # the check has power: 4 SE is under 0.08 nats


def test_infonce_with_true_critic_below_mi_and_tightens_with_batch():
    m32, se32 = mean_and_se([infonce_bound(s) for s in gaussian_scores(MI_SMALL, 2, 32, 200)])
    m512, se512 = mean_and_se([infonce_bound(s) for s in gaussian_scores(MI_SMALL, 2, 512, 40)])
    assert m32 - 4 * se32 < MI_SMALL and m512 - 4 * se512 < MI_SMALL
    assert abs(m512 - MI_SMALL) < 4 * se512 + 0.01


def test_infonce_saturates_at_log_b_for_large_mi():
    """MI = 20 nats >> log 16: the true critic's InfoNCE sits at log B on every batch."""
    for s in gaussian_scores(20.0, 20, 16, 5):
        v = infonce_bound(s).item()
        assert math.log(16) - 1e-6 <= v <= math.log(16)


def test_suboptimal_critic_bounds_are_below_mi():
    """Half the log ratio is a worse critic: every bound's expectation falls below MI."""
    for fn in (nwj_bound, dv_bound, infonce_bound, js_bound):
        m, se = mean_and_se([fn(0.5 * s) for s in gaussian_scores(MI_SMALL, 2, 256, 40)])
        assert m + 4 * se < MI_SMALL


# ---------------------------------------------------------------- bad inputs

BOUNDS = [infonce_bound, nwj_bound, dv_bound, js_fgan_bound, js_bound, mine_bound]


@pytest.mark.parametrize("fn", BOUNDS)
def test_bad_scores(fn):
    with pytest.raises(ValueError, match=r"`scores` has shape \(3, 4\).*square"):
        fn(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"`scores` has shape \(4,\)"):
        fn(torch.zeros(4))
    with pytest.raises(ValueError, match=r"`scores` has a batch of 1.*B >= 2"):
        fn(torch.zeros(1, 1))
    nan = torch.zeros(3, 3)
    nan[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"`scores` contains NaN or inf in rows \[1\]"):
        fn(nan)
    with pytest.raises(TypeError, match=r"`scores` has dtype torch.int64.*floating point"):
        fn(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"`scores` is a list.*torch.Tensor"):
        fn([[0.0, 1.0], [1.0, 0.0]])


def test_bad_options():
    with pytest.raises(ValueError, match=r"`variant` is 'code'.*one of 'paper'"):
        js_bound(S2, variant="code")
    with pytest.raises(ValueError, match=r"`momentum` is 1.0.*< 1"):
        mine_bound(S2, momentum=1.0)
    with pytest.raises(ValueError, match=r"MINE: `momentum` is -0.1.*\[0.0, 1.0\]"):
        MINE(momentum=-0.1)


# ---------------------------------------------------------------- critics


def _xy(b=5, dx=3, dy=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, dx, generator=g), torch.randn(b, dy, generator=g)


def test_separable_critic_is_pairwise_dot_product():
    torch.manual_seed(0)
    critic = SeparableCritic(3, 4, embed_dim=6, hidden_dim=8, temperature=0.5)
    x, y = _xy()
    s = critic(x, y)
    for i in range(5):
        for j in range(5):
            expected = critic.g(x[i]) @ critic.h(y[j]) / 0.5
            assert s[i, j].item() == pytest.approx(expected.item(), abs=1e-5)


def test_bilinear_critic_is_x_w_y():
    torch.manual_seed(0)
    critic = BilinearCritic(3, 4)
    x, y = _xy()
    s = critic(x, y)
    w = critic.weight.detach()
    for i in range(5):
        for j in range(5):
            expected = sum(x[i, a] * w[a, c] * y[j, c] for a in range(3) for c in range(4))
            assert s[i, j].item() == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_concat_critic_is_mlp_on_concatenated_pairs(layers):
    torch.manual_seed(0)
    critic = ConcatCritic(3, 4, hidden_dim=8, layers=layers)
    x, y = _xy()
    s = critic(x, y)
    assert s.shape == (5, 5)
    for i in range(5):
        for j in range(5):
            pair = torch.cat([x[i], y[j]])
            expected = critic.rest(critic.act(critic.first(pair)))
            assert s[i, j].item() == pytest.approx(expected.item(), abs=1e-5)


def test_mlp_layers():
    net = mlp(3, 8, 2, layers=2)
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert len(mlp(3, 8, 2, layers=0)) == 1


def test_critic_bad_inputs():
    critic = SeparableCritic(3, 4, hidden_dim=8)
    x, y = _xy()
    with pytest.raises(ValueError, match=r"`y` has 4 rows but `x` has 5"):
        critic(x, y[:4])
    with pytest.raises(ValueError, match=r"`x` has feature dimension 4.*x_dim=3"):
        critic(y, y)
    with pytest.raises(ValueError, match=r"`x` contains NaN"):
        critic(torch.full((5, 3), float("nan")), y)
    with pytest.raises(ValueError, match=r"`layers` is 0.*>= 1"):
        ConcatCritic(3, 4, layers=0)
    with pytest.raises(ValueError, match=r"`temperature` is 0.0"):
        SeparableCritic(3, 4, temperature=0.0)
    with pytest.raises(ValueError, match=r"`activation` is 'swish'"):
        mlp(3, 8, 2, activation="swish")
    with pytest.raises(ValueError, match=r"`x_dim` is 0"):
        BilinearCritic(0, 4)


def test_critic_trains_infonce_up():
    """A few Adam steps on InfoNCE raise the estimate on correlated data (behaviour)."""
    torch.manual_seed(0)
    critic = BilinearCritic(4, 4)
    opt = torch.optim.Adam(critic.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    y = 0.9 * x + math.sqrt(1 - 0.81) * torch.randn(64, 4, generator=g)
    start = infonce_bound(critic(x, y)).item()
    for _ in range(30):
        opt.zero_grad()
        (-infonce_bound(critic(x, y))).backward()
        opt.step()
    assert infonce_bound(critic(x, y)).item() > start + 1.0


# ---------------------------------------------------------------- benchmark script


def test_mi_gaussian_smoke(tmp_path):
    from conftest import run_seed_script

    text = run_seed_script("mi_gaussian", tmp_path)
    assert "### mi_gaussian:" in text
    assert "Batch B = 64 (log B = 4.16)" in text and "Batch B = 512 (log B = 6.24)" in text
    assert "| true MI | min(MI, log B) | infonce | nwj | dv | mine | js |" in text
    assert (tmp_path / "results_mi_gaussian.png").stat().st_size > 0
    assert "Smoke run" in text
