"""Training loop for text encoders: a ``TextMethod`` over examples, with checkpoints,
exact resume, ``metrics.jsonl`` and a progress bar.

``train_text(cfg, examples=None)`` fine-tunes a :class:`~contrastkit.text.TextEncoder`
with AdamW and a linear warm-up / linear decay schedule (the Hugging Face Trainer
schedule the official SimCSE code trains with; ``grad_clip=1.0`` is that Trainer's
``max_grad_norm`` default). Each epoch shuffles with its own seeded generator
(``contrastkit.train.loop.epoch_seed``), drops the ragged last batch (a contrastive batch
of one has no negatives; a data set smaller than a batch is one batch), and the dropout
stream is the seeded global torch RNG. After every epoch ``out/metrics.jsonl`` gets one
record and ``out/checkpoint.pt`` is rewritten atomically with the encoder, method,
optimizer, scheduler and RNG states and the history, so ``resume=`` continues exactly:
two epochs straight equal one epoch plus a resumed one.

``grad_cache_chunk=C`` trains with the cached-gradient pass (GradCache; Gao, Zhang, Han
and Callan, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup",
RepL4NLP 2021; official code luyug/GradCache ``src/grad_cache/grad_cache.py``) through
:func:`cached_text_backward`: the encoder sees C examples at a time, so its activation
memory is bounded by C while the loss still sees the whole batch. Only methods with the
split protocol (``embed_inputs`` / ``objective``, see ``contrastkit.text.methods``) can.

``train_text_from_dict(raw)`` is the entry for ``contrastkit train --domain text --set
key=value``: the keys are the fields of :class:`TextTrainConfig` (dotted
``method_params.temperature=0.1`` sets one method parameter).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from contrastkit.core.validation import _fail
from contrastkit.engine.grad_cache import cached_backward
from contrastkit.text import data as text_data
from contrastkit.text.encoder import TextEncoder
from contrastkit.text.methods import (
    TEXT_METHODS,
    check_embed_inputs,
    create_text_method,
    supports_grad_cache,
)

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
_FORMAT, _VERSION = "contrastkit-text-train", 1
DEFAULT_LR = 3e-5  # for methods without their own `default_lr`
# Settings that may differ between a checkpoint and the run resuming it.
_RESUME_FREE = {
    "epochs", "out", "resume", "progress", "eval_stsb", "max_steps", "device", "data_root",
}  # fmt: skip


@dataclass
class TextTrainConfig:
    """Every setting of a text training run (the keys of ``train_text_from_dict``)."""

    model: str | None = None  # local HF / sentence-transformers folder; None: all-MiniLM-L6-v2
    pooling: str | None = None  # "mean" | "cls" | "last"; None: from the folder, else mean
    max_length: int = 32  # tokens per text (SimCSE's run_unsup_example.sh uses 32)
    normalize: bool | None = None  # None: from the folder (MiniLM normalises)
    method: str = "simcse_unsup"  # a name in TEXT_METHODS
    method_params: dict = field(default_factory=dict)
    data: str | None = None  # a TSV / JSONL / text file, or "stsb:<split>"
    data_kind: str | None = None  # sentences|documents|pairs|triples|graded; None: method's
    data_root: str | None = None  # shared data folder for "stsb:..." and eval_stsb
    epochs: int = 1
    batch_size: int = 64  # SimCSE: 64 unsupervised, 512 supervised
    lr: float | None = None  # None: the method's default_lr (SimCSE 3e-5 unsup, 5e-5 sup)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0  # fraction of all steps with linear warm-up
    grad_clip: float | None = 1.0
    seed: int = 0
    out: str | None = None  # run folder: metrics.jsonl, checkpoint.pt
    resume: str | None = None  # a checkpoint.pt to continue from
    progress: bool = False
    max_steps: int | None = None  # stop after this many optimizer steps in all
    eval_stsb: bool = False  # Spearman on STS-B dev after every epoch
    device: str | None = None  # None: cuda when available, else cpu
    grad_cache_chunk: int | None = None  # GradCache: examples per encoder pass; None: off

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> TextTrainConfig:
        from contrastkit.train.config import _build, apply_overrides

        if not isinstance(raw, dict):
            _fail(
                "TextTrainConfig.from_dict",
                "raw",
                f"is {type(raw).__name__}",
                "it must be a dict of settings",
                "pass e.g. {'epochs': 1}",
                TypeError,
            )
        cfg = _build(cls, apply_overrides({}, raw), "")
        _validate(cfg)
        return cfg


@dataclass
class TextTrainResult:
    config: TextTrainConfig
    encoder: TextEncoder
    method: torch.nn.Module
    history: list[dict]
    metrics: dict
    checkpoint: Path | None

    def export(self, path) -> Path:
        """The trained encoder as a sentence-transformers folder."""
        return self.encoder.save(path)


def _validate(c: TextTrainConfig) -> None:
    def need(ok, key, rule, fix):
        if not ok:
            _fail("TextTrainConfig", key, f"is {getattr(c, key)!r}", rule, fix)

    need(
        c.method in TEXT_METHODS,
        "method",
        f"known methods are {sorted(TEXT_METHODS)}",
        "pick one of them",
    )
    need(c.epochs >= 1, "epochs", "it must be >= 1", "set e.g. epochs=1")
    need(
        c.batch_size >= 2,
        "batch_size",
        "it must be >= 2 (in-batch negatives)",
        "set e.g. batch_size=64",
    )
    need(c.max_length >= 1, "max_length", "it must be >= 1", "set e.g. max_length=32")
    need(c.lr is None or c.lr > 0, "lr", "it must be > 0 or None", "set e.g. lr=3e-5")
    need(0.0 <= c.warmup_ratio < 1.0, "warmup_ratio", "it must be in [0, 1)", "set e.g. 0.1")
    need(c.weight_decay >= 0, "weight_decay", "it must be >= 0", "set e.g. 0.0")
    need(
        c.grad_clip is None or c.grad_clip > 0,
        "grad_clip",
        "it must be > 0 or None",
        "set e.g. grad_clip=1.0",
    )
    need(
        c.max_steps is None or c.max_steps >= 1,
        "max_steps",
        "it must be >= 1 or None",
        "set e.g. max_steps=100",
    )
    need(
        c.grad_cache_chunk is None
        or (
            isinstance(c.grad_cache_chunk, int)
            and not isinstance(c.grad_cache_chunk, bool)
            and c.grad_cache_chunk >= 1
        ),
        "grad_cache_chunk",
        "it must be an int >= 1 (examples per encoder chunk) or None (plain pass)",
        "set e.g. grad_cache_chunk=16, or leave it None",
    )
    need(
        c.data_kind is None or c.data_kind in text_data.KINDS,
        "data_kind",
        f"it must be one of {text_data.KINDS} or None",
        "set the kind of your examples",
    )


# ---------------------------------------------------------------------------- data


def load_examples(cfg: TextTrainConfig, kind: str) -> list:
    """Examples named by ``cfg.data``: a file read as ``kind``, or ``"stsb:<split>"``
    (sentences/documents: the split's unique sentences; pairs: ``(s1, s2)`` with score
    >= 4.0)."""
    if cfg.data is None:
        _fail(
            "train_text",
            "data",
            "is None and no `examples` were passed",
            "training needs examples",
            "set data=PATH or pass examples=[...]",
        )
    if cfg.data.startswith("stsb:"):
        split = cfg.data.split(":", 1)[1]
        if kind in ("sentences", "documents"):
            return text_data.stsb_sentences(split, cfg.data_root)
        if kind == "pairs":
            return [(a, b) for a, b, s in text_data.stsb(split, cfg.data_root) if s >= 4.0]
        _fail(
            "train_text",
            "data",
            f"is {cfg.data!r} for {kind} examples",
            "STS-B gives sentences or pairs only",
            "use a file of the right kind",
        )
    return text_data.read_examples(cfg.data, kind)


def _check_examples(examples, kind: str, method: str) -> list:
    examples = list(examples)
    width = {"pairs": (2,), "triples": (3,), "graded": (3,)}.get(kind)
    for i, ex in enumerate(examples):
        ok = (
            isinstance(ex, str)
            if width is None
            else (isinstance(ex, (tuple, list)) and len(ex) in width)
        )
        if not ok:
            _fail(
                "train_text",
                "examples",
                f"item {i} is {ex!r}",
                f"method {method!r} trains on {kind} examples "
                "(str; (a, b); (anchor, positive, negative); (query, docs, grades))",
                "read them with contrastkit.text.data.read_examples(path, kind)",
                TypeError,
            )
    if len(examples) < 2:
        _fail(
            "train_text",
            "examples",
            f"has {len(examples)} item(s)",
            "contrastive training needs at least 2",
            "pass more examples",
        )
    return examples


# ---------------------------------------------------------------------------- schedule


def linear_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``
    (transformers ``get_linear_schedule_with_warmup``)."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def _optimizer(encoder, method, cfg, lr):
    own = {id(p) for p in encoder.parameters()}
    params = [p for p in encoder.parameters() if p.requires_grad]
    params += [p for p in method.parameters() if p.requires_grad and id(p) not in own]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    groups.append({"params": rest, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=lr)


# ---------------------------------------------------------------------------- GradCache


def cached_text_backward(method, encoder, batch, chunk_size: int) -> torch.Tensor:
    """GradCache for a split-protocol text method: accumulate into ``.grad`` the gradient
    of ``method.objective`` over the whole batch with the encoder run on ``chunk_size``
    examples at a time; return the detached loss.

    Gao, Zhang, Han and Callan 2021 (GradCache), via ``contrastkit.engine.cached_backward``:
    (1) every chunk is encoded without grad after a snapshot of the random state; (2) the
    objective runs once on the full (N, d) embeddings and its backward gives the gradient
    cache d loss / d embeddings (the method's own parameters get their gradient here);
    (3) each chunk is re-encoded with autograd under its replayed random state
    (``RandContext``: the same dropout masks) and the cached slice is back-propagated.

    The texts of ``method.embed_inputs(batch)`` are tokenised once, all lists together
    (padding to the longest text of the batch, as ``split_batch_loss`` does); chunk c
    encodes rows ``c*C:(c+1)*C`` of every list in one pass (list after list). With
    ``chunk_size >= N`` this is exactly ``split_batch_loss`` (same tensors, same dropout
    draws). With smaller chunks the dropout masks are drawn chunk by chunk, so the loss
    equals that of a plain pass encoding the same chunks in sequence from the same random
    state, not the one-pass loss (whose masks are drawn for the whole batch at once);
    without dropout (eval mode) the two agree to float rounding.

    Departures from the official code (luyug/GradCache ``src/grad_cache/grad_cache.py``,
    ``GradCache.cache_step``): there every model input (here: every text list) is split
    and encoded on its own, chunk after chunk; here one chunk holds the rows of every
    list (``k * chunk_size`` encoder rows for ``k`` lists), so that one chunk is the plain
    one-pass SimCSE encoding, as ``contrastkit.train.loop.batch_backward`` does for two
    views. The re-run back-propagates with ``autograd.backward(reps, cached)`` instead of
    the official surrogate dot product (the same gradient). No mixed precision and no
    DDP ``no_sync`` wiring here.
    """
    owner = f"grad_cache_chunk with method {getattr(method, 'name', '') or type(method).__name__!r}"
    lists = check_embed_inputs(method.embed_inputs(batch), owner)
    k, n = len(lists), len(lists[0])
    feats = encoder.tokenize([t for texts in lists for t in texts])
    keys = list(feats)
    for key in keys:
        if not isinstance(feats[key], torch.Tensor) or feats[key].shape[0] != k * n:
            raise TypeError(
                f"cached_text_backward: encoder.tokenize gave {key!r} without {k * n} rows; "
                "GradCache splits every tokenizer tensor by rows. Fix: return a dict of "
                "tensors with one row per text, or unset grad_cache_chunk."
            )
    # cached_backward splits its inputs along dim 0 by example: one tensor per
    # (list, tokenizer key), each with the batch's N rows.
    inputs = [feats[key][j * n : (j + 1) * n] for j in range(k) for key in keys]

    def encode(*chunks):
        rows = chunks[0].shape[0]
        part = {key: torch.cat(chunks[i :: len(keys)]) for i, key in enumerate(keys)}
        return encoder(part).split(rows)  # list after list, as in the plain pass

    return cached_backward(encode, inputs, method.objective, chunk_size, modules=encoder)


def _refuse_grad_cache(cfg: TextTrainConfig, method) -> None:
    if cfg.grad_cache_chunk is not None and not supports_grad_cache(method):
        _fail(
            "TextTrainConfig",
            "grad_cache_chunk",
            f"is {cfg.grad_cache_chunk} but method {cfg.method!r} has no split protocol "
            "(embed_inputs(batch) and objective(*embeddings))",
            "the cached-gradient pass needs the loss as a function of the embeddings of "
            "the batch's text lists",
            f"leave grad_cache_chunk=None for {cfg.method!r}, or implement embed_inputs "
            "and objective on it (see contrastkit.text.methods)",
        )


def batch_backward(method, encoder, batch, grad_cache_chunk=None) -> torch.Tensor:
    """One batch's gradient into ``.grad`` (plain ``batch_loss(...).backward()``, or
    :func:`cached_text_backward` when ``grad_cache_chunk`` is set); the detached loss.
    A non-finite loss raises before any backward on the plain path; on the cached path
    the backward has run (the loss exists only after it), and the step is still refused."""
    if grad_cache_chunk is None:
        loss = method.batch_loss(encoder, batch)
        _check_finite(loss)
        loss.backward()
        return loss.detach()
    loss = cached_text_backward(method, encoder, batch, grad_cache_chunk)
    _check_finite(loss)
    return loss


class NonFiniteLoss(FloatingPointError):
    pass


def _check_finite(loss) -> None:
    if not bool(torch.isfinite(loss)):
        raise NonFiniteLoss(float(loss.detach()))


# ---------------------------------------------------------------------------- training


def build_encoder(cfg: TextTrainConfig) -> TextEncoder:
    return TextEncoder.from_pretrained(
        cfg.model, pooling=cfg.pooling, max_length=cfg.max_length, normalize=cfg.normalize
    )


def train_text(cfg: TextTrainConfig, examples=None, callbacks=()) -> TextTrainResult:
    """Fine-tune a text encoder with ``cfg.method``; see the module docstring.

    ``examples`` (a list in the method's ``inputs`` shape) replaces ``cfg.data``;
    each of ``callbacks`` is called with every epoch's record after its checkpoint."""
    from contrastkit.train.loop import (
        _append_jsonl,
        _progress,
        _write_jsonl,
        epoch_seed,
        seed_everything,
    )

    if not isinstance(cfg, TextTrainConfig):
        _fail(
            "train_text",
            "cfg",
            f"is {type(cfg).__name__}",
            "it must be a TextTrainConfig",
            "build one, or call train_text_from_dict(dict)",
            TypeError,
        )
    _validate(cfg)
    seed_everything(cfg.seed)
    method = create_text_method(cfg.method, **cfg.method_params)
    _refuse_grad_cache(cfg, method)
    kind = cfg.data_kind or method.inputs
    examples = load_examples(cfg, kind) if examples is None else examples
    examples = _check_examples(examples, kind, cfg.method)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = build_encoder(cfg).to(device)
    method.to(device)
    if hasattr(method, "bind"):  # methods with state built from the encoder (momentum copies)
        method.bind(encoder)
    seed_everything(cfg.seed)  # the dropout stream does not depend on how models were built

    n = len(examples)
    size = min(cfg.batch_size, n)
    steps = n // size
    total = epochs_total = cfg.epochs * steps
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    lr = cfg.lr if cfg.lr is not None else getattr(method, "default_lr", DEFAULT_LR)
    optimizer = _optimizer(encoder, method, cfg, lr)
    warmup = round(cfg.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: linear_factor(s, warmup, total)
    )
    start, step, history = 0, 0, []
    if cfg.resume:
        start, step, history = _restore(cfg, encoder, method, optimizer, scheduler)
    out = Path(cfg.out) if cfg.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _write_jsonl(out / METRICS_NAME, history)

    left = max(0, min(epochs_total, total) - step)
    with _progress(cfg.progress, left) as advance:
        for epoch in range(start, cfg.epochs):
            if step >= total:
                break
            t0 = time.perf_counter()
            g = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
            perm = torch.randperm(n, generator=g).tolist()
            encoder.train()
            method.train()
            losses = []
            for i in range(steps):
                if step >= total:
                    break
                batch = [examples[j] for j in perm[i * size : (i + 1) * size]]
                optimizer.zero_grad(set_to_none=True)
                try:
                    loss = batch_backward(method, encoder, batch, cfg.grad_cache_chunk)
                except NonFiniteLoss as e:
                    raise FloatingPointError(
                        f"train_text: the loss is {e.args[0]} at epoch {epoch + 1}, step "
                        f"{i + 1}. Fix: lower lr (now {lr}) or raise the temperature."
                    ) from None
                if cfg.grad_clip is not None:
                    params = [p for grp in optimizer.param_groups for p in grp["params"]]
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                method.after_step(encoder)
                step += 1
                losses.append(loss.item())
                advance(f"epoch {epoch + 1}/{cfg.epochs} loss {losses[-1]:.4f}")
            record = {
                "epoch": epoch + 1,
                "step": step,
                "loss": sum(losses) / max(1, len(losses)),
                "lr": optimizer.param_groups[0]["lr"],
                "time": time.perf_counter() - t0,
            }
            if cfg.eval_stsb:
                record["stsb_dev_spearman"] = stsb_spearman(encoder, "dev", cfg.data_root)
            history.append(record)
            if out is not None:
                _append_jsonl(out / METRICS_NAME, record)
                save_text_checkpoint(
                    out / CHECKPOINT_NAME, cfg, epoch + 1, step, encoder, method, optimizer,
                    scheduler, history,
                )  # fmt: skip
            for callback in callbacks:
                callback(record)
    encoder.eval()
    metrics = {k: v for k, v in (history[-1] if history else {}).items() if k not in ("epoch",)}
    ckpt = out / CHECKPOINT_NAME if out is not None else None
    return TextTrainResult(cfg, encoder, method, history, metrics, ckpt)


def train_text_from_dict(raw: dict, examples=None, callbacks=()) -> TextTrainResult:
    """``train_text(TextTrainConfig.from_dict(raw), examples)``. Keys: the fields of
    :class:`TextTrainConfig` (unknown keys raise with the valid ones); dotted keys set
    inside ``method_params`` (``{"method_params.temperature": 0.1}``). With ``resume``
    and no other keys the checkpoint's own configuration is used."""
    raw = dict(raw)
    if raw.get("resume") and set(raw) <= _RESUME_FREE:
        saved = load_text_checkpoint(raw["resume"])["config"]
        raw = {**saved, **raw}
    return train_text(TextTrainConfig.from_dict(raw), examples, callbacks)


def stsb_spearman(encoder: TextEncoder, split: str = "dev", root=None, batch_size=64) -> float:
    """Spearman correlation between cosine similarities and STS-B gold scores (the
    metric of sentence-transformers' ``EmbeddingSimilarityEvaluator``; see
    ``contrastkit.evaluation.evaluate_sts``)."""
    from contrastkit.evaluation.sts import evaluate_sts

    rows = text_data.stsb(split, root)
    return evaluate_sts(encoder, rows, batch_size, similarity_fns=("cosine",))["spearman_cosine"]


# ---------------------------------------------------------------------------- checkpoints


def _rng() -> dict:
    from contrastkit.train.loop import _rng_state

    state = _rng_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_text_checkpoint(
    path, cfg, epoch, step, encoder, method, optimizer, scheduler, history
) -> Path:
    """The full training state, written atomically (temp file + ``os.replace``)."""
    from contrastkit.train.loop import _atomic_write

    state = {
        "format": _FORMAT,
        "version": _VERSION,
        "epoch": epoch,
        "step": step,
        "config": cfg.to_dict(),
        "encoder": encoder.state_dict(),
        "method": method.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng(),
        "history": history,
    }
    path = Path(path)
    _atomic_write(path, lambda f: torch.save(state, f))
    return path


def load_text_checkpoint(path) -> dict:
    """Read and check a text training checkpoint."""
    from contrastkit.train.loop import read_checkpoint_file

    path = Path(path)
    state = read_checkpoint_file(path, "text ")
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(
            f"checkpoint {path} is not a contrastkit text checkpoint. Fix: pass a "
            f"checkpoint.pt written by contrastkit.text.train_text."
        )
    if state.get("version") != _VERSION:
        raise ValueError(
            f"checkpoint {path} has version {state.get('version')}, this contrastkit reads "
            f"{_VERSION}. Fix: use the contrastkit version that wrote it."
        )
    return state


def encoder_from_checkpoint(path) -> TextEncoder:
    """The trained encoder of a text checkpoint, in eval mode."""
    state = load_text_checkpoint(path)
    cfg = TextTrainConfig.from_dict(state["config"])
    encoder = build_encoder(cfg)
    encoder.load_state_dict(state["encoder"])
    return encoder.eval()


def _restore(cfg, encoder, method, optimizer, scheduler):
    from contrastkit.train.loop import _set_rng_state

    path = cfg.resume
    state = load_text_checkpoint(path)
    now, then = cfg.to_dict(), state["config"]
    diff = sorted(
        k for k in set(now) | set(then) if k not in _RESUME_FREE and now.get(k) != then.get(k)
    )
    if diff:
        shown = "; ".join(f"{k}: checkpoint {then.get(k)!r}, now {now.get(k)!r}" for k in diff)
        raise ValueError(
            f"checkpoint {path} was trained with a different configuration ({shown}). Only "
            f"{sorted(_RESUME_FREE)} may change on resume. Fix: resume with the checkpoint's "
            f"configuration, or start a new run."
        )
    if state["epoch"] > cfg.epochs:
        raise ValueError(
            f"checkpoint {path} has {state['epoch']} epochs done but `epochs` is {cfg.epochs}. "
            f"Fix: set epochs >= {state['epoch']}."
        )
    for name, obj in (
        ("encoder", encoder),
        ("method", method),
        ("optimizer", optimizer),
        ("scheduler", scheduler),
    ):
        try:
            obj.load_state_dict(state[name])
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise ValueError(
                f"checkpoint {path}: the {name} state does not fit this run "
                f"({str(e)[:300]}). Fix: resume with the checkpoint's configuration."
            ) from e
    _set_rng_state(state["rng"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["epoch"]), int(state["step"]), list(state["history"])
