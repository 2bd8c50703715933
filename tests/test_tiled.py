"""The tiled engine equals the plain path in value and gradient (float64, 1e-8 relative)
for every configuration it covers, with tiles that do and do not divide the batch."""

from __future__ import annotations

import pytest
import torch

import contrastkit
import contrastkit.functional as F
from contrastkit.engine import tiled

N, D = 11, 5  # 11 rows: tiles of 4 and 5 leave uneven last tiles
LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3])


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def inputs():
    return [randn(N, D, seed=1), randn(N, D, seed=2), randn(N, D, seed=3), randn(7, D, seed=4)]


# name -> fn(tensors, tile_size) with tensors = [z1, z2, z3, queue]
CONFIGS = {
    "nt_xent_2views": lambda x, t: F.info_nce(x[0], x[1], tile_size=t, reduction="none"),
    "nt_xent_3views": lambda x, t: F.info_nce(x[0], x[1], x[2], temperature=0.3, tile_size=t),
    "nt_xent_dot": lambda x, t: F.info_nce(x[0], x[1], similarity="dot", tile_size=t),
    "nt_xent_queue": lambda x, t: F.info_nce(
        x[0], x[1], negatives=x[3], tile_size=t, reduction="none"
    ),
    "sup_con_labels": lambda x, t: F.sup_con(
        x[0], x[1], labels=LABELS, tile_size=t, reduction="none"
    ),
    "sup_con_one_view_queue": lambda x, t: F.sup_con(
        x[0], labels=LABELS, negatives=x[3], temperature=0.05, tile_size=t, reduction="sum"
    ),
    "dcl": lambda x, t: F.dcl(x[0], x[1], tile_size=t, reduction="none"),
    "dcl_3views_queue": lambda x, t: F.dcl(x[0], x[1], x[2], negatives=x[3], tile_size=t),
    "clip_symmetric": lambda x, t: F.clip(x[0], x[1], tile_size=t, reduction="none"),
    "clip_one_direction_queue": lambda x, t: F.clip(
        x[0], x[1], negatives=x[3], symmetric=False, tile_size=t, reduction="none"
    ),
    "moco_queue_only": lambda x, t: F.moco(x[0], x[1], negatives=x[3], tile_size=t),
    "moco_queue_and_batch": lambda x, t: F.moco(
        x[0], x[1], negatives=x[3], in_batch_negatives=True, tile_size=t, reduction="none"
    ),
    "learnable_temperature": lambda x, t: F.clip(x[0], x[1], temperature=x[4], tile_size=t),
}


def run(name, tile):
    leaves = [x.clone().requires_grad_(True) for x in inputs()]
    leaves.append(torch.tensor(0.2, dtype=torch.float64, requires_grad=True))  # temperature
    out = CONFIGS[name](leaves, tile)
    weights = randn(*out.shape, seed=9) if out.dim() else torch.tensor(1.0, dtype=out.dtype)
    (out * weights).sum().backward()
    grads = [x.grad if x.grad is not None else torch.zeros_like(x) for x in leaves]
    return out.detach(), grads


@pytest.mark.parametrize("tile", [1, 4, 5, 64])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_tiled_matches_plain_in_value_and_gradient(name, tile):
    plain, plain_grads = run(name, 0)
    out, grads = run(name, tile)
    torch.testing.assert_close(out, plain, rtol=1e-8, atol=1e-12)
    for g, pg in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(g, pg, rtol=1e-8, atol=1e-12)


def test_temperature_gradient_is_not_trivially_zero():
    _, grads = run("learnable_temperature", 4)
    assert grads[-1].abs() > 1e-6


def test_auto_selection_tiles_above_the_threshold(monkeypatch):
    calls = []
    original = tiled._TiledInfoNCE.apply
    monkeypatch.setattr(tiled._TiledInfoNCE, "apply", lambda *a: calls.append(1) or original(*a))
    x = inputs()
    F.info_nce(x[0], x[1])  # 22 x 22 logits: far below the threshold
    assert calls == []
    monkeypatch.setattr(tiled, "AUTO_TILE_ENTRIES", 100)
    auto = F.info_nce(x[0], x[1])
    assert calls == [1]
    torch.testing.assert_close(auto, F.info_nce(x[0], x[1], tile_size=0), rtol=1e-8, atol=0)
    F.hcl(x[0], x[1])  # not tileable: auto falls back to the plain path
    assert calls == [1]


def test_module_tile_size_round_trips_and_matches():
    x = inputs()
    loss = contrastkit.create_loss("infonce", tile_size=3)
    assert contrastkit.create_loss("infonce", **loss.get_config()).tile_size == 3
    torch.testing.assert_close(loss(x[0], x[1]), F.info_nce(x[0], x[1]), rtol=1e-8, atol=0)


def test_tiled_half_precision_is_finite_and_close():
    x = [t.to(torch.bfloat16).requires_grad_(True) for t in inputs()[:2]]
    out = F.info_nce(x[0], x[1], temperature=0.01, tile_size=4)
    out.backward()
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert all(torch.isfinite(t.grad).all() for t in x)
    exact = F.info_nce(*(t.detach().double() for t in x), temperature=0.01, tile_size=0)
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-3)


def test_tiled_errors_name_the_argument():
    x = inputs()
    with pytest.raises(ValueError, match=r"`tile_size` is 4 but positive_weighting='vmf'"):
        F.info_nce(x[0], x[1], positive_weighting="vmf", tile_size=4)
    with pytest.raises(ValueError, match=r"`tile_size` is 4 but negative_weighting='debiased'"):
        F.info_nce(x[0], x[1], negative_weighting="debiased", tau_plus=0.1, tile_size=4)
    with pytest.raises(ValueError, match=r"`tile_size` is -2.*int >= 1"):
        F.info_nce(x[0], x[1], tile_size=-2)
    with pytest.raises(ValueError, match=r"sup_con: `labels` leave anchors \[9, 10\]"):
        F.sup_con(x[0], labels=torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 4]), tile_size=4)
