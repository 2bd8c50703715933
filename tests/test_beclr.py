"""BECLR: log-domain Sinkhorn, OpTA, the equipartition of DyCE, the DyCE memory and the
pretraining loss (Poulakakis-Daktylidis & Jamali-Rad, ICLR 2024; stypoumic/BECLR)."""

import itertools
import math
import warnings

import pytest
import torch

from contrastkit.core.transport import opta, opta_passes, sinkhorn
from contrastkit.methods.beclr import (
    DyCE,
    beclr_loss,
    beclr_loss_terms,
    equipartition_assign,
)

ot = pytest.importorskip(
    "ot", reason="POT (pip package `pot`) is the dense reference solver for these tests"
)


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------- Sinkhorn


@pytest.mark.parametrize("given", [False, True])
def test_sinkhorn_matches_pot(given):
    cost = _rand(6, 9)
    a = _rand(6, seed=1) + 0.2 if given else torch.full((6,), 1 / 6, dtype=torch.float64)
    b = _rand(9, seed=2) + 0.2 if given else torch.full((9,), 1 / 9, dtype=torch.float64)
    a, b = a / a.sum(), b / b.sum()
    ref = ot.sinkhorn(a.numpy(), b.numpy(), cost.numpy(), 0.1, stopThr=1e-15, numItermax=10**5)
    plan, _ = sinkhorn(cost, 0.1, a if given else None, b if given else None, tol=1e-13)
    torch.testing.assert_close(plan, torch.from_numpy(ref), atol=1e-11, rtol=0)


def test_sinkhorn_marginals_hold_to_tolerance():
    cost = _rand(7, 5, seed=3)
    a = torch.tensor([0.1, 0.2, 0.05, 0.15, 0.2, 0.2, 0.1], dtype=torch.float64)
    b = torch.tensor([0.3, 0.1, 0.2, 0.2, 0.2], dtype=torch.float64)
    plan, iters = sinkhorn(cost, 0.05, a, b, tol=1e-8, max_iter=10**4)
    assert iters < 10**4
    assert float((plan.sum(1) - a).abs().sum()) <= 1e-8
    torch.testing.assert_close(plan.sum(0), b, atol=1e-14, rtol=0)


def test_small_epsilon_converges_to_the_exact_plan_on_4x4():
    """Brute force over the 24 permutations gives the exact OT plan (uniform 1/4
    marginals: Birkhoff, an optimal plan is a permutation / 4)."""
    cost = _rand(4, 4, seed=5)
    best = min(itertools.permutations(range(4)), key=lambda p: sum(cost[i, p[i]] for i in range(4)))
    exact = torch.zeros(4, 4, dtype=torch.float64)
    exact[range(4), list(best)] = 0.25
    errors = []
    for eps in (0.1, 0.01, 0.003):
        plan, _ = sinkhorn(cost, eps, tol=1e-9, max_iter=4000)
        errors.append(float((plan - exact).abs().sum()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-4


def test_entropic_cost_within_the_epsilon_bound_of_emd():
    """0 <= <P_eps, C> - OT(C) <= eps * log(n m) (the entropy gap), against POT's emd."""
    cost = _rand(6, 8, seed=6)
    a = torch.full((6,), 1 / 6, dtype=torch.float64)
    b = torch.full((8,), 1 / 8, dtype=torch.float64)
    exact = float(ot.emd2(a.numpy(), b.numpy(), cost.numpy()))
    for eps in (0.05, 0.005):
        plan, _ = sinkhorn(cost, eps, tol=1e-12, max_iter=10**5)
        gap = float((plan * cost).sum()) - exact
        assert -1e-9 <= gap <= eps * math.log(48)


def test_sinkhorn_at_epsilon_1e_5_is_finite_in_float32():
    """The scaling form exp(-C / 1e-5) under/overflows; the log domain does not."""
    cost = _rand(5, 5, seed=8, dtype=torch.float32)
    plan, _ = sinkhorn(cost, 1e-5, max_iter=200, tol=0.0)
    assert torch.isfinite(plan).all()
    # Potentials of size |C| / eps ~ 1e5 carry float32 rounding of ~1e5 * 6e-8 = 6e-3 in
    # log space, so marginals hold to about that relative error (not to 1e-7).
    torch.testing.assert_close(plan.sum(0), torch.full((5,), 0.2), atol=2e-3, rtol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epsilon=0.0), r"`epsilon` is 0.0"),
        (dict(a=torch.tensor([0.5, 0.6, -0.1])), r"`a` has entries.*> 0"),
        (dict(b=torch.tensor([0.5, 0.6, 0.1, 0.1])), r"`b` sums to 1.3"),
        (dict(b=torch.ones(3) / 3), r"`b` has shape \(3,\)"),
        (dict(max_iter=0), r"`max_iter` is 0"),
        (dict(tol=-1.0), r"`tol` is -1.0"),
    ],
)
def test_sinkhorn_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sinkhorn(torch.rand(3, 4), **kwargs)


def test_sinkhorn_rejects_nan_cost():
    with pytest.raises(ValueError, match=r"`cost` contains NaN"):
        sinkhorn(torch.tensor([[0.0, float("nan")], [1.0, 0.0]]))


# ---------------------------------------------------------------------- OpTA


def test_opta_one_pass_is_the_barycentric_map_of_the_pot_plan():
    p = _randn(3, 4, seed=1)
    q = _randn(10, 4, seed=2)
    cost = ((p[:, None] - q[None]) ** 2).sum(-1)
    cost = cost / cost.max()
    plan = torch.from_numpy(
        ot.sinkhorn([1 / 3] * 3, [0.1] * 10, cost.numpy(), 0.05, stopThr=1e-15, numItermax=10**5)
    )
    expected = (plan / plan.sum(1, keepdim=True)) @ q
    got = opta(p, q, passes=1, tol=1e-13, max_iter=10**5)
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=0)
    blended = opta(p, q, passes=1, blend=0.7, tol=1e-13, max_iter=10**5)
    torch.testing.assert_close(blended, 0.7 * expected + 0.3 * p, atol=1e-9, rtol=0)


def test_opta_moves_a_shifted_prototype_back_to_its_query_cluster():
    g = torch.Generator().manual_seed(0)
    m = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]], dtype=torch.float64)
    q = torch.cat([c + 0.3 * torch.randn(15, 2, generator=g, dtype=torch.float64) for c in m])
    p = m.clone()
    p[0] += torch.tensor([2.0, 1.5], dtype=torch.float64)  # shifted, still nearest cluster 0
    moved = opta(p, q, passes=5)
    before = float((p[0] - m[0]).norm())
    after = float((moved[0] - q[:15].mean(0)).norm())
    assert after < 0.05 * before
    for c in range(3):  # every prototype ends on its own cluster's mean
        assert float((moved[c] - q[15 * c : 15 * (c + 1)].mean(0)).norm()) < 0.1


def test_opta_schedule_is_the_official_one():
    assert opta_passes(1) == (5, 1.0)
    assert opta_passes(5) == (1, 0.7)
    assert opta_passes(20) == (1, 0.7)


def test_opta_blend_zero_returns_the_input():
    p, q = _randn(3, 4, seed=3), _randn(9, 4, seed=4)
    torch.testing.assert_close(opta(p, q, passes=2, blend=0.0), p)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(passes=0), r"`passes` is 0"),
        (dict(blend=1.5), r"`blend` is 1.5"),
        (dict(queries=torch.rand(5, 3)), r"`queries` has feature dimension 3"),
    ],
)
def test_opta_bad_arguments(kwargs, match):
    args = dict(prototypes=torch.rand(3, 4), queries=torch.rand(5, 4)) | kwargs
    with pytest.raises(ValueError, match=match):
        opta(**args)


# ---------------------------------------------------------------------- equipartition


def _official_equipartition(scores, eps, iterations):
    """Plain transcription of the scaling loop of ``distributed_sinkhorn`` (one process)."""
    q = torch.exp(scores / eps).T
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(1, keepdim=True) / k
        q = q / q.sum(0, keepdim=True) / b
    return (q * b).T


@pytest.mark.parametrize("variant, sign", [("paper", -1.0), ("official_code", 1.0)])
def test_equipartition_matches_the_scaling_loop(variant, sign):
    e, c = _randn(12, 5, seed=1), _randn(4, 5, seed=2)
    en = e / e.norm(dim=1, keepdim=True)
    cn = c / c.norm(dim=1, keepdim=True)
    dist = torch.cdist(en, cn)
    ref = _official_equipartition(sign * dist, 0.3, 10)
    got = equipartition_assign(e, c, epsilon=0.3, iterations=10, variant=variant)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(got.sum(1), torch.ones(12, dtype=torch.float64))


def test_official_sign_assigns_to_the_farthest_prototype():
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    e = torch.tensor([[1.0, 0.1], [0.1, 1.0]], dtype=torch.float64)  # e0 ~ c0, e1 ~ c1
    paper = equipartition_assign(e, c, epsilon=0.05).argmax(1)
    code = equipartition_assign(e, c, epsilon=0.05, variant="official_code").argmax(1)
    assert paper.tolist() == [0, 1]
    assert code.tolist() == [1, 0]


def test_official_variant_warns_where_the_code_would_change_epsilon():
    e, c = _randn(8, 3, seed=1), _randn(4, 3, seed=2)
    with pytest.warns(RuntimeWarning, match="silently raises epsilon"):
        q = equipartition_assign(e, c, epsilon=1e-5, variant="official_code")
    assert torch.isfinite(q).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isfinite(equipartition_assign(e, c, epsilon=1e-5)).all()


def test_equipartition_bad_variant():
    with pytest.raises(ValueError, match=r"`variant` is 'code'"):
        equipartition_assign(torch.rand(4, 3), torch.rand(2, 3), variant="code")


# ---------------------------------------------------------------------- loss


def _reference_terms(p1, p2, t1, t2, s1, s2, temp):
    def unit(v):
        return v / v.norm()

    b = p1.shape[0]
    pos = 0.0
    for i in range(b):
        pos = pos - 0.5 * (unit(p1[i]) @ unit(t2[i].detach()) + unit(p2[i]) @ unit(t1[i].detach()))
    pos = pos / b
    z = [unit(v) for v in torch.cat([s1, s2])]
    n = len(z)
    total = 0.0
    for i in range(n):
        row = 0.0
        for j in range(n):
            if j != i and j != (i + b) % n:
                row = row + torch.exp(z[i] @ z[j] / temp)
        total = total + row / (n - 2)
    return pos, torch.log(total / n)


def test_loss_value_and_gradient_match_a_loop_reference():
    xs = [_randn(4, 6, seed=s).requires_grad_(True) for s in range(6)]
    pos, neg = beclr_loss_terms(*xs, temperature=2.0)
    rpos, rneg = _reference_terms(*xs, 2.0)
    torch.testing.assert_close(pos, rpos, atol=1e-12, rtol=0)
    torch.testing.assert_close(neg, rneg, atol=1e-12, rtol=0)
    loss = beclr_loss(*xs, lambda_neg=0.1)
    ref = rpos + 0.1 * rneg
    grads = torch.autograd.grad(loss, xs, allow_unused=True)
    rgrads = torch.autograd.grad(ref, xs, allow_unused=True)
    for name, g, r in zip(("p1", "p2", "t1", "t2", "s1", "s2"), grads, rgrads, strict=True):
        if name in ("t1", "t2"):  # stop-gradient on the teacher
            assert g is None and r is None
        else:
            torch.testing.assert_close(g, r, atol=1e-12, rtol=0)


def test_loss_negative_term_is_finite_at_a_small_temperature_in_float32():
    xs = [_randn(8, 5, seed=s, dtype=torch.float32) for s in range(6)]
    _, neg = beclr_loss_terms(*xs, temperature=0.005)
    assert torch.isfinite(neg)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(temperature=0.0), r"`temperature` is 0.0"),
        (dict(student2=torch.rand(4, 5)), r"`student2` has shape \(4, 5\)"),
        (dict(lambda_neg=-1.0), r"`lambda_neg` is -1.0"),
    ],
)
def test_loss_bad_arguments(change, match):
    args = {n: torch.rand(4, 6) for n in ("p1", "p2", "teacher1", "teacher2", "student1")}
    args["student2"] = torch.rand(4, 6)
    with pytest.raises(ValueError, match=match):
        beclr_loss(**(args | change))


def test_loss_needs_two_samples():
    xs = [torch.rand(1, 3) for _ in range(6)]
    with pytest.raises(ValueError, match=r"`p1` has a batch of 1"):
        beclr_loss(*xs)


# ---------------------------------------------------------------------- DyCE


def _clustered(variant="paper", seed=0):
    """A DyCE of 48 rows, 3 clusters, fed three well-separated groups until full."""
    d = DyCE(48, 4, 3, topk=2, epsilon=0.05, variant=variant, seed=seed)
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(4)[:3] * 5
    for _ in range(4):
        z1 = centres.repeat(4, 1) + 0.3 * torch.randn(12, 4, generator=g)
        z2 = centres.repeat(4, 1) + 0.3 * torch.randn(12, 4, generator=g)
        d(z1, z2, enhance=False)
    return d, centres, g


def test_memory_is_fifo_and_clusters_when_first_full():
    d = DyCE(10, 2, 2, topk=1)
    for step in range(2):
        z = torch.full((2, 2), float(step + 1))
        d(z, z + 0.5)
        assert not bool(d.clustered)
    d(torch.tensor([[3.0, -1.0]]), torch.tensor([[-3.0, 1.0]]))
    assert int(d.count) == 10 and int(d.ptr) == 0 and bool(d.clustered)
    assert d.memory[0].tolist() == [1.0, 1.0] and d.memory[9].tolist() == [-3.0, 1.0]
    assert set(d.labels.tolist()) <= {0, 1}


def test_kmeans_partition_recovers_separated_groups():
    d, centres, _ = _clustered()
    mem_group = (d.memory @ centres.T).argmax(1)
    for cl in range(3):  # every cluster is one group
        assert mem_group[d.labels == cl].unique().numel() == 1
    assert d.labels.unique().numel() == 3


def test_enhanced_batch_shapes_and_in_cluster_topk():
    d, centres, g = _clustered()
    z1 = (centres.repeat(2, 1) + 0.3 * torch.randn(6, 4, generator=g)).requires_grad_(True)
    z2 = centres.repeat(2, 1) + 0.3 * torch.randn(6, 4, generator=g)
    e1, e2 = d(z1, z2)
    assert e1.shape == (6 * 3, 4) and e2.shape == (6 * 3, 4)
    torch.testing.assert_close(e1[:6], z1)
    # Reference neighbours by loops over the memory (after this batch was enqueued).
    mem = d.memory / d.memory.norm(dim=1, keepdim=True)
    protos = d.prototypes / d.prototypes.norm(dim=1, keepdim=True)
    for i in range(6):
        zi = z1[i].detach() / z1[i].detach().norm()
        cl = int((protos @ zi).argmax())
        members = [j for j in range(48) if int(d.labels[j]) == cl]
        ranked = sorted(members, key=lambda j: -float(mem[j] @ zi))[:2]
        torch.testing.assert_close(e1[6 + 2 * i : 6 + 2 * i + 2], d.memory[ranked])
    e1.sum().backward()  # gradient reaches only the batch rows
    assert z1.grad is not None and torch.equal(z1.grad, torch.ones(6, 4))


def test_official_code_variant_indexes_memory_by_in_cluster_position():
    d, centres, g = _clustered(variant="official_code")
    z = centres + 0.3 * torch.randn(3, 4, generator=g)
    idx = d.neighbours(z)
    mem = d.memory / d.memory.norm(dim=1, keepdim=True)
    protos = d.prototypes / d.prototypes.norm(dim=1, keepdim=True)
    for i in range(3):
        zi = z[i] / z[i].norm()
        cl = int((protos @ zi).argmax())
        members = [j for j in range(48) if int(d.labels[j]) == cl]
        sims = [float(mem[j] @ zi) for j in members]
        positions = sorted(range(len(members)), key=lambda p: -sims[p])[:2]
        assert idx[i].tolist() == positions  # positions, not memory rows (the code's bug)


def test_assignment_is_equipartitioned_over_a_batch():
    d, centres, g = _clustered()
    z = centres.repeat(8, 1) + 0.3 * torch.randn(24, 4, generator=g)
    q = equipartition_assign(z, d.prototypes, epsilon=0.05, iterations=50)
    torch.testing.assert_close(
        q.sum(0), torch.full((3,), 8.0), atol=1e-3, rtol=0
    )  # K columns share the B samples equally
    assert torch.bincount(q.argmax(1), minlength=3).tolist() == [8, 8, 8]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_clusters=20), r"`num_clusters` is 20 with size=10"),
        (dict(variant="x"), r"`variant` is 'x'"),
        (dict(momentum=2.0), r"`momentum` is 2.0"),
        (dict(topk=0), r"`topk` is 0"),
    ],
)
def test_dyce_bad_arguments(kwargs, match):
    args = dict(size=10, dim=2, num_clusters=2) | kwargs
    with pytest.raises(ValueError, match=match):
        DyCE(**args)


def test_dyce_rejects_wrong_dimension():
    with pytest.raises(ValueError, match=r"`z1` has dimension 3"):
        DyCE(10, 2, 2)(torch.rand(2, 3), torch.rand(2, 3))


# ---------------------------------------------------------------------- results script


def test_seed_script_smoke(tmp_path):
    from conftest import run_seed_script

    text = run_seed_script("beclr", tmp_path)
    assert "### beclr:" in text
    assert "| encoder |" in text and "OpTA" in text
    assert "Smoke run" in text
