"""SepCLR: separating common from salient patterns with contrastive learning.

Louiset, Duchesnay, Grigis & Gori, "Separating common from salient patterns with
Contrastive Representation Learning", ICLR 2024 (arXiv 2402.11928). Official code:
neurospin-projects/2024_rlouiset_sep_clr, ``losses.py`` (``align_loss``,
``uniform_loss``, ``joint_entropy_loss``) and ``cifar_mnist/sep_clr_k-jem.py`` (how the
terms are combined and weighted).

Contrastive analysis: a background data set X (``labels == 0``, e.g. healthy subjects)
and a target data set Y (``labels == 1``) share common factors; Y also has salient
factors of its own. Two encoders map an image to a common code c (on the unit sphere)
and a salient code s (Euclidean, not normalised). With two augmented views per image:

* common term (max I(c; x) + I(c; y)): alignment + uniformity of c on every sample;
* salient term (max I(s; y)): alignment of s over target samples, uniformity over the
  batch in which background rows are replaced by the null vector s' = 0, so target codes
  repel each other and the null vector;
* information-less constraint: background salient codes are pulled onto s' = 0;
* k-JEM: a kernel estimate of the joint entropy H(c, s') is maximised, which drives the
  mutual information I(c; s) towards 0.

The paper's equations could not be read here (only its abstract and Figure 1 caption);
every formula below follows the official code, which agrees with that caption. The
``temperature`` of every term is the code's kernel bandwidth ``tau`` (0.5): each squared
distance is divided by ``2 * tau``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from contrastkit.core.validation import (
    _fail,
    check_batch_size,
    check_embeddings,
    check_positive_number,
    check_same_shape,
    check_tensor,
)

__all__ = [
    "SepCLR",
    "kjem",
    "sepclr_alignment",
    "sepclr_information_less",
    "sepclr_loss",
    "sepclr_terms",
    "sepclr_uniformity",
]

# Official weights (cifar_mnist/sep_clr_k-jem.py): beta_s, beta_reg, lambda; tau = 0.5.
SALIENT_WEIGHT = 1000.0
INFORMATION_LESS_WEIGHT = 1000.0
JEM_WEIGHT = 10.0
UNIFORMITY_WEIGHT = 2.0  # the code's ``align + 2.0 * uniform`` in both spaces


def _work(x: torch.Tensor) -> torch.Tensor:
    """Half-precision inputs are computed in float32 (squared distances overflow fp16)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _sq_dists(x: torch.Tensor) -> torch.Tensor:
    """All pairwise squared Euclidean distances, (N, N), exactly 0 on the diagonal.

    The Gram form avoids an (N, N, D) tensor; its rounding can go slightly below 0, so it
    is clamped. No square root is taken, so the gradient is smooth at equal rows (the
    null vectors s' = 0 are all equal)."""
    sq = x.pow(2).sum(-1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    return d2 * (1.0 - torch.eye(len(x), dtype=x.dtype, device=x.device))


def _temperature(temperature, owner: str) -> float:
    return check_positive_number(
        temperature, owner, "temperature", "pass the kernel bandwidth, e.g. temperature=0.5"
    )


def sepclr_alignment(a, b, temperature: float = 0.5) -> torch.Tensor:
    """``mean_i ||a_i - b_i||^2 / (2 * temperature)``: the official ``align_loss`` (alpha 2).

    ``a`` and ``b`` are (N, D) codes of two views of the same N images, row i with row i.
    """
    owner = "sepclr_alignment"
    check_embeddings(a, owner, "a")
    check_embeddings(b, owner, "b")
    check_same_shape(a, b, owner, ("a", "b"))
    t = _temperature(temperature, owner)
    if a.shape[0] == 0:
        _fail(owner, "a", "has no rows", "alignment averages over rows", "pass N >= 1 rows")
    a, b = _work(a), _work(b)
    return (a - b).pow(2).sum(-1).mean() / (2.0 * t)


def sepclr_uniformity(x, temperature: float = 0.5) -> torch.Tensor:
    """``log mean_{i<j} exp(-||x_i - x_j||^2 / (2 * temperature))``: the official
    ``uniform_loss`` (Wang & Isola's uniformity over the ``torch.pdist`` pairs), computed
    as a ``logsumexp`` so that far-apart codes do not underflow to log 0."""
    owner = "sepclr_uniformity"
    check_embeddings(x, owner, "x")
    check_batch_size(x.shape[0], owner, "x")
    t = _temperature(temperature, owner)
    x = _work(x)
    n = x.shape[0]
    i, j = torch.triu_indices(n, n, offset=1, device=x.device)
    logits = -_sq_dists(x)[i, j] / (2.0 * t)
    return torch.logsumexp(logits, 0) - math.log(logits.numel())


def kjem(common, salient, temperature: float = 0.5) -> torch.Tensor:
    """k-JEM, the kernel joint-entropy term (official ``joint_entropy_loss``).

    ``mean_i log mean_j k(c_i, c_j) k(s_i, s_j)`` with the Gaussian kernel
    ``k(u, v) = exp(-||u - v||^2 / (2 * temperature))`` and j running over the whole batch
    (``torch.cdist``, i = j included). It is minus a kernel estimate of the joint entropy
    H(c, s) (up to a constant), so minimising it maximises H(c, s), which with the
    marginal terms drives I(c; s) to 0. Log domain: ``logsumexp_j - log N``, always >=
    ``log(1 / N)`` thanks to the self term, as the code notes.
    """
    owner = "kjem"
    check_embeddings(common, owner, "common")
    check_embeddings(salient, owner, "salient")
    if common.shape[0] != salient.shape[0]:
        _fail(
            owner,
            "salient",
            f"has {salient.shape[0]} rows but `common` has {common.shape[0]}",
            "row i of both must be the codes of the same image",
            "pass the common and salient codes of the same batch",
        )
    check_batch_size(common.shape[0], owner, "common")
    t = _temperature(temperature, owner)
    logits = -(_sq_dists(_work(common)) + _sq_dists(_work(salient))) / (2.0 * t)
    return (torch.logsumexp(logits, 1) - math.log(common.shape[0])).mean()


def sepclr_information_less(s1, s2=None, temperature: float = 0.5) -> torch.Tensor:
    """The information-less constraint on background salient codes (rows of background
    images only): ``(mean ||s1_i||^2 + mean ||s2_i||^2) / 2 / (2 * temperature)``.

    The official code writes it as ``align_loss(s', s)`` with the null vector s' = 0;
    its unique minimiser is s = 0 (all background salient codes on the null vector).
    ``s2`` (the second view) is optional.
    """
    owner = "sepclr_information_less"
    views = [s1] if s2 is None else [s1, s2]
    for k, s in enumerate(views):
        check_embeddings(s, owner, f"s{k + 1}")
    if s2 is not None:
        check_same_shape(s1, s2, owner, ("s1", "s2"))
    t = _temperature(temperature, owner)
    if s1.shape[0] == 0:
        _fail(
            owner,
            "s1",
            "has no rows",
            "the constraint averages over background samples",
            "pass the salient codes of at least one background image",
        )
    return sum(_work(s).pow(2).sum(-1).mean() for s in views) / (len(views) * 2.0 * t)


def _check_group_labels(labels, n: int, owner: str) -> torch.Tensor:
    """(N,) 0 (background) / 1 (target) flags, with both groups present."""
    check_tensor(labels, owner, "labels")
    if labels.dtype.is_floating_point or labels.dtype.is_complex:
        _fail(
            owner,
            "labels",
            f"has dtype {labels.dtype}",
            "labels are 0 (background) / 1 (target) flags: integer or bool",
            "pass labels.long()",
            TypeError,
        )
    if labels.dim() != 1 or labels.shape[0] != n:
        _fail(
            owner,
            "labels",
            f"has shape {tuple(labels.shape)}",
            f"it must be 1-D with one flag per image ({n})",
            "pass one 0/1 flag per row of the codes",
        )
    labels = labels.long()
    if bool(((labels != 0) & (labels != 1)).any()):
        bad = sorted({int(v) for v in labels[(labels != 0) & (labels != 1)].tolist()})
        _fail(
            owner,
            "labels",
            f"contains {bad[:5]}",
            "each flag must be 0 (background) or 1 (target)",
            "map the background data set to 0 and the target data set to 1",
        )
    target = labels == 1
    if bool(target.all()) or not bool(target.any()):
        which = "target" if bool(target.any()) else "background"
        _fail(
            owner,
            "labels",
            f"marks every image as {which}",
            "a SepCLR batch needs at least one background (0) and one target (1) image",
            "draw batches from both data sets (e.g. a shuffled union, batch >= 16)",
        )
    return target


def sepclr_terms(
    c1,
    c2,
    s1,
    s2,
    labels,
    *,
    temperature: float = 0.5,
    salient_weight: float = SALIENT_WEIGHT,
    information_less_weight: float = INFORMATION_LESS_WEIGHT,
    jem_weight: float = JEM_WEIGHT,
    uniformity_weight: float = UNIFORMITY_WEIGHT,
) -> dict[str, torch.Tensor]:
    """Every SepCLR term of one batch, and their weighted sum under ``"loss"``.

    Inputs: ``c1, c2`` (N, Dc) common codes of views 1 and 2 (normalised here), ``s1,
    s2`` (N, Ds) salient codes (used as given: the salient space is Euclidean), ``labels``
    (N,) 0 = background, 1 = target. With s'_v = s_v with background rows set to 0
    (their gradient through s' is 0, as the code's clone-then-overwrite):

    * ``common`` = align(c1, c2) + w_u (unif(c1) + unif(c2)) / 2 (all images);
    * ``salient`` = align(s1[Y], s2[Y]) + w_u (unif(s'1) + unif(s'2)) / 2;
    * ``information_less`` = (mean ||s1[X]||^2 + mean ||s2[X]||^2) / 2 / (2 tau);
    * ``jem`` = (kjem(c1, s'1) + kjem(c2, s'2)) / 2;
    * ``loss`` = common + beta_s salient + beta_reg information_less + lambda jem.

    Defaults are the official CIFAR-10+MNIST weights (beta_s = beta_reg = 1000,
    lambda = 10, tau = 0.5, w_u = 2); the other data sets of the code use beta_s = 1,
    beta_reg = 10 or 100 (CheXpert, ODIR).
    """
    owner = "sepclr_terms"
    for name, x in (("c1", c1), ("c2", c2), ("s1", s1), ("s2", s2)):
        check_embeddings(x, owner, name)
    check_same_shape(c1, c2, owner, ("c1", "c2"))
    check_same_shape(s1, s2, owner, ("s1", "s2"))
    if s1.shape[0] != c1.shape[0]:
        _fail(
            owner,
            "s1",
            f"has {s1.shape[0]} rows but `c1` has {c1.shape[0]}",
            "row i of the common and salient codes must be the same image",
            "pass the codes of the same batch",
        )
    check_batch_size(c1.shape[0], owner, "c1")
    target = _check_group_labels(labels, c1.shape[0], owner)
    t = _temperature(temperature, owner)
    weights = {}
    for name, w in (
        ("salient_weight", salient_weight),
        ("information_less_weight", information_less_weight),
        ("jem_weight", jem_weight),
        ("uniformity_weight", uniformity_weight),
    ):
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            _fail(
                owner, name, f"is {w!r}", "a weight must be a finite number >= 0", "pass e.g. 1.0"
            )
        weights[name] = float(w)
    c1 = nn.functional.normalize(_work(c1), dim=1)
    c2 = nn.functional.normalize(_work(c2), dim=1)
    s1, s2 = _work(s1), _work(s2)
    keep = target[:, None]
    n1 = torch.where(keep, s1, torch.zeros_like(s1))  # s'_1: background rows on the null vector
    n2 = torch.where(keep, s2, torch.zeros_like(s2))
    w_u = weights["uniformity_weight"]
    common = (
        sepclr_alignment(c1, c2, t)
        + w_u * (sepclr_uniformity(c1, t) + sepclr_uniformity(c2, t)) / 2.0
    )
    salient = (
        sepclr_alignment(s1[target], s2[target], t)
        + w_u * (sepclr_uniformity(n1, t) + sepclr_uniformity(n2, t)) / 2.0
    )
    info_less = sepclr_information_less(s1[~target], s2[~target], t)
    jem = (kjem(c1, n1, t) + kjem(c2, n2, t)) / 2.0
    loss = (
        common
        + weights["salient_weight"] * salient
        + weights["information_less_weight"] * info_less
        + weights["jem_weight"] * jem
    )
    return {
        "loss": loss,
        "common": common,
        "salient": salient,
        "information_less": info_less,
        "jem": jem,
    }


def sepclr_loss(c1, c2, s1, s2, labels, **kwargs) -> torch.Tensor:
    """The SepCLR objective of one batch (a 0-d tensor); see :func:`sepclr_terms` for the
    inputs, terms, weights and their sources."""
    return sepclr_terms(c1, c2, s1, s2, labels, **kwargs)["loss"]


def _default_encoder(input_dim: int, hidden: int, feature_dim: int) -> nn.Module:
    """A small MLP encoder (flatten, Linear-BN-ReLU, Linear) for vector or image inputs."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(input_dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, feature_dim),
    )


def _head(dim: int, hidden: int) -> nn.Module:
    """The official projector: Linear(dim, 128)-BN-ReLU-Linear(128, dim)."""
    return nn.Sequential(
        nn.Linear(dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, dim),
    )


class SepCLR(nn.Module):
    """A common encoder and a salient encoder, each with its projection head, and the
    SepCLR objective (:func:`sepclr_terms`).

    As the official ``cifar_mnist/architectures.py``: two separate encoders (ResNet-18s
    there) whose last layer outputs the representation (``common_dim`` / ``salient_dim``
    wide, what linear probes evaluate), each followed by a Linear-BN-ReLU-Linear head of
    the same width (``head_hidden`` = 128) whose output the loss sees. Pass your own
    ``common_encoder`` / ``salient_encoder`` (each must output ``common_dim`` /
    ``salient_dim`` features), or give ``input_dim`` to get small MLP encoders
    (``input_dim`` -> ``hidden`` -> dim; an MLP stand-in for the paper's ResNets).

    ``model(x)`` returns ``(common_rep, common_code, salient_rep, salient_code)`` as the
    official ``Encoder``; ``model.terms(x1, x2, labels)`` returns the terms of a batch of
    two views and ``model.loss(x1, x2, labels)`` the objective.
    """

    def __init__(
        self,
        common_encoder: nn.Module | None = None,
        salient_encoder: nn.Module | None = None,
        *,
        input_dim: int | None = None,
        common_dim: int = 32,
        salient_dim: int = 32,
        hidden: int = 256,
        head_hidden: int = 128,
        temperature: float = 0.5,
        salient_weight: float = SALIENT_WEIGHT,
        information_less_weight: float = INFORMATION_LESS_WEIGHT,
        jem_weight: float = JEM_WEIGHT,
        uniformity_weight: float = UNIFORMITY_WEIGHT,
    ):
        super().__init__()
        owner = "SepCLR"
        for name, value in (
            ("common_dim", common_dim),
            ("salient_dim", salient_dim),
            ("hidden", hidden),
            ("head_hidden", head_hidden),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                _fail(owner, name, f"is {value!r}", "it must be an integer >= 1", "pass e.g. 32")
        if (common_encoder is None or salient_encoder is None) and (
            isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim < 1
        ):
            _fail(
                owner,
                "input_dim",
                f"is {input_dim!r}",
                "without both encoders the default MLP encoders need the flattened input size",
                "pass input_dim=784 for 28x28 images, or pass both encoders",
            )
        if common_encoder is None:
            common_encoder = _default_encoder(input_dim, hidden, common_dim)
        if salient_encoder is None:
            salient_encoder = _default_encoder(input_dim, hidden, salient_dim)
        self.common_encoder = common_encoder
        self.salient_encoder = salient_encoder
        self.common_head = _head(common_dim, head_hidden)
        self.salient_head = _head(salient_dim, head_hidden)
        self.temperature = _temperature(temperature, owner)
        self.weights = dict(
            salient_weight=salient_weight,
            information_less_weight=information_less_weight,
            jem_weight=jem_weight,
            uniformity_weight=uniformity_weight,
        )

    def forward(self, x: torch.Tensor):
        c_rep = self.common_encoder(x)
        s_rep = self.salient_encoder(x)
        return c_rep, self.common_head(c_rep), s_rep, self.salient_head(s_rep)

    def terms(self, x1: torch.Tensor, x2: torch.Tensor, labels: torch.Tensor) -> dict:
        _, c1, _, s1 = self(x1)
        _, c2, _, s2 = self(x2)
        return sepclr_terms(c1, c2, s1, s2, labels, temperature=self.temperature, **self.weights)

    def loss(self, x1: torch.Tensor, x2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.terms(x1, x2, labels)["loss"]
