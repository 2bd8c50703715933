"""Lipschitz constraints (gradient penalty, spectral norm) and the WDM / WPC objectives.

References are closed forms written here: linear and quadratic critics whose input
gradients are known, explicit singular values, and a Python loop for InfoNCE.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from contrastkit.estimators.lipschitz import (
    gradient_penalty,
    input_gradient_norms,
    lipschitz_upper_bound,
    spectral_norm_mlp,
)
from contrastkit.estimators.wasserstein import wdm_dual_bound, wpc_loss, wpc_penalty_points

D64 = torch.float64


def _linear_critic(a: torch.Tensor, b: torch.Tensor):
    """f(x_i, y_j) = a.x_i + b.y_j as a (B, B) matrix: gradient (a, b) everywhere."""
    return lambda x, y: (x @ a)[:, None] + (y @ b)[None, :]


# ---------------------------------------------------------------------- gradient penalty


def test_penalty_zero_for_unit_norm_linear_critic():
    a = torch.tensor([0.6, 0.0], dtype=D64)
    b = torch.tensor([0.0, 0.8], dtype=D64)  # ||(a, b)|| = 1
    x, y = torch.randn(5, 2, dtype=D64), torch.randn(5, 2, dtype=D64)
    pen = gradient_penalty(lambda u, v: u @ a + v @ b, x, y)
    assert float(pen.detach()) == pytest.approx(0.0, abs=1e-14)


def test_penalty_value_and_parameter_gradient_linear_critic():
    # f(x, y) = a.x + b.y; ||grad|| = ||(a, b)|| = n, penalty (n - 1)^2,
    # d penalty / d a = 2 (n - 1) a / n (double backward through autograd.grad).
    a = torch.tensor([1.0, 2.0, -2.0], dtype=D64, requires_grad=True)
    b = torch.tensor([4.0], dtype=D64, requires_grad=True)
    x, y = torch.randn(7, 3, dtype=D64), torch.randn(7, 1, dtype=D64)
    pen = gradient_penalty(lambda u, v: u @ a + v @ b, x, y)
    n = 5.0  # sqrt(1 + 4 + 4 + 16)
    assert float(pen.detach()) == pytest.approx((n - 1) ** 2, rel=1e-12)
    pen.backward()
    torch.testing.assert_close(a.grad, 2 * (n - 1) * a.detach() / n, rtol=1e-12, atol=0)
    torch.testing.assert_close(b.grad, 2 * (n - 1) * b.detach() / n, rtol=1e-12, atol=0)


def test_one_sided_penalty_ignores_slopes_below_one():
    x = torch.randn(4, 2, dtype=D64)
    for scale, want in ((0.5, 0.0), (3.0, 4.0)):
        w = torch.tensor([scale, 0.0], dtype=D64)
        pen = gradient_penalty(lambda u, w=w: u @ w, x, one_sided=True)
        assert float(pen.detach()) == pytest.approx(want, abs=1e-14)
    two_sided = gradient_penalty(lambda u: u @ torch.tensor([0.5, 0.0], dtype=D64), x)
    assert float(two_sided) == pytest.approx(0.25, rel=1e-12)


def test_penalty_per_row_quadratic_critic_and_its_gradient():
    # f(x) = c ||x||^2 / 2: grad = c x, norm |c| ||x_n||; d/dc mean((c r - 1)^2) = mean(2 (c r - 1) r).
    c = torch.tensor(0.7, dtype=D64, requires_grad=True)
    x = torch.randn(6, 3, dtype=D64)
    per_row = gradient_penalty(lambda u: c * u.pow(2).sum(1) / 2, x, reduction="none")
    r = [math.sqrt(sum(v * v for v in row)) for row in x.tolist()]
    want = [(0.7 * ri - 1) ** 2 for ri in r]
    torch.testing.assert_close(per_row, torch.tensor(want, dtype=D64), rtol=1e-12, atol=1e-14)
    per_row.mean().backward()
    dc = sum(2 * (0.7 * ri - 1) * ri for ri in r) / len(r)
    assert float(c.grad) == pytest.approx(dc, rel=1e-12)
    total = gradient_penalty(lambda u: c * u.pow(2).sum(1) / 2, x, reduction="sum")
    assert float(total.detach()) == pytest.approx(sum(want), rel=1e-12)


def test_input_gradient_norms_of_bilinear_critic_diagonal():
    # f(x, y) = (W x).(V y): grad_x = W^T V y, grad_y = V^T W x, per positive pair.
    torch.manual_seed(0)
    w, v = torch.randn(4, 3, dtype=D64), torch.randn(4, 2, dtype=D64)
    x, y = torch.randn(5, 3, dtype=D64), torch.randn(5, 2, dtype=D64)
    norms = input_gradient_norms(lambda p, q: torch.diagonal((p @ w.T) @ (q @ v.T).T), x, y)
    for i in range(5):
        gx = w.T @ (v @ y[i])
        gy = v.T @ (w @ x[i])
        want = math.sqrt(float(gx @ gx + gy @ gy))
        assert float(norms[i].detach()) == pytest.approx(want, rel=1e-12)


def test_gradient_penalty_drives_linear_critic_to_unit_slope():
    w = torch.tensor([3.0, -4.0], dtype=D64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    x = torch.randn(8, 2, dtype=D64)
    for _ in range(200):
        opt.zero_grad()
        gradient_penalty(lambda u: u @ w, x).backward()
        opt.step()
    assert float(w.detach().norm()) == pytest.approx(1.0, abs=1e-8)


# ---------------------------------------------------------------------- spectral norm


def test_spectral_norm_mlp_is_one_lipschitz():
    torch.manual_seed(0)
    net = spectral_norm_mlp((6, 32, 32, 3), n_power_iterations=5).double()
    for _ in range(20):  # training-mode passes refine the power-iteration estimate
        net(torch.randn(4, 6, dtype=D64))
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    net.eval()
    with torch.no_grad():
        sig = [torch.linalg.svdvals(m.weight)[0].item() for m in linears]
    assert all(s <= 1 + 1e-6 for s in sig), sig
    bound = lipschitz_upper_bound(net)
    assert bound == pytest.approx(math.prod(sig), rel=1e-10)
    assert bound <= 1 + 1e-5
    a, b = torch.randn(200, 6, dtype=D64), torch.randn(200, 6, dtype=D64)
    with torch.no_grad():
        ratio = (net(a) - net(b)).norm(dim=1) / (a - b).norm(dim=1)
    assert float(ratio.max()) <= bound


def test_lipschitz_upper_bound_known_weights_and_no_side_effect():
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, -2.0]]))
        net[2].weight.copy_(torch.tensor([[0.6, 0.8]]))
    assert lipschitz_upper_bound(net) == pytest.approx(3.0, rel=1e-6)
    sn = spectral_norm_mlp((3, 4, 1))
    u = sn[0].parametrizations.weight[0]._u.clone()
    lipschitz_upper_bound(sn)
    assert torch.equal(u, sn[0].parametrizations.weight[0]._u)
    assert sn.training


# ---------------------------------------------------------------------- WPC / WDM objectives


def _loop_infonce(s: list[list[float]]) -> list[float]:
    return [-(row[i] - math.log(sum(math.exp(v) for v in row))) for i, row in enumerate(s)]


def test_wpc_without_penalty_is_infonce_value_and_gradient():
    torch.manual_seed(1)
    w = torch.randn(3, 3, dtype=D64, requires_grad=True)
    x, y = torch.randn(6, 3, dtype=D64), torch.randn(6, 3, dtype=D64)
    loss = wpc_loss(lambda p, q: p @ w @ q.T, x, y, penalty_weight=0.0)
    s = (x @ w @ y.T).tolist()
    assert float(loss.detach()) == pytest.approx(sum(_loop_infonce(s)) / 6, rel=1e-12)
    (gw,) = torch.autograd.grad(loss, w)
    # d/dW of mean_i -(x_i W y_i - lse_j x_i W y_j) = mean_i (sum_j p_ij x_i y_j^T - x_i y_i^T)
    with torch.no_grad():
        p = torch.softmax(x @ w @ y.T, dim=1)
        want = (
            sum(
                sum(p[i, j] * torch.outer(x[i], y[j]) for j in range(6)) - torch.outer(x[i], y[i])
                for i in range(6)
            )
            / 6
        )
    torch.testing.assert_close(gw, want, rtol=1e-10, atol=1e-12)


def test_wpc_matches_library_infonce_bound_when_available():
    bounds = pytest.importorskip(
        "contrastkit.estimators.bounds", reason="estimators.bounds (another helper's) not present"
    )
    if not hasattr(bounds, "infonce_bound"):
        pytest.skip("estimators.bounds has no infonce_bound yet")
    torch.manual_seed(2)
    scores = torch.randn(5, 5, dtype=D64)
    loss = wpc_loss(
        lambda p, q: scores,
        torch.zeros(5, 1, dtype=D64),
        torch.zeros(5, 1, dtype=D64),
        penalty_weight=0.0,
    )
    torch.testing.assert_close(
        math.log(5) - loss, bounds.infonce_bound(scores), rtol=1e-12, atol=1e-12
    )


def test_wpc_penalty_adds_known_constant_for_linear_critic():
    # ||grad|| = ||(a, b)|| = 2 everywhere, so the penalty is (2 - 1)^2 = 1 at any point.
    a = torch.tensor([2.0, 0.0], dtype=D64)
    b = torch.tensor([0.0], dtype=D64)
    x, y = torch.randn(4, 2, dtype=D64), torch.randn(4, 1, dtype=D64)
    critic = _linear_critic(a, b)
    s = critic(x, y).tolist()
    for at in ("interpolate", "pairs"):
        loss, parts = wpc_loss(critic, x, y, penalty_weight=3.0, penalty_at=at, return_parts=True)
        assert float(loss.detach()) == pytest.approx(sum(_loop_infonce(s)) / 4 + 3.0, rel=1e-12)
        assert float(parts["penalty"]) == pytest.approx(1.0, rel=1e-12)
        assert float(parts["bound"]) == pytest.approx(
            math.log(4) - sum(_loop_infonce(s)) / 4, rel=1e-12
        )
    rows = wpc_loss(critic, x, y, penalty_weight=3.0, reduction="none")
    want = torch.tensor(_loop_infonce(s), dtype=D64) + 3.0
    torch.testing.assert_close(rows, want, rtol=1e-12, atol=1e-12)
    total = wpc_loss(critic, x, y, penalty_weight=3.0, reduction="sum")
    assert float(total.detach()) == pytest.approx(float(want.sum()), rel=1e-12)


def test_wpc_penalty_reaches_critic_parameters():
    # The same InfoNCE with and without the penalty: the gradient difference is the
    # penalty's gradient, which for f = c (a.x + b.y) is lambda * 2 (|c| n - 1) n sign(c).
    a = torch.tensor([1.0, 0.0], dtype=D64)
    b = torch.tensor([0.0, 1.0], dtype=D64)  # n = ||(a, b)|| = sqrt(2)
    c = torch.tensor(2.0, dtype=D64, requires_grad=True)
    x, y = torch.randn(5, 2, dtype=D64), torch.randn(5, 2, dtype=D64)

    def critic(p, q):
        return c * _linear_critic(a, b)(p, q)

    (g0,) = torch.autograd.grad(wpc_loss(critic, x, y, penalty_weight=0.0), c)
    (g1,) = torch.autograd.grad(wpc_loss(critic, x, y, penalty_weight=0.5), c)
    n = math.sqrt(2)
    assert float(g1 - g0) == pytest.approx(0.5 * 2 * (2 * n - 1) * n, rel=1e-10)


def test_wpc_penalty_with_mlp_critic_matches_per_pair_loop():
    # The diagonal trick (per-pair gradients from one (B, B) call) against B separate
    # single-pair calls; then the loss with the same seeded points.
    critics = pytest.importorskip("contrastkit.estimators.critics", reason="critics not present")
    torch.manual_seed(4)
    critic = critics.SeparableCritic(3, 2, embed_dim=4, hidden_dim=8).double()
    x, y = torch.randn(5, 3, dtype=D64), torch.randn(5, 2, dtype=D64)
    xs, ys = wpc_penalty_points(x, y, "pairs", torch.Generator().manual_seed(7))
    want = []
    for n in range(xs.shape[0]):
        a = xs[n : n + 1].clone().requires_grad_(True)
        b = ys[n : n + 1].clone().requires_grad_(True)
        ga, gb = torch.autograd.grad(critic(a, b)[0, 0], (a, b))
        want.append((math.sqrt(float((ga * ga).sum() + (gb * gb).sum())) - 1) ** 2)
    loss = wpc_loss(
        critic,
        x,
        y,
        penalty_weight=2.0,
        penalty_at="pairs",
        generator=torch.Generator().manual_seed(7),
    )
    s = critic(x, y).tolist()
    pen = [(want[i] + want[i + 5]) / 2 for i in range(5)]
    expect = sum(ce + 2.0 * p for ce, p in zip(_loop_infonce(s), pen, strict=True)) / 5
    assert float(loss.detach()) == pytest.approx(expect, rel=1e-10)


def test_dual_objective_and_wdm_bound_reference():
    torch.manual_seed(3)
    s = torch.randn(4, 4, dtype=D64)
    diag = sum(s[i, i].item() for i in range(4)) / 4
    off = sum(s[i, j].item() for i in range(4) for j in range(4) if i != j) / 12
    assert float(wdm_dual_bound(s)) == pytest.approx(diag - off, rel=1e-12)
    z = torch.zeros(4, 1, dtype=D64)
    loss = wpc_loss(lambda p, q: s, z, z, penalty_weight=0.0, objective="dual")
    assert float(loss.detach()) == pytest.approx(-(diag - off), rel=1e-12)


def test_wdm_bound_of_a_one_lipschitz_critic_on_a_known_transport_problem():
    # x = y = +-1, equally likely: p(x, y) puts 1/2 on (1, 1) and (-1, -1); p(x)p(y) puts
    # 1/4 on each corner. W_1 (l2) = 2 * (1/4) * 2 = 1: the two off-diagonal corners move
    # by 2. f(x, y) = -|x - y| / sqrt(2) has gradient norm 1, so it is 1-Lipschitz.
    # On the batch (1, -1, 1, -1): the 4 joint pairs score 0; of the 12 mixed pairs, 8
    # have opposite signs (f = -2 / sqrt(2)) and 4 equal signs (f = 0).
    x = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]], dtype=D64)
    est = float(wdm_dual_bound(-(x - x.T).abs() / math.sqrt(2)))
    assert est == pytest.approx(8 / 12 * 2 / math.sqrt(2), rel=1e-12)
    # The critic -dist to the joint's support reaches W_1 in the population (1/2 of the
    # product mass at distance 2); this batch over-represents mixed-sign pairs (8/12).
    support = -(x - x.T).abs()
    assert float(wdm_dual_bound(support)) == pytest.approx(8 / 12 * 2, rel=1e-12)


def test_penalty_points_are_joint_or_deranged_product_samples():
    x = torch.arange(6, dtype=D64)[:, None]
    y = 10 * torch.arange(6, dtype=D64)[:, None]
    g = torch.Generator().manual_seed(0)
    xs, ys = wpc_penalty_points(x, y, "pairs", g)
    assert torch.equal(xs, torch.cat([x, x]))
    assert torch.equal(ys[:6], y)
    shift = int(ys[6, 0].item() // 10)
    assert 1 <= shift <= 5
    assert torch.equal(ys[6:], torch.roll(y, -shift, 0))
    xs, ys = wpc_penalty_points(x, y, "interpolate", g)
    assert torch.equal(xs, x)
    # Each point lies on the segment from y_i to y_{(i + s) mod B}, one shift s for all rows.
    fits = []
    for s in range(1, 6):
        t = (ys - y) / (torch.roll(y, -s, 0) - y)
        fits.append(bool(((t >= 0) & (t <= 1)).all()))
    assert sum(fits) >= 1
    assert not torch.equal(ys, y)


# ---------------------------------------------------------------------- bad inputs


def _ok_critic(p, q):
    return p @ q.T


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(penalty_weight=-1.0), ValueError, "penalty_weight"),
        (dict(penalty_weight=float("nan")), ValueError, "penalty_weight"),
        (dict(objective="kl"), ValueError, "objective.*one of"),
        (dict(penalty_at="everywhere"), ValueError, "penalty_at"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(one_sided=1), TypeError, "one_sided"),
    ],
)
def test_wpc_bad_options(kwargs, exc, match):
    x = torch.randn(4, 2)
    with pytest.raises(exc, match=match):
        wpc_loss(_ok_critic, x, x.clone(), **kwargs)


def test_wpc_bad_tensors():
    x = torch.randn(4, 2)
    with pytest.raises(TypeError, match="`x`.*floating"):
        wpc_loss(_ok_critic, torch.ones(4, 2, dtype=torch.long), x)
    with pytest.raises(ValueError, match="`y` has batch size 3"):
        wpc_loss(_ok_critic, x, torch.randn(3, 2))
    with pytest.raises(ValueError, match="batch of 1"):
        wpc_loss(_ok_critic, x[:1], x[:1])
    bad = x.clone()
    bad[2, 0] = float("nan")
    with pytest.raises(ValueError, match="`x` contains NaN"):
        wpc_loss(_ok_critic, bad, x)
    with pytest.raises(ValueError, match="`x` has shape"):
        wpc_loss(_ok_critic, torch.randn(4), x)
    with pytest.raises(ValueError, match="critic\\(x, y\\).*square"):
        wpc_loss(lambda p, q: p @ q.T[:, :3], x, x)
    with pytest.raises(TypeError, match="critic"):
        wpc_loss("not a critic", x, x)
    with pytest.raises(ValueError, match="scores.*square"):
        wdm_dual_bound(torch.randn(3, 4))
    with pytest.raises(ValueError, match="wpc_penalty_points: `y` has batch size 3"):
        wpc_penalty_points(x, torch.randn(3, 2))
    with pytest.raises(ValueError, match="penalty_at"):
        wpc_penalty_points(x, x, "corners")


def test_penalty_and_spectral_bad_inputs():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="`fn` returned \\(4, 4\\).*one scalar per row"):
        gradient_penalty(lambda u: u @ u.T, x)
    with pytest.raises(ValueError, match="inputs\\[1\\].*leading batch size"):
        gradient_penalty(lambda u, v: u.sum(1), x, torch.randn(3, 2))
    with pytest.raises(TypeError, match="inputs\\[0\\].*floating"):
        gradient_penalty(lambda u: u.sum(1), torch.ones(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="target"):
        gradient_penalty(lambda u: u.sum(1), x, target=-1.0)
    with pytest.raises(ValueError, match="sizes"):
        spectral_norm_mlp((4,))
    with pytest.raises(ValueError, match="sizes"):
        spectral_norm_mlp((4, 0, 1))
    with pytest.raises(ValueError, match="activation"):
        spectral_norm_mlp((4, 2), activation="gelu")
    with pytest.raises(ValueError, match="n_power_iterations"):
        spectral_norm_mlp((4, 2), n_power_iterations=0)
    with pytest.raises(ValueError, match="no nn.Linear"):
        lipschitz_upper_bound(nn.ReLU())
    with pytest.raises(TypeError, match="module"):
        lipschitz_upper_bound("mlp")


# ---------------------------------------------------------------------- result script


def test_wpc_factors_smoke(tmp_path):
    from conftest import run_seed_script

    text = run_seed_script("wpc_factors", tmp_path)
    assert "### wpc_factors:" in text
    assert "| K | MI cap K log 4 (nats) | method |" in text
    assert "| 1 | 1.39 | InfoNCE |" in text
    assert "WPC (GP, lambda=10)" in text
    assert (tmp_path / "results_wpc_factors.png").exists()
