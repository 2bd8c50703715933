"""SimCSE: unsupervised (dropout views) and supervised (NLI triples) sentence embeddings.

Gao, Yao & Chen, "SimCSE: Simple Contrastive Learning of Sentence Embeddings", EMNLP 2021;
official code princeton-nlp/SimCSE ``simcse/models.py::cl_forward``.

Loss (paper eq. 4, unsupervised; eq. 5, supervised), with cosine similarity ``sim`` and
temperature ``tau = 0.05``, one direction only (anchors h_i against the batch's second
views)::

    l_i = -log  e^{sim(h_i, h_i+)/tau} / sum_j ( e^{sim(h_i, h_j+)/tau} [+ e^{sim(h_i, h_j-)/tau}] )

This is the library core's one-directional two-tower InfoNCE
(``contrastkit.losses.info_nce.clip(..., symmetric=False)``, hard negatives passed as
``negatives=``, i.e. extra negatives of every anchor), which we call.

``hard_negative_weight`` is the official ``--hard_negative_weight`` (default 0): a value
added to the *logit* (after the division by tau) of each anchor's own hard negative
``sim(h_i, h_i-)/tau``; the paper's appendix reports it (as "alpha", a log weight) and
keeps 0, which is exactly eq. 5. Non-zero weights use a small explicit cross-entropy,
since the core has no per-pair logit offset.

Departures from the official code, all stated: no MLP pooler head (the official ``cls``
pooler adds one during training; here the encoder's own pooling is used, so a
sentence-transformers model trains as it is served); no auxiliary MLM loss (``do_mlm``,
off by default there too); the two views are encoded in one forward pass of the
concatenated batch ``[x; x]`` (the official code interleaves ``[x_1, x_1, x_2, x_2, ...]``;
each row draws its own dropout mask either way).

Both methods implement the split protocol of ``contrastkit.text.methods``
(``embed_inputs`` / ``objective``), so ``TextTrainConfig.grad_cache_chunk`` trains them
with the cached-gradient pass (Gao et al. 2021, GradCache); ``batch_loss`` is
``split_batch_loss``, the same one-pass encoding as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastkit.core.validation import (
    REDUCTIONS,
    _fail,
    check_choice,
    check_embeddings,
    check_same_shape,
)
from contrastkit.losses.info_nce import clip
from contrastkit.text.methods import TextMethod, register_text_method, split_batch_loss

PAPER = "Gao, Yao & Chen 2021, SimCSE: Simple Contrastive Learning of Sentence Embeddings"


def _check_temperature(t, owner):
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
        _fail(owner, "temperature", f"is {t!r}", "it must be a number > 0", "pass e.g. 0.05")
    return float(t)


def _check_weight(w, owner):
    if isinstance(w, bool) or not isinstance(w, (int, float)) or w != w or abs(w) == float("inf"):
        _fail(
            owner,
            "hard_negative_weight",
            f"is {w!r}",
            "it must be a finite number (a log weight added to the hard negative's logit)",
            "pass 0.0 (the paper) or e.g. 1.0",
        )
    return float(w)


def simcse_loss(z1, z2, z3=None, *, temperature=0.05, hard_negative_weight=0.0, reduction="mean"):
    """SimCSE's loss over embeddings: ``z1`` (N, D) anchors, ``z2`` (N, D) positives
    (second dropout views or entailment sentences), optional ``z3`` (N, D) hard negatives.

    Row i's logits are ``[cos(z1_i, z2_j)/t]_j`` then ``[cos(z1_i, z3_j)/t]_j`` (eq. 5;
    eq. 4 without ``z3``), the label is column i; ``hard_negative_weight`` is added to
    logit ``(i, N + i)`` as in ``cl_forward``. Returns the mean (or sum / per-anchor
    ``(N,)`` with ``reduction``) cross-entropy.
    """
    owner = "simcse_loss"
    t = _check_temperature(temperature, owner)
    w = _check_weight(hard_negative_weight, owner)
    check_choice(reduction, owner, "reduction", REDUCTIONS)
    check_embeddings(z1, owner, "z1")
    check_embeddings(z2, owner, "z2")
    check_same_shape(z1, z2, owner, ("z1", "z2"))
    if z3 is not None:
        check_embeddings(z3, owner, "z3")
        check_same_shape(z1, z3, owner, ("z1", "z3"))
    elif w != 0.0:
        _fail(
            owner,
            "hard_negative_weight",
            f"is {w} but no hard negatives `z3` were given",
            "the weight applies to hard negatives only",
            "pass z3= or leave hard_negative_weight=0",
        )
    if w == 0.0:  # the paper's eq. 4 / 5: the library core
        return clip(z1, z2, negatives=z3, temperature=t, symmetric=False, reduction=reduction)
    a, b, c = (
        F.normalize(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim=-1)
        for x in (z1, z2, z3)
    )
    n = a.shape[0]
    logits = torch.cat([a @ b.T, a @ c.T], dim=1) / t
    logits = logits + w * torch.cat([torch.zeros(n, n), torch.eye(n)], 1).to(logits)
    return F.cross_entropy(logits, torch.arange(n, device=a.device), reduction=reduction)


@register_text_method(
    "simcse_unsup",
    summary="Unsupervised SimCSE: the same sentences encoded twice, dropout as augmentation",
    paper=PAPER,
)
class SimCSEUnsup(TextMethod):
    """Unsupervised SimCSE (paper sec. 3, eq. 4): each batch of sentences is encoded
    twice in train mode; the two dropout views of a sentence are positives, the other
    sentences' second views are negatives. Paper defaults: tau 0.05, lr 3e-5, batch 64,
    max length 32 (official ``run_unsup_example.sh``)."""

    inputs = "sentences"
    default_lr = 3e-5

    def __init__(self, temperature=0.05):
        super().__init__()
        self.temperature = _check_temperature(temperature, "simcse_unsup")

    def embed_inputs(self, batch):
        batch = list(batch)
        return (batch, batch)  # two dropout views of every sentence

    def objective(self, z1, z2):
        return simcse_loss(z1, z2, temperature=self.temperature)

    def batch_loss(self, encoder, batch):
        return split_batch_loss(self, encoder, batch)  # [x; x] in one pass


@register_text_method(
    "simcse_sup",
    summary="Supervised SimCSE: (anchor, entailment, contradiction) triples, hard negatives",
    paper=PAPER,
)
class SimCSESup(TextMethod):
    """Supervised SimCSE (paper sec. 4, eq. 5): anchors contrasted with all positives and
    all hard negatives of the batch. ``hard_negative_weight`` as the official code (0 =
    the paper). ``(anchor, positive)`` pairs are accepted too (the official code's
    two-sentence case, eq. 4 with entailment pairs as positives). Paper defaults: tau
    0.05, lr 5e-5, batch 512."""

    inputs = "triples"
    default_lr = 5e-5

    def __init__(self, temperature=0.05, hard_negative_weight=0.0):
        super().__init__()
        self.temperature = _check_temperature(temperature, "simcse_sup")
        self.hard_negative_weight = _check_weight(hard_negative_weight, "simcse_sup")

    def embed_inputs(self, batch):
        batch = list(batch)
        width = {len(ex) if isinstance(ex, (tuple, list)) else 0 for ex in batch}
        if not width <= {2, 3} or len(width) != 1:
            _fail(
                "simcse_sup",
                "batch",
                f"holds items of lengths {sorted(width)} (0 = not a tuple)",
                "supervised SimCSE needs all (anchor, positive, hard negative) triples or "
                "all (anchor, positive) pairs",
                "read the data with contrastkit.text.data.read_triples or read_pairs",
                TypeError,
            )
        return tuple(list(col) for col in zip(*batch, strict=True))  # anchors, positives[, negs]

    def objective(self, z1, z2, z3=None):
        return simcse_loss(
            z1,
            z2,
            z3,
            temperature=self.temperature,
            hard_negative_weight=self.hard_negative_weight,
        )

    def batch_loss(self, encoder, batch):
        return split_batch_loss(self, encoder, batch)  # column after column, one pass
