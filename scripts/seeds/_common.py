"""Shared by the seed-objective result scripts (``scripts/seeds/<name>.py``).

Each script trains its objective against the baseline its paper names, over at least
three seeds, and writes one section of ``docs/results.md`` between the markers
``<!-- seed:NAME -->`` and ``<!-- /seed:NAME -->``. ``scripts/make_results.py`` keeps
those sections when it rewrites the rest of the file, so each section is regenerated only
by its own command.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import os
import platform
import re
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results.md"
SEEDS_HEADING = "## Seed objectives against their papers' claims"

# Presets shared by several scripts. Torch and contrastkit are imported inside the helpers
# that need them, so ``scripts/make_results.py`` can import this module cheaply.
MLP_MODEL = dict(encoder="mlp", width=256, feature_dim=64, proj_hidden=128, proj_dim=64)
SMOKE_MLP_MODEL = dict(encoder="mlp", width=32, feature_dim=16, proj_hidden=32, proj_dim=16)
CNN_MODEL = dict(encoder="cnn", width=16, feature_dim=64, proj_hidden=128, proj_dim=64)
CNN_OPTIM = dict(lr=2e-3, warmup_epochs=1)
DATA_SOURCES = {
    "mnist": "`../shared/data/mnist-test`, the 10k MNIST test set",
    "digits": "scikit-learn's embedded 8x8 digits",
}


# ---------------------------------------------------------------------- command line


def parse_args(doc: str, argv=None, parser: argparse.ArgumentParser | None = None):
    """``--smoke`` and ``--out`` (default: ``docs/results.md``), parsed from ``argv``.

    ``doc`` is the script's docstring (its first line is the description). Pass a
    ``parser`` from :func:`make_parser` to add script-specific options first.
    """
    return (parser or make_parser(doc)).parse_args(argv)


def setup(doc: str, argv, full: dict, smoke: dict, parser: argparse.ArgumentParser | None = None):
    """:func:`parse_args`, pin torch to one thread, and pick the settings: ``(args, cfg)``
    with ``cfg`` = ``smoke`` under ``--smoke``, else ``full``."""
    import torch

    args = parse_args(doc, argv, parser)
    torch.set_num_threads(1)
    return args, smoke if args.smoke else full


def make_parser(doc: str) -> argparse.ArgumentParser:
    """The parser of :func:`parse_args`, for scripts that add options of their own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run (seconds), not results")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results markdown file")
    return parser


def command(name: str, smoke: bool = False) -> str:
    """The command line that regenerates section ``name`` (with ``--smoke`` if ``smoke``)."""
    return f".venv/bin/python scripts/seeds/{name}.py" + (" --smoke" if smoke else "")


class Stopwatch:
    """``with Stopwatch() as clock: ...``, then ``clock.minutes``: wall time of the block."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.minutes = (time.perf_counter() - self.start) / 60


# ---------------------------------------------------------------------- training and evaluation


def train_config(
    loss: str,
    seed: int,
    *,
    epochs: int,
    batch_size: int,
    model: dict,
    params: dict | None = None,
    data: dict | None = None,
    optim: dict | None = None,
    views: int | None = None,
    knn_k: int = 20,
):
    """The ``contrastkit.train.TrainConfig`` of one run of a seed script.

    ``epochs`` epochs evaluated once, after the last (kNN with ``knn_k``, no linear probe),
    no progress bar, one thread. ``data``, ``optim`` and ``views`` keep the library
    defaults when None; ``params`` are the loss's keyword arguments (copied).
    """
    from contrastkit.train.config import TrainConfig

    d = dict(
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        eval_every=epochs,
        progress=False,
        threads=1,
        model=model,
        loss=dict(name=loss, params=dict(params or {})),
        eval=dict(linear_probe=False, knn_k=knn_k),
    )
    d.update(
        {k: v for k, v in (("data", data), ("optim", optim), ("views", views)) if v is not None}
    )
    return TrainConfig.from_dict(d)


def mnist_subset(subset: int) -> dict:
    """Data config: a stratified ``subset`` of the MNIST test set, split 75/25 (seed 0)."""
    return dict(name="mnist", subset=subset, test_fraction=0.25)


def cnn_config(loss: str, params: dict, seed: int, *, subset: int, epochs: int):
    """:func:`train_config` of the small-CNN MNIST runs: :func:`mnist_subset`,
    ``CNN_MODEL``, batch 256, AdamW lr 2e-3 with 1 warm-up epoch (``CNN_OPTIM``), kNN k=20."""
    return train_config(
        loss,
        seed,
        params=params,
        epochs=epochs,
        batch_size=256,
        data=mnist_subset(subset),
        model=CNN_MODEL,
        optim=CNN_OPTIM,
    )


def to_images(x):
    """uint8 images (numpy) as a float tensor in [0, 1], as ``load_dataset`` returns them."""
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)


def to_labels(y):
    """Integer labels (numpy) as an int64 tensor."""
    import numpy as np
    import torch

    return torch.from_numpy(y.astype(np.int64))


def embed_splits(model, data, space: str = "features"):
    """``(train, test)`` embeddings (``"features"`` or ``"projections"``) of ``data``."""
    from contrastkit.train.loop import embed

    return embed(model, data.train_x, space), embed(model, data.test_x, space)


def knn(train_z, train_y, test_z, test_y, k: int = 20) -> float:
    """Weighted kNN accuracy (cosine, temperature 0.1): ``train_z`` is the memory."""
    import torch

    from contrastkit.evaluation import knn_accuracy

    with torch.no_grad():
        return knn_accuracy(train_z, train_y, test_z, test_y, k=k)


# ---------------------------------------------------------------------- tables and verdicts


def mean_std(values, scale: float = 1.0, digits: int = 2) -> str:
    """``"m ± s"`` over seeds (sample standard deviation; 0 for one value)."""
    values = [float(v) * scale for v in values]
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def mean_std_of(runs, key, scale: float = 1.0, digits: int = 2) -> str:
    """:func:`mean_std` of ``run[key]`` over the per-seed ``runs`` (dicts)."""
    return mean_std([r[key] for r in runs], scale, digits)


def gap(runs_a, runs_b, key, scale: float = 1.0) -> tuple[float, float]:
    """Mean of ``scale * run[key]`` over ``runs_a`` minus that over ``runs_b``, and the
    larger of the two sample standard deviations over seeds (the noise to compare with)."""
    a = [scale * r[key] for r in runs_a]
    b = [scale * r[key] for r in runs_b]
    return statistics.fmean(a) - statistics.fmean(b), max(statistics.stdev(a), statistics.stdev(b))


def spread_word(d: float, sd: float) -> str:
    """``"higher"`` / ``"lower"`` for a difference ``d`` beyond ``sd``, else "within ..."."""
    if abs(d) <= sd:
        return "within the seed-to-seed spread"
    return "higher" if d > 0 else "lower"


def largest_range(groups, key, scale: float = 1.0) -> float:
    """The largest max - min of ``scale * run[key]`` over seeds, among ``groups`` of runs."""
    return max(max(scale * r[key] for r in g) - min(scale * r[key] for r in g) for g in groups)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(minutes: float, smoke: bool = False) -> str:
    """One line: date, machine and run time (and a loud marker for smoke runs)."""
    import torch

    text = (
        f"Run on {datetime.date.today().isoformat()}, {platform.machine()} with "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__.split('+')[0]}, "
        f"{minutes:.1f} minutes."
    )
    return text + (" **Smoke run: not real results.**" if smoke else "")


def section_pattern(name: str) -> re.Pattern:
    return re.compile(
        rf"<!-- seed:{re.escape(name)} -->.*?<!-- /seed:{re.escape(name)} -->\n?", re.S
    )


def write_section(name: str, body: str, path: Path | str = RESULTS) -> Path:
    """Replace (or append under the seeds heading) the section ``name`` of ``path``.

    ``body`` is markdown starting with a ``### `` heading. A lock file serialises
    writers, so several result scripts may run at once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    block = f"<!-- seed:{name} -->\n{body.strip()}\n<!-- /seed:{name} -->\n"
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text() if path.exists() else "# Results\n"
        pattern = section_pattern(name)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text)
        else:
            if SEEDS_HEADING not in text:
                text = text.rstrip("\n") + f"\n\n{SEEDS_HEADING}\n"
            text = text.rstrip("\n") + "\n\n" + block
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def seed_sections(text: str) -> str:
    """Every seed section of a results file, in order (for make_results.py to keep)."""
    blocks = re.findall(r"<!-- seed:[^ ]+ -->.*?<!-- /seed:[^ ]+ -->\n?", text, re.S)
    return "\n".join(b.rstrip("\n") + "\n" for b in blocks)
