"""1-to-K contrastive loss (CCR^k, Nie et al. KDD 2024) and the Mean Rank Variance metric:
loop references, the code's multi-hot formulation, K = 1 equals CLIP, dtypes, errors,
module config, hand-computed MRV cases and the seed script's smoke run."""

from __future__ import annotations

import math

import pytest
import torch

import contrastkit
import contrastkit.functional as F
from conftest import run_seed_script
from contrastkit.evaluation import mean_rank_variance
from contrastkit.evaluation.rank_variance import instance_ranks
from contrastkit.losses import OneToK


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------- references


def _sim(a, b, similarity):
    if similarity == "cosine":
        return (a * b).sum() / (a.norm() * b.norm())
    return (a * b).sum()


def _log_sum_exp(values):
    m = max(float(v.detach()) for v in values)
    return m + torch.log(sum(torch.exp(v - m) for v in values))


def ref_one_to_k_terms(anchors, positives, t, similarity="cosine"):
    """Per-anchor i2t (mean over its K positives, all N*K texts in the denominator) and
    per-text t2i (one positive image, N images in the denominator), as scalar loops."""
    n, k, _ = positives.shape
    texts = [(j, m) for j in range(n) for m in range(k)]
    i2t, t2i = [], []
    for i in range(n):
        row = [_sim(anchors[i], positives[j, m], similarity) / t for j, m in texts]
        lse = _log_sum_exp(row)
        terms = [lse - _sim(anchors[i], positives[i, m], similarity) / t for m in range(k)]
        i2t.append(sum(terms) / k)
        per_text = []
        for m in range(k):
            col = [_sim(positives[i, m], anchors[j], similarity) / t for j in range(n)]
            per_text.append(_log_sum_exp(col) - col[i])
        t2i.append(per_text)
    return i2t, t2i


def ref_one_to_k(anchors, positives, t, variant="paper", similarity="cosine"):
    """Per-anchor values: paper (i2t_i + mean_k t2i_ik) / 2; code i2t_i/2 + mean_k t2i/(2K)."""
    k = positives.shape[1]
    i2t, t2i = ref_one_to_k_terms(anchors, positives, t, similarity)
    out = []
    for a, texts in zip(i2t, t2i, strict=True):
        mean_t2i = sum(texts) / k
        out.append(0.5 * (a + mean_t2i) if variant == "paper" else 0.5 * a + mean_t2i / (2 * k))
    return torch.stack(out)


def code_multi_hot(anchors, positives, t):
    """The released code's formulation (re-derived, not copied): multi-hot labels against
    log-softmax rows, i2t summed over positives, both directions averaged, then / K."""
    n, k, d = positives.shape
    img = anchors / anchors.norm(dim=1, keepdim=True)
    txt = positives.reshape(n * k, d)
    txt = txt / txt.norm(dim=1, keepdim=True)
    logits = img @ txt.T / t
    labels = torch.zeros(n, n * k, dtype=logits.dtype)
    for i in range(n):
        labels[i, i * k : (i + 1) * k] = 1
    loss_i2t = -(torch.log_softmax(logits, 1) * labels).sum(1).mean()
    loss_t2i = -(torch.log_softmax(logits.T, 1) * labels.T).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2 / k


def _value_and_grads(fn, inputs, cotangent):
    xs = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = fn(*xs)
    grads = torch.autograd.grad(out, xs, cotangent)
    return out.detach(), grads


CONFIGS = [
    # (n, k, temperature, variant, similarity)
    (4, 3, 0.2, "paper", "cosine"),
    (5, 2, 0.07, "paper", "cosine"),
    (3, 4, 1.5, "paper", "dot"),
    (4, 3, 0.2, "official_code", "cosine"),
    (5, 1, 0.5, "official_code", "cosine"),
    (3, 5, 0.1, "official_code", "dot"),
]


@pytest.mark.parametrize("n,k,t,variant,similarity", CONFIGS)
def test_matches_loop_reference_in_value_and_gradient(n, k, t, variant, similarity):
    a, p = randn(n, 6, seed=n), randn(n, k, 6, seed=10 + k)
    cot = randn(n, seed=99)
    fast = lambda a, p: F.one_to_k(  # noqa: E731
        a, p, temperature=t, variant=variant, similarity=similarity, reduction="none"
    )
    slow = lambda a, p: ref_one_to_k(a, p, t, variant, similarity)  # noqa: E731
    v, g = _value_and_grads(fast, [a, p], cot)
    rv, rg = _value_and_grads(slow, [a, p], cot)
    torch.testing.assert_close(v, rv, rtol=1e-10, atol=1e-12)
    for x, y in zip(g, rg, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n,k,t", [(4, 3, 0.07), (6, 2, 0.3), (3, 1, 0.1)])
def test_official_code_variant_equals_the_codes_multi_hot_formulation(n, k, t):
    a, p = randn(n, 8, seed=1), randn(n, k, 8, seed=2)
    v, g = _value_and_grads(
        lambda a, p: F.one_to_k(a, p, temperature=t, variant="official_code"), [a, p], None
    )
    rv, rg = _value_and_grads(lambda a, p: code_multi_hot(a, p, t), [a, p], None)
    torch.testing.assert_close(v, rv, rtol=1e-10, atol=1e-12)
    for x, y in zip(g, rg, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)


def test_paper_and_code_differ_only_by_the_t2i_weight():
    n, k, t = 5, 3, 0.1
    a, p = randn(n, 6, seed=3), randn(n, k, 6, seed=4)
    i2t, t2i = ref_one_to_k_terms(a, p, t)
    mean_i2t = sum(i2t) / n
    mean_t2i = sum(sum(x) for x in t2i) / (n * k)
    paper = F.one_to_k(a, p, temperature=t)
    code = F.one_to_k(a, p, temperature=t, variant="official_code")
    torch.testing.assert_close(paper, 0.5 * (mean_i2t + mean_t2i), rtol=1e-10, atol=0)
    torch.testing.assert_close(code, 0.5 * mean_i2t + mean_t2i / (2 * k), rtol=1e-10, atol=0)


@pytest.mark.parametrize("variant", ["paper", "official_code"])
def test_one_positive_is_clip(variant):
    a, p = randn(6, 5, seed=5), randn(6, 5, seed=6)
    torch.testing.assert_close(
        F.one_to_k(a, p[:, None], temperature=0.1, variant=variant, reduction="none"),
        F.clip(a, p, temperature=0.1, reduction="none"),
        rtol=1e-12,
        atol=1e-12,
    )


def test_k_identical_positives_compete_in_one_row():
    # Anchors e_i, all K positives equal to e_i: s = 1 on positives, 0 elsewhere. By hand,
    # i2t_i = log(K e^{1/t} + (N-1) K) - 1/t and t2i = log(e^{1/t} + N - 1) - 1/t, so
    # i2t -> log K (the K positives share one softmax row), t2i -> 0 as t -> 0.
    n, k, t = 3, 4, 0.05
    a = torch.eye(n, dtype=torch.float64)
    p = a[:, None, :].expand(n, k, n).clone()
    i2t = math.log(k * math.exp(1 / t) + (n - 1) * k) - 1 / t
    t2i = math.log(math.exp(1 / t) + n - 1) - 1 / t
    out = F.one_to_k(a, p, temperature=t, reduction="none")
    torch.testing.assert_close(out, torch.full((n,), 0.5 * (i2t + t2i), dtype=out.dtype))
    code = F.one_to_k(a, p, temperature=t, variant="official_code", reduction="none")
    torch.testing.assert_close(code, torch.full((n,), 0.5 * i2t + t2i / (2 * k), dtype=out.dtype))
    assert abs(i2t - math.log(k)) < 1e-6


def test_reductions_and_anchor_permutation():
    a, p = randn(5, 4, seed=7), randn(5, 3, 4, seed=8)
    per = F.one_to_k(a, p, reduction="none")
    assert per.shape == (5,)
    torch.testing.assert_close(F.one_to_k(a, p), per.mean(), rtol=1e-12, atol=0)
    torch.testing.assert_close(F.one_to_k(a, p, reduction="sum"), per.sum(), rtol=1e-12, atol=0)
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(F.one_to_k(a[perm], p[perm], reduction="none"), per[perm])
    # Shuffling the K positives of each anchor (languages) leaves the loss unchanged.
    torch.testing.assert_close(F.one_to_k(a, p.flip(1), reduction="none"), per)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("temperature", [0.01, 0.07, 1.0])
@pytest.mark.parametrize("variant", ["paper", "official_code"])
def test_low_precision_is_finite_and_close_to_float64(dtype, temperature, variant):
    a = randn(12, 8, seed=1).to(dtype).requires_grad_(True)
    p = randn(12, 3, 8, seed=2).to(dtype).requires_grad_(True)
    out = F.one_to_k(a, p, temperature=temperature, variant=variant, reduction="none")
    out.sum().backward()
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all() and torch.isfinite(a.grad).all()
    assert torch.isfinite(p.grad).all()
    exact = F.one_to_k(
        a.detach().double(),
        p.detach().double(),
        temperature=temperature,
        variant=variant,
        reduction="none",
    )
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5 / temperature)


def test_learnable_temperature_module():
    loss = OneToK()
    assert loss.learnable and loss.logit_scale is not None
    assert abs(float(loss.current_temperature().detach()) - 0.07) < 1e-6
    a, p = randn(6, 5, seed=1, dtype=torch.float32), randn(6, 2, 5, seed=2, dtype=torch.float32)
    loss(a, p).backward()
    assert loss.logit_scale.log_scale.grad is not None
    assert torch.isfinite(loss.logit_scale.log_scale.grad)
    fixed = OneToK(temperature=0.2, learnable=False, variant="official_code")
    torch.testing.assert_close(
        fixed(a, p), F.one_to_k(a, p, temperature=0.2, variant="official_code")
    )


def test_module_config_round_trip_and_registry():
    loss = contrastkit.create_loss("one_to_k", temperature=0.1, variant="official_code")
    assert isinstance(loss, OneToK) and loss.inputs == "one_to_many"
    clone = contrastkit.create_loss("one_to_k", **loss.get_config())
    assert clone.get_config() == loss.get_config()
    assert loss.get_config()["variant"] == "official_code"


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: F.one_to_k(randn(4, 3), randn(4, 3)), r"`positives` has shape \(4, 3\).*3-D"),
        (lambda: F.one_to_k(randn(4, 3), randn(5, 2, 3)), r"`positives` has shape \(5, 2, 3\)"),
        (lambda: F.one_to_k(randn(4, 3), randn(4, 2, 5)), r"`positives` has feature dimension"),
        (lambda: F.one_to_k(randn(1, 3), randn(1, 2, 3)), r"`anchors` has a batch of 1"),
        (lambda: F.one_to_k(randn(4, 3), randn(4, 0, 3)), r"K = 0"),
        (lambda: F.one_to_k(randn(4, 3), randn(4, 2, 3), variant="x"), r"`variant` is 'x'"),
        (lambda: F.one_to_k(randn(4, 3), randn(4, 2, 3), temperature=0), r"`temperature` is 0"),
        (lambda: OneToK(variant="code"), r"`variant` is 'code'.*one of"),
    ],
)
def test_bad_input_messages(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_finite_positives_name_the_rows():
    p = randn(4, 2, 3)
    p[2, 1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"`positives` contains NaN or inf in rows \[2\]"):
        F.one_to_k(randn(4, 3), p)


# ----------------------------------------------------------------------------- MRV


def test_mrv_hand_computed_case():
    # N = 3 instances, K = 2 queries each; scores[i, k, j], correct candidate j = i.
    scores = torch.tensor(
        [
            [[0.9, 0.1, 0.2], [0.1, 0.5, 0.3]],  # ranks 1 and 3
            [[0.3, 0.8, 0.1], [0.2, 0.7, 0.1]],  # ranks 1 and 1
            [[0.5, 0.4, 0.6], [0.9, 0.1, 0.2]],  # ranks 1 and 2
        ]
    )
    ranks = instance_ranks(scores)
    assert ranks.tolist() == [[1, 3], [1, 1], [1, 2]]
    # population variances: (1-2)^2/2 + (3-2)^2/2 = 1; 0; 0.25 -> mean 1.25 / 3
    assert mean_rank_variance(scores) == pytest.approx(1.25 / 3, rel=1e-12)
    # sample variances (ddof=1): 2, 0, 0.5 -> mean 2.5 / 3
    assert mean_rank_variance(scores, ddof=1) == pytest.approx(2.5 / 3, rel=1e-12)


def test_mrv_ties_follow_stable_column_order():
    # A tie with an earlier column ranks the correct candidate after it; a later one not.
    scores = torch.tensor([[[0.5, 0.5, 0.1]], [[0.5, 0.5, 0.1]], [[0.2, 0.2, 0.2]]])
    assert instance_ranks(scores).flatten().tolist() == [1, 2, 3]


def test_mrv_is_zero_for_consistent_ranks_and_from_embeddings():
    items = torch.eye(4, dtype=torch.float64)
    queries = items[:, None, :].repeat(1, 3, 1) + 0.01 * randn(4, 3, 4, seed=3)
    assert mean_rank_variance(items=items, queries=queries) == 0.0
    manual = torch.einsum("ikd,jd->ikj", queries / queries.norm(dim=-1, keepdim=True), items)
    for direction in ("t2i", "i2t"):
        got = instance_ranks(items=items, queries=queries, direction=direction)
        assert got.shape == (4, 3)
    torch.testing.assert_close(instance_ranks(items=items, queries=queries), instance_ranks(manual))
    # i2t: item i queries the texts of language k; scores[i, k, j] = s(item_i, text_{j,k}).
    qn = queries / queries.norm(dim=-1, keepdim=True)
    i2t = torch.einsum("id,jkd->ikj", items, qn)
    torch.testing.assert_close(
        instance_ranks(items=items, queries=queries, direction="i2t"), instance_ranks(i2t)
    )


def test_mrv_bad_inputs():
    with pytest.raises(ValueError, match=r"`scores` has shape \(3, 2\).*\(N, K, N\)"):
        mean_rank_variance(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"`scores` has K = 1.*ddof=1 needs K >= 2"):
        mean_rank_variance(torch.zeros(3, 1, 3), ddof=1)
    with pytest.raises(ValueError, match=r"`ddof` is 2"):
        mean_rank_variance(torch.zeros(3, 2, 3), ddof=2)
    with pytest.raises(ValueError, match=r"`queries` has shape \(3, 2, 4\) but `items`"):
        mean_rank_variance(items=torch.ones(2, 4), queries=torch.ones(3, 2, 4))
    with pytest.raises(ValueError, match=r"`direction` is 'x'"):
        mean_rank_variance(items=torch.ones(2, 4), queries=torch.ones(2, 2, 4), direction="x")
    with pytest.raises(ValueError, match=r"both given or both missing"):
        mean_rank_variance()


# ----------------------------------------------------------------------------- results


def test_seed_script_smoke(tmp_path):
    text = run_seed_script("one_to_k", tmp_path)
    assert "<!-- seed:one_to_k -->" in text and "### one_to_k:" in text
    assert "| 1-to-K" in text and "| 1-to-1" in text and "Smoke run" in text
