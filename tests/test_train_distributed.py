"""Data-parallel training on two gloo processes equals the 1-process run with the same
global batch: per-epoch losses, the learnable temperature and the final weights (to float
rounding: the gathers and all-reduces add in another order), with BatchNorm statistics
synchronised over the global batch. Rank 1 writes no files. One torchrun launch checks the
command line end to end.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from contrastkit.train import TrainConfig, apply_overrides, load_checkpoint, train
from contrastkit.train import distributed as ddp
from contrastkit.train.loop import _loss_params, distributed_losses

# Multi-process tests share one xdist worker (`--dist loadgroup`): never two process
# groups at once, so their free ports cannot collide.
pytestmark = pytest.mark.xdist_group("distributed")

WORLD = 2
# 300 digits (240 train / 60 test), 3 global batches of 64 (32 per rank) per epoch.
TINY = {
    "epochs": 2,
    "batch_size": 64,
    "eval_every": 1,
    "progress": False,
    "threads": 1,
    "data": {"name": "digits", "subset": 300},
    "model": {"width": 64, "feature_dim": 32, "proj_hidden": 32, "proj_dim": 16},
    "eval": {"linear_probe": False},
}
RUNS = {
    "infonce": {"loss.name": "infonce", "loss.params": {"learnable": True}},
    "supcon": {"loss.name": "supcon"},
}
TOL = {"rtol": 1e-5, "atol": 1e-6}


def config(name: str, **extra) -> TrainConfig:
    return TrainConfig.from_dict(apply_overrides(TINY, {**RUNS[name], **extra}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, port: int, root: str) -> None:
    """One rank of the supcon run, inside a process group it owns (as a user script would)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        result = train(config("supcon", out=f"{root}/out/rank{rank}"))
        state = {"history": result.history, "model": result.model.state_dict()}
        state["loss"] = result.loss_fn.state_dict()
        torch.save(state, f"{root}/result-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """supcon on two processes started by torch.multiprocessing: every rank's result."""
    root = tmp_path_factory.mktemp("spawn")
    mp.start_processes(worker, args=(free_port(), str(root)), nprocs=WORLD, start_method="spawn")
    return root


@pytest.fixture(scope="module")
def torchrun(tmp_path_factory):
    """``torchrun --nproc-per-node 2 -m contrastkit train`` on infonce with a learnable
    temperature: the folder it ran in (the run folder is ``run``)."""
    root = tmp_path_factory.mktemp("torchrun")
    (root / "cfg.yaml").write_text(yaml.safe_dump(apply_overrides(TINY, RUNS["infonce"])))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD)]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    cmd += ["-m", "contrastkit", "train", "--config", "cfg.yaml", "--out", "run", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def one_process():
    return {name: train(config(name)) for name in RUNS}


def results(name: str, spawned: Path, torchrun: Path) -> list[dict]:
    """Per-rank results: both ranks of the spawned run; rank 0's checkpoint of torchrun's."""
    if name == "supcon":
        return [torch.load(spawned / f"result-rank{r}.pt") for r in range(WORLD)]
    state = load_checkpoint(torchrun / "run" / "checkpoint.pt")
    return [{"history": state["history"], "model": state["model"], "loss": state["loss"]}]


# Biases of a Linear layer whose output only reaches the loss through a BatchNorm (directly,
# or through another Linear): BatchNorm subtracts them again, so their exact gradient is 0
# and what they receive is rounding noise, which AdamW scales up to steps of about lr. They
# drift apart (as they would between two 1-process runs on different thread counts), and
# so do the running means that track them, without changing the training-mode output.
BN_SHADOWED = {
    "encoder.1.bias",
    "encoder.2.running_mean",
    "encoder.4.bias",
    "projector.0.bias",
    "projector.1.running_mean",
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_two_processes_equal_one_process(spawned, torchrun, one_process, name):
    single = one_process[name]
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for got in results(name, spawned, torchrun):
        losses = [h["loss"] for h in got["history"]]
        torch.testing.assert_close(losses, [h["loss"] for h in single.history], **TOL)
        # rank 0's evaluation reaches every rank
        assert got["history"][-1]["knn_acc"] == pytest.approx(single.metrics["knn_acc"], abs=0.02)
        state = single.model.state_dict()
        assert BN_SHADOWED < set(state)
        for key, value in state.items():
            if key not in BN_SHADOWED:
                torch.testing.assert_close(got["model"][key], value, **TOL, msg=key)
        # ... and the training-mode projections agree (copies: a forward moves the stats)
        twin, ref = copy.deepcopy(single.model), copy.deepcopy(single.model)
        twin.load_state_dict(got["model"])
        torch.testing.assert_close(twin.train()(x)[1], ref.train()(x)[1], **TOL)
        for key, value in single.loss_fn.state_dict().items():
            torch.testing.assert_close(got["loss"][key], value, **TOL, msg=key)
    if name == "infonce":  # the learnable temperature moved, and moved alike
        assert single.history[-1]["temperature"] != pytest.approx(0.1, abs=1e-4)


def test_only_rank_zero_writes_files(spawned, torchrun):
    assert sorted(p.name for p in (spawned / "out" / "rank0").iterdir()) == [
        "checkpoint.pt",
        "metrics.jsonl",
    ]
    assert not (spawned / "out" / "rank1").exists()
    assert sorted(p.name for p in torchrun.iterdir()) == ["cfg.yaml", "run"]
    assert sorted(p.name for p in (torchrun / "run").iterdir()) == [
        "checkpoint.pt",
        "metrics.jsonl",
    ]
    lines = (torchrun / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2]


def test_losses_without_a_distributed_option_are_refused():
    two = ddp.Context(rank=0, world_size=2)
    with pytest.raises(ValueError, match=r"'barlowtwins' has no `distributed`.*infonce"):
        _loss_params(config("infonce", **{"loss.name": "barlowtwins"}), two)
    assert _loss_params(config("supcon"), two) == {"distributed": True}
    assert _loss_params(config("supcon"), ddp.Context()) == {}
    assert {"infonce", "supcon", "dcl", "clip", "moco"} <= set(distributed_losses())
    assert not {"byol", "simsiam", "vicreg", "barlowtwins", "siglip"} & set(distributed_losses())


def test_global_batch_must_split_evenly():
    ddp.check_batch(64, ddp.Context(rank=0, world_size=4))
    with pytest.raises(ValueError, match="multiple of 3, e.g. 63 or 66"):
        ddp.check_batch(64, ddp.Context(rank=0, world_size=3))
    rows = torch.arange(12)
    parts = [ddp.shard(rows, ddp.Context(rank=r, world_size=3)) for r in range(3)]
    assert torch.equal(torch.cat(parts), rows)


def test_dist_backend_is_checked():
    with pytest.raises(ValueError, match="dist_backend"):
        TrainConfig.from_dict({"dist_backend": "mpi"})
