"""Retrieval tasks built from the data at hand, and their evaluation.

A ``RetrievalTask`` is queries, a corpus and sparse graded relevance judgements. Two
builders, both deterministic:

``pairs_retrieval_task`` / ``stsb_retrieval_task`` (STS pairs as retrieval)
    From ``(s1, s2, score)`` triples (STS Benchmark, Cer et al., SemEval 2017):

    - corpus: every distinct sentence of the split (s1 and s2 of every row), in
      first-seen order; sentences are distinct by exact string equality (no case or
      whitespace normalisation);
    - queries: the distinct s1 of the rows with ``score >= min_score`` (default 4.0, "the
      two sentences are mostly / completely equivalent" in the STS annotation guidelines),
      in first-seen order; rows with ``s1 == s2`` are skipped;
    - relevance: the query's partners in every row with ``score >= min_score``, in either
      order (STS similarity is symmetric, so a row listed as ``(c, q)`` judges ``c`` for
      ``q`` as well; on STS-B test this adds 2 judgements to 338). The grade is the gold
      score (graded nDCG; recall and MRR count any grade > 0); a pair listed twice keeps
      its higher score. Rows below ``min_score`` are not judgements: those partners count
      as non-relevant, as does any unlabelled paraphrase elsewhere in the corpus;
    - the query's own sentence is in the corpus (it is a sentence of the split) and is
      excluded from its ranking, as BEIR's ``ignore_identical_ids`` does.

    STS-B test: 309 queries over 2552 sentences.

``crop_retrieval_task`` (held-out crop retrieval on documents)
    The evaluation counterpart of Contriever's independent cropping (Izacard et al., TMLR
    2022, sec. 3.2; ``facebookresearch/contriever`` ``src/data.py::randomcrop``), which
    the paper itself does not use as a benchmark: for each document (words = whitespace
    split, optionally only the first ``max_words``), a span of ``query_len`` consecutive
    words starts at a uniform position (``random.Random(seed)``, documents in order);
    the span is the query. The corpus holds every document with its query span removed
    (``remove_span=True``, the default, so the query is never a verbatim substring of its
    target and a lexical match does not solve the task) or the full documents
    (``remove_span=False``). Relevance: 1 for the source document, 0 elsewhere (identical
    documents, if any, are not merged). Documents shorter than ``query_len + min_rest``
    words give no query and stay whole in the corpus.

``evaluate_retrieval(encode, task, ks=(1, 10, 100))`` embeds queries and corpus (each
distinct text once), ranks the corpus by cosine similarity (or dot product) per query and
returns, for each k, ``recall@k``, ``hit@k``, ``ndcg@k`` and ``mrr@k`` with the
definitions of ``contrastkit.evaluation.retrieval`` (BEIR / trec_eval: nDCG with linear
gain and ``log2(rank + 1)`` discount; recall = relevant in the top k / all relevant;
``mrr@k`` = 1 / rank of the first relevant item if it is within the top k, else 0, as
MS MARCO's MRR@10), averaged over the queries. The default ``ks`` give the issue's
nDCG@10, Recall@100, MRR@10, plus Recall@1. Ranking keeps only the top ``max(ks)`` per
query: in torch (score blocks, stable sort: equal scores keep corpus order, as
``retrieval_metrics``) or with a flat faiss ``Index`` (``backend="faiss"``, for large
corpora; its tie order is faiss's).
"""

from __future__ import annotations

import math
import numbers
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from contrastkit.core.validation import _fail, check_texts
from contrastkit.diagnostics._inputs import CHUNK_ELEMENTS, check_int
from contrastkit.evaluation.retrieval import _check_ks
from contrastkit.evaluation.sts import encode_texts

__all__ = [
    "RetrievalTask",
    "crop_retrieval_task",
    "evaluate_retrieval",
    "pairs_retrieval_task",
    "ranking_metrics",
    "stsb_retrieval_task",
]


@dataclass(frozen=True)
class RetrievalTask:
    """Queries, a corpus and sparse graded relevance.

    ``relevance[q]`` maps corpus indices to grades > 0 (every query has at least one);
    ``exclude[q]`` lists corpus indices never ranked for query q (e.g. the query's own
    text); empty by default. ``relevance_matrix()`` gives the dense ``(Q, C)`` form.
    """

    queries: list[str]
    corpus: list[str]
    relevance: list[dict[int, float]]
    name: str = "retrieval"
    description: str = ""
    exclude: list[tuple[int, ...]] = field(default_factory=list)

    def __post_init__(self):
        owner = "RetrievalTask"
        n_q, n_c = len(self.queries), len(self.corpus)
        if n_q == 0 or n_c == 0:
            _fail(
                owner,
                "queries" if n_q == 0 else "corpus",
                "is empty",
                "a task needs queries and a corpus",
                "build the task from more data",
            )
        if len(self.relevance) != n_q:
            _fail(
                owner,
                "relevance",
                f"has {len(self.relevance)} entries for {n_q} queries",
                "one {corpus index: grade} dict per query",
                "align relevance with queries",
            )
        if not self.exclude:
            object.__setattr__(self, "exclude", [()] * n_q)
        if len(self.exclude) != n_q:
            _fail(
                owner,
                "exclude",
                f"has {len(self.exclude)} entries for {n_q} queries",
                "one tuple of corpus indices per query",
                "align exclude with queries",
            )
        for q, (rel, excl) in enumerate(zip(self.relevance, self.exclude, strict=True)):
            if not rel:
                _fail(
                    owner,
                    f"relevance[{q}]",
                    "is empty",
                    "every query needs at least one relevant item",
                    "drop queries without judgements",
                )
            for c, g in rel.items():
                if not (isinstance(c, int) and 0 <= c < n_c):
                    _fail(
                        owner,
                        f"relevance[{q}]",
                        f"names corpus index {c!r}",
                        f"indices must be ints in [0, {n_c})",
                        "fix the judgements",
                    )
                if not (math.isfinite(g) and g > 0):
                    _fail(
                        owner,
                        f"relevance[{q}][{c}]",
                        f"is {g!r}",
                        "grades must be finite and > 0 (leave non-relevant items out)",
                        "drop that entry",
                    )
            for c in excl:
                if not (isinstance(c, int) and 0 <= c < n_c) or c in rel:
                    _fail(
                        owner,
                        f"exclude[{q}]",
                        f"names {c!r}",
                        f"excluded items must be ints in [0, {n_c}) and not relevant",
                        "fix the exclusions",
                    )

    def relevance_matrix(self, dtype=torch.float64) -> torch.Tensor:
        """Dense ``(Q, C)`` relevance (0 for unjudged items)."""
        rel = torch.zeros(len(self.queries), len(self.corpus), dtype=dtype)
        for q, judged in enumerate(self.relevance):
            for c, g in judged.items():
                rel[q, c] = g
        return rel

    def __repr__(self) -> str:
        n_rel = sum(len(r) for r in self.relevance)
        return (
            f"RetrievalTask({self.name!r}: {len(self.queries)} queries, "
            f"{len(self.corpus)} corpus texts, {n_rel} judgements)"
        )


# ---------------------------------------------------------------------------- builders


def pairs_retrieval_task(
    pairs: Iterable[tuple[str, str, float]],
    min_score: float = 4.0,
    name: str = "pairs",
) -> RetrievalTask:
    """Retrieval from scored sentence pairs; see the module docstring for the construction."""
    owner = "pairs_retrieval_task"
    if not (isinstance(min_score, int | float) and math.isfinite(min_score)):
        _fail(
            owner,
            "min_score",
            f"is {min_score!r}",
            "it must be a finite number",
            "pass e.g. min_score=4.0",
        )
    corpus: dict[str, int] = {}
    judged: dict[str, dict[str, float]] = {}
    queries: dict[str, None] = {}  # an ordered set
    for i, p in enumerate(pairs):
        ok = isinstance(p, tuple | list) and len(p) == 3
        ok = ok and isinstance(p[0], str) and isinstance(p[1], str)
        ok = ok and isinstance(p[2], numbers.Real) and math.isfinite(p[2])
        if not ok:
            _fail(
                owner,
                f"pairs[{i}]",
                f"is {p!r}",
                "each item must be (s1, s2, score)",
                "pass (sentence1, sentence2, score) triples",
                TypeError,
            )
        s1, s2, score = p
        corpus.setdefault(s1, len(corpus))
        corpus.setdefault(s2, len(corpus))
        if score < min_score or s1 == s2:
            continue
        queries.setdefault(s1, None)
        for a, b in ((s1, s2), (s2, s1)):
            row = judged.setdefault(a, {})
            row[b] = max(score, row.get(b, -math.inf))
    if not queries:
        _fail(
            owner,
            "pairs",
            f"has no pair with score >= {min_score} and s1 != s2",
            "queries come from those pairs",
            "lower min_score or pass more pairs",
        )
    relevance = [{corpus[b]: float(g) for b, g in judged[q].items()} for q in queries]
    exclude = [(corpus[q],) for q in queries]
    desc = (
        f"queries: distinct s1 of pairs with score >= {min_score}; corpus: all "
        f"{len(corpus)} distinct sentences; relevance: gold score of every such pair, "
        "either order; the query's own sentence is excluded"
    )
    return RetrievalTask(list(queries), list(corpus), relevance, name, desc, exclude)


def stsb_retrieval_task(split: str = "test", min_score: float = 4.0, root=None) -> RetrievalTask:
    """STS-B pairs with ``score >= min_score`` as retrieval over all sentences of ``split``.

    ``root`` is the shared data folder (default: ``contrastkit.train.data.data_root()``).
    """
    from contrastkit.text.data import stsb

    return pairs_retrieval_task(stsb(split, root), min_score, name=f"stsb-{split}")


def _documents(documents, owner: str, encoding: str = "utf-8") -> list[str]:
    if isinstance(documents, str | os.PathLike):
        from contrastkit.text.data import read_sentences

        return read_sentences(documents, encoding)
    return check_texts(documents, owner, "documents")


def crop_retrieval_task(
    documents,
    seed: int = 0,
    query_len: int = 20,
    *,
    remove_span: bool = True,
    min_rest: int = 20,
    max_words: int | None = None,
    name: str = "crop",
    encoding: str = "utf-8",
) -> RetrievalTask:
    """Held-out crop retrieval: a random word span of each document retrieves its source.

    ``documents``: a list of texts, or a path to a file with one document per line
    (blank lines skipped; ``encoding`` of the file, e.g. ``"latin-1"`` for gensim's
    ``lee.cor``). See the module docstring for the construction.
    """
    owner = "crop_retrieval_task"
    docs = _documents(documents, owner, encoding)
    seed = check_int(seed, owner, "seed", 0, "pass a non-negative integer seed")
    query_len = check_int(query_len, owner, "query_len", 1, "pass query_len >= 1 words")
    min_rest = check_int(min_rest, owner, "min_rest", 0, "pass min_rest >= 0 words")
    if max_words is not None:
        max_words = check_int(
            max_words,
            owner,
            "max_words",
            query_len + min_rest,
            "max_words must leave room for the query and the rest",
        )
    rng = random.Random(seed)
    queries, corpus, relevance = [], [], []
    for i, doc in enumerate(docs):
        words = doc.split()
        if max_words is not None:
            words = words[:max_words]
        if len(words) < query_len + min_rest:
            corpus.append(" ".join(words))
            continue
        start = rng.randrange(len(words) - query_len + 1)
        queries.append(" ".join(words[start : start + query_len]))
        kept = words[:start] + words[start + query_len :] if remove_span else words
        corpus.append(" ".join(kept))
        relevance.append({i: 1.0})
    if not queries:
        _fail(
            owner,
            "documents",
            f"has no document with >= {query_len + min_rest} words",
            "each query needs query_len words plus min_rest left in the document",
            "lower query_len / min_rest",
        )
    desc = (
        f"{len(queries)} queries: a random span of {query_len} words per document "
        f"(seed {seed}{'' if max_words is None else f', first {max_words} words'}); "
        f"corpus: {len(corpus)} documents "
        f"{'with the query span removed' if remove_span else 'in full'}; relevance 1 for the "
        "source document"
    )
    return RetrievalTask(queries, corpus, relevance, name, desc)


# ---------------------------------------------------------------------------- evaluation


def ranking_metrics(
    ranked: torch.Tensor, relevance: Sequence[dict[int, float]], ks, n_corpus: int | None = None
) -> dict[str, float]:
    """recall@k, hit@k, ndcg@k and mrr@k from top-K rankings ``(Q, K)`` of corpus indices.

    ``ranked[q]`` lists corpus indices best first (-1 pads a missing slot); it must hold at
    least ``min(max(ks), n_corpus)`` columns, so ``k`` beyond the corpus is clipped to it.
    ``relevance[q]``: ``{corpus index: grade > 0}``. Definitions as
    ``contrastkit.evaluation.retrieval`` (linear-gain nDCG), plus ``mrr@k``; averaged over
    the queries with at least one relevant item.
    """
    owner = "ranking_metrics"
    ks = _check_ks(ks, owner)
    n_q, width = ranked.shape
    n_corpus = width if n_corpus is None else n_corpus
    need = min(max(ks), n_corpus)
    if width < need:
        _fail(
            owner,
            "ranked",
            f"has {width} columns",
            f"ks={ks} need the top {need}",
            "rank more candidates per query",
        )
    if len(relevance) != n_q:
        _fail(
            owner,
            "relevance",
            f"has {len(relevance)} entries for {n_q} rankings",
            "one dict per query",
            "align relevance with the rankings",
        )
    valid = torch.tensor([len(r) > 0 for r in relevance])
    if not bool(valid.any()):
        _fail(
            owner,
            "relevance",
            "has no relevant item for any query",
            "metrics average over judged queries",
            "check the judgements",
        )
    ids = ranked[:, :need].tolist()
    grades = torch.tensor(
        [[rel.get(c, 0.0) for c in row] for row, rel in zip(ids, relevance, strict=True)],
        dtype=torch.float64,
    ).reshape(n_q, need)[valid]
    ideal_len = max(len(r) for r in relevance)
    ideal = torch.zeros(n_q, max(need, ideal_len), dtype=torch.float64)
    for q, rel in enumerate(relevance):
        g = sorted(rel.values(), reverse=True)
        ideal[q, : len(g)] = torch.tensor(g, dtype=torch.float64)
    ideal = ideal[valid, :need]
    n_rel = torch.tensor([len(r) for r in relevance], dtype=torch.float64)[valid]
    hits = grades > 0
    discount = 1.0 / torch.log2(torch.arange(2, need + 2, dtype=torch.float64))
    dcg = (grades * discount).cumsum(1)
    idcg = (ideal * discount).cumsum(1)
    cum_hits = hits.cumsum(1).to(torch.float64)
    first = torch.where(hits.any(1), hits.to(torch.int8).argmax(1), need)  # 0-based rank
    out = {}
    for k in ks:
        c = min(k, n_corpus) - 1
        out[f"recall@{k}"] = float((cum_hits[:, c] / n_rel).mean())
        out[f"hit@{k}"] = float((cum_hits[:, c] > 0).double().mean())
        out[f"ndcg@{k}"] = float((dcg[:, c] / idcg[:, c]).mean())
        rr = torch.where(
            first <= c, 1.0 / (first + 1).double(), torch.zeros((), dtype=torch.float64)
        )
        out[f"mrr@{k}"] = float(rr.mean())
    return out


def _top_torch(q: torch.Tensor, c: torch.Tensor, exclude, k: int) -> torch.Tensor:
    rows = max(1, CHUNK_ELEMENTS // max(1, c.shape[0]))
    parts = []
    for start in range(0, q.shape[0], rows):
        s = q[start : start + rows] @ c.T
        for r, excl in enumerate(exclude[start : start + rows]):
            if excl:
                s[r, list(excl)] = -math.inf
        parts.append(torch.sort(s, dim=1, descending=True, stable=True).indices[:, :k])
    return torch.cat(parts)


def _top_faiss(q: torch.Tensor, c: torch.Tensor, exclude, k: int) -> torch.Tensor:
    from contrastkit.retrieval.index import Index

    index = Index.flat(c.shape[1], metric="ip")
    index.add(c)
    extra = max((len(e) for e in exclude), default=0)
    _, ids = index.search(q, min(k + extra, c.shape[0]))
    out = torch.full((q.shape[0], k), -1, dtype=torch.long)
    for r, (row, excl) in enumerate(zip(ids.tolist(), exclude, strict=True)):
        kept = [i for i in row if i not in excl][:k] if excl else row[:k]
        out[r, : len(kept)] = torch.tensor(kept, dtype=torch.long)
    return out


def evaluate_retrieval(
    encode,
    task: RetrievalTask,
    ks=(1, 10, 100),
    *,
    batch_size: int = 64,
    similarity: str = "cosine",
    backend: str = "torch",
) -> dict[str, float]:
    """Rank ``task.corpus`` for each query with ``encode`` and score the rankings.

    ``encode``: a ``TextEncoder``, a ``SentenceTransformer`` or a callable texts ->
    ``(n, D)`` (see ``contrastkit.evaluation.sts.encode_texts``). ``similarity``:
    ``"cosine"`` (embeddings L2-normalised) or ``"dot"`` (Contriever scores unnormalised
    dot products). ``backend``: ``"torch"`` or ``"faiss"`` (a flat inner-product
    ``contrastkit.retrieval.Index``). Returns recall@k, hit@k, ndcg@k and mrr@k for each
    k; see the module docstring.
    """
    owner = "evaluate_retrieval"
    if not isinstance(task, RetrievalTask):
        _fail(
            owner,
            "task",
            f"is a {type(task).__name__}",
            "it must be a RetrievalTask",
            "build one with stsb_retrieval_task or crop_retrieval_task",
            TypeError,
        )
    if similarity not in ("cosine", "dot"):
        _fail(
            owner,
            "similarity",
            f"is {similarity!r}",
            "it must be 'cosine' or 'dot'",
            "pass similarity='cosine'",
        )
    if backend not in ("torch", "faiss"):
        _fail(
            owner,
            "backend",
            f"is {backend!r}",
            "it must be 'torch' or 'faiss'",
            "pass backend='torch' (or 'faiss' for large corpora)",
        )
    ks = _check_ks(ks, owner)
    texts = list(dict.fromkeys(task.queries + task.corpus))
    pos = {t: i for i, t in enumerate(texts)}
    z = encode_texts(encode, texts, batch_size).float()
    if not bool(torch.isfinite(z).all()):
        _fail(
            owner,
            "encode",
            "returned NaN or inf embeddings",
            "embeddings must be finite",
            "check the encoder",
        )
    if similarity == "cosine":
        z = torch.nn.functional.normalize(z, dim=1)
    q = z[torch.tensor([pos[t] for t in task.queries])]
    c = z[torch.tensor([pos[t] for t in task.corpus])]
    k = min(max(ks), len(task.corpus))
    top = (_top_torch if backend == "torch" else _top_faiss)(q, c, task.exclude, k)
    return ranking_metrics(top, task.relevance, ks, n_corpus=len(task.corpus))
