"""SimCTG: the token-level contrastive objective of Su et al. (NeurIPS 2022, "A Contrastive
Framework for Neural Text Generation", section "Contrastive Training"), with its MLE term.

Official code: ``yxuansu/SimCTG``, ``simctg/lossfunction.py::SimCTGLoss`` (read for this
module). The paper's full text could not be opened here: the per-sequence form below,
``L_CL`` written for one sequence x with the factor ``1 / (|x| (|x| - 1))``, is the
paper's equation as recalled, not re-read; the code's batch-level form was read.

For one sequence x with last-layer hidden states h_1..h_n (n valid tokens) and
``s_ij = cos(h_i, h_j)``:

    L_CL(x) = 1 / (n (n - 1)) * sum_i sum_{j != i} max(0, rho - (s_ii - s_ij))
    L(x)    = L_MLE(x) + L_CL(x)      (weight 1, margin rho = 0.5 in the paper's runs)

``s_ii = 1`` for cosine, so each term is ``max(0, s_ij - (1 - rho))``: a hinge that pushes
every pair of distinct token representations below cosine ``1 - rho``.

Paper vs code (``variant``):

* ``"paper"`` (default): each sequence is normalised by its own ``n (n - 1)`` pairs (and
  its MLE term by its own number of targets), then sequences are averaged.
* ``"official_code"``: the code sums the hinge over every valid pair of the batch and
  divides by the batch's total number of valid pairs (``sum(loss_mask)``), and its
  ``CrossEntropyLoss()`` averages the NLL over all target tokens of the batch. With equal
  lengths the two agree; with padding, long sequences weigh more in the code. The code
  also takes ``s_ii`` from the diagonal of the cosine matrix (1 up to rounding) where
  ``"paper"`` uses 1 exactly.

Both normalise the hidden states to unit length first (``last_hidden_states / norm``), as
the code does. Departures from the code, in both variants: padding comes from ``mask``
(the code derives it from ``pad_token_id``, which miscounts when pad = eos occurs inside
a text, and assumes right padding); an all-zero valid hidden state is an error (the code
returns NaN); half-precision inputs are computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastkit.core.logits import compute_dtype
from contrastkit.core.validation import (
    _fail,
    check_choice,
    check_flag,
    check_reduction,
    check_tensor,
)
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.registry import register_loss

VARIANTS = ("paper", "official_code")


def _check_margin(margin, owner: str) -> float:
    if isinstance(margin, torch.Tensor) and margin.numel() == 1:
        margin = float(margin.detach())
    if isinstance(margin, bool) or not isinstance(margin, int | float):
        _fail(
            owner,
            "margin",
            f"is a {type(margin).__name__}",
            "it must be a number",
            "pass e.g. margin=0.5",
            TypeError,
        )
    if not (margin >= 0 and margin < float("inf")):
        _fail(
            owner,
            "margin",
            f"is {margin}",
            "it must be a finite number >= 0 (the hinge pushes cosines below 1 - margin)",
            "pass e.g. margin=0.5 (the paper's)",
        )
    return float(margin)


def _check_hidden(hidden, owner: str) -> torch.Tensor:
    check_tensor(hidden, owner, "hidden")
    if not torch.is_floating_point(hidden):
        _fail(
            owner,
            "hidden",
            f"has dtype {hidden.dtype}",
            "hidden states must be floating point",
            "cast with hidden.float()",
            TypeError,
        )
    if hidden.dim() != 3 or hidden.shape[-1] < 1:
        _fail(
            owner,
            "hidden",
            f"has shape {tuple(hidden.shape)}",
            "it must be (B, T, d): last-layer hidden states of B sequences of T tokens",
            "pass outputs.hidden_states[-1]; for one sequence use hidden[None]",
        )
    return hidden


def sequence_mask(mask, shape: tuple[int, int], owner: str, arg: str = "mask") -> torch.Tensor:
    """``mask`` as a bool ``(B, T)`` tensor (True = real token); ``None`` means all valid.

    Accepts bool tensors and integer 0/1 tensors (a Hugging Face ``attention_mask``)."""
    if mask is None:
        return torch.ones(shape, dtype=torch.bool)
    check_tensor(mask, owner, arg)
    if mask.dtype != torch.bool:
        if mask.dtype.is_floating_point or mask.dtype.is_complex:
            _fail(
                owner,
                arg,
                f"has dtype {mask.dtype}",
                "a token mask must be bool or integer 0/1 (True / 1 = real token)",
                f"pass {arg}.bool()",
                TypeError,
            )
        if bool(((mask != 0) & (mask != 1)).any()):
            _fail(
                owner,
                arg,
                "has integer entries other than 0 and 1",
                "a token mask holds 1 for real tokens and 0 for padding",
                f"pass {arg} == 1 or the tokenizer's attention_mask",
            )
        mask = mask == 1
    if tuple(mask.shape) != tuple(shape):
        _fail(
            owner,
            arg,
            f"has shape {tuple(mask.shape)} but the hidden states are {tuple(shape)} (B, T)",
            "the mask has one entry per token",
            "pass the attention_mask of the same batch",
        )
    return mask


def _positions(where: torch.Tensor, limit: int = 6) -> str:
    """``(sequence, token)`` positions of the True entries of a (B, T) mask, for messages."""
    items = [tuple(p) for p in where.nonzero().tolist()]
    shown = ", ".join(str(p) for p in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def unit_token_states(hidden: torch.Tensor, valid: torch.Tensor, owner: str) -> torch.Tensor:
    """Valid rows scaled to unit norm, padding rows 0. Padding rows never enter a norm or a
    product (``where`` keeps their gradient at 0 even when they hold NaN)."""
    dtype = compute_dtype(hidden)
    keep = valid[..., None]
    h = torch.where(keep, hidden.to(dtype), torch.ones((), dtype=dtype, device=hidden.device))
    if not bool(torch.isfinite(h).all()):
        bad = (~torch.isfinite(h)).any(-1)
        _fail(
            owner,
            "hidden",
            f"has NaN or inf at real-token (sequence, token) positions {_positions(bad)}",
            "hidden states of real tokens must be finite",
            "check the model for overflow (run it in float32 or bfloat16)",
        )
    norm = torch.linalg.vector_norm(h, dim=-1, keepdim=True)
    if bool((norm == 0).any()):
        _fail(
            owner,
            "hidden",
            f"is all-zero at (sequence, token) positions {_positions(norm[..., 0] == 0)}",
            "cosine similarity is undefined for a zero vector",
            "mask those tokens out (mask=...) or check the model",
        )
    return torch.where(keep, h / norm, torch.zeros((), dtype=dtype, device=hidden.device))


def _per_sequence(total, count, reduction: str, variant: str, owner: str, what: str):
    """Per-sequence sums ``total`` (B,) over ``count`` (B,) terms, reduced as documented in
    :func:`simctg_contrastive`."""
    if not bool((count > 0).any()):
        _fail(
            owner,
            "mask",
            f"leaves no {what} in the batch",
            f"the objective averages over {what}",
            "pass sequences with at least two real tokens (and at least one target)",
        )
    if variant == "official_code":
        if reduction == "mean":
            return total.sum() / count.sum()
        return total if reduction == "none" else total.sum()
    per = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / (count > 0).sum()


def _contrastive_sums(hidden, mask, margin, variant, owner):
    """Hinge sums (B,) and numbers of valid ordered pairs (B,) of each sequence."""
    valid = sequence_mask(mask, tuple(hidden.shape[:2]), owner).to(hidden.device)
    u = unit_token_states(hidden, valid, owner)
    s = u @ u.transpose(1, 2)  # (B, T, T) cosines; 0 on padding rows and columns
    if variant == "official_code":
        gold = s.diagonal(dim1=1, dim2=2)[..., None]  # the code's s_ii (1 up to rounding)
    else:
        gold = torch.ones((), dtype=s.dtype, device=s.device)
    t = s.shape[1]
    eye = torch.eye(t, dtype=torch.bool, device=s.device)
    pairs = valid[:, :, None] & valid[:, None, :] & ~eye
    hinge = torch.where(pairs, F.relu(margin - (gold - s)), torch.zeros((), dtype=s.dtype))
    n = valid.sum(1).to(s.dtype)
    return hinge.sum((1, 2)), n * (n - 1)


def simctg_contrastive(hidden, mask=None, margin=0.5, variant="paper", reduction="mean"):
    """SimCTG's token-level contrastive term ``L_CL`` (Su et al., NeurIPS 2022).

    ``hidden`` (B, T, d): last-layer hidden states; ``mask`` (B, T): True (or 1) for real
    tokens, False (0) for padding, ``None`` = all real. Hidden states are L2-normalised;
    every ordered pair ``(i, j)``, ``i != j``, of real tokens of the same sequence adds
    ``max(0, margin - (s_ii - s_ij))``.

    ``variant="paper"``: ``L_CL(x)`` is each sequence's mean over its ``n (n - 1)`` pairs;
    ``reduction="none"`` returns it per sequence (B,) (0 for a sequence with fewer than 2
    real tokens), ``"mean"`` averages over the sequences that have pairs, ``"sum"`` adds.
    ``variant="official_code"`` (``SimCTGLoss.contrastive_loss``): ``"mean"`` is the hinge
    summed over the batch divided by the batch's number of pairs, ``"sum"`` the hinge sum,
    ``"none"`` the per-sequence hinge sums (B,); ``s_ii`` comes from the cosine matrix's
    diagonal. See the module docstring for why the two differ.
    """
    owner = "simctg_contrastive"
    check_choice(variant, owner, "variant", VARIANTS)
    check_reduction(reduction, owner)
    margin = _check_margin(margin, owner)
    hidden = _check_hidden(hidden, owner)
    total, count = _contrastive_sums(hidden, mask, margin, variant, owner)
    return _per_sequence(total, count, reduction, variant, owner, "pair of real tokens")


def _check_logits_labels(logits, labels, hidden, owner):
    check_tensor(logits, owner, "logits")
    check_tensor(labels, owner, "labels")
    b, t = hidden.shape[:2]
    if not torch.is_floating_point(logits) or logits.dim() != 3 or logits.shape[:2] != (b, t):
        _fail(
            owner,
            "logits",
            f"has shape {tuple(logits.shape)} and dtype {logits.dtype}",
            f"it must be floating point (B, T, V) with the hidden states' B, T = {b}, {t}",
            "pass outputs.logits of the same forward pass",
            TypeError if not torch.is_floating_point(logits) else ValueError,
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.dtype.is_complex:
        _fail(
            owner,
            "labels",
            f"has dtype {labels.dtype}",
            "labels are integer token ids",
            "pass input_ids (or labels with -100 at ignored positions) as a long tensor",
            TypeError,
        )
    if tuple(labels.shape) != (b, t):
        _fail(
            owner,
            "labels",
            f"has shape {tuple(labels.shape)}",
            f"it must be (B, T) = {(b, t)}, one token id per position",
            "pass labels of the same batch as the hidden states",
        )


def next_token_nll(logits, labels, mask=None, ignore_index=-100, shift_labels=True):
    """Per-sequence sums (B,) of the next-token NLL and numbers of targets (B,).

    ``shift_labels=True`` follows Hugging Face: ``labels`` are the input ids and position
    t's logits predict ``labels[:, t + 1]``. ``shift_labels=False`` follows SimCTG's code,
    whose data pipeline already aligns ``labels[:, t]`` with ``logits[:, t]``. Targets equal
    to ``ignore_index`` or at masked positions are skipped. The log-softmax runs in float32
    (float64 for float64 logits)."""
    owner = "next_token_nll"
    valid = sequence_mask(mask, tuple(labels.shape), owner).to(labels.device)
    if shift_labels:
        logits, labels, valid = logits[:, :-1], labels[:, 1:], valid[:, 1:]
    target = valid & (labels != ignore_index)
    v = logits.shape[-1]
    bad = target & ((labels < 0) | (labels >= v))
    if bool(bad.any()):
        _fail(
            owner,
            "labels",
            f"has ids outside [0, {v}) at (sequence, position) {_positions(bad)}",
            "target ids index the vocabulary of the logits",
            f"use ignore_index={ignore_index} for positions without a target",
        )
    safe = torch.where(target, labels, torch.zeros((), dtype=labels.dtype))
    dtype = compute_dtype(logits)
    nll = F.cross_entropy(
        logits.to(dtype).reshape(-1, v), safe.reshape(-1), reduction="none"
    ).view_as(safe)
    nll = torch.where(target, nll, torch.zeros((), dtype=nll.dtype))
    return nll.sum(1), target.sum(1).to(nll.dtype)


def simctg(
    hidden,
    mask=None,
    logits=None,
    labels=None,
    margin=0.5,
    variant="paper",
    reduction="mean",
    ignore_index=-100,
    shift_labels=True,
):
    """SimCTG's training objective ``L = L_MLE + L_CL`` (Su et al., NeurIPS 2022).

    Without ``logits`` and ``labels`` this is :func:`simctg_contrastive`. With them (both
    or neither) it adds the next-token cross-entropy (:func:`next_token_nll`), weight 1 as
    in the paper. ``variant="paper"`` averages the NLL over each sequence's targets, then
    over sequences; ``"official_code"`` averages over all targets of the batch (the code's
    ``CrossEntropyLoss()``). ``reduction="none"`` gives per-sequence values (B,); their mean
    equals ``"mean"`` when every sequence has at least 2 real tokens and one target, and,
    for ``"official_code"``, the same number of them.
    """
    owner = "simctg"
    check_choice(variant, owner, "variant", VARIANTS)
    check_reduction(reduction, owner)
    margin = _check_margin(margin, owner)
    hidden = _check_hidden(hidden, owner)
    total, count = _contrastive_sums(hidden, mask, margin, variant, owner)
    loss = _per_sequence(total, count, reduction, variant, owner, "pair of real tokens")
    if (logits is None) != (labels is None):
        missing = "labels" if labels is None else "logits"
        _fail(
            owner,
            missing,
            "is None while the other of logits / labels is given",
            "the MLE term needs both",
            "pass both logits= and labels= (or neither for the contrastive term alone)",
        )
    if logits is None:
        return loss
    _check_logits_labels(logits, labels, hidden, owner)
    nll, targets = next_token_nll(logits, labels, mask, ignore_index, shift_labels)
    return loss + _per_sequence(nll, targets, reduction, variant, owner, "target token")


@register_loss(
    "simctg",
    summary="Token-level contrastive hinge on LM hidden states (+ MLE when logits are given)",
    paper="Su et al. 2022 (NeurIPS), A Contrastive Framework for Neural Text Generation",
)
class SimCTG(ContrastiveLoss):
    """Module form of :func:`simctg`: ``loss(hidden, mask=None, logits=None, labels=None)``.

    ``hidden`` (B, T, d) last-layer hidden states, ``mask`` (B, T) attention mask,
    ``logits`` (B, T, V) and ``labels`` (B, T) for the MLE term (``labels`` = input ids
    with ``shift_labels=True``, -100 where no target).
    """

    function = staticmethod(simctg)

    inputs = "sequence"

    def __init__(
        self,
        margin=0.5,
        variant="paper",
        reduction="mean",
        ignore_index=-100,
        shift_labels=True,
    ):
        super().__init__()
        owner = type(self).__name__
        self.margin = _check_margin(margin, owner)
        self.variant = check_choice(variant, owner, "variant", VARIANTS)
        self._init_reduction(reduction)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            _fail(
                owner,
                "ignore_index",
                f"is {ignore_index!r}",
                "it must be an int",
                "pass ignore_index=-100",
                TypeError,
            )
        self.ignore_index = ignore_index
        self.shift_labels = check_flag(shift_labels, owner, "shift_labels")

    def forward(self, hidden, mask=None, logits=None, labels=None):
        return simctg(hidden, mask, logits, labels, **self.function_kwargs())
