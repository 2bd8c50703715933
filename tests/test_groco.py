"""GroCo (Shvetsova et al., ICCV 2023), its differentiable sorting network (Petersen et
al., ICML 2021 / ICLR 2022) and the fair baseline (NT-Xent, top-k negatives, stop-grad).

Loop references below share no code with the library: scalar compare-and-swap networks
written layer by layer, cosine similarities from explicit sums, BCE from its formula.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

import contrastkit.functional as F
from contrastkit import create_loss
from contrastkit.losses import GroCo, InfoNCE
from contrastkit.losses._diffsort import SortingNetwork, network_tensors, soft_sort

ROOT = Path(__file__).resolve().parents[1]


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------ loop references


def ref_weight(d, steepness, interpolation, art_lambda=0.25):
    """alpha of a relaxed comparator from d = (value that should be larger) - (smaller)."""
    if interpolation == "cauchy":
        return torch.atan(steepness * d) / math.pi + 0.5
    if interpolation == "logistic":
        return 1.0 / (1.0 + torch.exp(-steepness * d))
    phi = d / (torch.abs(d) + 1e-10) ** art_lambda
    return 1.0 / (1.0 + torch.exp(-steepness * phi))


def ref_compare(vals, cols, lo, hi, steepness, interpolation):
    """Relaxed compare-and-swap: wire lo takes the soft minimum, wire hi the soft max."""
    a, b = vals[lo], vals[hi]
    alpha = ref_weight(b - a, steepness, interpolation)
    soft_min = alpha * a + (1 - alpha) * b
    soft_max = (1 - alpha) * a + alpha * b
    col_min = [alpha * p + (1 - alpha) * q for p, q in zip(cols[lo], cols[hi], strict=True)]
    col_max = [(1 - alpha) * p + alpha * q for p, q in zip(cols[lo], cols[hi], strict=True)]
    vals[lo], vals[hi] = soft_min, soft_max
    cols[lo], cols[hi] = col_min, col_max


def ref_odd_even(x, steepness=1.0, interpolation="cauchy"):
    """Relaxed odd-even transposition sort of a list of 0-d tensors. Returns the values
    and P as nested lists, P[r][c] = weight of input r at output position c."""
    n = len(x)
    vals = list(x)
    one, zero = torch.ones((), dtype=x[0].dtype), torch.zeros((), dtype=x[0].dtype)
    cols = [[one if r == c else zero for r in range(n)] for c in range(n)]  # cols[c][r]
    for layer in range(n):
        start = 0 if layer % 2 == 0 else 1
        for i in range(start, n - 1, 2):
            ref_compare(vals, cols, i, i + 1, steepness, interpolation)
    return vals, [[cols[c][r] for c in range(n)] for r in range(n)]


def ref_bitonic(x, steepness=1.0, interpolation="cauchy"):
    """Textbook recursive bitonic sort (directional comparators), n a power of two."""
    n = len(x)
    vals = list(x)
    one, zero = torch.ones((), dtype=x[0].dtype), torch.zeros((), dtype=x[0].dtype)
    cols = [[one if r == c else zero for r in range(n)] for c in range(n)]

    def merge(lo, m, up):
        if m == 1:
            return
        d = m // 2
        for i in range(lo, lo + d):
            small, large = (i, i + d) if up else (i + d, i)
            ref_compare(vals, cols, small, large, steepness, interpolation)
        merge(lo, d, up)
        merge(lo + d, d, up)

    def sort(lo, m, up):
        if m == 1:
            return
        sort(lo, m // 2, True)
        sort(lo + m // 2, m // 2, False)
        merge(lo, m, up)

    sort(0, n, True)
    return vals, [[cols[c][r] for c in range(n)] for r in range(n)]


def ref_cos(a, b):
    dot = sum(a[t] * b[t] for t in range(len(a)))
    na = torch.sqrt(sum(a[t] * a[t] for t in range(len(a))))
    nb = torch.sqrt(sum(b[t] * b[t] for t in range(len(b))))
    return dot / (na * nb)


def ref_bce(p, t):
    """BCE with torch.nn.BCELoss's clamp of each log at -100."""
    log_p = torch.clamp(torch.log(p), min=-100.0)
    log_q = torch.clamp(torch.log(1 - p), min=-100.0)
    return -(t * log_p + (1 - t) * log_q)


def ref_groco(views, topk_neg=10, steepness=1.0, interpolation="cauchy", stop_grad=True):
    """Per-anchor GroCo loss, view-major, from scalar loops."""
    v, n = len(views), views[0].shape[0]
    out = []
    for a in range(v):
        for i in range(n):
            anchor = views[a][i]
            pos = []
            for u in range(v):
                if u != a:
                    target = views[u][i].detach() if stop_grad else views[u][i]
                    pos.append(ref_cos(anchor, target))
            neg = []
            for j in range(n):
                if j != i:
                    target = views[a][j].detach() if stop_grad else views[a][j]
                    neg.append(ref_cos(anchor, target))
            k = min(topk_neg, n - 1)
            neg = sorted(neg, key=lambda s: float(s.detach()), reverse=True)[:k]
            sims = sorted(neg, key=lambda s: float(s.detach())) + sorted(
                pos, key=lambda s: float(s.detach())
            )
            _, perm = ref_odd_even(sims, steepness, interpolation)
            size = len(sims)
            total = 0.0
            for r in range(size):
                to_pos = sum(perm[r][c] for c in range(k, size))
                to_neg = sum(perm[r][c] for c in range(k))
                to_pos = torch.clamp(to_pos, 0.0, 1.0)
                to_neg = torch.clamp(to_neg, 0.0, 1.0)
                is_pos = 1.0 if r >= k else 0.0
                total = total + 0.5 * (ref_bce(to_pos, is_pos) + ref_bce(to_neg, 1.0 - is_pos))
            out.append(total / size)
    return torch.stack(out)


def ref_nt_xent_hard(views, temperature, k, stop_grad):
    """Per-anchor NT-Xent where each anchor keeps its positives and its k most similar
    negatives (of all views); with stop_grad only the anchor side gets a gradient."""
    v, n = len(views), views[0].shape[0]
    rows = [(u, j) for u in range(v) for j in range(n)]
    out = []
    for a, i in rows:
        anchor = views[a][i]
        pos, neg = [], []
        for u, j in rows:
            if (u, j) == (a, i):
                continue
            cand = views[u][j].detach() if stop_grad else views[u][j]
            s = ref_cos(anchor, cand) / temperature
            (pos if j == i else neg).append(s)
        neg = sorted(neg, key=lambda s: float(s.detach()), reverse=True)[:k]
        denom = torch.logsumexp(torch.stack(pos + neg), 0)
        out.append(sum(denom - p for p in pos) / len(pos))
    return torch.stack(out)


def leaves(v, n, d, seed=0):
    return [randn(n, d, seed=seed + t).requires_grad_(True) for t in range(v)]


def value_and_grads(fn, xs, cotangent):
    out = fn(xs)
    (out * cotangent).sum().backward()
    grads = [x.grad.clone() for x in xs]
    for x in xs:
        x.grad = None
    return out.detach(), grads


def assert_matches(fast, slow, xs, cotangent):
    v1, g1 = value_and_grads(fast, xs, cotangent)
    v2, g2 = value_and_grads(slow, xs, cotangent)
    torch.testing.assert_close(v1, v2, rtol=1e-10, atol=1e-13)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ sorting network


@pytest.mark.parametrize("interpolation", ["cauchy", "logistic", "logistic_phi"])
@pytest.mark.parametrize("n", [2, 5, 6, 11])
def test_odd_even_matches_loop_reference(interpolation, n):
    x = randn(3, n, seed=n).requires_grad_(True)
    partner, sign = network_tensors("odd_even", n)
    vals, perm = soft_sort(x, partner, sign, steepness=2.0, interpolation=interpolation)
    cot_v, cot_p = randn(3, n, seed=1), randn(3, n, n, seed=2)
    ((vals * cot_v).sum() + (perm * cot_p).sum()).backward()
    g_fast = x.grad.clone()
    x.grad = None
    ref_vals, ref_perm, loss = [], [], 0.0
    for b in range(3):
        rv, rp = ref_odd_even([x[b, i] for i in range(n)], 2.0, interpolation)
        ref_vals.append(torch.stack(rv))
        ref_perm.append(torch.stack([torch.stack(row) for row in rp]))
        loss = loss + (ref_vals[-1] * cot_v[b]).sum() + (ref_perm[-1] * cot_p[b]).sum()
    loss.backward()
    torch.testing.assert_close(vals, torch.stack(ref_vals), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(perm, torch.stack(ref_perm), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_fast, x.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_bitonic_matches_recursive_directional_reference(n):
    x = randn(2, n, seed=n)
    partner, sign = network_tensors("bitonic", n)
    vals, perm = soft_sort(x, partner, sign, steepness=3.0, interpolation="cauchy")
    for b in range(2):
        rv, rp = ref_bitonic([x[b, i] for i in range(n)], 3.0, "cauchy")
        torch.testing.assert_close(vals[b], torch.stack(rv), rtol=1e-12, atol=1e-14)
        ref_p = torch.stack([torch.stack(row) for row in rp])
        torch.testing.assert_close(perm[b], ref_p, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["odd_even", "bitonic"])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 11, 13, 16, 22, 33])
def test_hard_limit_is_torch_sort(kind, n):
    x = randn(20, n, seed=n)
    partner, sign = network_tensors(kind, n)
    hard = torch.zeros(20, n, n, dtype=torch.float64)
    order = x.argsort(dim=1)  # output position c holds input order[c]
    hard[torch.arange(20)[:, None], order, torch.arange(n)[None, :]] = 1.0
    vals, perm = soft_sort(x, partner, sign, steepness=1e9, interpolation="logistic")
    assert torch.equal(vals, x.sort(dim=1).values)
    assert torch.equal(perm, hard)
    # The Cauchy sigmoid only reaches a hard swap asymptotically: each comparator leaks
    # 1 - alpha ~ 1 / (pi s d) for a gap d, so the error is bounded by a few comparators'
    # leaks at the smallest gap of the row.
    vals, perm = soft_sort(x, partner, sign, steepness=1e12, interpolation="cauchy")
    gaps = x.sort(dim=1).values.diff(dim=1)
    tol = 2 * n / (math.pi * 1e12 * float(gaps.min())) if n > 1 else 0.0
    torch.testing.assert_close(perm, hard, rtol=0, atol=tol)
    torch.testing.assert_close(vals, x.sort(dim=1).values, rtol=0, atol=tol)


@pytest.mark.parametrize("kind", ["odd_even", "bitonic"])
@pytest.mark.parametrize("interpolation", ["cauchy", "logistic", "logistic_phi"])
def test_relaxed_permutation_is_doubly_stochastic(kind, interpolation):
    n = 12
    x = randn(5, n, seed=3)
    partner, sign = network_tensors(kind, n)
    vals, perm = soft_sort(x, partner, sign, steepness=0.7, interpolation=interpolation)
    ones = torch.ones(5, n, dtype=torch.float64)
    torch.testing.assert_close(perm.sum(1), ones, rtol=0, atol=1e-14)
    torch.testing.assert_close(perm.sum(2), ones, rtol=0, atol=1e-14)
    assert bool((perm >= 0).all()) and bool((perm <= 1).all())
    torch.testing.assert_close(vals, (x[:, None, :] @ perm)[:, 0], rtol=1e-12, atol=1e-14)
    # Soft sorting keeps the sum of the values (every comparator is a convex mix).
    torch.testing.assert_close(vals.sum(1), x.sum(1), rtol=1e-12, atol=1e-13)


def test_sorting_network_buffers_follow_the_module():
    net = SortingNetwork("odd_even", 11)
    assert set(dict(net.named_buffers())) == {"partner", "sign"}
    assert net.state_dict() == {}  # rebuilt from (kind, size), never saved
    assert net.partner.shape == (11, 11)  # 11 layers for 11 wires
    x = randn(4, 11)
    vals, perm = net(x, steepness=2.0)
    partner, sign = network_tensors("odd_even", 11)
    expected = soft_sort(x, partner, sign, steepness=2.0)
    torch.testing.assert_close(perm, expected[1], rtol=0, atol=0)
    torch.testing.assert_close(vals, expected[0], rtol=0, atol=0)


def _diffsort():
    try:
        import diffsort as module
    except ImportError:
        pytest.skip("PyPI package `diffsort` is not installed (pip install --no-deps diffsort)")
    return module


@pytest.mark.parametrize("kind", ["odd_even", "bitonic"])
@pytest.mark.parametrize("interpolation", ["cauchy", "logistic", "logistic_phi"])
def test_matches_diffsort(kind, interpolation):
    ds = _diffsort()
    sizes = [2, 3, 4, 5, 8, 11, 12] if kind == "odd_even" else [2, 4, 8, 16]
    for n in sizes:
        x = randn(6, n, seed=n)
        ref = ds.DiffSortNet(kind, n, steepness=3.0, art_lambda=0.25, distribution=interpolation)
        ref_vals, ref_perm = ref(x)
        partner, sign = network_tensors(kind, n)
        vals, perm = soft_sort(x, partner, sign, steepness=3.0, interpolation=interpolation)
        torch.testing.assert_close(perm, ref_perm, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(vals, ref_vals, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ GroCo

GROCO_CASES = [
    dict(v=2, n=7, topk_neg=3),
    dict(v=2, n=5, topk_neg=10),  # fewer than topk_neg negatives: all 4 are used
    dict(v=3, n=6, topk_neg=2, stop_grad=False),
    dict(v=2, n=6, topk_neg=4, steepness=4.0, interpolation="logistic"),
    dict(v=4, n=4, topk_neg=2, steepness=0.5),
]


@pytest.mark.parametrize("case", GROCO_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_groco_matches_loop_reference(case):
    case = dict(case)
    v, n = case.pop("v"), case.pop("n")
    xs = leaves(v, n, 4, seed=v + n)
    cot = randn(v * n, seed=11)
    assert_matches(
        lambda x: F.groco(*x, reduction="none", **case),
        lambda x: ref_groco(x, **case),
        xs,
        cot,
    )


def test_groco_matches_official_computation_with_diffsort():
    """A second reference: the official ``GroCo.compute_loss`` pipeline (cosine,
    sort, top-k, [neg, pos], ``DiffSortNet`` permutation, group sums, clip, BCELoss),
    written from the paper's code with the authors' sorter, on two views."""
    ds = _diffsort()
    k, n = 5, 9
    z1, z2 = leaves(2, n, 6, seed=3)
    sorter = ds.DiffSortNet(
        "odd_even", k + 1, steepness=1.0, art_lambda=0.25, distribution="cauchy"
    )
    bce = torch.nn.BCELoss()
    total = 0.0
    for anchor, other in ((z1, z2), (z2, z1)):
        pos = torch.nn.functional.cosine_similarity(anchor, other.detach(), dim=1)[:, None]
        a = torch.nn.functional.normalize(anchor, dim=1)
        b = torch.nn.functional.normalize(anchor.detach(), dim=1)
        neg = (a @ b.T).masked_fill(torch.eye(n, dtype=torch.bool), -float("inf"))
        neg = torch.topk(neg, k=k, dim=1).values.flip(1)
        _, perm = sorter(torch.cat([neg, pos], 1))
        pred_neg = perm[:, :, :k].sum(2).clip(0, 1)
        pred_pos = perm[:, :, k:].sum(2).clip(0, 1)
        target_pos = (torch.arange(k + 1) >= k).double().expand(n, k + 1)
        total = total + (bce(pred_pos, target_pos) + bce(pred_neg, 1 - target_pos)) / 2
    official = total / 2
    official.backward()
    g_ref = [z1.grad.clone(), z2.grad.clone()]
    z1.grad = z2.grad = None
    ours = F.groco(z1, z2, topk_neg=k)
    ours.backward()
    torch.testing.assert_close(ours.detach(), official.detach(), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(z1.grad, g_ref[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(z2.grad, g_ref[1], rtol=1e-9, atol=1e-12)


def test_groco_hard_limit_counts_misordered_positives():
    """With a hard sort the loss counts the elements sorted into the wrong group (each
    costs BCELoss's clamped -log 0 = 100): the abstract's "how many positive pairs have a
    larger distance than the negative pairs"."""
    n, k = 5, 4
    angles = torch.tensor([0.0, 1.1, 2.0, 2.7, 4.2], dtype=torch.float64)  # no tied sims
    z1 = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    # view 2 is rotated by `shift` per sample: cos(shift) is each sample's positive sim
    shifts = torch.tensor([0.1, 0.5, 1.5, 0.1, 0.1], dtype=torch.float64)
    z2 = torch.stack([torch.cos(angles + shifts), torch.sin(angles + shifts)], 1)
    per_anchor = F.groco(
        z1, z2, topk_neg=k, steepness=1e9, interpolation="logistic", reduction="none"
    )
    expected = []
    for a, b in ((z1, z2), (z2, z1)):
        sims = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
        own = a @ a.T / (a.norm(dim=1)[:, None] * a.norm(dim=1)[None, :])
        for i in range(n):
            negs = [float(own[i, j]) for j in range(n) if j != i]
            wrong = 2 * int(max(negs) > float(sims[i, i]))  # one positive, k negatives
            expected.append(100.0 * wrong / (k + 1))
    torch.testing.assert_close(per_anchor, torch.tensor(expected, dtype=torch.float64))
    assert any(e > 0 for e in expected) and any(e == 0 for e in expected)


def test_groco_invariances():
    z = randn(8, 3, 5, seed=4)
    base = F.groco(z, topk_neg=4, reduction="none")
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    view_major_perm = torch.cat([perm + 8 * t for t in range(3)])
    torch.testing.assert_close(
        F.groco(z[perm], topk_neg=4, reduction="none"), base[view_major_perm]
    )
    scaled = z * (
        0.1
        + 5 * torch.rand(8, 3, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    )
    torch.testing.assert_close(F.groco(scaled, topk_neg=4, reduction="none"), base)
    # the (N, V, D) layout equals V separate tensors
    torch.testing.assert_close(
        F.groco(z[:, 0], z[:, 1], z[:, 2], topk_neg=4, reduction="none"), base
    )


def test_groco_stop_grad_changes_gradient_not_value():
    z1, z2 = leaves(2, 6, 4, seed=5)
    a = F.groco(z1, z2, topk_neg=3, stop_grad=True)
    b = F.groco(z1, z2, topk_neg=3, stop_grad=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    ga = torch.autograd.grad(a, z1)[0]
    gb = torch.autograd.grad(b, z1)[0]
    assert (ga - gb).abs().max() > 1e-6


def test_groco_reductions():
    xs = [randn(6, 4, seed=t) for t in range(2)]
    none = F.groco(*xs, topk_neg=3, reduction="none")
    assert none.shape == (12,)
    torch.testing.assert_close(F.groco(*xs, topk_neg=3), none.mean())
    torch.testing.assert_close(F.groco(*xs, topk_neg=3, reduction="sum"), none.sum())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_groco_low_precision(dtype):
    xs = [randn(8, 6, seed=t).to(dtype).requires_grad_(True) for t in range(2)]
    loss = F.groco(*xs, topk_neg=4)
    assert loss.dtype == torch.float32
    loss.backward()
    x64 = [x.detach().double().requires_grad_(True) for x in xs]
    loss64 = F.groco(*x64, topk_neg=4)
    loss64.backward()
    torch.testing.assert_close(loss.double(), loss64, rtol=1e-5, atol=1e-7)
    for x, y in zip(xs, x64, strict=True):
        assert torch.isfinite(x.grad).all()
        tol = 1e-2 if dtype != torch.float32 else 1e-5  # the grads are stored in `dtype`
        torch.testing.assert_close(x.grad.double(), y.grad, rtol=tol, atol=tol * 1e-2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(topk_neg=0), "topk_neg.*int >= 1"),
        (dict(topk_neg=2.5), "topk_neg.*int >= 1"),
        (dict(steepness=-1.0), "steepness.*> 0"),
        (dict(interpolation="gaussian"), "interpolation.*one of"),
        (dict(art_lambda=2.0), "art_lambda.*\\[0, 1\\]"),
        (dict(sorting_network="bubble"), "sorting_network.*one of"),
        (dict(reduction="avg"), "reduction.*one of"),
    ],
)
def test_groco_bad_hyperparameters(kwargs, match):
    xs = [randn(6, 4, seed=t) for t in range(2)]
    with pytest.raises(ValueError, match=match):
        F.groco(*xs, **kwargs)
    with pytest.raises(ValueError, match=match):
        GroCo(**kwargs)


def test_groco_bad_inputs():
    with pytest.raises(ValueError, match="views.*at least 2 views"):
        F.groco(randn(6, 4))
    with pytest.raises(ValueError, match="views\\[1\\].*shape"):
        F.groco(randn(6, 4), randn(5, 4))
    bad = randn(6, 4)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="views\\[0\\]"):
        F.groco(bad, randn(6, 4))
    with pytest.raises(ValueError, match="all-zero rows"):
        F.groco(torch.zeros(6, 4, dtype=torch.float64), randn(6, 4))
    with pytest.raises(TypeError, match="views\\[0\\].*torch.Tensor"):
        GroCo()([[1.0, 2.0]], randn(1, 2))


def test_groco_module_config_and_network():
    m = create_loss("groco", topk_neg=3, steepness=2.0, interpolation="logistic")
    assert isinstance(m, GroCo)
    assert create_loss("groco", **m.get_config()).get_config() == m.get_config()
    assert m.sorter.size == 4 and m.state_dict() == {}
    xs = [randn(6, 4, seed=t) for t in range(3)]
    torch.testing.assert_close(
        m(*xs), F.groco(*xs, topk_neg=3, steepness=2.0, interpolation="logistic")
    )
    assert m.sorter.size == 5  # resized for 3 views: k + P = 3 + 2
    toy = create_loss("groco")  # the registry's toy batch: 8 samples < topk_neg + 1
    assert torch.isfinite(toy(randn(8, 6), randn(8, 6)))


# ------------------------------------------------------------------ fair baseline


BASELINE_CASES = [
    dict(v=2, n=7, k=3, stop_grad=True, t=0.5),
    dict(v=2, n=6, k=10, stop_grad=True, t=0.5),  # k above the 2N - 2 = 10 negatives
    dict(v=3, n=5, k=4, stop_grad=True, t=0.2),
    dict(v=2, n=6, k=2, stop_grad=False, t=0.5),
    dict(v=2, n=6, k=None, stop_grad=True, t=0.01),
]


@pytest.mark.parametrize("case", BASELINE_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_info_nce_hardest_negatives_stop_grad_matches_loop_reference(case):
    v, n, k = case["v"], case["n"], case["k"]
    xs = leaves(v, n, 4, seed=7 + v)
    cot = randn(v * n, seed=12)
    kwargs = dict(temperature=case["t"], hardest_negatives=k, stop_grad=case["stop_grad"])
    assert_matches(
        lambda x: F.info_nce(*x, reduction="none", **kwargs),
        lambda x: ref_nt_xent_hard(x, case["t"], k if k is not None else 10**9, case["stop_grad"]),
        xs,
        cot,
    )


def test_info_nce_stop_grad_tiled_equals_plain():
    xs = leaves(2, 9, 4, seed=2)
    cot = randn(18, seed=3)
    assert_matches(
        lambda x: F.info_nce(*x, temperature=0.3, stop_grad=True, tile_size=4, reduction="none"),
        lambda x: F.info_nce(*x, temperature=0.3, stop_grad=True, tile_size=0, reduction="none"),
        xs,
        cot,
    )


def test_fair_baseline_module():
    m = create_loss("infonce", temperature=0.5, hardest_negatives=10, stop_grad=True)
    assert isinstance(m, InfoNCE)
    assert create_loss("infonce", **m.get_config()).get_config() == m.get_config()
    xs = [randn(8, 6, seed=t) for t in range(2)]
    torch.testing.assert_close(
        m(*xs), F.info_nce(*xs, temperature=0.5, hardest_negatives=10, stop_grad=True)
    )
    with pytest.raises(ValueError, match="hardest_negatives.*int >= 1"):
        InfoNCE(hardest_negatives=0)
    with pytest.raises(ValueError, match="hardest_negatives.*int >= 1"):
        F.info_nce(*xs, hardest_negatives=-2)
    with pytest.raises(ValueError, match="tile_size.*hard-negative"):
        F.info_nce(*xs, hardest_negatives=3, tile_size=4)


# ------------------------------------------------------------------ results script


def test_seed_script_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("seed_groco", ROOT / "scripts/seeds/groco.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "results.md"
    module.main(["--smoke", "--out", str(out)])
    text = out.read_text()
    assert "<!-- seed:groco -->" in text and "### groco:" in text
    assert "| GroCo" in text and "| NT-Xent top-10 negatives, stop-grad" in text
