#!/usr/bin/env python
"""Write docs/distributed.md by command; never edit it by hand.

Trains InfoNCE (seed 0) on MNIST with the settings of ``configs/mnist_compare.yaml``
twice, with the same global batch: once on one process, once data-parallel on two gloo
processes under ``torchrun``; then writes both runs' commands, per-epoch losses and final
kNN / linear-probe accuracies to docs/distributed.md. About 3 minutes on 2 CPU cores.
``--smoke`` runs a seconds-long version (digits subset, 2 epochs) into a scratch folder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = Path("configs/mnist_compare.yaml")
WORLD = 2
SMOKE = {
    "epochs": 2,
    "batch_size": 64,
    "data": {"name": "digits", "subset": 300},
    "model": {"encoder": "mlp", "width": 32, "feature_dim": 16},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/distributed_check", help="run folders")
    parser.add_argument("--doc", default="docs/distributed.md", help="report written here")
    parser.add_argument("--smoke", action="store_true", help="seconds-long version")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    cfg = yaml.safe_load((ROOT / CONFIG).read_text())
    cfg.pop("compare", None)  # the shared training keys of the comparison
    cfg.update(seed=0, loss={"name": "infonce"})
    if args.smoke:
        cfg = _merge(cfg, SMOKE)
    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    train = [sys.executable, "-m", "contrastkit", "train", "--config", str(config_path)]
    single_cmd = [*train, "--out", str(out / "single"), "--no-progress"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD)]
    torchrun += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    # One thread per process: the two processes share the machine's cores.
    ddp_cmd = [*torchrun, "-m", *train[2:], "--out", str(out / "ddp"), "--no-progress"]
    ddp_cmd += ["--set", "threads=1"]
    # The noise floor: the same 1-process run on one thread adds in another order too.
    noise_cmd = [*train, "--out", str(out / "single_1thread"), "--no-progress"]
    noise_cmd += ["--set", "threads=1"]
    runs = {}
    threads = cfg.get("threads")
    for name, cmd in (
        (f"1 process, threads={threads}", single_cmd),
        ("1 process, threads=1", noise_cmd),
        (f"{WORLD} processes (gloo), threads=1 each", ddp_cmd),
    ):
        print("$", shlex.join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        folder = Path(cmd[cmd.index("--out") + 1])
        history = [
            json.loads(s) for s in (ROOT / folder / "metrics.jsonl").read_text().splitlines()
        ]
        runs[name] = {"cmd": cmd, "seconds": time.perf_counter() - t0, "history": history}
    doc = ROOT / args.doc
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render(cfg, runs, config_path))
    print(f"wrote {doc}")


def render(cfg: dict, runs: dict, config_path: Path) -> str:
    names = list(runs)
    lines = [
        "# Data-parallel training: 1 process vs 2 processes",
        "",
        f"Written by `python scripts/distributed_check.py` on "
        f"{datetime.date.today().isoformat()} ({platform.machine()}, {platform.system()}); "
        "do not edit by hand.",
        "",
        f"InfoNCE, seed 0, {cfg['epochs']} epochs, global batch {cfg['batch_size']}, data "
        f"`{cfg['data']['name']}`, the settings of `{CONFIG}` (the `compare:` section dropped, "
        f"written to `{config_path}`). The same global batch is trained on one process and "
        f"on {WORLD} gloo processes, each of which takes {cfg['batch_size'] // WORLD} rows of "
        "every global batch and contrasts them with all ranks' rows (`distributed=True`). "
        "A second 1-process run on one thread shows how far float rounding alone (sums "
        "added in another order) moves the same run.",
        "",
        "Commands (run from the repository root):",
        "",
        "```",
        *(_short(r["cmd"]) for r in runs.values()),
        "```",
        "",
        "Final evaluation (wall times include start-up and evaluation, on a machine shared "
        "with other jobs: indicative only):",
        "",
        "| run | kNN acc (%) | linear acc (%) | wall time (s) |",
        "|---|---|---|---|",
    ]
    for name, r in runs.items():
        last = r["history"][-1]
        lines.append(
            f"| {name} | {100 * last['knn_acc']:.2f} | {100 * last.get('linear_acc', float('nan')):.2f} "
            f"| {r['seconds']:.0f} |"
        )
    lines += ["", f"Mean training loss per epoch (differences to {names[0]}):", ""]
    header = ["epoch", names[0]] + [c for n in names[1:] for c in (n, "diff")]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    histories = [r["history"] for r in runs.values()]
    for records in zip(*histories, strict=True):
        ref = records[0]["loss"]
        cells = [str(records[0]["epoch"]), f"{ref:.6f}"]
        for r in records[1:]:
            cells += [f"{r['loss']:.6f}", f"{r['loss'] - ref:+.2e}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *_NOTES]
    return "\n".join(lines) + "\n"


_NOTES = """\
## What is equal, and why the numbers still differ a little

* **Data and augmentations.** `batch_size` is the global batch. Every process draws the
  same per-epoch permutation and augments the whole global batch with the shared
  generator, then keeps its contiguous `batch_size / N` rows: each sample gets exactly the
  views it gets on one process (the augmentation work is repeated on every process; it is
  small next to the encoder). `batch_size` must be a multiple of the number of processes.
* **Loss.** Losses with a `distributed` option (`contrastkit.train.loop.distributed_losses()`:
  the InfoNCE family, CLIP, MoCo) are created with `distributed=True`: each rank's anchors
  are contrasted with all ranks' rows, and the mean of the ranks' losses is the 1-process
  loss (the logged loss is that mean). Losses without it (Barlow Twins, VICReg, BYOL,
  SimSiam, SigLIP, triplet, simple contrastive) are refused on several processes rather
  than silently trained on per-rank batches. `loss.params.distributed: false` keeps each
  rank's negatives local on purpose. MoCo: each rank enqueues its own keys, so its queue
  holds its own shards of past batches (the queue of rank 0 is checkpointed and loaded by
  every rank on resume); the queue is not gathered as in the MoCo paper's code.
* **Gradients.** The online model and the loss (learnable temperature) are wrapped together
  in DistributedDataParallel, which averages their gradients; the gather's backward sums
  every rank's contribution, so the average is the 1-process gradient. With GradCache
  (`grad_cache_chunk`, chunks counted per process) the gradients are averaged once per
  step outside DDP.
* **BatchNorm** layers are replaced by a synchronised BatchNorm (`train.distributed.
  SyncBatchNorm`; `torch.nn.SyncBatchNorm` only runs on GPUs) that normalises with the
  statistics of the global batch, so the forward pass is the 1-process one.
* **Float rounding.** Sums over ranks are added in another order, so the losses agree to
  about 1e-7 relative at first. Biases of Linear layers that feed a BatchNorm have an exact
  gradient of zero (BatchNorm subtracts them again); they receive rounding noise, which
  AdamW turns into steps of about `lr`, so these biases drift differently in the two runs
  without changing the training-mode output. Over many epochs such differences grow
  through the chaotic dynamics of training: the runs end close, not bit-identical, and the
  2-process run is about as far from the 1-process run as the 1-thread run is (tables
  above). On a few steps (tests/test_train_distributed.py) losses and weights agree to 1e-5.
* **Only rank 0** shows progress, evaluates (the other ranks wait), and writes
  `metrics.jsonl` and the (atomic) checkpoint. The checkpoint has the same format as a
  1-process one: a run can be resumed with another number of processes.
* **Backend.** `dist_backend` (default null): gloo for CPU tensors, nccl for CUDA ones.
  The training loop keeps its tensors on the CPU, so it runs on gloo; `nccl` is refused
  with a message until the loop places tensors on GPUs.
* **Threads.** Give each process `threads = cores / processes`; `torchrun` also sets
  `OMP_NUM_THREADS=1` for its workers.
""".splitlines()


def _short(cmd: list[str]) -> str:
    """The command as a user types it: ``python`` for the interpreter, no port."""
    cmd = ["python" if c == sys.executable else c for c in cmd]
    if "--master-port" in cmd:
        i = cmd.index("--master-port")
        del cmd[i : i + 2]
    return shlex.join(cmd)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
