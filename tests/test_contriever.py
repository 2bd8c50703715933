"""Contriever-style training (random crops, momentum key encoder, key queue) and the
list-wise graded-relevance text method."""

import math
import os

import pytest
import torch

from conftest import Interrupt, stop_after

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")

from transformers import AutoTokenizer, BertConfig, BertModel  # noqa: E402

from contrastkit.functional import listwise_wasserstein  # noqa: E402
from contrastkit.text import TEXT_METHODS, create_text_method  # noqa: E402
from contrastkit.text.contriever import (  # noqa: E402
    Contriever,
    ListwiseGraded,
    contriever_loss,
    delete_tokens,
    random_crop,
)
from contrastkit.text.encoder import TextEncoder, default_model_path  # noqa: E402

DOCS = [
    "the cat sat on the mat and looked out of the window at the rain",
    "a quick brown fox jumps over the lazy dog twice before noon",
    "stock markets fell sharply on monday after the central bank news",
    "rain is expected across the north of the country later this week",
]


def _model_path():
    try:
        return default_model_path()
    except ImportError as err:
        pytest.skip(f"default model package missing: {err}")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(_model_path()), local_files_only=True)


def tiny_encoder(tokenizer, dtype=torch.float32, seed=0):
    """A one-layer random BERT with MiniLM's tokenizer: fast, and a real TextEncoder."""
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,  # train mode without randomness: keys are reproducible
        attention_probs_dropout_prob=0.0,
    )
    return TextEncoder(BertModel(cfg).to(dtype), tokenizer, pooling="mean", max_length=32)


# ----------------------------------------------------------------------------- cropping


def _crop_reference(x, lo, hi, g, min_length=0):
    """The code's randomcrop (src/data.py) written as a loop over the same draws."""
    n = len(x)
    ratio = lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64).item()
    length = math.floor(n * ratio)
    if length < min_length:
        length = min(min_length, n)
    start = int(torch.randint(0, n - length + 1, (), generator=g))
    return [x[i] for i in range(start, start + length)]


def test_random_crop_matches_loop_reference_and_is_deterministic():
    g1, g2, g3 = (torch.Generator().manual_seed(7) for _ in range(3))
    for n in [1, 2, 5, 13, 40, 256]:
        x = list(range(100, 100 + n))
        for _ in range(25):
            got = random_crop(x, 0.1, 0.5, g1)
            assert got == _crop_reference(x, 0.1, 0.5, g2)
            assert got == random_crop(x, 0.1, 0.5, g3)  # same seed, same crops
    t = torch.arange(30)
    crop = random_crop(t, 0.2, 0.2, torch.Generator().manual_seed(0))
    assert isinstance(crop, torch.Tensor) and crop.numel() == 6
    assert torch.equal(crop, torch.arange(int(crop[0]), int(crop[0]) + 6))  # contiguous


def _expected_floor_length(n, lo, hi):
    """E[floor(n R)], R ~ U(lo, hi), exactly: sum_k k * P(k <= n R < k + 1)."""
    total = 0.0
    for k in range(math.floor(n * lo), math.floor(n * hi) + 1):
        a, b = max(k / n, lo), min((k + 1) / n, hi)
        total += k * max(b - a, 0.0) / (hi - lo)
    return total


def test_random_crop_length_and_start_statistics():
    g = torch.Generator().manual_seed(0)
    n, lo, hi, draws = 200, 0.1, 0.5, 4000
    x = list(range(n))
    lengths, positions = [], []
    for _ in range(draws):
        c = random_crop(x, lo, hi, g)
        lengths.append(len(c))
        if n - len(c) > 0:
            positions.append(c[0] / (n - len(c)))  # start rescaled to [0, 1]
        assert c == list(range(c[0], c[0] + len(c)))
    assert min(lengths) >= int(n * lo) and max(lengths) <= int(n * hi)
    lengths = torch.tensor(lengths, dtype=torch.float64)
    se = lengths.std() / math.sqrt(draws)
    assert abs(lengths.mean().item() - _expected_floor_length(n, lo, hi)) < 4 * se
    pos = torch.tensor(positions, dtype=torch.float64)
    # A uniform start on 0..n-len has rescaled mean 1/2 and std about 1/sqrt(12).
    assert abs(pos.mean().item() - 0.5) < 4 / math.sqrt(12 * len(positions))
    assert pos.min() == 0.0 and pos.max() == 1.0  # both ends reachable (randint inclusive)


def test_random_crop_empty_crops_follow_the_code_and_min_length_removes_them():
    g = torch.Generator().manual_seed(1)
    x, draws = [1, 2, 3, 4, 5], 4000
    empty = sum(len(random_crop(x, 0.1, 0.5, g)) == 0 for _ in range(draws))
    p = (0.2 - 0.1) / (0.5 - 0.1)  # int(5 r) = 0 iff r < 0.2
    assert abs(empty / draws - p) < 4 * math.sqrt(p * (1 - p) / draws)
    assert all(len(random_crop(x, 0.1, 0.5, g, min_length=1)) >= 1 for _ in range(500))


def test_delete_tokens_rate_and_identity():
    g = torch.Generator().manual_seed(2)
    x = list(range(20000))
    kept = delete_tokens(x, 0.1, g)
    assert abs(len(kept) / len(x) - 0.9) < 4 * math.sqrt(0.09 / len(x))
    assert kept == sorted(kept) and set(kept) <= set(x)
    assert delete_tokens(x[:10], 0.0, g) == x[:10]


def test_random_crop_bad_input():
    with pytest.raises(ValueError, match="ratio_min"):
        random_crop([1, 2, 3], 0.6, 0.5)
    with pytest.raises(ValueError, match="ratio_max"):
        random_crop([1, 2, 3], 0.1, 1.5)
    with pytest.raises(TypeError, match="token_ids"):
        random_crop("some text", 0.1, 0.5)
    with pytest.raises(ValueError, match="token_ids"):
        random_crop(torch.zeros(2, 3), 0.1, 0.5)


# ----------------------------------------------------------------------------- loss


def _loss_loop(q, k, queue, t):
    """MoCo / in-batch cross-entropy on unnormalised dot products, one anchor at a time."""
    total = 0.0
    for i in range(q.shape[0]):
        if queue is None:
            logits = [q[i] @ k[j] / t for j in range(k.shape[0])]
            target = i
        else:
            logits = [q[i] @ k[i] / t] + [q[i] @ queue[j] / t for j in range(queue.shape[0])]
            target = 0
        row = torch.stack(logits)
        total = total - (row[target] - torch.logsumexp(row, 0))
    return total / q.shape[0]


@pytest.mark.parametrize("with_queue", [True, False])
def test_contriever_loss_matches_loop_float64(with_queue):
    g = torch.Generator().manual_seed(3)
    q = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    queue = torch.randn(10, 5, generator=g, dtype=torch.float64) if with_queue else None
    got = contriever_loss(q, k, queue=queue, temperature=0.05)
    ref = _loss_loop(q, k, queue, 0.05)
    assert abs(got.item() - ref.item()) < 1e-10
    g_got = torch.autograd.grad(got, (q, k))
    g_ref = torch.autograd.grad(ref, (q, k))
    for a, b in zip(g_got, g_ref, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- method


def _step(method, enc, opt, docs):
    loss = method.batch_loss(enc, docs)
    opt.zero_grad()
    loss.backward()
    opt.step()
    method.after_step(enc)
    return loss


def _expected_keys(method, enc, docs):
    """The key encoder's outputs for the crops the method is about to draw."""
    state = method.generator.get_state()
    _, k_features = method.views(enc, docs)
    method.generator.set_state(state)
    with torch.no_grad():
        return method.key_encoder(k_features)


def test_queue_fills_fifo_with_key_encoder_outputs(tokenizer):
    enc = tiny_encoder(tokenizer)  # train mode (keys are enqueued), no dropout
    method = Contriever(queue_size=6, seed=0)
    method.bind(enc)
    opt = torch.optim.SGD(enc.parameters(), lr=0.5)
    keys_a = _expected_keys(method, enc, DOCS)
    _step(method, enc, opt, DOCS)
    assert torch.equal(method.queue.get(), keys_a)
    keys_b = _expected_keys(method, enc, DOCS[::-1])
    state = method.generator.get_state()
    q_feat, k_feat = method.views(enc, DOCS[::-1])
    method.generator.set_state(state)
    expected_loss = contriever_loss(enc(q_feat), keys_b, queue=keys_a, temperature=0.05)
    loss_b = _step(method, enc, opt, DOCS[::-1])
    assert abs(loss_b.item() - expected_loss.item()) < 1e-6  # the queue held step 1's keys
    # FIFO: 6 slots hold the last 2 keys of step 1 then the 4 of step 2, oldest first.
    assert torch.equal(method.queue.get(), torch.cat([keys_a, keys_b])[-6:])
    assert not torch.equal(keys_a, keys_b)


def test_eval_mode_leaves_the_queue_alone(tokenizer):
    enc = tiny_encoder(tokenizer).eval()
    method = Contriever(queue_size=6)
    method.batch_loss(enc, DOCS)
    assert method.queue.get() is None
    assert not method.key_encoder.training  # the key encoder follows the encoder's mode


def test_momentum_update_equals_loop(tokenizer):
    enc = tiny_encoder(tokenizer, torch.float64)
    method = Contriever(momentum=0.9, queue_size=0)
    method.bind(enc)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.1 * torch.randn_like(p))
    before = {n: p.clone() for n, p in method.key_encoder.named_parameters()}
    online = dict(enc.named_parameters())
    method.after_step(enc)
    for name, pk in method.key_encoder.named_parameters():
        ref = before[name].clone()
        flat_ref, flat_q = ref.view(-1), online[name].detach().view(-1)
        for i in range(0, flat_ref.numel(), max(1, flat_ref.numel() // 7)):  # sampled loop
            flat_ref[i] = 0.9 * flat_ref[i] + 0.1 * flat_q[i]
            assert abs(pk.view(-1)[i].item() - flat_ref[i].item()) < 1e-12
        whole = 0.9 * before[name] + 0.1 * online[name].detach()
        assert torch.allclose(pk, whole, rtol=0, atol=1e-12)
        assert not pk.requires_grad


def test_in_batch_variant_shares_the_encoder(tokenizer):
    enc = tiny_encoder(tokenizer).eval()
    method = Contriever(momentum=None, queue_size=0)
    state = method.generator.get_state()
    q_feat, k_feat = method.views(enc, DOCS)
    method.generator.set_state(state)
    loss = method.batch_loss(enc, DOCS)
    assert method.key_encoder is None
    ref = _loss_loop(enc(q_feat).double(), enc(k_feat).double(), None, 0.05)
    assert abs(loss.item() - ref.item()) < 1e-5
    loss.backward()
    assert enc.model.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_state_dict_resumes_exactly(tokenizer):
    enc = tiny_encoder(tokenizer)
    method = Contriever(queue_size=8, seed=5)
    opt = torch.optim.SGD(enc.parameters(), lr=0.5)
    _step(method, enc, opt, DOCS)
    saved_method = {
        k: v.clone() if torch.is_tensor(v) else v for k, v in method.state_dict().items()
    }
    saved_enc = {k: v.clone() for k, v in enc.state_dict().items()}
    assert any(k.startswith("key_encoder.") for k in saved_method)
    assert "queue.items" in saved_method and "_extra_state" in saved_method
    next_loss = method.batch_loss(enc, DOCS[::-1])

    enc2 = tiny_encoder(tokenizer, seed=99)
    enc2.load_state_dict(saved_enc)
    resumed = Contriever(queue_size=8, seed=123)  # the seed is overwritten by the state
    resumed.load_state_dict(saved_method)
    assert resumed.key_encoder is None  # rebuilt from the saved weights at the next batch
    again = resumed.batch_loss(enc2, DOCS[::-1])
    assert again.item() == next_loss.item()
    for a, b in zip(resumed.key_encoder.parameters(), method.key_encoder.parameters(), strict=True):
        assert torch.equal(a, b)
    # The saved key encoder differs from the query encoder (the momentum has run).
    assert not all(
        torch.equal(a, b)
        for a, b in zip(resumed.key_encoder.parameters(), enc2.parameters(), strict=True)
    )


def test_contriever_bad_input(tokenizer):
    with pytest.raises(ValueError, match="queue_size"):
        Contriever(momentum=None, queue_size=16)
    with pytest.raises(ValueError, match="momentum"):
        Contriever(momentum=1.5)
    with pytest.raises(ValueError, match="temperature"):
        Contriever(temperature=0.0)
    with pytest.raises(ValueError, match="ratio_min"):
        Contriever(ratio_min=0.6, ratio_max=0.5)
    enc = tiny_encoder(tokenizer)
    with pytest.raises(ValueError, match=r"batch\[1\]"):
        Contriever().batch_loss(enc, ["a document", "   "])
    with pytest.raises(TypeError, match=r"batch\[0\]"):
        Contriever().batch_loss(enc, [("a", "b")])


def test_registered_and_created_by_name():
    assert TEXT_METHODS["contriever"] is Contriever
    assert TEXT_METHODS["listwise_graded"] is ListwiseGraded
    assert create_text_method("contriever", queue_size=0).queue is None
    assert create_text_method("listwise_graded", variant="official_code").loss.variant == (
        "official_code"
    )


# ----------------------------------------------------------------------------- graded

GRADED = [
    (
        "how do cats sleep",
        ["cats sleep most of the day", "dogs bark", "cat naps are short"],
        [3, 0, 2],
    ),
    ("stock market news", ["markets fell on monday", "it rained", "shares rose"], [3, 0, 1]),
]


def test_listwise_graded_equals_the_registered_loss(tokenizer):
    enc = tiny_encoder(tokenizer, torch.float64).eval()
    method = ListwiseGraded(temperature=0.1)
    got = method.batch_loss(enc, GRADED)
    q = enc(enc.tokenize([ex[0] for ex in GRADED]))
    d = enc(enc.tokenize([doc for ex in GRADED for doc in ex[1]])).reshape(2, 3, -1)
    rel = torch.tensor([ex[2] for ex in GRADED], dtype=torch.float64)
    ref = listwise_wasserstein(q, d, relevance=rel, temperature=0.1)
    assert abs(got.item() - ref.item()) < 1e-10
    got.backward()
    assert enc.model.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_listwise_graded_bad_input(tokenizer):
    enc = tiny_encoder(tokenizer)
    method = ListwiseGraded()
    with pytest.raises(ValueError, match="same number G"):
        method.batch_loss(enc, [GRADED[0], ("q", ["a", "b"], [1, 0])])
    with pytest.raises(TypeError, match="one grade per document"):
        method.batch_loss(enc, [("q", ["a", "b"], [1])])
    with pytest.raises(ValueError, match="unknown arguments"):
        ListwiseGraded(temprature=0.1)


# ----------------------------------------------------------------------------- real MiniLM


def test_one_real_minilm_step_moves_query_encoder_only():
    enc = TextEncoder.from_pretrained(_model_path(), max_length=32)
    enc.train()
    method = Contriever(queue_size=8, momentum=0.99, seed=0)
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-4)
    loss = method.batch_loss(enc, DOCS)
    assert torch.isfinite(loss) and loss.item() > 0
    q_before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    k_before = {n: p.detach().clone() for n, p in method.key_encoder.named_parameters()}
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in method.key_encoder.parameters())
    opt.step()
    moved = [n for n, p in enc.named_parameters() if not torch.equal(p, q_before[n])]
    assert len(moved) > 10
    assert all(torch.equal(p, k_before[n]) for n, p in method.key_encoder.named_parameters())
    method.after_step(enc)
    q_after = dict(enc.named_parameters())
    for n, p in method.key_encoder.named_parameters():
        ref = 0.99 * k_before[n] + 0.01 * q_after[n].detach()
        assert torch.allclose(p, ref, rtol=0, atol=1e-6)
    assert method.queue.get().shape == (4, enc.dim)


def test_train_text_resumes_contriever_exactly(tokenizer, tmp_path):
    """Through the text training loop: two epochs straight equal one epoch, a crash, and a
    resume from the checkpoint (key encoder, queue and crop generator restored)."""
    from contrastkit.text.train import TextTrainConfig, train_text

    folder = tiny_encoder(tokenizer).save(tmp_path / "tiny")
    docs = DOCS + [d[::-1] for d in DOCS]  # 8 documents: 2 steps of 4 per epoch

    def cfg(out, **kw):
        return TextTrainConfig(
            model=str(folder),
            method="contriever",
            method_params={"queue_size": 6, "momentum": 0.9},
            max_length=16,
            batch_size=4,
            lr=1e-3,
            epochs=2,
            seed=3,
            out=str(out),
            **kw,
        )

    straight = train_text(cfg(tmp_path / "a"), docs)
    with pytest.raises(Interrupt):
        train_text(cfg(tmp_path / "b"), docs, callbacks=[stop_after(1)])
    resumed = train_text(cfg(tmp_path / "b", resume=str(tmp_path / "b" / "checkpoint.pt")), docs)
    a, b = straight.encoder.state_dict(), resumed.encoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in straight.history] == [r["loss"] for r in resumed.history]
