"""Two gloo processes on this machine: the distributed loss and its gradients equal the
single-process result on the concatenated batch, on the plain and the tiled path.

Each rank holds half of the batch. Its loss is the mean over its own anchors against all
ranks' candidates; the mean of the two ranks' losses is the single-process loss. The
gradient reaching a rank's embeddings is the sum over both ranks' losses, i.e. twice the
single-process gradient, which DDP's average over ranks turns back into it: the DDP case
checks the parameter gradients of a real encoder directly.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import contrastkit.functional as F

# Multi-process tests share one xdist worker (`--dist loadgroup`): never two process
# groups at once, so their free ports cannot collide.
pytestmark = pytest.mark.xdist_group("distributed")

WORLD, N, D, IN = 2, 6, 5, 7  # 6 samples per rank
LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 0, 1, 2, 3])

# name -> fn(z1, z2, queue, labels, distributed, tile_size)
CONFIGS = {
    "infonce": lambda a, b, q, y, d, t: F.info_nce(a, b, distributed=d, tile_size=t),
    "infonce_queue": lambda a, b, q, y, d, t: F.info_nce(
        a, b, negatives=q, distributed=d, tile_size=t
    ),
    "supcon": lambda a, b, q, y, d, t: F.sup_con(a, b, labels=y, distributed=d, tile_size=t),
    "dcl": lambda a, b, q, y, d, t: F.dcl(a, b, distributed=d, tile_size=t),
    "clip": lambda a, b, q, y, d, t: F.clip(a, b, temperature=0.1, distributed=d, tile_size=t),
    "moco_queue": lambda a, b, q, y, d, t: F.moco(a, b, negatives=q, distributed=d, tile_size=t),
    "hcl": lambda a, b, q, y, d, t: F.hcl(a, b, distributed=d),
    "dclw": lambda a, b, q, y, d, t: F.dclw(a, b, distributed=d),
    "hard_contrastive": lambda a, b, q, y, d, t: F.hard_contrastive(a, b, distributed=d),
}
TILES = (0, 4)  # plain, and tiles that leave an uneven last tile
UNTILEABLE = ("hcl", "hard_contrastive", "dclw")
CASES = [(name, t) for name in sorted(CONFIGS) for t in TILES if not (t and name in UNTILEABLE)]


def batch():
    g = torch.Generator().manual_seed(0)
    z1, z2 = (torch.randn(WORLD * N, D, generator=g, dtype=torch.float64) for _ in range(2))
    queue = torch.randn(5, D, generator=g, dtype=torch.float64)
    x = torch.randn(WORLD * N, IN, generator=g, dtype=torch.float64)
    return z1, z2, queue, x


def encoder():
    torch.manual_seed(1)
    return torch.nn.Linear(IN, D).double()


def run_losses(z1, z2, queue, labels, distributed):
    out = {}
    for name, fn in CONFIGS.items():
        for tile in TILES:
            if tile and name in UNTILEABLE:
                continue
            a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
            loss = fn(a, b, queue, labels, distributed, tile)
            loss.backward()
            out[(name, tile)] = (loss.detach(), a.grad, b.grad)
    return out


def ddp_grads(x_local, distributed, wrap):
    model = encoder()
    net = torch.nn.parallel.DistributedDataParallel(model) if wrap else model
    z = net(x_local)
    z1, z2 = z, torch.tanh(z) + 0.1  # two differentiable row-wise "views"
    F.info_nce(z1, z2, distributed=distributed, tile_size=4).backward()
    return [p.grad.clone() for p in model.parameters()]


def worker(rank, port, path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        z1, z2, queue, x = batch()
        rows = slice(rank * N, (rank + 1) * N)
        result = {"losses": run_losses(z1[rows], z2[rows], queue, LABELS[rows], True)}
        result["ddp"] = ddp_grads(x[rows], True, wrap=True)
        torch.save(result, f"{path}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist")
    mp.start_processes(worker, args=(free_port(), str(path)), nprocs=WORLD, start_method="spawn")
    return [torch.load(path / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize(("name", "tile"), CASES)
def test_two_ranks_equal_one_process_in_loss_and_gradient(ranks, name, tile):
    z1, z2, queue, _ = batch()
    single = run_losses(z1, z2, queue, LABELS, False)[(name, tile)]
    per_rank = [r["losses"][(name, tile)] for r in ranks]
    mean_loss = sum(r[0] for r in per_rank) / WORLD
    torch.testing.assert_close(mean_loss, single[0], rtol=1e-10, atol=1e-12)
    for view in (1, 2):
        # Each rank's rows received the sum over both ranks' losses: WORLD x the gradient
        # of the mean loss (DDP's average divides it back; see the DDP test).
        grads = torch.cat([r[view] for r in per_rank]) / WORLD
        torch.testing.assert_close(grads, single[view], rtol=1e-10, atol=1e-12)


def test_ddp_parameter_gradients_equal_one_process(ranks):
    *_, x = batch()
    single = ddp_grads(x, False, wrap=False)
    for rank in ranks:
        for g, s in zip(rank["ddp"], single, strict=True):
            torch.testing.assert_close(g, s, rtol=1e-10, atol=1e-12)


def test_without_process_group_distributed_is_a_no_op():
    z1, z2, queue, _ = batch()
    torch.testing.assert_close(F.info_nce(z1, z2, distributed=True), F.info_nce(z1, z2))
