"""Symile vs pairwise CLIP on the binary XOR task of rajesh-lab/symile.

The official ``examples/binary_xor.py`` draws v_a, ..., v_g ~ Bernoulli(0.5) i.i.d. and
v_h = v_a XOR ... XOR v_g: eight modalities, each one bit, each encoded by its own
``Linear(1, d=16)`` and L2-normalised; the logit scale starts at exp(-0.3); AdamW (lr 0.1,
weight decay 0.01), batch 1000, 50 epochs; 10,000 / 1,000 / 5,000 train / validation /
test samples; the weights with the lowest validation loss are tested. Zero-shot task:
predict v_a in {0, 1} from v_b, ..., v_h by the higher score of the two candidates.

``--variables K`` draws K - 1 random bits and their XOR (K modalities); everything else is
the example's. The default, K = 3 (v_a, v_b random, v_c = v_a XOR v_b: the paper's XOR
structure with one-bit modalities), fits this machine's budget; ``--variables 8`` is the
official example exactly (50 epochs; ~10x the cost: 28 pairs of 1000 x 1000 logits for
pairwise CLIP, 8 anchors for Symile).

Every variable is the XOR of the other K - 1, and any K - 1 of the K variables are
independent, so no pair of modalities carries information about another: only the K-way
product does. Symile's MIP can represent it; a pairwise-CLIP score (a sum of dot products)
cannot, so the paper expects Symile near 1.0 and pairwise CLIP near 0.5 (chance).

    .venv/bin/python scripts/seeds/symile.py [--variables K] [--epochs E] [--smoke] [--out PATH]
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.append(str(Path(__file__).resolve().parent))  # after site-packages: never shadow
from _common import (  # noqa: E402
    Stopwatch,
    make_parser,
    markdown_table,
    mean_std,
    mean_std_of,
    provenance,
    setup,
    write_section,
)

from contrastkit import create_loss  # noqa: E402

NAME = "symile"
FULL = dict(train=10_000, val=1_000, test=5_000, batch=1_000, seeds=(0, 1, 2))
SMOKE = dict(train=400, val=200, test=400, batch=200, seeds=(0, 1, 2))
# Epochs: the example's 50 for its 8 variables; 20 for the default 3-variable task (both
# losses have converged by then; a 3-seed run of both then takes ~1 CPU-minute here).
DEFAULT_EPOCHS = {3: 20, 8: 50}
D, LR, WEIGHT_DECAY, LOGIT_SCALE_INIT = 16, 0.1, 0.01, -0.3
LOSSES = ("symile", "pairwise_clip")
LETTERS = "abcdefghijklmnop"


def make_xor(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """(n, k) float bits: k - 1 Bernoulli(0.5) columns, then their XOR."""
    bits = torch.bernoulli(torch.full((n, k - 1), 0.5), generator=generator)
    return torch.cat([bits, bits.sum(1, keepdim=True).remainder(2)], 1)


class Encoders(nn.Module):
    """One Linear(1, d) per variable, as in the official example."""

    def __init__(self, k: int, d: int):
        super().__init__()
        self.f = nn.ModuleList(nn.Linear(1, d) for _ in range(k))

    def forward(self, v: torch.Tensor) -> list[torch.Tensor]:
        return [f(v[:, j : j + 1]) for j, f in enumerate(self.f)]


def zero_shot_accuracy(enc, loss, v: torch.Tensor, target: int) -> float:
    """Predict bit ``target`` from the other bits: argmax over the two candidates."""
    with torch.no_grad():
        reps = enc(v)
        candidates = enc.f[target](torch.tensor([[0.0], [1.0]]))
        queries = [r for j, r in enumerate(reps) if j != target]
        pred = loss.scores(*queries, candidates=candidates).argmax(1)
        return float((pred == v[:, target].long()).float().mean())


def run(loss_name: str, seed: int, k: int, epochs: int, cfg: dict) -> dict:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n = cfg["train"] + cfg["val"] + cfg["test"]
    data = make_xor(n, k, g)[torch.randperm(n, generator=g)]
    train, val, test = torch.split(data, [cfg["train"], cfg["val"], cfg["test"]])
    enc = Encoders(k, D)
    loss = create_loss(loss_name, temperature=math.exp(-LOGIT_SCALE_INIT), learnable=True)
    params = list(enc.parameters()) + list(loss.parameters())
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
    kwargs = {"generator": g} if loss_name == "symile" else {}
    best, best_val, val_acc = None, math.inf, []
    for _ in range(epochs):
        for idx in torch.randperm(len(train), generator=g).split(cfg["batch"]):
            opt.zero_grad()
            loss(*enc(train[idx]), **kwargs).backward()
            opt.step()
        with torch.no_grad():
            val_g = torch.Generator().manual_seed(10_000 + seed)
            extra = {"generator": val_g} if loss_name == "symile" else {}
            batches = val.split(cfg["batch"])
            val_loss = sum(float(loss(*enc(b), **extra)) for b in batches) / len(batches)
        val_acc.append(zero_shot_accuracy(enc, loss, val, 0))
        if val_loss < best_val:
            best_val = val_loss
            best = (copy.deepcopy(enc.state_dict()), copy.deepcopy(loss.state_dict()))
    enc.load_state_dict(best[0])
    loss.load_state_dict(best[1])
    per_target = [zero_shot_accuracy(enc, loss, test, j) for j in range(k)]
    return {
        "acc_first": per_target[0],
        "acc_xor": per_target[-1],
        "acc_all": sum(per_target) / k,
        "per_target": per_target,
        "val_loss": best_val,
        "scale": float(1.0 / loss.current_temperature().detach()),
        "val_acc": val_acc,
        # first epoch (1-based) whose validation accuracy on v_a exceeds 0.9, or None
        "escape": next((e + 1 for e, a in enumerate(val_acc) if a > 0.9), None),
    }


def main(argv=None) -> dict:
    parser = make_parser(__doc__)
    parser.add_argument("--variables", type=int, default=3, help="K modalities (>= 3)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 20 (K=3), 50")
    args, cfg = setup(__doc__, argv, FULL, SMOKE, parser)
    if not 3 <= args.variables <= len(LETTERS):
        parser.error(f"--variables must lie in [3, {len(LETTERS)}], got {args.variables}")
    k = args.variables
    epochs = 1 if args.smoke else (args.epochs or DEFAULT_EPOCHS.get(k, 50))
    results = {name: [] for name in LOSSES}
    with Stopwatch() as clock:
        for name in LOSSES:
            for seed in cfg["seeds"]:
                results[name].append(run(name, seed, k, epochs, cfg))
                r = results[name][-1]
                print(f"{name} seed {seed}: acc {r['acc_all']:.3f}", file=sys.stderr, flush=True)
    first, last = LETTERS[0], LETTERS[k - 1]
    others_first = f"v_{LETTERS[1]}..v_{last}" if k > 3 else f"v_{LETTERS[1]}, v_{last}"
    others_last = f"v_{first}..v_{LETTERS[k - 2]}" if k > 3 else f"v_{first}, v_{LETTERS[1]}"
    rows = []
    for name in LOSSES:
        r = results[name]
        rows.append(
            [
                f"`{name}`",
                *(mean_std_of(r, key, digits=3) for key in ("acc_first", "acc_xor", "acc_all")),
                mean_std_of(r, "val_loss", digits=3),
                mean_std_of(r, "scale", digits=2),
                ", ".join(f"{x['acc_all']:.3f}" for x in r),
                ", ".join("never" if x["escape"] is None else str(x["escape"]) for x in r),
            ]
        )
    table = markdown_table(
        [
            "loss",
            f"acc: v_{first} from {others_first}",
            f"acc: v_{last} from {others_last}",
            f"acc: mean over {k} targets",
            "best val loss",
            "learned 1/t",
            "mean acc per seed",
            f"first epoch val acc (v_{first}) > 0.9, per seed",
        ],
        rows,
    )
    sym = [x["acc_all"] for x in results["symile"]]
    clip = [x["acc_all"] for x in results["pairwise_clip"]]
    clip_targets = [a for x in results["pairwise_clip"] for a in x["per_target"]]
    clip_val = [a for x in results["pairwise_clip"] for a in x["val_acc"]]
    effect = min(sym) > 0.95 and max(clip_targets) < 0.9
    verdict = (
        f"Zero-shot accuracy averaged over the {k} targets: Symile {mean_std(sym, digits=3)}, "
        f"pairwise CLIP {mean_std(clip, digits=3)}; chance is 0.5. "
        + (
            "The paper's effect appears: Symile solves the task in every seed (the "
            f"multilinear inner product captures the {k}-way XOR), pairwise CLIP in none "
            f"(its best single-target test accuracy over all seeds is {max(clip_targets):.3f})."
            if effect
            else "The paper's effect does not appear in full (Symile above 0.95 in every "
            "seed, pairwise CLIP below 0.9 on every target); the table is reported as "
            "measured."
        )
        + " Pairwise CLIP is not uniformly at 0.5, though: its prediction for a target is "
        "a threshold of a sum of per-modality terms, a linear-threshold function of the "
        "query bits, which agrees with an XOR on some query patterns by accident (for two "
        "query bits on 1, 2 or 3 of the 4 patterns: accuracy 0.25, 0.5 or 0.75, fixed by "
        "the learned geometry, while its loss carries no XOR signal). Per target and seed "
        f"its test accuracies were {', '.join(f'{a:.2f}' for a in clip_targets)}; its "
        f"validation accuracy on v_{first} moved between {min(clip_val):.2f} and "
        f"{max(clip_val):.2f} across epochs. Symile's validation loss settles near "
        f"log(N/2) = {math.log(cfg['batch'] / 2):.3f}, not 0: a random tuple satisfies the "
        "XOR half the time, so half of the sampled negatives are as plausible as the "
        "positive."
    )
    if k == 3 and not args.smoke:
        verdict += (
            " The official 8-variable example (`--variables 8`, 50 epochs) costs ~10x more "
            "than this machine's budget allows; a development run of it with 30 Symile / 10 "
            "pairwise-CLIP epochs (13.6 minutes here) gave Symile 0.834 ± 0.288 (seeds "
            "left the initial loss plateau, log N, at epochs 10 and 20; the third not "
            "within 30) and pairwise CLIP 0.501 ± 0.005: with 8 one-bit modalities the MIP "
            "of the initial random unit vectors is tiny and Symile needs a seed-dependent "
            "number of epochs to start learning."
        )
    command = "python scripts/seeds/symile.py" + (f" --variables {k}" if k != 3 else "")
    command += f" --epochs {args.epochs}" if args.epochs else ""
    command += " --smoke" if args.smoke else ""
    xor = " XOR ".join(f"v_{LETTERS[j]}" for j in range(k - 1))
    randoms = f"v_{first}, v_{LETTERS[1]}" if k == 3 else f"v_{first}..v_{LETTERS[k - 2]}"
    body = f"""### symile: Symile captures a {k}-way XOR that pairwise CLIP cannot (zero-shot)

Command: `{command}`

Data: synthetic, generated in the script after rajesh-lab/symile `examples/binary_xor.py`
(which uses 8 variables): {randoms} ~ Bernoulli(0.5), v_{last} =
{xor}; one modality per variable; {cfg["train"]:,} train / {cfg["val"]:,} validation /
{cfg["test"]:,} test samples, a fresh draw per seed.

Model and schedule (the official example's, epochs aside): one `Linear(1, 16)` encoder per
modality, L2-normalised; learnable logit scale starting at exp(-0.3) (temperature 1.35, a
`LogitScale`, 1/t clamped at 100); AdamW lr 0.1, weight decay 0.01; batch {cfg["batch"]:,};
{epochs} epochs for both losses (the 8-variable example runs 50); the epoch with the
lowest validation loss is tested, as in the example. Symile: O(N) negative sampling
(`negative_sampling="n"`, the example's). Pairwise CLIP: symmetric CLIP summed over the
{k * (k - 1) // 2} pairs, one shared temperature. Zero-shot: the candidate bit with the
higher `symile_scores` / `pairwise_clip_scores` given the other modalities' embeddings.
Seeds {", ".join(str(s) for s in cfg["seeds"])} (data, initialisation, negatives); mean ±
sample std over seeds.

{table}

{verdict}

{provenance(clock.minutes, smoke=args.smoke)}
"""
    write_section(NAME, body, args.out)
    print(body)
    return results


if __name__ == "__main__":
    main()
