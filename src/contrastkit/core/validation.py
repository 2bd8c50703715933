"""Input validation with messages that name the argument, the value, the rule and the fix.

Every check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind,
wrong value); none uses ``assert``, so ``python -O`` keeps them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

REDUCTIONS = ("mean", "sum", "none")


def _fail(owner: str, arg: str, got: str, rule: str, fix: str, kind=ValueError):
    raise kind(f"{owner}: `{arg}` {got}; {rule}. Fix: {fix}.")


def _preview(indices: torch.Tensor, limit: int = 8) -> str:
    items = indices.flatten().tolist()
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def check_tensor(x, owner: str, arg: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        _fail(
            owner,
            arg,
            f"is a {type(x).__name__}",
            "it must be a torch.Tensor",
            f"pass torch.as_tensor({arg})",
            TypeError,
        )
    return x


def check_embeddings(x, owner: str, arg: str = "embeddings", ndim: Sequence[int] = (2,)):
    """A floating tensor of the allowed rank whose entries are all finite."""
    check_tensor(x, owner, arg)
    if not torch.is_floating_point(x):
        _fail(
            owner,
            arg,
            f"has dtype {x.dtype}",
            "embeddings must be floating point",
            f"cast with {arg}.float()",
            TypeError,
        )
    if x.dim() not in ndim:
        want = " or ".join(f"{d}-D" for d in ndim)
        _fail(
            owner,
            arg,
            f"has shape {tuple(x.shape)}",
            f"it must be {want} (N, D) or (N, V, D) as documented",
            "reshape the tensor to the documented layout",
        )
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        rows = (~finite).reshape(x.shape[0], -1).any(dim=1).nonzero().flatten()
        _fail(
            owner,
            arg,
            f"contains NaN or inf in rows [{_preview(rows)}]",
            "embeddings must be finite",
            "check the encoder for overflow (lower the learning rate, use float32 or bfloat16)",
        )
    return x


def check_texts(texts, owner: str, arg: str = "texts") -> list[str]:
    """``texts`` as a list of str (any iterable of str; a lone str is refused)."""
    if isinstance(texts, str):
        _fail(
            owner,
            arg,
            "is a single str",
            "it must be a list of strings",
            "wrap it: [text]",
            TypeError,
        )
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        _fail(
            owner,
            arg,
            f"has non-string items at positions {bad[:8]} (e.g. {texts[bad[0]]!r})",
            "every item must be a str",
            "convert the items with str() or drop them",
            TypeError,
        )
    return texts


def check_batch_size(n: int, owner: str, arg: str = "embeddings", minimum: int = 2) -> None:
    if n < minimum:
        _fail(
            owner,
            arg,
            f"has a batch of {n}",
            f"a contrastive loss needs at least {minimum} samples to have negatives",
            "use a larger batch",
        )


def check_same_shape(a: torch.Tensor, b: torch.Tensor, owner: str, names: tuple[str, str]):
    if a.shape != b.shape:
        _fail(
            owner,
            names[1],
            f"has shape {tuple(b.shape)} but `{names[0]}` has {tuple(a.shape)}",
            "both must have the same shape (row i of one pairs with row i of the other)",
            "pass tensors with matching batch size and dimension",
        )


def check_feature_dim(a: torch.Tensor, b: torch.Tensor, owner: str, names: tuple[str, str]):
    if a.shape[-1] != b.shape[-1]:
        _fail(
            owner,
            names[1],
            f"has feature dimension {b.shape[-1]} but `{names[0]}` has {a.shape[-1]}",
            "similarities need the same embedding dimension",
            "project both to the same dimension",
        )


def check_nonzero_rows(x: torch.Tensor, owner: str, arg: str) -> None:
    """Cosine similarity is undefined for an all-zero vector."""
    zero = (x.reshape(-1, x.shape[-1]) == 0).all(dim=-1)
    if bool(zero.any()):
        _fail(
            owner,
            arg,
            f"has all-zero rows [{_preview(zero.nonzero().flatten())}] (flattened row index)",
            "cosine similarity is undefined for a zero vector",
            "remove those rows or use similarity='dot'",
        )


def check_positive_number(value, owner: str, arg: str, fix: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            _fail(owner, arg, f"has shape {tuple(value.shape)}", "it must be a scalar", fix)
        value = float(value.detach())
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(owner, arg, f"is a {type(value).__name__}", "it must be a number", fix, TypeError)
    if not (math.isfinite(value) and value > 0):
        _fail(owner, arg, f"is {value}", "it must be a finite number > 0", fix)
    return float(value)


def check_temperature(value, owner: str) -> float:
    return check_positive_number(value, owner, "temperature", "pass e.g. temperature=0.1")


def check_flag(value, owner: str, arg: str) -> bool:
    """A Python bool (``True`` or ``False``; not 0/1, None or a tensor)."""
    if not isinstance(value, bool):
        _fail(
            owner,
            arg,
            f"is {value!r}",
            "it must be True or False",
            f"pass {arg}=True or {arg}=False",
            TypeError,
        )
    return value


def check_in_range(value, owner: str, arg: str, low: float, high: float, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(owner, arg, f"is a {type(value).__name__}", "it must be a number", fix, TypeError)
    if not (low <= value <= high):
        _fail(owner, arg, f"is {value}", f"it must lie in [{low}, {high}]", fix)
    return float(value)


def check_choice(value, owner: str, arg: str, choices: Sequence[str]) -> str:
    if value not in choices:
        _fail(
            owner,
            arg,
            f"is {value!r}",
            f"it must be one of {', '.join(repr(c) for c in choices)}",
            f"pass one of those, e.g. {arg}={choices[0]!r}",
        )
    return value


def check_reduction(reduction, owner: str) -> str:
    return check_choice(reduction, owner, "reduction", REDUCTIONS)


def check_labels(labels, n: int, owner: str, arg: str = "labels") -> torch.Tensor:
    check_tensor(labels, owner, arg)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        _fail(
            owner,
            arg,
            f"has dtype {labels.dtype}",
            "class labels must be an integer tensor",
            f"pass {arg}.long() (for continuous targets use a regression objective)",
            TypeError,
        )
    if labels.dim() != 1 or labels.shape[0] != n:
        _fail(
            owner,
            arg,
            f"has shape {tuple(labels.shape)}",
            f"it must be 1-D with one label per sample ({n})",
            "pass one integer label per row of the embeddings",
        )
    return labels


def check_has_positive(positive_mask, owner: str, hint: str, arg: str = "labels") -> None:
    lonely = ~positive_mask.any(dim=1)
    if bool(lonely.any()):
        _fail(
            owner,
            arg,
            f"leave anchors [{_preview(lonely.nonzero().flatten())}] with no positive",
            "every anchor needs at least one positive",
            hint,
        )


def check_has_negative(negative_mask, owner: str, hint: str, arg: str = "labels") -> None:
    lonely = ~negative_mask.any(dim=1)
    if bool(lonely.any()):
        _fail(
            owner,
            arg,
            f"leave anchors [{_preview(lonely.nonzero().flatten())}] with no negative",
            "this objective needs at least one negative per anchor",
            hint,
        )


def check_unit_scores(scores, shape: tuple[int, int], owner: str, arg: str = "scores"):
    """A floating ``shape`` matrix of finite graded-positive scores in [0, 1]."""
    check_tensor(scores, owner, arg)
    if not torch.is_floating_point(scores):
        _fail(
            owner,
            arg,
            f"has dtype {scores.dtype}",
            "scores must be floating point in [0, 1]",
            f"pass {arg}.float() (for integer classes use labels= with sup_con)",
            TypeError,
        )
    if tuple(scores.shape) != tuple(shape):
        _fail(
            owner,
            arg,
            f"has shape {tuple(scores.shape)}",
            f"it must be {tuple(shape)}: one score per (anchor, candidate) sample pair",
            "build an (N, N) matrix over the batch, e.g. with tree_similarity(labels)",
        )
    bad = ~(torch.isfinite(scores) & (scores >= 0) & (scores <= 1))
    if bool(bad.any()):
        rows = bad.any(dim=1).nonzero().flatten()
        _fail(
            owner,
            arg,
            f"has entries outside [0, 1] (or NaN) in rows [{_preview(rows)}]",
            "scores are graded positive weights in [0, 1]",
            f"rescale or clamp them, e.g. {arg}.clamp(0, 1)",
        )
    return scores


def check_relevance(
    relevance: torch.Tensor, shape, owner: str, *, shape_of: str, rule: str, fix: str
) -> torch.Tensor:
    """Graded relevance: a real tensor of ``shape``, finite, >= 0 (0 = irrelevant).

    Returns it as float64. ``shape_of`` names what fixes the shape, ``rule`` / ``fix``
    say what each entry grades and how to build the tensor (for the shape error).
    """
    if relevance.dtype.is_complex:
        _fail(
            owner,
            "relevance",
            f"has dtype {relevance.dtype}",
            "relevance grades must be real numbers (binary or graded)",
            "pass relevance.real or a float tensor",
            TypeError,
        )
    if tuple(relevance.shape) != tuple(shape):
        got = f"has shape {tuple(relevance.shape)} but {shape_of} is {tuple(shape)}"
        _fail(owner, "relevance", got, rule, fix)
    rel = relevance.to(torch.float64)
    if not bool(torch.isfinite(rel).all()):
        _fail(
            owner,
            "relevance",
            "contains NaN or inf",
            "relevance grades must be finite",
            "use 0 for unjudged or irrelevant items",
        )
    if bool((rel < 0).any()):
        _fail(
            owner,
            "relevance",
            f"has negative entries (minimum {float(rel.min())})",
            "relevance grades must be >= 0 (0 = irrelevant)",
            "shift or clip the grades, e.g. relevance.clamp_min(0)",
        )
    return rel
