"""SPACE-2's tree-structured similarity between nested labels (He et al., COLING 2022),
the graded-positive scores that ``soft_sup_con`` takes.

Follows AlibabaResearch/DAMO-ConvAI ``space-2/space/utils/scores.py``
(``hierarchical_set_score``): Jaccard similarity of the two frames' node, edge and path
sets over 10 views, averaged over the views that are defined. Kept out of ``core``: the
dialogue-frame format (domain / intent / slot / value) is this method's, not the core's.
"""

from __future__ import annotations

import torch

from contrastkit.core.validation import _fail

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
