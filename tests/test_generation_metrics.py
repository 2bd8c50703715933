"""Generated-text metrics: rep-n / diversity (SimCTG), coherence (Su & Collier 2023) and
SQuAD exact match / F1, against hand-computed cases and references written here."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from contrastkit.evaluation import (
    coherence,
    diversity,
    exact_match,
    f1,
    normalize_answer,
    qa_scores,
    rep_n,
    repetition_and_diversity,
)

# ----------------------------------------------------------------------------- rep-n


def code_counts(text: str, n: int):
    """The official ``eval_text`` loop, rewritten: a window that stops before the end."""
    tokens = text.strip().split()
    start, end, total, seen = 0, n, 0, set()
    while end < len(tokens):
        seen.add(" ".join(tokens[start:end]))
        total += 1
        start += 1
        end += 1
    return len(seen), total


def all_ngrams(tokens, n):
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def test_rep_n_hand_computed():
    text = "a b a b a b"
    # bigrams ab ba ab ba ab: 2 distinct of 5
    assert rep_n(text, 2) == pytest.approx(1 - 2 / 5)
    # the code's loop sees ab ba ab ba only
    assert rep_n(text, 2, variant="official_code") == pytest.approx(1 - 2 / 4)
    # trigrams aba bab aba bab: 2 distinct of 4; 4-grams abab baba abab: 2 of 3
    assert rep_n(text, 3) == pytest.approx(0.5)
    assert rep_n(text, 4) == pytest.approx(1 - 2 / 3)
    assert diversity(text) == pytest.approx((2 / 5) * (2 / 4) * (2 / 3))
    assert rep_n("x y z w", 2) == 0.0


def test_rep_n_pools_counts_over_texts_with_per_text_distinct_ngrams():
    texts = [["a", "b", "c"], ["a", "b", "a", "b"]]
    # text 1: ab bc (2 of 2); text 2: ab ba ab (2 of 3). "ab" counts as distinct in each.
    assert rep_n(texts, 2) == pytest.approx(1 - 4 / 5)
    assert rep_n(texts, 2, aggregate="mean") == pytest.approx((0 + 1 / 3) / 2)


def test_rep_n_matches_the_official_loop_and_a_counter_reference():
    rng = random.Random(0)
    texts = [" ".join(rng.choice("abcde") for _ in range(rng.randint(0, 30))) for _ in range(40)]
    for n in (2, 3, 4):
        unique = total = 0
        for t in texts:
            u, c = code_counts(t, n)
            unique, total = unique + u, total + c
        official = rep_n([t.split() for t in texts], n, variant="official_code")
        assert official == pytest.approx(1 - unique / total, abs=1e-15)
        grams = [all_ngrams(t.split(), n) for t in texts]
        want = 1 - sum(len(set(g)) for g in grams) / sum(len(g) for g in grams)
        assert rep_n([t.split() for t in texts], n) == pytest.approx(want, abs=1e-15)
        per = [1 - len(set(g)) / len(g) for g in grams if g]
        assert rep_n([t.split() for t in texts], n, aggregate="mean") == pytest.approx(
            sum(per) / len(per), abs=1e-15
        )
    got = repetition_and_diversity([t.split() for t in texts], variant="official_code")
    reps = [got["rep_2"], got["rep_3"], got["rep_4"]]
    assert got["diversity"] == pytest.approx(math.prod(1 - r for r in reps), abs=1e-15)
    assert got["diversity"] == pytest.approx(
        diversity([t.split() for t in texts], variant="official_code"), abs=1e-15
    )


def test_rep_n_input_layouts_agree():
    ids = torch.tensor([[3, 4, 3, 4, 5], [1, 1, 1, 2, 2]])
    want = rep_n([[3, 4, 3, 4, 5], [1, 1, 1, 2, 2]], 2)
    assert want == pytest.approx(1 - (3 + 3) / 8)
    assert rep_n(ids, 2) == want
    assert rep_n(ids.numpy(), 2) == want
    assert rep_n(list(ids), 2) == want
    assert rep_n(ids[0], 2) == rep_n([3, 4, 3, 4, 5], 2) == rep_n("3 4 3 4 5", 2)
    assert rep_n(["3", "4", "3", "4", "5"], 2) == rep_n("3 4 3 4 5", 2)


def test_rep_n_bad_inputs():
    with pytest.raises(ValueError, match="has no 3-gram"):
        rep_n([["a", "b"], ["c"]], 3)
    with pytest.raises(ValueError, match="`n` is 0"):
        rep_n("a b c", 0)
    with pytest.raises(TypeError, match="mixes sequences and single tokens"):
        rep_n([["a", "b"], "c"], 2)
    with pytest.raises(ValueError, match="`aggregate` is 'sum'"):
        rep_n("a b c", 2, aggregate="sum")
    with pytest.raises(ValueError, match="`variant` is 'code'"):
        diversity("a b c d e", variant="code")
    with pytest.raises(TypeError, match="`tokens` is a dict"):
        rep_n({"a": 1}, 2)


# ------------------------------------------------------------------------ QA answers


def test_squad_normalisation_exact_match_and_f1():
    assert normalize_answer("  The Eiffel-Tower!  ") == "eiffeltower"
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0
    assert exact_match("Paris, France", ["Lyon", "paris france"]) == 1.0
    # "paris france" vs "paris": 1 shared token, P = 1/2, R = 1
    assert f1("Paris, France", "Paris") == pytest.approx(2 * 0.5 * 1 / 1.5)
    # bag of tokens: "a b b c" vs "b b d" -> overlap 2, P = 2/3 ("a" is an article), R = 2/3
    assert f1("a b b c", "b b d") == pytest.approx(2 / 3)
    assert f1("rome", ["paris", "Rome!", "rome italy"]) == 1.0
    assert f1("london", "paris") == 0.0
    assert f1("the", "a") == 0.0  # both normalise to empty: SQuAD v1.1 scores 0
    scores = qa_scores(["Paris", "Rome"], ["paris", ["Milan", "Rome city"]])
    assert scores["exact_match"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx((1.0 + 2 * 1 * 0.5 / 1.5) / 2)


def test_qa_bad_inputs():
    with pytest.raises(TypeError, match="`reference` is 3"):
        exact_match("3", 3)
    with pytest.raises(TypeError, match="`reference` is \\[\\]"):
        f1("a", [])
    with pytest.raises(TypeError, match="`text` is a int"):
        f1(3, "a")
    with pytest.raises(ValueError, match="`references` holds 1 items but `predictions` holds 2"):
        qa_scores(["a", "b"], ["a"])


# ------------------------------------------------------------------------- coherence


def tiny_gpt2(seed=0):
    transformers = pytest.importorskip(
        "transformers", reason="transformers is needed for the tiny GPT-2 scoring model"
    )
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=64, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).double().eval()


def naive_coherence(model, prefix, continuation):
    """One forward per continuation token on the unpadded text so far."""
    logps = []
    with torch.no_grad():
        for i in range(len(continuation)):
            ctx = torch.cat([prefix, continuation[:i]])[None]
            logits = model(input_ids=ctx).logits[0, -1]
            logps.append(float(torch.log_softmax(logits, -1)[continuation[i]]))
    return sum(logps) / len(logps)


def test_coherence_matches_a_per_token_loop_on_tiny_gpt2():
    model = tiny_gpt2()
    g = torch.Generator().manual_seed(1)
    lengths = [(4, 6), (1, 3), (9, 1), (2, 8), (5, 5)]
    prefixes = [torch.randint(1, 50, (p,), generator=g) for p, _ in lengths]
    conts = [torch.randint(1, 50, (c,), generator=g) for _, c in lengths]
    per = [naive_coherence(model, p, c) for p, c in zip(prefixes, conts, strict=True)]
    model.train()  # coherence switches to eval (no dropout) and restores the flag
    got = coherence(model, prefixes, conts, batch_size=2, reduction="none")
    assert model.training
    model.eval()
    np.testing.assert_allclose(got, per, rtol=0, atol=1e-10)
    mean = coherence(model, prefixes, conts, batch_size=3)
    assert mean == pytest.approx(sum(per) / len(per), abs=1e-10)
    # per token, then per text: not the token-pooled mean
    pooled = sum(v * c for v, (_, c) in zip(per, lengths, strict=True)) / sum(c for _, c in lengths)
    assert abs(mean - pooled) > 1e-3
    # one pair as plain lists; BOS prepended as the official script does
    one = coherence(model, prefixes[0].tolist(), conts[0].tolist(), bos_token_id=0)
    assert one == pytest.approx(
        naive_coherence(model, torch.cat([torch.tensor([0]), prefixes[0]]), conts[0]), abs=1e-10
    )


def test_coherence_skips_empty_continuations_and_rejects_bad_input():
    model = tiny_gpt2()
    prefixes = [torch.tensor([1, 2, 3]), torch.tensor([4, 5])]
    conts = [torch.tensor([6, 7]), torch.tensor([], dtype=torch.long)]
    got = coherence(model, prefixes, conts, reduction="none")
    assert math.isnan(got[1]) and got[0] == pytest.approx(
        naive_coherence(model, prefixes[0], conts[0]), abs=1e-10
    )
    assert coherence(model, prefixes, conts) == pytest.approx(got[0], abs=1e-15)
    with pytest.raises(ValueError, match="`prefix_ids` is empty for texts \\[0\\]"):
        coherence(model, [torch.tensor([], dtype=torch.long)], [torch.tensor([1])])
    with pytest.raises(ValueError, match="`continuation_ids` holds 1 texts but `prefix_ids`"):
        coherence(model, prefixes, conts[:1])
    with pytest.raises(ValueError, match="holds only empty continuations"):
        coherence(model, prefixes[1:], conts[1:])
    with pytest.raises(TypeError, match="`prefix_ids` is str"):
        coherence(model, "a prefix", conts)
