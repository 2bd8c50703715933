"""Contrastive decoding on Hugging Face causal language models (extra ``[decoding]``).

- ``contrastive_search``, ``contrastive_scores``: contrastive search (Su et al. NeurIPS
  2022, SimCTG; Su & Collier TMLR 2023), batched, with KV-cache reuse.
- ``generate``: greedy, top-k, nucleus and contrastive search in one cached loop with the
  same padding and stopping rules (fair tokens-per-second comparisons).
- ``cad_generate``, ``adacad_generate``, ``jensen_shannon``: context-aware decoding
  (Shi et al. 2023) and AdaCAD (Wang et al. NAACL 2025), two KV caches in one process.
- ``load_causal_lm``, ``load_smollm2``: offline model loading.

The functions take any ``transformers`` causal LM; this package imports torch only, and
``transformers`` is imported inside the loaders.
"""

from contrastkit.decoding.cad import adacad_generate, cad_generate, jensen_shannon
from contrastkit.decoding.models import load_causal_lm, load_smollm2
from contrastkit.decoding.search import (
    DEFAULTS,
    contrastive_scores,
    contrastive_search,
    generate,
)

__all__ = [
    "DEFAULTS",
    "adacad_generate",
    "cad_generate",
    "contrastive_scores",
    "contrastive_search",
    "generate",
    "jensen_shannon",
    "load_causal_lm",
    "load_smollm2",
]
