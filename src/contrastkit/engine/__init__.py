"""Machinery beyond one plain batch: the memory queue (tiling, GradCache and distributed
gathering build on this package)."""

from contrastkit.engine.queue import MemoryQueue

__all__ = ["MemoryQueue"]
