"""The implementations being timed: ours, the peers, a plain PyTorch reference.

Every implementation is a builder ``build(tile) -> fn(a, b) -> loss`` over two raw ``(B, D)``
float32 leaves (normalization happens inside ``fn``, so it is timed). Peers are imported
here, lazily, only in the worker process that times them; a missing peer raises
``PeerUnavailable`` with the reason, which the report shows.

lightly and open_clip import torchvision at package level (not installed here), so their
single loss files are loaded from the install folder, as tests/test_peers.py does.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TEMPERATURE = 0.1

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class PeerUnavailable(RuntimeError):
    """A peer library is not installed or cannot be loaded; the message says why."""


@dataclass(frozen=True)
class Impl:
    family: str  # "ntxent" (two views, 2B x 2B) or "clip" (two towers, B x B)
    name: str
    kind: str  # "ours", "peer" (a third-party library) or "reference" (plain PyTorch)
    tiled: bool  # peak memory ~ B (tiled) rather than ~ B^2: used for projections
    description: str
    build: Callable[[int], LossFn]


# ---------------------------------------------------------------------------- loading peers


def package_root(package: str) -> str:
    """Install folder of a package, found without running its ``__init__``."""
    module = sys.modules.get(package)
    if module is not None and getattr(module, "__path__", None):
        return list(module.__path__)[0]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PeerUnavailable(
            f"{package} is not installed (lightly and open_clip: pip install --no-deps "
            "lightly==1.6.0 open_clip_torch==3.3.0, as make install does)"
        )
    return spec.submodule_search_locations[0]


def load_file(package: str, relpath: str, module_name: str):
    """Load one file of an installed package as its own module."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = f"{package_root(package)}/{relpath}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None:
        raise PeerUnavailable(f"{path} not found ({package} version without this file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _import(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise PeerUnavailable(f"{package} is not installed ({e}; pip install -e '.[bench]')") from e


def lightly_ntxent_module():
    """``lightly/loss/ntx_ent_loss.py`` without lightly's ``__init__`` files.

    The chain ``ntx_ent_loss -> models.modules.memory_bank -> models.utils`` needs only
    ``torchvision.ops.StochasticDepth`` at module level (a class used by ViT helpers, never
    by the loss), so a stub ``torchvision.ops`` with a placeholder class is registered when
    torchvision is absent; the real ``MemoryBankModule`` (size 0: no bank) is used.
    """
    if "lightly.loss.ntx_ent_loss" in sys.modules:
        return sys.modules["lightly.loss.ntx_ent_loss"]
    root = package_root("lightly")
    for name, folder in (
        ("lightly", root),
        ("lightly.utils", f"{root}/utils"),
        ("lightly.loss", f"{root}/loss"),
        ("lightly.models", f"{root}/models"),
        ("lightly.models.modules", f"{root}/models/modules"),
    ):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [folder]  # submodules import normally; __init__ is never run
            sys.modules[name] = stub
    if importlib.util.find_spec("torchvision") is None and "torchvision" not in sys.modules:
        torchvision = types.ModuleType("torchvision")
        torchvision.__path__ = []
        ops = types.ModuleType("torchvision.ops")

        class StochasticDepth(torch.nn.Module):  # placeholder: never called by the loss
            def __init__(self, *args, **kwargs):
                raise RuntimeError("torchvision stub: StochasticDepth is not available")

        ops.StochasticDepth = StochasticDepth
        torchvision.ops = ops
        sys.modules["torchvision"] = torchvision
        sys.modules["torchvision.ops"] = ops
    try:
        return importlib.import_module("lightly.loss.ntx_ent_loss")
    except Exception as e:  # any import failure means: cannot time it
        raise PeerUnavailable(f"lightly's ntx_ent_loss.py could not be loaded: {e!r}") from e


# ---------------------------------------------------------------------------- NT-Xent


def ntxent_reference(z1: torch.Tensor, z2: torch.Tensor, temperature=TEMPERATURE):
    """Plain PyTorch NT-Xent: normalize, 2B x 2B matmul, mask the diagonal, cross-entropy."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a row is not its own negative
    n = z1.shape[0]
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])  # the other view
    return F.cross_entropy(logits, targets)


def _ntxent_ours(tile: int) -> LossFn:
    from contrastkit.functional import info_nce

    return lambda z1, z2: info_nce(z1, z2, temperature=TEMPERATURE, tile_size=tile)


def _ntxent_pml(tile: int) -> LossFn:
    _import("pytorch_metric_learning", "pytorch-metric-learning")
    from pytorch_metric_learning import losses

    loss = losses.SelfSupervisedLoss(losses.NTXentLoss(temperature=TEMPERATURE), symmetric=True)
    return loss


def _ntxent_lightly(tile: int) -> LossFn:
    module = lightly_ntxent_module()
    return module.NTXentLoss(temperature=TEMPERATURE, memory_bank_size=0)


def _info_nce_cls():
    return _import("info_nce", "info-nce-pytorch").InfoNCE


def _ntxent_infonce(tile: int) -> LossFn:
    loss = _info_nce_cls()(temperature=TEMPERATURE)
    return lambda z1, z2: loss(torch.cat([z1, z2]), torch.cat([z2, z1]))


# ---------------------------------------------------------------------------- CLIP


def clip_reference(q: torch.Tensor, k: torch.Tensor, temperature=TEMPERATURE):
    """Plain PyTorch CLIP: normalize, B x B matmul, (CE(S) + CE(S^T)) / 2."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = q @ k.T / temperature
    targets = torch.arange(q.shape[0])
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _clip_ours(tile: int) -> LossFn:
    from contrastkit.functional import clip

    return lambda q, k: clip(q, k, temperature=TEMPERATURE, tile_size=tile)


def _clip_open_clip(tile: int) -> LossFn:
    module = load_file("open_clip", "loss.py", "_bench_open_clip_loss")
    loss = module.ClipLoss()
    scale = 1.0 / TEMPERATURE
    return lambda q, k: loss(F.normalize(q, dim=1), F.normalize(k, dim=1), logit_scale=scale)


def _clip_infonce(tile: int) -> LossFn:
    loss = _info_nce_cls()(temperature=TEMPERATURE)
    return lambda q, k: (loss(q, k) + loss(k, q)) / 2


# ---------------------------------------------------------------------------- registry

IMPLS: dict[str, list[Impl]] = {
    "ntxent": [
        Impl(
            "ntxent",
            "ours-plain",
            "ours",
            False,
            "contrastkit.functional.info_nce(z1, z2, temperature=0.1, tile_size=0)",
            lambda tile: _ntxent_ours(0),
        ),
        Impl(
            "ntxent",
            "ours-tiled",
            "ours",
            True,
            "contrastkit.functional.info_nce(z1, z2, temperature=0.1, tile_size=T)",
            _ntxent_ours,
        ),
        Impl(
            "ntxent",
            "ref",
            "reference",
            False,
            "plain PyTorch: normalize, (2B x 2B) matmul, fill_diagonal_(-inf), cross_entropy",
            lambda tile: ntxent_reference,
        ),
        Impl(
            "ntxent",
            "pml",
            "peer",
            False,
            "pytorch_metric_learning SelfSupervisedLoss(NTXentLoss(temperature=0.1), "
            "symmetric=True)(z1, z2)",
            _ntxent_pml,
        ),
        Impl(
            "ntxent",
            "lightly",
            "peer",
            False,
            "lightly NTXentLoss(temperature=0.1, memory_bank_size=0)(z1, z2); "
            "loss/ntx_ent_loss.py loaded without lightly's __init__, torchvision.ops stubbed",
            _ntxent_lightly,
        ),
        Impl(
            "ntxent",
            "info-nce",
            "peer",
            False,
            "info_nce.InfoNCE(temperature=0.1)(cat(z1, z2), cat(z2, z1)) "
            "(unpaired negatives; it cannot mask the self-similarity)",
            _ntxent_infonce,
        ),
    ],
    "clip": [
        Impl(
            "clip",
            "ours-plain",
            "ours",
            False,
            "contrastkit.functional.clip(q, k, temperature=0.1, tile_size=0)",
            lambda tile: _clip_ours(0),
        ),
        Impl(
            "clip",
            "ours-tiled",
            "ours",
            True,
            "contrastkit.functional.clip(q, k, temperature=0.1, tile_size=T)",
            _clip_ours,
        ),
        Impl(
            "clip",
            "ref",
            "reference",
            False,
            "plain PyTorch: normalize, (B x B) matmul, (CE(S) + CE(S^T)) / 2",
            lambda tile: clip_reference,
        ),
        Impl(
            "clip",
            "open_clip",
            "peer",
            False,
            "open_clip ClipLoss()(normalize(q), normalize(k), logit_scale=1/0.1); "
            "open_clip/loss.py loaded standalone",
            _clip_open_clip,
        ),
        Impl(
            "clip",
            "info-nce",
            "peer",
            False,
            "(InfoNCE(q, k) + InfoNCE(k, q)) / 2 with info_nce.InfoNCE(temperature=0.1)",
            _clip_infonce,
        ),
    ],
}

FAMILIES = tuple(IMPLS)


def get_impl(family: str, name: str) -> Impl:
    for impl in IMPLS[family]:
        if impl.name == name:
            return impl
    names = ", ".join(i.name for i in IMPLS[family])
    raise KeyError(f"unknown {family} implementation {name!r}; known: {names}")


def peer_versions() -> dict[str, str]:
    """Installed versions of the peer distributions (without importing them)."""
    from importlib import metadata

    out = {}
    for dist in ("pytorch-metric-learning", "lightly", "open_clip_torch", "info-nce-pytorch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out
