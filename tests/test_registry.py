"""Registry-driven sweep: every registered loss runs forward, backward and a config
round-trip; the import layering of DESIGN.md holds; the queue keeps its state."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import torch

import contrastkit
from contrastkit.engine import MemoryQueue

PACKAGE = Path(contrastkit.__file__).parent


def call(loss, z1, z2, labels):
    """Call ``loss`` the way its ``inputs`` kind documents, on a toy batch built from
    two (8, 6) embeddings and three classes (every extra input is deterministic)."""
    g = torch.Generator().manual_seed(123)
    n, d = z1.shape
    kind = loss.inputs
    if kind == "labels":
        return loss(z1, z2, labels=labels)
    if kind == "targets":
        return loss(z1, z2, targets=labels.to(z1.dtype) * 1.5)
    if kind == "index":
        return loss(z1, z2, index=torch.arange(n))
    if kind == "scores":
        same = (labels[:, None] == labels[None, :]).to(z1.dtype)
        return loss(z1, z2, scores=0.25 + 0.75 * same)
    if kind == "modalities":
        return loss(z1, z2, z1 * z2)
    if kind == "one_to_many":
        return loss(z1, torch.stack([z2, z2 + z1], 1))
    if kind == "relevance":
        relevance = torch.randint(0, 3, (n // 2, 2), generator=g)
        return loss(z1[: n // 2], z2.view(n // 2, 2, d), relevance=relevance)
    if kind == "sequence":
        # Four sequences of two tokens: z1 as hidden states, z2 as logits over a vocabulary
        # of d tokens, the labels as token ids (one next-token target per sequence).
        hidden, logits = z1.view(n // 2, 2, d), z2.view(n // 2, 2, d)
        mask = torch.ones(n // 2, 2, dtype=torch.bool)
        return loss(hidden, mask=mask, logits=logits, labels=labels.view(n // 2, 2))
    assert kind in ("views", "two_tower", "prediction"), kind
    return loss(z1, z2)


def batch(seed=0, n=8, d=6):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, requires_grad=True)
    z2 = torch.randn(n, d, generator=g, requires_grad=True)
    labels = torch.arange(n) % 3
    return z1, z2, labels


def test_registry_holds_the_foundation_objectives():
    expected = {
        "infonce", "supcon", "dcl", "dclw", "hcl", "debiasedinfonce", "clip", "siglip",
        "triplet", "moco", "barlowtwins", "vicreg", "byol", "simsiam",
        "simplecontrastive", "hardcontrastive",
    }  # fmt: skip
    assert expected <= set(contrastkit.list_losses())


def test_registry_holds_the_seed_objectives():
    expected = {
        "cacr", "mv_infonce", "mv_dhel", "symile", "supremix", "groco", "isogclr", "sogclr",
        "simlap", "one_to_k", "spectral", "listwise_wasserstein", "m3col", "soft_supcon",
    }  # fmt: skip
    assert expected <= set(contrastkit.list_losses())
    # The baselines the papers compare against are registered too.
    assert {"pairwise_clip", "pairwise_infonce"} <= set(contrastkit.list_losses())


@pytest.mark.parametrize("name", contrastkit.list_losses())
def test_forward_backward_and_config_round_trip(name):
    loss = contrastkit.create_loss(name)
    z1, z2, labels = batch()
    value = call(loss, z1, z2, labels)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all()
    assert z1.grad.abs().sum() > 0
    info = contrastkit.loss_info(name)
    assert info.summary and info.paper
    clone = contrastkit.create_loss(name, **loss.get_config())
    assert clone.get_config() == loss.get_config()
    clone.load_state_dict(loss.state_dict())
    z1, z2, labels = batch(seed=1)
    torch.testing.assert_close(call(clone, z1, z2, labels), call(loss, z1, z2, labels))


@pytest.mark.parametrize("name", contrastkit.list_losses())
def test_reduction_none_gives_per_anchor_values(name):
    info = contrastkit.loss_info(name)
    if not info.cls.per_anchor:
        assert "reduction" not in info.parameters()
        return
    loss = contrastkit.create_loss(name, reduction="none")
    z1, z2, labels = batch()
    per = call(loss, z1, z2, labels)
    assert per.dim() == 1 and per.shape[0] in (4, 8, 16)
    mean = call(contrastkit.create_loss(name), z1, z2, labels)
    torch.testing.assert_close(per.mean(), mean)


def test_moco_module_uses_and_fills_its_queue():
    loss = contrastkit.create_loss("moco", queue_size=10)
    z1, z2, _ = batch()
    first = loss(z1, z2)  # empty queue: in-batch negatives only
    torch.testing.assert_close(first, contrastkit.functional.moco(z1, z2, negatives=None))
    assert int(loss.queue.count) == 8
    second = loss(z2, z1)  # now Algorithm 1: the queue (z2 of the first step) only
    expected = contrastkit.functional.moco(z2, z1, negatives=z2.detach())
    torch.testing.assert_close(second, expected)
    in_batch = contrastkit.functional.moco(z2, z1, negatives=z2.detach(), in_batch_negatives=True)
    assert not torch.allclose(second, in_batch)
    restored = contrastkit.create_loss("moco", queue_size=10)
    restored.load_state_dict(copy.deepcopy(loss.state_dict()))
    torch.testing.assert_close(restored.queue.get(), loss.queue.get())


def test_queue_is_fifo_and_wraps():
    q = MemoryQueue(5)
    assert q.get() is None
    q.push(torch.arange(6.0).view(3, 2))
    q.push(torch.arange(6.0, 12.0).view(3, 2))
    # Six rows pushed into five slots: the oldest row (0, 1) is gone, order is oldest-first.
    torch.testing.assert_close(q.get(), torch.arange(2.0, 12.0).view(5, 2))


FORBIDDEN = ("contrastkit.train", "contrastkit.cli", "contrastkit.text", "contrastkit.vision",
             "contrastkit.graph", "contrastkit.recsys", "contrastkit.rl", "contrastkit.decoding",
             "contrastkit.retrieval", "contrastkit.tabular")  # fmt: skip
LOW_LAYERS = ("core", "losses", "engine", "estimators", "methods", "evaluation", "diagnostics")
ADAPTERS = ("decoding", "text", "retrieval")


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_low_layers_never_import_upwards():
    offenders = []
    for layer in LOW_LAYERS:
        for path in (PACKAGE / layer).rglob("*.py"):
            for name in _imports(path):
                if name.startswith(FORBIDDEN):
                    offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert offenders == []


def test_adapters_never_import_cli():
    """DESIGN.md: adapters sit beside train and may use any layer below cli."""
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for layer in ADAPTERS
        for path in (PACKAGE / layer).rglob("*.py")
        for name in _imports(path)
        if name.startswith("contrastkit.cli")
    ]
    assert offenders == []


def test_heavy_optional_dependencies_load_only_when_used():
    """``import contrastkit`` and the adapters' packages leave transformers unimported."""
    import subprocess
    import sys

    code = (
        "import sys, contrastkit, contrastkit.decoding, contrastkit.evaluation, "
        "contrastkit.diagnostics, contrastkit.functional, contrastkit.text, "
        "contrastkit.retrieval; "
        "print(sorted(m for m in ('transformers', 'sentence_transformers', 'faiss') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_core_depends_on_torch_alone():
    allowed = ("torch", "contrastkit.core", "__future__", "math", "dataclasses", "collections")
    offenders = [
        f"{path.name}: {name}"
        for path in (PACKAGE / "core").rglob("*.py")
        for name in _imports(path)
        if not name.startswith(allowed)
    ]
    assert offenders == []
