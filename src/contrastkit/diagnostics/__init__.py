"""Diagnostics of learned embeddings: pure functions from tensors to Python floats.

- ``alignment``, ``uniformity``: Wang & Isola (ICML 2020).
- ``effective_rank``: Roy & Vetterli (EUSIPCO 2007).
- ``mean_pairwise_cosine``, ``similarity_gap``: cosine statistics over pairs.
- ``isotropy``: the partition-function ratio of Mu & Viswanath (ICLR 2018).
- ``tolerance``: Wang & Liu (CVPR 2021).
- ``summarize``: all of them in one dict.
- ``categorical``: Markov categorical quantities of a softmax head (Zhang, arXiv 2507.19247):
  ``categorical_entropy``, ``information_surplus``, ``pullback_fisher_metric``,
  ``fisher_rank``, ``spectral_alignment`` and helpers.
- ``token_isotropy``: ``self_similarity``, ``token_isotropy``, ``model_isotropy``: mean
  cosine between distinct tokens of a text and 1 minus it (Su & Collier, TMLR 2023).
"""

from contrastkit.diagnostics.categorical import (
    categorical_entropy,
    fisher_rank,
    information_surplus,
    markov_conditional_entropy,
    predictive_kernel,
    pullback_fisher_metric,
    spectral_alignment,
    stationary_distribution,
)
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
from contrastkit.diagnostics.token_isotropy import (
    model_isotropy,
    self_similarity,
    token_isotropy,
)

__all__ = [
    "alignment",
    "categorical_entropy",
    "effective_rank",
    "fisher_rank",
    "information_surplus",
    "isotropy",
    "markov_conditional_entropy",
    "mean_pairwise_cosine",
    "model_isotropy",
    "predictive_kernel",
    "pullback_fisher_metric",
    "self_similarity",
    "similarity_gap",
    "spectral_alignment",
    "stationary_distribution",
    "summarize",
    "token_isotropy",
    "tolerance",
    "uniformity",
]
