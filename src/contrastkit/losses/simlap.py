"""SimLAP (formerly Hydra): contrastive learning from arbitrary class pairs in gated subspaces.

Wu, Atito, Feng, Mo, Kittler, Awais, "Rethinking Positive Pairs in Contrastive Learning",
arXiv 2410.18200 (v1 "Hydra", v2 "SimLAP"). Released code (same author): erow/FastSSL
``model/simlap.py`` (``SimLAP.disparate_loss``, ``BasicGate``, ``multipos_ce_loss``) and a
standalone vitookit training script whose header cites arXiv 2410.18200 (``SimLAP``,
``apply_gate``, ``multipos_ce_loss``).

Each anchor b of class y1_b is given a partner class y2_b; the samples of class y2_b are
its positives, compared in a subspace selected by a gate ``g_b = sigmoid(MLP((E[y1_b] +
E[y2_b]) / 2))`` in (0, 1)^D with a learnable label embedding E. The loss per positive is
the core's ``own_positive`` weighting (``core.weighting``): each positive against the
negatives only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.core.contrast import contrast
from contrastkit.core.pairs import Pairs, not_self
from contrastkit.core.temperature import as_scale
from contrastkit.core.validation import (
    _fail,
    check_choice,
    check_embeddings,
    check_has_positive,
    check_labels,
    check_nonzero_rows,
)
from contrastkit.losses._inputs import stack_views, working_dtype
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.registry import register_loss

__all__ = ["LabelGate", "SimLAP", "draw_partner_labels", "simlap"]

MODES = ("arbitrary", "identical", "distinct")
VARIANTS = ("gated_cosine", "gate_squared")
NO_PARTNER_HINT = (
    "these anchors' partner class y2 has no (other) sample in the batch; use "
    "mode='arbitrary' (y2 is drawn from the batch), a class-balanced sampler, two views, "
    "or pass partner_labels= explicitly"
)


def draw_partner_labels(labels, mode="arbitrary", num_classes=None, generator=None):
    """Partner class y2 per anchor, as SimLAP's ``type``: ``arbitrary`` = the labels of a
    random permutation of the batch (default), ``identical`` = ``labels``, ``distinct`` = a
    uniformly drawn class different from the anchor's (among ``num_classes``, default
    ``labels.max() + 1``). ``generator`` is a CPU ``torch.Generator`` (default: global)."""
    owner = "draw_partner_labels"
    check_choice(mode, owner, "mode", MODES)
    n = labels.shape[0]
    if mode == "identical":
        return labels.clone()
    if mode == "arbitrary":
        return labels[torch.randperm(n, generator=generator).to(labels.device)]
    c = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if c < 2:
        _fail(
            owner,
            "num_classes",
            f"is {c}",
            "mode='distinct' needs at least 2 classes",
            "pass num_classes= (the number of classes of the data set)",
        )
    shift = torch.randint(1, c, (n,), generator=generator).to(labels.device)
    return (labels + shift) % c


def _gated_similarity(z1, z2, g, variant):
    """``(N, M)`` similarity of anchor b and candidate n in anchor b's gated subspace."""
    g2 = g * g
    if variant == "gated_cosine":
        # cos(g_b * z1_b, g_b * z2_n) without the (N, M, D) tensor: the numerator is
        # sum_k g_bk^2 z1_bk z2_nk and |g_b * z2_n|^2 = sum_k g_bk^2 z2_nk^2. The norms are
        # floored at 1e-12, as F.normalize does in the released code.
        num = (g2 * z1) @ z2.T
        norm1 = (g2 * z1 * z1).sum(-1).sqrt().clamp_min(1e-12)
        norm2 = (g2 @ (z2 * z2).T).sqrt().clamp_min(1e-12)
        return num / (norm1[:, None] * norm2)
    # FastSSL: <z1_b/|z1_b| * g_b^2, z2_n/|z2_n|>, no renormalisation in the subspace.
    return (F.normalize(z1, dim=-1) * g2) @ F.normalize(z2, dim=-1).T


def simlap(
    *views,
    labels,
    gate,
    partner_labels=None,
    mode="arbitrary",
    num_classes=None,
    generator=None,
    temperature=0.1,
    variant="gated_cosine",
    reduction="mean",
):
    """SimLAP's loss on one batch (Wu et al., arXiv 2410.18200; erow/FastSSL
    ``model/simlap.py``).

    Anchors are the rows of ``z1`` and candidates the rows of ``z2`` (with one view, the
    rows of ``z1`` other than the anchor itself). Anchor b has class ``y1_b = labels[b]``
    and partner class ``y2_b = partner_labels[b]`` (drawn with ``mode`` / ``generator`` /
    ``num_classes`` when not given, see :func:`draw_partner_labels`). Its positives are
    P(b) = {n : y_n = y2_b}; the other samples of classes y1_b and y2_b are excluded
    entirely; the rest are its negatives N(b). With the gate ``g_b`` in (0, 1)^D::

        l_bn = s_b(z1_b, z2_n) / t
        L_b  = 1/|P(b)| sum_{p in P(b)} [ log( e^{l_bp} + sum_{m in N(b)} e^{l_bm} ) - l_bp ]

    (the core's ``own_positive`` weighting: each positive against the negatives only).

    ``variant`` selects the subspace similarity s_b, where the two released codes differ:

    * ``"gated_cosine"`` (default): ``cos(g_b * z1_b, g_b * z2_n)``, the gate applied to
      both sides and the gated vectors renormalised, with a fixed ``1 / temperature``
      (the standalone script that cites the paper: ``apply_gate`` then ``scale * cosine``,
      ``scale = 1 / temperature``). It is the default because that script is the one
      that cites the paper and because the abstract describes similarity measured in the
      subspace the gate selects, i.e. a cosine of the gated features (unverified, below).
    * ``"gate_squared"``: ``<z1_b/|z1_b| * g_b^2, z2_n/|z2_n|>``, gate squared on the anchor
      side without renormalisation (FastSSL ``disparate_loss``); FastSSL also learns the
      scale (``exp(scale_logit)``, initialised at ``1 / temperature``): pass a 0-d tensor
      ``temperature`` or use the module with ``learnable=True``.

    Not verified: the arXiv paper's method section could not be reached (only its
    abstract), so which variant the paper states, and whether its "gate penalty" term is
    part of the objective, is unchecked. Neither released code applies a gate penalty
    (FastSSL's ``BasicGate.lam`` defaults to 0 and is unused); it is not implemented here.

    Departures from the released code, all documented choices:

    * ``multipos_ce_loss`` first subtracts each row's mean logit (detached in FastSSL).
      That is a no-op: every term ``log(e^{l_bp} + sum e^{l_bm}) - l_bp`` is invariant to
      adding a constant to row b, so value and gradient are unchanged; we compute the
      terms in the log domain (``logaddexp`` / ``logsumexp``) instead.
    * The code divides the sum of all per-pair terms by ``sum_b |P(b)|`` (a mean over
      pairs). Like every per-anchor loss here, ``reduction="mean"`` averages per anchor
      (each anchor's mean over its positives), so ``reduction="none"`` gives values whose
      mean is the result. The code's number is ``sum_b |P(b)| L_b / sum_b |P(b)|``.
    * An anchor with no positive (its partner class absent from the batch, which happens
      with ``mode="distinct"``) raises the core's "no positive" error instead of being
      silently dropped by the code's global normalisation.
    * With one view (as the standalone script, which calls ``disparate_loss(z, z)``), the
      anchor itself is removed from its candidates, otherwise ``mode="identical"`` would
      make it its own positive at similarity 1.
    * Only the z1 -> z2 direction is contrasted, as in both codes.

    ``gate`` is a ``(N, D)`` tensor of gate values in [0, 1] (one row per anchor), or a
    callable ``gate(y1, y2) -> (N, D)`` such as :class:`LabelGate`; the module
    :class:`SimLAP` owns the label embedding, the gate MLP and the (learnable) scale.

    Shapes: ``views`` is one or two ``(N, D)`` tensors (or one ``(N, V, D)`` with V <= 2);
    ``labels`` and ``partner_labels`` ``(N,)`` integers. Returns a 0-d tensor, or ``(N,)``
    per-anchor values with ``reduction="none"``. Half-precision inputs are computed and
    returned in float32.
    """
    owner = "simlap"
    check_choice(variant, owner, "variant", VARIANTS)
    check_choice(mode, owner, "mode", MODES)
    flat, n, v = stack_views(views, owner, min_views=1)
    if v > 2:
        _fail(
            owner,
            "views",
            f"holds {v} views",
            "SimLAP contrasts view 1 (anchors) with view 2 (candidates)",
            "pass loss(z1, z2) or loss(z1)",
        )
    check_nonzero_rows(flat, owner, "embeddings")
    labels = check_labels(labels, n, owner)
    if partner_labels is None:
        partner_labels = draw_partner_labels(labels, mode, num_classes, generator)
    else:
        partner_labels = check_labels(partner_labels, n, owner, "partner_labels")
    if not isinstance(gate, torch.Tensor):
        if not callable(gate):
            _fail(
                owner,
                "gate",
                f"is a {type(gate).__name__}",
                "it must be an (N, D) tensor of gate values or a callable gate(y1, y2)",
                "pass SimLAP's LabelGate or a tensor of sigmoid outputs",
                TypeError,
            )
        gate = gate(labels, partner_labels)
    check_embeddings(gate, owner, "gate")
    if tuple(gate.shape) != (n, flat.shape[-1]):
        _fail(
            owner,
            "gate",
            f"has shape {tuple(gate.shape)}",
            f"it must be (N, D) = ({n}, {flat.shape[-1]}): one gate vector per anchor",
            "build the gate from (labels, partner_labels) with output size D",
        )
    if bool(((gate < 0) | (gate > 1)).any()):
        _fail(
            owner,
            "gate",
            f"has values in [{float(gate.min()):.3g}, {float(gate.max()):.3g}]",
            "gate values lie in [0, 1] (a sigmoid output)",
            "apply torch.sigmoid to the gate logits",
        )
    dtype = working_dtype(flat, gate)
    z1 = flat[:n].to(dtype)
    z2 = flat[n:].to(dtype) if v == 2 else z1
    s = _gated_similarity(z1, z2, gate.to(dtype), variant)
    y1 = labels.to(flat.device)
    y2 = partner_labels.to(flat.device)
    positive = y2[:, None] == y1[None, :]
    valid = positive | (y1[:, None] != y1[None, :])  # drop class y1 unless it is y2
    if v == 1:
        valid = valid & not_self(n, flat.device)
    pairs = Pairs(positive & valid, valid)
    check_has_positive(pairs.positive, owner, NO_PARTNER_HINT, "labels")
    return contrast(
        z1,
        z2,
        pairs,
        s=s,
        scale=as_scale(temperature, owner),
        negative_weighting="own_positive",
        reduction=reduction,
        owner=owner,
    )


class LabelGate(nn.Module):
    """SimLAP's feature filter ``g = sigmoid(MLP((E[y1] + E[y2]) / 2))`` in (0, 1)^dim.

    As FastSSL's ``BasicGate`` (``fuse=True``): E = ``Embedding(num_classes, embed_dim)``,
    MLP = ReLU, BatchNorm1d(embed_dim), Linear(embed_dim, hidden_dim), ReLU,
    BatchNorm1d(hidden_dim), Linear(hidden_dim, dim). The released sizes are embed_dim 512
    and hidden_dim 1024."""

    def __init__(self, num_classes: int, dim: int, embed_dim: int = 512, hidden_dim: int = 1024):
        super().__init__()
        self.num_classes = int(num_classes)
        self.embedding = nn.Embedding(self.num_classes, embed_dim)
        self.mlp = nn.Sequential(
            nn.ReLU(),
            nn.BatchNorm1d(embed_dim),
            nn.Linear(embed_dim, hidden_dim),
            nn.ReLU(),
            nn.BatchNorm1d(hidden_dim),
            nn.Linear(hidden_dim, dim),
        )

    def forward(self, y1: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
        for name, y in (("labels", y1), ("partner_labels", y2)):
            if bool(((y < 0) | (y >= self.num_classes)).any()):
                _fail(
                    "SimLAP",
                    name,
                    f"has classes in [{int(y.min())}, {int(y.max())}]",
                    f"the label embedding holds classes 0 .. {self.num_classes - 1}",
                    "pass num_classes= at least the number of classes of the data set",
                )
        return torch.sigmoid(self.mlp((self.embedding(y1) + self.embedding(y2)) / 2))


def _positive_int(value, owner, arg, fix):
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(owner, arg, f"is a {type(value).__name__}", "it must be an int", fix, TypeError)
    if value < 1:
        _fail(owner, arg, f"is {value}", "it must be >= 1", fix)
    return value


@register_loss(
    "simlap",
    summary="SimLAP / Hydra: positives from an arbitrary partner class in a gated subspace",
    paper="Wu et al. 2024, Rethinking Positive Pairs in Contrastive Learning (arXiv 2410.18200)",
)
class SimLAP(ContrastiveLoss):
    """Module form of :func:`simlap` that owns the gate (label embedding and MLP, see
    :class:`LabelGate`) and, with ``learnable=True``, the logit scale.

    ``loss(z1, z2, labels=y)`` draws the partner classes with ``mode`` (or takes
    ``partner_labels=``). ``num_classes`` sizes the label embedding (labels must lie in
    ``0 .. num_classes - 1``); ``dim`` is the embedding size D of z: ``None`` builds the
    gate at the first call from the batch (pass ``dim`` when the optimiser is created
    before that call). ``gate_dim`` / ``gate_hidden`` are the label-embedding and MLP
    widths (512 / 1024 in the released code). ``seed`` fixes the gate's initialisation and
    the stream of partner draws: draw k uses a generator seeded from ``(seed, k)``, and k
    is a buffer, so a module restored from ``state_dict`` continues the same sequence.
    To reproduce FastSSL, use ``variant="gate_squared", learnable=True``.
    """

    function = staticmethod(simlap)

    inputs = "labels"

    def __init__(
        self,
        num_classes=10,
        dim=None,
        gate_dim=512,
        gate_hidden=1024,
        mode="arbitrary",
        variant="gated_cosine",
        temperature=0.1,
        learnable=False,
        reduction="mean",
        seed=0,
    ):
        super().__init__()
        owner = "SimLAP"
        self._init_temperature(temperature, learnable)
        self._init_reduction(reduction)
        self.num_classes = _positive_int(num_classes, owner, "num_classes", "pass num_classes=10")
        self.dim = None if dim is None else _positive_int(dim, owner, "dim", "pass dim=128")
        self.gate_dim = _positive_int(gate_dim, owner, "gate_dim", "pass gate_dim=512")
        self.gate_hidden = _positive_int(gate_hidden, owner, "gate_hidden", "pass 1024")
        self.mode = check_choice(mode, owner, "mode", MODES)
        self.variant = check_choice(variant, owner, "variant", VARIANTS)
        if isinstance(seed, bool) or not isinstance(seed, int):
            _fail(owner, "seed", f"is a {type(seed).__name__}", "it must be an int", "seed=0")
        self.seed = seed
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))
        self.gate = None
        if self.dim is not None:
            self._build_gate(self.dim)
        self._register_load_state_dict_pre_hook(self._build_before_load)

    def _build_gate(self, dim: int, device=None) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            gate = LabelGate(self.num_classes, dim, self.gate_dim, self.gate_hidden)
        self.gate = gate.to(device) if device is not None else gate
        self.dim = dim

    def _build_before_load(self, state_dict, prefix, *args, **kwargs):
        key = f"{prefix}gate.mlp.5.weight"
        if self.gate is None and key in state_dict:
            self._build_gate(state_dict[key].shape[0], state_dict[key].device)

    def partner_generator(self) -> torch.Generator:
        """The generator for the next partner draw (advances the draw counter)."""
        k = int(self.draws)
        self.draws += 1
        return torch.Generator().manual_seed(self.seed * 1_000_003 + k)

    def forward(self, *views, labels, partner_labels=None):
        owner = "SimLAP"
        if self.gate is None:
            z = views[0]
            check_embeddings(z, owner, "views[0]", ndim=(2, 3))
            self._build_gate(z.shape[-1], z.device)
        n = views[0].shape[0]
        labels = check_labels(labels, n, owner)
        if partner_labels is None:
            gen = self.partner_generator()
            partner_labels = draw_partner_labels(labels, self.mode, self.num_classes, gen)
        return simlap(
            *views,
            labels=labels,
            gate=self.gate,
            partner_labels=partner_labels,
            temperature=self.current_temperature(),
            variant=self.variant,
            reduction=self.reduction,
        )
