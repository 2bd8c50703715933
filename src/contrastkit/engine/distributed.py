"""Gathering embeddings across ``torch.distributed`` ranks with the right gradient.

Semantics used by every ``distributed=True`` loss: each rank keeps its own rows as
anchors and contrasts them with the rows of **all** ranks (global negatives). The
gather's backward sums the gradient that every rank's loss sends to a row and hands each
rank the part for its own rows. With equal per-rank batches, DDP's average of the
parameter gradients then equals the gradient of the single-process loss on the
concatenated batch: the bug reported against lightly (#1920, #1977), pytorch-metric-
learning (#363) and open_clip (#616), a gradient off by the world size, cannot occur.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sizes(n: int, device) -> list[int]:
    size = torch.tensor([n], device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def _gather(x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate every rank's ``x`` along dim 0 (ranks may hold different row counts)."""
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)], 0)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, sizes):
        ctx.rows = (sum(sizes[: dist.get_rank()]), x.shape[0])
        return _gather(x, sizes)

    @staticmethod
    def backward(ctx, grad):
        # Every rank's loss sent gradient to every row: sum them, keep this rank's rows.
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start, n = ctx.rows
        return grad[start : start + n], None


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' ``x`` concatenated in rank order, differentiable, and the offset of this
    rank's first row in it. Without an initialised process group: ``(x, 0)``."""
    rank, size = world()
    if size == 1:
        return x, 0
    sizes = _sizes(x.shape[0], x.device)
    return _GatherWithGrad.apply(x, sizes), sum(sizes[:rank])


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` (labels, indices, keys) concatenated in rank order."""
    if world()[1] == 1:
        return x
    return _gather(x, _sizes(x.shape[0], x.device))


@torch.no_grad()
def all_reduce_no_grad(x: torch.Tensor, op: str) -> torch.Tensor:
    """``x`` reduced over ranks with "sum" or "max" (a copy; no gradient)."""
    out = x.detach().clone()
    if world()[1] > 1:
        dist.all_reduce(out, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return out
