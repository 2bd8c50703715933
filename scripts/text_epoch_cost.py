"""Text training cost on this CPU: seconds per epoch and peak memory vs batch size, with
and without the cached-gradient pass (GradCache, ``TextTrainConfig.grad_cache_chunk``).

    OMP_NUM_THREADS=1 python scripts/text_epoch_cost.py            # runs, rewrites the section
    python scripts/text_epoch_cost.py --batch-sizes 16 32 --no-write  # a quick look

Workload: unsupervised SimCSE (``simcse_unsup``: every sentence encoded twice, so a batch
of B sentences is 2B encoder rows) on the real all-MiniLM-L6-v2, ``max_length=32``, the
unique sentences of the STS-B train split, AdamW with gradient clipping at 1.0: the step
``train_text`` runs (``contrastkit.text.train.batch_backward``, clip, ``optimizer.step``).

Every configuration (batch size x {plain, GradCache}) runs in a fresh subprocess with one
thread: it loads the model and the data, records ``ru_maxrss``, runs one warm-up step and
``--steps`` timed steps on consecutive batches of one seeded shuffle, and records
``ru_maxrss`` again. Reported:

* s/step: mean wall time of the timed steps (``time.perf_counter``);
* s/epoch: s/step x ``floor(n_sentences / B)`` (``train_text`` drops the ragged batch);
* peak RSS increase: ``ru_maxrss`` (the process's peak resident set size, Linux KiB)
  after the steps minus after the model load. It contains everything the steps add at
  their peak: activations, gradients (~87 MiB for MiniLM's 22.7 M float32 parameters),
  AdamW's two moment buffers (~174 MiB), library code paged in by the first backward,
  the tokenised batch and the allocator's cache;
* growth over B=2: ``ru_maxrss`` after the steps minus after one untimed 2-sentence step
  run right after the load (same pass): the part that grows with the batch size.

The section ``## Text: epoch time and memory vs batch size`` of ``docs/benchmarks.md`` is
replaced (or appended); the rest of the file is left as it is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Text: epoch time and memory vs batch size"


def measure(batch_size: int, chunk: int | None, steps: int, seed: int = 0) -> dict:
    """One configuration, in this process (the parent runs it in a fresh one)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from contrastkit.text import data as text_data
    from contrastkit.text.encoder import TextEncoder
    from contrastkit.text.methods import create_text_method
    from contrastkit.text.train import TextTrainConfig, _optimizer, batch_backward
    from contrastkit.train.loop import epoch_seed, seed_everything

    torch.set_num_threads(1)
    cfg = TextTrainConfig(batch_size=batch_size, grad_cache_chunk=chunk, seed=seed)
    sentences = text_data.stsb_sentences("train")
    seed_everything(seed)
    encoder = TextEncoder.from_pretrained(max_length=32).train()
    method = create_text_method("simcse_unsup")
    optimizer = _optimizer(encoder, method, cfg, 3e-5)
    params = [p for grp in optimizer.param_groups for p in grp["params"]]
    rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        loss = batch_backward(method, encoder, batch, chunk)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return loss.item()

    g = torch.Generator().manual_seed(epoch_seed(seed, 0))
    perm = torch.randperm(len(sentences), generator=g).tolist()
    # a 2-sentence step first: the batch-independent memory (gradients, AdamW state,
    # library code paged in by the first backward), so the growth with B shows apart
    step([sentences[j] for j in perm[-2:]])
    rss_fixed = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, losses = [], []
    for i in range(steps + 1):  # step 0 is the warm-up
        batch = [sentences[j] for j in perm[i * batch_size : (i + 1) * batch_size]]
        t0 = time.perf_counter()
        losses.append(step(batch))
        if i > 0:
            times.append(time.perf_counter() - t0)
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    per_step = sum(times) / len(times)
    steps_per_epoch = len(sentences) // batch_size
    return {
        "batch_size": batch_size,
        "grad_cache_chunk": chunk,
        "n_sentences": len(sentences),
        "steps_per_epoch": steps_per_epoch,
        "step_times": times,
        "s_per_step": per_step,
        "s_per_epoch": per_step * steps_per_epoch,
        "rss_after_load_mib": rss_load / 1024,
        "rss_peak_mib": rss_peak / 1024,
        "rss_increase_mib": (rss_peak - rss_load) / 1024,
        "rss_over_b2_mib": (rss_peak - rss_fixed) / 1024,
        "losses": losses,
        "torch": torch.__version__,
    }


def run_one(batch_size: int, chunk: int | None, steps: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(batch_size)]
    cmd += ["--chunk", str(chunk or 0), "--steps", str(steps)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t0
    return out


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({platform.machine()}, {os.cpu_count()} logical CPUs), {platform.system()}"


def render(rows: list[dict], skipped: list[str], meta: dict) -> str:
    lines = [
        SECTION,
        "",
        "Written by `scripts/text_epoch_cost.py`; rerun it to regenerate this section.",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"- Run on {meta['date']}, took {meta['took_min']:.1f} min; {meta['machine']}; "
        f"torch {meta['torch']}, one thread (`OMP_NUM_THREADS=1`, `torch.set_num_threads(1)`).",
        f"- 1-minute load average {meta['load_before']:.2f} before the run and "
        f"{meta['load_after']:.2f} after it (other processes on these CPUs slow the "
        "timings down; the times are upper bounds for an idle machine).",
        "- Workload: unsupervised SimCSE (`simcse_unsup`, each sentence encoded twice: B "
        "sentences are 2B encoder rows) on all-MiniLM-L6-v2, `max_length=32`, over the "
        f"{meta['n_sentences']} unique sentences of the STS-B train split, AdamW + gradient "
        "clipping: the step of `train_text` (`contrastkit.text.train.batch_backward`).",
        f"- Each row is a fresh subprocess: model load, one warm-up step, then {meta['steps']} "
        "timed steps on consecutive batches of one seeded shuffle. s/step is their mean; "
        "s/epoch = s/step x floor(sentences / B) (the ragged batch is dropped).",
        "- Peak RSS increase = `resource.getrusage(RUSAGE_SELF).ru_maxrss` after the steps "
        "minus after the model load: the peak resident memory the training steps add "
        "(activations, gradients ~87 MiB, AdamW moments ~174 MiB, allocator cache), not "
        "GPU memory. Growth over B=2 = the same peak minus `ru_maxrss` after one 2-sentence "
        "step run right after the load (gradients, AdamW state and code pages already "
        "counted): the memory that grows with B. GradCache chunk = examples per encoder "
        "pass (2 x chunk rows).",
        "",
        "| B | pass | s/step | s/epoch | min/epoch | peak RSS increase (MiB) | "
        "growth over B=2 (MiB) | RSS after load (MiB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = "plain" if r["grad_cache_chunk"] is None else f"GradCache {r['grad_cache_chunk']}"
        lines.append(
            f"| {r['batch_size']} | {name} | {r['s_per_step']:.2f} | {r['s_per_epoch']:.0f} | "
            f"{r['s_per_epoch'] / 60:.1f} | {r['rss_increase_mib']:.0f} | "
            f"{r['rss_over_b2_mib']:.0f} | {r['rss_after_load_mib']:.0f} |"
        )
    if skipped:
        lines += ["", "Not run (projected over the time budget): " + "; ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace the section (up to the next ``## `` heading) or append it."""
    old = path.read_text() if path.is_file() else ""
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: text + "\n", old, count=1)
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + text
    path.write_text(new.rstrip("\n") + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    p.add_argument("--chunk", type=int, default=16, help="GradCache chunk (examples)")
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    p.add_argument("--budget-s", type=float, default=540.0, help="skip what would exceed it")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:  # the subprocess of one configuration
        print(json.dumps(measure(args.one, args.chunk or None, args.steps)))
        return 0

    start, load_before = time.perf_counter(), os.getloadavg()[0]
    rows, skipped, last = [], [], {}
    for b in sorted(args.batch_sizes):
        for chunk in (None, args.chunk):
            name = f"B={b} " + ("plain" if chunk is None else f"GradCache {chunk}")
            prev = last.get(chunk)
            # wall time ~ linear in B at fixed sequence length; the load is fixed cost
            guess = 0.0 if prev is None else prev["wall_s"] * b / prev["batch_size"]
            if time.perf_counter() - start + guess > args.budget_s:
                skipped.append(f"{name} (projected {guess:.0f} s)")
                continue
            r = run_one(b, chunk, args.steps)
            rows.append(r)
            last[chunk] = r
            print(
                f"{name}: {r['s_per_step']:.2f} s/step, {r['s_per_epoch'] / 60:.1f} min/epoch, "
                f"+{r['rss_increase_mib']:.0f} MiB peak RSS, +{r['rss_over_b2_mib']:.0f} over "
                f"B=2 ({r['wall_s']:.0f} s)",
                flush=True,
            )
    if not rows:
        print("nothing ran within the budget", file=sys.stderr)
        return 1
    cmd = "OMP_NUM_THREADS=1 python scripts/text_epoch_cost.py"
    if argv is None and len(sys.argv) > 1:
        cmd += " " + " ".join(sys.argv[1:])
    meta = {
        "command": cmd,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "took_min": (time.perf_counter() - start) / 60,
        "machine": machine(),
        "torch": rows[0]["torch"],
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "n_sentences": rows[0]["n_sentences"],
        "steps": args.steps,
    }
    text = render(rows, skipped, meta)
    print(text)
    if not args.no_write:
        write_section(args.out, text)
        print(f"wrote the section to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
