"""SupReMix: supervised contrastive regression with mixed-up hard pairs.

Wu, Dong, Chen, Zhou & Zhou, "Mixup Your Own Pairs" (arXiv:2309.16633; v4 retitled
"SupReMix: Supervised Contrastive Learning for Medical Imaging Regression with Mixup").

Every mixture is a convex combination of (detached) embeddings, so its similarity to an
anchor is the same combination of two entries of the anchors x rows Gram matrix. The
loss never builds a mixture vector: the up to O((VN)^3) mixture logits are scalars read
from one (VN) x (VN) matrix product, and only the valid mix-positive triples are
enumerated, so memory is O((VN)^2 + P) scalars for P triples (P <= (VN)^3), never
O((VN)^3 D) as in the released code.
"""

from __future__ import annotations

import torch

from contrastkit.core.logits import masked_logsumexp
from contrastkit.core.reduction import reduce
from contrastkit.core.temperature import as_scale
from contrastkit.core.validation import (
    _fail,
    check_choice,
    check_positive_number,
    check_tensor,
)
from contrastkit.losses._inputs import prepared, stack_views, working_dtype
from contrastkit.losses.base import ContrastiveLoss, SeededDraws
from contrastkit.registry import register_loss

__all__ = ["SupReMix", "supremix", "supremix_mix_ratios"]

DISTANCES = ("l1", "l2", "none")
VARIANTS = ("paper", "official_code")
SIMILARITIES = ("cosine", "dot")  # mixtures are linear in the embeddings under both


def supremix_mix_ratios(
    rows: int,
    mix_beta=(2.0, 8.0),
    *,
    generator: torch.Generator | None = None,
    device=None,
    dtype=torch.float64,
) -> torch.Tensor:
    """The mix-negative ratios ``lam[i, k] ~ Beta(a, b)``, one per (anchor row, row), as a
    ``(rows, rows)`` tensor; :func:`supremix` draws exactly this when given the same
    ``generator`` (pass the result as ``mix_ratios=`` to reuse the draws).

    ``lam`` weighs the anchor: the mixture is ``lam * z_i + (1 - lam) * z_k``. torch's
    Beta sampler takes no generator, so one seed is drawn from ``generator`` and the
    sampler runs under ``torch.random.fork_rng`` with it (the global RNG is untouched).
    Without a generator the global RNG is used.
    """
    owner = "supremix_mix_ratios"
    a, b = _check_beta(mix_beta, owner)
    if generator is not None and not isinstance(generator, torch.Generator):
        _fail(
            owner,
            "generator",
            f"is a {type(generator).__name__}",
            "it must be a torch.Generator or None",
            "pass generator=torch.Generator().manual_seed(0)",
            TypeError,
        )
    beta = torch.distributions.Beta(
        torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    )
    if generator is None:
        lam = beta.sample((rows, rows))
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            lam = beta.sample((rows, rows))
    return lam.to(device=device, dtype=dtype)


def supremix(
    *views,
    targets=None,
    temperature=0.1,
    window=5.0,
    mix_beta=(2.0, 8.0),
    distance="l1",
    mix_negatives=True,
    mix_positives=True,
    renormalize=False,
    variant="paper",
    similarity="cosine",
    reduction="mean",
    mix_ratios=None,
    generator=None,
):
    """SupReMix (Wu et al., arXiv:2309.16633, Sec. 3): SupCon over exact-target positives,
    plus mixed-up hard negatives and hard positives, with distance-magnifying weights on
    the denominator.

    The V views of N samples are stacked view-major into R = V * N rows ``z_r`` (unit
    vectors for cosine) with targets ``y_r`` (``targets`` repeated). For anchor row i:

    * real candidates: every row r != i; positive when ``y_r == y_i`` (its other views
      and any sample with the very same target);
    * mix-negatives (anchor-inclusive mixtures), one per row k with ``y_k != y_i``:
      ``m = lam z_i + (1 - lam) z_k``, ``lam ~ Beta(*mix_beta)``, target
      ``lam y_i + (1 - lam) y_k``;
    * mix-positives (anchor-exclusive mixtures), one per ordered pair (j, k) with
      ``y_j < y_i < y_k``, ``y_i - y_j < window`` and ``y_k - y_i < window``:
      ``m = lam z_j + (1 - lam) z_k`` with ``lam = (y_k - y_i) / (y_k - y_j)``, so that the
      mixture's target is exactly ``y_i``.

    Mixtures are detached: only the anchor receives gradient through an anchor-mixture
    similarity. With ``l = s / temperature``, positives P(i) (real and mix-positive) and
    every candidate A(i) (real, mix-negative, mix-positive)::

        L_i = -1/|P(i)| sum_{p in P(i)} [ l_ip - log sum_{a in A(i)} w_ia exp(l_ia) ]

    where ``w_ia = |y_i - y_a| + 1`` (``distance="l1"``), ``(y_i - y_a)^2 + 1`` (``"l2"``)
    or 1 (``"none"``), ``y_a`` being a mixture's mixed target. Every positive has
    ``y_a = y_i`` and so ``w = 1``; the weights enter as ``log w`` added to the logits
    inside one log-sum-exp.

    Sources, and what could not be checked. The arXiv HTML/PDF method section (the
    paper's equations, its threshold and Beta parameters) could not be read from this
    environment: only the abstract, the OpenReview reviews (which confirm the mix-positive
    ratio making the mixed target equal the anchor's) and code were reachable. The formula
    above follows the official repository yilei-wu/SupReMix README ("Code Preview":
    ``mixing_func`` and ``calculate_weight``, the distance-magnifying weight
    ``|y_i - y_a| + 1``) and the loss file ``supremix_loss.py`` (``SupConLoss_v2``) with
    ``utils.py`` (``calculate_alpha_vectorized``) and the IMDB-WIKI/AgeDB training scripts,
    found in an index whose host repository could not be identified (they match the README
    line for line, but their provenance is uncertain). Choices made there:

    * ``mix_beta=(2, 8)``: what the code runs with its default ``--beta 0`` (its help text
      says 0 means Beta(5, 5), the code does Beta(2, 8)); lam weighs the anchor, so a
      mix-negative is on average 80% the other sample.
    * ``window``: the code's ``--n`` ("window size epsilon for mix-pos"), 5 years in the
      age scripts, 1.0 for STS-B; it is in target units. ``None`` means no window.
    * the temperature default 0.1 is the STS-B script's (the age scripts use 0.3).
    * mixtures are not renormalised in the code; ``renormalize=True`` projects them back
      onto the sphere (their norm also comes from the Gram matrix).
    * the code takes plain dot products of the model's outputs (its ``feature_sim`` is
      named "cosine" but does not normalise; the model is expected to output unit vectors,
      not verified); ``similarity="cosine"`` normalises here, ``"dot"`` does not.
    * mixtures are detached in the code (built from ``feature.clone().cpu()`` and
      ``.detach()``-ed); we keep that, and could not check what the paper says.

    ``variant="official_code"`` reproduces two departures of ``SupConLoss_v2``: (1) the
    mean over positives divides by ``|P(i)| + 1`` (one version of the file; another divides
    by ``|P(i)|``, as SupCon and ``"paper"`` do); (2) the real and the mixture logits are
    shifted by separate detached row maxima before being concatenated (the max over the
    real row, self included, and the max over the mixture row, whose excluded slots are
    zero vectors in the README's uncompressed layout, so the max includes 0). That scales
    every mixture term by ``exp(max_real - max_mix) >= 1`` and so changes value and
    gradient. Not reproduced: ``compress_mixtures`` (which re-sorts the mixture labels
    independently of the mixtures) and the ``L2_inv`` weight of mixtures,
    ``(y_i - y_a + 1)^2 + 1``. The code's ``temperature / base_temperature`` factor is 1 in
    its scripts and is left out. ``mix_negatives`` / ``mix_positives`` are the code's
    ``mix_neg`` / ``mix_pos`` ablations; with both off and ``distance="none"`` the loss is
    SupCon over exact-target classes.

    Randomness: the mix-negative ratios are ``mix_ratios`` (an ``(R, R)`` tensor, entry
    ``[i, k]`` for anchor row i and row k) when given, else drawn by
    :func:`supremix_mix_ratios` from ``generator`` (else the global RNG).

    Shapes: ``views`` is one ``(N, V, D)`` tensor or V >= 2 tensors ``(N, D)``; ``targets``
    is ``(N,)`` real. Returns a 0-d tensor, or ``(V * N,)`` per-anchor values (view-major)
    with ``reduction="none"``. Memory is O(R^2 + P) scalars (R = V * N rows, P <= R^3
    valid mix-positive triples), never O(R^3 D); half inputs are computed and returned in
    float32.
    """
    owner = "supremix"
    check_choice(variant, owner, "variant", VARIANTS)
    check_choice(distance, owner, "distance", DISTANCES)
    check_choice(similarity, owner, "similarity", SIMILARITIES)
    window = _check_window(window, owner)
    flat, n, v = stack_views(views, owner, min_views=2)
    y = _check_targets(targets, n, owner).to(flat.device).repeat(v)  # float64, (R,)
    dtype = working_dtype(flat)
    f = prepared(flat, similarity, owner, "embeddings", dtype)
    scale = as_scale(temperature, owner)
    rows = f.shape[0]
    if mix_negatives:
        if mix_ratios is None:
            mix_ratios = supremix_mix_ratios(
                rows, mix_beta, generator=generator, device=f.device, dtype=torch.float64
            )
        else:
            mix_ratios = _check_mix_ratios(mix_ratios, rows, owner).to(f.device, torch.float64)

    eye = torch.eye(rows, dtype=torch.bool, device=f.device)
    same = y[:, None] == y[None, :]
    s_real = f @ f.T  # gradient through both sides
    g = f.detach()
    s_mix = f @ g.T  # anchor live, the mixture's ingredients detached
    gram = g @ g.T if renormalize else None  # mixture norms

    # Dense blocks (R, R): real candidates, then mix-negatives.
    z_real = s_real * scale
    logits = [z_real + _log_weight(y[:, None] - y[None, :], distance).to(dtype)]
    valid = [~eye]
    pos_real = same & ~eye
    zero = torch.zeros((), dtype=dtype, device=f.device)
    pull = torch.where(pos_real, z_real, zero).sum(1)
    count = pos_real.sum(1)
    z_neg = neg_valid = None
    if mix_negatives:
        lam = mix_ratios  # (R, R): anchor row i, other row k
        s = lam.to(dtype) * s_mix.diagonal()[:, None] + (1 - lam).to(dtype) * s_mix
        if renormalize:
            s = s / _mixture_norm(lam, gram.diagonal()[:, None], gram.diagonal()[None, :], gram)
        z_neg = s * scale
        mixed_target = lam * y[:, None] + (1 - lam) * y[None, :]
        neg_log_w = _log_weight(y[:, None] - mixed_target, distance).to(dtype)
        neg_valid = ~same

    # Mix-positives, sparse: the valid (i, j, k) triples only (a few per anchor).
    z_pos = ii = None
    if mix_positives:
        gap = y[:, None] - y[None, :]  # y_i - y_j
        below = gap > 0  # y_j < y_i
        above = gap < 0  # y_k > y_i
        if window is not None:
            below = below & (gap < window)
            above = above & (-gap < window)
        ii, jj, kk = _triples(below, above)
        lam_p = (y[kk] - y[ii]) / (y[kk] - y[jj])  # float64; the mixed target is y_i
        s = lam_p.to(dtype) * s_mix[ii, jj] + (1 - lam_p).to(dtype) * s_mix[ii, kk]
        if renormalize:
            dg = gram.diagonal()
            s = s / _mixture_norm(lam_p, dg[jj], dg[kk], gram[jj, kk])
        z_pos = s * scale  # (P,); weight 1 (log w = 0): |y_i - y_i| = 0

    if variant == "official_code" and (z_neg is not None or z_pos is not None):
        shift = _code_shift(z_real, z_neg, neg_valid, z_pos, ii)
        z_neg = None if z_neg is None else z_neg + shift[:, None]
        z_pos = None if z_pos is None else z_pos + shift[ii]
    if z_neg is not None:
        logits.append(z_neg + neg_log_w)
        valid.append(neg_valid)
    log_d = masked_logsumexp(torch.cat(logits, 1), torch.cat(valid, 1))  # finite: R - 1 >= 1
    if z_pos is not None:
        log_d = _add_segments(log_d, z_pos, ii)
        pull = pull.index_add(0, ii, z_pos)
        count = count + torch.bincount(ii, minlength=rows)

    count = count.to(dtype)
    if variant == "official_code":
        per_anchor = (count * log_d - pull) / (count + 1)
    else:
        per_anchor = log_d - pull / count
    return reduce(per_anchor, reduction, owner)


def _triples(below: torch.Tensor, above: torch.Tensor):
    """Every (i, j, k) with ``below[i, j]`` and ``above[i, k]``, sorted by i, j, k, built in
    O(R^2 + P) for P triples (``(below[:, :, None] & above[:, None, :]).nonzero()``)."""
    bi, bj = below.nonzero(as_tuple=True)
    ak = above.nonzero(as_tuple=True)[1]  # rows of above.nonzero() are sorted by i
    n_above = above.sum(1)
    start = torch.cumsum(n_above, 0) - n_above  # where anchor i's k's begin in ak
    rep = n_above[bi]
    ii = bi.repeat_interleave(rep)
    jj = bj.repeat_interleave(rep)
    first = torch.cumsum(rep, 0) - rep  # where each (i, j) group begins among the triples
    pos = torch.arange(ii.shape[0], device=ii.device) - first.repeat_interleave(rep)
    kk = ak[start[ii] + pos]
    return ii, jj, kk


def _mixture_norm(lam, sq_a, sq_b, ab):
    """``|lam a + (1 - lam) b|`` from ``|a|^2``, ``|b|^2`` and ``a.b`` (detached), in the
    dtype of the Gram matrix; ``lam`` is float64."""
    lam = lam.to(ab.dtype)
    sq = lam**2 * sq_a + (1 - lam) ** 2 * sq_b + 2 * lam * (1 - lam) * ab
    return sq.clamp_min(torch.finfo(ab.dtype).tiny).sqrt()


def _add_segments(log_d, z, index):
    """``log(exp(log_d_i) + sum_{p: index_p = i} exp(z_p))`` per row i, stably."""
    top = torch.full_like(log_d, float("-inf"))
    top = top.scatter_reduce(0, index, z.detach(), "amax")
    top = torch.maximum(top, log_d.detach())
    total = torch.exp(log_d - top).index_add(0, index, torch.exp(z - top[index]))
    return top + torch.log(total)


def _code_shift(z_real, z_neg, neg_valid, z_pos, pos_rows):
    """SupConLoss_v2's separate stabilisers, ``max_real - max_mix`` per anchor, detached,
    over the unweighted logits.

    The code's mixture row holds every (j, k) slot, the excluded ones as zero vectors
    (logit 0), so its max runs over the valid mixtures and 0."""
    top_real = z_real.detach().max(1).values
    top_mix = torch.zeros_like(top_real)
    if z_neg is not None:
        masked = z_neg.detach().masked_fill(~neg_valid, float("-inf"))
        top_mix = torch.maximum(top_mix, masked.max(1).values)
    if z_pos is not None:
        top_mix = top_mix.scatter_reduce(0, pos_rows, z_pos.detach(), "amax")
    return top_real - top_mix


def _log_weight(diff: torch.Tensor, distance: str) -> torch.Tensor:
    """log of the distance-magnifying weight for target differences ``diff`` (float64)."""
    if distance == "l1":
        return torch.log1p(diff.abs())
    if distance == "l2":
        return torch.log1p(diff * diff)
    return torch.zeros_like(diff)


def _check_targets(targets, n: int, owner: str) -> torch.Tensor:
    if targets is None:
        _fail(
            owner,
            "targets",
            "is missing",
            "SupReMix is a regression objective and needs one real target per sample",
            "call loss(z1, z2, targets=y) with y of shape (N,)",
            TypeError,
        )
    check_tensor(targets, owner, "targets")
    if targets.dtype.is_complex or targets.dtype == torch.bool:
        _fail(
            owner,
            "targets",
            f"has dtype {targets.dtype}",
            "regression targets must be real numbers",
            "pass targets.double()",
            TypeError,
        )
    if targets.dim() != 1 or targets.shape[0] != n:
        _fail(
            owner,
            "targets",
            f"has shape {tuple(targets.shape)}",
            f"it must be 1-D with one target per sample ({n})",
            "pass a (N,) tensor (for (N, 1) use targets.squeeze(1))",
        )
    t = targets.detach().double()
    if not bool(torch.isfinite(t).all()):
        _fail(
            owner,
            "targets",
            "contains NaN or inf",
            "regression targets must be finite",
            "drop or impute the samples with missing targets",
        )
    return t


def _check_window(window, owner: str):
    if window is None:
        return None
    return check_positive_number(
        window, owner, "window", "pass a distance in target units, e.g. window=5.0, or None"
    )


def _check_beta(mix_beta, owner: str) -> tuple[float, float]:
    if not isinstance(mix_beta, tuple | list) or len(mix_beta) != 2:
        _fail(
            owner,
            "mix_beta",
            f"is {mix_beta!r}",
            "it must be a pair (a, b) of Beta parameters",
            "pass e.g. mix_beta=(2.0, 8.0)",
            TypeError,
        )
    fix = "pass e.g. mix_beta=(2.0, 8.0)"
    return (
        check_positive_number(mix_beta[0], owner, "mix_beta[0]", fix),
        check_positive_number(mix_beta[1], owner, "mix_beta[1]", fix),
    )


def _check_mix_ratios(lam, rows: int, owner: str) -> torch.Tensor:
    check_tensor(lam, owner, "mix_ratios")
    if lam.shape != (rows, rows):
        _fail(
            owner,
            "mix_ratios",
            f"has shape {tuple(lam.shape)}",
            f"it must be (V * N, V * N) = ({rows}, {rows}), one ratio per anchor row and row",
            "build it with supremix_mix_ratios(V * N, mix_beta, generator=g)",
        )
    if not lam.dtype.is_floating_point or not bool(((lam >= 0) & (lam <= 1)).all()):
        _fail(
            owner,
            "mix_ratios",
            "has entries outside [0, 1] or a non-float dtype",
            "mixing ratios are convex weights in [0, 1]",
            "build it with supremix_mix_ratios(V * N, mix_beta, generator=g)",
        )
    return lam


@register_loss(
    "supremix",
    summary="Supervised contrastive regression with mixed-up hard negatives and positives",
    paper="Wu et al. 2023, Mixup Your Own Pairs (SupReMix), arXiv:2309.16633",
)
class SupReMix(SeededDraws, ContrastiveLoss):
    """Module form of :func:`supremix`; call ``loss(z1, z2, targets=y)`` (optionally with
    ``generator=`` or ``mix_ratios=`` for the mix-negative ratios).

    ``seed`` seeds the module's own ``torch.Generator``, from which the mix-negative ratios
    are drawn when a call passes neither ``generator=`` nor ``mix_ratios=``: two modules
    built from the same config draw the same ratios, and torch's global generator is left
    alone. ``seed=None`` uses the global generator, as the released code does. The
    generator's position is saved in ``state_dict`` (extra state)."""

    function = staticmethod(supremix)

    inputs = "targets"

    def __init__(
        self,
        temperature=0.1,
        window=5.0,
        mix_beta=(2.0, 8.0),
        distance="l1",
        mix_negatives=True,
        mix_positives=True,
        renormalize=False,
        variant="paper",
        similarity="cosine",
        learnable=False,
        reduction="mean",
        seed=0,
    ):
        super().__init__()
        owner = "SupReMix"
        self._init_temperature(temperature, learnable)
        self._init_reduction(reduction)
        self.similarity = check_choice(similarity, owner, "similarity", SIMILARITIES)
        self.window = _check_window(window, owner)
        self.mix_beta = tuple(_check_beta(mix_beta, owner))
        self.distance = check_choice(distance, owner, "distance", DISTANCES)
        self.variant = check_choice(variant, owner, "variant", VARIANTS)
        self.mix_negatives = bool(mix_negatives)
        self.mix_positives = bool(mix_positives)
        self.renormalize = bool(renormalize)
        self._init_generator(seed)

    def forward(self, *views, targets=None, generator=None, mix_ratios=None):
        if generator is None and mix_ratios is None:
            generator = self.generator
        return super().forward(*views, targets=targets, generator=generator, mix_ratios=mix_ratios)
