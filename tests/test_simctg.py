"""SimCTG's token-level contrastive loss and the token self-similarity / isotropy
diagnostic, against loop references written here (float64: value 1e-10, grad 1e-9)."""

from __future__ import annotations

import pytest
import torch

import contrastkit
import contrastkit.functional as F
from contrastkit.diagnostics import model_isotropy, self_similarity, token_isotropy
from contrastkit.losses import SimCTG

MASK = torch.tensor(
    [
        [True, True, True, True, True],
        [True, True, True, False, False],
        [True, True, True, True, False],
    ]
)


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def ref_cosine(a, b):
    dot = sum(a[k] * b[k] for k in range(a.shape[0]))
    na = torch.sqrt(sum(a[k] * a[k] for k in range(a.shape[0])))
    nb = torch.sqrt(sum(b[k] * b[k] for k in range(b.shape[0])))
    return dot / (na * nb)


def ref_simctg_terms(hidden, mask, margin, official=False):
    """Per sequence: the list of hinge terms over ordered pairs i != j of real tokens."""
    out = []
    for b in range(hidden.shape[0]):
        idx = [t for t in range(hidden.shape[1]) if bool(mask[b, t])]
        terms = []
        for i in idx:
            s_ii = ref_cosine(hidden[b, i], hidden[b, i]) if official else 1.0
            for j in idx:
                if j != i:
                    s_ij = ref_cosine(hidden[b, i], hidden[b, j])
                    terms.append(torch.clamp(margin - (s_ii - s_ij), min=0))
        out.append(terms)
    return out


def ref_simctg(hidden, mask, margin, official=False):
    terms = ref_simctg_terms(hidden, mask, margin, official)
    if official:  # the code: one division by the number of pairs in the whole batch
        flat = [t for seq in terms for t in seq]
        return sum(flat) / len(flat)
    per = [sum(seq) / len(seq) for seq in terms if seq]
    return sum(per) / len(per)


def ref_nll(logits, labels, mask, per_sequence=True):
    """Next-token NLL, labels = input ids (Hugging Face shift), padding skipped."""
    seqs = []
    for b in range(logits.shape[0]):
        terms = []
        for t in range(logits.shape[1] - 1):
            if bool(mask[b, t + 1]):
                row = logits[b, t]
                terms.append(torch.logsumexp(row, 0) - row[labels[b, t + 1]])
        seqs.append(terms)
    if per_sequence:
        return sum(sum(s) / len(s) for s in seqs) / len(seqs)
    flat = [t for s in seqs for t in s]
    return sum(flat) / len(flat)


# ------------------------------------------------------------------------------ loss


@pytest.mark.parametrize("variant", ["paper", "official_code"])
@pytest.mark.parametrize("margin", [0.5, 1.1])
def test_contrastive_term_matches_loop_reference_value_and_grad(variant, margin):
    h = randn(3, 5, 4, seed=1).requires_grad_(True)
    h_ref = h.detach().clone().requires_grad_(True)
    got = F.simctg_contrastive(h, MASK, margin=margin, variant=variant)
    want = ref_simctg(h_ref, MASK, margin, official=variant == "official_code")
    # the case exercises both sides of the hinge
    terms = [float(t) for seq in ref_simctg_terms(h_ref.detach(), MASK, margin) for t in seq]
    assert min(terms) == 0 and max(terms) > 0
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    got.backward()
    want.backward()
    torch.testing.assert_close(h.grad, h_ref.grad, rtol=0, atol=1e-9)


def test_paper_and_code_normalisations_differ_only_with_unequal_lengths():
    h = randn(3, 5, 4, seed=2)
    paper = F.simctg_contrastive(h, MASK, margin=1.0)
    code = F.simctg_contrastive(h, MASK, margin=1.0, variant="official_code")
    assert abs(float(paper - code)) > 1e-3
    full = torch.ones(3, 5, dtype=torch.bool)
    torch.testing.assert_close(
        F.simctg_contrastive(h, full, margin=1.0),
        F.simctg_contrastive(h, None, margin=1.0, variant="official_code"),
        rtol=0,
        atol=1e-12,
    )


def test_padding_is_ignored_and_gets_no_gradient():
    h = randn(3, 5, 4, seed=3).requires_grad_(True)
    loss = F.simctg_contrastive(h, MASK, margin=0.9)
    loss.backward()
    assert (h.grad[~MASK] == 0).all() and (h.grad[MASK].abs().sum(-1) > 0).any()
    garbage = h.detach().clone()
    garbage[~MASK] = float("nan")  # whatever sits at padding, even NaN, is never read
    torch.testing.assert_close(F.simctg_contrastive(garbage, MASK, margin=0.9), loss.detach())
    # an integer attention mask means the same as the bool mask
    torch.testing.assert_close(F.simctg_contrastive(h, MASK.long(), margin=0.9), loss)


def test_known_cases():
    same = torch.ones(2, 4, 3, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0])
    # identical directions: every s_ij = 1, each term = margin
    assert float(F.simctg_contrastive(same, margin=0.5)) == pytest.approx(0.5, abs=1e-12)
    eye = torch.eye(4, dtype=torch.float64).expand(2, 4, 4)
    # orthogonal tokens: s_ij = 0 < 1 - margin, nothing to push
    assert float(F.simctg_contrastive(eye, margin=0.5)) == 0.0
    # margin 1.5 on orthogonal tokens: each term is 1.5 - 1 = 0.5
    assert float(F.simctg_contrastive(eye, margin=1.5)) == pytest.approx(0.5, abs=1e-12)


def test_reductions_per_sequence():
    h = randn(3, 5, 4, seed=4)
    per = F.simctg_contrastive(h, MASK, margin=1.0, reduction="none")
    assert per.shape == (3,)
    terms = ref_simctg_terms(h, MASK, 1.0)
    for b in range(3):
        assert float(per[b]) == pytest.approx(float(sum(terms[b]) / len(terms[b])), abs=1e-12)
    torch.testing.assert_close(F.simctg_contrastive(h, MASK, margin=1.0), per.mean())
    torch.testing.assert_close(F.simctg_contrastive(h, MASK, 1.0, reduction="sum"), per.sum())
    code = F.simctg_contrastive(h, MASK, 1.0, variant="official_code", reduction="none")
    for b in range(3):
        assert float(code[b]) == pytest.approx(float(sum(terms[b])), abs=1e-12)
    # a one-token sequence has no pair: 0 per sequence, left out of the mean
    one = MASK.clone()
    one[2] = torch.tensor([True, False, False, False, False])
    per = F.simctg_contrastive(h, one, margin=1.0, reduction="none")
    assert float(per[2]) == 0.0
    torch.testing.assert_close(F.simctg_contrastive(h, one, margin=1.0), per[:2].mean())


def test_mle_term_matches_loop_and_hugging_face_shift():
    h = randn(3, 5, 4, seed=5).requires_grad_(True)
    logits = randn(3, 5, 7, seed=6).requires_grad_(True)
    labels = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(7))
    for variant, per_seq in (("paper", True), ("official_code", False)):
        got = F.simctg(h, MASK, logits, labels, margin=0.8, variant=variant)
        cl = ref_simctg(h, MASK, 0.8, official=variant == "official_code")
        want = cl + ref_nll(logits, labels, MASK, per_sequence=per_seq)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
        g_got = torch.autograd.grad(got, (h, logits))
        g_want = torch.autograd.grad(want, (h, logits))
        for a, b in zip(g_got, g_want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    # no padding: the code's MLE term is torch's token-mean cross-entropy on shifted labels
    full = torch.ones(3, 5, dtype=torch.bool)
    mle = F.simctg(h, full, logits, labels, variant="official_code") - F.simctg_contrastive(
        h, full, variant="official_code"
    )
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(mle, ce, rtol=0, atol=1e-12)
    # pre-shifted labels (the SimCTG code's pipeline) with -100 at ignored positions
    shifted = labels.clone()
    shifted[0, 2] = -100
    mle = F.simctg(
        h, full, logits, shifted, variant="official_code", shift_labels=False
    ) - F.simctg_contrastive(h, full, variant="official_code")
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), shifted.reshape(-1))
    torch.testing.assert_close(mle, ce, rtol=0, atol=1e-12)


def test_module_registry_and_config():
    assert "simctg" in contrastkit.list_losses()
    loss = contrastkit.create_loss("simctg", margin=0.3, variant="official_code")
    assert isinstance(loss, SimCTG) and loss.inputs == "sequence"
    h = randn(3, 5, 4, seed=8)
    torch.testing.assert_close(
        loss(h, MASK), F.simctg_contrastive(h, MASK, margin=0.3, variant="official_code")
    )
    clone = contrastkit.create_loss("simctg", **loss.get_config())
    assert clone.get_config() == loss.get_config()
    logits = randn(3, 5, 6, seed=9)
    labels = torch.arange(15).view(3, 5) % 6
    torch.testing.assert_close(
        loss(h, mask=MASK, logits=logits, labels=labels),
        F.simctg(h, MASK, logits, labels, margin=0.3, variant="official_code"),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_inputs_compute_in_float32(dtype):
    h = randn(3, 5, 8, seed=10)
    want = F.simctg_contrastive(h.to(dtype).double(), MASK, margin=0.9)
    got = F.simctg_contrastive(h.to(dtype), MASK, margin=0.9)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)


def test_training_on_the_hinge_pushes_token_cosines_below_one_minus_margin():
    h = (randn(2, 6, 8, seed=11) * 0.3 + 2.0).requires_grad_(True)  # a narrow cone
    assert self_similarity(h.detach()) > 0.9
    opt = torch.optim.Adam([h], lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        F.simctg_contrastive(h, margin=0.5).backward()
        opt.step()
    assert float(F.simctg_contrastive(h.detach(), margin=0.5)) == 0.0
    u = torch.nn.functional.normalize(h.detach(), dim=-1)
    cos = u @ u.transpose(1, 2)
    off = cos[:, ~torch.eye(6, dtype=torch.bool)]
    assert float(off.max()) <= 0.5
    assert token_isotropy(h.detach()) > 0.5


def test_bad_inputs():
    h = randn(3, 5, 4)
    with pytest.raises(ValueError, match=r"`hidden` has shape \(5, 4\).*\(B, T, d\)"):
        F.simctg_contrastive(h[0])
    with pytest.raises(TypeError, match="`hidden` has dtype torch.int64"):
        F.simctg_contrastive(torch.ones(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`margin` is -0.1.*>= 0"):
        F.simctg_contrastive(h, margin=-0.1)
    with pytest.raises(ValueError, match=r"`margin` is -1.*>= 0"):
        SimCTG(margin=-1)
    with pytest.raises(ValueError, match=r"`mask` has shape \(3, 4\).*\(3, 5\)"):
        F.simctg_contrastive(h, MASK[:, :4])
    with pytest.raises(TypeError, match="`mask` has dtype torch.float32"):
        F.simctg_contrastive(h, MASK.float())
    with pytest.raises(ValueError, match="`mask` has integer entries other than 0 and 1"):
        F.simctg_contrastive(h, MASK.long() * 2)
    with pytest.raises(ValueError, match="`mask` leaves no pair of real tokens"):
        F.simctg_contrastive(h, torch.eye(3, 5, dtype=torch.bool))
    zero = h.clone()
    zero[1, 2] = 0
    with pytest.raises(ValueError, match=r"all-zero at \(sequence, token\) positions \(1, 2\)"):
        F.simctg_contrastive(zero, MASK)
    nan = h.clone()
    nan[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf .* \(0, 1\)"):
        F.simctg_contrastive(nan, MASK)
    with pytest.raises(ValueError, match="`variant` is 'code'"):
        F.simctg_contrastive(h, variant="code")
    with pytest.raises(ValueError, match="`reduction` is 'avg'"):
        F.simctg_contrastive(h, reduction="avg")
    logits = randn(3, 5, 6)
    with pytest.raises(ValueError, match="`labels` is None while the other"):
        F.simctg(h, MASK, logits=logits)
    with pytest.raises(ValueError, match=r"`logits` has shape \(3, 4, 6\)"):
        F.simctg(h, MASK, logits[:, :4], torch.zeros(3, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="`labels` has dtype torch.float64"):
        F.simctg(h, MASK, logits, torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"`labels` has ids outside \[0, 6\)"):
        F.simctg(h, MASK, logits, torch.full((3, 5), 6))
    with pytest.raises(TypeError, match="`shift_labels` is 1"):
        SimCTG(shift_labels=1)


# ------------------------------------------------------------------------ isotropy


def ref_self_similarity(hidden, mask, per_text=False):
    sums, counts = [], []
    for b in range(hidden.shape[0]):
        idx = [t for t in range(hidden.shape[1]) if bool(mask[b, t])]
        total = 0.0
        for i in idx:
            for j in idx:
                if i != j:
                    total += float(ref_cosine(hidden[b, i], hidden[b, j]))
        sums.append(total)
        counts.append(len(idx) * (len(idx) - 1))
    if per_text:
        vals = [s / c for s, c in zip(sums, counts, strict=True) if c]
        return sum(vals) / len(vals)
    return sum(sums) / sum(counts)


def test_self_similarity_matches_loop_reference():
    h = randn(3, 5, 4, seed=12)
    for per_text in (False, True):
        pooling = "per_text" if per_text else "pooled"
        want = ref_self_similarity(h, MASK, per_text)
        assert self_similarity(h, MASK, pooling=pooling) == pytest.approx(want, abs=1e-12)
        assert token_isotropy(h, MASK, pooling=pooling) == pytest.approx(1 - want, abs=1e-12)
    # pooled and per-text averages differ when lengths differ
    assert abs(self_similarity(h, MASK) - self_similarity(h, MASK, pooling="per_text")) > 1e-4
    # one text as (T, d), numpy input
    assert self_similarity(h[0].numpy()) == pytest.approx(
        ref_self_similarity(h[:1], MASK[:1]), abs=1e-12
    )


def test_self_similarity_known_cases():
    same = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64).expand(2, 4, 3) * torch.arange(
        1.0, 5.0, dtype=torch.float64
    ).view(1, 4, 1)  # same direction, different norms
    assert self_similarity(same) == pytest.approx(1.0, abs=1e-12)
    assert token_isotropy(same) == pytest.approx(0.0, abs=1e-12)
    eye = 3 * torch.eye(5, dtype=torch.float64)[None]
    assert self_similarity(eye) == pytest.approx(0.0, abs=1e-12)
    assert token_isotropy(eye) == pytest.approx(1.0, abs=1e-12)
    # two opposite tokens: cosine -1
    assert self_similarity(torch.tensor([[[1.0, 0.0], [-2.0, 0.0]]])) == pytest.approx(-1.0)


def test_self_similarity_bad_inputs():
    with pytest.raises(ValueError, match="no text with two or more real tokens"):
        self_similarity(randn(2, 3, 4), torch.eye(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"`hidden` has shape \(4,\)"):
        self_similarity(randn(4))
    with pytest.raises(ValueError, match="`pooling` is 'avg'"):
        token_isotropy(randn(2, 3, 4), pooling="avg")
    with pytest.raises(ValueError, match=r"`mask` has shape \(2, 2\)"):
        self_similarity(randn(2, 3, 4), torch.ones(2, 2, dtype=torch.bool))


def tiny_gpt2(seed=0):
    transformers = pytest.importorskip(
        "transformers", reason="transformers is needed for the tiny GPT-2 scoring model"
    )
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=50,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config).double().eval()


def test_model_isotropy_matches_per_text_loop_on_tiny_gpt2():
    model = tiny_gpt2()
    g = torch.Generator().manual_seed(13)
    texts = [torch.randint(0, 50, (n,), generator=g) for n in (7, 3, 11, 1, 5)]
    sums, counts = 0.0, 0
    with torch.no_grad():
        for t in texts:  # one unpadded text at a time, as the official script
            h = model(input_ids=t[None], output_hidden_states=True).hidden_states[-1][0]
            n = h.shape[0]
            for i in range(n):
                for j in range(n):
                    if i != j:
                        sums += float(ref_cosine(h[i], h[j]))
            counts += n * (n - 1)
    model.train()
    got = model_isotropy(model, [*texts, []], batch_size=2)  # an empty text adds no pair
    assert got == pytest.approx(1 - sums / counts, abs=1e-10)
    assert model.training  # the training flag is restored
    # the same texts as a padded tensor with an attention mask
    ids = torch.zeros(5, 11, dtype=torch.long)
    mask = torch.zeros(5, 11, dtype=torch.long)
    for k, t in enumerate(texts):
        ids[k, : len(t)], mask[k, : len(t)] = t, 1
    assert model_isotropy(model, ids, mask, batch_size=3) == pytest.approx(got, abs=1e-10)
    with pytest.raises(ValueError, match="`batch_size` is 0"):
        model_isotropy(model, texts, batch_size=0)
