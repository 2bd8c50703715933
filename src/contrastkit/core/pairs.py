"""Who pairs with whom: positive and valid-candidate masks over an anchors x candidates grid.

A ``Pairs`` holds two boolean ``(N, M)`` masks. ``positive[i, j]`` says candidate j is a
positive of anchor i; ``valid[i, j]`` says j may appear in anchor i's denominator at all
(it excludes the anchor itself). Negatives are ``valid & ~positive``.

Soft / graded positives: a ``Pairs`` may also carry ``weight``, a float ``(N, M)`` matrix
in [0, 1] that is zero off the positives. ``core.contrast`` then averages anchor i's
per-positive terms with these weights, normalised by their sum over the anchor's row:
SupCon's L_out with a soft mask, ``l_i = sum_p w_ip l_ip / sum_p w_ip`` (SPACE-2, He et
al., COLING 2022). ``weight=None`` (the default) is the hard 0/1 mask. ``from_scores``
builds such pairs from a score matrix (SPACE-2's tree-structured scores for nested
labels are in ``contrastkit.losses.tree_scores``).

Multi-view layout: V views of N samples are flattened view-major, row ``v * N + i`` is
view v of sample i. For two views this is SimCLR's ``[z1; z2]`` layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from contrastkit.core.validation import _fail


@dataclass(frozen=True)
class Pairs:
    positive: torch.Tensor  # (N, M) bool
    valid: torch.Tensor  # (N, M) bool, positives included
    weight: torch.Tensor | None = None  # (N, M) float in [0, 1], zero off the positives

    @property
    def negative(self) -> torch.Tensor:
        return self.valid & ~self.positive

    def with_extra_negatives(self, m: int) -> Pairs:
        """Append ``m`` candidate columns (a queue, a memory bank) that are negatives of all."""
        if m == 0:
            return self
        n = self.positive.shape[0]
        dev = self.positive.device
        pad_pos = torch.zeros(n, m, dtype=torch.bool, device=dev)
        pad_valid = torch.ones(n, m, dtype=torch.bool, device=dev)
        weight = self.weight
        if weight is not None:
            weight = torch.cat([weight, weight.new_zeros(n, m)], 1)
        return Pairs(
            torch.cat([self.positive, pad_pos], 1), torch.cat([self.valid, pad_valid], 1), weight
        )


def not_self(n: int, device=None) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool, device=device)


def from_labels(labels: torch.Tensor) -> Pairs:
    """Same label is positive (SupCon); every other sample is a valid candidate."""
    same = labels[:, None] == labels[None, :]
    valid = not_self(labels.shape[0], labels.device)
    return Pairs(same & valid, valid)


def instance_ids(n: int, views: int, device=None) -> torch.Tensor:
    """Sample index of each row of the view-major ``(V * N, D)`` layout."""
    return torch.arange(n, device=device).repeat(views)


def from_views(n: int, views: int, device=None) -> Pairs:
    """The other views of the same sample are positives (SimCLR / NT-Xent)."""
    return from_labels(instance_ids(n, views, device))


def from_view_labels(labels: torch.Tensor, views: int) -> Pairs:
    """Class labels repeated over V views: positives are all same-class views (SupCon)."""
    return from_labels(labels.repeat(views))


def from_mask(positive: torch.Tensor, valid: torch.Tensor | None = None) -> Pairs:
    """Explicit positive mask (and optionally which candidates may be contrasted at all;
    default: every candidate, so pass ``not_self(n)`` when anchors are the candidates)."""
    if positive.dtype != torch.bool or positive.dim() != 2:
        _fail(
            "from_mask",
            "positive",
            f"has dtype {positive.dtype} and shape {tuple(positive.shape)}",
            "it must be a 2-D bool mask (anchors x candidates)",
            "pass mask.bool()",
            TypeError,
        )
    if valid is None:
        valid = torch.ones_like(positive)
    return Pairs(positive & valid, valid)


def from_index_pairs(index_pairs: torch.Tensor, n: int, m: int) -> Pairs:
    """``(P, 2)`` (anchor, candidate) index pairs become a positive mask; all else negative."""
    if index_pairs.dim() != 2 or index_pairs.shape[1] != 2:
        _fail(
            "from_index_pairs",
            "index_pairs",
            f"has shape {tuple(index_pairs.shape)}",
            "it must be (P, 2) rows of (anchor, candidate)",
            "stack pairs as torch.stack([anchors, candidates], 1)",
        )
    positive = torch.zeros(n, m, dtype=torch.bool, device=index_pairs.device)
    positive[index_pairs[:, 0], index_pairs[:, 1]] = True
    return from_mask(positive)


def keep_hardest_negatives(pairs: Pairs, similarity: torch.Tensor, k: int) -> Pairs:
    """Keep each anchor's positives and only its ``k`` most similar negatives as valid.

    This is the "informative interval" ``s_ik >= s_alpha^(i)`` of Wang & Liu (CVPR 2021,
    eq. 8): the threshold is the k-th largest negative similarity of each anchor. The
    selection is made on detached similarities; gradients flow through the kept terms.
    """
    negative = pairs.negative
    k = min(k, int(negative.sum(1).min()))
    scores = similarity.detach().masked_fill(~negative, float("-inf"))
    top = scores.topk(k, dim=1).indices
    hard = torch.zeros_like(negative).scatter_(1, top, True) & negative
    return Pairs(pairs.positive, pairs.positive | hard, pairs.weight)


def from_keys(
    anchor_keys: torch.Tensor, candidate_keys: torch.Tensor, self_offset: int | None = None
) -> Pairs:
    """Candidate j is a positive of anchor i when their keys are equal. With
    ``self_offset``, anchor i is candidate ``i + self_offset`` and is excluded from its own
    row (the anchors are a slice of the candidates: one rank's rows among all ranks')."""
    positive = anchor_keys[:, None] == candidate_keys[None, :]
    valid = torch.ones_like(positive)
    if self_offset is not None:
        n, m = positive.shape
        rows = torch.arange(n, device=positive.device) + self_offset
        valid = rows[:, None] != torch.arange(m, device=positive.device)[None, :]
    return Pairs(positive & valid, valid)


def from_scores(scores: torch.Tensor, valid: torch.Tensor | None = None) -> Pairs:
    """Graded positives from a float ``(N, M)`` score matrix in [0, 1]: every pair with a
    score above 0 (and valid) is a positive of weight ``score``; the rest are negatives.
    ``valid`` defaults to every candidate (pass ``not_self(n)`` when anchors are the
    candidates). The caller validates ``scores`` (``validation.check_unit_scores``)."""
    if valid is None:
        valid = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    positive = (scores > 0) & valid
    return Pairs(positive, valid, torch.where(positive, scores, torch.zeros_like(scores)))
