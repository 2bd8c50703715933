"""Token-level self-similarity and isotropy of a language model's hidden states.

Su & Collier (TMLR 2023, "Contrastive Search Is What You Need For Neural Text
Generation") measure how anisotropic a language model is by the mean cosine
similarity between the last-layer representations of distinct tokens of the same text,
``isotropy = 1 - self_similarity``; SimCTG (Su et al., NeurIPS 2022) uses the same
quantity. Official code read for this module:
``yxuansu/Contrastive_Search_Is_What_You_Need``,
``isotropy_analysis/compute_language_model_isotropy.py``: per text, the sum of the
off-diagonal cosines of the last hidden states and the count ``n (n - 1)``; both are
summed over up to 2000 texts and divided once (``pooling="pooled"``, the default here).
The paper's text was not readable here, so whether it averages per text first could not
be checked; ``pooling="per_text"`` (mean of per-text self-similarities) is the option.

This module is named ``token_isotropy`` because ``contrastkit.diagnostics.isotropy`` is
already the partition-function isotropy of Mu & Viswanath (``geometry.isotropy``), a
different quantity; a submodule of the same name would shadow it.

Departures from the code: the diagonal is removed exactly (the code subtracts ``n``,
assuming each self-cosine is exactly 1); a padded batch is handled by ``mask`` (the code
runs one unpadded text at a time); an all-zero hidden state is an error (the code gives
NaN); the result is not rounded (the code rounds the isotropy to 2 decimals).
"""

from __future__ import annotations

import torch

from contrastkit.core.validation import _fail, check_choice
from contrastkit.diagnostics._inputs import as_tensor, check_int
from contrastkit.losses.simctg import sequence_mask, unit_token_states

POOLINGS = ("pooled", "per_text")

__all__ = ["model_isotropy", "self_similarity", "token_isotropy"]


def _hidden(hidden, owner: str) -> torch.Tensor:
    h = as_tensor(hidden, owner, "hidden")
    if not torch.is_floating_point(h):
        _fail(
            owner,
            "hidden",
            f"has dtype {h.dtype}",
            "hidden states must be floating point",
            "cast with hidden.float()",
            TypeError,
        )
    if h.dim() == 2:
        h = h[None]
    if h.dim() != 3 or h.shape[-1] < 1:
        _fail(
            owner,
            "hidden",
            f"has shape {tuple(h.shape)}",
            "it must be (B, T, d) hidden states of B texts, or (T, d) for one text",
            "pass outputs.hidden_states[-1]",
        )
    return h


def _pair_sums(hidden, mask, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per text: the sum of ``cos(h_i, h_j)`` over ordered pairs ``i != j`` of real tokens
    (B,) and the number of those pairs (B,). O(B T d): ``sum_{i != j} u_i . u_j`` is
    ``|sum_i u_i|^2 - sum_i |u_i|^2`` for unit rows ``u`` (padding rows are 0)."""
    h = _hidden(hidden, owner)
    if mask is not None:
        mask = as_tensor(mask, owner, "mask")
        if mask.dim() == 1 and h.shape[0] == 1:
            mask = mask[None]
    valid = sequence_mask(mask, tuple(h.shape[:2]), owner).to(h.device)
    u = unit_token_states(h, valid, owner)
    total = u.sum(1)
    off = (total * total).sum(-1) - (u * u).sum((1, 2))
    n = valid.sum(1).to(u.dtype)
    return off, n * (n - 1)


def _pool(off: torch.Tensor, pairs: torch.Tensor, pooling: str, owner: str) -> float:
    has = pairs > 0
    if not bool(has.any()):
        _fail(
            owner,
            "hidden",
            "holds no text with two or more real tokens",
            "self-similarity averages over pairs of distinct tokens of the same text",
            "pass texts of at least two tokens (and check the mask)",
        )
    if pooling == "pooled":
        return float(off.sum() / pairs.sum())
    return float((off[has] / pairs[has]).mean())


def self_similarity(hidden, mask=None, *, pooling: str = "pooled") -> float:
    """Mean cosine similarity between distinct tokens of the same text (Su & Collier, TMLR
    2023; code ``compute_language_model_isotropy.py``).

    ``hidden`` (B, T, d) (or (T, d)): last-layer hidden states; ``mask`` (B, T): True / 1
    for real tokens. ``pooling="pooled"`` (the code): ``sum_b sum_{i != j} cos / sum_b
    n_b (n_b - 1)``, so long texts weigh more; ``"per_text"``: the mean over texts of each
    text's mean. Texts with fewer than two real tokens are skipped. 1 when every token of
    a text has the same direction, 0 for mutually orthogonal tokens.
    """
    owner = "self_similarity"
    check_choice(pooling, owner, "pooling", POOLINGS)
    off, pairs = _pair_sums(hidden, mask, owner)
    return _pool(off, pairs, pooling, owner)


def token_isotropy(hidden, mask=None, *, pooling: str = "pooled") -> float:
    """``1 - self_similarity(hidden, mask, pooling=pooling)`` (Su & Collier, TMLR 2023).

    Close to 0 for an anisotropic model (GPT-2 small: 0.10 in the official README), larger
    for isotropic ones (gpt2-large 0.70, OPT 0.66 to 0.75 there)."""
    owner = "token_isotropy"
    check_choice(pooling, owner, "pooling", POOLINGS)
    off, pairs = _pair_sums(hidden, mask, owner)
    return 1.0 - _pool(off, pairs, pooling, owner)


def right_pad(sequences, owner: str, arg: str, pad_id: int = 0):
    """A list of 1-D token-id sequences (lists or tensors) as right-padded ``(B, T)`` ids
    and a bool mask. Right padding keeps each text's positions 0..n-1, so a causal LM
    gives every real token the same outputs as on the unpadded text."""
    if not isinstance(sequences, list | tuple) or not sequences:
        _fail(
            owner,
            arg,
            f"is {type(sequences).__name__}",
            "it must be a (B, T) integer tensor or a non-empty list of 1-D token-id sequences",
            "pass tokenizer(texts)['input_ids'] or a list of id tensors",
            TypeError,
        )
    rows = []
    for k, seq in enumerate(sequences):
        t = torch.as_tensor(seq)
        if t.numel() == 0:  # torch.as_tensor([]) is float32; an empty text is still ids
            t = t.long().reshape(0)
        if t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
            _fail(
                owner,
                f"{arg}[{k}]",
                f"has shape {tuple(t.shape)} and dtype {t.dtype}",
                "each sequence must be a 1-D list or tensor of integer token ids",
                "pass one list of ids per text",
                TypeError,
            )
        rows.append(t.long())
    width = max(r.numel() for r in rows)
    if width == 0:
        _fail(owner, arg, "holds only empty sequences", "there is nothing to run", "pass token ids")
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for k, r in enumerate(rows):
        ids[k, : r.numel()] = r
        mask[k, : r.numel()] = True
    return ids, mask


def token_batch(input_ids, attention_mask, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T)`` ids and bool mask from a tensor (+ optional mask) or a list of sequences."""
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        if input_ids.dim() != 2 or input_ids.dtype.is_floating_point:
            _fail(
                owner,
                "input_ids",
                f"has shape {tuple(input_ids.shape)} and dtype {input_ids.dtype}",
                "it must be a (B, T) integer tensor",
                "pass tokenizer(..., return_tensors='pt')['input_ids']",
                TypeError,
            )
        if attention_mask is not None and attention_mask.dim() == 1:
            attention_mask = attention_mask[None]
        return input_ids, sequence_mask(attention_mask, tuple(input_ids.shape), owner)
    if attention_mask is not None:
        _fail(
            owner,
            "attention_mask",
            "is given with a list of sequences",
            "a list of sequences is padded here, which builds its own mask",
            "drop attention_mask, or pass input_ids as a padded (B, T) tensor",
        )
    return right_pad(input_ids, owner, "input_ids")


def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def model_isotropy(
    model, input_ids, attention_mask=None, *, batch_size: int = 8, pooling: str = "pooled"
) -> float:
    """Isotropy of a causal LM's last layer on a set of texts (Su & Collier, TMLR 2023;
    code ``compute_language_model_isotropy.py``, which this follows for pooling).

    ``model`` is any Hugging Face causal LM (or callable) that accepts ``input_ids``,
    ``attention_mask`` and ``output_hidden_states=True`` and returns ``hidden_states``;
    ``hidden_states[-1]`` is the last layer (after the final norm in HF models, as in the
    code). ``input_ids``: a (B, T) tensor with optional ``attention_mask`` (use right
    padding), or a list of 1-D id sequences, padded here on the right. The code prepends
    BOS for OPT and truncates to ``max_len``; do that when tokenising. Runs in eval mode
    without gradients, ``batch_size`` texts per forward, and restores the training flag.
    """
    owner = "model_isotropy"
    check_choice(pooling, owner, "pooling", POOLINGS)
    batch_size = check_int(batch_size, owner, "batch_size", 1, "pass e.g. batch_size=8")
    ids, mask = token_batch(input_ids, attention_mask, owner)
    device = model_device(model)
    offs, pairs = [], []
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.no_grad():
            for start in range(0, ids.shape[0], batch_size):
                b_ids = ids[start : start + batch_size].to(device)
                b_mask = mask[start : start + batch_size].to(device)
                out = model(
                    input_ids=b_ids, attention_mask=b_mask.long(), output_hidden_states=True
                )
                off, n_pairs = _pair_sums(out.hidden_states[-1], b_mask, owner)
                offs.append(off.double().cpu())
                pairs.append(n_pairs.double().cpu())
    finally:
        if was_training and hasattr(model, "train"):
            model.train(True)
    return 1.0 - _pool(torch.cat(offs), torch.cat(pairs), pooling, owner)
