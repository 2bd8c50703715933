"""Machinery beyond one plain batch: the memory queue and the cached-gradient encoder pass
(GradCache); tiling and distributed gathering build on this package."""

from contrastkit.engine.grad_cache import RandContext, cached_backward
from contrastkit.engine.queue import MemoryQueue

__all__ = ["MemoryQueue", "RandContext", "cached_backward"]
