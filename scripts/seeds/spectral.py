"""Spectral contrastive loss vs InfoNCE on MNIST, and the Markov categorical diagnostics
on a synthetic bigram chain.

Part A (HaoChen et al., NeurIPS 2021): the spectral contrastive loss trained through the
library loop (``contrastkit.train.train``) against InfoNCE, same encoder, augmentations
and schedule; kNN accuracy of the encoder features on a held-out split.

Part B (Zhang, arXiv 2507.19247): a first-order Markov chain over V tokens with a known
transition matrix P. A bigram model ``h = E[w_{t-1}]``, ``logits = U h + c`` is trained by
NLL; at a few checkpoints we log the mean categorical entropy of the head on held-out
positions against the true conditional entropy ``H(W_t | W_{t-1})`` on the same positions
(Prop. 4.2 / Thm 5.2 predict the gap shrinks to 0 as NLL reaches its optimum), the
spectral alignment score of the hidden states with the Bhattacharyya kernel of the true
next-token distributions (Thm 7.6 predicts it rises), the pullback-Fisher rank against
its bound and the plug-in information surplus (0 in the population: the chain is
first-order, so the hidden state, a function of ``w_{t-1}``, carries nothing about
``W_{t+1}`` beyond ``W_t``).

    .venv/bin/python scripts/seeds/spectral.py [--smoke] [--out PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.append(str(Path(__file__).resolve().parent))  # after site-packages: never shadow
from _common import (  # noqa: E402
    Stopwatch,
    cnn_config,
    command,
    markdown_table,
    mean_std,
    mean_std_of,
    provenance,
    setup,
    write_section,
)

from contrastkit.diagnostics import (  # noqa: E402
    categorical_entropy,
    fisher_rank,
    information_surplus,
    spectral_alignment,
)
from contrastkit.train import load_dataset, train  # noqa: E402

NAME = "spectral"
SEEDS = (0, 1, 2)
FULL = dict(subset=4000, epochs=8, steps=(0, 25, 100, 400, 1500), seq=40_000)
SMOKE = dict(subset=300, epochs=1, steps=(0, 20), seq=1_500, seeds=(0,))
# (row label, registered loss, its parameters)
LOSSES = (
    ("infonce", "infonce", {"temperature": 0.1}),
    ("spectral", "spectral", {}),
    ("spectral (official_code, mu=1)", "spectral", {"variant": "official_code", "mu": 1.0}),
)
V, LR = 10, 0.05
# d = 16 >= V - 1: the head can fit P exactly (the entropy check); d = 3: a bottleneck, so
# whitened features cannot span every context and the alignment score is informative.
D_MODELS = (16, 3)


# ---------------------------------------------------------------------- part A: MNIST


def mnist_config(loss: str, params: dict, seed: int, cfg: dict):
    return cnn_config(loss, params, seed, subset=cfg["subset"], epochs=cfg["epochs"])


def run_mnist(cfg: dict) -> dict:
    out = {}
    data = load_dataset(mnist_config("infonce", {}, 0, cfg).data)  # the same split for all
    for label, loss, params in LOSSES:
        runs = []
        for seed in cfg.get("seeds", SEEDS):
            result = train(mnist_config(loss, params, seed, cfg), data)
            runs.append(result.metrics)
        out[label] = runs
    return out


# ---------------------------------------------------------------------- part B: chain


def transition_matrix(v: int) -> torch.Tensor:
    """A fixed, sparse-ish chain: Dirichlet(0.3) rows (seeded, the same for every seed)."""
    g = torch.Generator().manual_seed(1234)
    gamma = torch.distributions.Gamma(torch.full((v, v), 0.3), 1.0)
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
    p = gamma.sample().double() + 1e-3
    return p / p.sum(1, keepdim=True)


def sample_chain(p: torch.Tensor, length: int, g: torch.Generator) -> torch.Tensor:
    w = torch.empty(length, dtype=torch.long)
    w[0] = int(torch.randint(0, p.shape[0], (1,), generator=g))
    for t in range(1, length):
        w[t] = torch.multinomial(p[w[t - 1]], 1, generator=g)
    return w


class Bigram(nn.Module):
    def __init__(self, v: int, d: int):
        super().__init__()
        self.embed = nn.Embedding(v, d)
        self.head = nn.Linear(d, v)
        nn.init.normal_(self.embed.weight, std=0.1)
        nn.init.normal_(self.head.weight, std=0.1)
        nn.init.zeros_(self.head.bias)

    def forward(self, prev):
        h = self.embed(prev)
        return h, self.head(h)


def chain_checkpoints(p: torch.Tensor, seed: int, cfg: dict, d: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    w = sample_chain(p, cfg["seq"], g)
    cut = int(0.8 * len(w))
    train_prev, train_next = w[: cut - 1], w[1:cut]
    test_prev, test_next, test_after = w[cut:-2], w[cut + 1 : -1], w[cut + 2 :]
    true_h = -(p * p.log()).sum(1)  # H(P[a, :]) per context a
    target_entropy = float(true_h[test_prev].mean())  # H(W_t | W_{t-1}) on these positions
    model = Bigram(p.shape[0], d)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    # The bigram NLL over the training positions only depends on the pair counts, so the
    # full-batch loss is computed from the (V, V) count matrix (same value and gradient).
    v = p.shape[0]
    counts = torch.bincount(train_prev * v + train_next, minlength=v * v).reshape(v, v)
    weights = counts.to(torch.float32) / counts.sum()
    contexts = torch.arange(v)
    sample = test_prev[torch.randperm(len(test_prev), generator=g)[:400]]
    rows, step = [], 0
    for target_step in cfg["steps"]:
        while step < target_step:
            opt.zero_grad()
            _, logits = model(contexts)
            (-(weights * torch.log_softmax(logits, 1)).sum()).backward()
            opt.step()
            step += 1
        with torch.no_grad():
            h, logits = model(test_prev)
            nll = float(nn.functional.cross_entropy(logits, test_next))
            ent = categorical_entropy(logits)
            hs, _ = model(sample)
            align = spectral_alignment(hs.double(), p[sample])
            align_norm = spectral_alignment(hs.double(), p[sample], normalized=True)
            align_raw = spectral_alignment(hs.double(), p[sample], whiten=False)
            rank = fisher_rank(
                hs[:50].double(), model.head.weight.double(), model.head.bias.double()
            )
        surplus = information_surplus(test_prev, test_next, test_after, vocab_size=V)
        rows.append(
            {
                "step": target_step,
                "nll": nll,
                "entropy": ent,
                "target": target_entropy,
                "gap": ent - target_entropy,
                "align": align,
                "align_norm": align_norm,
                "align_raw": align_raw,
                "rank_max": max(rank["rank"]),
                "rank_bound": rank["bound"],
                "surplus": surplus["surplus"],
                "surplus_corrected": surplus["surplus_corrected"],
            }
        )
    return rows


# ---------------------------------------------------------------------- report


def main(argv=None) -> dict:
    args, cfg = setup(__doc__, argv, FULL, SMOKE)
    with Stopwatch() as clock:
        mnist = run_mnist(cfg)
        p = transition_matrix(V)
        chains = {d: [chain_checkpoints(p, seed, cfg, d) for seed in SEEDS] for d in D_MODELS}

    table_a = markdown_table(
        ["loss", "kNN accuracy (k=20)", "final train loss"],
        [
            [label, mean_std_of(runs, "knn_acc", 100, 1), mean_std_of(runs, "loss", 1, 3)]
            for label, runs in mnist.items()
        ],
    )
    rows_b = []
    for d, k in ((d, k) for d in D_MODELS for k in range(len(cfg["steps"]))):
        at = [c[k] for c in chains[d]]
        rows_b.append(
            [
                d,
                cfg["steps"][k],
                *(mean_std_of(at, key, digits=4) for key in ("nll", "entropy", "target", "gap")),
                mean_std_of(at, "align", digits=4),
                mean_std_of(at, "align_norm", digits=3),
                mean_std_of(at, "align_raw", digits=4),
                f"{max(r['rank_max'] for r in at)} / {at[0]['rank_bound']}",
            ]
        )
    table_b = markdown_table(
        [
            "d",
            "step",
            "test NLL",
            "mean categorical entropy",
            "true H(W_t|W_t-1)",
            "gap",
            "alignment A (whitened)",
            "A / max",
            "A (raw h)",
            "Fisher rank / bound",
        ],
        rows_b,
    )
    full, low = chains[D_MODELS[0]], chains[D_MODELS[1]]
    surplus = mean_std([c[-1]["surplus"] for c in full], digits=4)
    surplus_c = mean_std([c[-1]["surplus_corrected"] for c in full], digits=4)

    acc = {label: sum(r["knn_acc"] for r in runs) / len(runs) for label, runs in mnist.items()}
    first_gap = [c[0]["gap"] for c in full]
    last_gap = [c[-1]["gap"] for c in full]
    first_a = [c[0]["align_norm"] for c in low]
    last_a = [c[-1]["align_norm"] for c in low]
    first_raw = [c[0]["align_raw"] for c in full]
    last_raw = [c[-1]["align_raw"] for c in full]
    low_gap = [c[-1]["gap"] for c in low]
    gap_shrinks = all(abs(b) < abs(a) for a, b in zip(first_gap, last_gap, strict=True))
    align_rises = all(b > a for a, b in zip(first_a, last_a, strict=True))
    verdict = (
        f"**Part A.** kNN accuracy: InfoNCE {100 * acc['infonce']:.1f}%, spectral contrastive "
        f"(paper form) {100 * acc['spectral']:.1f}%, official-code form "
        f"{100 * acc['spectral (official_code, mu=1)']:.1f}%. "
        + (
            "The spectral loss is competitive with InfoNCE here, as the paper reports on "
            "CIFAR/ImageNet. "
            if acc["spectral"] >= acc["infonce"] - 0.02
            else "The spectral loss trails InfoNCE by more than 2 points in this short, "
            "untuned schedule (same lr, encoder and augmentations as InfoNCE); the paper's "
            "claim of parity is on CIFAR/ImageNet with 800 epochs and is not reproduced here. "
        )
        + f"\n\n**Part B.** With d={D_MODELS[0]} (the head can represent P), the gap between the "
        f"model's mean categorical entropy and the true conditional entropy goes from "
        f"{mean_std(first_gap, digits=3)} nats at initialisation to "
        f"{mean_std(last_gap, digits=3)} after {cfg['steps'][-1]} steps: "
        + (
            "it shrinks toward 0 in every seed, as Prop. 4.2 / Thm 5.2 predict. "
            if gap_shrinks
            else "it does not shrink in every seed, contrary to the prediction. "
        )
        + f"(With the d={D_MODELS[1]} bottleneck the final gap is "
        f"{mean_std(low_gap, digits=3)}: a rank-3 head need not reach the data's entropy.) "
        + (
            f"With d={D_MODELS[0]} >= the number of distinct contexts minus 1, whitening maps "
            f"any injective embedding to the same features up to rotation, so the whitened "
            f"score is constant (A / max = 1 at every step): it is uninformative there; "
            if all(abs(r["align_norm"] - 1) < 1e-6 for c in full for r in c)
            else f"With d={D_MODELS[0]} the whitened score varies (see the table); "
        )
        + f"the raw-feature score goes from {mean_std(first_raw, digits=3)} to "
        f"{mean_std(last_raw, digits=3)} (raw inner products also grow with the "
        f"feature norms). With the "
        f"d={D_MODELS[1]} bottleneck the normalised whitened alignment goes from "
        f"{mean_std(first_a, digits=3)} to {mean_std(last_a, digits=3)}: "
        + (
            "it rises with training in every seed, in line with Thm 7.6's reading of NLL "
            "as spectral alignment with the predictive kernel (the theorem's assumptions, "
            "unit-norm unembeddings and whitened features, are not imposed on this model). "
            if align_rises
            else "it does not rise in every seed, so the spectral-alignment reading of Thm "
            "7.6 is not borne out on this model, which violates its assumptions (unit-norm "
            "unembeddings, whitened features). "
        )
        + f"The pullback Fisher rank never exceeds its bound min(d, |V|-1). The plug-in "
        f"information surplus (K=2, state = w_(t-1)) on the held-out positions is {surplus} "
        f"nats ({surplus_c} after the first-order Miller-Madow correction): the population "
        f"value is exactly 0 for a first-order chain, so what remains is estimator bias."
    )
    body = "\n\n".join(
        [
            "### spectral: spectral contrastive loss vs InfoNCE; Markov categorical "
            "diagnostics track NLL training",
            f"Command: `{command(NAME)}`" + (" --smoke" if args.smoke else ""),
            f"**Part A data:** MNIST test set (`../shared/data/mnist-test`, 10k images), "
            f"stratified subset of {cfg['subset']}, split 75% train (encoder training and kNN "
            f"memory) / 25% test (queries), split seed 0. **Model:** the library loop's small "
            f"CNN (16-32-64 channels, 64-d features, 64-d projection), 2 augmented views, "
            f"batch 256, AdamW lr 2e-3, {cfg['epochs']} epochs, cosine schedule; kNN (k=20, "
            f"cosine) on the encoder features. Seeds {list(cfg.get('seeds', SEEDS))}; mean ± std "
            f"over seeds.",
            table_a,
            f"**Part B data:** a first-order Markov chain over V={V} tokens, transition rows "
            f"Dirichlet(0.3) (+1e-3, fixed by seed 1234), {cfg['seq']} tokens sampled per seed, "
            f"first 80% for training, last 20% held out. **Model:** embedding (d in {list(D_MODELS)}) "
            f"+ linear softmax head, full-batch Adam lr {LR} on the training NLL (computed "
            f"from the bigram counts). Alignment: "
            f"`spectral_alignment` on 400 held-out contexts with the Bhattacharyya kernel of the "
            f"*true* rows P[w_(t-1)] (whitened; 'A / max' divides the full quadratic form by "
            f"its maximum over whitened features). Seeds {list(SEEDS)}; mean ± std.",
            table_b,
            verdict,
            provenance(clock.minutes, args.smoke),
        ]
    )
    write_section(NAME, body, args.out)
    return {"mnist": mnist, "chains": chains}


if __name__ == "__main__":
    main()
