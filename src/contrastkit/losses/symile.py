"""Symile (Saporta et al., NeurIPS 2024) and its baseline, pairwise CLIP over M modalities.

Symile contrasts whole tuples of M >= 3 modalities with the multilinear inner product

    MIP(a, b, c, ...) = sum_k a_k b_k c_k ...

instead of summing pairwise dot products, so it can capture information that only the
modalities jointly carry (the XOR example: no pair is informative, the triple is).
"""

from __future__ import annotations

import torch

from contrastkit.core.reduction import reduce
from contrastkit.core.similarity import prepare
from contrastkit.core.temperature import MAX_LOGIT_SCALE, LogitScale, as_scale
from contrastkit.core.validation import (
    _fail,
    check_batch_size,
    check_choice,
    check_embeddings,
    check_feature_dim,
    check_flag,
    check_positive_number,
    check_same_shape,
    check_tensor,
)
from contrastkit.losses._inputs import working_dtype
from contrastkit.losses.base import ContrastiveLoss, SeededDraws
from contrastkit.registry import register_loss

NEGATIVE_SAMPLING = ("n", "n_squared")
# n_squared materialises N x N^(M-1) logits per anchor modality; refuse beyond this.
MAX_N_SQUARED_LOGITS = 2**26
_EINSUM_LETTERS = "abcdefghjlmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"  # no i, k


def _as_list(modalities) -> list:
    """``loss(m1, m2, m3)`` or ``loss([m1, m2, m3])`` (the official code takes a list)."""
    if len(modalities) == 1 and isinstance(modalities[0], list | tuple):
        return list(modalities[0])
    return list(modalities)


def _check_modalities(modalities, owner: str, minimum: int) -> list[torch.Tensor]:
    mods = _as_list(modalities)
    if len(mods) < minimum:
        _fail(
            owner,
            "modalities",
            f"holds {len(mods)} tensor(s)",
            f"this objective needs at least {minimum} modalities, one (N, D) tensor each",
            f"call {owner}(m1, m2, m3) with row i of every tensor from the same sample",
        )
    for k, m in enumerate(mods):
        check_embeddings(m, owner, f"modalities[{k}]", ndim=(2,))
        check_same_shape(mods[0], m, owner, ("modalities[0]", f"modalities[{k}]"))
    check_batch_size(mods[0].shape[0], owner, "modalities[0]")
    return mods


def _prepared(mods, normalize: bool, owner: str) -> list[torch.Tensor]:
    dtype = working_dtype(*mods)
    out = []
    for k, m in enumerate(mods):
        m = m.to(dtype)
        out.append(prepare(m, "cosine", owner, f"modalities[{k}]") if normalize else m)
    return out


def _product(tensors) -> torch.Tensor:
    out = tensors[0]
    for t in tensors[1:]:
        out = out * t
    return out


def symile_permutations(
    n: int, num_modalities: int, *, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """The row permutations Symile's O(N) negative sampling uses, shape ``(M, M-1, N)``.

    Entry ``[m, j]`` shuffles the rows of the j-th non-anchor modality (in input order,
    skipping m) when modality m is the anchor. They are drawn with ``torch.randperm`` in
    that order, anchor by anchor, as rajesh-lab/symile ``symile/loss.py`` draws them, so
    ``torch.manual_seed(s)`` before the official loss and ``generator=Generator()
    .manual_seed(s)`` here give the same negatives (CPU generators).
    """
    owner = "symile_permutations"
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        _fail(owner, "n", f"is {n!r}", "it must be an int >= 1", "pass the batch size")
    if isinstance(num_modalities, bool) or not isinstance(num_modalities, int):
        _fail(owner, "num_modalities", f"is {num_modalities!r}", "it must be an int", "pass M")
    if num_modalities < 2:
        _fail(owner, "num_modalities", f"is {num_modalities}", "it must be >= 2", "pass M")
    perms = [
        torch.randperm(n, generator=generator)
        for _ in range(num_modalities)
        for _ in range(num_modalities - 1)
    ]
    return torch.stack(perms).reshape(num_modalities, num_modalities - 1, n).to(device)


def _check_permutations(perms, m: int, n: int, owner: str, device) -> torch.Tensor:
    check_tensor(perms, owner, "permutations")
    if perms.dtype.is_floating_point or perms.dtype == torch.bool or perms.dtype.is_complex:
        _fail(
            owner,
            "permutations",
            f"has dtype {perms.dtype}",
            "row indices must be an integer tensor",
            "build it with symile_permutations(n, num_modalities, generator=g)",
            TypeError,
        )
    if tuple(perms.shape) != (m, m - 1, n):
        _fail(
            owner,
            "permutations",
            f"has shape {tuple(perms.shape)}",
            f"it must be (M, M-1, N) = ({m}, {m - 1}, {n}), one permutation per anchor and "
            "non-anchor modality",
            "build it with symile_permutations(n, num_modalities, generator=g)",
        )
    perms = perms.to(device=device, dtype=torch.long)
    expected = torch.arange(n, device=device).expand(m, m - 1, n)
    if not torch.equal(perms.sort(dim=-1).values, expected):
        _fail(
            owner,
            "permutations",
            "has a row that is not a permutation of 0..N-1",
            "each row must hold every row index exactly once",
            "build it with symile_permutations(n, num_modalities, generator=g)",
        )
    return perms


def _n_squared_logits(anchor: torch.Tensor, others: list[torch.Tensor]) -> torch.Tensor:
    """``out[i, j1, ..., j_{M-1}] = MIP(anchor[i], others[0][j1], ...)``, as (N, N^(M-1))."""
    letters = _EINSUM_LETTERS[: len(others)]
    equation = "ik," + ",".join(f"{c}k" for c in letters) + "->i" + letters
    return torch.einsum(equation, anchor, *others).reshape(anchor.shape[0], -1)


def symile(
    *modalities,
    temperature=1.0,
    negative_sampling="n",
    normalize=True,
    reduction="mean",
    generator=None,
    permutations=None,
):
    """Symile loss (Saporta et al., "Contrasting with Symile: Simple Model-Agnostic
    Representation Learning for Unlimited Modalities", NeurIPS 2024, arXiv:2411.01053).

    For M modalities with rows ``x^1_i, ..., x^M_i`` of sample i and scale ``s = 1 / t``,
    each modality m is the anchor in turn::

        l_{m,i} = -s MIP(x^1_i, ..., x^M_i) + log sum_{c in C_m(i)} exp(s MIP(x^m_i, c))

    where ``c`` runs over tuples of non-anchor rows; the aligned tuple (the positive) is
    always one of them. The loss is the mean of ``l_{m,i}`` over anchors m and samples i
    (the official loss averages the M per-anchor cross-entropies, each a batch mean).

    Not verified against the paper's text: only its abstract was reachable from here, so
    no equation numbers are cited; the objective, the mean over anchor modalities and both
    sampling modes follow the official code (``symile/loss.py`` of the PyPI release 0.1.0,
    which the tests import as a second reference, and the repository's experiment code).

    ``negative_sampling`` (the official code's two strategies, ``Symile(negative_sampling)``):

    * ``"n"`` (O(N), the official default): every non-anchor modality is row-shuffled by
      its own random permutation; candidate j is the tuple of shuffled rows j, and
      candidate i (the diagonal) is replaced by the aligned tuple, so each anchor has N - 1
      negatives. A shuffled tuple can coincide with the positive (a rare false negative,
      as in the official code). Permutations come from ``permutations`` (``(M, M-1, N)``,
      see :func:`symile_permutations`) or are drawn with ``generator`` (default: torch's
      global generator, as the official code does).
    * ``"n_squared"``: all N^(M-1) tuples of non-anchor rows are candidates (N^(M-1) - 1
      negatives per anchor). This materialises N x N^(M-1) logits per anchor modality;
      batches with more than 2^26 logits are refused.

    ``normalize=True`` (default) L2-normalises every modality first. The paper's method and
    every official script use L2-normalised representations, but the official loss leaves
    that to the caller (``l2_normalize`` before ``Symile()``); ``normalize=False`` gives the
    official loss on the tensors as passed. With unit vectors |MIP| <= 1 for any M, but a
    typical MIP shrinks with M and D, so the logit scale has to grow as M does.

    ``temperature``: float, or a 0-d tensor (learnable). The official code multiplies the
    logits by ``exp(logit_scale)``, i.e. ``temperature = exp(-logit_scale)``; its scripts
    start ``logit_scale`` anywhere from -0.3 (XOR example, t = 1.35) to -7 (Symile-MIMIC),
    so there is no paper default: 1.0 is a neutral start.

    Checked against rajesh-lab/symile ``symile/loss.py`` (the PyPI release 0.1.0), which
    keeps gradients through every modality in both modes. An earlier revision in the
    repository's history detached the non-anchor modalities in ``n_squared`` for M > 3 and
    put its targets at the wrong columns there; the paper's experiments use M = 3 (or the
    O(N) mode), where that revision is also correct, and we follow the release.

    Takes M >= 2 tensors ``(N, D)`` (or one list of them); the method is meant for M >= 3,
    and with M = 2 and ``"n_squared"`` it is exactly symmetric CLIP (InfoNCE both ways).
    Returns the mean, the sum, or with ``reduction="none"`` the ``(N,)`` per-sample values
    ``l_i = (1/M) sum_m l_{m,i}`` (a sample is the whole tuple; their mean is the loss).
    Half-precision inputs are computed and returned in float32.
    """
    owner = "symile"
    mods = _check_modalities(modalities, owner, minimum=2)
    check_choice(negative_sampling, owner, "negative_sampling", NEGATIVE_SAMPLING)
    check_flag(normalize, owner, "normalize")
    if generator is not None and not isinstance(generator, torch.Generator):
        _fail(
            owner,
            "generator",
            f"is a {type(generator).__name__}",
            "it must be a torch.Generator",
            "pass generator=torch.Generator().manual_seed(0)",
            TypeError,
        )
    m, (n, _) = len(mods), mods[0].shape
    if negative_sampling == "n_squared":
        if permutations is not None:
            _fail(
                owner,
                "permutations",
                "is given with negative_sampling='n_squared'",
                "the O(N^2) mode uses every tuple and draws no permutation",
                "drop permutations= or use negative_sampling='n'",
            )
        if n**m > MAX_N_SQUARED_LOGITS:
            _fail(
                owner,
                "negative_sampling",
                f"is 'n_squared' with N={n} and M={m} ({n}^{m} logits per anchor modality)",
                f"that mode materialises N^M logits, at most {MAX_N_SQUARED_LOGITS}",
                "use negative_sampling='n' or a smaller batch",
            )
    x = _prepared(mods, normalize, owner)
    scale = as_scale(temperature, owner)
    device = x[0].device
    positive = _product(x).sum(-1) * scale  # s MIP of each aligned tuple, (N,)
    if negative_sampling == "n":
        perms = (
            symile_permutations(n, m, generator=generator, device=device)
            if permutations is None
            else _check_permutations(permutations, m, n, owner, device)
        )
        diagonal = torch.eye(n, dtype=torch.bool, device=device)
    per_anchor = []
    for a in range(m):
        others = [x[b] for b in range(m) if b != a]
        if negative_sampling == "n":
            shuffled = _product([o[perms[a, j]] for j, o in enumerate(others)])
            logits = (x[a] @ shuffled.T) * scale
            logits = torch.where(diagonal, positive.unsqueeze(0), logits)
        else:
            logits = _n_squared_logits(x[a], others) * scale
        per_anchor.append(torch.logsumexp(logits, dim=1) - positive)
    return reduce(torch.stack(per_anchor).mean(0), reduction, owner)


def pairwise_clip(*modalities, temperature=1.0, normalize=True, reduction="mean"):
    """Pairwise CLIP over M >= 2 modalities, the baseline of Symile (Saporta et al., NeurIPS
    2024): symmetric CLIP (InfoNCE both ways, averaged) on every pair of modalities,
    **summed** over the M(M-1)/2 pairs, with one shared temperature::

        L = sum_{u < v} (1/2) [ mean_i CE(x^u_i -> x^v) + mean_i CE(x^v_i -> x^u) ]
        CE(x^u_i -> x^v) = -s <x^u_i, x^v_i> + log sum_j exp(s <x^u_i, x^v_j>)

    This is rajesh-lab/symile's experiment code (``clip`` in ``src/losses.py``, used by
    the experiments' models: the three-modality version returns ``loss_ab + loss_bc +
    loss_ac`` and the M-modality version sums ``infonce(x, y)`` over
    ``itertools.combinations``, although its docstring says "average"; an older
    synthetic-data script divided by 3). We follow the experiment code: the sum. Divide
    by M(M-1)/2 for the mean. Not verified against the paper's text (see :func:`symile`).

    ``normalize=True`` (default) L2-normalises every modality (the official scripts
    normalise before the loss); ``temperature`` as in :func:`symile`.

    ``reduction="none"`` returns the ``(N,)`` per-sample values
    ``l_i = sum_{u < v} (CE(x^u_i -> x^v) + CE(x^v_i -> x^u)) / 2``, whose mean is the loss
    above. With M = 2 this is exactly :func:`clip`.
    """
    owner = "pairwise_clip"
    mods = _check_modalities(modalities, owner, minimum=2)
    check_flag(normalize, owner, "normalize")
    x = _prepared(mods, normalize, owner)
    scale = as_scale(temperature, owner)
    m = len(x)
    per_sample = 0
    for u in range(m):
        for v in range(u + 1, m):
            logits = (x[u] @ x[v].T) * scale  # one matrix serves both directions
            both = torch.logsumexp(logits, dim=1) + torch.logsumexp(logits, dim=0)
            per_sample = per_sample + (both / 2 - logits.diagonal())
    return reduce(per_sample, reduction, owner)


def _check_scoring(queries, candidates, owner: str):
    queries = _as_list(queries)
    if not queries:
        _fail(
            owner,
            "queries",
            "is empty",
            "scoring needs at least one query modality",
            f"call {owner}(q1, q2, candidates=c)",
        )
    check_embeddings(candidates, owner, "candidates", ndim=(2,))
    rows = []
    for k, q in enumerate(queries):
        check_embeddings(q, owner, f"queries[{k}]", ndim=(1, 2))
        q = q.unsqueeze(0) if q.dim() == 1 else q
        check_feature_dim(candidates, q, owner, ("candidates", f"queries[{k}]"))
        rows.append(q)
    b = max(q.shape[0] for q in rows)
    for k, q in enumerate(rows):
        if q.shape[0] not in (1, b):
            _fail(
                owner,
                f"queries[{k}]",
                f"has {q.shape[0]} rows but another query modality has {b}",
                "row b of every query modality must come from the same query (a (D,) or "
                "(1, D) query is shared by all rows)",
                "pass query tensors with the same number of rows",
            )
    return rows


def symile_scores(*queries, candidates, temperature=1.0, normalize=True):
    """Symile's zero-shot scores: ``scores[b, c] = s * MIP(q^1_b, ..., q^K_b, candidates[c])``
    for ``K >= 1`` query modalities ``(B, D)`` (or ``(D,)``) and ``candidates`` ``(C, D)``;
    the predicted candidate is the argmax over c (official ``MIPSimilarity`` /
    ``zeroshot_retrieval_logits`` times ``exp(logit_scale)``). ``normalize`` as in the loss."""
    owner = "symile_scores"
    rows = _check_scoring(queries, candidates, owner)
    check_flag(normalize, owner, "normalize")
    x = _prepared([*rows, candidates], normalize, owner)
    return (_product(x[:-1]) @ x[-1].T) * as_scale(temperature, owner)


def pairwise_clip_scores(*queries, candidates, temperature=1.0, normalize=True):
    """Pairwise CLIP's zero-shot scores, the official ``zeroshot_retrieval_logits(...,
    "clip")``: the sum of the dot products over all pairs of the completed tuple,
    ``s * (sum_q <q_b, c> + sum_{q < q'} <q_b, q'_b>)``; the second sum is constant in c,
    so it never changes the argmax."""
    owner = "pairwise_clip_scores"
    rows = _check_scoring(queries, candidates, owner)
    check_flag(normalize, owner, "normalize")
    x = _prepared([*rows, candidates], normalize, owner)
    q, c = x[:-1], x[-1]
    with_candidate = sum(r @ c.T for r in q)
    among_queries = sum(
        (q[i] * q[j]).sum(-1, keepdim=True) for i in range(len(q)) for j in range(i + 1, len(q))
    )
    return (with_candidate + among_queries) * as_scale(temperature, owner)


@register_loss(
    "symile",
    summary="Contrast whole M-modality tuples with the multilinear inner product",
    paper="Saporta et al. 2024, Contrasting with Symile: Simple Model-Agnostic Representation "
    "Learning for Unlimited Modalities",
)
class Symile(SeededDraws, ContrastiveLoss):
    """Module form of :func:`symile`; the temperature is learnable by default (a
    ``LogitScale``: ``1 / temperature`` is clamped at ``max_scale``, 100 as in CLIP; the
    official code does not clamp). The MIP of aligned unit vectors shrinks as M and D grow,
    so the scale Symile needs grows with them: on the XOR task (M = 3 and M = 8, D = 16) the
    learned ``1 / t`` stayed between about 8 and 25, far from the clamp; raise
    ``max_scale`` if a run sits at 100. :meth:`scores` gives the zero-shot scores at the
    current temperature.

    ``seed`` seeds the module's own ``torch.Generator``, from which the O(N) mode draws
    its permutations when a call passes neither ``generator=`` nor ``permutations=``, so
    two modules built from the same config draw the same negatives, and training is
    reproducible without touching torch's global generator; ``seed=None`` uses the global
    generator, as the official code does. The generator's position is saved in
    ``state_dict`` (extra state), so a restored checkpoint draws the same negatives next."""

    function = staticmethod(symile)

    inputs = "modalities"

    def __init__(
        self,
        temperature=1.0,
        learnable=True,
        negative_sampling="n",
        normalize=True,
        reduction="mean",
        seed=0,
        max_scale=MAX_LOGIT_SCALE,
    ):
        super().__init__()
        self._init_temperature(temperature, learnable)
        self.max_scale = check_positive_number(
            max_scale, "Symile", "max_scale", "pass e.g. max_scale=100.0"
        )
        if self.learnable:
            self.logit_scale = LogitScale(self.temperature, max_scale=self.max_scale)
        self._init_reduction(reduction)
        self.negative_sampling = check_choice(
            negative_sampling, "Symile", "negative_sampling", NEGATIVE_SAMPLING
        )
        self.normalize = check_flag(normalize, "Symile", "normalize")
        self._init_generator(seed)

    def forward(self, *modalities, generator=None, permutations=None):
        if generator is None and permutations is None:
            generator = self.generator
        return super().forward(*modalities, generator=generator, permutations=permutations)

    def scores(self, *queries, candidates):
        return symile_scores(
            *queries,
            candidates=candidates,
            temperature=self.current_temperature(),
            normalize=self.normalize,
        )


@register_loss(
    "pairwise_clip",
    summary="CLIP on every pair of M modalities, summed (Symile's baseline)",
    paper="Saporta et al. 2024, Contrasting with Symile (pairwise CLIP baseline); "
    "Radford et al. 2021, CLIP",
)
class PairwiseCLIP(ContrastiveLoss):
    """Module form of :func:`pairwise_clip`; one learnable temperature shared by all pairs
    (clamped like CLIP's). :meth:`scores` gives the zero-shot scores."""

    function = staticmethod(pairwise_clip)

    inputs = "modalities"

    def __init__(self, temperature=1.0, learnable=True, normalize=True, reduction="mean"):
        super().__init__()
        self._init_temperature(temperature, learnable)
        self._init_reduction(reduction)
        self.normalize = check_flag(normalize, "PairwiseCLIP", "normalize")

    def scores(self, *queries, candidates):
        return pairwise_clip_scores(
            *queries,
            candidates=candidates,
            temperature=self.current_temperature(),
            normalize=self.normalize,
        )


__all__ = [
    "PairwiseCLIP",
    "Symile",
    "pairwise_clip",
    "pairwise_clip_scores",
    "symile",
    "symile_permutations",
    "symile_scores",
]
