"""Context-aware decoding (CAD) and its adaptive version AdaCAD, on any Hugging Face causal LM.

Both contrast the next-token logits the model gives **with** the context,
``z_ctx = z(. | context, question, y_<t)``, and **without** it, ``z_plain = z(. | question,
y_<t)``, at every step:

    z = (1 + alpha_t) * z_ctx - alpha_t * z_plain

- CAD (Shi et al., "Trusting Your Evidence: Hallucinate Less with Context-aware Decoding",
  NAACL 2024 short / arXiv 2305.14739): a fixed alpha (1.0 for knowledge-conflict QA, 0.5
  for summarisation, per the data files ``nq_swap_2_-1`` / ``tofu_1.5_-0.5`` shipped with
  the AdaCAD code). We could not read the CAD paper itself; the rule is the one stated in
  the AdaCAD paper and code.
- AdaCAD (Wang, Prasad, Stengel-Eskin & Bansal, NAACL 2025, arXiv 2409.07394): alpha_t is
  the Jensen-Shannon divergence (natural log, so in [0, ln 2]) between softmax(z_ctx) and
  softmax(z_plain), per row and per step, on the unfiltered distributions. Code followed:
  ``HanNight/AdaCAD`` ``group_decode_fileio_adacad.py`` (``get_jsd``, ``decode``,
  ``logits_sampling_projection``).

The two passes run in one process with their own KV caches (the prompts differ in length),
both advanced with the chosen token; the official code runs them as two processes joined
by ``all_reduce`` with batch size 1. Here prompts are batched and left-padded; padding,
eos and ``stopping_criteria`` follow ``contrastkit.decoding.search``, except that the
functions return the generated tokens only, ``(B, new)``, since the two prompts differ.
"""

from __future__ import annotations

import math

import torch

from contrastkit.core.validation import _fail, check_flag, check_tensor
from contrastkit.decoding.search import (
    _check_generator,
    _check_int,
    _check_model,
    _check_pad,
    _check_prompt,
    _check_token_ids,
    _Finisher,
    _model_device,
    _prob_dtype,
    _Runner,
    nucleus_mask,
)

__all__ = ["adacad_generate", "cad_generate", "jensen_shannon"]

LN2 = math.log(2.0)


def jensen_shannon(logits_p, logits_q):
    """Jensen-Shannon divergence between ``softmax(logits_p)`` and ``softmax(logits_q)``
    over the last axis, in nats (so in [0, ln 2]), as AdaCAD's ``get_jsd``:

        JSD = 1/2 KL(p || m) + 1/2 KL(q || m),   m = (p + q) / 2.

    Computed from log-softmax in float32 (float64 for float64 input): ``log m =
    logaddexp(log p, log q) - ln 2``, and ``0 * log 0`` terms are 0, so logits of -inf
    (masked tokens) are safe. Departure: the official code clamps probabilities at 1e-9
    before taking logs and averages over the batch (``batchmean``, with batch size 1);
    here the value is exact and per row. Returns shape ``logits_p.shape[:-1]``.
    """
    owner = "jensen_shannon"
    for name, x in (("logits_p", logits_p), ("logits_q", logits_q)):
        check_tensor(x, owner, name)
        if not torch.is_floating_point(x) or x.dim() < 1:
            _fail(
                owner,
                name,
                f"has dtype {x.dtype} and shape {tuple(x.shape)}",
                "logits must be a floating tensor (..., V)",
                f"pass {name}.float()",
                TypeError,
            )
    if logits_p.shape != logits_q.shape:
        _fail(
            owner,
            "logits_q",
            f"has shape {tuple(logits_q.shape)} but `logits_p` has {tuple(logits_p.shape)}",
            "both must score the same vocabulary for the same rows",
            "pass logits of the same model and batch",
        )
    dtype = torch.float64 if torch.float64 in (logits_p.dtype, logits_q.dtype) else torch.float32
    log_p = torch.log_softmax(logits_p.to(dtype), dim=-1)
    log_q = torch.log_softmax(logits_q.to(dtype), dim=-1)
    log_m = torch.logaddexp(log_p, log_q) - LN2
    kl_pm = _kl_terms(log_p, log_m).sum(dim=-1)
    kl_qm = _kl_terms(log_q, log_m).sum(dim=-1)
    return (0.5 * (kl_pm + kl_qm)).clamp(0.0, LN2)


def _kl_terms(log_a, log_m):
    # a * (log a - log m), taken as 0 where a = 0 (log a = -inf would give NaN).
    a = log_a.exp()
    return torch.where(a > 0, a * (log_a - log_m), torch.zeros_like(a))


def cad_generate(
    model,
    context_ids,
    plain_ids,
    context_mask=None,
    plain_mask=None,
    *,
    alpha=1.0,
    max_new_tokens=32,
    do_sample=False,
    top_p=1.0,
    generator=None,
    eos_token_id=None,
    pad_token_id=None,
    stopping_criteria=None,
):
    """Context-aware decoding (Shi et al. 2023) with a fixed ``alpha`` >= 0:
    ``z = (1 + alpha) z_ctx - alpha z_plain``; alpha = 0 is greedy decoding on the
    with-context input.

    Args:
        model: a Hugging Face causal LM.
        context_ids: ``(B, Tc)`` left-padded prompts with the context (context + question).
        plain_ids: ``(B, Tp)`` left-padded prompts without it (question only), same B.
        context_mask, plain_mask: their 0/1 attention masks (all ones when ``None``).
        alpha: contrast weight, finite and >= 0 (1.0: the QA setting of the AdaCAD
            experiments; 0.5 for summarisation).
        do_sample, top_p: greedy argmax of z (the papers' QA setting), or a draw from the
            top-p nucleus of softmax(z) (``torch.multinomial`` with ``generator``); the
            official code's ``projection_top_p``.
        eos_token_id, pad_token_id, stopping_criteria: as in ``contrastive_search``.

    Returns ``(B, new)`` generated token ids (``new <= max_new_tokens``). The official
    code's optional top-p pre-filtering of z_ctx / z_plain (``filter_top_p``, off by
    default there) is not implemented.
    """
    owner = "cad_generate"
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        _fail(
            owner, "alpha", f"is {alpha!r}", "it must be a number", "pass e.g. alpha=1.0", TypeError
        )
    if not (math.isfinite(alpha) and alpha >= 0):
        _fail(
            owner,
            "alpha",
            f"is {alpha}",
            "it must be finite and >= 0 (0 is greedy)",
            "pass e.g. alpha=1.0 (QA) or alpha=0.5 (summarisation)",
        )
    weight = float(alpha)
    tokens, _ = _contrast_loop(
        owner,
        model,
        context_ids,
        plain_ids,
        context_mask,
        plain_mask,
        lambda z_ctx, z_plain: z_ctx.new_full(z_ctx.shape[:1], weight),
        max_new_tokens,
        do_sample,
        top_p,
        generator,
        eos_token_id,
        pad_token_id,
        stopping_criteria,
    )
    return tokens


def adacad_generate(
    model,
    context_ids,
    plain_ids,
    context_mask=None,
    plain_mask=None,
    *,
    threshold=0.0,
    offset=0.0,
    max_new_tokens=32,
    do_sample=False,
    top_p=1.0,
    generator=None,
    eos_token_id=None,
    pad_token_id=None,
    stopping_criteria=None,
    return_alphas=False,
):
    """AdaCAD (Wang et al. NAACL 2025): CAD with a per-row, per-step weight

        alpha_t = max(JSD(softmax z_ctx, softmax z_plain), threshold) + offset

    on the unfiltered distributions (natural-log JSD, ``jensen_shannon``). When the context
    agrees with the model, alpha_t is near 0 and decoding stays greedy on the context
    input; under a conflict, alpha_t grows and the context is trusted more.

    ``threshold`` (default 0, the QA setting) is the lower bound the research notes give
    for long-form generation (0.3 for summarisation). ``offset`` is the released code's
    form of that warm-up: ``alpha = get_jsd(...) + args.offset`` (``run_summ.sh`` passes
    THRESHOLD=0.3 there). We could not read the paper's statement of the warm-up, so both
    are offered; with both at 0 (the QA default) the two readings agree.

    Arguments and return as ``cad_generate``; with ``return_alphas=True`` returns
    ``(tokens (B, new), alphas (B, new))``, alphas NaN at the steps after a row finished.
    """
    owner = "adacad_generate"
    for name, value in (("threshold", threshold), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            _fail(
                owner,
                name,
                f"is {value!r}",
                "it must be a number",
                f"pass e.g. {name}=0.0",
                TypeError,
            )
        if not (math.isfinite(value) and value >= 0):
            _fail(
                owner,
                name,
                f"is {value}",
                "it must be finite and >= 0",
                f"pass {name}=0.0 (QA) or 0.3 (summarisation)",
            )
    check_flag(return_alphas, owner, "return_alphas")
    low, add = float(threshold), float(offset)

    def weight(z_ctx, z_plain):
        return jensen_shannon(z_ctx, z_plain).clamp_min(low) + add

    tokens, alphas = _contrast_loop(
        owner,
        model,
        context_ids,
        plain_ids,
        context_mask,
        plain_mask,
        weight,
        max_new_tokens,
        do_sample,
        top_p,
        generator,
        eos_token_id,
        pad_token_id,
        stopping_criteria,
    )
    return (tokens, alphas) if return_alphas else tokens


def _contrast_loop(
    owner,
    model,
    context_ids,
    plain_ids,
    context_mask,
    plain_mask,
    weight,
    max_new_tokens,
    do_sample,
    top_p,
    generator,
    eos_token_id,
    pad_token_id,
    stopping_criteria,
):
    """The loop shared by CAD and AdaCAD; ``weight(z_ctx, z_plain) -> (B,)`` is alpha_t."""
    _check_model(model, owner)
    context_ids, context_mask = _check_prompt(
        context_ids, context_mask, owner, ("context_ids", "context_mask")
    )
    plain_ids, plain_mask = _check_prompt(plain_ids, plain_mask, owner, ("plain_ids", "plain_mask"))
    if plain_ids.shape[0] != context_ids.shape[0]:
        _fail(
            owner,
            "plain_ids",
            f"has {plain_ids.shape[0]} rows but `context_ids` has {context_ids.shape[0]}",
            "row b of both is the same example with and without its context",
            "pass one plain prompt per context prompt",
        )
    _check_int(max_new_tokens, owner, "max_new_tokens", 0, "pass e.g. max_new_tokens=32")
    check_flag(do_sample, owner, "do_sample")
    if isinstance(top_p, bool) or not isinstance(top_p, int | float) or not (0 < top_p <= 1):
        _fail(
            owner,
            "top_p",
            f"is {top_p!r}",
            "it must be a number in (0, 1]",
            "pass e.g. top_p=0.9 (with do_sample=True)",
        )
    _check_generator(generator, owner)
    eos = _check_token_ids(eos_token_id, owner, "eos_token_id")
    batch = context_ids.shape[0]
    can_stop = eos is not None or stopping_criteria is not None
    pad = _check_pad(pad_token_id, eos, batch, can_stop, owner)
    device = _model_device(model)
    empty = torch.empty(batch, 0, dtype=torch.long, device=device)
    if max_new_tokens == 0:
        return empty, empty.to(torch.float32)
    finish = _Finisher(batch, device, eos, pad, stopping_criteria, owner)
    with_ctx, plain = _Runner(model, owner), _Runner(model, owner)
    alphas = []
    with torch.no_grad():
        z_ctx, _ = with_ctx.prompt(context_ids.to(device), context_mask.to(device), hidden=False)
        z_plain, _ = plain.prompt(plain_ids.to(device), plain_mask.to(device), hidden=False)
        for step in range(max_new_tokens):
            dtype = _prob_dtype(z_ctx)
            z_ctx, z_plain = z_ctx.to(dtype), z_plain.to(dtype)
            alpha = weight(z_ctx, z_plain)
            alphas.append(alpha.masked_fill(finish.done, math.nan))
            z = (1.0 + alpha)[:, None] * z_ctx - alpha[:, None] * z_plain
            if do_sample:
                probs = torch.softmax(z, dim=-1)
                probs = probs.masked_fill(~nucleus_mask(probs, top_p), 0.0)
                token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                token = z.argmax(dim=-1)
            token = finish.push(token)
            if finish.all_done() or step == max_new_tokens - 1:
                break
            z_ctx, _ = with_ctx.step(token)
            z_plain, _ = plain.step(token)
    return finish.generated(), torch.stack(alphas, dim=1)
