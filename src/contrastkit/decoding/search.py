"""Contrastive search and the baselines it is compared with, on any Hugging Face causal LM.

Contrastive search (Su et al., "A Contrastive Framework for Neural Text Generation",
NeurIPS 2022, SimCTG; Su & Collier, "Contrastive Search Is What You Need For Neural Text
Generation", TMLR 2023) picks, among the k most probable next tokens, the one maximising

    (1 - alpha) * p(v | x_<t) - alpha * max_{j < t} cos(h_v, h_{x_j})

where ``h_v`` is the last-layer hidden state the model produces after reading ``v`` and
``h_{x_j}`` are the last-layer states of every earlier position, prompt included. The code
followed is ``yxuansu/SimCTG`` ``simctg/utlisgpt.py`` (``ranking_fast``,
``ContrastiveDecodingOneStepFast``, ``enlarge_past_key_values``, ``select_past_key_values``);
the transformers ``_ranking_fast`` (removed from the library in 2025) computes the same
formula.

Every method here runs our own KV-cached loop (not ``model.generate``), with the same
prompt, padding and stopping rules, so that tokens per second compare like with like:

- prompts are **left-padded** (``attention_mask`` 0 on the left); position ids are
  counted from the mask, so a padded row gets the same positions as the unpadded prompt;
- ``eos_token_id`` (an int or a list of ints) ends a row; the eos token is kept and the
  row's later positions are filled with ``pad_token_id`` (default: the first eos id);
- ``stopping_criteria`` is a callable ``f(generated) -> BoolTensor (B,)`` called after
  each step with the tokens generated so far ``(B, t)`` (prompt excluded, finished rows
  pad-filled); ``True`` marks a row as done (its last token is kept). A Python bool or a
  0-d tensor applies to all rows. A transformers ``StoppingCriteria`` ``c`` can be passed
  as ``lambda ids: c(ids, None)`` when it only reads the ids it is given;
- the loop stops when every row is done or after ``max_new_tokens`` steps, so the output
  has ``T_prompt + new`` columns with ``new <= max_new_tokens``.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F

from contrastkit.core.validation import _fail, check_choice, check_in_range, check_tensor

__all__ = ["DEFAULTS", "contrastive_scores", "contrastive_search", "generate"]

METHODS = ("greedy", "topk", "nucleus", "contrastive")

# The settings of the released experiment that produced the TMLR paper's result files
# (yxuansu/Contrastive_Search_Is_What_You_Need, open_ended_generation/english/inference.py,
# GPT-2 large on WebText): top-k sampling with k = 50, nucleus sampling with p = 0.95,
# contrastive search with k = 5 and alpha = 0.6. We could not read the papers' own text
# for the baselines' k and p; these are the values the shipped numbers come from.
DEFAULTS = {
    "topk": {"k": 50},
    "nucleus": {"p": 0.95},
    "contrastive": {"k": 5, "alpha": 0.6},
}


# ------------------------------------------------------------------ validation helpers


def _check_int(value, owner: str, arg: str, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(owner, arg, f"is {value!r}", "it must be an int", fix, TypeError)
    if value < minimum:
        _fail(owner, arg, f"is {value}", f"it must be >= {minimum}", fix)
    return value


def _check_token_ids(value, owner: str, arg: str) -> list[int] | None:
    """``None``, an int or a list of ints, as a list (or ``None``)."""
    if value is None:
        return None
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(items, list | tuple) or not items:
        _fail(
            owner,
            arg,
            f"is {value!r}",
            "it must be an int or a non-empty list of ints",
            f"pass e.g. {arg}=tokenizer.eos_token_id",
            TypeError,
        )
    for item in items:
        _check_int(item, owner, arg, 0, f"pass a token id, e.g. {arg}=tokenizer.eos_token_id")
    return [int(i) for i in items]


def _check_generator(generator, owner: str) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        _fail(
            owner,
            "generator",
            f"is a {type(generator).__name__}",
            "it must be a torch.Generator",
            "pass torch.Generator().manual_seed(0)",
            TypeError,
        )


def _check_model(model, owner: str):
    if not callable(model) or not hasattr(model, "config"):
        _fail(
            owner,
            "model",
            f"is a {type(model).__name__}",
            "it must be a Hugging Face causal LM (a callable with a `config`)",
            "load one with AutoModelForCausalLM.from_pretrained or decoding.load_causal_lm",
            TypeError,
        )
    return model


def _model_device(model) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def _check_prompt(input_ids, attention_mask, owner: str, names=("input_ids", "attention_mask")):
    """Integer ``(B, T)`` ids and a left-padded 0/1 mask (ones when ``None``)."""
    ids_name, mask_name = names
    check_tensor(input_ids, owner, ids_name)
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        _fail(
            owner,
            ids_name,
            f"has dtype {input_ids.dtype}",
            "token ids must be integers",
            f"pass {ids_name}.long()",
            TypeError,
        )
    if input_ids.dim() != 2 or input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
        _fail(
            owner,
            ids_name,
            f"has shape {tuple(input_ids.shape)}",
            "it must be (batch, prompt_length) with at least one token",
            f"add a batch dimension with {ids_name}[None] or tokenise with return_tensors='pt'",
        )
    if attention_mask is None:
        return input_ids.long(), torch.ones_like(input_ids, dtype=torch.long)
    check_tensor(attention_mask, owner, mask_name)
    if attention_mask.shape != input_ids.shape:
        _fail(
            owner,
            mask_name,
            f"has shape {tuple(attention_mask.shape)} but `{ids_name}` has {tuple(input_ids.shape)}",
            "it must have one 0/1 entry per token",
            "pass the mask the tokenizer returned",
        )
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        _fail(
            owner,
            mask_name,
            "has entries other than 0 and 1",
            "it is a padding mask",
            "pass the 0/1 mask the tokenizer returned",
        )
    mask = attention_mask.long().to(input_ids.device)
    if bool((mask[:, 1:] < mask[:, :-1]).any()) or bool((mask[:, -1] == 0).any()):
        rows = ((mask[:, 1:] < mask[:, :-1]).any(dim=1) | (mask[:, -1] == 0)).nonzero().flatten()
        _fail(
            owner,
            mask_name,
            f"is not left-padded in rows {rows.tolist()}",
            "generation appends tokens on the right, so padding must be on the left",
            "tokenise with tokenizer.padding_side = 'left'",
        )
    return input_ids.long(), mask


def _check_pad(pad_token_id, eos, batch: int, can_finish_early: bool, owner: str) -> int | None:
    if pad_token_id is not None:
        return _check_int(pad_token_id, owner, "pad_token_id", 0, "pass tokenizer.pad_token_id")
    if eos is not None:
        return eos[0]
    if batch > 1 and can_finish_early:
        _fail(
            owner,
            "pad_token_id",
            "is None (and so is eos_token_id)",
            "with several prompts, rows that stop early are filled with a pad token",
            "pass pad_token_id=tokenizer.pad_token_id (or eos_token_id)",
        )
    return None


# ------------------------------------------------------------------ model plumbing


def _cache_name(model) -> str:
    """transformers 5.24 calls the KV cache ``cache``; earlier 5.x and 4.x
    ``past_key_values``. Read the forward signature once."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _accepts(model, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


class _Runner:
    """One model's forward passes with a KV cache, a growing mask and positions."""

    def __init__(self, model, owner: str):
        self.model = model
        self.owner = owner
        self.cache_arg = _cache_name(model)
        self.keep_last = _accepts(model, "logits_to_keep")

    def prompt(self, ids, mask, hidden: bool):
        """Forward the prompt: last logits (B, V), last-layer states (B, T, d) or None."""
        self.mask = mask
        # Left padding: the first real token of each row gets position 0.
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        self.next_pos = mask.sum(-1, keepdim=True)
        extra = {"logits_to_keep": 1} if self.keep_last else {}
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            output_hidden_states=hidden,
            **extra,
        )
        self.cache = self._cache_of(out)
        return out.logits[:, -1], (out.hidden_states[-1] if hidden else None)

    def _cache_of(self, out):
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        if cache is None or not hasattr(cache, "batch_select_indices"):
            _fail(
                self.owner,
                "model",
                f"returned a cache of type {type(cache).__name__}",
                "KV-cached decoding needs a transformers Cache (DynamicCache) with "
                "batch_repeat_interleave / batch_select_indices",
                "use a transformers >= 4.45 causal LM that returns a DynamicCache",
                TypeError,
            )
        return cache

    def step(self, tokens, hidden: bool = False, repeats: int | None = None):
        """Feed one token per row. With ``repeats`` = k (branching) the cache, mask and
        positions are first repeated k times (rows b*k .. b*k+k-1 continue row b), so the
        k candidates of every row run in one batched forward; ``keep`` then picks one
        branch per row and advances the mask and positions."""
        mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        positions = self.next_pos
        if repeats is not None:
            self.cache.batch_repeat_interleave(repeats)
            mask = mask.repeat_interleave(repeats, dim=0)
            positions = positions.repeat_interleave(repeats, dim=0)
        out = self.model(
            input_ids=tokens.reshape(-1, 1),
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            output_hidden_states=hidden,
            **{self.cache_arg: self.cache},
        )
        self.cache = self._cache_of(out)
        if repeats is None:
            self.mask, self.next_pos = mask, self.next_pos + 1
        return out.logits[:, -1], (out.hidden_states[-1][:, -1] if hidden else None)

    def keep(self, rows):
        """After a repeated step: keep row ``rows[b]`` of the B*k branches for row b."""
        self.cache.batch_select_indices(rows)
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        self.next_pos = self.next_pos + 1


class _Finisher:
    """eos / stopping-criteria bookkeeping shared by every decoding loop."""

    def __init__(self, batch, device, eos, pad, stopping_criteria, owner):
        if stopping_criteria is not None and not callable(stopping_criteria):
            _fail(
                owner,
                "stopping_criteria",
                f"is a {type(stopping_criteria).__name__}",
                "it must be a callable f(generated_ids (B, t)) -> BoolTensor (B,)",
                "pass a function or None",
                TypeError,
            )
        self.eos = None if eos is None else torch.tensor(eos, device=device)
        self.pad = pad
        self.criteria = stopping_criteria
        self.owner = owner
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.tokens: list[torch.Tensor] = []

    def push(self, token: torch.Tensor) -> torch.Tensor:
        """Record this step's tokens (pad for finished rows); return them."""
        if self.pad is not None:
            token = torch.where(self.done, torch.full_like(token, self.pad), token)
        was_done = self.done.clone()
        self.tokens.append(token)
        if self.eos is not None:
            self.done |= torch.isin(token, self.eos)
        if self.criteria is not None:
            self.done |= self._criteria(self.generated())
        self.done |= was_done
        return token

    def _criteria(self, generated):
        flags = self.criteria(generated)
        flags = torch.as_tensor(flags, device=self.done.device)
        if flags.dtype != torch.bool or flags.dim() > 1 or flags.numel() not in (1, len(self.done)):
            _fail(
                self.owner,
                "stopping_criteria",
                f"returned {flags.dtype} of shape {tuple(flags.shape)}",
                f"it must return a bool per row ({len(self.done)},) or one bool",
                "return e.g. (generated == stop_id).any(dim=1)",
                TypeError,
            )
        return flags.reshape(-1).expand(len(self.done))

    def all_done(self) -> bool:
        return bool(self.done.all())

    def generated(self) -> torch.Tensor:
        return torch.stack(self.tokens, dim=1)


# ------------------------------------------------------------------ the step rule


def contrastive_scores(top_probs, candidate_hidden, context_hidden, alpha, context_mask=None):
    """The contrastive-search score of each of the k candidates (Su et al. NeurIPS 2022;
    Su & Collier TMLR 2023; code: ``ranking_fast`` in yxuansu/SimCTG
    ``simctg/utlisgpt.py``):

        score(v) = (1 - alpha) * p(v) - alpha * max_j cos(h_v, h_j)

    over the valid context positions j (``context_mask`` True; all when ``None``).

    Args:
        top_probs: ``(B, k)`` model probabilities of the candidates (no temperature).
        candidate_hidden: ``(B, k, d)`` last-layer state after feeding each candidate.
        context_hidden: ``(B, T, d)`` last-layer states of the prompt and generated tokens.
        alpha: degeneration-penalty weight in [0, 1]; 0 gives greedy decoding.
        context_mask: optional ``(B, T)`` bool, False at padding positions.

    Returns ``(B, k)`` scores in float32 (float64 when an input is float64). Cosines are
    computed in that dtype on L2-normalised states; a zero-norm state has cosine 0 with
    everything (``F.normalize``'s eps) instead of NaN. Departure: masked positions are
    excluded from the max (transformers' ``_ranking_fast`` sets them to -1, the same
    value unless every valid cosine is -1).
    """
    owner = "contrastive_scores"
    alpha = check_in_range(alpha, owner, "alpha", 0.0, 1.0, "pass e.g. alpha=0.6 (0 is greedy)")
    for name, x, ndim in (
        ("top_probs", top_probs, 2),
        ("candidate_hidden", candidate_hidden, 3),
        ("context_hidden", context_hidden, 3),
    ):
        check_tensor(x, owner, name)
        if not torch.is_floating_point(x):
            _fail(
                owner,
                name,
                f"has dtype {x.dtype}",
                "it must be floating point",
                f"pass {name}.float()",
                TypeError,
            )
        if x.dim() != ndim:
            _fail(
                owner,
                name,
                f"has shape {tuple(x.shape)}",
                f"it must be {ndim}-D",
                "see the documented shapes (B, k), (B, k, d), (B, T, d)",
            )
    b, k = top_probs.shape
    if candidate_hidden.shape[:2] != (b, k):
        _fail(
            owner,
            "candidate_hidden",
            f"has shape {tuple(candidate_hidden.shape)}",
            f"it must be (B, k, d) = ({b}, {k}, d) to match `top_probs`",
            "pass one hidden state per candidate",
        )
    if context_hidden.shape[0] != b or context_hidden.shape[2] != candidate_hidden.shape[2]:
        _fail(
            owner,
            "context_hidden",
            f"has shape {tuple(context_hidden.shape)}",
            f"it must be (B, T, d) with B = {b} and d = {candidate_hidden.shape[2]}",
            "pass the last-layer states of the same rows",
        )
    if context_mask is not None:
        check_tensor(context_mask, owner, "context_mask")
        if context_mask.shape != context_hidden.shape[:2]:
            _fail(
                owner,
                "context_mask",
                f"has shape {tuple(context_mask.shape)}",
                f"it must be (B, T) = {tuple(context_hidden.shape[:2])}",
                "pass the attention mask of the context",
            )
        if not bool(context_mask.bool().any(dim=1).all()):
            _fail(
                owner,
                "context_mask",
                "has a row with no valid position",
                "the penalty is a max over at least one context state",
                "give every row at least one real token",
            )
    return _scores(top_probs, candidate_hidden, context_hidden, alpha, context_mask)


def _scores(top_probs, candidate_hidden, context_hidden, alpha, context_mask):
    """``contrastive_scores`` without the checks (the decoding loop's inputs are valid)."""
    dtype = (
        torch.float64
        if torch.float64 in (top_probs.dtype, candidate_hidden.dtype, context_hidden.dtype)
        else torch.float32
    )
    cand = F.normalize(candidate_hidden.to(dtype), dim=-1)
    ctx = F.normalize(context_hidden.to(dtype), dim=-1)
    cosine = torch.einsum("bkd,btd->bkt", cand, ctx)
    if context_mask is not None:
        valid = context_mask.bool().to(cosine.device)
        cosine = cosine.masked_fill(~valid[:, None, :], -math.inf)
    penalty = cosine.max(dim=-1).values
    return (1.0 - alpha) * top_probs.to(dtype) - alpha * penalty


# ------------------------------------------------------------------ the loops


def _prob_dtype(logits):
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def contrastive_search(
    model,
    input_ids,
    attention_mask=None,
    *,
    alpha=0.6,
    k=5,
    max_new_tokens=64,
    eos_token_id=None,
    pad_token_id=None,
    stopping_criteria=None,
):
    """Contrastive search (Su et al. NeurIPS 2022; Su & Collier TMLR 2023) with KV-cache
    reuse, following ``ContrastiveDecodingOneStepFast`` of yxuansu/SimCTG.

    Each step takes the top-k tokens of ``softmax(z_t)``, repeats the KV cache k times,
    runs **one** batched forward of the B*k candidates, scores them with
    ``contrastive_scores`` against all earlier last-layer states (prompt padding
    excluded), and keeps the chosen branch's cache, hidden state and next-step logits.

    Args:
        model: a Hugging Face causal LM (returns ``logits``, ``hidden_states``, a Cache).
        input_ids: ``(B, T)`` left-padded prompts; ``attention_mask`` ``(B, T)`` 0/1.
        alpha: penalty weight in [0, 1] (paper: 0.6; alpha = 0 is greedy decoding).
        k: candidates per step, >= 1 (paper: 5 for open-ended generation with GPT-2 large;
            the transformers README example uses 4).
        max_new_tokens, eos_token_id, pad_token_id, stopping_criteria: see the module
            docstring.

    Returns ``(B, T + new)`` token ids: the prompt as given, then the generated tokens.
    Probabilities are the model's own (no temperature), as in the paper. Departure: the
    SimCTG code runs one prompt at a time; here prompts are batched with left padding.
    """
    owner = "contrastive_search"
    alpha = check_in_range(alpha, owner, "alpha", 0.0, 1.0, "pass e.g. alpha=0.6 (0 is greedy)")
    return _run(
        model,
        input_ids,
        attention_mask,
        owner,
        "contrastive",
        max_new_tokens,
        eos_token_id,
        pad_token_id,
        stopping_criteria,
        k=k,
        alpha=alpha,
    )


def generate(
    model,
    input_ids,
    attention_mask=None,
    *,
    method="greedy",
    max_new_tokens=64,
    k=None,
    p=None,
    alpha=0.6,
    temperature=1.0,
    generator=None,
    eos_token_id=None,
    pad_token_id=None,
    stopping_criteria=None,
):
    """Decode with ``method`` in ``greedy | topk | nucleus | contrastive`` using one cached
    loop, so every method shares the padding and stopping rules and the timing is fair.

    - ``greedy``: argmax of the logits.
    - ``topk``: sample from the k most probable tokens (Fan et al. 2018); default k = 50,
      the baseline of the released Su & Collier (TMLR 2023) experiment (``DEFAULTS``);
      a k above the vocabulary size keeps every token.
    - ``nucleus``: sample from the smallest set of tokens whose mass reaches p (Holtzman
      et al. 2020; a token is kept when the mass of the tokens ranked above it is < p);
      default p = 0.95, the same experiment's baseline.
    - ``contrastive``: ``contrastive_search`` with ``k`` (default 5) and ``alpha`` (0.6).

    Sampling draws ``torch.multinomial(probs, 1, generator=generator)`` from the filtered,
    unnormalised ``softmax(logits / temperature)`` (float32, or float64 for a float64
    model), so a seeded ``generator`` reproduces a run. ``temperature`` applies to the
    two sampling methods only. Returns ``(B, T + new)`` ids as ``contrastive_search``.
    """
    owner = "generate"
    check_choice(method, owner, "method", METHODS)
    if k is not None and method not in ("topk", "contrastive"):
        _fail(
            owner,
            "k",
            f"is {k!r} with method={method!r}",
            "k applies to method='topk' or 'contrastive'",
            "drop k or change the method",
        )
    if p is not None and method != "nucleus":
        _fail(
            owner,
            "p",
            f"is {p!r} with method={method!r}",
            "p applies to method='nucleus'",
            "drop p or use method='nucleus'",
        )
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        _fail(
            owner,
            "temperature",
            f"is {temperature!r}",
            "it must be a number",
            "pass e.g. temperature=1.0",
            TypeError,
        )
    if not (math.isfinite(temperature) and temperature > 0):
        _fail(
            owner,
            "temperature",
            f"is {temperature}",
            "it must be a finite number > 0",
            "pass e.g. temperature=1.0",
        )
    if temperature != 1.0 and method in ("greedy", "contrastive"):
        _fail(
            owner,
            "temperature",
            f"is {temperature} with method={method!r}",
            "greedy and contrastive search use the model's own probabilities",
            "leave temperature=1.0 or use method='topk' / 'nucleus'",
        )
    _check_generator(generator, owner)
    if method == "contrastive":
        alpha = check_in_range(alpha, owner, "alpha", 0.0, 1.0, "pass e.g. alpha=0.6")
    if method in ("topk", "contrastive"):
        k = DEFAULTS[method]["k"] if k is None else k
    if method == "nucleus":
        p = DEFAULTS["nucleus"]["p"] if p is None else p
        if isinstance(p, bool) or not isinstance(p, int | float) or not (0 < p <= 1):
            _fail(
                owner,
                "p",
                f"is {p!r}",
                "it must be a number in (0, 1]",
                "pass e.g. p=0.95",
                TypeError if not isinstance(p, int | float) else ValueError,
            )
    return _run(
        model,
        input_ids,
        attention_mask,
        owner,
        method,
        max_new_tokens,
        eos_token_id,
        pad_token_id,
        stopping_criteria,
        k=k,
        alpha=alpha,
        p=p,
        temperature=float(temperature),
        generator=generator,
    )


def _select(logits, method, k=None, p=None, temperature=1.0, generator=None):
    """One token per row from ``(B, V)`` logits."""
    if method == "greedy":
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.to(_prob_dtype(logits)) / temperature, dim=-1)
    if method == "topk":
        keep = torch.zeros_like(probs, dtype=torch.bool)
        keep.scatter_(1, probs.topk(k, dim=-1).indices, True)
    else:
        keep = nucleus_mask(probs, p)
    probs = probs.masked_fill(~keep, 0.0)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def nucleus_mask(probs, p):
    """True for the tokens of the top-p nucleus: a token is kept when the probability of
    the tokens ranked above it is below ``p`` (so the top token is always kept)."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs
    keep_sorted = before < p
    return torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)


def _run(
    model,
    input_ids,
    attention_mask,
    owner,
    method,
    max_new_tokens,
    eos_token_id,
    pad_token_id,
    stopping_criteria,
    *,
    k=None,
    alpha=0.0,
    p=None,
    temperature=1.0,
    generator=None,
):
    _check_model(model, owner)
    input_ids, mask = _check_prompt(input_ids, attention_mask, owner)
    _check_int(max_new_tokens, owner, "max_new_tokens", 0, "pass e.g. max_new_tokens=64")
    if method in ("topk", "contrastive"):
        _check_int(k, owner, "k", 1, "pass e.g. k=5 for contrastive search, k=50 for top-k")
    eos = _check_token_ids(eos_token_id, owner, "eos_token_id")
    can_stop = eos is not None or stopping_criteria is not None
    pad = _check_pad(pad_token_id, eos, input_ids.shape[0], can_stop, owner)
    device = _model_device(model)
    input_ids, mask = input_ids.to(device), mask.to(device)
    if max_new_tokens == 0:
        return input_ids
    finish = _Finisher(input_ids.shape[0], device, eos, pad, stopping_criteria, owner)
    runner = _Runner(model, owner)
    with torch.no_grad():
        if method == "contrastive":
            _contrastive_loop(runner, input_ids, mask, finish, max_new_tokens, k, alpha, owner)
        else:
            logits, _ = runner.prompt(input_ids, mask, hidden=False)
            if k is not None:  # top-k with k >= vocabulary size samples from everything
                k = min(k, logits.shape[-1])
            for step in range(max_new_tokens):
                token = finish.push(_select(logits, method, k, p, temperature, generator))
                if finish.all_done() or step == max_new_tokens - 1:
                    break
                logits, _ = runner.step(token)
    return torch.cat([input_ids, finish.generated()], dim=1)


def _check_k(k, logits, owner):
    if k is not None and k > logits.shape[-1]:
        _fail(
            owner,
            "k",
            f"is {k}",
            f"it cannot exceed the vocabulary size {logits.shape[-1]}",
            "pass a smaller k",
        )


def _contrastive_loop(runner, input_ids, mask, finish, max_new_tokens, k, alpha, owner):
    logits, context = runner.prompt(input_ids, mask, hidden=True)
    _check_k(k, logits, owner)
    context_mask = mask.bool()
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    for _ in range(max_new_tokens):
        probs = torch.softmax(logits.to(_prob_dtype(logits)), dim=-1)
        top_probs, top_ids = probs.topk(k, dim=-1)
        next_logits, cand_hidden = runner.step(top_ids, hidden=True, repeats=k)
        cand_hidden = cand_hidden.reshape(len(rows), k, -1)
        scores = _scores(top_probs, cand_hidden, context, alpha, context_mask)
        best = scores.argmax(dim=-1)
        chosen = rows * k + best
        runner.keep(chosen)
        logits = next_logits[chosen]
        context = torch.cat([context, cand_hidden[rows, best][:, None]], dim=1)
        context_mask = torch.cat([context_mask, context_mask.new_ones(len(rows), 1)], dim=1)
        finish.push(top_ids[rows, best])
        if finish.all_done():
            break
