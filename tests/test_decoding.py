"""Contrastive search and the cached baselines of ``contrastkit.decoding.search`` against
independent references: the step score by loops, contrastive search by a naive decoder
that recomputes every candidate's full forward without a cache, greedy / top-k / nucleus
by a cache-free loop drawing from the same generator; plus padding, eos, stopping
criteria, the one-forward-per-step property and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers", reason="contrastkit.decoding needs transformers")

from _tiny_lm import MODELS, PAD, VOCAB, gpt2, left_pad  # noqa: E402
from contrastkit.decoding import contrastive_scores, contrastive_search, generate  # noqa: E402

# Three prompts of different lengths (batched with left padding).
PROMPTS = [[5, 9, 3, 17, 22], [8, 2, 30], [11, 4, 7, 25, 19, 33, 6]]


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return MODELS[request.param]()


def new_tokens(out, prompts):
    return out[:, max(map(len, prompts)) :].tolist()


@torch.no_grad()
def last_logits(model, seq):
    return model(torch.tensor([seq])).logits[0, -1]


# ------------------------------------------------------------------ references


def ref_scores(top_probs, cand, ctx, alpha, mask):
    """The step rule written with loops and math: (1-a) p - a max_j cos."""
    b, k = top_probs.shape
    out = torch.empty(b, k, dtype=torch.float64)
    for i in range(b):
        for v in range(k):
            h = cand[i, v].tolist()
            best = -math.inf
            for j in range(ctx.shape[1]):
                if not mask[i, j]:
                    continue
                c = ctx[i, j].tolist()
                dot = sum(x * y for x, y in zip(h, c, strict=True))
                nh, nc = math.sqrt(sum(x * x for x in h)), math.sqrt(sum(y * y for y in c))
                best = max(best, dot / (nh * nc))
            out[i, v] = (1 - alpha) * float(top_probs[i, v]) - alpha * best
    return out


@torch.no_grad()
def naive_contrastive(model, prompt, alpha, k, steps, eos=None):
    """Contrastive search without a cache: every step recomputes the full forward of the
    prefix and of prefix + v for each of the k candidates, one at a time."""
    seq = list(prompt)
    for _ in range(steps):
        probs = torch.softmax(last_logits(model, seq), dim=-1)
        top = probs.topk(k)
        best, best_score = None, -math.inf
        for p_v, v in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            states = model(torch.tensor([seq + [v]]), output_hidden_states=True).hidden_states
            h = states[-1][0]
            cos = torch.nn.functional.cosine_similarity(h[-1][None], h[:-1], dim=-1)
            score = (1 - alpha) * p_v - alpha * float(cos.max())
            if score > best_score:
                best, best_score = v, score
        seq.append(best)
        if best == eos:
            break
    return seq[len(prompt) :]


@torch.no_grad()
def naive_sampling(model, prompts, method, steps, generator, k=None, p=None, temperature=1.0):
    """Greedy / top-k / nucleus without a cache: the whole left-padded batch is
    recomputed every step; filters written with per-row Python loops."""
    ids, mask = left_pad(prompts)
    out = []
    for _ in range(steps):
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
        if method == "greedy":
            token = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            kept = torch.zeros_like(probs)
            for r in range(probs.shape[0]):
                order = sorted(range(VOCAB), key=lambda t, r=r: -float(probs[r, t]))
                mass = 0.0
                for rank, t in enumerate(order):
                    if method == "topk" and rank >= k:
                        break
                    if method == "nucleus" and mass >= p:
                        break
                    kept[r, t] = probs[r, t]
                    mass += float(probs[r, t])
            token = torch.multinomial(kept, 1, generator=generator).squeeze(1)
        out.append(token)
        ids = torch.cat([ids, token[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(token)[:, None]], dim=1)
    return torch.stack(out, dim=1).tolist()


# ------------------------------------------------------------------ the step score


def test_scores_equal_loop_reference():
    g = torch.Generator().manual_seed(3)
    b, k, t, d = 3, 4, 6, 5
    top_probs = torch.rand(b, k, generator=g, dtype=torch.float64)
    cand = torch.randn(b, k, d, generator=g, dtype=torch.float64)
    ctx = torch.randn(b, t, d, generator=g, dtype=torch.float64)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[0, :2] = False  # left padding of row 0
    mask[2, 0] = False
    for alpha in (0.0, 0.35, 0.6, 1.0):
        got = contrastive_scores(top_probs, cand, ctx, alpha, context_mask=mask)
        torch.testing.assert_close(
            got, ref_scores(top_probs, cand, ctx, alpha, mask), rtol=0, atol=1e-12
        )
    full = torch.ones(b, t, dtype=torch.bool)
    torch.testing.assert_close(
        contrastive_scores(top_probs, cand, ctx, 0.6),
        ref_scores(top_probs, cand, ctx, 0.6, full),
        rtol=0,
        atol=1e-12,
    )


def test_scores_half_precision_inputs_use_float32():
    g = torch.Generator().manual_seed(4)
    top_probs = torch.rand(2, 3, generator=g)
    cand, ctx = torch.randn(2, 3, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    got = contrastive_scores(top_probs.half(), cand.bfloat16(), ctx.bfloat16(), 0.6)
    assert got.dtype == torch.float32
    want = ref_scores(
        top_probs.half().double(),
        cand.bfloat16().double(),
        ctx.bfloat16().double(),
        0.6,
        torch.ones(2, 5, dtype=torch.bool),
    )
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6)


def test_scores_zero_norm_state_is_finite():
    top_probs = torch.tensor([[0.5, 0.3]], dtype=torch.float64)
    cand = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]], dtype=torch.float64)
    ctx = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    got = contrastive_scores(top_probs, cand, ctx, 0.5)
    # zero vectors have cosine 0 with everything: penalties 0 and max(1, 0) = 1
    torch.testing.assert_close(got, torch.tensor([[0.25, 0.15 - 0.5]], dtype=torch.float64))


# ------------------------------------------------------------------ contrastive search


def test_alpha_zero_is_greedy_batched_left_padded(model):
    ids, mask = left_pad(PROMPTS)
    greedy = generate(model, ids, mask, method="greedy", max_new_tokens=15)
    for k in (1, 4):
        cs = contrastive_search(model, ids, mask, alpha=0.0, k=k, max_new_tokens=15)
        assert torch.equal(cs, greedy)
    # and greedy itself, row by row and unpadded, by the cache-free reference
    assert new_tokens(greedy, PROMPTS) == naive_sampling(model, PROMPTS, "greedy", 15, None)


def test_cached_equals_naive_recompute(model):
    ids, mask = left_pad(PROMPTS)
    out = contrastive_search(model, ids, mask, alpha=0.6, k=4, max_new_tokens=12)
    got = new_tokens(out, PROMPTS)
    want = [naive_contrastive(model, p, 0.6, 4, 12) for p in PROMPTS]
    assert got == want
    # the penalty changes the output here, so the check is not greedy in disguise
    assert got != new_tokens(generate(model, ids, mask, max_new_tokens=12), PROMPTS)
    assert torch.equal(out[:, : ids.shape[1]], ids)  # the prompt comes back as given


def test_batched_equals_one_by_one(model):
    ids, mask = left_pad(PROMPTS)
    batched = new_tokens(
        contrastive_search(model, ids, mask, alpha=0.4, k=3, max_new_tokens=20), PROMPTS
    )
    for row, prompt in zip(batched, PROMPTS, strict=True):
        alone = contrastive_search(model, torch.tensor([prompt]), alpha=0.4, k=3, max_new_tokens=20)
        assert alone[0, len(prompt) :].tolist() == row


def test_one_batched_forward_of_the_k_candidates_per_step():
    model = gpt2()
    calls = []
    model.register_forward_hook(
        lambda mod, args, kwargs, out: calls.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True,
    )
    ids, mask = left_pad(PROMPTS)
    contrastive_search(model, ids, mask, alpha=0.6, k=4, max_new_tokens=6)
    assert calls == [tuple(ids.shape)] + [(3 * 4, 1)] * 6


def test_eos_ends_a_row_and_pads_it():
    model = gpt2()
    ids, mask = left_pad(PROMPTS)
    free = new_tokens(
        contrastive_search(model, ids, mask, alpha=0.6, k=4, max_new_tokens=12), PROMPTS
    )
    eos = free[0][3]  # a token row 0 produces at step 4
    pad = 39
    out = new_tokens(
        contrastive_search(
            model, ids, mask, alpha=0.6, k=4, max_new_tokens=12, eos_token_id=eos, pad_token_id=pad
        ),
        PROMPTS,
    )
    expected = []
    for row in free:
        cut = row.index(eos) + 1 if eos in row else len(row)
        expected.append(row[:cut])
    width = max(map(len, expected))
    assert out == [row + [pad] * (width - len(row)) for row in expected]
    # the naive reference stops at the same place
    assert naive_contrastive(model, PROMPTS[0], 0.6, 4, 12, eos=eos) == expected[0]


def test_eos_list_and_default_pad_is_first_eos():
    model = gpt2()
    ids, mask = left_pad(PROMPTS)
    free = new_tokens(generate(model, ids, mask, max_new_tokens=10), PROMPTS)
    eos = [free[1][1], 38]
    out = new_tokens(generate(model, ids, mask, max_new_tokens=10, eos_token_id=eos), PROMPTS)
    for got, row in zip(out, free, strict=True):
        hits = [i for i, t in enumerate(row) if t in eos]
        if hits:
            cut = hits[0] + 1
            assert got[:cut] == row[:cut] and set(got[cut:]) <= {eos[0]}
        else:
            assert got == row[: len(got)]


def test_stopping_criteria_per_row_and_all_rows():
    model = gpt2()
    ids, mask = left_pad(PROMPTS)
    free = new_tokens(contrastive_search(model, ids, mask, max_new_tokens=8), PROMPTS)
    seen = []

    def stop_row0_after_3(generated):
        seen.append(tuple(generated.shape))
        return torch.tensor([generated.shape[1] >= 3, False, False])

    out = new_tokens(
        contrastive_search(
            model,
            ids,
            mask,
            max_new_tokens=8,
            pad_token_id=PAD,
            stopping_criteria=stop_row0_after_3,
        ),
        PROMPTS,
    )
    assert out[0] == free[0][:3] + [PAD] * 5
    assert out[1:] == free[1:]
    assert seen == [(3, t) for t in range(1, 9)]  # generated tokens only, (B, t)
    out = contrastive_search(
        model,
        ids,
        mask,
        max_new_tokens=8,
        pad_token_id=PAD,
        stopping_criteria=lambda g: g.shape[1] >= 2,
    )
    assert new_tokens(out, PROMPTS) == [row[:2] for row in free]


# ------------------------------------------------------------------ generate


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("topk", {"k": 5}),
        ("topk", {"k": 3, "temperature": 0.7}),
        ("nucleus", {"p": 0.8}),
        ("nucleus", {"p": 0.5, "temperature": 1.5}),
    ],
)
def test_sampling_equals_naive_loop_with_same_generator(model, method, kwargs):
    ids, mask = left_pad(PROMPTS)

    def draw():
        generator = torch.Generator().manual_seed(7)
        return generate(
            model, ids, mask, method=method, max_new_tokens=10, generator=generator, **kwargs
        )

    out = draw()
    want = naive_sampling(model, PROMPTS, method, 10, torch.Generator().manual_seed(7), **kwargs)
    assert new_tokens(out, PROMPTS) == want
    assert torch.equal(out, draw())


def test_generate_defaults_and_contrastive_route():
    model = gpt2()
    ids, mask = left_pad(PROMPTS)
    assert torch.equal(
        generate(model, ids, mask, method="contrastive", max_new_tokens=6),
        contrastive_search(model, ids, mask, alpha=0.6, k=5, max_new_tokens=6),
    )
    # top-k default 50 > the vocabulary (40): sampling from the full distribution
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = generate(model, ids, mask, method="topk", max_new_tokens=5, generator=g1)
    b = naive_sampling(model, PROMPTS, "topk", 5, g2, k=40)
    assert new_tokens(a, PROMPTS) == b
    assert torch.equal(generate(model, ids, mask, max_new_tokens=0), ids)


def test_float32_model_runs():
    model = gpt2().float()
    ids, mask = left_pad(PROMPTS)
    out = contrastive_search(model, ids, mask, max_new_tokens=4)
    assert out.shape == (3, ids.shape[1] + 4) and out.dtype == torch.long


# ------------------------------------------------------------------ bad input


def _raises(kind, *names):
    return pytest.raises(kind, match=".*".join(f"`{n}`" for n in names))


def test_bad_inputs_name_the_argument():
    model = gpt2()
    ids, mask = left_pad(PROMPTS)
    g = torch.Generator().manual_seed(0)
    top, cand, ctx = torch.rand(2, 3), torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    with _raises(ValueError, "alpha"):
        contrastive_scores(top, cand, ctx, 1.5)
    with _raises(ValueError, "candidate_hidden"):
        contrastive_scores(top, cand[:, :2], ctx, 0.5)
    with _raises(ValueError, "context_hidden"):
        contrastive_scores(top, cand, ctx[..., :3], 0.5)
    with _raises(ValueError, "context_mask"):
        contrastive_scores(top, cand, ctx, 0.5, context_mask=torch.zeros(2, 5, dtype=torch.bool))
    with _raises(ValueError, "alpha"):
        contrastive_search(model, ids, mask, alpha=-0.1)
    with _raises(ValueError, "k"):
        contrastive_search(model, ids, mask, k=0)
    with _raises(ValueError, "k"):
        contrastive_search(model, ids, mask, k=VOCAB + 1)
    with _raises(TypeError, "k"):
        contrastive_search(model, ids, mask, k=2.0)
    with _raises(ValueError, "max_new_tokens"):
        contrastive_search(model, ids, mask, max_new_tokens=-1)
    with _raises(TypeError, "input_ids"):
        contrastive_search(model, ids.float(), mask)
    with _raises(ValueError, "input_ids"):
        contrastive_search(model, ids[0], mask[0])
    with _raises(ValueError, "attention_mask"):
        contrastive_search(model, ids, mask[:, 1:])
    with _raises(ValueError, "attention_mask"):
        contrastive_search(model, ids, mask.flip(1))  # right padding
    with _raises(ValueError, "pad_token_id"):
        contrastive_search(model, ids, mask, stopping_criteria=lambda g: g[:, -1] == 3)
    with _raises(TypeError, "stopping_criteria"):
        contrastive_search(model, ids, mask, pad_token_id=0, stopping_criteria=lambda g: 0.5)
    with _raises(TypeError, "stopping_criteria"):
        contrastive_search(model, ids, mask, pad_token_id=0, stopping_criteria="eos")
    with _raises(TypeError, "eos_token_id"):
        contrastive_search(model, ids, mask, eos_token_id="</s>")
    with _raises(TypeError, "model"):
        contrastive_search(lambda x: x, ids, mask)
    with _raises(ValueError, "method"):
        generate(model, ids, mask, method="beam")
    with _raises(ValueError, "p"):
        generate(model, ids, mask, method="greedy", p=0.9)
    with _raises(ValueError, "p"):
        generate(model, ids, mask, method="nucleus", p=1.5, generator=g)
    with _raises(ValueError, "k"):
        generate(model, ids, mask, method="nucleus", k=3)
    with _raises(ValueError, "temperature"):
        generate(model, ids, mask, method="greedy", temperature=0.5)
    with _raises(ValueError, "temperature"):
        generate(model, ids, mask, method="topk", temperature=0.0)
    with _raises(TypeError, "generator"):
        generate(model, ids, mask, method="topk", generator=0)
