"""Semantic textual similarity (STS): correlation of embedding similarity with gold scores.

The protocol of SentEval / SimCSE (Gao, Yao & Chen, EMNLP 2021, sec. 4 and appendix B,
"all" setting) and of sentence-transformers' ``EmbeddingSimilarityEvaluator``
(``sentence_transformers/sentence_transformer/evaluation/embedding_similarity.py`` in
sentence-transformers 6.2, similarity functions from ``sentence_transformers/util/similarity.py``):
embed both sentences of every pair, score each pair, and report the Spearman (and Pearson)
correlation between the pair scores and the gold similarity. STS Benchmark: Cer et al.,
SemEval 2017.

``sts_scores`` matches ``EmbeddingSimilarityEvaluator`` definition for definition, so that
the same embeddings give the same numbers (checked to 1e-4 in the tests on STS-B test, in
fact to float rounding):

- ``cosine``: rows L2-normalised by ``torch.nn.functional.normalize`` (eps 1e-12, so an
  all-zero row scores 0 rather than raising), then the row-wise dot product;
- ``manhattan``: ``-sum |a - b|``; ``euclidean``: ``-||a - b||_2``; ``dot``: ``sum a * b``;
- the similarities are computed in the embeddings' dtype, with float16 / bfloat16 raised
  to float32 first, as sentence-transformers does; the correlations are
  ``scipy.stats.pearsonr`` and ``scipy.stats.spearmanr`` (average ranks for ties) of the
  gold scores against those similarities;
- nothing is rounded: sentence-transformers rounds only its log line (4 decimals) and
  returns the full-precision floats, as we do;
- keys ``pearson_<fn>`` and ``spearman_<fn>`` for each function asked for, plus
  ``pearson_max`` and ``spearman_max`` (the best over the functions) when there is more
  than one, as the evaluator does (its ``name_`` prefix is not added). STS papers report
  ``spearman_cosine`` x 100.

A correlation is undefined when the similarities are all equal (a collapsed encoder); it is
then NaN, as scipy returns it. Constant gold scores are an input error.

``evaluate_sts(encode, pairs)`` embeds the distinct sentences once (longest first, in
batches, as sentence-transformers sorts by length) and calls ``sts_scores``. scipy is
imported inside the functions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from contrastkit.core.validation import _fail, check_same_shape, check_texts
from contrastkit.diagnostics._inputs import as_embeddings, as_tensor, check_int

__all__ = ["SIMILARITY_FNS", "encode_texts", "evaluate_sts", "sts_scores"]

SIMILARITY_FNS = ("cosine", "manhattan", "euclidean", "dot")


def _pairwise(name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise similarity of ``a[i]`` and ``b[i]`` as sentence-transformers defines it."""
    if name == "cosine":
        a = torch.nn.functional.normalize(a, p=2, dim=-1)
        b = torch.nn.functional.normalize(b, p=2, dim=-1)
        return (a * b).sum(dim=-1)
    if name == "dot":
        return (a * b).sum(dim=-1)
    if name == "manhattan":
        return -torch.sum(torch.abs(a - b), dim=-1)
    return -torch.linalg.vector_norm(a - b, dim=-1)  # euclidean


def _check_fns(similarity_fns, owner: str) -> tuple[str, ...]:
    fix = f"pass a tuple drawn from {SIMILARITY_FNS}"
    if isinstance(similarity_fns, str):
        similarity_fns = (similarity_fns,)
    fns = tuple(dict.fromkeys(similarity_fns))
    bad = [f for f in fns if f not in SIMILARITY_FNS]
    if not fns or bad:
        _fail(
            owner,
            "similarity_fns",
            f"is {similarity_fns!r}",
            f"each must be one of {SIMILARITY_FNS}",
            fix,
        )
    return fns


def _check_gold(gold, n: int, owner: str) -> np.ndarray:
    if isinstance(gold, torch.Tensor | np.ndarray):
        g = as_tensor(gold, owner, "gold").detach().cpu().double().numpy()
    else:
        try:
            g = np.asarray(list(gold), dtype=np.float64)
        except (TypeError, ValueError):
            _fail(
                owner,
                "gold",
                f"is {type(gold).__name__}",
                "it must be a sequence of numbers",
                "pass a list or 1-D array of scores",
                TypeError,
            )
    if g.shape != (n,):
        _fail(
            owner,
            "gold",
            f"has shape {g.shape}",
            f"it must be ({n},), one score per pair",
            "pass one gold score per row of emb1 / emb2",
        )
    if not np.isfinite(g).all():
        _fail(
            owner,
            "gold",
            "contains NaN or inf",
            "gold scores must be finite",
            "drop the unscored pairs",
        )
    if np.all(g == g[0]):
        _fail(
            owner,
            "gold",
            f"is constant ({g[0]})",
            "a correlation with constant gold scores is undefined",
            "evaluate on pairs with varying scores",
        )
    return g


def sts_scores(
    emb1, emb2, gold, similarity_fns: Sequence[str] = SIMILARITY_FNS
) -> dict[str, float]:
    """Pearson and Spearman correlation of pair similarities with gold scores.

    ``emb1``, ``emb2``: ``(N, D)`` embeddings of the first and second sentence of N pairs
    (torch or numpy); ``gold``: ``(N,)`` gold similarities (e.g. STS-B's 0-5 scores);
    ``similarity_fns``: any of ``"cosine"``, ``"manhattan"``, ``"euclidean"``, ``"dot"``.
    Returns ``{"pearson_<fn>", "spearman_<fn>"}`` for each function (and ``*_max`` for more
    than one), matching sentence-transformers' ``EmbeddingSimilarityEvaluator`` exactly;
    see the module docstring.
    """
    from scipy.stats import pearsonr, spearmanr

    owner = "sts_scores"
    a = as_embeddings(emb1, owner, "emb1", min_rows=2)
    b = as_embeddings(emb2, owner, "emb2", min_rows=2)
    check_same_shape(a, b, owner, ("emb1", "emb2"))
    fns = _check_fns(similarity_fns, owner)
    g = _check_gold(gold, a.shape[0], owner)
    if a.dtype in (torch.float16, torch.bfloat16):  # as sentence-transformers' float upcast
        a = a.float()
    if b.dtype in (torch.float16, torch.bfloat16):
        b = b.float()
    out: dict[str, float] = {}
    for name in fns:
        sims = _pairwise(name, a, b).detach().cpu().numpy()
        with warnings.catch_warnings():  # constant similarities: NaN, as documented
            warnings.simplefilter("ignore")
            out[f"pearson_{name}"] = float(pearsonr(g, sims)[0])
            out[f"spearman_{name}"] = float(spearmanr(g, sims)[0])
    if len(fns) > 1:
        for m in ("pearson", "spearman"):
            vals = [out[f"{m}_{f}"] for f in fns]
            out[f"{m}_max"] = math.nan if any(map(math.isnan, vals)) else max(vals)
    return out


def encode_texts(encode, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Embed ``texts`` with ``encode`` in batches, longest text first; rows in input order.

    ``encode`` is either an object with an ``.encode(texts, batch_size=...)`` method
    (``contrastkit.text.TextEncoder``, ``sentence_transformers.SentenceTransformer``) or a
    callable ``encode(list[str]) -> (n, D)`` tensor / numpy array. Sorting by length
    (as ``SentenceTransformer.encode`` does) keeps padding short; with attention-masked
    pooling it does not change the embeddings beyond float rounding. Returns a float
    tensor ``(len(texts), D)`` on the CPU.
    """
    owner = "encode_texts"
    batch_size = check_int(batch_size, owner, "batch_size", 1, "pass e.g. batch_size=64")
    texts = check_texts(texts, owner)
    method = getattr(encode, "encode", None)
    if callable(method):
        call = lambda chunk: method(chunk, batch_size=batch_size)  # noqa: E731
    elif callable(encode):
        call = encode
    else:
        _fail(
            owner,
            "encode",
            f"is a {type(encode).__name__}",
            "it must be a callable texts -> embeddings or have an .encode method",
            "pass a TextEncoder, a SentenceTransformer or a function",
            TypeError,
        )
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    parts = []
    for start in range(0, len(order), batch_size):
        chunk = [texts[i] for i in order[start : start + batch_size]]
        z = call(chunk)
        z = as_tensor(z, owner, "encode(texts)").detach().cpu()
        if z.dim() != 2 or z.shape[0] != len(chunk):
            _fail(
                owner,
                "encode",
                f"returned shape {tuple(z.shape)} for {len(chunk)} texts",
                "it must return one embedding row per text",
                "return an (n, D) array",
            )
        parts.append(z if z.is_floating_point() else z.float())
    if not parts:
        _fail(owner, "texts", "is empty", "there is nothing to embed", "pass some texts")
    z = torch.cat(parts)
    out = torch.empty_like(z)
    out[torch.tensor(order)] = z
    return out


def _check_pairs(pairs, owner: str) -> tuple[list[str], list[str], list[float]]:
    fix = "pass a list of (sentence1, sentence2, score) triples"
    if isinstance(pairs, str) or not isinstance(pairs, Iterable):
        _fail(
            owner, "pairs", f"is a {type(pairs).__name__}", "it must be a sequence", fix, TypeError
        )
    s1, s2, gold = [], [], []
    for i, p in enumerate(pairs):
        ok = isinstance(p, tuple | list) and len(p) == 3
        if not (ok and isinstance(p[0], str) and isinstance(p[1], str)):
            _fail(
                owner,
                f"pairs[{i}]",
                f"is {p!r}",
                "each pair must be (str, str, score)",
                fix,
                TypeError,
            )
        s1.append(p[0])
        s2.append(p[1])
        gold.append(p[2])
    if len(s1) < 2:
        _fail(owner, "pairs", f"has {len(s1)} pair(s)", "a correlation needs at least 2 pairs", fix)
    return s1, s2, gold


def evaluate_sts(
    encode: Callable | object,
    pairs: Iterable[tuple[str, str, float]],
    batch_size: int = 64,
    similarity_fns: Sequence[str] = SIMILARITY_FNS,
) -> dict[str, float]:
    """STS correlations of an encoder on ``(sentence1, sentence2, gold)`` triples.

    ``encode``: see ``encode_texts`` (a ``TextEncoder``, a ``SentenceTransformer`` or a
    callable). Each distinct sentence is embedded once; then ``sts_scores``. For the
    untouched all-MiniLM-L6-v2 on STS-B test, ``spearman_cosine`` is about 0.82.
    """
    owner = "evaluate_sts"
    s1, s2, gold = _check_pairs(pairs, owner)
    uniq = list(dict.fromkeys(s1 + s2))
    pos = {t: i for i, t in enumerate(uniq)}
    z = encode_texts(encode, uniq, batch_size)
    i1 = torch.tensor([pos[t] for t in s1])
    i2 = torch.tensor([pos[t] for t in s2])
    return sts_scores(z[i1], z[i2], gold, similarity_fns)
