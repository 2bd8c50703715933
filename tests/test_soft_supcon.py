"""SoftSupCon (SPACE-2's tree-weighted SupCon) and the tree score: loop references in
float64 (value and gradient), equivalences, precision, reductions, errors, results script."""

from __future__ import annotations

import pytest
import torch

import contrastkit
import contrastkit.functional as F
from conftest import run_seed_script
from contrastkit.losses.tree_scores import frame_from_path, hierarchical_set_score, tree_similarity

N, D = 6, 5
LABELS = torch.tensor([0, 1, 0, 2, 1, 2])


def randn(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def random_scores(n=N, seed=3, zero_fraction=0.4, diagonal=1.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, n, generator=g, dtype=torch.float64)
    zero = torch.rand(n, n, generator=g) < zero_fraction
    s = (s + s.T) / 2 * ~(zero | zero.T)
    ring = torch.arange(n)
    s[ring, (ring + 1) % n] = s[(ring + 1) % n, ring] = 0.3  # every row keeps a positive
    s.fill_diagonal_(diagonal)
    return s


# ----------------------------------------------------------------- loop reference


def _sim(a, b, similarity):
    if similarity == "cosine":
        return (a / a.norm()) @ (b / b.norm())
    return a @ b


def _lse(values):
    m = max(float(v.detach()) for v in values)
    return m + torch.log(sum(torch.exp(v - m) for v in values))


def reference(views, scores, t, similarity="cosine"):
    """SupCon L_out with a soft mask, anchor by anchor (He et al. 2022 with Khosla et al.
    2020 eq. 2): rows view-major, weights a_ij = S[sample i, sample j], self excluded."""
    n = views[0].shape[0]
    rows = [views[v][i] for v in range(len(views)) for i in range(n)]
    ids = [i for v in range(len(views)) for i in range(n)]
    out = []
    for i in range(len(rows)):
        others = [j for j in range(len(rows)) if j != i]
        logits = {j: _sim(rows[i], rows[j], similarity) / t for j in others}
        log_denominator = _lse([logits[j] for j in others])
        total, weight = 0.0, 0.0
        for j in others:
            a = scores[ids[i], ids[j]]
            if a > 0:
                total = total + a * (log_denominator - logits[j])
                weight = weight + a
        out.append(total / weight)
    return torch.stack(out)


CASES = {
    "two_views": (2, dict(seed=3), 0.1, "cosine"),
    "one_view": (1, dict(seed=4, zero_fraction=0.2), 0.3, "cosine"),
    "three_views": (3, dict(seed=5), 0.5, "cosine"),
    "dot": (2, dict(seed=6), 2.0, "dot"),
    "half_diagonal": (2, dict(seed=7, diagonal=0.5), 0.07, "cosine"),
    "zero_diagonal": (2, dict(seed=8, zero_fraction=0.1, diagonal=0.0), 0.2, "cosine"),
}


def _grads(fn, inputs):
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    out = fn(leaves)
    weights = randn(*out.shape, seed=123)
    (out * weights).sum().backward()
    return out.detach(), [x.grad for x in leaves]


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_loop_reference_value_and_gradient(case):
    v, score_kw, t, similarity = CASES[case]
    views = [randn(N, D, seed=10 + k) for k in range(v)]
    scores = random_scores(**score_kw)
    assert (scores.sum(1) - scores.diagonal() > 0).all()  # every anchor has a positive

    def fast(x):
        return F.soft_sup_con(
            *x, scores=scores, temperature=t, similarity=similarity, reduction="none"
        )

    value, grads = _grads(fast, views)
    ref_value, ref_grads = _grads(lambda x: reference(x, scores, t, similarity), views)
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-12)
    for g, rg in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, rg, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("v", [1, 2, 3])
def test_hard_scores_from_labels_are_sup_con(v):
    views = [randn(N, D, seed=20 + k) for k in range(v)]
    hard = (LABELS[:, None] == LABELS[None, :]).double()
    got = F.soft_sup_con(*views, scores=hard, temperature=0.1, reduction="none")
    want = F.sup_con(*views, labels=LABELS, temperature=0.1, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_identity_scores_with_two_views_are_nt_xent():
    z1, z2 = randn(N, D, seed=1), randn(N, D, seed=2)
    eye = torch.eye(N, dtype=torch.float64)
    torch.testing.assert_close(
        F.soft_sup_con(z1, z2, scores=eye, temperature=0.2),
        F.info_nce(z1, z2, temperature=0.2),
        rtol=1e-12,
        atol=1e-12,
    )


def test_scaling_all_scores_changes_nothing_but_relative_weights_do():
    # Per-anchor normalisation by the sum of weights: c * S is the same loss for c > 0.
    z1, z2 = randn(N, D, seed=1), randn(N, D, seed=2)
    s = random_scores()
    base = F.soft_sup_con(z1, z2, scores=s, reduction="none")
    torch.testing.assert_close(F.soft_sup_con(z1, z2, scores=0.25 * s, reduction="none"), base)
    tilted = s.clone()
    tilted[0, 1] = tilted[1, 0] = 0.9 if s[0, 1] < 0.5 else 0.1
    assert not torch.allclose(F.soft_sup_con(z1, z2, scores=tilted, reduction="none"), base)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("temperature", [0.01, 0.07, 1.0])
def test_low_precision_is_finite_and_close_to_float64(dtype, temperature):
    s = random_scores(n=16, seed=9)
    low = [randn(16, D, seed=30 + k).to(dtype).requires_grad_(True) for k in range(2)]
    out = F.soft_sup_con(*low, scores=s.to(dtype), temperature=temperature, reduction="none")
    out.sum().backward()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert all(torch.isfinite(x.grad).all() for x in low)
    exact = F.soft_sup_con(
        *[x.detach().double() for x in low],
        scores=s.to(dtype).double(),
        temperature=temperature,
        reduction="none",
    )
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5 / temperature)


def test_reductions_are_mean_sum_none_of_the_same_values():
    z1, z2, s = randn(N, D, seed=1), randn(N, D, seed=2), random_scores()
    per = F.soft_sup_con(z1, z2, scores=s, reduction="none")
    assert per.shape == (2 * N,)
    torch.testing.assert_close(F.soft_sup_con(z1, z2, scores=s), per.mean())
    torch.testing.assert_close(F.soft_sup_con(z1, z2, scores=s, reduction="sum"), per.sum())


@pytest.mark.parametrize(
    "scores, error, match",
    [
        (torch.ones(N, N - 1), ValueError, r"`scores` has shape \(6, 5\).*\(6, 6\)"),
        (torch.ones(N, N, dtype=torch.long), TypeError, "`scores` has dtype torch.int64"),
        (torch.full((N, N), 1.5), ValueError, r"`scores` has entries outside \[0, 1\]"),
        (torch.full((N, N), -0.1), ValueError, r"outside \[0, 1\]"),
        (torch.full((N, N), float("nan")), ValueError, r"outside \[0, 1\] \(or NaN\)"),
        ([[1.0] * N] * N, TypeError, "`scores` is a list"),
    ],
)
def test_bad_scores_are_rejected_with_the_rule(scores, error, match):
    with pytest.raises(error, match=match):
        F.soft_sup_con(randn(N, D, seed=1), randn(N, D, seed=2), scores=scores)


def test_anchor_without_a_positive_raises_the_core_error():
    # One view and identity scores: no anchor has any other row with weight > 0.
    with pytest.raises(ValueError, match=r"`scores` leave anchors \[0, 1, .*no positive"):
        F.soft_sup_con(randn(N, D, seed=1), scores=torch.eye(N, dtype=torch.float64))


def test_module_round_trip_and_learnable_temperature():
    loss = contrastkit.create_loss("soft_supcon", temperature=0.2, learnable=True)
    assert loss.inputs == "scores"
    clone = contrastkit.create_loss("soft_supcon", **loss.get_config())
    assert clone.get_config() == loss.get_config()
    z1 = randn(N, D, seed=1, dtype=torch.float32).requires_grad_(True)
    z2 = randn(N, D, seed=2, dtype=torch.float32)
    s = random_scores().float()
    value = loss(z1, z2, scores=s)
    value.backward()
    assert loss.logit_scale.log_scale.grad is not None
    torch.testing.assert_close(
        value, F.soft_sup_con(z1, z2, scores=s, temperature=0.2), rtol=1e-6, atol=1e-6
    )
    default = contrastkit.create_loss("soft_supcon")
    assert default.temperature == 0.07  # SPACE-2's temperature


# ----------------------------------------------------------------- the tree score


def test_tree_score_on_hand_frames():
    a = {"hotel": {"inform": {"area": ["north"], "name": [{"value": "X"}]}}}
    b = {"hotel": {"inform": {"area": ["south"]}}}
    # Views D, I, S, V, DI, IS, SV, DIS, ISV, DISV by hand: all ten unions non-empty.
    per_view = (1, 1, 1 / 2, 0, 1, 1 / 2, 0, 1 / 2, 0, 0)
    assert hierarchical_set_score(a, b, return_all=True) == pytest.approx(per_view, abs=0)
    assert hierarchical_set_score(a, b) == pytest.approx(4.5 / 10, abs=1e-15)
    assert hierarchical_set_score(b, a) == hierarchical_set_score(a, b)
    assert hierarchical_set_score(a, {" HOTEL ": {"Inform": {"area": ["north"], "name": ["x"]}}})
    assert hierarchical_set_score(a, a) == 1.0
    assert hierarchical_set_score(a, {"taxi": {"book": {"time": ["5"]}}}) == 0.0
    assert hierarchical_set_score(a, {}) == 0.0


def test_tree_score_on_label_paths_gives_the_shared_prefix_fraction():
    # Two levels: same domain, other intent -> views D (1), I (0), DI (0) defined: 1/3.
    assert hierarchical_set_score(("round", "8"), ("round", "6")) == pytest.approx(1 / 3)
    assert hierarchical_set_score(("round", "8"), ("round", "8")) == 1.0
    assert hierarchical_set_score(("round", "8"), ("straight", "1")) == 0.0
    # Four levels vs its three-level prefix: D, I, S, DI, IS, DIS agree; V, SV, ISV, DISV
    # exist on one side only: 6 / 10.
    assert hierarchical_set_score(("d", "i", "s", "v"), ("d", "i", "s")) == pytest.approx(0.6)
    assert frame_from_path(("d", "i", "s", "v")) == {"d": {"i": {"s": ["v"]}}}


def test_placeholder_nodes_are_ignored_in_the_node_views():
    a = {"hotel": {"DEFAULT_INTENT": {"name": ["x"]}}}
    b = {"hotel": {"DEFAULT_INTENT": {"area": ["y"]}}}
    # I is empty on both sides (not counted); D and DI agree; the other 7 views are 0.
    assert hierarchical_set_score(a, b) == pytest.approx(2 / 9)


def test_tree_similarity_matrix():
    labels = [("round", "8"), ("round", "6"), ("straight", "1"), ("round", "8"), {}]
    s = tree_similarity(labels, dtype=torch.float64)
    third = 1 / 3
    want = torch.tensor(
        [
            [1, third, 0, 1, 0],
            [third, 1, 0, third, 0],
            [0, 0, 1, 0, 0],
            [1, third, 0, 1, 0],
            [0, 0, 0, 0, 1],  # an empty frame still pairs with its own other view
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(s, want, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="`path` has 5 levels"):
        frame_from_path(("a", "b", "c", "d", "e"))


# ----------------------------------------------------------------- results script


def test_results_script_smoke(tmp_path):
    text = run_seed_script("soft_supcon", tmp_path)
    assert "<!-- seed:soft_supcon -->" in text and "### soft_supcon:" in text
    assert "| soft_supcon" in text and "| supcon" in text
    assert text.count("±") >= 4


def test_soft_pairs_survive_extra_negatives_and_hard_negative_selection():
    from contrastkit.core.contrast import contrast
    from contrastkit.core.pairs import from_scores, keep_hardest_negatives, not_self

    z, extra = randn(N, D, seed=1), randn(3, D, seed=2)
    unit = torch.nn.functional.normalize
    s = random_scores()
    pairs = from_scores(s, not_self(N)).with_extra_negatives(3)
    assert pairs.weight.shape == (N, N + 3) and (pairs.weight[:, N:] == 0).all()
    cands = unit(torch.cat([z, extra]), dim=-1)
    got = contrast(unit(z, dim=-1), cands, pairs, scale=1 / 0.2, reduction="none")
    # Loop: soft-weighted SupCon whose denominators also hold the 3 extra negatives.
    want = []
    for i in range(N):
        logits = [(unit(z[i], dim=0) @ cands[j]) / 0.2 for j in range(N + 3) if j != i]
        log_d = _lse(logits)
        w = [float(s[i, j]) for j in range(N) if j != i and s[i, j] > 0]
        lj = [(unit(z[i], dim=0) @ cands[j]) / 0.2 for j in range(N) if j != i and s[i, j] > 0]
        want.append(sum(wj * (log_d - x) for wj, x in zip(w, lj, strict=True)) / sum(w))
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-10, atol=1e-12)
    kept = keep_hardest_negatives(pairs, cands[:N] @ cands.T, 2)
    assert kept.weight is pairs.weight
