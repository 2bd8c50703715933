#!/usr/bin/env python
"""Write docs/results.md and its figures by command (``make results``); never edit by hand.

1. The leaderboard: ``contrastkit compare --config configs/mnist_compare.yaml`` (every
   registered objective x 3 seeds, small CNN, MNIST test set), run as a subprocess so that
   the command stated in results.md is exactly the one that produced the numbers.
2. An InfoNCE temperature sweep (0.05 ... 1.0) on the same data, encoder and schedule,
   reporting kNN accuracy, alignment, uniformity and tolerance (Wang & Liu, CVPR 2021).

About 30 minutes on 2 CPU cores. ``--smoke`` runs a seconds-long version (digits subset,
one epoch, two objectives) for the tests; ``--render-only`` rewrites results.md from the
JSON files of the last run (``results_compare.json``, ``results_temperature.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = Path("configs/mnist_compare.yaml")
TEMPERATURES = (0.05, 0.1, 0.2, 0.5, 1.0)
SWEEP_SEEDS = (0, 1)
SWEEP_METRICS = (  # (metric, header, scale, digits); proj_* are in the projection space
    ("knn_acc", "kNN acc (%)", 100.0, 1),
    ("alignment", "alignment", 1.0, 3),
    ("uniformity", "uniformity", 1.0, 3),
    ("tolerance", "tolerance", 1.0, 3),
    ("proj_alignment", "alignment (proj.)", 1.0, 3),
    ("proj_uniformity", "uniformity (proj.)", 1.0, 3),
    ("proj_tolerance", "tolerance (proj.)", 1.0, 3),
)
# --smoke: the same pipeline in seconds (for tests/test_cli.py).
SMOKE = {
    "data.name": "digits",
    "data.subset": 300,
    "epochs": 1,
    "batch_size": 64,
    "model.encoder": "mlp",
    "model.width": 32,
    "model.feature_dim": 16,
    "compare.losses": ["infonce", "simsiam"],
    "compare.seeds": [0],
}
SMOKE_TEMPERATURES, SMOKE_SWEEP_SEEDS = (0.1, 0.5), (0,)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    overrides = SMOKE if args.smoke else {}
    temperatures = SMOKE_TEMPERATURES if args.smoke else TEMPERATURES
    sweep_seeds = SMOKE_SWEEP_SEEDS if args.smoke else SWEEP_SEEDS
    command = compare_command(out, overrides)
    board_path, sweep_path = out / "results_compare.json", out / "results_temperature.json"
    if not args.render_only:
        timing = {}
        if args.sweep_only:
            timing["board_minutes"] = _previous(sweep_path, board_path)["board_minutes"]
        else:
            started = time.perf_counter()
            print("$", shlex.join(command), flush=True)
            subprocess.run(
                [sys.executable, "-m", "contrastkit", *command[1:]], cwd=ROOT, check=True
            )
            timing["board_minutes"] = (time.perf_counter() - started) / 60
        started = time.perf_counter()
        records = temperature_sweep(overrides, temperatures, sweep_seeds)
        timing["sweep_minutes"] = (time.perf_counter() - started) / 60
        sweep = {"seeds": list(sweep_seeds), "records": records, "smoke": args.smoke,
                 "date": datetime.date.today().isoformat(), **timing}  # fmt: skip
        sweep_path.write_text(json.dumps(sweep, indent=2) + "\n")
    sweep = json.loads(sweep_path.read_text())
    board = json.loads(board_path.read_text())
    if args.render_only:  # otherwise `contrastkit compare` has just drawn it
        plot_board(board, out / "results_leaderboard.png")
    plot_sweep(sweep["records"], out / "results_temperature.png")
    results = out / "results.md"
    results.write_text(render(board, sweep, command, out) + kept_seed_sections(results))
    print(f"wrote {out / 'results.md'}", flush=True)


def kept_seed_sections(results: Path) -> str:
    """The per-objective sections that ``scripts/seeds/*.py`` wrote into ``results``:
    each is regenerated only by its own command, so a rewrite here keeps them."""
    sys.path.append(str(ROOT / "scripts" / "seeds"))
    from _common import SEEDS_HEADING, seed_sections

    blocks = seed_sections(results.read_text()) if results.is_file() else ""
    return f"\n{SEEDS_HEADING}\n\n{blocks}" if blocks else ""


def _previous(sweep_path: Path, board_path: Path) -> dict:
    if not (sweep_path.is_file() and board_path.is_file()):
        raise SystemExit(
            f"--sweep-only reuses {board_path.name} and {sweep_path.name} of a full run in "
            f"{board_path.parent}; they are missing. Fix: run without --sweep-only first."
        )
    return json.loads(sweep_path.read_text())


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default=str(ROOT / "docs"), help="where results.md goes")
    p.add_argument("--smoke", action="store_true", help="a seconds-long run for the tests")
    p.add_argument(
        "--sweep-only",
        action="store_true",
        help="rerun only the temperature sweep, keeping the leaderboard of an earlier run",
    )
    p.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite results.md and the sweep figure from the JSON files of an earlier run",
    )
    return p.parse_args(argv)


def compare_command(out: Path, overrides: dict) -> list[str]:
    """The ``contrastkit compare`` invocation (paths shown relative to the repository)."""
    command = ["contrastkit", "compare", "--config", str(CONFIG)]
    for key, value in overrides.items():
        command += ["--set", f"{key}={json.dumps(value)}"]  # JSON is valid YAML
    command += [
        "--json", _shown(out / "results_compare.json"),
        "--png", _shown(out / "results_leaderboard.png"),
        "--no-progress",
    ]  # fmt: skip
    return command


def temperature_sweep(overrides: dict, temperatures, seeds) -> list[dict]:
    """InfoNCE at each temperature x seed, with the leaderboard's data, model and schedule."""
    from contrastkit.train import CompareConfig, apply_overrides, evaluate, load_dataset, train
    from contrastkit.train.augment import build_augment

    raw = yaml.safe_load((ROOT / CONFIG).read_text())
    base = CompareConfig.from_dict(apply_overrides(raw, overrides)).train
    data = load_dataset(base.data)
    records = []
    for t in temperatures:
        for seed in seeds:
            cfg = base.from_dict(
                apply_overrides(
                    base.to_dict(),
                    {
                        "seed": seed,
                        "loss.name": "infonce",
                        "loss.params": {"temperature": t},
                        "eval.linear_probe": False,
                        "progress": False,
                        "out": None,
                    },
                )
            )
            started = time.perf_counter()
            result = train(cfg, data=data)
            # The loss acts on the projections; evaluation uses the features: report both.
            proj = evaluate(
                result.model,
                data,
                replace(cfg.eval, space="projections"),
                augment=build_augment(cfg.augment, data.image_shape[1:]),
                seed=cfg.seed,
                linear=False,
            )
            metrics = result.metrics
            records.append(
                {"temperature": t, "seed": seed, **metrics}
                | {f"proj_{k}": v for k, v in proj.items()}
            )
            took = time.perf_counter() - started
            print(f"temperature {t} seed {seed}: kNN {metrics['knn_acc']:.3f} ({took:.0f} s)")
    return records


def plot_board(board: dict, path: Path) -> None:
    """Redraw the leaderboard figure from ``results_compare.json`` (as ``compare`` does)."""
    from contrastkit.cli.main import describe_setup, plot_leaderboard
    from contrastkit.train import CompareConfig

    plot_leaderboard(
        board["leaderboard"], path, describe_setup(CompareConfig.from_dict(board["config"]))
    )


def _mean_std(records, t, metric, scale=1.0):
    values = [r[metric] * scale for r in records if r["temperature"] == t]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def plot_sweep(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temps = sorted({r["temperature"] for r in records})
    panels = [("knn_acc", "kNN accuracy (%)", 100.0)] + [
        (m, m, 1.0) for m in ("alignment", "uniformity", "tolerance")
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 3.6))
    for ax, (metric, title, scale) in zip(axes, panels, strict=True):
        for prefix, label in (("", "features"), ("proj_", "projections")):
            if f"{prefix}{metric}" not in records[0]:
                continue
            stats = [_mean_std(records, t, prefix + metric, scale) for t in temps]
            means, stds = [m for m, _ in stats], [s for _, s in stats]
            ax.errorbar(temps, means, yerr=stds, marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("InfoNCE temperature")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(board: dict, sweep_run: dict, command: list[str], out: Path) -> str:
    from contrastkit import loss_info
    from contrastkit.cli.main import leaderboard_markdown
    from contrastkit.train import CompareConfig, LossConfig

    cfg = CompareConfig.from_dict(board["config"])
    t = cfg.train
    rows = board["leaderboard"]
    names = [r["objective"] for r in rows]
    supervised = [o for o in names if loss_info(o).cls.inputs == "labels"]
    ema = [o for o in names if replace(t, loss=LossConfig(o, ema=t.loss.ema)).ema_momentum() > 0]
    sweep, sweep_seeds, smoke = sweep_run["records"], sweep_run["seeds"], sweep_run["smoke"]
    board_minutes, sweep_minutes = sweep_run["board_minutes"], sweep_run["sweep_minutes"]
    temps = sorted({r["temperature"] for r in sweep})
    relu_note = (
        " The CNN's features follow a ReLU, so every cosine between them is >= 0 and "
        "uniformity cannot reach the sphere's optimum."
        if t.model.encoder == "cnn"
        else ""
    )
    data_text = {
        "mnist": "the MNIST test set (10,000 28x28 digits, `../shared/data/mnist-test`, IDX "
        "files as described in its SOURCE.md)",
        "digits": "scikit-learn's 8x8 digits (1,797 images, embedded)",
        "mnist5k": "5,000 MNIST digits (`../shared/data/mnist-5k`)",
    }[t.data.name]
    n_total = {"mnist": 10000, "digits": 1797, "mnist5k": 5000}[t.data.name]
    n = t.data.subset or n_total
    n_test = round(n * t.data.test_fraction)
    lines = [
        "# Results",
        "",
        "Generated by `python scripts/make_results.py` (`make results`); do not edit by hand."
        + (" **Smoke run: not real results.**" if smoke else ""),
        f"Run on {sweep_run['date']}, {platform.machine()} with "
        f"{os.cpu_count()} CPU cores, torch {_torch_version()}: {board_minutes:.1f} minutes "
        f"for the leaderboard, {sweep_minutes:.1f} for the temperature sweep.",
        "",
        "## Objectives on MNIST: leaderboard",
        "",
        "Command:",
        "",
        "```",
        shlex.join(command),
        "```",
        "",
        f"- **Data**: {data_text}"
        + (f", subsampled to {n} (stratified)" if t.data.subset else "")
        + f"; stratified split (seed {t.data.split_seed}) into {n - n_test} training and "
        f"{n_test} test images. Encoders train on the training images only.",
        f"- **Encoder**: {t.model.encoder.upper()} (width {t.model.width}, "
        f"{t.model.feature_dim}-d features), projection head {t.model.proj_hidden}-"
        f"{t.model.proj_dim}; predictor head for prediction objectives; EMA target network "
        f"(momentum 0.99) for {', '.join(ema) or 'none'}.",
        f"- **Training**: {t.epochs} epochs, batch size {t.batch_size}, AdamW lr {t.optim.lr} "
        f"(weight decay {t.optim.weight_decay}), {t.optim.warmup_epochs:g} warm-up epoch(s) "
        f"then cosine decay; augmentations: random resized crop {list(t.augment.crop_scale)}, "
        f"rotation {t.augment.degrees:g} deg, shift {t.augment.translate:g}, Gaussian noise "
        f"{t.augment.noise_std:g}, random erasing p={t.augment.erase_p:g}. Every objective at "
        "its paper's default hyperparameters"
        + (f", except {json.dumps(cfg.loss_params)}." if cfg.loss_params else "."),
        f"- **Seeds**: {', '.join(map(str, cfg.seeds))}; cells are mean ± std over seeds.",
        f"- **Metrics** (on the {n_test} test images, from the encoder features): weighted "
        f"kNN accuracy (k={t.eval.knn_k}, temperature {t.eval.knn_temperature}, training "
        "images as memory); linear probe (logistic regression on frozen, standardised "
        "features); alignment of two augmented views and uniformity (Wang & Isola 2020; "
        "lower is better for both); effective rank (Roy & Vetterli 2007)." + relu_note,
    ]
    if supervised:
        lines.append(
            f"- {', '.join(supervised)} use the class labels (supervised), so they are not "
            "self-supervised competitors of the others."
        )
    if board.get("skipped"):
        skipped = "; ".join(f"{k} ({v})" for k, v in board["skipped"].items())
        lines.append(
            f"- Not in this table: {skipped}. Each has its own comparison in the seed "
            "objectives' sections below."
        )
    lines += [
        "",
        leaderboard_markdown(rows).rstrip(),
        "",
        f"![leaderboard]({_rel(out / 'results_leaderboard.png', out)})",
        "",
        "Per-run numbers: `results_compare.json`. *time / run* is wall-clock time on the "
        "machine named above and includes whatever else it was running: compare speed with "
        "`contrastkit bench` (docs/benchmarks.md), not with this column.",
        "",
        "## InfoNCE temperature sweep",
        "",
        f"InfoNCE (NT-Xent) at temperatures {', '.join(f'{x:g}' for x in temps)} with the "
        f"data, encoder, augmentations and schedule above; seeds "
        f"{', '.join(map(str, sweep_seeds))} (mean ± std); produced by the same script "
        "(`temperature_sweep`). Tolerance is the mean cosine similarity of same-class test "
        "pairs (Wang & Liu, CVPR 2021), who report that a low temperature makes the embedding "
        "more uniform but less tolerant to semantically similar samples. The diagnostics are "
        "given on the projections (proj.), where the loss acts, and on the encoder features, "
        f"which kNN uses.{relu_note}",
        "",
        _trend(sweep, temps),
        "",
        "| temperature | " + " | ".join(h for _, h, _, _ in SWEEP_METRICS) + " |",
        "| ---: | " + " | ".join("---:" for _ in SWEEP_METRICS) + " |",
    ]
    for temp in temps:
        cells = []
        for metric, _, scale, digits in SWEEP_METRICS:
            m, s = _mean_std(sweep, temp, metric, scale)
            cells.append(f"{m:.{digits}f} ± {s:.{digits}f}")
        lines.append(f"| {temp:g} | " + " | ".join(cells) + " |")
    lines += ["", f"![temperature sweep]({_rel(out / 'results_temperature.png', out)})", ""]
    lines += _claims(rows, sweep, temps)
    return "\n".join(lines)


# (claim, source, better objective, worse objective): each paper's headline comparison that
# this leaderboard can test, judged on kNN accuracy.
CLAIMS = (
    ("the simple contrastive loss is much worse than InfoNCE", "Wang & Liu 2021",
     "infonce", "simplecontrastive"),
    ("the hard contrastive loss matches or beats InfoNCE", "Wang & Liu 2021",
     "hardcontrastive", "infonce"),
    ("DCL beats InfoNCE (most at small batch; the gap shrinks at 256)", "Yeh et al. 2022",
     "dcl", "infonce"),
    ("DCLW beats DCL", "Yeh et al. 2022", "dclw", "dcl"),
    ("hard negatives (HCL) beat InfoNCE", "Robinson et al. 2021", "hcl", "infonce"),
    ("debiasing beats InfoNCE", "Chuang et al. 2020", "debiasedinfonce", "infonce"),
    ("SupCon beats self-supervised InfoNCE", "Khosla et al. 2020", "supcon", "infonce"),
    ("BYOL matches or beats InfoNCE", "Grill et al. 2020", "byol", "infonce"),
    ("Barlow Twins matches or beats InfoNCE", "Zbontar et al. 2021",
     "barlowtwins", "infonce"),
    ("VICReg matches or beats InfoNCE", "Bardes et al. 2022", "vicreg", "infonce"),
)  # fmt: skip


def _verdict(diff: float, noise: float, ties_hold: bool) -> str:
    if diff > noise:
        return "yes"
    if diff < -noise:
        return "**no**"
    return "within noise (holds)" if ties_hold else "within noise"


def _claims(rows: list[dict], sweep: list[dict], temps: list[float]) -> list[str]:
    """Each testable claim of the papers against the numbers above, judged by rule:
    a difference of means counts only beyond the sum of the two standard deviations."""
    by_name = {r["objective"]: r for r in rows}
    lines = [
        "## Against the papers' claims",
        "",
        "Judged by rule from the numbers above, not by hand: a difference of mean kNN "
        "accuracy counts only when it exceeds the sum of the two standard deviations. The "
        "papers' claims come from ImageNet/CIFAR-scale training (hundreds of epochs, large "
        "encoders); this is 10 epochs of a small CNN on MNIST, so a claim that does not hold "
        "here is not refuted, only not reproduced at this scale. Each objective runs at its "
        "paper's default temperature; rows marked *at equal temperature* compare it with "
        "InfoNCE from the temperature sweep (its seeds) at that same temperature.",
        "",
        "| claim | source | measured (kNN %) | holds here? |",
        "| --- | --- | --- | --- |",
    ]
    for claim, source, better, worse in CLAIMS:
        if better not in by_name or worse not in by_name:
            continue
        a, b = by_name[better], by_name[worse]
        diff = a["knn_acc_mean"] - b["knn_acc_mean"]
        noise = a["knn_acc_std"] + b["knn_acc_std"]
        ties_hold = "matches" in claim
        measured = (
            f"{better} {100 * a['knn_acc_mean']:.1f} vs {worse} {100 * b['knn_acc_mean']:.1f} "
            f"({100 * diff:+.1f})"
        )
        lines.append(f"| {claim} | {source} | {measured} | {_verdict(diff, noise, ties_hold)} |")
        same_t = _same_temperature(a, better, worse, sweep, temps)
        if same_t is not None:
            t, (m, sd) = same_t
            diff, noise = a["knn_acc_mean"] - m, a["knn_acc_std"] + sd
            measured = (
                f"{better} {100 * a['knn_acc_mean']:.1f} vs infonce at its temperature {t:g} "
                f"(sweep) {100 * m:.1f} ({100 * diff:+.1f})"
            )
            verdict = _verdict(diff, noise, ties_hold)
            lines.append(f"| {claim}, at equal temperature | {source} | {measured} | {verdict} |")
    lines += ["", _temperature_claims(sweep, temps), ""]
    return lines


def _same_temperature(row, better, worse, sweep, temps):
    """InfoNCE from the sweep at ``better``'s default temperature, when that differs from
    InfoNCE's own default (each objective runs at its paper's temperature)."""
    from contrastkit import create_loss

    t = getattr(create_loss(better), "temperature", None)
    if worse != "infonce" or t is None or t == create_loss("infonce").temperature:
        return None
    if t not in temps:
        return None
    return t, _mean_std(sweep, t, "knn_acc")


def _temperature_claims(sweep: list[dict], temps: list[float]) -> str:
    """Wang & Liu: lowering the temperature makes the embedding more uniform (lower
    uniformity) and less tolerant (lower tolerance). Checked step by step on projections."""

    def steps(metric):
        means = [_mean_std(sweep, t, metric)[0] for t in temps]
        # Going from each temperature to the next lower one, does the metric fall?
        falls = [lo < hi for lo, hi in zip(means, means[1:], strict=False)]
        broken = [f"{temps[i]:g} -> {temps[i + 1]:g}" for i, f in enumerate(falls) if not f]
        return len(falls) - len(broken), len(falls), broken

    parts = []
    for metric, word in (("proj_uniformity", "more uniform"), ("proj_tolerance", "less tolerant")):
        ok, total, broken = steps(metric)
        where = f" (not between {', '.join(broken)})" if broken else ""
        parts.append(f"{word} in {ok} of {total} steps{where}")
    return (
        "Temperature (Wang & Liu 2021): a lower temperature should make the "
        "projections more uniform and less tolerant. Stepping down the sweep, they became "
        + "; ".join(parts)
        + " (step `a -> b` counts when the metric is lower at the lower temperature a)."
    )


def _trend(records: list[dict], temps: list[float]) -> str:
    """What the sweep shows, as numbers per temperature (not written by hand)."""

    def series(metric, scale=1.0, digits=2, most="min"):
        means = [_mean_std(records, t, metric, scale)[0] for t in temps]
        best = temps[means.index(min(means) if most == "min" else max(means))]
        return f"{', '.join(f'{m:.{digits}f}' for m in means)} ({most}imal at {best:g})"

    return (
        f"Across temperatures {', '.join(f'{t:g}' for t in temps)}: kNN accuracy (%) "
        f"{series('knn_acc', 100.0, 1, 'max')}; uniformity (proj.) "
        f"{series('proj_uniformity')}; tolerance (proj.) {series('proj_tolerance')}."
    )


def _torch_version() -> str:
    import torch

    return torch.__version__


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (as a user would type it)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


if __name__ == "__main__":
    main()
