"""The training loop, evaluation, checkpoints and multi-objective comparison.

Determinism: the model is initialised after seeding every RNG with ``cfg.seed``; the data
order and the augmentations of epoch ``e`` come from a generator seeded with a function of
``(seed, e)``; evaluation uses its own generator. A checkpoint written after epoch ``e``
(model, loss-module state, EMA target, optimizer, scheduler, RNG states, history) is
therefore enough for ``resume`` to continue exactly as an uninterrupted run would.

Data parallel: under ``torchrun --nproc-per-node N`` (``train.distributed``) every process
draws the same permutation and the same augmented global batch of ``batch_size``, keeps
its contiguous ``batch_size / N`` rows, and trains a DistributedDataParallel replica whose
BatchNorm layers use global-batch statistics; the loss is created with
``distributed=True`` (global negatives). Losses without that option are refused. Rank 0
alone shows progress, evaluates (the others wait), and writes metrics and checkpoints;
every rank reads the checkpoint on resume. The result follows the 1-process run with the
same global batch up to float rounding (``docs/distributed.md``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from contrastkit import create_loss, list_losses, loss_info
from contrastkit.engine import cached_backward
from contrastkit.train import distributed as ddp
from contrastkit.train.augment import build_augment, n_views, two_views
from contrastkit.train.config import (
    AugmentConfig,
    CompareConfig,
    EvalConfig,
    LossConfig,
    OptimConfig,
    TrainConfig,
)
from contrastkit.train.data import ImageData, load_dataset
from contrastkit.train.methods import build_method, find_method
from contrastkit.train.models import ContrastiveModel, build_model

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
_FORMAT, _VERSION = "contrastkit-train", 1
INPUT_KINDS = ("views", "labels", "index", "two_tower", "prediction")
# Constructor arguments the loop fills from the data and model when the loss takes them
# and the config leaves them unset (per-sample state, label embeddings, gate sizes).
FILLED_PARAMS = ("num_samples", "num_classes", "dim")
# Settings that may differ between a checkpoint and the run resuming it. Changing
# `epochs` is allowed (to extend a run), but it changes the cosine schedule from then on.
# `grad_cache_chunk` is a memory setting (resume on a smaller machine); with BatchNorm a
# different chunk changes the statistics from then on, so exact resume needs the same one.
_RESUME_FREE = {
    "epochs", "out", "resume", "progress", "eval_every", "threads", "grad_cache_chunk",
    "dist_backend",
}  # fmt: skip
_EVAL_SEED_OFFSET = 7_919  # evaluation views never share a stream with training


@dataclass
class TrainResult:
    """What ``train`` returns: the run's config, modules, per-epoch history and final metrics."""

    config: TrainConfig
    model: ContrastiveModel
    loss_fn: nn.Module
    history: list[dict]
    metrics: dict
    checkpoint: Path | None


# ---------------------------------------------------------------------------- training


def train(cfg: TrainConfig, data: ImageData | None = None, callbacks=()) -> TrainResult:
    """Train ``cfg.loss.name`` on ``cfg.data`` (or the given ``data``); see the module doc.

    Each of ``callbacks`` is called as ``callback(record)`` after every epoch, once the
    epoch's metrics and checkpoint are written; an exception from it stops the run.

    Launched by ``torchrun`` with several processes (or inside an initialised process
    group), it trains data-parallel as the module doc says; every rank returns the same
    history (rank 0's evaluation) and its own, identical, copy of the model.
    """
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    ctx = ddp.setup(cfg.dist_backend, torch.device("cpu"))  # the loop runs on the CPU
    try:
        return _train(cfg, data, callbacks, ctx)
    finally:
        ddp.teardown(ctx)


def _train(cfg: TrainConfig, data, callbacks, ctx: ddp.Context) -> TrainResult:
    seed_everything(cfg.seed)
    data = data if data is not None else load_dataset(cfg.data)
    method = find_method(cfg.loss.name)
    if method is not None:  # a seed method that owns its models (train.methods)
        loss_fn, kind = nn.Module(), "method"
        model = build_method(method, cfg, data.image_shape, data.num_classes)
        _check_method_run(cfg, ctx, model)
        model.bind(data)
        views_per_sample = model.views
    else:
        loss_fn = create_loss(cfg.loss.name, **_loss_params(cfg, ctx, data))
        kind = input_kind(loss_fn, cfg.loss.name)
        _check_views(cfg.views, kind, cfg.loss.name)
        model = build_model(cfg.model, data.image_shape, predictor=kind == "prediction")
        views_per_sample = cfg.views
    if ctx.active:
        model = ddp.convert_sync_batchnorm(model)  # global-batch statistics
    momentum = cfg.ema_momentum()
    _check_ema(momentum, kind, cfg.loss.name)
    target = make_target(model) if momentum > 0 else None
    augment = build_augment(cfg.augment, data.image_shape[1:])
    n = len(data.train_y)
    steps = max(1, n // cfg.batch_size)  # drop the ragged last batch: no batch of one
    ddp.check_batch(min(cfg.batch_size, n), ctx)
    _check_chunk(cfg.grad_cache_chunk, min(cfg.batch_size, n) // ctx.world_size)
    optimizer = make_optimizer(model, loss_fn, cfg.optim)
    scheduler = make_scheduler(optimizer, cfg.optim, steps, cfg.epochs)
    modules = {"model": model, "loss": loss_fn, "target": target}

    start, history = 0, []
    if cfg.resume:
        start, history = _restore(cfg, cfg.resume, modules, optimizer, scheduler)  # every rank
    net = ddp.wrap(model, loss_fn, ctx)  # DDP replica, or the model itself on one process
    trainable = [p for m in (model, loss_fn) for p in m.parameters() if p.requires_grad]
    out = Path(cfg.out) if cfg.out else None
    writes = out is not None and ctx.main  # rank 0 alone writes files
    if writes:
        out.mkdir(parents=True, exist_ok=True)
        _write_jsonl(out / METRICS_NAME, history)  # drops epochs past the checkpoint

    with _progress(cfg.progress and ctx.main, (cfg.epochs - start) * steps) as advance:
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            g = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
            losses = []
            model.train()
            loss_fn.train()
            for i, idx in enumerate(_batches(n, cfg.batch_size, steps, g)):
                # The whole global batch is augmented on every rank, so each sample gets
                # the views it gets on one process; then each rank keeps its own rows.
                x = data.train_x[idx]
                views = n_views(x, augment, g, views_per_sample) if views_per_sample else (x,)
                views = tuple(ddp.shard(x, ctx) for x in views)
                y, index = ddp.shard(data.train_y[idx], ctx), ddp.shard(idx, ctx)
                batch = (views, y, index)
                optimizer.zero_grad(set_to_none=True)
                if kind == "method":
                    loss = model.batch_loss(views, y, index, epoch)
                    loss.backward()
                    loss = loss.detach()
                elif ctx.active and cfg.grad_cache_chunk is not None:
                    # Several backward passes per step: average once, outside DDP.
                    loss = batch_backward(model, target, loss_fn, kind, batch, cfg.grad_cache_chunk)
                    ddp.average_gradients(trainable, ctx)
                else:
                    loss = batch_backward(
                        model, target, loss_fn, kind, batch, cfg.grad_cache_chunk, net
                    )
                loss = ddp.mean(loss, ctx)  # the global-batch loss, the same on every rank
                _check_finite(loss, cfg, epoch)
                if cfg.optim.grad_clip is not None:
                    params = [p for group in optimizer.param_groups for p in group["params"]]
                    nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
                optimizer.step()
                scheduler.step()
                if target is not None:
                    ema_update(target, model, momentum)
                if kind == "method":
                    model.after_step(epoch * steps + i + 1, cfg.epochs * steps)
                losses.append(loss.item())
                advance(f"epoch {epoch + 1}/{cfg.epochs} loss {losses[-1]:.4f}")
            record = {
                "epoch": epoch + 1,
                "loss": sum(losses) / len(losses),
                "lr": optimizer.param_groups[0]["lr"],
                "time": time.perf_counter() - t0,
            }
            if getattr(loss_fn, "logit_scale", None) is not None:
                record["temperature"] = float(loss_fn.current_temperature().detach())
            last = epoch + 1 == cfg.epochs
            if ctx.main and (last or (epoch + 1) % cfg.eval_every == 0):
                linear = cfg.eval.linear_probe and last
                record.update(
                    evaluate(model, data, cfg.eval, augment=augment, seed=cfg.seed, linear=linear)
                )
                if kind == "method":
                    record.update(model.extra_metrics(data, final=linear))
            record = ddp.broadcast_object(record, ctx)  # the other ranks wait for rank 0's
            history.append(record)
            if writes:
                _append_jsonl(out / METRICS_NAME, record)
                save_checkpoint(
                    out / CHECKPOINT_NAME,
                    cfg,
                    epoch + 1,
                    modules,
                    optimizer,
                    scheduler,
                    history,
                    data.image_shape,
                    data.num_classes,
                )
            for callback in callbacks:
                callback(record)
    ddp.barrier(ctx)  # the last checkpoint exists when train returns on any rank

    metrics = {k: v for k, v in history[-1].items() if k not in ("epoch", "lr", "time")}
    ckpt = out / CHECKPOINT_NAME if out is not None else None
    return TrainResult(cfg, model, loss_fn, history, metrics, ckpt)


def batch_loss(model, target, loss_fn, kind: str, batch, forward=None) -> torch.Tensor:
    """The objective on one batch, following the loss's ``inputs`` kind.

    ``batch`` is ``(views, labels, index)``: a tuple of V augmented views of the same
    samples (two for two-tower and prediction objectives), their classes and their
    dataset indices (fed to ``inputs="index"`` losses with per-sample state). All views
    go through the online network in one pass (batch-norm statistics are shared by the
    views, as in SimCLR). ``target`` (an EMA copy) gives the keys of two-tower losses and
    the targets of prediction losses.
    """
    views, y, index = batch
    targets = _target_projections(target, kind, views, None)
    return _objective(model, loss_fn, kind, y, index, targets)(
        *_online_encoder(forward or model, kind, target)(*views)
    )


def batch_backward(model, target, loss_fn, kind: str, batch, chunk_size=None, forward=None):
    """Back-propagate the objective of one batch into ``.grad``; return the detached loss.

    ``forward`` runs the online model (default ``model`` itself; the training loop passes
    its DistributedDataParallel replica); the predictor head is always ``model.predictor``.

    ``chunk_size=None``: ``batch_loss(...).backward()``. Otherwise the cached-gradient
    pass (GradCache, ``contrastkit.engine.cached_backward``): the online network runs
    ``chunk_size`` samples (both views of each, so ``2 * chunk_size`` rows) at a time,
    the loss sees the whole batch, and the predictor head of prediction objectives runs
    inside the loss on the cached projections, so it gets its gradient from the full
    batch. The EMA target runs chunk by chunk without grad.

    Without BatchNorm (and for any row-independent network) this gives the same loss and
    gradients as the plain pass, up to float rounding. With BatchNorm, each chunk is
    normalised with its own statistics and the running statistics are updated once per
    chunk rather than once per batch: the larger the chunk, the closer to the plain pass.
    """
    if chunk_size is None:
        loss = batch_loss(model, target, loss_fn, kind, batch, forward)
        loss.backward()
        return loss.detach()
    views, y, index = batch
    targets = _target_projections(target, kind, views, chunk_size)
    return cached_backward(
        _online_encoder(model, kind, target),
        views,
        _objective(model, loss_fn, kind, y, index, targets),
        chunk_size,
        modules=model,
    )


def _online_encoder(model, kind: str, target):
    """``encode(*views)``: the online projections of every view, in one pass (``model``
    may be a DistributedDataParallel replica of the online model)."""

    def encode(*views):
        _, z = model(torch.cat(views))
        zs = z.chunk(len(views))
        if kind == "two_tower" and target is not None:
            return zs[:1]  # the keys come from the target network
        return zs

    return encode


@torch.no_grad()
def _target_projections(target, kind: str, views, chunk_size):
    """The EMA target's projections of the two ``views``: ``(t1, t2)`` for prediction
    objectives, ``(k2,)`` keys for two-tower ones, None without a target; ``chunk_size``
    rows at a time."""
    if target is None or kind not in ("two_tower", "prediction"):
        return None
    x1, x2 = views
    size = len(x1) if chunk_size is None else chunk_size
    parts = []
    for i in range(0, len(x1), size):
        a, b = x1[i : i + size], x2[i : i + size]
        if kind == "prediction":
            parts.append(target(torch.cat([a, b]))[1].chunk(2))
        else:
            parts.append((target(b)[1],))
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))


def _objective(model, loss_fn, kind: str, y, index, targets):
    """``objective(*projections)`` -> the loss, for the projections of ``_online_encoder``."""

    def objective(*zs):
        if kind == "prediction":
            z1, z2 = zs
            p1, p2 = model.predictor(z1), model.predictor(z2)
            # Without a target the loss stops the gradient on its second argument.
            t1, t2 = targets if targets is not None else (z1, z2)
            return 0.5 * (loss_fn(p1, t2) + loss_fn(p2, t1))
        if kind == "two_tower" and targets is not None:
            zs = (zs[0], *targets)
        if kind == "labels":
            return loss_fn(*zs, labels=y)
        if kind == "index":
            return loss_fn(*zs, index=index)
        return loss_fn(*zs)

    return objective


def _check_method_run(cfg: TrainConfig, ctx: ddp.Context, model) -> None:
    """Methods train on one process, without cached gradients or a loop EMA target, with
    the views they define."""
    name = cfg.loss.name
    refused = [
        ("several processes (torchrun)", ctx.active, "launch it as a plain process"),
        (f"grad_cache_chunk={cfg.grad_cache_chunk}", cfg.grad_cache_chunk is not None,
         "unset grad_cache_chunk"),
        (f"loss.ema={cfg.loss.ema}", cfg.loss.ema is not None,
         "unset loss.ema (a method keeps its own teacher)"),
        (f"views={cfg.views}", cfg.views not in (2, model.views),
         f"unset views (the method draws {model.views})"),
    ]  # fmt: skip
    for what, bad, fix in refused:
        if bad:
            raise ValueError(
                f"train: {name!r} is a method (train.methods), which trains on one process "
                f"with its own views and teacher; it cannot run with {what}. Fix: {fix}."
            )


def _check_chunk(chunk: int | None, batch: int) -> None:
    if chunk is not None and chunk < batch and batch % chunk == 1:
        raise ValueError(
            f"train: `grad_cache_chunk` is {chunk} and batches hold {batch} samples, which "
            f"leaves a last chunk of 1 sample; BatchNorm needs two per chunk. Fix: pick a "
            f"chunk that divides the batch size (or leaves a remainder of at least 2), e.g. "
            f"grad_cache_chunk={_divisor_near(batch, chunk)}."
        )


def _divisor_near(n: int, k: int) -> int:
    return min((d for d in range(2, n + 1) if n % d == 0), key=lambda d: (abs(d - k), d))


def distributed_losses() -> list[str]:
    """The registered objectives the loop can train on several processes: those with a
    ``distributed`` option (global negatives) whose inputs the loop feeds."""
    return [
        name
        for name in list_losses()
        if "distributed" in loss_info(name).parameters()
        and getattr(loss_info(name).cls, "inputs", "views") in INPUT_KINDS
    ]


def _loss_params(cfg: TrainConfig, ctx: ddp.Context, data: ImageData | None = None) -> dict:
    """``cfg.loss.params``, with the ``FILLED_PARAMS`` the loss takes (training-set size,
    number of classes, projection dim) and ``distributed=True`` on several processes
    (unless the config sets it: ``distributed: false`` keeps each rank's negatives local)."""
    params = dict(cfg.loss.params)
    if data is not None:
        known = loss_info(cfg.loss.name).parameters()
        filled = {
            "num_samples": len(data.train_y),
            "num_classes": data.num_classes,
            "dim": cfg.model.proj_dim,
        }
        for key in FILLED_PARAMS:
            if key in known and params.get(key) is None:
                params[key] = filled[key]
    if not ctx.active:
        return params
    if "distributed" not in loss_info(cfg.loss.name).parameters():
        raise ValueError(
            f"train: loss {cfg.loss.name!r} has no `distributed` option, so on "
            f"{ctx.world_size} processes each would see only its own batch shard and the run "
            f"would not match a 1-process run with the same batch. Fix: train it on one "
            f"process, or pick one of {', '.join(distributed_losses())}."
        )
    params.setdefault("distributed", True)
    return params


def input_kind(loss_fn: nn.Module, name: str) -> str:
    kind = getattr(loss_fn, "inputs", "views")
    if kind not in INPUT_KINDS:
        raise ValueError(
            f"train: loss {name!r} takes inputs {kind!r}, which this training loop does not "
            f"feed (it feeds {INPUT_KINDS}). Fix: pick another objective (contrastkit list)."
        )
    return kind


def _check_views(views: int, kind: str, name: str) -> None:
    if views != 2 and kind in ("two_tower", "prediction"):
        raise ValueError(
            f"train: `views` is {views} for {name!r}, whose inputs are {kind!r}: one query "
            f"and one key (or prediction and target) view per sample. Fix: set views=2, or "
            f"pick a multi-view objective (contrastkit list)."
        )


def _check_ema(momentum: float, kind: str, name: str) -> None:
    if momentum > 0 and kind not in ("two_tower", "prediction"):
        raise ValueError(
            f"train: `loss.ema` is {momentum} for {name!r}, whose inputs are {kind!r}; an EMA "
            f"target network only feeds two-tower keys and prediction targets. Fix: set "
            f"loss.ema=0 (or leave it null)."
        )


def _check_finite(loss: torch.Tensor, cfg: TrainConfig, epoch: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"train: the {cfg.loss.name!r} loss is {loss.item()} in epoch {epoch + 1} "
            f"(seed {cfg.seed}, lr {cfg.optim.lr}). Fix: lower optim.lr, set optim.grad_clip, "
            f"or raise the temperature."
        )


def _batches(n: int, batch_size: int, steps: int, g: torch.Generator):
    perm = torch.randperm(n, generator=g)
    size = min(batch_size, n)
    return [perm[i * size : (i + 1) * size] for i in range(steps)]


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**63)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_target(model: ContrastiveModel) -> ContrastiveModel:
    """A frozen copy of encoder + projector (no predictor), updated by ``ema_update``."""
    target = copy.deepcopy(model)
    target.predictor = None
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``t <- m t + (1 - m) o`` for every parameter the target has (BYOL eq. 1)."""
    params = dict(online.named_parameters())
    for name, p in target.named_parameters():
        p.lerp_(params[name], 1.0 - momentum)


def make_optimizer(model: nn.Module, loss_fn: nn.Module, cfg: OptimConfig):
    """AdamW; weight decay only on weight matrices / kernels (not biases, norms or the
    loss's own parameters such as a learnable temperature)."""
    params = [p for p in model.parameters() if p.requires_grad]  # not a method's teacher
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    no_decay += [p for p in loss_fn.parameters() if p.requires_grad]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then cosine decay to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_scheduler(optimizer, cfg: OptimConfig, steps_per_epoch: int, epochs: int):
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    total = epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total, cfg.min_lr_ratio)
    )


@contextlib.contextmanager
def _progress(enabled: bool, total: int):
    """Yields ``advance(description)``; a rich bar when enabled, a no-op otherwise."""
    if not enabled:
        yield lambda description: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("training", total=total)
        yield lambda description: bar.update(task, advance=1, description=description)


# ---------------------------------------------------------------------------- evaluation


@torch.no_grad()
def embed(model: ContrastiveModel, x: torch.Tensor, space: str = "features", batch_size=1024):
    """Embeddings of ``x`` in eval mode: encoder features or projections."""
    was_training = model.training
    model.eval()
    try:
        parts = [
            model(x[i : i + batch_size])[space == "projections"]
            for i in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts)


def evaluate(
    model: ContrastiveModel,
    data: ImageData,
    cfg: EvalConfig | None = None,
    *,
    augment: nn.Module | None = None,
    seed: int = 0,
    linear: bool | None = None,
) -> dict:
    """kNN accuracy (train split as memory, test split as queries), optionally a linear
    probe, and geometry diagnostics of the test split.

    ``alignment`` compares two augmented views of each test image; ``uniformity``,
    ``effective_rank`` and ``tolerance`` describe the clean test embeddings. The views
    come from a generator seeded with ``seed``, so the numbers are comparable over epochs.
    """
    from contrastkit import diagnostics
    from contrastkit.evaluation import knn_accuracy, linear_probe

    cfg = cfg or EvalConfig()
    model.check_input(data.image_shape, "evaluate")
    linear = cfg.linear_probe if linear is None else linear
    augment = augment or build_augment(AugmentConfig(), data.image_shape[1:])
    train_z = embed(model, data.train_x, cfg.space)
    test_z = embed(model, data.test_x, cfg.space)
    k = min(cfg.knn_k, len(data.train_y))
    out = {
        "knn_acc": knn_accuracy(
            train_z, data.train_y, test_z, data.test_y, k=k, temperature=cfg.knn_temperature
        )
    }
    if linear:
        out["linear_acc"] = linear_probe(train_z, data.train_y, test_z, data.test_y, seed=seed)
    g = torch.Generator().manual_seed(seed + _EVAL_SEED_OFFSET)
    v1, v2 = two_views(data.test_x, augment, g)
    out["alignment"] = diagnostics.alignment(
        embed(model, v1, cfg.space), embed(model, v2, cfg.space)
    )
    out["uniformity"] = diagnostics.uniformity(test_z)
    out["effective_rank"] = diagnostics.effective_rank(test_z)
    out["tolerance"] = diagnostics.tolerance(test_z, data.test_y)
    return {k: float(v) for k, v in out.items()}


# ---------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    path, cfg, epoch, modules, optimizer, scheduler, history, input_shape, num_classes=None
) -> Path:
    """Write the full training state atomically: a temp file in the same folder, then
    ``os.replace``, so a crash never leaves a half-written checkpoint at ``path``.
    ``num_classes`` lets ``load_model`` rebuild methods with a classifier."""
    path = Path(path)
    state = {
        "format": _FORMAT,
        "version": _VERSION,
        "epoch": epoch,
        "config": cfg.to_dict(),
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "model": modules["model"].state_dict(),
        "loss": modules["loss"].state_dict(),
        "target": None if modules["target"] is None else modules["target"].state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(),
        "history": history,
    }
    _atomic_write(path, lambda f: torch.save(state, f))
    return path


def read_checkpoint_file(path, kind: str = "") -> object:
    """``torch.load`` of a checkpoint file (weights only, on the CPU); a missing file raises
    ``FileNotFoundError`` and a damaged one ``ValueError``, each naming the file and the fix.
    ``kind`` qualifies the run in the message (e.g. ``"text "``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist. Fix: pass the checkpoint.pt of a {kind}run "
            f"folder (written after every epoch when `out` is set)."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise ValueError(
            f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e)[:200]}): it is "
            f"corrupt or not a torch file. Fix: resume from an intact checkpoint, or start "
            f"a new run without `resume`."
        ) from e


def load_checkpoint(path) -> dict:
    """Read and check a training checkpoint; a bad file raises ``ValueError`` naming it."""
    path = Path(path)
    state = read_checkpoint_file(path)
    missing = [
        k
        for k in ("format", "version", "epoch", "config", "input_shape", "model")
        if not isinstance(state, dict) or k not in state
    ]
    if missing or state["format"] != _FORMAT:
        raise ValueError(
            f"checkpoint {path} is not a contrastkit training checkpoint (missing "
            f"{missing or 'its format tag'}). Fix: pass a checkpoint.pt written by "
            f"contrastkit's train()."
        )
    if state["version"] != _VERSION:
        raise ValueError(
            f"checkpoint {path} has format version {state['version']}, this contrastkit reads "
            f"version {_VERSION}. Fix: use the contrastkit version that wrote it."
        )
    return state


def config_from_checkpoint(path) -> TrainConfig:
    """The configuration a checkpoint was trained with."""
    return TrainConfig.from_dict(load_checkpoint(path)["config"])


def load_model(path) -> tuple[ContrastiveModel, TrainConfig]:
    """The trained model of a checkpoint, in eval mode, with its configuration."""
    state = load_checkpoint(path)
    cfg = TrainConfig.from_dict(state["config"])
    shape = tuple(state.get("input_shape", ()))
    method = find_method(cfg.loss.name)
    if method is not None:
        model = build_method(method, cfg, shape, state.get("num_classes") or 2, fresh=False)
    else:
        loss_fn = create_loss(cfg.loss.name, **cfg.loss.params)
        kind = input_kind(loss_fn, cfg.loss.name)
        model = build_model(cfg.model, shape, predictor=kind == "prediction")
    _load_state(model, state["model"], path, "model")
    return model.eval(), cfg


def _restore(cfg, path, modules, optimizer, scheduler) -> tuple[int, list[dict]]:
    state = load_checkpoint(path)
    _check_compatible(cfg, state["config"], path)
    epoch = int(state["epoch"])
    if epoch > cfg.epochs:
        raise ValueError(
            f"checkpoint {path} has {epoch} epochs done but `epochs` is {cfg.epochs}. "
            f"Fix: set epochs >= {epoch}."
        )
    for key in ("model", "loss", "target"):
        if modules[key] is not None:
            _load_state(modules[key], state.get(key), path, key)
    for key, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        try:
            obj.load_state_dict(state[key])
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise ValueError(
                f"checkpoint {path}: the {key} state does not fit this run ({e}). Fix: resume "
                f"with the checkpoint's own configuration, or start a new run."
            ) from e
    _set_rng_state(state["rng"])
    return epoch, list(state["history"])


def _load_state(module: nn.Module, sd, path, key: str) -> None:
    try:
        module.load_state_dict(sd)
    except (RuntimeError, TypeError, AttributeError, KeyError) as e:
        raise ValueError(
            f"checkpoint {path}: the saved {key} state does not match the {key} this "
            f"configuration builds ({str(e)[:300]}). Fix: use the configuration the "
            f"checkpoint was written with (`contrastkit train --resume PATH` reads it)."
        ) from e


def _check_compatible(cfg: TrainConfig, saved: dict, path) -> None:
    now, then = _flatten(cfg.to_dict()), _flatten(saved)
    diff = sorted(
        k
        for k in set(now) | set(then)
        if k.split(".")[0] not in _RESUME_FREE and now.get(k) != then.get(k)
    )
    if diff:
        shown = "; ".join(f"{k}: checkpoint {then.get(k)!r}, now {now.get(k)!r}" for k in diff)
        raise ValueError(
            f"checkpoint {path} was trained with a different configuration ({shown}). Only "
            f"{sorted(_RESUME_FREE)} may change on resume. Fix: resume with the checkpoint's "
            f"configuration (`contrastkit train --resume PATH` reads it), or start a new run."
        )


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "params":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_jsonl(path: Path, records: list[dict]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    _atomic_write(path, lambda f: f.write(text))


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------- comparison

LEADERBOARD_METRICS = ("knn_acc", "linear_acc", "alignment", "uniformity", "effective_rank")


def resolve_losses(spec) -> tuple[list[str], dict[str, str]]:
    """The objectives to train from a list of names or ``"all"``, and the skipped ones
    with the reason (not registered, or inputs the loop does not feed). Names of methods
    (``train.methods``) are kept when listed; ``"all"`` means the registered losses."""
    registered = list_losses()
    names = registered if spec == "all" else ([spec] if isinstance(spec, str) else list(spec))
    keep, skipped = [], {}
    for name in names:
        key = name.lower()
        if find_method(key) is not None:
            if key not in keep:
                keep.append(key)
        elif key not in registered:
            skipped[name] = "not registered (neither a loss nor a method)"
        elif getattr(loss_info(key).cls, "inputs", "views") not in INPUT_KINDS:
            skipped[name] = f"inputs {loss_info(key).cls.inputs!r} are not fed by the loop"
        elif key not in keep:
            keep.append(key)
    return keep, skipped


def compare(cfg: CompareConfig, on_run=None) -> list[dict]:
    """Train every objective of ``cfg.losses`` with every seed on one data set and encoder.

    Returns one record per run (``objective``, ``seed``, ``time`` and the final metrics,
    ``loss`` being the last epoch's mean training loss; or ``error`` for a run whose loss
    became non-finite);
    ``on_run(record)`` is called after each. Unregistered names are skipped with a
    warning. With ``train.out`` set, each run keeps its folder ``out/<loss>/seed<k>``.
    """
    names, skipped = resolve_losses(cfg.losses)
    for name, reason in skipped.items():
        warnings.warn(f"compare: skipping {name!r}: {reason}", stacklevel=2)
    if not names:
        raise ValueError(
            f"compare: no objective to train (`compare.losses` is {cfg.losses!r}; skipped: "
            f"{skipped}). Fix: list registered names (contrastkit list) or use 'all'."
        )
    data = load_dataset(cfg.train.data)
    records = []
    for name in names:
        for seed in cfg.seeds:
            out = None if cfg.train.out is None else str(Path(cfg.train.out) / name / f"seed{seed}")
            loss = LossConfig(
                name=name, params=dict(cfg.loss_params.get(name, {})), ema=cfg.train.loss.ema
            )
            run = dataclasses.replace(
                cfg.train, seed=seed, loss=loss, out=out, resume=None, progress=False
            )
            t0 = time.perf_counter()
            record = {"objective": name, "seed": seed}
            try:
                record.update(train(run, data=data).metrics)
            except FloatingPointError as e:  # a diverged run is a result, not a crash
                warnings.warn(f"compare: {name!r} seed {seed} failed: {e}", stacklevel=2)
                record["error"] = str(e)
            record["time"] = time.perf_counter() - t0
            records.append(record)
            if on_run is not None:
                on_run(record)
    return records


def aggregate(records: list[dict], metrics=LEADERBOARD_METRICS) -> list[dict]:
    """Mean and standard deviation over seeds per objective, in first-seen order:
    ``{"objective", "runs", "failed", "<m>_mean", "<m>_std", ...}`` over the runs that
    did not fail (std 0 for a single run)."""
    rows = []
    for name in dict.fromkeys(r["objective"] for r in records):
        every = [r for r in records if r["objective"] == name]
        runs = [r for r in every if "error" not in r]
        row = {"objective": name, "runs": len(runs), "failed": len(every) - len(runs)}
        for m in (*metrics, "time"):
            values = [r[m] for r in runs if m in r]
            if values:
                row[f"{m}_mean"] = statistics.fmean(values)
                row[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows
