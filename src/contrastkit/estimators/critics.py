"""Critics f(x, y) that score every x of a batch against every y: ``forward(x, y) -> (B, B)``.

``scores[i, j] = f(x_i, y_j)``: the diagonal holds the joint pairs, the off-diagonal the
product-of-marginals pairs, as :mod:`contrastkit.estimators.bounds` expects.

The three architectures are those of Poole, Ozair, van den Oord, Alemi & Tucker, "On
Variational Bounds of Mutual Information" (ICML 2019, Sec. 5 and appendix), whose reference
Colab (``vmi_bounds``, TensorFlow; read through copies of it) defines ``SeparableCritic``
and ``ConcatCritic`` over MLPs with 2 hidden layers of 256 ReLU units and a separable
embedding of 32. ``BilinearCritic`` (x^T W y) is the CPC-style score of van den Oord et al.
(2018). The Lipschitz (Wasserstein predictive coding) critic lives elsewhere and only
shares the score-matrix API.
"""

from __future__ import annotations

import torch
from torch import nn

from contrastkit.core.validation import (
    _fail,
    check_choice,
    check_embeddings,
    check_positive_number,
)

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "tanh": nn.Tanh}


def _check_dim(value, owner: str, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(owner, arg, f"is {value!r}", "it must be an integer >= 1", f"pass e.g. {arg}=32")
    return value


def mlp(
    in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, activation: str = "relu"
) -> nn.Sequential:
    """``layers`` hidden Linear + activation blocks of width ``hidden_dim``, then a Linear
    to ``out_dim`` (``layers=0``: one Linear). Poole et al.'s critics use 2 x 256, ReLU."""
    owner = "mlp"
    for name, v in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
        _check_dim(v, owner, name)
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 0:
        _fail(owner, "layers", f"is {layers!r}", "it must be an integer >= 0", "pass layers=2")
    act = ACTIVATIONS[check_choice(activation, owner, "activation", tuple(ACTIVATIONS))]
    blocks: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden_dim), act()]
        width = hidden_dim
    blocks.append(nn.Linear(width, out_dim))
    return nn.Sequential(*blocks)


def _check_pair(critic: nn.Module, x, y, x_dim: int, y_dim: int) -> None:
    owner = type(critic).__name__
    check_embeddings(x, owner, "x")
    check_embeddings(y, owner, "y")
    if x.shape[0] != y.shape[0]:
        _fail(
            owner,
            "y",
            f"has {y.shape[0]} rows but `x` has {x.shape[0]}",
            "row i of x and row i of y form the joint pair i",
            "pass the same number of x and y samples",
        )
    for arg, t, d in (("x", x, x_dim), ("y", y, y_dim)):
        if t.shape[1] != d:
            _fail(
                owner,
                arg,
                f"has feature dimension {t.shape[1]}",
                f"this critic was built for {arg}_dim={d}",
                f"build the critic with {arg}_dim={t.shape[1]}",
            )


class SeparableCritic(nn.Module):
    """``f(x, y) = g(x) . h(y) / temperature`` with MLP encoders g, h (Poole et al. 2019).

    Scores the whole batch with one matrix product, O(B D) encoder work. Poole et al.'s
    code returns ``h(y) g(x)^T`` (rows indexed by y); this returns ``g(x) h(y)^T`` (rows
    indexed by x), the library-wide convention. ``temperature`` (default 1, i.e. none)
    divides the dot product, as in contrastive losses.
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        embed_dim: int = 32,
        hidden_dim: int = 256,
        layers: int = 2,
        activation: str = "relu",
        temperature: float = 1.0,
    ):
        super().__init__()
        self.x_dim = _check_dim(x_dim, "SeparableCritic", "x_dim")
        self.y_dim = _check_dim(y_dim, "SeparableCritic", "y_dim")
        self.temperature = check_positive_number(
            temperature, "SeparableCritic", "temperature", "pass e.g. temperature=1.0"
        )
        self.g = mlp(x_dim, hidden_dim, embed_dim, layers, activation)
        self.h = mlp(y_dim, hidden_dim, embed_dim, layers, activation)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair(self, x, y, self.x_dim, self.y_dim)
        return self.g(x) @ self.h(y).T / self.temperature


class BilinearCritic(nn.Module):
    """``f(x, y) = x^T W y`` with a learned (x_dim, y_dim) matrix W (CPC's log-bilinear
    score, van den Oord et al., arXiv:1807.03748, 2018, without encoders). W starts at small random
    values (std 1/sqrt(x_dim * y_dim)) so the initial scores are near 0."""

    def __init__(self, x_dim: int, y_dim: int):
        super().__init__()
        self.x_dim = _check_dim(x_dim, "BilinearCritic", "x_dim")
        self.y_dim = _check_dim(y_dim, "BilinearCritic", "y_dim")
        self.weight = nn.Parameter(torch.randn(x_dim, y_dim) / (x_dim * y_dim) ** 0.5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair(self, x, y, self.x_dim, self.y_dim)
        return x @ self.weight @ y.T


class ConcatCritic(nn.Module):
    """``f(x, y) = MLP([x, y])`` on all B^2 pairs (Poole et al. 2019, "concat" critic).

    The most flexible of the three (it can represent any ratio), and the costliest:
    O(B^2 H) work. The first layer is split, ``W [x; y] + b = W_x x + W_y y + b``, so it
    costs O(B (D_x + D_y) H) and the (B, B, D_x + D_y) tensor of concatenated pairs is
    never built; the hidden layers then run on the B^2 pairs.
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        hidden_dim: int = 256,
        layers: int = 2,
        activation: str = "relu",
    ):
        super().__init__()
        self.x_dim = _check_dim(x_dim, "ConcatCritic", "x_dim")
        self.y_dim = _check_dim(y_dim, "ConcatCritic", "y_dim")
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            _fail(
                "ConcatCritic",
                "layers",
                f"is {layers!r}",
                "it must be an integer >= 1 (a concat critic with no hidden layer is "
                "additive in x and y, so it cannot score dependence)",
                "pass layers=2",
            )
        self.first = nn.Linear(x_dim + y_dim, hidden_dim)
        self.act = ACTIVATIONS[
            check_choice(activation, "ConcatCritic", "activation", tuple(ACTIVATIONS))
        ]()
        self.rest = mlp(hidden_dim, hidden_dim, 1, layers - 1, activation)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair(self, x, y, self.x_dim, self.y_dim)
        w = self.first.weight
        hx = x @ w[:, : self.x_dim].T + self.first.bias  # (B, H)
        hy = y @ w[:, self.x_dim :].T  # (B, H)
        hidden = self.act(hx[:, None, :] + hy[None, :, :])  # (B, B, H): pair (i, j)
        return self.rest(hidden).squeeze(-1)


__all__ = ["BilinearCritic", "ConcatCritic", "SeparableCritic", "mlp"]
