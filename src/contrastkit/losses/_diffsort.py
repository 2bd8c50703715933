"""Differentiable sorting networks (Petersen et al., ICML 2021; ICLR 2022).

A sorting network is a fixed sequence of layers of disjoint compare-and-swap operations.
Relaxing each comparator makes the whole network differentiable: for a comparator whose
lower output wire ``lo`` should receive the minimum and whose upper wire ``hi`` the
maximum, with ``a = x[lo]``, ``b = x[hi]`` and ``alpha = f(steepness * (b - a))``,

    new x[lo] = alpha * a + (1 - alpha) * b          (soft min)
    new x[hi] = alpha * b + (1 - alpha) * a          (soft max)

and the same convex weights mix the columns of a running relaxed permutation matrix
``P`` (batch, n, n), started at the identity. ``P[r, c]`` is the probability that input
element r ends at output position c (ascending order), so ``sorted = x @ P`` and every row
and every column of ``P`` sums to one (doubly stochastic). This is the layout of the
PyPI package ``diffsort`` (``DiffSortNet``, the authors' implementation), whose ``X`` is
this ``P``.

``f`` (``interpolation``):

* ``"cauchy"``: ``f(v) = atan(v) / pi + 1/2`` (the Cauchy CDF), one of the sigmoids that
  "Monotonic Differentiable Sorting Networks" (Petersen et al., ICLR 2022) shows make
  the relaxed network monotonic; no activation replacement is needed, so ``art_lambda``
  has no effect (as in ``diffsort``);
* ``"logistic"``: ``f(v) = sigmoid(v)``, the relaxation of Petersen et al. (ICML 2021);
* ``"logistic_phi"``: the logistic sigmoid after that paper's activation replacement
  trick (ART), ``f(d) = sigmoid(steepness * d / (|d| + 1e-10) ** art_lambda)`` with
  ``d = b - a``, exactly as ``diffsort`` computes it (where the paper's epsilon sits
  relative to the power was not checked against the paper; the two differ by < 1e-10
  unless |d| is itself that small).

The formulas follow ``diffsort``'s ``functional.py``; the papers' equation numbers were
not checked here.

Networks: ``"odd_even"`` (odd-even transposition sort, n layers, ``diffsort``'s layout
including its pass-through wires) and ``"bitonic"`` (ceil(log2 n)(ceil(log2 n)+1)/2
layers). Our bitonic network uses the all-ascending form (each merge starts by comparing
wire i with its mirror image in the block) and pads n up to a power of two with +inf
wires at the top, whose comparators are dropped: exact for every n, and for n a power of
two the same relaxation as ``diffsort``'s directional network, relabelled. ``diffsort``
pads at the bottom instead and, we checked, fails to sort some sizes in the hard limit
(n = 22, 38 among n < 40); for those sizes the two differ.

A network is stored as two ``(layers, n)`` tensors, registered as buffers of
:class:`SortingNetwork` so they follow ``.to(device)``: ``partner[l, i]`` is the wire i is
compared with in layer l (itself when it passes through) and ``sign[l, i]`` is +1 when i
takes the minimum, -1 the maximum, 0 when it passes through.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from contrastkit.core.validation import _fail, check_choice, check_positive_number

NETWORKS = ("odd_even", "bitonic")
INTERPOLATIONS = ("cauchy", "logistic", "logistic_phi")


def _odd_even_layers(n: int) -> list[list[tuple[int, int]]]:
    """n layers, alternately comparing wires (0,1), (2,3), ... and (1,2), (3,4), ..."""
    return [[(i, i + 1) for i in range(layer % 2, n - 1, 2)] for layer in range(n)]


def _bitonic_layers(n: int) -> list[list[tuple[int, int]]]:
    """Ascending bitonic sorter on the next power of two, comparators on padding dropped."""
    size = 1 << max(0, math.ceil(math.log2(n))) if n > 1 else 1
    layers = []
    block = 2
    while block <= size:
        # merge step 1: mirror comparisons inside each block (turns two sorted halves bitonic)
        layers.append(
            [(b + i, b + block - 1 - i) for b in range(0, size, block) for i in range(block // 2)]
        )
        half = block // 4
        while half >= 1:  # half-cleaners
            layers.append(
                [(b + i, b + i + half) for b in range(0, size, 2 * half) for i in range(half)]
            )
            half //= 2
        block *= 2
    return [[(lo, hi) for lo, hi in layer if hi < n] for layer in layers]


@functools.lru_cache(maxsize=64)
def _network_lists(kind: str, n: int) -> tuple[tuple[tuple[int, ...], ...], tuple]:
    layers = _odd_even_layers(n) if kind == "odd_even" else _bitonic_layers(n)
    partners, signs = [], []
    for layer in layers:
        partner, sign = list(range(n)), [0] * n
        for lo, hi in layer:
            partner[lo], partner[hi] = hi, lo
            sign[lo], sign[hi] = 1, -1
        partners.append(tuple(partner))
        signs.append(tuple(sign))
    return tuple(partners), tuple(signs)


def network_tensors(kind: str, n: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``partner`` (layers, n) long and ``sign`` (layers, n) int8 of a sorting network."""
    check_choice(kind, "sorting_network", "sorting_network", NETWORKS)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        _fail("sorting_network", "size", f"is {n!r}", "it must be an int >= 1", "pass e.g. 11")
    partners, signs = _network_lists(kind, n)
    if not partners:  # n == 1: nothing to compare
        empty = torch.zeros(0, n, dtype=torch.long, device=device)
        return empty, empty.to(torch.int8)
    return (
        torch.tensor(partners, dtype=torch.long, device=device),
        torch.tensor(signs, dtype=torch.int8, device=device),
    )


def swap_weight(d: torch.Tensor, steepness: float, interpolation: str, art_lambda: float):
    """``alpha = f(d)`` of a relaxed comparator, ``d = x[hi] - x[lo]`` (see the module doc)."""
    if interpolation == "cauchy":
        return torch.atan(steepness * d) / math.pi + 0.5
    if interpolation == "logistic":
        return torch.sigmoid(steepness * d)
    return torch.sigmoid(steepness * d / (d.abs() + 1e-10).pow(art_lambda))


def soft_sort(
    x: torch.Tensor,
    partner: torch.Tensor,
    sign: torch.Tensor,
    *,
    steepness: float = 1.0,
    interpolation: str = "cauchy",
    art_lambda: float = 0.25,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relaxed ascending sort of each row of ``x`` (B, n) through the network given by
    ``partner``/``sign`` (see :func:`network_tensors`). Returns the soft-sorted values
    (B, n) and the relaxed permutation ``P`` (B, n, n) with ``sorted = x @ P`` (rows: input
    elements, columns: output positions). Runs in ``x``'s dtype (pass float32 or float64)."""
    b, n = x.shape
    perm = torch.eye(n, dtype=x.dtype, device=x.device).expand(b, n, n)
    for layer in range(partner.shape[0]):
        p = partner[layer]
        other = x.index_select(1, p)
        # For both wires of a comparator s * (x[p] - x[i]) is x[hi] - x[lo], bit for bit,
        # so both get the same alpha; a pass-through wire (s = 0, p = i) keeps its value.
        s = sign[layer].to(x.dtype)
        alpha = swap_weight(s * (other - x), steepness, interpolation, art_lambda)
        x = alpha * x + (1 - alpha) * other
        a = alpha[:, None, :]
        perm = a * perm + (1 - a) * perm.index_select(2, p)
    return x, perm


class SortingNetwork(nn.Module):
    """A differentiable sorting network of a fixed size whose layout tensors are buffers
    (not saved in ``state_dict``: they are rebuilt from ``kind`` and ``size``)."""

    def __init__(self, kind: str = "odd_even", size: int = 2):
        super().__init__()
        self.kind = check_choice(kind, "SortingNetwork", "kind", NETWORKS)
        self.size = size
        partner, sign = network_tensors(kind, size)
        self.register_buffer("partner", partner, persistent=False)
        self.register_buffer("sign", sign, persistent=False)

    def forward(self, x, *, steepness=1.0, interpolation="cauchy", art_lambda=0.25):
        return soft_sort(
            x,
            self.partner,
            self.sign,
            steepness=steepness,
            interpolation=interpolation,
            art_lambda=art_lambda,
        )

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, size={self.size}"


def check_sorting_args(owner, steepness, interpolation, art_lambda, sorting_network):
    """Validate the relaxation hyperparameters; returns them as floats/strings."""
    steepness = check_positive_number(steepness, owner, "steepness", "pass e.g. steepness=1.0")
    check_choice(interpolation, owner, "interpolation", INTERPOLATIONS)
    if isinstance(art_lambda, bool) or not isinstance(art_lambda, int | float):
        _fail(
            owner,
            "art_lambda",
            f"is a {type(art_lambda).__name__}",
            "it must be a number",
            "pass e.g. art_lambda=0.25",
            TypeError,
        )
    if not (0.0 <= art_lambda <= 1.0):
        _fail(
            owner,
            "art_lambda",
            f"is {art_lambda}",
            "it must lie in [0, 1] (the ART exponent)",
            "pass e.g. art_lambda=0.25",
        )
    check_choice(sorting_network, owner, "sorting_network", NETWORKS)
    return steepness, interpolation, float(art_lambda), sorting_network
