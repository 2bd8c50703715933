"""Diagnostics of learned embeddings: pure functions from tensors to Python floats.

- ``alignment``, ``uniformity``: Wang & Isola (ICML 2020).
- ``effective_rank``: Roy & Vetterli (EUSIPCO 2007).
- ``mean_pairwise_cosine``, ``similarity_gap``: cosine statistics over pairs.
- ``isotropy``: the partition-function ratio of Mu & Viswanath (ICLR 2018).
- ``tolerance``: Wang & Liu (CVPR 2021).
- ``summarize``: all of them in one dict.
"""

from contrastkit.diagnostics.geometry import (
    alignment,
    effective_rank,
    isotropy,
    mean_pairwise_cosine,
    similarity_gap,
    summarize,
    tolerance,
    uniformity,
)

__all__ = [
    "alignment",
    "effective_rank",
    "isotropy",
    "mean_pairwise_cosine",
    "similarity_gap",
    "summarize",
    "tolerance",
    "uniformity",
]
