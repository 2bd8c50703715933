"""Cached-gradient encoder pass (GradCache): a logical batch far larger than the encoder's
activations allow, with the gradient of the full-batch loss.

Gao, Zhang, Han and Callan, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup", RepL4NLP 2021 (arXiv 2101.06983). A contrastive loss couples every row of
the batch with every other row, so plain gradient accumulation (summing the losses of
sub-batches) changes the objective: each sub-batch would only see its own negatives.
GradCache keeps the objective and splits only the encoder work:

1. forward the batch in chunks under ``torch.no_grad()``, keeping only the
   representations, after snapshotting the random state before each chunk;
2. compute the loss on the full representation matrix, whose rows are leaves that
   require grad; its backward gives ``d loss / d representations`` (the gradient cache),
   and the loss's own parameters (a learnable temperature, a predictor head run inside
   the loss) receive their whole gradient here;
3. re-run every chunk with autograd under its restored random state, and back-propagate
   the cached gradient slice through it: ``torch.autograd.backward(reps, grads)``.
   Parameter gradients accumulate chunk by chunk; only one chunk's activations are alive
   at a time.

The encoder's gradient is then exactly that of the loss of the chunk-wise forward: equal
to the full-batch gradient for an encoder that treats rows independently (no BatchNorm),
dropout included, because the re-run draws the same random numbers. The cost is one more
encoder forward per step. The ``B x D`` representations and the loss's own memory (the
``B x B`` logits) are still materialised once: GradCache bounds encoder activations, not
loss memory (see ``engine.tiled`` for the latter).

Caveats:

* **BatchNorm** (train mode) normalises each chunk with the chunk's statistics, so the
  result differs from a full-batch forward; choose chunks as large as memory allows. Its
  running statistics would be updated twice per chunk (the no-grad pass and the re-run);
  pass the modules as ``modules=`` and their running buffers are saved before step 1 and
  restored after it, so only the re-run updates them: one update per chunk, as a plain
  chunk-wise forward would do (still ``ceil(B / chunk_size)`` updates per step, not one).
* **Randomness**: the CPU generator, the CUDA generators of the devices the inputs live
  on (and the current CUDA device once CUDA is initialised), and every
  ``torch.Generator`` passed as ``generators=`` are replayed. Randomness from elsewhere
  (Python's ``random``, NumPy, other accelerators) is not: draw it outside ``encode``.
  Non-deterministic kernels (some cuDNN / atomics paths) make the re-run's
  representations differ from the cached ones by rounding; the gradient is then that of
  slightly different representations, as with any recomputation (activation
  checkpointing has the same property).
* **DistributedDataParallel**: every chunk's backward triggers an all-reduce. Run all but
  the last re-run under ``model.no_sync()`` (GradCache's ``no_sync_except_last``) and
  gather the representations inside ``loss_fn``; not wired in yet.
* **Stateful losses** (a MoCo queue, a memory bank) are called once per step, in step 2,
  exactly as in a plain step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from contrastkit.core.validation import _fail

__all__ = ["RandContext", "cached_backward"]

_OWNER = "cached_backward"


class RandContext:
    """Snapshot of the random state at construction; ``with ctx:`` replays it.

    Inside the block the CPU generator, the CUDA generators of ``devices`` and each
    generator of ``generators`` are set back to the snapshot, so the code in the block
    draws the same numbers it drew right after the snapshot was taken. On exit every one
    of them is returned to the state it had on entry: the block leaves no trace on the
    random streams. A context can be entered any number of times.

    ``tensors`` (optional) name the CUDA devices to include, like
    ``torch.utils.checkpoint``; when CUDA is initialised the current device is included
    as well. ``devices`` overrides that choice with an explicit list of CUDA device
    indices.
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        generators: Iterable[torch.Generator] = (),
        devices: Iterable[int] | None = None,
    ):
        self.generators = _check_generators(generators, "RandContext")
        self.devices = _cuda_devices(tensors) if devices is None else [int(d) for d in devices]
        self.cpu_state = torch.get_rng_state()
        self.cuda_states = [torch.cuda.get_rng_state(d) for d in self.devices]
        self.generator_states = [g.get_state() for g in self.generators]
        self._outer: list[tuple] = []

    def __enter__(self) -> RandContext:
        self._outer.append(
            (
                torch.get_rng_state(),
                [torch.cuda.get_rng_state(d) for d in self.devices],
                [g.get_state() for g in self.generators],
            )
        )
        _set_states(
            self.devices, self.generators, self.cpu_state, self.cuda_states, self.generator_states
        )
        return self

    def __exit__(self, *exc) -> None:
        cpu, cuda, gens = self._outer.pop()
        _set_states(self.devices, self.generators, cpu, cuda, gens)


def cached_backward(
    encode: Callable[..., torch.Tensor | Sequence[torch.Tensor]],
    inputs: torch.Tensor | Sequence[torch.Tensor],
    loss_fn: Callable[..., torch.Tensor],
    chunk_size: int,
    *,
    generators: Iterable[torch.Generator] = (),
    modules: nn.Module | Iterable[nn.Module] = (),
    scaler=None,
) -> torch.Tensor:
    """Accumulate into ``.grad`` the gradient of ``loss_fn(*encode(*inputs))`` with the
    encoder run ``chunk_size`` rows at a time, and return the loss (detached).

    Args:
        encode: called as ``encode(*chunks)`` with the same row range of every input
            tensor; returns one representation tensor or a tuple / list of them (e.g.
            query and key towers, or two views). Each is concatenated over the chunks
            along dim 0.
        inputs: one tensor, or a sequence of tensors with the same number of rows N
            (two views, query and key batches); they are split along dim 0.
        loss_fn: called once as ``loss_fn(*representations)`` on the concatenated
            representations (leaves that require grad); returns a 0-d loss. Its own
            parameters (learnable temperature, a predictor head run on the
            representations, an EMA target used without grad) get their gradient here.
            Close over extra per-batch inputs (``labels=``, targets).
        chunk_size: rows per encoder chunk (>= 1); the last chunk holds the remainder.
        generators: ``torch.Generator`` objects that ``encode`` draws from (dropout or
            augmentation with an explicit generator); replayed for the re-run like the
            global CPU / CUDA generators. After the call each is where one plain
            chunk-wise pass would have left it.
        modules: the modules ``encode`` runs (or a single module). Their BatchNorm-style
            running buffers are restored after the no-grad pass, so only the re-run
            updates them (once per chunk). Without it they are updated twice per chunk.
        scaler: an optional ``torch.amp.GradScaler``; the backward passes then use the
            scaled loss (and so scaled cached gradients), and the returned loss is not
            scaled. Call ``scaler.step(optimizer)`` as usual.

    Returns:
        The loss value, detached. Gradients are *added* to existing ``.grad``: zero them
        before the call (``optimizer.zero_grad()``), as before a ``loss.backward()``.

    Raises:
        TypeError / ValueError for bad arguments or outputs of ``encode`` / ``loss_fn``;
        RuntimeError when a re-run chunk does not give representations of the shape the
        first pass gave (an encoder whose output depends on state outside the replayed
        random generators).

    See the module docstring for the BatchNorm, randomness and DDP caveats.
    """
    tensors = _check_inputs(inputs)
    if not callable(encode):
        _fail(
            _OWNER,
            "encode",
            f"is a {type(encode).__name__}",
            "it must be callable",
            "pass a function or module mapping input chunks to representations",
            TypeError,
        )
    if not callable(loss_fn):
        _fail(
            _OWNER,
            "loss_fn",
            f"is a {type(loss_fn).__name__}",
            "it must be callable",
            "pass a function mapping the representations to a 0-d loss",
            TypeError,
        )
    _check_chunk_size(chunk_size)
    gens = _check_generators(generators, _OWNER)
    norms = _running_stat_modules(modules)

    n = tensors[0].shape[0]
    bounds = [(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]
    devices = _cuda_devices(tensors)

    # 1. No-grad pass: representations only, and the random state before each chunk.
    saved = [{k: b.clone() for k, b in m.named_buffers(recurse=False)} for m in norms]
    contexts, parts = [], []
    with torch.no_grad():
        for lo, hi in bounds:
            contexts.append(RandContext(generators=gens, devices=devices))
            parts.append(_check_reps(encode(*(t[lo:hi] for t in tensors)), lo, hi, parts))
        for m, buffers in zip(norms, saved, strict=True):
            for k, b in buffers.items():
                getattr(m, k).copy_(b)
    del saved
    shapes = [[r.shape for r in reps] for reps in parts]

    # 2. Loss on the full representations; their gradient is the cache.
    with torch.enable_grad():
        reps = [torch.cat([p[j] for p in parts]).requires_grad_(True) for j in range(len(parts[0]))]
        del parts
        loss = loss_fn(*reps)
        _check_loss(loss)
        (loss if scaler is None else scaler.scale(loss)).backward()
        cache = [r.grad for r in reps]
        del reps

        # 3. Re-run each chunk with autograd under its replayed random state, and push the
        # cached gradient slice through it.
        offsets = [0] * len(cache)
        for c, ((lo, hi), ctx) in enumerate(zip(bounds, contexts, strict=True)):
            with ctx:
                out = _as_tuple(encode(*(t[lo:hi] for t in tensors)))
            got = [tuple(r.shape) if isinstance(r, torch.Tensor) else None for r in out]
            if got != [tuple(s) for s in shapes[c]]:
                _rerun_error(c, lo, hi, got, [tuple(s) for s in shapes[c]])
            outs, grads = [], []
            for j, r in enumerate(out):
                start = offsets[j]
                offsets[j] += r.shape[0]
                if cache[j] is not None and r.requires_grad:
                    outs.append(r)
                    grads.append(cache[j][start : offsets[j]])
            if outs:
                torch.autograd.backward(outs, grads)
            del out, outs, grads
    return loss.detach()


# ---------------------------------------------------------------------------- internals


def _check_inputs(inputs) -> list[torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        tensors = [inputs]
    elif isinstance(inputs, Sequence) and not isinstance(inputs, str):
        tensors = list(inputs)
        if not tensors:
            _fail(
                _OWNER,
                "inputs",
                "is empty",
                "at least one input tensor is needed",
                "pass the batch tensor, or a list such as [view1, view2]",
            )
    else:
        _fail(
            _OWNER,
            "inputs",
            f"is a {type(inputs).__name__}",
            "it must be a tensor or a sequence of tensors",
            "pass torch tensors, e.g. inputs=(x1, x2)",
            TypeError,
        )
    for i, t in enumerate(tensors):
        name = "inputs" if isinstance(inputs, torch.Tensor) else f"inputs[{i}]"
        if not isinstance(t, torch.Tensor):
            _fail(
                _OWNER,
                name,
                f"is a {type(t).__name__}",
                "every input must be a tensor",
                f"convert it with torch.as_tensor({name})",
                TypeError,
            )
        if t.dim() == 0:
            _fail(
                _OWNER,
                name,
                "is 0-d",
                "inputs are split along dim 0 (the batch)",
                "pass a batch of shape (N, ...)",
            )
        if t.shape[0] != tensors[0].shape[0]:
            _fail(
                _OWNER,
                name,
                f"has {t.shape[0]} rows but inputs[0] has {tensors[0].shape[0]}",
                "all inputs are chunked by the same row ranges, so they need the same N",
                "pass aligned batches (row i of each belongs to sample i)",
            )
    if tensors[0].shape[0] == 0:
        _fail(
            _OWNER,
            "inputs",
            "has 0 rows",
            "the batch must not be empty",
            "pass at least one sample",
        )
    return tensors


def _check_chunk_size(chunk_size) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        _fail(
            _OWNER,
            "chunk_size",
            f"is a {type(chunk_size).__name__} ({chunk_size!r})",
            "it must be an int",
            "pass the rows per encoder chunk, e.g. chunk_size=64",
            TypeError,
        )
    if chunk_size < 1:
        _fail(
            _OWNER,
            "chunk_size",
            f"is {chunk_size}",
            "it must be >= 1",
            "pass the rows per encoder chunk, e.g. chunk_size=64",
        )


def _check_generators(generators, owner: str) -> list[torch.Generator]:
    if isinstance(generators, torch.Generator):
        return [generators]
    try:
        gens = list(generators)
    except TypeError:
        _fail(
            owner,
            "generators",
            f"is a {type(generators).__name__}",
            "it must be an iterable of torch.Generator",
            "pass e.g. generators=[g]",
            TypeError,
        )
    for i, g in enumerate(gens):
        if not isinstance(g, torch.Generator):
            _fail(
                owner,
                f"generators[{i}]",
                f"is a {type(g).__name__}",
                "every entry must be a torch.Generator",
                "pass the generators encode draws from, or none",
                TypeError,
            )
    return gens


def _running_stat_modules(modules) -> list[nn.Module]:
    if isinstance(modules, nn.Module):
        modules = [modules]
    try:
        roots = list(modules)
    except TypeError:
        _fail(
            _OWNER,
            "modules",
            f"is a {type(modules).__name__}",
            "it must be an nn.Module or an iterable of them",
            "pass e.g. modules=model",
            TypeError,
        )
    found, seen = [], set()
    for i, root in enumerate(roots):
        if not isinstance(root, nn.Module):
            _fail(
                _OWNER,
                f"modules[{i}]",
                f"is a {type(root).__name__}",
                "every entry must be an nn.Module",
                "pass the modules encode runs",
                TypeError,
            )
        for m in root.modules():
            if (
                isinstance(m, nn.modules.batchnorm._NormBase)
                and m.track_running_stats
                and id(m) not in seen
            ):
                seen.add(id(m))
                found.append(m)
    return found


def _as_tuple(out) -> tuple:
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, (tuple, list)):
        return tuple(out)
    return (out,)  # reported by _check_reps


def _check_reps(out, lo: int, hi: int, previous: list) -> tuple[torch.Tensor, ...]:
    reps = _as_tuple(out)
    if not reps:
        _fail(
            _OWNER,
            "encode",
            f"returned an empty {type(out).__name__} for rows {lo}:{hi}",
            "it must return a tensor or a tuple of tensors",
            "return the representations of the chunk",
            TypeError,
        )
    for j, r in enumerate(reps):
        if not isinstance(r, torch.Tensor) or not torch.is_floating_point(r) or r.dim() == 0:
            what = (
                f"a {type(r).__name__}"
                if not isinstance(r, torch.Tensor)
                else f"a tensor of dtype {r.dtype} and shape {tuple(r.shape)}"
            )
            _fail(
                _OWNER,
                "encode",
                f"returned {what} as output {j} for rows {lo}:{hi}",
                "each output must be a floating tensor of shape (rows, ...)",
                "return the representations (e.g. the projections) of the chunk",
                TypeError,
            )
    if previous and len(reps) != len(previous[0]):
        _fail(
            _OWNER,
            "encode",
            f"returned {len(reps)} outputs for rows {lo}:{hi} but "
            f"{len(previous[0])} for rows 0:{previous[0][0].shape[0]}",
            "every chunk must give the same number of outputs",
            "return a fixed tuple of representations",
        )
    if previous:
        for j, (r, p) in enumerate(zip(reps, previous[0], strict=True)):
            if r.shape[1:] != p.shape[1:]:
                _fail(
                    _OWNER,
                    "encode",
                    f"returned output {j} of shape {tuple(r.shape)} for "
                    f"rows {lo}:{hi} but {tuple(p.shape)} for the first chunk",
                    "the chunks of one output are concatenated along dim 0",
                    "return representations of a fixed feature shape",
                )
    return tuple(r.detach() for r in reps)


def _check_loss(loss) -> None:
    if not isinstance(loss, torch.Tensor):
        _fail(
            _OWNER,
            "loss_fn",
            f"returned a {type(loss).__name__}",
            "it must return a 0-d tensor",
            "return the loss tensor (reduction='mean')",
            TypeError,
        )
    if loss.numel() != 1 or not torch.is_floating_point(loss):
        _fail(
            _OWNER,
            "loss_fn",
            f"returned a tensor of shape {tuple(loss.shape)} and dtype {loss.dtype}",
            "it must return one floating value (a 0-d loss)",
            "reduce the loss, e.g. reduction='mean' or .mean()",
        )
    if not loss.requires_grad:
        _fail(
            _OWNER,
            "loss_fn",
            "returned a loss that does not require grad",
            "the loss must depend on the representations it is given (do not detach "
            "them or compute it under torch.no_grad())",
            "compute the loss from the representations passed to loss_fn",
        )


def _rerun_error(chunk: int, lo: int, hi: int, got, want):
    raise RuntimeError(
        f"{_OWNER}: re-running chunk {chunk} (rows {lo}:{hi}) with autograd gave outputs of "
        f"shapes {got}, but its no-grad pass gave {want}; the cached gradients no longer "
        f"fit. The encoder "
        f"depends on state that is not replayed (a generator not passed as `generators=`, "
        f"Python or NumPy randomness, a module changed in between). Fix: make encode a "
        f"function of its inputs and the torch random state."
    )


def _cuda_devices(tensors) -> list[int]:
    devices = {t.get_device() for t in tensors if isinstance(t, torch.Tensor) and t.is_cuda}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        devices.add(torch.cuda.current_device())
    return sorted(devices)


def _set_states(devices, generators, cpu, cuda, gens) -> None:
    torch.set_rng_state(cpu)
    for d, s in zip(devices, cuda, strict=True):
        torch.cuda.set_rng_state(s, d)
    for g, s in zip(generators, gens, strict=True):
        g.set_state(s)
