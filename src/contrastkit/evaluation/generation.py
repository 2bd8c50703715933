"""Metrics of generated text: repetition, diversity, coherence, QA exact match and F1.

Pure Python / torch; a scoring language model is passed in as an argument (nothing here
imports transformers).

- ``rep_n``, ``diversity``, ``repetition_and_diversity``: SimCTG (Su et al., NeurIPS 2022,
  evaluation metrics), code ``yxuansu/SimCTG``, ``simctg/evaluation.py::measure_repetition_and_diversity``.
- ``coherence``: Su & Collier (TMLR 2023, "Contrastive Search Is What You Need For Neural
  Text Generation"), code ``yxuansu/Contrastive_Search_Is_What_You_Need``,
  ``open_ended_generation/english/compute_coherence.py``.
- ``exact_match``, ``f1``, ``qa_scores``: SQuAD v1.1 (Rajpurkar et al., EMNLP 2016,
  official ``evaluate-v1.1.py``), the answer metrics of the CAD (Shi et al. 2023) and
  AdaCAD (Wang et al., NAACL 2025) QA evaluations.

MAUVE (Pillutla et al., NeurIPS 2021), reported by both contrastive-search papers, is not
available here: its featuriser embeds texts with GPT-2 large, whose weights cannot be
fetched offline, and scores computed with another featuriser are not comparable with the
published ones. Use the ``mauve-text`` package with those weights where they are present.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

import numpy as np
import torch

from contrastkit.core.logits import compute_dtype
from contrastkit.core.validation import _fail, check_choice
from contrastkit.diagnostics._inputs import check_int
from contrastkit.diagnostics.token_isotropy import model_device, right_pad

VARIANTS = ("paper", "official_code")
AGGREGATES = ("pooled", "mean")

__all__ = [
    "coherence",
    "diversity",
    "exact_match",
    "f1",
    "normalize_answer",
    "qa_scores",
    "rep_n",
    "repetition_and_diversity",
]

# ---------------------------------------------------------------------------- rep-n


def _is_sequence(x) -> bool:
    return isinstance(x, list | tuple | torch.Tensor | np.ndarray) and not isinstance(x, str)


def _tokens_of(x, owner: str, arg: str) -> list:
    """One text as a list of hashable tokens: a string is split on whitespace (as the
    official code does), a tensor or array of ids becomes a list of ints."""
    if isinstance(x, str):
        return x.split()
    if isinstance(x, torch.Tensor | np.ndarray):
        if x.ndim != 1:
            _fail(
                owner,
                arg,
                f"has shape {tuple(x.shape)}",
                "one text is a 1-D sequence of tokens",
                "pass a list of 1-D sequences for several texts",
            )
        return x.tolist()
    return list(x)


def _texts(tokens, owner: str) -> list[list]:
    """Normalise the accepted layouts to a list of texts, each a list of tokens.

    One text: a string (whitespace-split), a 1-D tensor / array, or a list of tokens (ints
    or strings). Several texts: a 2-D tensor / array (one text per row) or a list whose
    items are sequences (lists, tuples, 1-D tensors). A list of strings is one text's
    tokens; for several whitespace-tokenised texts pass ``[t.split() for t in texts]``.
    """
    if isinstance(tokens, torch.Tensor | np.ndarray) and tokens.ndim == 2:
        return [row.tolist() for row in tokens]
    if isinstance(tokens, str | torch.Tensor | np.ndarray):
        return [_tokens_of(tokens, owner, "tokens")]
    if not isinstance(tokens, list | tuple):
        _fail(
            owner,
            "tokens",
            f"is a {type(tokens).__name__}",
            "it must be a string, a list of tokens, a list of texts or a tensor of ids",
            "pass e.g. tokenizer(text)['input_ids'] or text.split()",
            TypeError,
        )
    nested = [_is_sequence(t) for t in tokens]
    if any(nested) and not all(nested):
        _fail(
            owner,
            "tokens",
            "mixes sequences and single tokens",
            "it is either one text (a list of tokens) or several texts (a list of sequences)",
            "wrap a single text in a list: [tokens]",
            TypeError,
        )
    if tokens and all(nested):
        return [_tokens_of(t, owner, f"tokens[{k}]") for k, t in enumerate(tokens)]
    return [list(tokens)]


def _ngram_counts(text: list, n: int, variant: str) -> tuple[int, int]:
    """Distinct and total n-grams of one text. The official loop ``while end_idx <
    len(tokens)`` never reaches the last n-gram (``variant="official_code"``)."""
    stop = len(text) - n + (0 if variant == "official_code" else 1)
    grams = [tuple(text[i : i + n]) for i in range(max(stop, 0))]
    return len(set(grams)), len(grams)


def rep_n(tokens, n: int = 2, *, aggregate: str = "pooled", variant: str = "paper") -> float:
    """Repetition rate ``rep-n = 1 - |unique n-grams| / |n-grams|`` (SimCTG, Su et al.,
    NeurIPS 2022, after Welleck et al. 2020), as a fraction (the papers print it
    times 100).

    ``tokens``: one text (a string, split on whitespace as the code does; a list of
    tokens; a 1-D tensor of ids) or several (a list of such sequences; a 2-D tensor, one
    text per row). A list of strings is one text; for several strings pass
    ``[t.split() for t in texts]``. n-grams are distinct *within* each text. ``aggregate="pooled"`` (the code): ``1 - sum_texts unique / sum_texts
    total``; ``"mean"``: the mean over texts of each text's rep-n (Welleck et al.'s
    seq-rep-n). The paper defines rep-n for one text and does not say how texts are
    combined (as far as the notes record; the paper itself was not readable here), so the
    default follows the code. ``variant="official_code"`` reproduces the code's
    off-by-one that skips each text's last n-gram. Texts shorter than n (n + 1 for the
    code) have no n-grams and are skipped.
    """
    owner = "rep_n"
    n = check_int(n, owner, "n", 1, "pass e.g. n=2")
    check_choice(aggregate, owner, "aggregate", AGGREGATES)
    check_choice(variant, owner, "variant", VARIANTS)
    counts = [_ngram_counts(t, n, variant) for t in _texts(tokens, owner)]
    totals = [total for _, total in counts]
    if sum(totals) == 0:
        _fail(
            owner,
            "tokens",
            f"has no {n}-gram (longest text: {max(len(t) for t in _texts(tokens, owner))} tokens)",
            f"rep-{n} needs a text of at least {n} tokens ({n + 1} with the code's count)",
            "pass longer texts or a smaller n",
        )
    if aggregate == "pooled":
        return 1.0 - sum(u for u, _ in counts) / sum(totals)
    return float(np.mean([1.0 - u / t for u, t in counts if t > 0]))


def diversity(tokens, *, aggregate: str = "pooled", variant: str = "paper") -> float:
    """``diversity = prod_{n=2}^{4} (1 - rep-n)`` (SimCTG, Su et al., NeurIPS 2022,
    code ``measure_repetition_and_diversity``), in [0, 1].

    ``aggregate`` and ``variant`` are passed to :func:`rep_n`. The code multiplies rep-n
    values already rounded to 2 decimals of a percent; this does not round (a difference
    below 1e-4)."""
    return math.prod(
        1.0 - rep_n(tokens, n, aggregate=aggregate, variant=variant) for n in (2, 3, 4)
    )


def repetition_and_diversity(
    tokens, *, aggregate: str = "pooled", variant: str = "paper"
) -> dict[str, float]:
    """``{"rep_2", "rep_3", "rep_4", "diversity"}`` as fractions, the four numbers of the
    official ``measure_repetition_and_diversity`` (which prints them times 100)."""
    reps = {f"rep_{n}": rep_n(tokens, n, aggregate=aggregate, variant=variant) for n in (2, 3, 4)}
    reps["diversity"] = math.prod(1.0 - r for r in reps.values())
    return reps


# ---------------------------------------------------------------------------- coherence


def _id_list(x, owner: str, arg: str) -> list:
    """One id sequence or a list of them, as a list of 1-D long tensors."""
    if isinstance(x, torch.Tensor):
        if x.dim() == 1:
            return [x.long()]
        if x.dim() == 2:
            return [row.long() for row in x]
    elif isinstance(x, list | tuple) and x:
        if all(isinstance(t, int) and not isinstance(t, bool) for t in x):
            return [torch.tensor(x, dtype=torch.long)]
        if all(_is_sequence(t) for t in x):
            return [torch.as_tensor(t).long().reshape(-1) for t in x]
    _fail(
        owner,
        arg,
        f"is {type(x).__name__}",
        "it must be one sequence of token ids (1-D tensor or list of ints) or a list of them",
        f"pass {arg} as a list of 1-D id tensors, one per text",
        TypeError,
    )


def _logits_of(out):
    return out.logits if hasattr(out, "logits") else out[0]


def coherence(
    model,
    prefix_ids,
    continuation_ids,
    *,
    batch_size: int = 8,
    bos_token_id: int | None = None,
    reduction: str = "mean",
):
    """Coherence of continuations with their prefixes under a scoring LM (Su & Collier,
    TMLR 2023; code ``compute_coherence.py``):

        coherence(x_hat, x) = 1/|x_hat| * sum_i log p_M(x_hat_i | [x : x_hat_<i])

    the mean log-likelihood per continuation token, then the mean over texts (the paper's
    scorer is OPT-2.7B; any causal LM called as ``model(input_ids=, attention_mask=)``
    returning ``.logits`` works). Higher (closer to 0) is more coherent.

    ``prefix_ids`` / ``continuation_ids``: one id sequence each, or equal-length lists of
    them (the scorer's tokenisation). ``bos_token_id`` is prepended to every prefix (the
    code prepends OPT's BOS). As in the code, empty continuations are skipped; an empty
    prefix without ``bos_token_id`` is an error (the first token would have no context).
    Texts are right-padded into batches of ``batch_size``, so each token sees exactly its
    own text; log-probabilities come from a float32 (float64 for a float64 model)
    log-softmax (the code takes ``log(softmax)``, which can underflow to -inf).
    ``reduction="none"`` returns the per-text values (NaN for skipped texts).
    """
    owner = "coherence"
    check_choice(reduction, owner, "reduction", ("mean", "none"))
    batch_size = check_int(batch_size, owner, "batch_size", 1, "pass e.g. batch_size=8")
    prefixes = _id_list(prefix_ids, owner, "prefix_ids")
    continuations = _id_list(continuation_ids, owner, "continuation_ids")
    if len(prefixes) != len(continuations):
        _fail(
            owner,
            "continuation_ids",
            f"holds {len(continuations)} texts but `prefix_ids` holds {len(prefixes)}",
            "continuation k is scored given prefix k",
            "pass one prefix per continuation",
        )
    if bos_token_id is not None:
        bos = check_int(bos_token_id, owner, "bos_token_id", 0, "pass tokenizer.bos_token_id")
        prefixes = [torch.cat([torch.tensor([bos]), p]) for p in prefixes]
    empty = [k for k, p in enumerate(prefixes) if p.numel() == 0]
    if empty:
        _fail(
            owner,
            "prefix_ids",
            f"is empty for texts {empty[:8]}",
            "the first continuation token needs at least one context token",
            "pass bos_token_id=tokenizer.bos_token_id (the code prepends BOS)",
        )
    keep = [k for k, c in enumerate(continuations) if c.numel() > 0]
    scores = [float("nan")] * len(prefixes)
    device = model_device(model)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(keep), batch_size):
                chunk = keep[start : start + batch_size]
                seqs = [torch.cat([prefixes[k], continuations[k]]) for k in chunk]
                ids, mask = right_pad(seqs, owner, "prefix_ids + continuation_ids")
                ids, mask = ids.to(device), mask.to(device)
                logits = _logits_of(model(input_ids=ids, attention_mask=mask.long()))
                logp = torch.log_softmax(logits[:, :-1].to(compute_dtype(logits)), dim=-1)
                token_logp = logp.gather(-1, ids[:, 1:, None])[..., 0]
                for row, k in enumerate(chunk):
                    p, c = prefixes[k].numel(), continuations[k].numel()
                    # position t's logits predict token t + 1: the continuation's tokens
                    # p .. p + c - 1 are predicted at positions p - 1 .. p + c - 2.
                    scores[k] = float(token_logp[row, p - 1 : p + c - 1].double().mean())
    finally:
        if was_training and hasattr(model, "train"):
            model.train(True)
    if reduction == "none":
        return scores
    if not keep:
        _fail(
            owner,
            "continuation_ids",
            "holds only empty continuations",
            "coherence averages over continuation tokens",
            "pass at least one non-empty continuation",
        )
    return float(np.mean([scores[k] for k in keep]))


# ---------------------------------------------------------------------------- QA answers

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 answer normalisation: lowercase, drop ASCII punctuation, drop the
    articles a / an / the, collapse whitespace (in that order, as the official script)."""
    if not isinstance(text, str):
        _fail(
            "normalize_answer",
            "text",
            f"is a {type(text).__name__}",
            "answers are strings",
            "decode token ids with the tokenizer first",
            TypeError,
        )
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _references(reference, owner: str) -> list[str]:
    refs = [reference] if isinstance(reference, str) else reference
    if not isinstance(refs, list | tuple) or not refs or not all(isinstance(r, str) for r in refs):
        _fail(
            owner,
            "reference",
            f"is {reference!r}",
            "it must be a string or a non-empty list of strings (the gold answers)",
            "pass reference='Paris' or reference=['Paris', 'the city of Paris']",
            TypeError,
        )
    return list(refs)


def _f1_one(prediction: str, reference: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:  # also when either side is empty (SQuAD v1.1; v2.0 scores empty = empty as 1)
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference) -> float:
    """1.0 when the normalised prediction equals a normalised reference, else 0.0 (SQuAD
    v1.1 ``exact_match_score``; ``reference`` may be a list: the max over it)."""
    refs = _references(reference, "exact_match")
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(r) for r in refs))


def f1(prediction: str, reference) -> float:
    """Token-level F1 between the normalised prediction and reference (SQuAD v1.1
    ``f1_score``: bag-of-tokens overlap); the max over a list of references."""
    refs = _references(reference, "f1")
    normalize_answer(prediction)  # type check with the metric's own message
    return max(_f1_one(prediction, r) for r in refs)


def qa_scores(predictions, references) -> dict[str, float]:
    """Mean ``exact_match`` and ``f1`` over a set: ``predictions`` a list of strings,
    ``references`` a list of the same length whose items are a string or a list."""
    owner = "qa_scores"
    if not isinstance(predictions, list | tuple) or not isinstance(references, list | tuple):
        _fail(
            owner,
            "predictions",
            f"is a {type(predictions).__name__} (references: {type(references).__name__})",
            "both must be lists, one item per question",
            "pass predictions=[...] and references=[...]",
            TypeError,
        )
    if len(predictions) != len(references) or not predictions:
        _fail(
            owner,
            "references",
            f"holds {len(references)} items but `predictions` holds {len(predictions)}",
            "there is one reference (or list of references) per prediction, at least one",
            "align the two lists",
        )
    em = [exact_match(p, r) for p, r in zip(predictions, references, strict=True)]
    scores = [f1(p, r) for p, r in zip(predictions, references, strict=True)]
    return {"exact_match": float(np.mean(em)), "f1": float(np.mean(scores))}
