"""contrastkit.text.tasks: retrieval task construction and evaluation (fake encoders; the
STS-B task is checked against the file read independently)."""

import math
import zlib

import pytest
import torch

from contrastkit.evaluation.retrieval import retrieval_metrics
from contrastkit.text.tasks import (
    RetrievalTask,
    crop_retrieval_task,
    evaluate_retrieval,
    pairs_retrieval_task,
    ranking_metrics,
    stsb_retrieval_task,
)


def hash_encoder(d=8):
    """A fixed pseudo-random vector per text (crc32-seeded, so stable across runs)."""

    def encode(texts):
        rows = []
        for t in texts:
            g = torch.Generator().manual_seed(zlib.crc32(t.encode()))
            rows.append(torch.randn(d, generator=g))
        return torch.stack(rows)

    return encode


# ---------------------------------------------------------------- metric references


def _mrr_at_k_loop(scores, rel, k):
    total, n = 0.0, 0
    for srow, rrow in zip(scores.tolist(), rel.tolist(), strict=True):
        if not any(r > 0 for r in rrow):
            continue
        n += 1
        order = sorted(range(len(srow)), key=lambda i: -srow[i])
        for rank, i in enumerate(order[:k], 1):
            if rrow[i] > 0:
                total += 1.0 / rank
                break
    return total / n


def _random_problem(q=12, c=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(q, c, generator=g, dtype=torch.float64)
    rel = torch.randint(0, 4, (q, c), generator=g).double() * (torch.rand(q, c, generator=g) < 0.15)
    rel[0] = 0
    rel[0, 5] = 2.0  # every row but one judged
    rel[1] = 0  # an unjudged query is skipped
    return scores, rel


@pytest.mark.parametrize("ks", [(1, 3, 10), (5, 40)])
def test_ranking_metrics_match_retrieval_metrics_and_loop_mrr(ks):
    scores, rel = _random_problem()
    ranked = torch.argsort(scores, dim=1, descending=True)
    qrels = [{c: float(g) for c, g in enumerate(row.tolist()) if g > 0} for row in rel]
    got = ranking_metrics(ranked, qrels, ks)
    ref = retrieval_metrics(scores, rel, ks)
    for key, value in ref.items():
        if key != "mrr":
            assert abs(got[key] - value) < 1e-12, key
    for k in ks:
        assert abs(got[f"mrr@{k}"] - _mrr_at_k_loop(scores, rel, k)) < 1e-12
    # a cut-off at the corpus size is MRR without cut-off
    assert abs(ranking_metrics(ranked, qrels, (30,))["mrr@30"] - ref["mrr"]) < 1e-12


def test_ranking_metrics_top_k_only_equals_full_ranking():
    scores, rel = _random_problem(seed=1)
    ranked = torch.argsort(scores, dim=1, descending=True)
    qrels = [{c: float(g) for c, g in enumerate(row.tolist()) if g > 0} for row in rel]
    full = ranking_metrics(ranked, qrels, (1, 4))
    assert ranking_metrics(ranked[:, :4], qrels, (1, 4), n_corpus=30) == full
    with pytest.raises(ValueError, match="need the top 4"):
        ranking_metrics(ranked[:, :3], qrels, (1, 4), n_corpus=30)


# ---------------------------------------------------------------- STS pairs task

PAIRS = [
    ("a cat sits", "a cat is sitting", 4.6),
    ("a cat sits", "a dog runs", 1.0),
    ("a dog runs", "a dog is running", 4.0),
    ("birds fly", "a cat sits", 4.2),  # reverse direction: judges "birds fly" for "a cat sits"
    ("a cat sits", "a cat is sitting", 4.8),  # listed twice: the higher score is kept
    ("same", "same", 5.0),  # s1 == s2: skipped
    ("x", "y", 3.9),  # below min_score: no query
]


def test_pairs_task_construction():
    task = pairs_retrieval_task(PAIRS, min_score=4.0)
    assert task.corpus == [
        "a cat sits",
        "a cat is sitting",
        "a dog runs",
        "a dog is running",
        "birds fly",
        "same",
        "x",
        "y",
    ]
    assert task.queries == ["a cat sits", "a dog runs", "birds fly"]
    assert task.relevance == [{1: 4.8, 4: 4.2}, {3: 4.0}, {0: 4.2}]
    assert task.exclude == [(0,), (2,), (4,)]
    dense = task.relevance_matrix()
    assert dense.shape == (3, 8) and dense[0, 1] == 4.8 and dense.sum() == 4.8 + 4.2 + 4.0 + 4.2


def test_query_own_sentence_is_excluded():
    task = pairs_retrieval_task(PAIRS)
    enc = hash_encoder()
    out = evaluate_retrieval(enc, task, ks=(1, 8))
    # dense reference: the query's own sentence (cosine 1, else ranked first) masked by -inf
    z = torch.nn.functional.normalize(enc(task.corpus), dim=1)
    scores = z[[0, 2, 4]] @ z.T
    for r, excl in enumerate(task.exclude):
        scores[r, list(excl)] = -math.inf
    ref = retrieval_metrics(scores, task.relevance_matrix(), (1, 8))
    for key, value in ref.items():
        if key != "mrr":
            assert abs(out[key] - value) < 1e-12, key
    assert abs(out["mrr@8"] - ref["mrr"]) < 1e-12


@pytest.mark.data
def test_stsb_task_matches_the_file():
    from contrastkit.train.data import data_root

    path = data_root() / "stsb" / "sts-test.csv"
    if not path.is_file():
        pytest.skip(f"STS-B is absent ({path}); set CONTRASTKIT_DATA to shared/data")
    rows = []
    with open(path, encoding="utf-8") as f:  # as stsb/SOURCE.md says
        for line in f:
            c = line.rstrip("\n").split("\t")
            rows.append((c[5], c[6], float(c[4])))
    task = stsb_retrieval_task("test", min_score=4.0)
    assert len(task.corpus) == len({s for r in rows for s in r[:2]})
    assert set(task.queries) == {a for a, b, s in rows if s >= 4.0 and a != b}
    judged = {}
    for a, b, s in rows:
        if s >= 4.0 and a != b:
            for x, y in ((a, b), (b, a)):
                judged[(x, y)] = max(s, judged.get((x, y), 0.0))
    got = {
        (q, task.corpus[c]): g
        for q, rel in zip(task.queries, task.relevance, strict=True)
        for c, g in rel.items()
    }
    assert got == {k: v for k, v in judged.items() if k[0] in set(task.queries)}
    assert all(task.corpus[e[0]] == q for q, e in zip(task.queries, task.exclude, strict=True))


# ---------------------------------------------------------------- crop task

DOCS = [" ".join(f"w{d}_{i}" for i in range(n)) for d, n in enumerate([40, 30, 25, 50])]


def test_crop_task_construction():
    task = crop_retrieval_task(DOCS, seed=3, query_len=5, min_rest=22)
    assert len(task.corpus) == 4 and len(task.queries) == 3  # doc 2 (25 words) gives no query
    assert task.corpus[2] == DOCS[2]
    sources = [0, 1, 3]
    assert task.relevance == [{s: 1.0} for s in sources]
    for q, s in zip(task.queries, sources, strict=True):
        words, qw = DOCS[s].split(), q.split()
        start = words.index(qw[0])
        assert words[start : start + 5] == qw  # a contiguous span of the source
        assert task.corpus[s].split() == words[:start] + words[start + 5 :]
    again = crop_retrieval_task(DOCS, seed=3, query_len=5, min_rest=22)
    other = crop_retrieval_task(DOCS, seed=4, query_len=5, min_rest=22)
    assert again.queries == task.queries and other.queries != task.queries
    full = crop_retrieval_task(DOCS, seed=3, query_len=5, min_rest=22, remove_span=False)
    assert full.corpus == DOCS and full.queries == task.queries
    short = crop_retrieval_task(DOCS, seed=0, query_len=5, min_rest=5, max_words=12)
    assert all(len(c.split()) == 7 for c in short.corpus)


def test_crop_task_reads_a_file(tmp_path):
    p = tmp_path / "docs.txt"
    p.write_text("\n".join(DOCS) + "\n\n")
    assert (
        crop_retrieval_task(p, query_len=5).queries
        == crop_retrieval_task(DOCS, query_len=5).queries
    )


@pytest.mark.data
def test_lee_background_crop_task():
    from contrastkit.train.data import data_root

    path = data_root() / "gensim-eval" / "lee_background.cor"
    if not path.is_file():
        pytest.skip(f"lee_background.cor is absent ({path}); set CONTRASTKIT_DATA")
    task = crop_retrieval_task(path, seed=0, query_len=20)
    n_docs = sum(1 for line in open(path, encoding="utf-8") if line.strip())
    assert len(task.corpus) == n_docs == 300
    assert len(task.queries) == sum(len(line.split()) >= 40 for line in open(path))


# ---------------------------------------------------------------- evaluation


def test_torch_and_faiss_backends_agree():
    pytest.importorskip("faiss")
    docs = [" ".join(f"t{(d * 7 + i) % 50}" for i in range(30)) for d in range(40)]
    task = crop_retrieval_task(docs, seed=1, query_len=6)
    enc = hash_encoder(16)
    a = evaluate_retrieval(enc, task, ks=(1, 5, 100))
    b = evaluate_retrieval(enc, task, ks=(1, 5, 100), backend="faiss")
    assert a.keys() == b.keys()
    for key in a:
        assert abs(a[key] - b[key]) < 1e-12, key
    c = evaluate_retrieval(enc, pairs_retrieval_task(PAIRS), ks=(1, 3), backend="faiss")
    d = evaluate_retrieval(enc, pairs_retrieval_task(PAIRS), ks=(1, 3))
    assert c == d


def test_perfect_and_dot_similarity():
    # an encoder that puts each query on its source document: recall@1 = 1
    task = RetrievalTask(["q0", "q1"], ["d0", "d1", "d2"], [{2: 1.0}, {0: 1.0}])
    table = {
        "q0": [0.0, 0.0, 1.0],
        "q1": [3.0, 0.0, 0.0],
        "d0": [1.0, 0.0, 0.0],
        "d1": [0.0, 1.0, 0.0],
        "d2": [0.0, 0.0, 1.0],
    }

    def enc(texts):
        return torch.tensor([table[t] for t in texts])

    out = evaluate_retrieval(enc, task, ks=(1, 10))
    assert out["recall@1"] == out["ndcg@10"] == out["mrr@10"] == 1.0
    # dot product: a long d1 outranks d2 for q0
    table["d1"] = [0.0, 1.0, 2.0]  # cosine 0.89 with q0, dot 2
    assert evaluate_retrieval(enc, task, ks=(1,))["recall@1"] == 1.0
    dot = evaluate_retrieval(enc, task, ks=(1, 2), similarity="dot")
    assert dot["recall@1"] == 0.5 and dot["mrr@2"] == 0.75


def test_bad_inputs():
    with pytest.raises(ValueError, match="relevance\\[0\\]` is empty"):
        RetrievalTask(["q"], ["d"], [{}])
    with pytest.raises(ValueError, match="corpus index 3"):
        RetrievalTask(["q"], ["d"], [{3: 1.0}])
    with pytest.raises(ValueError, match="grades must be finite and > 0"):
        RetrievalTask(["q"], ["d"], [{0: 0.0}])
    with pytest.raises(ValueError, match="not relevant"):
        RetrievalTask(["q"], ["d", "e"], [{0: 1.0}], exclude=[(0,)])
    with pytest.raises(ValueError, match="has 2 entries for 1 queries"):
        RetrievalTask(["q"], ["d"], [{0: 1.0}, {0: 1.0}])
    with pytest.raises(ValueError, match="no pair with score >= 4.0"):
        pairs_retrieval_task([("a", "b", 1.0)])
    with pytest.raises(TypeError, match=r"pairs\[0\]"):
        pairs_retrieval_task([("a", "b")])
    with pytest.raises(TypeError, match=r"pairs\[1\]"):
        pairs_retrieval_task([("a", "b", 5.0), ("a", "c", "4.5")])
    with pytest.raises(ValueError, match="no document with >= 40 words"):
        crop_retrieval_task(["one two three"], query_len=20)
    with pytest.raises(TypeError, match="non-string"):
        crop_retrieval_task(["ok", 3])
    task = pairs_retrieval_task(PAIRS)
    with pytest.raises(ValueError, match="similarity"):
        evaluate_retrieval(hash_encoder(), task, similarity="l2")
    with pytest.raises(ValueError, match="backend"):
        evaluate_retrieval(hash_encoder(), task, backend="annoy")
    with pytest.raises(TypeError, match="RetrievalTask"):
        evaluate_retrieval(hash_encoder(), PAIRS)
    with pytest.raises(ValueError, match="ks"):
        evaluate_retrieval(hash_encoder(), task, ks=(0,))
