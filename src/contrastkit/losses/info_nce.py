"""The InfoNCE family as presets of ``core.contrast``.

Multi-view presets (``info_nce``/NT-Xent, ``sup_con``, ``dcl``, ``dclw``, ``hcl``,
``debiased_info_nce``) contrast every view of every sample against all other rows of the
view-major ``(V * N, D)`` batch; two-tower presets (``clip``, ``moco``) contrast queries
against keys only.
"""

from __future__ import annotations

import torch

from contrastkit.core.contrast import contrast
from contrastkit.core.pairs import (
    Pairs,
    from_index_pairs,
    from_keys,
    from_mask,
    from_scores,
    instance_ids,
    keep_hardest_negatives,
    not_self,
)
from contrastkit.core.reduction import reduce
from contrastkit.core.similarity import pairwise
from contrastkit.core.temperature import as_scale
from contrastkit.core.validation import (
    _fail,
    check_batch_size,
    check_embeddings,
    check_feature_dim,
    check_in_range,
    check_positive_number,
    check_same_shape,
    check_tensor,
    check_unit_scores,
)
from contrastkit.engine.distributed import (
    all_reduce_no_grad,
    gather_no_grad,
    gather_with_grad,
    world,
)
from contrastkit.engine.queue import MemoryQueue
from contrastkit.engine.tiled import resolve_tile, tiled_clip, tiled_contrast
from contrastkit.losses._inputs import (
    optional_labels,
    optional_negatives,
    prepared,
    stack_views,
    working_dtype,
)
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.registry import register_loss


def _multi_view(
    views,
    *,
    owner,
    labels=None,
    negatives=None,
    temperature=0.1,
    similarity="cosine",
    reduction="mean",
    hardest=None,
    stop_grad=False,
    tile_size=None,
    distributed=False,
    **weighting,
):
    """Shared body of the multi-view presets. ``hardest(M) -> k`` keeps only the k most
    similar of each anchor's M negatives (Wang & Liu's hard contrastive loss);
    ``stop_grad`` detaches the candidate side, so gradients reach only the anchor rows;
    ``tile_size`` selects the tiled engine (see ``engine.tiled.resolve_tile``);
    ``distributed`` contrasts this rank's rows with all ranks' (``engine.distributed``)."""
    flat, n, v = stack_views(views, owner, min_views=1 if labels is not None else 2)
    labels = optional_labels(labels, n, owner)
    negatives = optional_negatives(negatives, flat, owner)
    dtype = working_dtype(flat, negatives)
    anchors = prepared(flat, similarity, owner, "embeddings", dtype)
    rank, size = world() if distributed else (0, 1)
    if labels is None:  # sample ids, unique across ranks
        keys = instance_ids(n, v, flat.device) * size + rank
    else:
        keys = labels.repeat(v)
    candidates, offset = gather_with_grad(anchors) if size > 1 else (anchors, 0)
    candidate_keys = gather_no_grad(keys) if size > 1 else keys
    extra = None
    if negatives is not None:
        extra = prepared(negatives, similarity, owner, "negatives", dtype)
        candidates = torch.cat([candidates, extra], 0)
    if stop_grad:
        candidates = candidates.detach()
    candidate_keys = _with_negative_keys(candidate_keys, extra)
    scale = as_scale(temperature, owner)
    unsupported = _untileable(similarity, hardest, weighting)
    tile = resolve_tile(
        tile_size, anchors.shape[0], candidates.shape[0], not unsupported, owner, unsupported
    )
    if tile is not None:
        per_anchor = tiled_contrast(
            anchors,
            candidates,
            keys,
            candidate_keys,
            scale=scale,
            self_offset=offset,
            decoupled=weighting.get("negative_weighting") == "decoupled",
            tile_size=tile,
            owner=owner,
        )
        return reduce(per_anchor, reduction, owner)
    pairs = from_keys(keys, candidate_keys, self_offset=offset)
    s = None
    if hardest is not None:
        s = pairwise(anchors, candidates, similarity)
        pairs = keep_hardest_negatives(pairs, s, hardest(int(pairs.negative.sum(1).min())))
    return contrast(
        anchors,
        candidates,
        pairs,
        s=s,
        scale=scale,
        similarity=similarity,
        reduction=reduction,
        owner=owner,
        all_reduce=all_reduce_no_grad if size > 1 else None,
        **weighting,
    )


def _untileable(similarity, hardest, weighting) -> str:
    """Why the tiled engine cannot compute this configuration ('' when it can)."""
    if similarity == "neg_sq_l2":
        return "similarity='neg_sq_l2' is not tiled"
    if hardest is not None:
        return "hard-negative selection needs each anchor's full row"
    if weighting.get("negative_weighting", "uniform") not in ("uniform", "decoupled"):
        return f"negative_weighting={weighting['negative_weighting']!r} is not tiled"
    if weighting.get("positive_weighting", "uniform") != "uniform":
        return f"positive_weighting={weighting['positive_weighting']!r} is not tiled"
    return ""


def _check_hardest_negatives(k, owner: str):
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        _fail(
            owner,
            "hardest_negatives",
            f"is {k!r}",
            "it must be None (all negatives) or an int >= 1",
            "pass e.g. hardest_negatives=10",
        )
    return k


def _with_negative_keys(keys: torch.Tensor, extra) -> torch.Tensor:
    """Candidate keys: the anchors' keys, then a key no anchor has for extra negatives."""
    if extra is None:
        return keys
    unused = int(keys.min()) - 1
    return torch.cat([keys, keys.new_full((extra.shape[0],), unused)])


def info_nce(
    *views,
    labels=None,
    negatives=None,
    temperature=0.1,
    similarity="cosine",
    negative_weighting="uniform",
    positive_weighting="uniform",
    beta=0.0,
    tau_plus=0.0,
    sigma=0.5,
    reduction="mean",
    tile_size=None,
    distributed=False,
    hardest_negatives=None,
    stop_grad=False,
):
    """NT-Xent / InfoNCE over V >= 2 views (Chen et al. 2020, SimCLR; Oord et al. 2018).

    For anchor i with positives P(i) (its other views) and valid candidates A(i) (every
    other row, plus ``negatives``)::

        l_i = -1/|P(i)| sum_{p in P(i)} log( exp(s_ip / t) / sum_{a in A(i)} exp(s_ia / t) )

    With two views this is SimCLR's 2N x (2N - 1) NT-Xent averaged over the 2N anchors.
    The weighting arguments select the family members (see ``core.weighting``); the named
    presets below fix them as their papers do.

    ``tile_size`` (here and in the other InfoNCE-family presets): ``None`` computes the
    loss in ``1024 x 1024`` blocks with O(N) memory once the logit matrix would exceed
    2048^2 entries (uniform and decoupled weighting; ``engine.tiled``), an int forces that
    tile, 0 forces the plain path. Both give the same value and gradient.

    ``distributed=True`` (here and in the other InfoNCE-family presets), under an
    initialised ``torch.distributed`` process group: this rank's rows are the anchors and
    every rank's rows (gathered with gradient, ``engine.distributed``) the candidates, so
    negatives are global; ``negatives=`` stay local to the rank; the reduction runs over
    this rank's anchors. With equal per-rank batches, DDP's gradient average equals the
    single-process gradient on the concatenated batch. Without a process group it is a
    no-op.

    Shapes: ``views`` is one ``(N, V, D)`` tensor or V tensors ``(N, D)``; ``labels``
    ``(N,)`` integers turn it into SupCon; ``negatives`` ``(M, D)`` are extra negatives for
    every anchor. Returns a 0-d tensor, or ``(V * N,)`` per-anchor values (view-major) with
    ``reduction="none"``. Half-precision inputs are computed and returned in float32.

    ``hardest_negatives=k`` keeps in each anchor's denominator its positives and only its
    k most similar negatives (chosen on detached similarities; all of them when fewer);
    ``stop_grad=True`` detaches every candidate (positives and negatives), so only the
    anchor side of each similarity receives a gradient. Together they are the "fair
    baseline" of GroCo (Shvetsova et al., ICCV 2023; ninatu/learning_by_sorting
    ``losses/nt_xent.py`` with ``configs/baselines/simclr_2views_top10neg_stop_grad.yaml``:
    ``temperature=0.5, topk_neg=10, stop_grad=True``), which there detaches the whole
    candidate matrix ``z_all`` and takes the top-k of the 2N - 2 negatives of both views.
    """
    _check_hardest_negatives(hardest_negatives, "info_nce")
    return _multi_view(
        views,
        owner="info_nce",
        labels=labels,
        negatives=negatives,
        temperature=temperature,
        similarity=similarity,
        reduction=reduction,
        negative_weighting=negative_weighting,
        positive_weighting=positive_weighting,
        beta=beta,
        tau_plus=tau_plus,
        sigma=sigma,
        hardest=None if hardest_negatives is None else (lambda _m: hardest_negatives),
        stop_grad=bool(stop_grad),
        tile_size=tile_size,
        distributed=distributed,
    )


nt_xent = info_nce


def masked_info_nce(
    anchors,
    candidates=None,
    *,
    positive_mask=None,
    index_pairs=None,
    valid_mask=None,
    temperature=0.1,
    similarity="cosine",
    negative_weighting="uniform",
    positive_weighting="uniform",
    beta=0.0,
    tau_plus=0.0,
    sigma=0.5,
    reduction="mean",
):
    """The InfoNCE core with an explicit pairing, for structures no preset covers (graph
    edges, user-item interactions, mined pairs).

    ``anchors`` (N, D) are contrasted with ``candidates`` (M, D) (default: the anchors
    themselves, with each anchor excluded from its own row). Positives come from
    ``positive_mask`` (N, M) bool or ``index_pairs`` (P, 2) of (anchor, candidate); a
    floating ``positive_mask`` in [0, 1] gives graded positives (``core.pairs.from_scores``:
    each anchor's terms averaged with those weights, SupCon with a soft mask);
    ``valid_mask`` (N, M) limits which candidates may enter a denominator at all.
    Returns the mean, sum or per-anchor ``(N,)`` loss; weighting as in :func:`info_nce`.
    """
    owner = "masked_info_nce"
    check_embeddings(anchors, owner, "anchors")
    same = candidates is None
    candidates = anchors if same else check_embeddings(candidates, owner, "candidates")
    check_feature_dim(anchors, candidates, owner, ("anchors", "candidates"))
    n, m = anchors.shape[0], candidates.shape[0]
    if (positive_mask is None) == (index_pairs is None):
        _fail(
            owner,
            "positive_mask",
            "and `index_pairs` are both given or both missing",
            "exactly one of them defines the positives",
            "pass positive_mask=(N, M) bool or index_pairs=(P, 2)",
        )
    if index_pairs is not None:
        positive_mask = from_index_pairs(
            check_tensor(index_pairs, owner, "index_pairs"), n, m
        ).positive
    check_tensor(positive_mask, owner, "positive_mask")
    for name, mask in (("positive_mask", positive_mask), ("valid_mask", valid_mask)):
        if mask is not None and tuple(mask.shape) != (n, m):
            _fail(
                owner,
                name,
                f"has shape {tuple(mask.shape)}",
                f"it must be (N, M) = ({n}, {m})",
                "build it over anchors x candidates",
            )
    if valid_mask is None and same:
        valid_mask = not_self(n, anchors.device)
    valid = None if valid_mask is None else valid_mask.bool()
    if torch.is_floating_point(positive_mask):  # graded positives, weights in [0, 1]
        check_unit_scores(positive_mask, (n, m), owner, "positive_mask")
        pairs = from_scores(positive_mask, valid)
    else:
        pairs = from_mask(positive_mask.bool(), valid)
    dtype = working_dtype(anchors, candidates)
    a = prepared(anchors, similarity, owner, "anchors", dtype)
    c = a if same else prepared(candidates, similarity, owner, "candidates", dtype)
    return contrast(
        a,
        c,
        pairs,
        scale=as_scale(temperature, owner),
        similarity=similarity,
        negative_weighting=negative_weighting,
        positive_weighting=positive_weighting,
        beta=beta,
        tau_plus=tau_plus,
        sigma=sigma,
        reduction=reduction,
        owner=owner,
        pairs_arg="positive_mask" if index_pairs is None else "index_pairs",
    )


def sup_con(
    *views,
    labels,
    negatives=None,
    temperature=0.1,
    similarity="cosine",
    reduction="mean",
    tile_size=None,
    distributed=False,
):
    """Supervised contrastive loss, the "L_out" form (Khosla et al., NeurIPS 2020, eq. 2).

    Follows the paper and HobbitLong/SupContrast ``losses.py``: positives are all other
    rows (views included) of the same class, the denominator runs over every other row,
    and each anchor averages over its positives. The official code also multiplies by
    ``temperature / base_temperature``, which is 1 at its defaults (0.07 / 0.07); we
    leave that factor out. One view (N, D) is allowed: positives are then other samples.
    Raises ``ValueError`` naming the anchors whose class has no other member.
    """
    return _multi_view(
        views,
        owner="sup_con",
        labels=labels,
        negatives=negatives,
        temperature=temperature,
        similarity=similarity,
        reduction=reduction,
        tile_size=tile_size,
        distributed=distributed,
    )


def dcl(
    *views,
    negatives=None,
    temperature=0.1,
    similarity="cosine",
    reduction="mean",
    tile_size=None,
    distributed=False,
):
    """Decoupled contrastive loss (Yeh et al., ECCV 2022, eq. 6): the positive pair is
    removed from the denominator, ``l_i = -s_ip/t + log sum_{n != i, p} exp(s_in/t)``.

    No official code exists; this matches lightly ``lightly/loss/dcl_loss.py`` (both
    directions averaged over the 2N anchors; negatives from both views).
    """
    return _multi_view(
        views,
        owner="dcl",
        negatives=negatives,
        temperature=temperature,
        similarity=similarity,
        reduction=reduction,
        negative_weighting="decoupled",
        tile_size=tile_size,
        distributed=distributed,
    )


def dclw(
    *views,
    negatives=None,
    temperature=0.1,
    sigma=0.5,
    similarity="cosine",
    reduction="mean",
    distributed=False,
):
    """Weighted DCL (Yeh et al., ECCV 2022, eq. 7): DCL with the positive term weighted by
    ``w_i = 2 - exp(s_ii/sigma) / mean_j exp(s_jj/sigma)`` (von Mises-Fisher weights).

    Matches lightly's ``negative_mises_fisher_weights`` (``2 - B * softmax``, weights
    detached). The unofficial raminnakhli/Decoupled-Contrastive-Learning ``loss/dcl.py``
    omits the factor B, so its weights are ~2 for every sample: we follow the paper.
    """
    return _multi_view(
        views,
        owner="dclw",
        negatives=negatives,
        temperature=temperature,
        similarity=similarity,
        reduction=reduction,
        negative_weighting="decoupled",
        positive_weighting="vmf",
        sigma=check_positive_number(sigma, "dclw", "sigma", "pass e.g. sigma=0.5"),
        distributed=distributed,
    )


def hcl(
    *views,
    negatives=None,
    temperature=0.5,
    beta=1.0,
    tau_plus=0.1,
    similarity="cosine",
    reduction="mean",
    distributed=False,
):
    """Hard-negative contrastive loss (Robinson et al., ICLR 2021, eq. 6; joshr17/HCL
    ``image/main.py``): negatives importance-weighted by ``exp(beta * s / t)`` and debiased
    with class prior ``tau_plus``; the negative term is clamped at ``M exp(-1/t)``."""
    return _multi_view(
        views,
        owner="hcl",
        negatives=negatives,
        temperature=temperature,
        similarity=similarity,
        reduction=reduction,
        negative_weighting="debiased",
        beta=check_in_range(beta, "hcl", "beta", 0.0, 100.0, "pass e.g. beta=1.0"),
        tau_plus=check_in_range(tau_plus, "hcl", "tau_plus", 0.0, 0.999, "pass e.g. 0.1"),
        distributed=distributed,
    )


def debiased_info_nce(
    *views,
    negatives=None,
    temperature=0.5,
    tau_plus=0.1,
    similarity="cosine",
    reduction="mean",
    distributed=False,
):
    """Debiased contrastive loss (Chuang et al., NeurIPS 2020, eq. 5; chingyaoc/DCL
    ``main.py``): HCL with ``beta = 0``, correcting the negatives for same-class samples
    with class prior ``tau_plus``."""
    return _multi_view(
        views,
        owner="debiased_info_nce",
        negatives=negatives,
        temperature=temperature,
        similarity=similarity,
        reduction=reduction,
        negative_weighting="debiased",
        tau_plus=check_in_range(
            tau_plus, "debiased_info_nce", "tau_plus", 0.0, 0.999, "pass e.g. 0.1"
        ),
        distributed=distributed,
    )


def _two_tower(
    query,
    key,
    *,
    owner,
    negatives,
    temperature,
    similarity,
    symmetric,
    reduction,
    in_batch_negatives=True,
    tile_size=None,
    distributed=False,
):
    check_embeddings(query, owner, "query")
    check_embeddings(key, owner, "key")
    check_same_shape(query, key, owner, ("query", "key"))
    negatives = optional_negatives(negatives, query, owner)
    if negatives is None:
        check_batch_size(query.shape[0], owner, "query")
    dtype = working_dtype(query, key, negatives)
    q = prepared(query, similarity, owner, "query", dtype)
    k = prepared(key, similarity, owner, "key", dtype)
    rank, size = world() if distributed else (0, 1)
    ids = torch.arange(q.shape[0], device=q.device) * size + rank  # unique across ranks
    all_ids = gather_no_grad(ids) if size > 1 else ids
    all_k = gather_with_grad(k)[0] if size > 1 else k
    all_q = gather_with_grad(q)[0] if size > 1 and symmetric else q
    extra = (
        None if negatives is None else prepared(negatives, similarity, owner, "negatives", dtype)
    )
    candidates = all_k if extra is None else torch.cat([all_k, extra], 0)
    candidate_keys = _with_negative_keys(all_ids, extra)
    batch_columns = 0 if in_batch_negatives else all_k.shape[0]  # usable as positives only
    scale = as_scale(temperature, owner)
    unsupported = _untileable(similarity, None, {})
    tile = resolve_tile(
        tile_size, q.shape[0], candidates.shape[0], not unsupported, owner, unsupported
    )
    if tile is not None and symmetric and extra is None and size == 1:
        per_pair = tiled_clip(q, k, ids, scale=scale, tile_size=tile, owner=owner)
        return reduce(per_pair, reduction, owner)
    if tile is not None:
        tiled = dict(scale=scale, self_offset=None, tile_size=tile, owner=owner)
        per_pair = tiled_contrast(
            q, candidates, ids, candidate_keys, positives_only=batch_columns, **tiled
        )
        if symmetric:
            per_pair = 0.5 * (per_pair + tiled_contrast(k, all_q, ids, all_ids, **tiled))
        return reduce(per_pair, reduction, owner)
    common = dict(scale=scale, similarity=similarity, reduction="none", owner=owner)
    pairs = from_keys(ids, candidate_keys)
    if batch_columns:
        in_batch = torch.arange(candidates.shape[0], device=q.device) < batch_columns
        pairs = Pairs(pairs.positive, pairs.positive | ~in_batch[None, :])
    s = pairwise(q, candidates, similarity)
    per_pair = contrast(q, candidates, pairs, s=s, **common)
    if symmetric:
        # key -> query direction; extra negatives are keys, so they take no part here.
        # On one process the query->key product serves this direction too.
        s_back = s[:, : q.shape[0]].T if size == 1 else None
        back = contrast(k, all_q, from_keys(ids, all_ids), s=s_back, **common)
        per_pair = 0.5 * (per_pair + back)
    return reduce(per_pair, reduction, owner)


def clip(
    query,
    key,
    *,
    negatives=None,
    temperature=0.07,
    symmetric=True,
    similarity="cosine",
    reduction="mean",
    tile_size=None,
    distributed=False,
):
    """CLIP's symmetric two-tower InfoNCE (Radford et al., ICML 2021, Fig. 3 pseudocode;
    open_clip ``src/open_clip/loss.py`` ``ClipLoss``): the mean of query->key and
    key->query cross-entropies over ``logits = q k^T / t``. ``temperature`` may be a 0-d
    tensor (learnable). ``reduction="none"`` gives each pair's two-direction mean."""
    return _two_tower(
        query,
        key,
        owner="clip",
        negatives=negatives,
        temperature=temperature,
        similarity=similarity,
        symmetric=symmetric,
        reduction=reduction,
        tile_size=tile_size,
        distributed=distributed,
    )


def moco(
    query,
    key,
    *,
    negatives,
    temperature=0.07,
    in_batch_negatives=None,
    similarity="cosine",
    reduction="mean",
    tile_size=None,
    distributed=False,
):
    """MoCo's one-directional InfoNCE against a queue (He et al., CVPR 2020, Algorithm 1;
    facebookresearch/moco ``moco/builder.py``): ``logits = [q.k+, q.queue] / t``,
    cross-entropy at index 0, so only the queue supplies negatives.

    ``in_batch_negatives=True`` also contrasts each query with the other keys of the batch
    (MoCo v3's in-batch loss, without its ``2 t`` factor). The default ``None`` follows
    Algorithm 1 when ``negatives`` is given and falls back to in-batch negatives when it is
    ``None`` (an empty queue), which is the only case with nothing else to contrast.
    """
    if in_batch_negatives is None:
        in_batch_negatives = negatives is None
    if negatives is None and not in_batch_negatives:
        _fail(
            "moco",
            "negatives",
            "is None and `in_batch_negatives` is False",
            "the loss then has no negatives at all",
            "pass a queue as negatives=, or in_batch_negatives=True",
        )
    return _two_tower(
        query,
        key,
        owner="moco",
        negatives=negatives,
        temperature=temperature,
        similarity=similarity,
        symmetric=False,
        reduction=reduction,
        in_batch_negatives=in_batch_negatives,
        tile_size=tile_size,
        distributed=distributed,
    )


# ----------------------------------------------------------------------------- modules


@register_loss(
    "infonce",
    summary="NT-Xent / InfoNCE over V >= 2 views",
    paper="Chen et al. 2020, A Simple Framework for Contrastive Learning (SimCLR)",
)
class InfoNCE(ContrastiveLoss):
    """Module form of :func:`info_nce` (NT-Xent). See that function for the formula;
    ``InfoNCE(temperature=0.5, hardest_negatives=10, stop_grad=True)`` is GroCo's fair
    baseline (NT-Xent with the top-10 negatives and a stop-gradient on the candidates)."""

    function = staticmethod(info_nce)

    def __init__(
        self,
        temperature=0.1,
        similarity="cosine",
        learnable=False,
        reduction="mean",
        tile_size=None,
        distributed=False,
        hardest_negatives=None,
        stop_grad=False,
    ):
        super().__init__()
        self._init_contrastive(temperature, reduction, similarity, learnable)
        self.distributed = bool(distributed)
        self.tile_size = tile_size
        self.hardest_negatives = _check_hardest_negatives(hardest_negatives, "InfoNCE")
        self.stop_grad = bool(stop_grad)


@register_loss(
    "supcon",
    summary="Supervised contrastive loss (L_out): same-class samples are positives",
    paper="Khosla et al. 2020, Supervised Contrastive Learning",
)
class SupCon(ContrastiveLoss):
    """Module form of :func:`sup_con`."""

    function = staticmethod(sup_con)

    inputs = "labels"

    def __init__(
        self,
        temperature=0.1,
        similarity="cosine",
        learnable=False,
        reduction="mean",
        tile_size=None,
        distributed=False,
    ):
        super().__init__()
        self._init_contrastive(temperature, reduction, similarity, learnable)
        self.distributed = bool(distributed)
        self.tile_size = tile_size


@register_loss(
    "dcl",
    summary="Decoupled contrastive loss: positive removed from the denominator",
    paper="Yeh et al. 2022, Decoupled Contrastive Learning",
)
class DCL(ContrastiveLoss):
    """Module form of :func:`dcl`."""

    function = staticmethod(dcl)

    def __init__(
        self,
        temperature=0.1,
        similarity="cosine",
        reduction="mean",
        tile_size=None,
        distributed=False,
    ):
        super().__init__()
        self._init_contrastive(temperature, reduction, similarity)
        self.distributed = bool(distributed)
        self.tile_size = tile_size


@register_loss(
    "dclw",
    summary="Weighted DCL: von Mises-Fisher weights on the positive term",
    paper="Yeh et al. 2022, Decoupled Contrastive Learning",
)
class DCLW(ContrastiveLoss):
    """Module form of :func:`dclw`."""

    function = staticmethod(dclw)

    def __init__(
        self, temperature=0.1, sigma=0.5, similarity="cosine", reduction="mean", distributed=False
    ):
        super().__init__()
        self._init_contrastive(temperature, reduction, similarity)
        self.distributed = bool(distributed)
        self.sigma = check_positive_number(sigma, "DCLW", "sigma", "pass e.g. sigma=0.5")


@register_loss(
    "hcl",
    summary="Hard-negative weighted (beta) and debiased (tau_plus) InfoNCE",
    paper="Robinson et al. 2021, Contrastive Learning with Hard Negative Samples",
)
class HCL(ContrastiveLoss):
    """Module form of :func:`hcl`."""

    function = staticmethod(hcl)

    def __init__(
        self,
        temperature=0.5,
        beta=1.0,
        tau_plus=0.1,
        similarity="cosine",
        reduction="mean",
        distributed=False,
    ):
        super().__init__()
        self._init_contrastive(temperature, reduction, similarity)
        self.distributed = bool(distributed)
        self.beta = check_in_range(beta, "HCL", "beta", 0.0, 100.0, "pass e.g. beta=1.0")
        self.tau_plus = check_in_range(tau_plus, "HCL", "tau_plus", 0.0, 0.999, "pass e.g. 0.1")


@register_loss(
    "debiasedinfonce",
    summary="Debiased contrastive loss: negatives corrected with class prior tau_plus",
    paper="Chuang et al. 2020, Debiased Contrastive Learning",
)
class DebiasedInfoNCE(ContrastiveLoss):
    """Module form of :func:`debiased_info_nce`."""

    function = staticmethod(debiased_info_nce)

    def __init__(
        self,
        temperature=0.5,
        tau_plus=0.1,
        similarity="cosine",
        reduction="mean",
        distributed=False,
    ):
        super().__init__()
        self._init_contrastive(temperature, reduction, similarity)
        self.distributed = bool(distributed)
        self.tau_plus = check_in_range(
            tau_plus, "DebiasedInfoNCE", "tau_plus", 0.0, 0.999, "pass e.g. tau_plus=0.1"
        )


@register_loss(
    "clip",
    summary="Symmetric two-tower InfoNCE with a learnable temperature",
    paper="Radford et al. 2021, Learning Transferable Visual Models From Natural Language Supervision",
)
class CLIP(ContrastiveLoss):
    """Module form of :func:`clip`; the temperature is learnable by default (starts at
    0.07, ``1 / temperature`` clamped at 100 as in CLIP)."""

    function = staticmethod(clip)

    inputs = "two_tower"

    def __init__(
        self,
        temperature=0.07,
        learnable=True,
        symmetric=True,
        similarity="cosine",
        reduction="mean",
        tile_size=None,
        distributed=False,
    ):
        super().__init__()
        self._init_contrastive(temperature, reduction, similarity, learnable)
        self.distributed = bool(distributed)
        self.symmetric = bool(symmetric)
        self.tile_size = tile_size


@register_loss(
    "moco",
    summary="One-directional InfoNCE of queries against keys and a queue of past keys",
    paper="He et al. 2020, Momentum Contrast for Unsupervised Visual Representation Learning",
)
class MoCo(ContrastiveLoss):
    """Module form of :func:`moco` that can own its queue.

    With ``queue_size > 0`` and no ``negatives=`` passed, the queue's contents are the
    negatives and the (detached) keys are enqueued after the loss is computed, as in
    MoCo's Algorithm 1 (while the queue is still empty, the other keys of the batch serve
    as negatives). The queue is a buffer, so it is saved in ``state_dict``. The paper's
    K = 65536 suits ImageNet; the default 4096 stays below the size of small data sets,
    whose queue would otherwise hold stale copies of the positive.
    """

    function = staticmethod(moco)

    inputs = "two_tower"

    def __init__(
        self,
        temperature=0.07,
        queue_size=4096,
        in_batch_negatives=None,
        similarity="cosine",
        reduction="mean",
        tile_size=None,
        distributed=False,
    ):
        super().__init__()
        self.in_batch_negatives = in_batch_negatives
        self.tile_size = tile_size
        self._init_contrastive(temperature, reduction, similarity)
        self.distributed = bool(distributed)
        self.queue_size = int(queue_size)
        self.queue = MemoryQueue(self.queue_size) if self.queue_size > 0 else None

    def forward(self, query, key, negatives=None):
        own_queue = negatives is None and self.queue is not None
        if own_queue:
            negatives = self.queue.get(like=key)
        loss = super().forward(query, key, negatives=negatives)
        if own_queue and self.training:
            self.queue.push(key)
        return loss
