"""Known-MI benchmark: InfoNCE, NWJ, DV, MINE and JS estimates on correlated Gaussians.

The set-up of Poole et al., "On Variational Bounds of Mutual Information" (ICML 2019,
Sec. 5, Fig. 2): x, y in R^d (d = 20), y = rho x + sqrt(1 - rho^2) eps with x, eps
standard normal, so the true MI is ``-d/2 log(1 - rho^2)`` nats. The MI follows a
staircase over training steps (``LEVELS`` nats, ``steps_per_level`` steps each); every
step draws a fresh batch, computes the critic's (B, B) scores and takes one Adam step on
``-estimate`` (the estimator's own training objective: MINE uses its moving-average
gradient, JS trains on the Jensen-Shannon objective and reports NWJ at f + 1).

Critic: ``SeparableCritic`` (two MLPs 20-256-256-32, ReLU; Poole et al.'s separable
critic), Adam. Batch sizes 64 and 512; InfoNCE cannot exceed log B (4.16 and 6.24 nats).
Reported per level: the estimate averaged over the last ``tail`` steps of the level
(mean ± std over seeds) and the step-to-step standard deviation over those steps (the
estimator's variance at a fixed critic quality), averaged over seeds.

    .venv/bin/python scripts/seeds/mi_gaussian.py [--smoke] [--out PATH]
"""

from __future__ import annotations

import math
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.append(str(Path(__file__).resolve().parent))  # after site-packages: never shadow
from _common import (  # noqa: E402
    Stopwatch,
    command,
    markdown_table,
    provenance,
    setup,
    write_section,
)

from contrastkit.estimators import (  # noqa: E402
    MINE,
    SeparableCritic,
    dv_bound,
    infonce_bound,
    js_bound,
    nwj_bound,
)

NAME = "mi_gaussian"
DIM = 20
LEVELS = (2.0, 6.0, 10.0, 20.0, 30.0, 40.0)
BATCHES = (64, 512)
ESTIMATORS = ("infonce", "nwj", "dv", "mine", "js")
FULL = dict(steps_per_level=80, tail=40, seeds=(0, 1, 2), workers=2, lr=1e-3, hidden=256, embed=32)
SMOKE = dict(steps_per_level=4, tail=2, seeds=(0,), workers=1, lr=1e-3, hidden=16, embed=8)


def rho_for(mi: float, dim: int = DIM) -> float:
    """Per-dimension correlation giving ``mi`` nats: MI = -d/2 log(1 - rho^2)."""
    return math.sqrt(-math.expm1(-2.0 * mi / dim))


def sample(rho: float, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, DIM, generator=gen)
    eps = torch.randn(batch, DIM, generator=gen)
    return x, rho * x + math.sqrt(1.0 - rho * rho) * eps


def run_job(job) -> np.ndarray:
    """One (estimator, batch size, seed) staircase: the estimate at every step (NaN where
    the scores or the estimate were not finite; no update is taken on such a step)."""
    estimator, batch, seed, cfg = job
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(10_000 + seed)
    critic = SeparableCritic(DIM, DIM, embed_dim=cfg["embed"], hidden_dim=cfg["hidden"])
    opt = torch.optim.Adam(critic.parameters(), lr=cfg["lr"])
    mine = MINE(momentum=0.9)
    objective = {
        "infonce": infonce_bound,
        "nwj": nwj_bound,
        "dv": dv_bound,
        "mine": mine,
        "js": js_bound,
    }[estimator]
    out = []
    for mi in LEVELS:
        rho = rho_for(mi)
        for _ in range(cfg["steps_per_level"]):
            x, y = sample(rho, batch, gen)
            try:
                estimate = objective(critic(x, y))
            except ValueError:  # non-finite scores (a diverged critic)
                out.append(float("nan"))
                continue
            if not torch.isfinite(estimate):
                out.append(float("nan"))
                continue
            opt.zero_grad(set_to_none=True)
            (-estimate).backward()
            opt.step()
            out.append(float(estimate.detach()))
    return np.array(out)


def level_stats(trace: np.ndarray, cfg: dict) -> list[tuple[float, float, int]]:
    """Per level: (mean, step-to-step std, number of non-finite steps) over its last
    ``tail`` steps."""
    n, tail = cfg["steps_per_level"], cfg["tail"]
    stats = []
    for k in range(len(LEVELS)):
        window = trace[(k + 1) * n - tail : (k + 1) * n]
        ok = window[np.isfinite(window)]
        bad = int(window.size - ok.size)
        if ok.size == 0:
            stats.append((float("nan"), float("nan"), bad))
        else:
            stats.append((float(ok.mean()), float(ok.std(ddof=1)) if ok.size > 1 else 0.0, bad))
    return stats


def main(argv=None) -> dict:
    args, cfg = setup(__doc__, argv, FULL, SMOKE)
    jobs = [(e, b, s, cfg) for b in BATCHES for e in ESTIMATORS for s in cfg["seeds"]]
    with Stopwatch() as clock:
        if cfg["workers"] > 1:
            with ProcessPoolExecutor(cfg["workers"]) as pool:
                done = list(pool.map(run_job, jobs))
        else:
            done = [run_job(job) for job in jobs]
    traces: dict[tuple[str, int], list[np.ndarray]] = {}
    for (e, b, _, _), trace in zip(jobs, done, strict=True):
        traces.setdefault((e, b), []).append(trace)  # in seed order
    figure = args.out.parent / f"results_{NAME}.png"
    plot(traces, cfg, figure)
    body = report(traces, cfg, clock.minutes, args.smoke, figure.name)
    write_section(NAME, body, args.out)
    return {"traces": traces, "stats": all_stats(traces, cfg)}


def all_stats(traces, cfg) -> dict:
    return {key: [level_stats(t, cfg) for t in runs] for key, runs in traces.items()}


def plot(traces, cfg: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = cfg["steps_per_level"]
    truth = np.repeat(LEVELS, n)
    fig, axes = plt.subplots(
        len(BATCHES), len(ESTIMATORS), figsize=(3.0 * len(ESTIMATORS), 2.8 * len(BATCHES))
    )
    for r, b in enumerate(BATCHES):
        for c, e in enumerate(ESTIMATORS):
            ax = axes[r][c]
            runs = np.stack(traces[(e, b)])
            ax.plot(runs[0], color="C0", alpha=0.35, lw=0.6, label="seed 0, per step")
            ax.plot(_smooth(np.nanmean(runs, axis=0)), color="C0", lw=1.2, label="seed mean")
            ax.plot(truth, color="k", lw=1.0, label="true MI")
            ax.axhline(math.log(b), color="k", ls="--", lw=0.8, label="log B")
            ax.set_ylim(-2, max(LEVELS) + 4)
            ax.set_title(f"{e}, B = {b}", fontsize=9)
            if c == 0:
                ax.set_ylabel("MI estimate (nats)")
            if r == len(BATCHES) - 1:
                ax.set_xlabel("training step")
    axes[0][0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _smooth(values: np.ndarray, span: int = 10) -> np.ndarray:
    """Exponential moving average (NaN-tolerant): the curve drawn over the raw estimates."""
    out, acc, alpha = np.empty_like(values), float("nan"), 2.0 / (span + 1)
    for i, v in enumerate(values):
        if np.isfinite(v):
            acc = v if not np.isfinite(acc) else (1 - alpha) * acc + alpha * v
        out[i] = acc
    return out


def _num(v: float) -> str:
    """Two decimals, or two significant digits in scientific notation for huge values (a
    diverged NWJ critic reaches -1e35)."""
    return f"{v:.2f}" if abs(v) < 1e4 else f"{v:.1e}"


def _cell(per_seed: list[tuple[float, float, int]]) -> str:
    means = [s[0] for s in per_seed]
    bad = sum(s[2] for s in per_seed)
    if not all(np.isfinite(means)):
        return f"diverged ({bad} non-finite steps)"
    sd = statistics.stdev(means) if len(means) > 1 else 0.0
    step_sd = float(np.mean([s[1] for s in per_seed]))
    text = f"{_num(statistics.fmean(means))} ± {_num(sd)} [{_num(step_sd)}]"
    return text + (f" ({bad} non-finite)" if bad else "")


def report(traces, cfg: dict, minutes: float, smoke: bool, figure: str) -> str:
    stats = all_stats(traces, cfg)
    tables = []
    for b in BATCHES:
        rows = []
        for k, mi in enumerate(LEVELS):
            rows.append(
                [f"{mi:g}", f"{min(mi, math.log(b)):.2f}"]
                + [_cell([run[k] for run in stats[(e, b)]]) for e in ESTIMATORS]
            )
        header = ["true MI", "min(MI, log B)"] + list(ESTIMATORS)
        tables.append(
            f"Batch B = {b} (log B = {math.log(b):.2f}):\n\n" + markdown_table(header, rows)
        )
    verdict = verdict_text(stats, cfg)
    n_steps = cfg["steps_per_level"] * len(LEVELS)
    return f"""### mi_gaussian: InfoNCE is low-variance but capped at log B; NWJ/DV/MINE are uncapped but noisy

Command: `{command(NAME, smoke)}`

Data: synthetic correlated Gaussians (Poole et al., ICML 2019, Sec. 5): x, y in R^{DIM},
y = rho x + sqrt(1 - rho^2) eps, true MI = -{DIM}/2 log(1 - rho^2), stepped through
{list(LEVELS)} nats, {cfg["steps_per_level"]} steps per level ({n_steps} steps), a fresh
batch every step.
Model and schedule: `SeparableCritic` (two MLPs {DIM}-{cfg["hidden"]}-{cfg["hidden"]}-{cfg["embed"]},
ReLU), Adam lr {cfg["lr"]}, one step per batch on minus the estimator's own objective
(`infonce_bound`, `nwj_bound`, `dv_bound`, `MINE(momentum=0.9)`, `js_bound` with the
paper variant: JS-trained critic, NWJ(f + 1) reported); nothing else tuned. Poole et al.
train 4,000 steps per level at lr 5e-4; this run is {cfg["steps_per_level"]} steps at
lr {cfg["lr"]} (CPU budget), so the critic lags the staircase more than in their Fig. 2.
Seeds: {list(cfg["seeds"])}. Each cell: the estimate averaged over the last {cfg["tail"]}
steps of the level, mean ± std over seeds, and in brackets the step-to-step std over those
steps (averaged over seeds): the estimator's variance.

{tables[0]}

{tables[1]}

![MI estimates against the true MI staircase]({figure})

Verdict: {verdict}

{provenance(minutes, smoke)}
"""


def verdict_text(stats, cfg) -> str:
    """Statements read off the numbers (each one computed, none assumed)."""

    def level_mean(e, b, k):
        return float(np.mean([run[k][0] for run in stats[(e, b)]]))

    def step_sd(e, b, k):
        return float(np.mean([run[k][1] for run in stats[(e, b)]]))

    top, mid = len(LEVELS) - 1, 1
    uncapped = ("nwj", "dv", "mine", "js")
    parts = []
    for b in BATCHES:
        cap = math.log(b)
        highest = max(level_mean("infonce", b, k) for k in range(len(LEVELS)))
        sds = ", ".join(f"{e} {_num(step_sd(e, b, mid))}" for e in uncapped)
        parts.append(
            f"B = {b}: InfoNCE's highest level mean is {highest:.2f} "
            f"{'<=' if highest <= cap + 1e-6 else '> (unexpected)'} log B = {cap:.2f} "
            f"(at {LEVELS[top]:g} nats: {level_mean('infonce', b, top):.2f}); at "
            f"{LEVELS[mid]:g} nats its step-to-step std is {step_sd('infonce', b, mid):.2f} "
            f"against {sds}."
        )
        above = [
            f"{e} {level_mean(e, b, top):.2f}"
            for e in uncapped
            if np.isfinite(level_mean(e, b, top)) and level_mean(e, b, top) > cap
        ]
        broken = [
            e
            for e in uncapped
            if any(
                not np.isfinite(level_mean(e, b, k)) or abs(level_mean(e, b, k)) > 3 * max(LEVELS)
                for k in range(len(LEVELS))
            )
        ]
        near = [e for e in uncapped if level_mean(e, b, top) >= 0.9 * LEVELS[top]]
        reach = f"within 10% of the true MI: {', '.join(near) or 'none'}"
        parts.append(
            f"At {LEVELS[top]:g} nats, estimators above log B: {', '.join(above) or 'none'}"
            f"; {reach}."
            + (
                f" Level means off the chart (|mean| > {3 * max(LEVELS):g} nats, one huge "
                f"e^f batch or a diverged critic): {', '.join(broken)}."
                if broken
                else ""
            )
        )
        k_all = range(len(LEVELS))
        mine_below = sum(level_mean("mine", b, k) < level_mean("dv", b, k) for k in k_all)
        js_sd = max(step_sd("js", b, k) for k in range(2, len(LEVELS)))
        parts.append(
            f"MINE's level mean is below DV's at {mine_below} of {len(LEVELS)} levels; JS's "
            f"step-to-step std above {LEVELS[1]:g} nats peaks at {_num(js_sd)}."
        )
    parts.append(
        "Expected from Poole et al.: InfoNCE low-variance but capped at log B; NWJ, DV and "
        "MINE uncapped with variance growing with the MI; JS (NWJ evaluated on a "
        "JS-trained critic) biased. Compare each statement above with that expectation."
    )
    return " ".join(parts)


if __name__ == "__main__":
    main()
