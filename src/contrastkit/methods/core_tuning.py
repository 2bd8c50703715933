"""Core-tuning: contrast-regularised fine-tuning of a contrastively pretrained encoder.

Zhang, Hooi, Hu, Liang & Feng, "Unleashing the Power of Contrastive Self-Supervised
Visual Models via Contrast-Regularized Fine-Tuning", NeurIPS 2021 (arXiv 2102.06605).
Official code: Vanint/Core-tuning ``Core-tuning.py`` (``ResnetSSLModel``,
``Contrastor``, ``feature_mixup``, ``focal_SupConLoss``, ``train``) and its README.

The fine-tuning objective is ``L = CE + eta * L_con``: cross-entropy with soft labels,
plus a focal supervised contrastive loss on a contrast head, both over a batch enlarged
with pairs generated on the encoder features (not on images):

* hard negatives by mixup: each feature mixed with a shuffled partner, the partner
  weighted ``lam ~ Beta(a, a)`` clamped to >= 0.8;
* hard pairs: each anchor's hard positive (its least similar same-class sample) mixed
  with its hard negative (its most similar other-class sample), ``lam ~ Beta(a, a)``;
* the mixed rows keep mixed (soft) labels: the smoothed decision boundary. Each
  distinct soft-label vector is one class of the contrastive loss.

Only the paper's abstract could be read here; the method description (hard positive =
least similar positive, hard negative = most similar negative) is taken from the
research notes of this project and the code. Where the code differs it is an explicit
``variant="official_code"``:

* hard-positive selection: the code takes ``argmin`` of ``similarity * positive_mask``;
  masked-out entries are 0, so with non-negative similarities (post-ReLU backbone
  features) the argmin usually lands on a non-positive index (the first zero), and an
  index of 0 is then replaced by the anchor itself. Its hard negative is the ``argmax``
  of ``similarity * negative_mask``, which picks a masked entry when every negative
  similarity is below 0;
* the original rows enter the enlarged batch detached (``features.clone().detach()``),
  so the encoder gets gradient only through the mixed rows;
* the focal SupCon divides each anchor's sum by the row length (``.mean(1)``) instead
  of its number of positives.

Not reproduced in any variant: the code's soft-label ids ``labels @ 10**arange(C)``
(float32, overflowing int64 past 18 classes, so distinct labels collide); we group rows
whose soft labels agree after rounding (:func:`soft_label_ids`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from contrastkit.core.validation import (
    _fail,
    check_batch_size,
    check_choice,
    check_embeddings,
    check_labels,
    check_positive_number,
    check_reduction,
    check_tensor,
)

__all__ = [
    "CoreTuning",
    "core_tuning_loss",
    "core_tuning_pairs",
    "focal_sup_con",
    "mine_hard_pairs",
    "mix_pairs",
    "soft_label_ids",
]

VARIANTS = ("paper", "official_code")


def _variant(variant, owner: str) -> str:
    return check_choice(variant, owner, "variant", VARIANTS)


def _class_labels(labels, n: int, owner: str, num_classes: int | None = None) -> torch.Tensor:
    labels = check_labels(labels, n, owner)
    if num_classes is not None and bool(((labels < 0) | (labels >= num_classes)).any()):
        bad = labels[(labels < 0) | (labels >= num_classes)][:5].tolist()
        _fail(
            owner,
            "labels",
            f"contains {bad}",
            f"class labels must lie in [0, num_classes) = [0, {num_classes})",
            "pass labels 0 .. num_classes - 1 or raise num_classes",
        )
    return labels


def mine_hard_pairs(features, labels, *, variant: str = "paper"):
    """Each anchor's hard positive and hard negative in the batch, as index tensors (B,).

    Cosine similarity of the features. ``variant="paper"``: hard positive = the least
    similar other sample of the same class, hard negative = the most similar sample of
    another class; an anchor without any positive (or negative) gets itself, as the code
    does for its fallback (the mix then moves towards the anchor). Ties go to the lowest
    index. ``variant="official_code"``: ``argmax(sim * negative_mask)`` and
    ``argmin(sim * positive_mask)`` with an index of 0 replaced by the anchor, as
    ``feature_mixup`` computes them (see the module doc for why this often picks a
    non-positive). No gradient flows through the indices.
    """
    owner = "mine_hard_pairs"
    check_embeddings(features, owner, "features")
    b = features.shape[0]
    check_batch_size(b, owner, "features")
    labels = _class_labels(labels, b, owner)
    variant = _variant(variant, owner)
    with torch.no_grad():
        z = F.normalize(features.float() if features.dtype != torch.float64 else features, dim=1)
        sim = z @ z.T
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(b, dtype=torch.bool, device=features.device)
        positive = same & ~eye
        negative = ~same
        arange = torch.arange(b, device=features.device)
        if variant == "official_code":
            hard_negative = (sim * negative).argmax(1)
            hard_positive = (sim * positive).argmin(1)
            hard_positive = torch.where(hard_positive == 0, arange, hard_positive)
            return hard_positive, hard_negative
        inf = torch.tensor(math.inf, dtype=sim.dtype, device=sim.device)
        hard_positive = torch.where(positive, sim, inf).argmin(1)
        hard_negative = torch.where(negative, sim, -inf).argmax(1)
        hard_positive = torch.where(positive.any(1), hard_positive, arange)
        hard_negative = torch.where(negative.any(1), hard_negative, arange)
    return hard_positive, hard_negative


def mix_pairs(features, soft_labels, first, second, lam):
    """``lam * x[first] + (1 - lam) * x[second]`` for the features and the soft labels.

    ``first``, ``second``: (B,) indices; ``lam``: (B,) mixing weights in [0, 1] (a tensor).
    Gradient flows into ``features`` through both partners.
    """
    owner = "mix_pairs"
    check_embeddings(features, owner, "features")
    check_embeddings(soft_labels, owner, "soft_labels")
    check_tensor(lam, owner, "lam")
    if lam.dim() != 1 or not bool(((lam >= 0) & (lam <= 1)).all()):
        _fail(
            owner,
            "lam",
            f"has shape {tuple(lam.shape)} / range [{float(lam.min()):g}, {float(lam.max()):g}]",
            "mixing weights are one number in [0, 1] per mixed row",
            "pass a 1-D tensor in [0, 1], e.g. drawn from Beta(a, a)",
        )
    w = lam.to(features.dtype)[:, None]
    f = w * features[first] + (1 - w) * features[second]
    y = (
        w.to(soft_labels.dtype) * soft_labels[first]
        + (1 - w.to(soft_labels.dtype)) * soft_labels[second]
    )
    return f, y


def _draws(b: int, alpha: float, generator: torch.Generator | None):
    """A permutation and two Beta(alpha, alpha) vectors from one seeded stream (numpy's
    Beta sampler, seeded from ``generator``; torch's Beta takes no generator)."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    perm = torch.from_numpy(rng.permutation(b))
    lam_negative = torch.from_numpy(rng.beta(alpha, alpha, b))
    lam_pair = torch.from_numpy(rng.beta(alpha, alpha, b))
    return perm, lam_negative, lam_pair


def core_tuning_pairs(
    features,
    labels,
    num_classes: int,
    *,
    alpha: float = 1.0,
    min_negative_lam: float = 0.8,
    variant: str = "paper",
    generator: torch.Generator | None = None,
):
    """The enlarged batch of Core-tuning: ``(rows, soft_labels)`` of shapes (3B, D), (3B, C).

    Rows ``[h, mixup negatives, hard-pair mixes]`` (the code's ``feature_mixup``):

    * mixup negatives: ``(1 - lam) h_i + lam h_perm(i)``, ``lam ~ Beta(alpha, alpha)``
      clamped to >= ``min_negative_lam`` (0.8), ``perm`` a random shuffle;
    * hard pairs: ``lam h_hp(i) + (1 - lam) h_hn(i)``, ``lam ~ Beta(alpha, alpha)``, with
      the hard positive / negative of :func:`mine_hard_pairs` (``variant``);
    * soft labels mixed with the same weights from one-hot labels.

    ``variant="official_code"`` also detaches the original rows ``h`` (see the module
    doc). Draws come from ``generator`` (a ``torch.Generator``; None: the global RNG).
    """
    owner = "core_tuning_pairs"
    check_embeddings(features, owner, "features")
    b = features.shape[0]
    check_batch_size(b, owner, "features")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        _fail(owner, "num_classes", f"is {num_classes!r}", "it must be an integer >= 2", "pass 10")
    labels = _class_labels(labels, b, owner, num_classes)
    alpha = check_positive_number(alpha, owner, "alpha", "pass the Beta parameter, e.g. 1.0")
    if isinstance(min_negative_lam, bool) or not isinstance(min_negative_lam, int | float):
        _fail(owner, "min_negative_lam", f"is {min_negative_lam!r}", "it must be a number", "0.8")
    if not 0.0 <= min_negative_lam <= 1.0:
        _fail(
            owner,
            "min_negative_lam",
            f"is {min_negative_lam}",
            "it must lie in [0, 1]",
            "pass 0.8 (the code's clamp)",
        )
    variant = _variant(variant, owner)
    onehot = F.one_hot(labels, num_classes).to(features.dtype)
    perm, lam_negative, lam_pair = _draws(b, alpha, generator)
    perm = perm.to(features.device)
    lam_negative = lam_negative.clamp_min(min_negative_lam).to(features.device)
    lam_pair = lam_pair.to(features.device)
    arange = torch.arange(b, device=features.device)
    f_neg, y_neg = mix_pairs(features, onehot, perm, arange, lam_negative)
    hp, hn = mine_hard_pairs(features, labels, variant=variant)
    f_pair, y_pair = mix_pairs(features, onehot, hp, hn, lam_pair)
    originals = features.detach() if variant == "official_code" else features
    return torch.cat([originals, f_neg, f_pair]), torch.cat([onehot, y_neg, y_pair])


def soft_label_ids(soft_labels, *, decimals: int = 6) -> torch.Tensor:
    """Class ids (N,) int64 for soft-label vectors: rows equal after rounding to
    ``decimals`` get the same id (ids in order of the sorted unique rows).

    Replaces the code's ``labels @ 10**arange(C)`` hashing, which overflows int64 (and
    loses precision in float32) past 18 classes, so different labels could collide.
    """
    owner = "soft_label_ids"
    check_embeddings(soft_labels, owner, "soft_labels")
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 12:
        _fail(owner, "decimals", f"is {decimals!r}", "it must be an integer in [0, 12]", "pass 6")
    rounded = torch.round(soft_labels.detach().double(), decimals=decimals)
    return torch.unique(rounded, dim=0, return_inverse=True)[1]


def focal_sup_con(
    embeddings,
    class_ids,
    *,
    temperature: float = 0.07,
    variant: str = "paper",
    reduction: str = "mean",
) -> torch.Tensor:
    """Core-tuning's focal supervised contrastive loss (the code's ``focal_SupConLoss``).

    Over the N rows (embeddings are L2-normalised here), with ``l_ia = z_i . z_a / t``,
    ``log p_ia = l_ia - log sum_{a != i} exp(l_ia)`` and P(i) the other rows of the same
    class id: ``L_i = -(1 / |P(i)|) sum_{p in P(i)} (1 - p_ip) log p_ip``. The focal
    weight ``(1 - p)`` keeps its gradient, as in the code. ``variant="official_code"``
    divides by the row length N instead of |P(i)| (the code's ``.mean(1)``); the paper's
    normaliser could not be read here, so the default follows SupCon (Khosla et al.),
    which the code cites as its base. Anchors without a positive are left out: ``"mean"``
    averages over anchors with one (as the code), ``"none"`` returns 0 for them. The
    code's ``temperature / base_temperature`` factor is 1 at its defaults (0.07 / 0.07).
    Raises ``ValueError`` when no anchor has a positive.
    """
    owner = "focal_sup_con"
    check_embeddings(embeddings, owner, "embeddings")
    n = embeddings.shape[0]
    check_batch_size(n, owner)
    class_ids = check_labels(class_ids, n, owner, "class_ids")
    t = check_positive_number(temperature, owner, "temperature", "pass e.g. temperature=0.07")
    variant = _variant(variant, owner)
    reduction = check_reduction(reduction, owner)
    z = embeddings.float() if embeddings.dtype in (torch.float16, torch.bfloat16) else embeddings
    z = F.normalize(z, dim=1)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / t).masked_fill(eye, -math.inf)
    log_prob = logits - torch.logsumexp(logits, 1, keepdim=True)
    positive = (class_ids[:, None] == class_ids[None, :]) & ~eye
    count = positive.sum(1)
    has_positive = count > 0
    if not bool(has_positive.any()):
        _fail(
            owner,
            "class_ids",
            "give no anchor a positive (every id occurs once)",
            "the loss averages over anchors that share their class with another row",
            "use a batch with at least two rows of one class",
        )
    safe = torch.where(positive, log_prob, torch.zeros_like(log_prob))  # no 0 * -inf
    weight = -torch.expm1(safe)  # 1 - p, accurate when p is small
    total = (weight * safe).sum(1)
    denom = count.clamp_min(1).to(z.dtype) if variant == "paper" else torch.full_like(total, n)
    per_anchor = torch.where(has_positive, -total / denom, torch.zeros_like(total))
    if reduction == "none":
        return per_anchor
    if reduction == "sum":
        return per_anchor.sum()
    return per_anchor.sum() / has_positive.sum()


def soft_cross_entropy(logits, soft_labels) -> torch.Tensor:
    """``mean_i -sum_c y_ic log softmax(logits_i)_c``, the code's classification loss."""
    owner = "soft_cross_entropy"
    check_embeddings(logits, owner, "logits")
    check_embeddings(soft_labels, owner, "soft_labels")
    if logits.shape != soft_labels.shape:
        _fail(
            owner,
            "soft_labels",
            f"has shape {tuple(soft_labels.shape)} but `logits` has {tuple(logits.shape)}",
            "one label distribution per row of logits",
            "pass (N, C) soft labels",
        )
    return -(soft_labels * F.log_softmax(logits, dim=1)).sum(1).mean()


def core_tuning_loss(
    features,
    labels,
    classifier: nn.Module,
    contrast_head: nn.Module,
    num_classes: int,
    *,
    eta: float = 0.1,
    temperature: float = 0.07,
    alpha: float = 1.0,
    min_negative_lam: float = 0.8,
    variant: str = "paper",
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """``{"loss", "ce", "contrastive"}`` of one Core-tuning step on encoder ``features``.

    Builds the enlarged batch (:func:`core_tuning_pairs`), then ``ce`` = soft-label
    cross-entropy of ``classifier`` on all 3B rows and ``contrastive`` =
    :func:`focal_sup_con` of ``contrast_head`` on the same rows with the rounded soft
    labels as classes; ``loss = ce + eta * contrastive``. ``eta`` = 0.1 is the README's
    command; the code's argparse default is 10.0.
    """
    owner = "core_tuning_loss"
    eta = float(eta) if isinstance(eta, int | float) and not isinstance(eta, bool) else eta
    if not isinstance(eta, float) or not math.isfinite(eta) or eta < 0:
        _fail(owner, "eta", f"is {eta!r}", "it must be a finite number >= 0", "pass eta=0.1")
    rows, soft = core_tuning_pairs(
        features,
        labels,
        num_classes,
        alpha=alpha,
        min_negative_lam=min_negative_lam,
        variant=variant,
        generator=generator,
    )
    ce = soft_cross_entropy(classifier(rows), soft)
    con = focal_sup_con(
        contrast_head(rows), soft_label_ids(soft), temperature=temperature, variant=variant
    )
    return {"loss": ce + eta * con, "ce": ce, "contrastive": con}


class _ContrastHead(nn.Module):
    """The code's ``Contrastor``: Linear(D, D)-ReLU-Linear(D, contrast_dim), L2-normalised."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.input = nn.Linear(dim, dim)
        self.output = nn.Linear(dim, out_dim)

    def forward(self, x):
        return F.normalize(self.output(F.relu(self.input(x))), dim=1)


class CoreTuning(nn.Module):
    """A pretrained ``encoder`` with a bias-free linear classifier and a contrast head
    (the code's ``ResnetSSLModel``), fine-tuned with :func:`core_tuning_loss`.

    ``model(x)`` returns class logits; ``model.terms(x, labels, generator=None)`` the
    terms of one training batch. ``feature_dim`` is the encoder's output width,
    ``contrast_dim`` the head's (256 in the code); ``eta`` = 0.1 (README; code default
    10), ``temperature`` = 0.07, ``alpha`` = 1.0, ``variant`` as in the module doc.
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        num_classes: int,
        *,
        contrast_dim: int = 256,
        eta: float = 0.1,
        temperature: float = 0.07,
        alpha: float = 1.0,
        min_negative_lam: float = 0.8,
        variant: str = "paper",
    ):
        super().__init__()
        owner = "CoreTuning"
        for name, value, low in (
            ("feature_dim", feature_dim, 1),
            ("num_classes", num_classes, 2),
            ("contrast_dim", contrast_dim, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                _fail(
                    owner, name, f"is {value!r}", f"it must be an integer >= {low}", "pass e.g. 10"
                )
        if not isinstance(encoder, nn.Module):
            _fail(
                owner,
                "encoder",
                f"is a {type(encoder).__name__}",
                "it must be a torch.nn.Module mapping inputs to (B, feature_dim) features",
                "pass the pretrained encoder",
                TypeError,
            )
        self.encoder = encoder
        self.classifier = nn.Linear(feature_dim, num_classes, bias=False)
        self.contrast_head = _ContrastHead(feature_dim, contrast_dim)
        self.num_classes = num_classes
        self.options = dict(
            eta=eta,
            temperature=temperature,
            alpha=alpha,
            min_negative_lam=min_negative_lam,
            variant=_variant(variant, owner),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))

    def terms(self, x, labels, generator: torch.Generator | None = None) -> dict:
        return core_tuning_loss(
            self.encoder(x),
            labels,
            self.classifier,
            self.contrast_head,
            self.num_classes,
            generator=generator,
            **self.options,
        )
