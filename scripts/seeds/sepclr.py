"""SepCLR on MNIST contrastive analysis: the salient space holds the target-only pattern,
the common space the digit.

Data: the MNIST test set of the shared data (``mnist-test``, 10,000 images). Per seed the
images are shuffled and split into a background set (plain digits, label 0), a target
set (the same kind of digits with one of 4 textures added: horizontal stripes, vertical
stripes, diagonal stripes or a dot grid, drawn uniformly; label 1), and a held-out set
of target images for the probes. The texture type is the salient factor (categorical,
present in the target set only); the digit is the common factor.

Models: SepCLR (``contrastkit.methods.SepCLR``) with two MLP encoders 784-256-32 (BN,
ReLU) and the official 32-128-32 heads, trained with the official CIFAR-MNIST weights
(beta_s = beta_reg = 1000, lambda = 10, tau = 0.5); reference: one MLP encoder of the
same size with a 32-128-32 head trained with InfoNCE (NT-Xent, temperature 0.1) on the
same images. Both: the library's default augmentations (two views), Adam, batch 256.

Scores: logistic-regression linear probes (``contrastkit.evaluation.linear_probe``) fit
on the representations (encoder outputs, as the official evaluation) of the training
target images and tested on held-out target images, for the digit (chance 10%) and for
the texture (chance 25%).

    .venv/bin/python scripts/seeds/sepclr.py [--smoke] [--out PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.append(str(Path(__file__).resolve().parent))  # after site-packages: never shadow
from _common import (  # noqa: E402
    Stopwatch,
    command,
    markdown_table,
    mean_std,
    provenance,
    setup,
    to_images,
    write_section,
)

import contrastkit.functional as F  # noqa: E402
from contrastkit.evaluation import linear_probe  # noqa: E402
from contrastkit.methods.sepclr import SepCLR  # noqa: E402
from contrastkit.train.augment import build_augment, two_views  # noqa: E402
from contrastkit.train.config import AugmentConfig  # noqa: E402
from contrastkit.train.data import TEXTURE_STRENGTH as STRENGTH  # noqa: E402
from contrastkit.train.data import TEXTURES as PATTERNS  # noqa: E402
from contrastkit.train.data import add_texture, load_arrays  # noqa: E402

NAME = "sepclr"
FULL = dict(n_background=2000, n_target=2000, n_test=1000, epochs=15, seeds=(0, 1, 2))
SMOKE = dict(n_background=128, n_target=128, n_test=64, epochs=1, seeds=(0,))
BATCH, LR, DIM, HIDDEN, HEAD = 256, 1e-3, 32, 256, 128


def make_data(cfg: dict, seed: int) -> dict:
    """Background / target training images and held-out target images, with digits and
    texture ids (-1 for background)."""
    x, y = load_arrays("mnist")
    rng = np.random.default_rng(30_000 + seed)
    order = rng.permutation(len(y))
    nb, nt, ne = cfg["n_background"], cfg["n_target"], cfg["n_test"]
    bg, tg, te = order[:nb], order[nb : nb + nt], order[nb + nt : nb + nt + ne]

    def with_texture(idx):
        kind = torch.from_numpy(rng.integers(0, len(PATTERNS), len(idx)))
        return add_texture(to_images(x[idx]), kind), kind

    x_tg, k_tg = with_texture(tg)
    x_te, k_te = with_texture(te)
    train_x = torch.cat([to_images(x[bg]), x_tg])
    group = torch.cat([torch.zeros(nb, dtype=torch.long), torch.ones(nt, dtype=torch.long)])
    digit = torch.from_numpy(y.astype(np.int64))
    return dict(
        train_x=train_x,
        group=group,
        train_digit=torch.cat([digit[bg], digit[tg]]),
        train_kind=torch.cat([torch.full((nb,), -1), k_tg]),
        test_x=x_te,
        test_digit=digit[te],
        test_kind=k_te,
    )


def mlp(out_dim: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(784, HIDDEN),
        torch.nn.BatchNorm1d(HIDDEN),
        torch.nn.ReLU(inplace=True),
        torch.nn.Linear(HIDDEN, out_dim),
    )


def batches(n: int, g: torch.Generator):
    perm = torch.randperm(n, generator=g)
    for i in range(0, n - BATCH + 1, BATCH):  # drop the ragged last batch
        yield perm[i : i + BATCH]


def train_sepclr(data: dict, cfg: dict, seed: int) -> SepCLR:
    torch.manual_seed(seed)
    model = SepCLR(mlp(DIM), mlp(DIM), common_dim=DIM, salient_dim=DIM, head_hidden=HEAD)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    augment = build_augment(AugmentConfig(), (28, 28))
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(cfg["epochs"]):
        for idx in batches(len(data["group"]), g):
            v1, v2 = two_views(data["train_x"][idx], augment, g)
            opt.zero_grad()
            model.loss(v1, v2, data["group"][idx]).backward()
            opt.step()
    return model.eval()


def train_infonce(data: dict, cfg: dict, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    encoder = mlp(DIM)
    head = torch.nn.Sequential(
        torch.nn.Linear(DIM, HEAD),
        torch.nn.BatchNorm1d(HEAD),
        torch.nn.ReLU(inplace=True),
        torch.nn.Linear(HEAD, DIM),
    )
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=LR)
    augment = build_augment(AugmentConfig(), (28, 28))
    g = torch.Generator().manual_seed(seed)
    for _ in range(cfg["epochs"]):
        for idx in batches(len(data["group"]), g):
            v1, v2 = two_views(data["train_x"][idx], augment, g)
            opt.zero_grad()
            F.info_nce(head(encoder(v1)), head(encoder(v2)), temperature=0.1).backward()
            opt.step()
    return encoder.eval()


def probes(train_z, test_z, data: dict, seed: int) -> dict:
    tg = data["group"] == 1
    out = {}
    for factor, tr, te in (
        ("digit", data["train_digit"][tg], data["test_digit"]),
        ("pattern", data["train_kind"][tg], data["test_kind"]),
    ):
        out[factor] = linear_probe(train_z[tg], tr, test_z, te, seed=seed)
    return out


def run_seed(cfg: dict, seed: int) -> dict:
    data = make_data(cfg, seed)
    model = train_sepclr(data, cfg, seed)
    with torch.no_grad():
        c_tr, ch_tr, s_tr, sh_tr = model(data["train_x"])
        c_te, ch_te, s_te, sh_te = model(data["test_x"])
        norms = {
            f"salient_{space}_norm_{group}": float(z[data["group"] == flag].norm(dim=1).mean())
            for space, z in (("rep", s_tr), ("head", sh_tr))
            for group, flag in (("background", 0), ("target", 1))
        }
    torch.manual_seed(seed)
    untrained = mlp(DIM).eval()  # how decodable each factor is without any training
    with torch.no_grad():
        u_tr, u_te = untrained(data["train_x"]), untrained(data["test_x"])
    encoder = train_infonce(data, cfg, seed)
    with torch.no_grad():
        z_tr, z_te = encoder(data["train_x"]), encoder(data["test_x"])
    return {
        "common": probes(c_tr, c_te, data, seed),
        "salient": probes(s_tr, s_te, data, seed),
        "common_head": probes(ch_tr, ch_te, data, seed),
        "salient_head": probes(sh_tr, sh_te, data, seed),
        "infonce": probes(z_tr, z_te, data, seed),
        "untrained": probes(u_tr, u_te, data, seed),
        **norms,
    }


def main(argv=None) -> dict:
    args, cfg = setup(__doc__, argv, FULL, SMOKE)
    with Stopwatch() as clock:
        runs = [run_seed(cfg, seed) for seed in cfg["seeds"]]
    body = report(runs, cfg, clock.minutes, args.smoke)
    write_section(NAME, body, args.out)
    return {"runs": runs}


def _values(runs, space, factor):
    return np.array([r[space][factor] for r in runs])


def _pct(runs, space, factor) -> str:
    return f"{100 * _values(runs, space, factor).mean():.1f}%"


def _space_verdict(runs, salient: str, common: str, where: str) -> str:
    """Does the salient space lose the digit and the common space lose the texture?"""
    sal_d, com_d = _values(runs, salient, "digit"), _values(runs, common, "digit")
    sal_p, com_p = _values(runs, salient, "pattern"), _values(runs, common, "pattern")
    fewer_digits = bool((sal_d < com_d - 0.1).all())
    text = (
        f"{where}: the salient space predicts the texture at {_pct(runs, salient, 'pattern')} "
        f"and the digit at {_pct(runs, salient, 'digit')}, "
        + (
            "clearly less digit than the common space"
            if fewer_digits
            else "not clearly less digit than the common space"
        )
        + f" ({_pct(runs, common, 'digit')}); the common space predicts the texture at "
        f"{_pct(runs, common, 'pattern')} (chance 25%)"
    )
    if bool((com_p < 0.4).all()):
        return text + ", so it carries almost none of the target-only factor."
    if bool((com_p < sal_p - 0.05).all()):
        return text + ", lower than the salient space but far above chance: partial separation."
    return text + ", about as much as the salient space: the texture is not removed."


def verdict(runs) -> str:
    parts = [
        _space_verdict(runs, "salient", "common", "Encoder outputs (the official evaluation)"),
        _space_verdict(runs, "salient_head", "common_head", "Head outputs"),
        f"The single InfoNCE encoder holds both factors in one space (digit "
        f"{_pct(runs, 'infonce', 'digit')}, texture {_pct(runs, 'infonce', 'pattern')}). "
        f"An untrained encoder of the same architecture already gives texture "
        f"{_pct(runs, 'untrained', 'pattern')} and digit {_pct(runs, 'untrained', 'digit')}: the "
        f"textures (whole-image patterns at intensity {STRENGTH}) are decodable from almost "
        f"any features, so removing them from the common space is the demanding half of the "
        f"claim.",
    ]
    return " ".join(parts)


def report(runs, cfg: dict, minutes: float, smoke: bool) -> str:
    rows = []
    for space, label in (
        ("salient", "SepCLR salient representation (encoder output, 32-d)"),
        ("common", "SepCLR common representation (encoder output, 32-d)"),
        ("salient_head", "SepCLR salient code s (head output, what the loss sees)"),
        ("common_head", "SepCLR common code c (head output, what the loss sees)"),
        ("infonce", "InfoNCE, one encoder (encoder output, 32-d)"),
        ("untrained", "untrained MLP encoder (random init, 32-d)"),
    ):
        rows.append(
            [
                label,
                mean_std(_values(runs, space, "digit"), 100, 1),
                mean_std(_values(runs, space, "pattern"), 100, 1),
            ]
        )
    table = markdown_table(
        ["space", "digit probe acc % (chance 10)", "texture probe acc % (chance 25)"], rows
    )

    def norm(key):
        return mean_std([r[key] for r in runs], 1, 2)

    norms = (
        f"Mean L2 norm on the training images, background vs target: salient code s (head "
        f"output) {norm('salient_head_norm_background')} vs {norm('salient_head_norm_target')}; "
        f"salient representation (encoder output) {norm('salient_rep_norm_background')} vs "
        f"{norm('salient_rep_norm_target')}. The information-less constraint pulls the "
        f"background codes s to 0; the official evaluation probes the encoder outputs."
    )
    return f"""### sepclr: the salient space captures the target-only factor, the common space the shared one

Command: `{command(NAME, smoke)}`

Data: `../shared/data/mnist-test` (MNIST test set, 10,000 images), split per seed into
{cfg["n_background"]} background images (plain digits, label 0), {cfg["n_target"]} target
images (digits with one of 4 textures added at intensity {STRENGTH}: {", ".join(PATTERNS)};
label 1) and {cfg["n_test"]} held-out target images. Digit = common factor, texture =
salient (target-only) factor.
Model and schedule: SepCLR with two MLP encoders 784-{HIDDEN}-{DIM} (BN, ReLU) and the
official {DIM}-{HEAD}-{DIM} heads, official CIFAR-MNIST weights (beta_s = beta_reg = 1000,
lambda = 10, tau = 0.5); reference: one MLP encoder of the same size + head trained with
InfoNCE (temperature 0.1) on the same images. Both: library default augmentations (two
views), Adam lr {LR:g} (official 3e-4 for 250 epochs; higher here for {cfg["epochs"]}
epochs), batch {BATCH}, {cfg["epochs"]} epochs. Probes: logistic regression on the
encoder outputs (as the official evaluation), fit on the training target images, tested
on the held-out target images.
Seeds: {list(cfg["seeds"])} (mean ± sample std over seeds).

{table}

{norms}

Verdict: {verdict(runs)} A small CPU run (MLP encoders, {cfg["epochs"]} epochs); the paper
uses ResNet-18s for 250 epochs, so only the direction of the effects is comparable.

{provenance(minutes, smoke)}
"""


if __name__ == "__main__":
    main()
