"""A first-in-first-out queue of past embeddings used as extra negatives (MoCo)."""

from __future__ import annotations

import torch
from torch import nn

from contrastkit.core.validation import _fail, check_embeddings


class MemoryQueue(nn.Module):
    """Ring buffer of the last ``size`` embeddings, stored detached as buffers.

    The feature dimension is fixed by the first ``push``; ``get`` returns the filled part
    oldest-first (``None`` while empty). Everything lives in buffers, so a checkpoint of
    the owning module restores the queue exactly.
    """

    def __init__(self, size: int):
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            _fail("MemoryQueue", "size", f"is {size!r}", "it must be an int > 0", "pass e.g. 4096")
        self.size = size
        self.register_buffer("items", torch.empty(0))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The buffer's shape is only known once filled: adopt the saved one before loading.
        key = prefix + "items"
        if key in state_dict:
            self.items = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def push(self, x: torch.Tensor) -> None:
        check_embeddings(x, "MemoryQueue.push", "x")
        x = x.detach()
        if self.items.numel() == 0:
            self.items = x.new_zeros(self.size, x.shape[1])
        elif x.shape[1] != self.items.shape[1]:
            _fail(
                "MemoryQueue.push",
                "x",
                f"has dimension {x.shape[1]} but the queue holds {self.items.shape[1]}",
                "all pushed embeddings must share one dimension",
                "project keys to the queue's dimension or make a new queue",
            )
        x = x[-self.size :]
        idx = (self.pointer + torch.arange(x.shape[0], device=x.device)) % self.size
        self.items[idx] = x.to(self.items.dtype)
        self.pointer.copy_((self.pointer + x.shape[0]) % self.size)
        self.count.copy_(torch.clamp(self.count + x.shape[0], max=self.size))

    def get(self, like: torch.Tensor | None = None) -> torch.Tensor | None:
        n = int(self.count)
        if n == 0:
            return None
        if n < self.size:
            out = self.items[:n]
        else:  # full: roll so the oldest entry comes first
            p = int(self.pointer)
            out = torch.cat([self.items[p:], self.items[:p]], 0)
        return out if like is None else out.to(like.dtype)
