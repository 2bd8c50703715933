"""SyCL's list-wise 2-Wasserstein loss (Esfandiarpoor et al., Findings EMNLP 2025): the
per-query form against a north-west-corner loop reference and a transport LP, the code's
batch Fréchet form against a loop/numpy reference and a re-derivation of the released
code, permutation behaviour, repeated eigenvalues, dtypes, errors, module config and the
seed script's smoke run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import contrastkit
import contrastkit.functional as F
from conftest import run_seed_script
from contrastkit.losses import ListwiseWasserstein
from contrastkit.losses.listwise import SQRT_EPS, _frechet, _grade_w2


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def grades(b, g, seed=0, high=4):
    return torch.randint(0, high, (b, g), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- references


def _sim(a, b, similarity):
    if similarity == "cosine":
        return (a * b).sum() / (a.norm() * b.norm())
    return (a * b).sum()


def ref_distributions(queries, docs, relevance, t, in_batch=True, similarity="cosine"):
    """Per query: candidate grades, predicted softmax and target softmax, as scalar loops."""
    b, g, _ = docs.shape
    out = []
    for i in range(b):
        cands = (
            [(j, m) for j in range(b) for m in range(g)] if in_batch else [(i, m) for m in range(g)]
        )
        s = [_sim(queries[i], docs[j, m], similarity) / t for j, m in cands]
        r = [float(relevance[j, m]) if j == i else 0.0 for j, m in cands]
        top = max(float(x.detach()) for x in s)
        z = sum(torch.exp(x - top) for x in s)
        p = [torch.exp(x - top) / z for x in s]
        zt = sum(math.exp(x) for x in r)
        out.append((r, p, [math.exp(x) / zt for x in r]))
    return out


def ref_w2_north_west(r, p, q):
    """1-D W2^2 between masses p and q at positions r: monotone (north-west corner)
    coupling of the grade masses, moving min(remaining) at each step."""
    levels = sorted(set(r))
    pm = [sum(pi for ri, pi in zip(r, p, strict=True) if ri == lv) for lv in levels]
    qm = [sum(qi for ri, qi in zip(r, q, strict=True) if ri == lv) for lv in levels]
    i = j = 0
    a, c = pm[0], qm[0]
    total = 0.0
    while i < len(levels) and j < len(levels):
        a_val = float(a.detach()) if isinstance(a, torch.Tensor) else a
        c_val = float(c.detach()) if isinstance(c, torch.Tensor) else c
        move = a if a_val <= c_val else c
        total = total + move * (levels[i] - levels[j]) ** 2
        a, c = a - move, c - move
        if a_val <= c_val:
            i += 1
            if i < len(levels):
                a = pm[i]
        else:
            j += 1
            if j < len(levels):
                c = qm[j]
    return total


def ref_paper(queries, docs, relevance, t, in_batch=True, similarity="cosine"):
    dists = ref_distributions(queries, docs, relevance, t, in_batch, similarity)
    return torch.stack([ref_w2_north_west(r, p, q) for r, p, q in dists])


def lp_w2(r, p, q):
    """W2^2 between two distributions over passages (not grades) by the transport LP,
    cost (r_a - r_b)^2: checks that pushing onto the grade axis loses nothing."""
    from scipy.optimize import linprog

    n = len(r)
    cost = np.array([[(r[a] - r[b]) ** 2 for b in range(n)] for a in range(n)]).ravel()
    rows = np.kron(np.eye(n), np.ones((1, n)))
    cols = np.kron(np.ones((1, n)), np.eye(n))
    res = linprog(cost, A_eq=np.vstack([rows, cols]), b_eq=np.concatenate([p, q]), bounds=(0, None))
    assert res.status == 0
    return res.fun


def ref_frechet_value(pred, target):
    """Fréchet distance by loops (means, covariances) and numpy eigenvalues of the n x n
    product S_P S_T; its non-zero eigenvalues are those of the code's B x B matrix (the
    code adds 1e-15 to each of its B eigenvalues, zeros included)."""
    b, n = len(pred), len(pred[0])
    mu_p = [sum(pred[i][a] for i in range(b)) / b for a in range(n)]
    mu_t = [sum(target[i][a] for i in range(b)) / b for a in range(n)]

    def cov(x, mu):
        return np.array(
            [
                [
                    sum((x[i][a] - mu[a]) * (x[i][c] - mu[c]) for i in range(b)) / (b - 1)
                    for c in range(n)
                ]
                for a in range(n)
            ]
        )

    s_p, s_t = cov(pred, mu_p), cov(target, mu_t)
    eig = np.sort(np.linalg.eigvals(s_p @ s_t).real)[::-1][:b]
    eig = np.concatenate([eig, np.zeros(b - len(eig))])  # B x B has B - n more zeros if n < B
    sqrt_trace = sum(math.sqrt(abs(e + SQRT_EPS)) for e in eig)
    mean = sum((mu_p[a] - mu_t[a]) ** 2 for a in range(n))
    return mean + np.trace(s_p) + np.trace(s_t) - 2 * sqrt_trace


def code_rederived(pred, target):
    """The released ``calc_dist`` re-derived from its description: features x samples,
    sample covariances, Tr sqrt via general ``eigvals`` of the B x B product, + 1e-15."""
    x, y = pred.T.double(), target.T.double()
    b = x.shape[1]
    ex, ey = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    cx, cy = ex / math.sqrt(b - 1), ey / math.sqrt(b - 1)
    s = torch.linalg.eigvals((cx.T @ cy) @ (cy.T @ cx)) + SQRT_EPS
    mean = ((x.mean(1) - y.mean(1)) ** 2).sum()
    return mean + (cx**2).sum() + (cy**2).sum() - 2 * s.sqrt().abs().sum()


def _value_and_grads(fn, inputs, cotangent=None):
    xs = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = fn(*xs)
    grads = torch.autograd.grad(out, xs, cotangent)
    return out.detach(), grads


# ----------------------------------------------------------------------------- paper form

PAPER_CONFIGS = [
    # (b, g, temperature, in_batch, similarity)
    (3, 4, 0.5, True, "cosine"),
    (4, 3, 0.1, True, "cosine"),
    (3, 5, 0.3, False, "cosine"),
    (2, 4, 2.0, True, "dot"),
]


@pytest.mark.parametrize("b,g,t,in_batch,similarity", PAPER_CONFIGS)
def test_paper_form_matches_loop_reference(b, g, t, in_batch, similarity):
    q, d, rel = randn(b, 5, seed=b), randn(b, g, 5, seed=g), grades(b, g, seed=b + g)
    cot = randn(b, seed=7)

    def fast(q, d):
        return F.listwise_wasserstein(
            q, d, relevance=rel, temperature=t, in_batch_negatives=in_batch,
            similarity=similarity, reduction="none",
        )  # fmt: skip

    v, gr = _value_and_grads(fast, [q, d], cot)
    rv, rg = _value_and_grads(
        lambda q, d: ref_paper(q, d, rel, t, in_batch, similarity), [q, d], cot
    )
    torch.testing.assert_close(v, rv, rtol=1e-10, atol=1e-12)
    for x, y in zip(gr, rg, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)


def test_paper_form_equals_the_passage_level_transport_lp():
    q, d, rel = randn(3, 5, seed=1), randn(3, 3, 5, seed=2), grades(3, 3, seed=3)
    got = F.listwise_wasserstein(q, d, relevance=rel, temperature=0.4, reduction="none")
    for i, (r, p, t) in enumerate(ref_distributions(q, d, rel, 0.4)):
        p = np.array([float(x) for x in p])
        assert float(got[i]) == pytest.approx(lp_w2(r, p / p.sum(), np.array(t)), abs=1e-8)


def test_grade_w2_hand_computed():
    # Two passages, grades (1, 0): 0.3 of the mass must move one grade: W2^2 = 0.3.
    one = _grade_w2(
        torch.tensor([[0.3, 0.7]]), torch.tensor([[0.6, 0.4]]), torch.tensor([[1.0, 0.0]])
    )
    torch.testing.assert_close(one, torch.tensor([0.3]))
    # Grades (2, 1, 0), P = (.2, .3, .5), T = (.5, .3, .2): quantile segments
    # (0, .2) 0->0, (.2, .5) 0->1, (.5, .8) 1->2, (.8, 1) 2->2: 0.3 + 0.3 = 0.6.
    two = _grade_w2(
        torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64),
        torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64),
        torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64),
    )
    torch.testing.assert_close(
        two, torch.tensor([0.6], dtype=torch.float64), rtol=1e-12, atol=1e-15
    )
    # Mass moved within one grade costs nothing.
    same = _grade_w2(
        torch.tensor([[0.9, 0.1]]), torch.tensor([[0.1, 0.9]]), torch.tensor([[2.0, 2.0]])
    )
    assert float(same) == 0.0


def test_permutations_per_query_form_changes_code_form_does_not():
    b, g = 5, 3
    q, d, rel = randn(b, 6, seed=11), randn(b, g, 6, seed=12), grades(b, g, seed=13)
    perm = torch.tensor([2, 0, 4, 1, 3])
    kw = dict(relevance=rel, temperature=0.2)
    paper, shuffled = F.listwise_wasserstein(q, d, **kw), F.listwise_wasserstein(q[perm], d, **kw)
    assert abs(float(paper - shuffled)) > 1e-3
    code = F.listwise_wasserstein(q, d, variant="official_code", **kw)
    code_shuffled = F.listwise_wasserstein(q[perm], d, variant="official_code", **kw)
    torch.testing.assert_close(code_shuffled, code, rtol=1e-10, atol=1e-12)
    # Target rows against themselves: zero per query; permuted rows: not zero per query,
    # zero for the code's set-level distance (up to the 1e-15 guard: 2 B sqrt(1e-15)).
    full = torch.block_diag(*rel.double().unbind(0))
    t = torch.softmax(full, 1)
    assert float(_grade_w2(t, t, full).abs().max()) <= 1e-15
    assert float(_grade_w2(t[perm], t, full).sum()) > 1e-2
    for pred in (t, t[perm]):
        assert abs(float(_frechet(pred, t))) <= 2 * b * math.sqrt(SQRT_EPS)


# ----------------------------------------------------------------------------- code form


@pytest.mark.parametrize(
    "b,g,t,in_batch", [(3, 2, 0.5, True), (4, 3, 0.2, True), (5, 4, 1.0, False)]
)
def test_code_form_matches_loop_reference_and_rederived_code(b, g, t, in_batch):
    q, d, rel = randn(b, 5, seed=b), randn(b, g, 5, seed=g + 1), grades(b, g, seed=3)
    kw = dict(relevance=rel, temperature=t, in_batch_negatives=in_batch, variant="official_code")
    value = F.listwise_wasserstein(q, d, **kw)
    dists = ref_distributions(q, d, rel, t, in_batch)
    pred = [[float(x) for x in p] for _, p, _ in dists]
    target = [list(tt) for _, _, tt in dists]
    # The guard sqrt(|lambda + 1e-15|) turns round-off of the null eigenvalue (~1e-17)
    # into ~1e-10 absolute: hence atol 1e-9 on the value.
    assert float(value) == pytest.approx(ref_frechet_value(pred, target), rel=1e-10, abs=1e-9)
    pt, tt = torch.tensor(pred, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    torch.testing.assert_close(value, code_rederived(pt, tt), rtol=1e-10, atol=1e-9)


def ref_frechet_svd(pred, target):
    """Autograd reference by another route: Tr (S_P S_T)^(1/2) is the nuclear norm of
    A = C_P C_T^T (sum of singular values; ``svdvals`` has a gap-free gradient), with the
    code's guard written as sqrt(sigma^2 + 1e-15)."""
    b = pred.shape[0]
    mu_p, mu_t = pred.sum(0) / b, target.sum(0) / b
    c_p, c_t = (pred - mu_p) / math.sqrt(b - 1), (target - mu_t) / math.sqrt(b - 1)
    sigma = torch.linalg.svdvals(c_p @ c_t.T)
    sqrt_trace = torch.sqrt(sigma**2 + SQRT_EPS).sum()
    return ((mu_p - mu_t) ** 2).sum() + (c_p**2).sum() + (c_t**2).sum() - 2 * sqrt_trace


# The guard sqrt(|lambda + 1e-15|) multiplies round-off in the null direction by up to
# 1 / (2 sqrt(1e-15)) ~ 1.6e7, so gradients agree to ~1e-9 absolute, not to 1e-12.
GRAD_TOL = dict(rtol=1e-6, atol=1e-8)


def test_code_form_gradient_matches_two_other_routes():
    b, g, t = 4, 3, 0.3
    q, d, rel = randn(b, 5, seed=21), randn(b, g, 5, seed=22), grades(b, g, seed=23)
    tgt = torch.softmax(torch.block_diag(*rel.double().unbind(0)), 1)
    cot = randn(1, seed=5)[0]
    for p_in in (
        torch.softmax(randn(b, b * g, seed=24), 1),
        torch.softmax(randn(b, b * g, seed=25) * 5, 1),
    ):
        v, (ours,) = _value_and_grads(lambda p: _frechet(p, tgt), [p_in], cot)
        rv, (svd,) = _value_and_grads(lambda p: ref_frechet_svd(p, tgt), [p_in], cot)
        _, (code,) = _value_and_grads(lambda p: code_rederived(p, tgt), [p_in], cot)
        torch.testing.assert_close(v, rv, rtol=1e-10, atol=1e-9)
        torch.testing.assert_close(ours, svd, **GRAD_TOL)
        torch.testing.assert_close(ours, code, **GRAD_TOL)
    # Through the API: embeddings -> softmax -> distance, against the svd route.
    kw = dict(relevance=rel, temperature=t, variant="official_code")

    def ref_api(q, d):
        dists = ref_distributions(q, d, rel, t)
        return ref_frechet_svd(torch.stack([torch.stack(p) for _, p, _ in dists]), tgt)

    _, ga = _value_and_grads(lambda q, d: F.listwise_wasserstein(q, d, **kw), [q, d])
    _, gr = _value_and_grads(ref_api, [q, d])
    for x, y in zip(ga, gr, strict=True):
        torch.testing.assert_close(x, y, **GRAD_TOL)


def test_code_form_repeated_eigenvalues_have_finite_gradients():
    n = 6
    onehot = torch.eye(3, n, dtype=torch.float64)
    p = 0.7 * onehot + 0.3 / n  # centred Gram ~ I - J/3: eigenvalues (c, c, 0)
    # P = T: all eigenvalues repeated and the distance at its minimum (gradient ~0).
    _, (grad,) = _value_and_grads(lambda x: _frechet(x, p), [p])
    assert torch.isfinite(grad).all() and float(grad.abs().max()) < 1e-8
    # T proportional in its centred part: repeated non-zero eigenvalues away from the
    # minimum; the gap-free svd route gives the same gradient.
    tgt = 0.4 * onehot + 0.6 / n
    _, (ours,) = _value_and_grads(lambda x: _frechet(x, tgt), [p])
    _, (svd,) = _value_and_grads(lambda x: ref_frechet_svd(x, tgt), [p])
    assert torch.isfinite(ours).all() and float(ours.abs().max()) > 1e-3
    torch.testing.assert_close(ours, svd, **GRAD_TOL)
    # Identical prediction rows: zero covariance, every eigenvalue 0, through the API.
    q = randn(1, 4, seed=1).repeat(3, 1)
    d, rel = randn(3, 2, 4, seed=2), grades(3, 2, seed=3)
    qq = q.clone().requires_grad_()
    F.listwise_wasserstein(qq, d, relevance=rel, variant="official_code").backward()
    assert torch.isfinite(qq.grad).all()


# ----------------------------------------------------------------------------- general


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("temperature", [0.01, 0.05, 1.0])
@pytest.mark.parametrize("variant", ["paper", "official_code"])
def test_low_precision_is_finite_and_close_to_float64(dtype, temperature, variant):
    q = randn(6, 8, seed=1).to(dtype).requires_grad_(True)
    d = randn(6, 4, 8, seed=2).to(dtype).requires_grad_(True)
    rel = grades(6, 4, seed=3)
    kw = dict(relevance=rel, temperature=temperature, variant=variant)
    out = F.listwise_wasserstein(q, d, **kw)
    out.backward()
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert torch.isfinite(q.grad).all() and torch.isfinite(d.grad).all()
    exact = F.listwise_wasserstein(q.detach().double(), d.detach().double(), **kw)
    torch.testing.assert_close(out.double(), exact, rtol=1e-4, atol=1e-5 / temperature)


def test_reductions_and_float_grades():
    q, d = randn(4, 5, seed=1), randn(4, 3, 5, seed=2)
    rel = grades(4, 3, seed=3).double() * 0.5  # float grades
    per = F.listwise_wasserstein(q, d, relevance=rel, reduction="none")
    assert per.shape == (4,) and bool((per >= 0).all())
    torch.testing.assert_close(F.listwise_wasserstein(q, d, relevance=rel), per.mean())
    torch.testing.assert_close(
        F.listwise_wasserstein(q, d, relevance=rel, reduction="sum"), per.sum()
    )


def test_module_config_round_trip_registry_and_learnable_temperature():
    loss = contrastkit.create_loss("listwise_wasserstein", temperature=0.1, variant="official_code")
    assert isinstance(loss, ListwiseWasserstein) and loss.inputs == "relevance"
    clone = contrastkit.create_loss("listwise_wasserstein", **loss.get_config())
    assert clone.get_config() == loss.get_config()
    q, d, rel = randn(4, 5, seed=1), randn(4, 2, 5, seed=2), grades(4, 2, seed=3)
    torch.testing.assert_close(
        loss(q, d, relevance=rel),
        F.listwise_wasserstein(q, d, relevance=rel, temperature=0.1, variant="official_code"),
    )
    learn = ListwiseWasserstein(learnable=True)
    learn(q.float(), d.float(), relevance=rel).backward()
    assert torch.isfinite(learn.logit_scale.log_scale.grad)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda q, d, r: F.listwise_wasserstein(q, d, relevance=r[:, :1]), r"`relevance` has shape \(3, 1\).*one grade per passage"),
        (lambda q, d, r: F.listwise_wasserstein(q, d, relevance=r - 1), r"`relevance` has negative entries.*>= 0"),
        (lambda q, d, r: F.listwise_wasserstein(q, d, relevance=r.double() / 0), r"`relevance` contains NaN or inf"),
        (lambda q, d, r: F.listwise_wasserstein(q, d[0], relevance=r), r"`docs` has shape \(2, 4\).*3-D"),
        (lambda q, d, r: F.listwise_wasserstein(q[:2], d, relevance=r), r"`docs` has shape \(3, 2, 4\) but `queries`"),
        (lambda q, d, r: F.listwise_wasserstein(q, d, relevance=r, variant="x"), r"`variant` is 'x'"),
        (lambda q, d, r: F.listwise_wasserstein(q, d, relevance=r, variant="official_code", reduction="none"), r"`reduction` is 'none' with variant='official_code'"),
        (lambda q, d, r: F.listwise_wasserstein(q[:1], d[:1], relevance=r[:1], variant="official_code"), r"`queries` has a batch of 1"),
        (lambda q, d, r: F.listwise_wasserstein(q[:1], d[:1, :1], relevance=r[:1, :1]), r"`docs` gives each query 1 candidate"),
        (lambda q, d, r: F.listwise_wasserstein(q, d, relevance=r, temperature=-1.0), r"`temperature` is -1.0"),
        (lambda q, d, r: ListwiseWasserstein(variant="official_code", reduction="sum"), r"`reduction` is 'sum'"),
    ],
)  # fmt: skip
def test_bad_input_messages(call, match):
    q, d, r = randn(3, 4), randn(3, 2, 4), grades(3, 2)
    with pytest.raises(ValueError, match=match):
        call(q, d, r)


def test_relevance_must_be_a_real_tensor():
    with pytest.raises(TypeError, match=r"`relevance` is a list"):
        F.listwise_wasserstein(randn(2, 3), randn(2, 2, 3), relevance=[[1, 0], [0, 1]])


# ----------------------------------------------------------------------------- results


def test_seed_script_smoke(tmp_path):
    text = run_seed_script("listwise_wasserstein", tmp_path)
    assert "<!-- seed:listwise_wasserstein -->" in text and "### listwise_wasserstein:" in text
    assert (
        "nDCG@10" in text
        and "`info_nce` binary" in text
        and "warm start" in text
        and "Smoke run" in text
    )
