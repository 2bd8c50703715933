"""Data-parallel training under ``torchrun``: the process group, batch shards,
synchronised BatchNorm and gradient averaging used by ``train``.

``torchrun --nproc-per-node N -m contrastkit train ...`` starts N copies of the loop.
Each one sees the same per-epoch permutation and the same augmented global batch of
``batch_size`` samples, keeps its contiguous ``batch_size / N`` rows, and contrasts them
with every rank's rows (``distributed=True`` losses). BatchNorm statistics are computed
over the global batch (``SyncBatchNorm`` below) and parameter gradients are averaged, so
an N-process run follows the 1-process run with the same global batch, up to float
rounding (see ``docs/distributed.md``).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class Context:
    """This process's place in the run; ``Context()`` is a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # the loop initialised the group, so it destroys it

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs, evaluates and writes files."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in TORCHRUN_ENV)


def default_backend(device: torch.device) -> str:
    """nccl for CUDA tensors, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def setup(backend: str | None, device: torch.device) -> Context:
    """Join the run: an already initialised process group is used as it is (and left to
    its owner); under torchrun with ``WORLD_SIZE > 1`` a group is initialised from the
    environment with ``backend`` (None: ``default_backend(device)``); otherwise this is a
    single-process run."""
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), owns_group=False)
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return Context()
    backend = backend or default_backend(device)
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(
            f"train: `dist_backend` is 'nccl', but the training loop keeps its tensors on "
            f"{device.type}; nccl only moves CUDA tensors. Fix: set dist_backend=gloo, or "
            f"leave it null (gloo on CPU, nccl on CUDA)."
        )
    dist.init_process_group(backend)
    return Context(dist.get_rank(), dist.get_world_size(), owns_group=True)


def teardown(ctx: Context) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def shard(rows: torch.Tensor, ctx: Context) -> torch.Tensor:
    """This rank's contiguous, equal slice of a global batch (or of its index list)."""
    if not ctx.active:
        return rows
    size = rows.shape[0] // ctx.world_size
    return rows[ctx.rank * size : (ctx.rank + 1) * size]


def check_batch(batch: int, ctx: Context) -> None:
    if ctx.active and batch % ctx.world_size:
        lo = batch - batch % ctx.world_size
        raise ValueError(
            f"train: the global batch holds {batch} samples, which {ctx.world_size} processes "
            f"cannot share equally (`batch_size` is the global batch; every process takes "
            f"batch_size / world_size of it, and equal shares keep the gradient equal to the "
            f"1-process one). Fix: set batch_size to a multiple of {ctx.world_size}, e.g. "
            f"{lo or ctx.world_size} or {lo + ctx.world_size}."
        )


def mean(value: torch.Tensor, ctx: Context) -> torch.Tensor:
    """The mean of a per-rank tensor over all ranks (identity on one process)."""
    if not ctx.active:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / ctx.world_size


def average_gradients(params, ctx: Context) -> None:
    """All-reduce-average ``.grad`` of ``params`` in one flat buffer (the paths that do not
    go through DistributedDataParallel's own reducer, e.g. GradCache)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not ctx.active or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_object(obj, ctx: Context):
    """Rank 0's ``obj`` on every rank; also a barrier."""
    if not ctx.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: Context) -> None:
    if ctx.active:
        dist.barrier()


# ---------------------------------------------------------------------------- BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: every rank's copy of the sum feeds that rank's
    loss, so the gradient of the summed objective w.r.t. one rank's input is the sum of
    all ranks' output gradients (the convention of ``engine.gather_with_grad``)."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, on any device
    and backend (``torch.nn.SyncBatchNorm`` only runs on GPUs, so it fails under gloo on
    CPU). Two all-reduces per layer: the mean, then the centred sum of squares (two passes,
    as accurate as the 1-process kernel). Evaluation mode uses the running statistics, as
    ``nn.BatchNorm*d`` does; the state dict is that of the module it replaces."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"SyncBatchNorm: expected at least 2D input (got {x.dim()}D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        synced = self.training and dist.is_available() and dist.is_initialized()
        if not synced or dist.get_world_size() == 1:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        local = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64, device=x.device)
        dist.all_reduce(local, op=dist.ReduceOp.SUM)
        count = float(local.item())
        mu = _AllReduceSum.apply(x.sum(dims)) / count
        centred = x - mu.view(shape)
        var = _AllReduceSum.apply(centred.square().sum(dims)) / count
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum
                if m is None:  # cumulative moving average
                    m = 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * count / max(count - 1.0, 1.0)
                self.running_mean.lerp_(mu.detach(), m)
                self.running_var.lerp_(unbiased, m)
        return y


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm*d`` replaced by ``SyncBatchNorm`` sharing its
    parameters and buffers (so optimisers and state dicts are unaffected)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, SyncBatchNorm
    ):
        out = SyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child))
    return module


class Replica(nn.Module):
    """The trainable state of one rank, in one module for DistributedDataParallel: the
    online model (whose forward this is) and the loss (a learnable temperature). The
    predictor head and the loss run outside ``forward``; DDP's reducer still averages
    their gradients, since its hooks sit on every parameter."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, x):
        return self.model(x)


def wrap(model: nn.Module, loss_fn: nn.Module, ctx: Context) -> nn.Module:
    """``model`` itself on one process; a DDP-wrapped ``Replica`` otherwise (parameters
    broadcast from rank 0; buffers are kept equal by ``SyncBatchNorm``, so not broadcast)."""
    if not ctx.active:
        return model
    ddp = nn.parallel.DistributedDataParallel
    # `broadcast_buffers` is deprecated in favour of `forward_sync_buffers` in recent torch.
    new = "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
    no_sync = {"forward_sync_buffers" if new else "broadcast_buffers": False}
    return ddp(Replica(model, loss_fn), **no_sync)
