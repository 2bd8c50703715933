"""WhitenedCSE: shuffled group whitening (SGW) producing several positives, then InfoNCE.

Zhuo, Sun, Wang, Zhu & Yang, "WhitenedCSE: Whitening-based Contrastive Learning of
Sentence Embeddings", ACL 2023 (arXiv 2305.17746); official code SupstarZh/WhitenedCSE
``whitenedcse/shuffled_group_whitening.py::ShuffledGroupWhitening, transformation`` and
``whitenedcse/models.py::MLPLayer, cl_forward``.

The paper's PDF could not be read in this session; the method is implemented from its
abstract ("randomly divide the feature into multiple groups along the channel axis and
perform whitening independently within each group; by shuffling the group division we
derive multiple distortions of a single sample") and from the released code, read in
full, with the three defects of that code (research notes, seeds-B sec. 5) fixed by
default and reproducible with ``variant="official_code"`` where that is meaningful:

1. ``MLPLayer`` builds ``ShuffledGroupWhitening(hidden, num_groups=128, config.num_pos)``,
   a positional argument after a keyword one: a ``SyntaxError``, the released file does not
   import. Nothing to reproduce; here every argument is a keyword.
2. ``transformation`` rebuilds the covariance with ``torch.tensor(covs, requires_grad=True)``,
   which detaches it: the whitening matrix W is a constant for autograd and gradients flow
   only through the centred features. The default differentiates through W (ZCA is a
   smooth function of the covariance); ``variant="official_code"`` detaches W.
3. The encoder output is laid out sample-major, ``[s0 v0, s0 v1, s0 v2, s1 v0, ...]``
   (``view(bs * num_sent, D)``), but SGW whitens the first, second and third *thirds of the
   rows* with their own shuffles, so a "chunk" mixes views of different samples and its
   statistics are not one view's. The default whitens each dropout view (all N samples of
   view v) with its own shuffle, as the paper describes; ``variant="official_code"``
   whitens V contiguous row chunks of the sample-major layout.

Two smaller differences are options, not variants: ``eps`` (default 1e-5) is added to
the eigenvalues before the inverse square root; the code has none (``eps=0.0`` reproduces
it), and all-MiniLM-L6-v2 has near-constant channels (standard deviation ~1e-33 over any
batch), whose groups have a zero eigenvalue, so without ``eps`` the whitening of that
model is inf/NaN at every batch size. The covariance uses the biased 1/n estimate, as the
code does. The code computes in float32 on the CPU with
``torch.symeig`` (removed from PyTorch); here ``torch.linalg.eigh`` in float32, or float64
for float64 input.

SGW of one batch x (n, D) with G groups, permutation pi::

    y = x[:, pi]  viewed as (n, G, D/G);   y_g <- y_g - mean_n(y_g)
    Sigma_g = y_g^T y_g / n;   W_g = U_g diag(lambda_g + eps)^{-1/2} U_g^T   (ZCA)
    out[:, pi] = (y_g W_g) for every g

Objective over whitened views h^0 (anchor), h^1, ..., h^{V-1} (``cl_forward``: two
InfoNCE terms, summed, with in-batch negatives; the third view is *not* added as extra
negatives, that concatenation is commented out in the code)::

    l_i = sum_{v=1}^{V-1} -log( e^{cos(h0_i, hv_i)/t} / sum_j e^{cos(h0_i, hv_j)/t} )

Released defaults: 3 views (``--num_pos 3``), 128 groups, t = 0.05; in training the
code applies SGW then a dense + tanh head (``MLPLayer``), which the text method
(``contrastkit.text.cse``) owns; this loss is SGW + objective only.
"""

from __future__ import annotations

import math

import torch

from contrastkit.core.logits import compute_dtype
from contrastkit.core.reduction import reduce
from contrastkit.core.validation import (
    _fail,
    check_batch_size,
    check_choice,
    check_embeddings,
    check_in_range,
    check_nonzero_rows,
    check_temperature,
)
from contrastkit.losses._inputs import stack_views
from contrastkit.losses.base import ContrastiveLoss, SeededDraws
from contrastkit.registry import register_loss

VARIANTS = ("paper", "official_code")


def _check_generator(generator, owner: str):
    if generator is not None and not isinstance(generator, torch.Generator):
        _fail(
            owner,
            "generator",
            f"is a {type(generator).__name__}",
            "it must be a torch.Generator or None",
            "pass generator=torch.Generator().manual_seed(0)",
            TypeError,
        )


def resolve_groups(num_groups, n: int, d: int, owner: str) -> int:
    """The number of channel groups G for a batch of n rows of dimension d.

    ``None`` is the released code's automatic rule ``G = ceil(2 d / n)`` (each group then
    has about n / 2 channels, so its covariance is well conditioned), moved up to the next
    divisor of d (the code fails when it does not divide). An int must divide d.
    """
    if num_groups is None:
        g = max(1, math.ceil(2 * d / n))
        while d % g:
            g += 1
        return g
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
        _fail(
            owner,
            "num_groups",
            f"is {num_groups!r}",
            "it must be None (automatic) or an int >= 1",
            "pass e.g. num_groups=128 (the released value) or None",
            TypeError if not isinstance(num_groups, int) else ValueError,
        )
    if d % num_groups:
        _fail(
            owner,
            "num_groups",
            f"is {num_groups} but the embedding dimension is {d}",
            "the channels are split into equal groups, so num_groups must divide D",
            f"pass a divisor of {d} (e.g. {math.gcd(d, 128)}) or num_groups=None",
        )
    return num_groups


def _check_conditioning(n: int, group_size: int, eps: float, owner: str, arg: str) -> None:
    # n centred rows span at most n - 1 directions: below that the covariance is singular.
    if eps == 0.0 and n - 1 < group_size:
        _fail(
            owner,
            arg,
            f"whitens {n} rows in groups of {group_size} channels",
            "the per-group covariance of n centred rows is singular unless n - 1 >= D / G",
            "use a larger batch, more groups (num_groups), or eps > 0",
        )


def group_whiten(
    x: torch.Tensor,
    permutation: torch.Tensor,
    num_groups: int,
    *,
    eps: float = 1e-5,
    detach_whitening: bool = False,
) -> torch.Tensor:
    """ZCA-whiten ``x`` (n, D) within each of ``num_groups`` channel groups taken in the
    order ``permutation`` (a permutation of range(D)); returns (n, D) in the input order.

    ``detach_whitening`` treats the whitening matrices as constants (the released code).
    """
    n, d = x.shape
    k = d // num_groups
    y = x[:, permutation].reshape(n, num_groups, k).transpose(0, 1)  # (G, n, k)
    y = y - y.mean(dim=1, keepdim=True)
    cov = y.transpose(1, 2) @ y / n  # (G, k, k), biased as the code
    if detach_whitening:
        cov = cov.detach()
    lam, u = torch.linalg.eigh(cov)
    w = u @ torch.diag_embed((lam + eps).rsqrt()) @ u.transpose(1, 2)
    out = (y @ w).transpose(0, 1).reshape(n, d)
    return out[:, torch.argsort(permutation)]


def shuffled_group_whitening(
    x: torch.Tensor,
    num_groups=None,
    *,
    generator: torch.Generator | None = None,
    permutation: torch.Tensor | None = None,
    eps: float = 1e-5,
    detach_whitening: bool = False,
) -> torch.Tensor:
    """Shuffled group whitening of one batch ``x`` (n, D) (WhitenedCSE, eq. of SGW above).

    The channel permutation is ``permutation`` or ``torch.randperm(D, generator=...)``;
    ``num_groups`` as :func:`resolve_groups`. Computed in float32 (float64 for float64
    input); returns that dtype.
    """
    owner = "shuffled_group_whitening"
    check_embeddings(x, owner, "x")
    n, d = x.shape
    check_batch_size(n, owner, "x")
    _check_generator(generator, owner)
    g = resolve_groups(num_groups, n, d, owner)
    eps = check_in_range(eps, owner, "eps", 0.0, 1.0, "pass eps=1e-5 (or 0.0, the code)")
    _check_conditioning(n, d // g, eps, owner, "x")
    if permutation is None:
        permutation = torch.randperm(d, generator=generator).to(x.device)
    elif not (
        isinstance(permutation, torch.Tensor)
        and permutation.dim() == 1
        and torch.equal(permutation.sort().values.cpu(), torch.arange(d))
    ):
        _fail(
            owner,
            "permutation",
            f"is {permutation!r}",
            f"it must be a 1-D tensor holding a permutation of range({d})",
            "pass torch.randperm(D) or leave it None",
        )
    x = x.to(compute_dtype(x))
    return group_whiten(x, permutation, g, eps=eps, detach_whitening=detach_whitening)


def whitened_views(
    *views,
    num_groups=None,
    generator: torch.Generator | None = None,
    eps: float = 1e-5,
    variant: str = "paper",
) -> torch.Tensor:
    """SGW of V dropout views: one ``(N, V, D)`` tensor or V tensors ``(N, D)`` ->
    whitened ``(N, V, D)``.

    ``variant="paper"``: view v (its N rows) is whitened with its own shuffle, drawn in
    the order v = 0, 1, ...; W is differentiated. ``variant="official_code"``: the
    sample-major rows ``[s0 v0, s0 v1, ..., s1 v0, ...]`` are cut into V contiguous
    chunks of N rows, chunk c whitened with its own shuffle (drawn in the order c = 0,
    1, ...) and a detached W, and the result read back sample-major (``cl_forward``'s
    ``view(bs, num_sent, D)``), as the released code does.
    """
    owner = "whitened_cse"
    check_choice(variant, owner, "variant", VARIANTS)
    _check_generator(generator, owner)
    flat, n, v = stack_views(views, owner, min_views=2)
    d = flat.shape[1]
    g = resolve_groups(num_groups, n, d, owner)
    eps = check_in_range(eps, owner, "eps", 0.0, 1.0, "pass eps=1e-5 (or 0.0, the code)")
    _check_conditioning(n, d // g, eps, owner, "views")
    flat = flat.to(compute_dtype(flat))
    perms = [torch.randperm(d, generator=generator).to(flat.device) for _ in range(v)]
    if variant == "paper":
        per_view = flat.view(v, n, d)  # view-major from stack_views
        out = [group_whiten(per_view[c], perms[c], g, eps=eps) for c in range(v)]
        return torch.stack(out, dim=1)
    rows = flat.view(v, n, d).transpose(0, 1).reshape(n * v, d)  # sample-major, as the code
    chunks = rows.view(v, n, d)
    out = [group_whiten(chunks[c], perms[c], g, eps=eps, detach_whitening=True) for c in range(v)]
    return torch.cat(out, 0).view(n, v, d)


def whitened_cse_objective(h: torch.Tensor, *, temperature=0.05, reduction="mean"):
    """The WhitenedCSE objective over whitened (and projected) views ``h`` (N, V, D):
    view 0 is the anchor, each other view a positive, in-batch negatives from that view;
    the V - 1 InfoNCE terms are summed (``cl_forward``: ``loss1 + loss2``). Returns the
    mean / sum / per-anchor ``(N,)`` values."""
    owner = "whitened_cse"
    t = check_temperature(temperature, owner)
    check_embeddings(h, owner, "h", ndim=(3,))
    n, v, _ = h.shape
    check_batch_size(n, owner, "h")
    if v < 2:
        _fail(owner, "h", f"has {v} view", "it needs an anchor and >= 1 positive view",
              "pass (N, V, D) with V >= 2")  # fmt: skip
    check_nonzero_rows(h, owner, "h")
    h = torch.nn.functional.normalize(h.to(compute_dtype(h)), dim=-1)
    target = torch.arange(n, device=h.device)
    per_anchor = sum(
        torch.nn.functional.cross_entropy(h[:, 0] @ h[:, k].T / t, target, reduction="none")
        for k in range(1, v)
    )
    return reduce(per_anchor, reduction, owner)


def whitened_cse(
    *views,
    temperature=0.05,
    num_groups=None,
    eps=1e-5,
    variant="paper",
    generator=None,
    reduction="mean",
):
    """WhitenedCSE loss over V >= 2 dropout views of N sentences (one ``(N, V, D)`` tensor
    or V tensors ``(N, D)``): :func:`whitened_views` then :func:`whitened_cse_objective`
    (no projection head; see the module docstring for the formulas and the variants).

    ``generator`` draws the V channel shuffles (the global generator when None).
    ``variant="official_code", eps=0.0`` is the released computation exactly.
    Returns a 0-d tensor, or ``(N,)`` per-anchor values with ``reduction="none"``.
    """
    h = whitened_views(*views, num_groups=num_groups, generator=generator, eps=eps,
                       variant=variant)  # fmt: skip
    return whitened_cse_objective(h, temperature=temperature, reduction=reduction)


@register_loss(
    "whitenedcse",
    summary="Shuffled group whitening of dropout views (several positives), then InfoNCE",
    paper="Zhuo et al. 2023, WhitenedCSE: Whitening-based Contrastive Learning of "
    "Sentence Embeddings",
)
class WhitenedCSE(SeededDraws, ContrastiveLoss):
    """Module form of :func:`whitened_cse`; ``loss(z1, z2, z3)`` or ``loss(z)`` with ``z``
    (N, V, D) dropout views (``inputs = "views"``).

    ``num_groups=None`` is the code's automatic group count (about N / 2 channels per
    group, so any batch of >= 3 rows whitens); the released training run hard-codes 128
    (which ``contrastkit.text.cse.WhitenedCSEMethod`` uses). ``seed`` seeds the module's
    own generator for the channel shuffles (saved in ``state_dict``); ``seed=None`` uses
    torch's global generator, as the released code does.
    """

    function = staticmethod(whitened_cse)

    def __init__(
        self,
        temperature=0.05,
        num_groups=None,
        eps=1e-5,
        variant="paper",
        reduction="mean",
        seed=0,
    ):
        super().__init__()
        owner = "WhitenedCSE"
        self._init_temperature(temperature, False)
        self._init_reduction(reduction)
        if num_groups is not None:
            resolve_groups(num_groups, 2, num_groups, owner)  # type / range check only
        self.num_groups = num_groups
        self.eps = check_in_range(eps, owner, "eps", 0.0, 1.0, "pass eps=1e-5 (or 0.0, the code)")
        self.variant = check_choice(variant, owner, "variant", VARIANTS)
        self._init_generator(seed)

    def forward(self, *views, generator=None):
        return super().forward(*views, generator=self.generator if generator is None else generator)
