"""Input handling shared by ``contrastkit.diagnostics`` and ``contrastkit.evaluation``.

Both packages accept torch tensors or numpy arrays, validate them with the messages of
``contrastkit.core.validation`` (argument, value received, rule, fix) and compute in
float32, or float64 when an input is float64 (``core.logits.compute_dtype``).
"""

from __future__ import annotations

import operator

import numpy as np
import torch

from contrastkit.core.logits import compute_dtype
from contrastkit.core.validation import (
    _fail,
    check_embeddings,
    check_labels,
    check_nonzero_rows,
)

# Entries of one similarity block: 4M entries = 16 MiB in float32, 32 MiB in float64.
# Row blocks of a (rows x N) matrix are sized to this so that N = 60000 stays small.
CHUNK_ELEMENTS = 1 << 22

__all__ = [
    "CHUNK_ELEMENTS",
    "as_embeddings",
    "as_labels",
    "as_tensor",
    "check_bool",
    "check_int",
    "chunk_rows",
    "compute_dtype",
    "to_numpy",
    "unit_rows",
]


def as_tensor(x, owner: str, arg: str) -> torch.Tensor:
    """A torch tensor or numpy array as a torch tensor (numpy arrays share memory)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            _fail(
                owner,
                arg,
                f"is a numpy array of dtype {x.dtype}",
                "it must hold booleans, integers or floats",
                f"convert it, e.g. np.asarray({arg}, dtype=np.float32)",
                TypeError,
            )
        if x.dtype.kind == "u" and x.dtype != np.uint8:
            x = x.astype(np.int64)
        if not x.flags.writeable:
            x = x.copy()
        return torch.from_numpy(x)
    _fail(
        owner,
        arg,
        f"is a {type(x).__name__}",
        "it must be a torch.Tensor or a numpy.ndarray",
        f"pass torch.as_tensor({arg})",
        TypeError,
    )


def as_embeddings(x, owner: str, arg: str, min_rows: int = 1) -> torch.Tensor:
    """A finite floating ``(N, D)`` tensor with at least ``min_rows`` rows and ``D >= 1``."""
    x = check_embeddings(as_tensor(x, owner, arg), owner, arg, ndim=(2,))
    if x.shape[0] < min_rows:
        _fail(
            owner,
            arg,
            f"has {x.shape[0]} row(s)",
            f"this metric needs at least {min_rows} embeddings",
            "pass more samples",
        )
    if x.shape[1] < 1:
        _fail(
            owner,
            arg,
            f"has shape {tuple(x.shape)}",
            "embeddings need at least one feature",
            "pass (N, D) embeddings with D >= 1",
        )
    return x


def as_labels(y, n: int, owner: str, arg: str, device=None) -> torch.Tensor:
    """A 1-D integer tensor of ``n`` class labels (torch or numpy), as int64."""
    y = check_labels(as_tensor(y, owner, arg), n, owner, arg)
    return y.to(device=device, dtype=torch.long)


def check_int(value, owner: str, arg: str, minimum: int, fix: str) -> int:
    """A Python or numpy integer (not a bool) that is at least ``minimum``."""
    try:
        if isinstance(value, bool | np.bool_):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        _fail(owner, arg, f"is {value!r}", "it must be an integer", fix, TypeError)
    if value < minimum:
        _fail(owner, arg, f"is {value}", f"it must be an integer >= {minimum}", fix)
    return value


def check_bool(value, owner: str, arg: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        _fail(
            owner, arg, f"is {value!r}", "it must be a bool", f"pass {arg}=True or False", TypeError
        )
    return bool(value)


def unit_rows(x: torch.Tensor, owner: str, arg: str, dtype=None) -> torch.Tensor:
    """Rows scaled to unit L2 norm (in ``dtype``); an all-zero row is an error."""
    check_nonzero_rows(x, owner, arg)
    x = x.to(dtype or compute_dtype(x))
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True)


def chunk_rows(n_cols: int, requested=None) -> int:
    """Rows per block so that one ``rows x n_cols`` block holds about CHUNK_ELEMENTS."""
    if requested is not None:
        return requested
    return max(1, CHUNK_ELEMENTS // max(1, n_cols))


def to_numpy(x: torch.Tensor, dtype=np.float64) -> np.ndarray:
    return x.detach().cpu().numpy().astype(dtype, copy=False)
