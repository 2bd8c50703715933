"""Who pairs with whom: positive and valid-candidate masks over an anchors x candidates grid.

A ``Pairs`` holds two boolean ``(N, M)`` masks. ``positive[i, j]`` says candidate j is a
positive of anchor i; ``valid[i, j]`` says j may appear in anchor i's denominator at all
(it excludes the anchor itself). Negatives are ``valid & ~positive``.

Soft / graded positives: a ``Pairs`` may also carry ``weight``, a float ``(N, M)`` matrix
in [0, 1] that is zero off the positives. ``core.contrast`` then averages anchor i's
per-positive terms with these weights, normalised by their sum over the anchor's row:
SupCon's L_out with a soft mask, ``l_i = sum_p w_ip l_ip / sum_p w_ip`` (SPACE-2, He et
al., COLING 2022). ``weight=None`` (the default) is the hard 0/1 mask. ``from_scores``
builds such pairs from a score matrix; ``hierarchical_set_score`` / ``tree_similarity``
compute SPACE-2's tree-structured scores from nested labels.

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


# ------------------------------------------------------------------ SPACE-2 tree scores

TREE_VIEWS = ("D", "I", "S", "V", "DI", "IS", "SV", "DIS", "ISV", "DISV")
IGNORED_NODES = ("default_domain", "default_intent")


def _clean_name(x) -> str:
    if isinstance(x, dict):
        x = x["value"]
    return str(x).strip().lower()


def _clean_frame(frame: dict) -> dict:
    """Lower-cased, stripped names at every level; slot values as plain strings."""
    return {
        _clean_name(domain): {
            _clean_name(act): {
                _clean_name(slot): [_clean_name(v) for v in values]
                for slot, values in (slots or {}).items()
            }
            for act, slots in (acts or {}).items()
        }
        for domain, acts in frame.items()
    }


def frame_from_path(path) -> dict:
    """A label path ``(domain, intent, slot, value)`` (any prefix of it, at least one
    level) as SPACE-2's nested frame ``{domain: {intent: {slot: [value]}}}``."""
    path = tuple(path)
    if not 1 <= len(path) <= 4:
        _fail(
            "frame_from_path",
            "path",
            f"has {len(path)} levels ({path!r})",
            "a label path has 1 to 4 levels: (domain, intent, slot, value)",
            "pass e.g. ('round', '8') or a frame dict",
        )
    if len(path) == 1:
        return {path[0]: {}}
    if len(path) == 2:
        return {path[0]: {path[1]: {}}}
    values = [path[3]] if len(path) == 4 else []
    return {path[0]: {path[1]: {path[2]: values}}}


def _frame_views(frame: dict) -> list[set]:
    """The 10 node / edge / path sets of a cleaned frame, in ``TREE_VIEWS`` order."""
    views = [set() for _ in TREE_VIEWS]
    d_, i_, s_, v_, di, is_, sv, dis, isv, disv = views
    for domain, acts in frame.items():
        d_.add(domain)
        for act, slots in acts.items():
            i_.add(act)
            di.add(f"{domain}-{act}")
            for slot, values in slots.items():
                s_.add(slot)
                is_.add(f"{act}-{slot}")
                dis.add(f"{domain}-{act}-{slot}")
                for value in values:
                    v_.add(value)
                    sv.add(f"{slot}-{value}")
                    isv.add(f"{act}-{slot}-{value}")
                    disv.add(f"{domain}-{act}-{slot}-{value}")
    for nodes in (d_, i_):  # placeholder nodes carry no meaning (SPACE-2's ignore_nodes)
        nodes.difference_update(IGNORED_NODES)
    return views


def _as_frame(label) -> dict:
    if isinstance(label, dict):
        return label
    if isinstance(label, str):
        return frame_from_path((label,))
    return frame_from_path(label)


def hierarchical_set_score(frame1, frame2, return_all: bool = False):
    """SPACE-2's tree similarity of two semantic frames (He et al., COLING 2022, Sec. 3.2;
    AlibabaResearch/DAMO-ConvAI ``space-2/space/utils/scores.py::hierarchical_set_score``).

    A frame is ``{domain: {intent: {slot: [values]}}}`` (values may be strings or
    ``{"value": ...}`` dicts as in the released data), or a label path tuple
    ``(domain, intent, slot, value)`` / any prefix of it. Names are compared stripped and
    lower-cased. Each frame gives 10 sets (``TREE_VIEWS``): nodes D, I, S, V; edges DI,
    IS, SV; paths DIS, ISV, DISV. The score is the mean of the Jaccard indices of the
    views whose union is non-empty (views empty in both frames are not counted);
    identical frames score 1 and an empty frame scores 0. ``return_all=True`` gives the 10
    per-view Jaccard indices (0 for an undefined view). Example: ``("round", "8")`` vs
    ``("round", "6")`` share D only, so views D, I, DI are defined and the score is 1/3.

    Departure: the released ``ignore_nodes`` decorator (``space/utils/decorators.py``) is
    not in the public index we could read; placeholder domain / intent nodes named
    ``DEFAULT_DOMAIN`` / ``DEFAULT_INTENT`` are dropped from the D and I node sets here
    (the edges and paths through them are kept), which is our reading of its name.
    """
    if not (frame1 and frame2):
        return (0.0,) * len(TREE_VIEWS) if return_all else 0.0
    f1, f2 = _clean_frame(_as_frame(frame1)), _clean_frame(_as_frame(frame2))
    if f1 == f2 and not return_all:
        return 1.0
    scores, defined = [], []
    for a, b in zip(_frame_views(f1), _frame_views(f2), strict=True):
        union = len(a | b)
        scores.append(len(a & b) / union if union else 0.0)
        defined.append(bool(union))
    if return_all:
        return tuple(scores)
    count = sum(defined)
    return sum(scores) / count if count else 0.0


def tree_similarity(labels, dtype=torch.float32, device=None) -> torch.Tensor:
    """``(N, N)`` matrix of ``hierarchical_set_score`` between N frames or label paths,
    with 1 on the diagonal (as SPACE-2's ``build_score_matrix``, so that an empty frame
    still pairs with its own other view). Ready for ``soft_supcon(..., scores=)``.
    Identical labels are scored once (the O(N^2) Python loop runs over distinct labels)."""
    keys = [repr(_clean_frame(_as_frame(x))) if x else "" for x in labels]
    distinct = {k: i for i, k in enumerate(keys)}
    firsts = list(distinct.values())
    table = {}
    for a in firsts:
        for b in firsts:
            if (b, a) in table:
                table[a, b] = table[b, a]
            else:
                table[a, b] = hierarchical_set_score(labels[a], labels[b])
    n = len(labels)
    out = torch.tensor(
        [[table[distinct[keys[i]], distinct[keys[j]]] for j in range(n)] for i in range(n)],
        dtype=dtype,
        device=device,
    ).reshape(n, n)
    out.fill_diagonal_(1.0)
    return out
