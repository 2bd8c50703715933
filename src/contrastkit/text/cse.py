"""Sentence-embedding methods beyond SimCSE: WhitenedCSE, DebCSE and MultiCSR's LLM-free
stages, as ``TextMethod``s (the pure losses are in ``contrastkit.losses``).

* ``whitenedcse`` (sentences): Zhuo et al., ACL 2023; SupstarZh/WhitenedCSE
  ``whitenedcse/models.py::MLPLayer, cl_forward``. The batch is encoded ``num_views``
  times with dropout (``--num_pos 3``); each view is shuffled-group-whitened with its own
  shuffle, then passed through the training head dense + tanh (the code's ``MLPLayer``,
  used in training only: ``--mlp_only_train``); view 0 is the anchor and the other views
  positives (:mod:`contrastkit.losses.whitened_cse`, which lists the released code's
  three defects and ``variant="official_code"``). Departure: the encoder's own pooling
  (mean for MiniLM) instead of the code's ``cls``.
* ``debcse`` (sentences): Miao, Du & Zhang, CIKM 2023; no official code; reconstruction
  stated in :mod:`contrastkit.losses.debcse`. Per batch, the batch is its own candidate
  pool: surface similarity (:func:`surface_similarity`, token Jaccard) and semantic
  similarity (the current encoder's cosine in eval mode, no gradient) give inverse
  propensity weights; each anchor draws one positive (its own dropout copy when no
  other sentence passes ``positive_threshold``) and one hard negative; the triples train
  with SimCSE's supervised InfoNCE.
* ``multicsr`` (triples, or pairs): Wang et al., NAACL 2024; Circle-Ming/MultiCSR.
  :func:`multicsr_filter` is stage 2 (self-curation, ``flan_filter.py``) with any scorer
  in place of the LLM; the method is stage 3 (``simcse/models.py::cl_masked_forward``):
  a frozen copy of the starting encoder (or ``masker=`` a model folder) masks in-batch
  false negatives whose cosine exceeds ``threshold`` = 0.95
  (:mod:`contrastkit.losses.multicsr`).
"""

from __future__ import annotations

import copy
import re

import torch
import torch.nn.functional as F

from contrastkit.core.validation import _fail, check_choice, check_in_range
from contrastkit.losses.base import SeededDraws
from contrastkit.losses.debcse import debcse, debcse_select, debcse_weights
from contrastkit.losses.multicsr import false_negative_mask, multicsr
from contrastkit.losses.whitened_cse import (
    VARIANTS,
    resolve_groups,
    whitened_cse_objective,
    whitened_views,
)
from contrastkit.text.methods import TextMethod, register_text_method

# ----------------------------------------------------------------------------- helpers


def _number(value, owner, arg, low, high, fix):
    return check_in_range(value, owner, arg, low, high, fix)


def _texts(batch, owner, width=None):
    batch = list(batch)
    for i, ex in enumerate(batch):
        ok = isinstance(ex, str) if width is None else (
            isinstance(ex, tuple | list) and len(ex) in width
            and all(isinstance(s, str) for s in ex)
        )  # fmt: skip
        if not ok:
            want = "a str" if width is None else " or ".join(f"{w}-tuple of str" for w in width)
            _fail(owner, "batch", f"item {i} is {ex!r}"[:120], f"each example must be {want}",
                  "read the data with contrastkit.text.data", TypeError)  # fmt: skip
    if len(batch) < 2:
        _fail(owner, "batch", f"has {len(batch)} example(s)", "a contrastive batch needs >= 2",
              "use a larger batch")  # fmt: skip
    return batch


_TOKEN = re.compile(r"\w+", re.UNICODE)


def surface_similarity(a: list[str], b: list[str]) -> torch.Tensor:
    """Token-overlap surface similarity: Jaccard index of the lower-cased word sets,
    ``|A & B| / |A | B|`` (1 for two empty texts). Returns (len(a), len(b)) float64 in
    [0, 1]. (DebCSE's exact surface features could not be read; Jaccard is our choice.)"""
    sa = [set(_TOKEN.findall(t.lower())) for t in a]
    sb = [set(_TOKEN.findall(t.lower())) for t in b]
    out = torch.ones(len(sa), len(sb), dtype=torch.float64)
    for i, x in enumerate(sa):
        for j, y in enumerate(sb):
            union = len(x | y)
            if union:
                out[i, j] = len(x & y) / union
    return out


# ----------------------------------------------------------------------------- WhitenedCSE


@register_text_method(
    "whitenedcse",
    summary="Dropout views, shuffled group whitening per view (several positives), InfoNCE",
    paper="Zhuo et al. 2023, WhitenedCSE: Whitening-based Contrastive Learning of "
    "Sentence Embeddings",
)
class WhitenedCSEMethod(SeededDraws, TextMethod):
    """WhitenedCSE on raw sentences (see the module docstring).

    ``num_views`` dropout passes (3 = the released ``--num_pos 3``: an anchor and two
    positives); ``num_groups`` 128 as released (must divide the encoder's dimension; None
    = the code's automatic rule); ``head`` adds the training-only dense + tanh layer,
    created by ``bind(encoder)`` (called by the trainer before the optimizer is built)
    or at the first batch. ``seed`` seeds the channel shuffles (saved with the state).
    Released defaults: t 0.05, lr 1e-5, batch 128, max length 32.
    """

    inputs = "sentences"
    default_lr = 1e-5

    def __init__(
        self,
        temperature=0.05,
        num_views=3,
        num_groups=128,
        eps=1e-5,
        variant="paper",
        head=True,
        seed=0,
    ):
        super().__init__()
        owner = "whitenedcse"
        self.temperature = _number(temperature, owner, "temperature", 1e-6, 1e6, "pass 0.05")
        if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 2:
            _fail(owner, "num_views", f"is {num_views!r}", "it must be an int >= 2 (an anchor "
                  "and at least one positive)", "pass num_views=3")  # fmt: skip
        self.num_views = num_views
        if num_groups is not None:
            resolve_groups(num_groups, 2, num_groups, owner)
        self.num_groups = num_groups
        self.eps = _number(eps, owner, "eps", 0.0, 1.0, "pass eps=1e-5 (0.0: the code)")
        self.variant = check_choice(variant, owner, "variant", VARIANTS)
        self.use_head = bool(head)
        self.head = None
        self._init_generator(seed)

    def bind(self, encoder) -> None:
        if self.use_head and self.head is None:
            d = encoder.dim
            if self.num_groups is not None:
                resolve_groups(self.num_groups, 2, d, "whitenedcse")
            self.head = torch.nn.Linear(d, d).to(encoder.device)

    def batch_loss(self, encoder, batch):
        batch = _texts(batch, "whitenedcse")
        self.bind(encoder)
        n, v = len(batch), self.num_views
        z = encoder(encoder.tokenize(batch * v))  # one pass, each row its own dropout mask
        z = z.view(v, n, -1).transpose(0, 1)  # (N, V, D)
        h = whitened_views(z, num_groups=self.num_groups, generator=self.generator,
                           eps=self.eps, variant=self.variant)  # fmt: skip
        if self.head is not None:
            h = torch.tanh(self.head(h.to(self.head.weight.dtype)))
        return whitened_cse_objective(h, temperature=self.temperature)


# ----------------------------------------------------------------------------- DebCSE


@register_text_method(
    "debcse",
    summary="Inverse-propensity-weighted selection of positives / hard negatives (no "
    "official code; reconstruction)",
    paper="Miao, Du & Zhang 2023, DebCSE: Rethinking Unsupervised Contrastive Sentence "
    "Embedding Learning in the Debiasing Perspective",
)
class DebCSEMethod(SeededDraws, TextMethod):
    """DebCSE on raw sentences (see the module docstring; a reconstruction, no official
    code). ``positive_threshold`` / ``negative_threshold`` are cosines of the current
    encoder; ``bins`` / ``clip`` define the propensity estimate; ``seed`` seeds the draws.
    """

    inputs = "sentences"
    default_lr = 3e-5

    def __init__(
        self,
        temperature=0.05,
        positive_threshold=0.7,
        negative_threshold=0.3,
        bins=10,
        clip=(0.05, 0.95),
        seed=0,
    ):
        super().__init__()
        owner = "debcse"
        self.temperature = _number(temperature, owner, "temperature", 1e-6, 1e6, "pass 0.05")
        self.positive_threshold = positive_threshold
        self.negative_threshold = negative_threshold
        self.bins = bins
        self.clip = None if clip is None else tuple(clip)
        # validate the selection settings once, on a dummy 2 x 2 pool
        debcse_weights(torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, 2,
                       dtype=torch.float64), positive_threshold=positive_threshold,
                       negative_threshold=negative_threshold, bins=bins, clip=self.clip)  # fmt: skip
        self._init_generator(seed)
        self.last_selection = None  # (positive index, negative index) of the last batch

    def select(self, encoder, batch):
        """Indices of each anchor's positive and hard negative in ``batch`` (-1: none)."""
        n = len(batch)
        sem = encoder.encode(batch, batch_size=max(n, 1), normalize=True).double()
        semantic = (sem @ sem.T).cpu()
        valid = ~torch.eye(n, dtype=torch.bool)
        w = debcse_weights(
            surface_similarity(batch, batch),
            semantic,
            positive_threshold=self.positive_threshold,
            negative_threshold=self.negative_threshold,
            valid=valid,
            bins=self.bins,
            clip=self.clip,
        )
        return debcse_select(w, generator=self.generator)

    def batch_loss(self, encoder, batch):
        batch = _texts(batch, "debcse")
        n = len(batch)
        pos, neg = self.select(encoder, batch)
        self.last_selection = (pos, neg)
        positives = [batch[j] if j >= 0 else batch[i] for i, j in enumerate(pos.tolist())]
        negatives = [batch[j] for j in neg.tolist() if j >= 0]
        z = encoder(encoder.tokenize(batch + positives + negatives))
        z_neg = z[2 * n :] if negatives else None
        return debcse(z[:n], z[n : 2 * n], z_neg, temperature=self.temperature)


# ----------------------------------------------------------------------------- MultiCSR


def multicsr_filter_rule(
    score_pos,
    score_neg,
    *,
    positive_line: float = 3.0,
    negative_line: float = 3.0,
    similarity_gap: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MultiCSR's self-curation rule (``flan_filter.py``, scoring pass) on the scores of
    (premise, entailment) ``score_pos`` and (premise, contradiction) ``score_neg``.

    As the code: a triple is kept *swapped* (the contradiction becomes the positive) when
    ``score_pos <= negative_line and score_neg >= positive_line``, else kept as is when
    ``score_neg <= negative_line and score_pos >= positive_line``; with
    ``similarity_gap`` equal scores are never kept. Returns (keep, swap) bool tensors.
    Default filter 15: lines 3 / 3 with the gap.
    """
    sp = torch.as_tensor(score_pos, dtype=torch.float64)
    sn = torch.as_tensor(score_neg, dtype=torch.float64)
    if sp.shape != sn.shape or not bool(torch.isfinite(sp).all() & torch.isfinite(sn).all()):
        _fail("multicsr_filter", "scores", f"have shapes {tuple(sp.shape)} and "
              f"{tuple(sn.shape)}", "one finite score pair per example", "check the scorer")  # fmt: skip
    gap_ok = (sp != sn) if similarity_gap else torch.ones_like(sp, dtype=torch.bool)
    swapped = (sp <= negative_line) & (sn >= positive_line) & gap_ok
    as_is = ~swapped & (sn <= negative_line) & (sp >= positive_line) & gap_ok
    return swapped | as_is, swapped


def encoder_scorer(encoder, scale: float = 5.0):
    """A scorer from a (frozen) ``TextEncoder`` in place of the paper's LLM:
    ``scale * clamp(cos(a, b), 0, 1)`` on the LLM's 0-5 scale (our mapping)."""

    def score(a: list[str], b: list[str]) -> torch.Tensor:
        ea = encoder.encode(list(a), normalize=True).double()
        eb = encoder.encode(list(b), normalize=True).double()
        return scale * (ea * eb).sum(-1).clamp(0, 1).cpu()

    return score


def multicsr_filter(
    examples,
    scorer=None,
    threshold: float = 3.0,
    *,
    negative_threshold: float | None = None,
    similarity_gap: bool = True,
    scores=None,
) -> list:
    """Score-threshold filtering of generated examples (MultiCSR stage 2, LLM-free).

    ``examples``: (premise, entailment, contradiction) triples, or (a, b) pairs.
    ``scorer(list_a, list_b) -> scores`` on a 0-5 scale (e.g. :func:`encoder_scorer`
    over a frozen encoder; a ``TextEncoder`` is wrapped with it); or ``scores=`` given:
    (K, 2) for triples (entailment, contradiction scores), (K,) for pairs.
    Triples follow :func:`multicsr_filter_rule` with ``positive_line = threshold`` and
    ``negative_line = negative_threshold`` (default: ``threshold``) and are returned with
    roles swapped where the rule swaps; pairs are kept when their score >= ``threshold``.
    """
    owner = "multicsr_filter"
    examples = list(examples)
    if not examples:
        return []
    width = {len(ex) if isinstance(ex, tuple | list) else -1 for ex in examples}
    if width not in ({2}, {3}):
        _fail(owner, "examples", f"have widths {sorted(width)}", "all (a, b) pairs or all "
              "(premise, entailment, contradiction) triples", "split them by kind")  # fmt: skip
    hi = _number(threshold, owner, "threshold", 0.0, 5.0, "pass a 0-5 score, e.g. 3.0")
    lo = hi if negative_threshold is None else _number(
        negative_threshold, owner, "negative_threshold", 0.0, 5.0, "pass e.g. 3.0")  # fmt: skip
    if scores is None:
        if scorer is None:
            _fail(owner, "scorer", "is None and no `scores` were given", "one of them "
                  "provides the scores", "pass scorer=encoder_scorer(frozen_encoder)")  # fmt: skip
        if hasattr(scorer, "encode"):
            scorer = encoder_scorer(scorer)
        a = [ex[0] for ex in examples]
        cols = [scorer(a, [ex[k] for ex in examples]) for k in range(1, len(examples[0]))]
        scores = torch.stack([torch.as_tensor(c, dtype=torch.float64) for c in cols], -1)
    scores = torch.as_tensor(scores, dtype=torch.float64)
    k = len(examples)
    if width == {2}:
        scores = scores.reshape(k, -1)[:, 0] if scores.dim() == 2 else scores
        if scores.shape != (k,):
            _fail(owner, "scores", f"has shape {tuple(scores.shape)}", f"pairs need ({k},)",
                  "pass one score per pair")  # fmt: skip
        return [ex for ex, s in zip(examples, scores.tolist(), strict=True) if s >= hi]
    if scores.shape != (k, 2):
        _fail(owner, "scores", f"has shape {tuple(scores.shape)}", f"triples need ({k}, 2)",
              "pass (entailment score, contradiction score) per triple")  # fmt: skip
    keep, swap = multicsr_filter_rule(scores[:, 0], scores[:, 1], positive_line=hi,
                                      negative_line=lo, similarity_gap=similarity_gap)  # fmt: skip
    out = []
    for ex, kk, sw in zip(examples, keep.tolist(), swap.tolist(), strict=True):
        if kk:
            out.append((ex[0], ex[2], ex[1]) if sw else tuple(ex))
    return out


@register_text_method(
    "multicsr",
    summary="Supervised SimCSE with in-batch false negatives masked by a frozen encoder",
    paper="Wang et al. 2024, Large Language Models can Contrastively Refine their Generation "
    "for Better Sentence Representation Learning (MultiCSR)",
)
class MultiCSRMethod(TextMethod):
    """MultiCSR stage 3 on (anchor, positive, hard negative) triples or (anchor, positive)
    pairs. ``masker``: None = a frozen copy of the encoder as it is at ``bind`` (the
    start of training; the paper uses a frozen unsup-SimCSE checkpoint), or a model
    folder / ``TextEncoder``. The masker runs in eval mode without gradient.
    ``threshold`` phi = 0.95, t = 0.05, ``variant`` as :func:`contrastkit.losses.multicsr.
    multicsr`."""

    inputs = "triples"
    default_lr = 5e-5

    def __init__(self, temperature=0.05, threshold=0.95, variant="paper", masker=None):
        super().__init__()
        owner = "multicsr"
        self.temperature = _number(temperature, owner, "temperature", 1e-6, 1e6, "pass 0.05")
        self.threshold = _number(threshold, owner, "threshold", -1.0, 1.0, "pass 0.95")
        self.variant = check_choice(variant, owner, "variant", VARIANTS)
        self.masker_source = masker if isinstance(masker, str | type(None)) else None
        self.masker = None if isinstance(masker, str | type(None)) else masker
        if self.masker is not None and not hasattr(self.masker, "tokenize"):
            _fail(owner, "masker", f"is a {type(masker).__name__}", "it must be None, a "
                  "model folder or a TextEncoder", "pass masker=None", TypeError)  # fmt: skip
        if self.masker is not None:
            self._freeze(self.masker)
        self.last_masked = None  # number of masked candidates in the last batch

    @staticmethod
    def _freeze(m):
        for p in m.parameters():
            p.requires_grad_(False)
        m.eval()

    def bind(self, encoder) -> None:
        if self.masker is None:
            if self.masker_source is None:
                self.masker = copy.deepcopy(encoder)
            else:
                from contrastkit.text.encoder import TextEncoder

                self.masker = TextEncoder.from_pretrained(
                    self.masker_source, max_length=encoder.max_length
                ).to(encoder.device)
            self._freeze(self.masker)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.masker is not None:
            self.masker.eval()  # frozen: no dropout
        return self

    def batch_loss(self, encoder, batch):
        batch = _texts(batch, "multicsr", width=(2, 3))
        widths = {len(ex) for ex in batch}
        if len(widths) != 1:
            _fail("multicsr", "batch", "mixes pairs and triples", "one kind per batch",
                  "split the data by kind")  # fmt: skip
        self.bind(encoder)
        n, k = len(batch), widths.pop()
        texts = [ex[c] for c in range(k) for ex in batch]
        z = encoder(encoder.tokenize(texts))
        with torch.no_grad():
            zm = F.normalize(self.masker(self.masker.tokenize(texts)).double(), dim=-1)
        frozen = zm[:n] @ zm[n:].T  # [cos(z1', z2') | cos(z1', z3')]
        neg = z[2 * n :] if k == 3 else None
        loss = multicsr(z[:n], z[n : 2 * n], neg, frozen_similarity=frozen.to(z.device),
                        threshold=self.threshold, temperature=self.temperature,
                        variant=self.variant)  # fmt: skip
        mask = false_negative_mask(frozen, self.threshold, temperature=self.temperature,
                                   variant=self.variant)  # fmt: skip
        self.last_masked = int(mask.sum())
        return loss
