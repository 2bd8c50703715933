"""The ``contrastkit`` command line: ``list``, ``train``, ``eval``, ``compare``, ``generate``
(``cli/generate.py``) and ``bench``.

This is the only module that parses argv and YAML. Configuration files hold the keys of
``TrainConfig`` (plus a ``compare:`` section for ``compare``); ``--set key=value`` sets a
dotted key with a YAML-parsed value, and unknown keys are rejected with the valid ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import textwrap
from pathlib import Path

import typer

from contrastkit.cli.generate import generate_command

app = typer.Typer(
    help="Contrastive objectives on equal terms: list, train, evaluate and compare them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FloatingPointError)

ConfigOption = typer.Option(None, "--config", "-c", help="YAML file of configuration keys.")
SetOption = typer.Option(
    None, "--set", "-s", help="Override a dotted key, e.g. --set optim.lr=0.01 (repeatable)."
)


def main() -> None:
    """Entry point of the ``contrastkit`` script and ``python -m contrastkit``."""
    app()


# ---------------------------------------------------------------------------- list


@app.command("list")
def list_command() -> None:
    """List the registered objectives and the trainable methods, with their papers."""
    from rich.table import Table

    from contrastkit import list_losses, loss_info

    table = Table(title="contrastkit objectives")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("inputs", no_wrap=True)
    table.add_column("summary")
    table.add_column("paper")
    for name in list_losses():
        info = loss_info(name)
        table.add_row(name, getattr(info.cls, "inputs", "views"), info.summary, info.paper)
    _console().print(table)
    from contrastkit.train.methods import METHODS

    methods = Table(title="contrastkit methods (own their models; `train --objective NAME`)")
    methods.add_column("name", no_wrap=True, style="bold")
    methods.add_column("summary")
    methods.add_column("paper")
    for info in METHODS.values():
        methods.add_row(info.name, info.summary, info.paper)
    _console().print(methods)
    from contrastkit.text import TEXT_METHODS

    text = Table(title="contrastkit text methods (`train --domain text --objective NAME`)")
    for column in ("name", "inputs", "summary", "paper"):
        text.add_column(
            column, no_wrap=column == "name", style="bold" if column == "name" else None
        )
    for name in sorted(TEXT_METHODS):
        cls = TEXT_METHODS[name]
        text.add_row(name, cls.inputs, cls.summary, cls.paper)
    _console().print(text)


# ---------------------------------------------------------------------------- train


@app.command("train")
def train_command(
    config: Path | None = ConfigOption,
    sets: list[str] | None = SetOption,
    loss: str | None = typer.Option(
        None, "--objective", "--loss", help="Objective or method name (contrastkit list)."
    ),
    epochs: int | None = typer.Option(None, "--epochs"),
    views: int | None = typer.Option(
        None, "--views", help="Augmented views per sample (multi-view objectives) [default: 2]."
    ),
    seed: int | None = typer.Option(None, "--seed"),
    out: str | None = typer.Option(None, "--out", help="Run folder [default: runs/LOSS-seedS]."),
    resume: Path | None = typer.Option(None, "--resume", help="Checkpoint to continue from."),
    grad_cache_chunk: int | None = typer.Option(
        None,
        "--grad-cache-chunk",
        help="Run the encoder N samples at a time with cached gradients (GradCache): "
        "the loss still sees the whole batch, activation memory is that of N samples.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    domain: str = typer.Option(
        "image",
        "--domain",
        help="image (the loop on image data) or text (contrastkit.text: sentence encoders; "
        "--objective is a text method, --set keys are TextTrainConfig's).",
    ),
) -> None:
    """Train one objective; writes OUT/metrics.jsonl and OUT/checkpoint.pt every epoch.

    With --resume and no --config, the checkpoint's own configuration is used.
    """
    if domain == "text":
        flags = {"method": loss, "epochs": epochs, "seed": seed, "out": out}
        flags["resume"] = None if resume is None else str(resume)
        refused = {"--views": views, "--grad-cache-chunk": grad_cache_chunk}
        _train_text(config, sets, flags, refused, progress)
        return
    if domain != "image":
        with _user_errors():
            raise ValueError(
                f"--domain is {domain!r}; it must be 'image' or 'text'. Fix: pick one of them."
            )
    with _user_errors():
        from contrastkit.train import TrainConfig, apply_overrides, config_from_checkpoint, train

        if config is not None:
            raw = _read_yaml(config)
        elif resume is not None:
            raw = config_from_checkpoint(resume).to_dict()
        else:
            raw = {}
        if out is None and resume is not None:
            out = str(resume.parent)  # a resumed run continues in its own folder
        flags = {"loss.name": loss, "epochs": epochs, "views": views, "seed": seed, "out": out}
        flags["grad_cache_chunk"] = grad_cache_chunk
        flags["resume"] = None if resume is None else str(resume)
        overrides = {**_parse_sets(sets), **{k: v for k, v in flags.items() if v is not None}}
        overrides["progress"] = progress
        cfg = TrainConfig.from_dict(apply_overrides(raw, overrides))
        if cfg.out is None:
            cfg.out = str(Path("runs") / f"{cfg.loss.name}-seed{cfg.seed}")
        result = train(cfg)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    console = _console()
    console.print(_metrics_table(f"{cfg.loss.name}, seed {cfg.seed}", result.metrics))
    console.print(f"checkpoint: {result.checkpoint}\nmetrics: {Path(cfg.out) / 'metrics.jsonl'}")


def _train_text(config, sets, flags: dict, refused: dict, progress: bool) -> None:
    """``train --domain text``: ``contrastkit.text.train_text_from_dict`` on the YAML keys,
    ``--set`` overrides and flags (``--objective`` names the text method)."""
    with _user_errors():
        given = [name for name, value in refused.items() if value is not None]
        if given:
            raise ValueError(
                f"train --domain text: {', '.join(given)} apply to image training only. Fix: "
                f"drop them (text methods draw their own views)."
            )
        from contrastkit.text.train import train_text_from_dict

        raw = _read_yaml(config) if config is not None else {}
        raw.update(_parse_sets(sets))
        raw.update({k: v for k, v in flags.items() if v is not None})
        raw["progress"] = progress
        result = train_text_from_dict(raw)
    cfg = result.config
    _console().print(_metrics_table(f"{cfg.method} (text), seed {cfg.seed}", result.metrics))
    if result.checkpoint is not None:
        _console().print(f"checkpoint: {result.checkpoint}")


# ---------------------------------------------------------------------------- eval


@app.command("eval")
def eval_command(
    checkpoint: Path | None = typer.Argument(
        None, help="A checkpoint.pt written by `train` (image or --domain text)."
    ),
    data: str | None = typer.Option(
        None, "--data", help="digits, mnist or mnist5k (or NAME-textures)."
    ),
    sets: list[str] | None = SetOption,
    linear: bool = typer.Option(True, "--linear/--no-linear", help="Fit a linear probe."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the metrics here."),
    task: str | None = typer.Option(
        None,
        "--task",
        help="Text tasks: stsb (Spearman on STS-B) or retrieval (nDCG@10, Recall@100, "
        "MRR@10). Without --task: kNN, linear probe and diagnostics of an image checkpoint.",
    ),
    model: str | None = typer.Option(
        None, "--model", help="Text tasks without a checkpoint: a model folder [all-MiniLM-L6-v2]."
    ),
    split: str = typer.Option("test", "--split", help="STS-B split of the text tasks."),
    corpus: str = typer.Option(
        "stsb",
        "--corpus",
        help="retrieval: stsb (pairs scoring >= 4 against all sentences of --split) or a "
        "document file (one per line) for held-out crop retrieval.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the crop-retrieval queries."),
    encoding: str = typer.Option("utf-8", "--encoding", help="Encoding of the --corpus file."),
) -> None:
    """Evaluate a checkpoint: kNN and linear-probe accuracy, and geometry diagnostics; or,
    with --task, a text encoder on STS-B or a retrieval task.

    --set takes keys of the checkpoint's configuration (e.g. data.root, eval.knn_k).
    """
    if task is not None:
        title, metrics = _eval_text(task, checkpoint, model, split, (corpus, seed, encoding))
        _console().print(_metrics_table(title, metrics))
        if json_path is not None:
            payload = {"checkpoint": None if checkpoint is None else str(checkpoint)}
            payload.update(task=task, model=model, metrics=metrics)
            _write_text(json_path, json.dumps(payload, indent=2) + "\n")
        return
    with _user_errors():
        if checkpoint is None:
            raise ValueError(
                "eval: no checkpoint given. Fix: pass a checkpoint.pt, or --task stsb|retrieval "
                "to evaluate a text encoder."
            )
        from contrastkit.train import TrainConfig, apply_overrides, evaluate, load_dataset
        from contrastkit.train.augment import build_augment
        from contrastkit.train.loop import load_model

        model_, saved = load_model(checkpoint)
        overrides = _parse_sets(sets)
        if data is not None:
            overrides["data.name"] = data
        cfg = TrainConfig.from_dict(apply_overrides(saved.to_dict(), overrides))
        dataset = load_dataset(cfg.data)
        augment = build_augment(cfg.augment, dataset.image_shape[1:])
        metrics = evaluate(model_, dataset, cfg.eval, augment=augment, seed=cfg.seed, linear=linear)
    _console().print(_metrics_table(f"{checkpoint} on {cfg.data.name}", metrics))
    if json_path is not None:
        payload = {"checkpoint": str(checkpoint), "data": cfg.data.name, "metrics": metrics}
        _write_text(json_path, json.dumps(payload, indent=2) + "\n")


def _eval_text(task, checkpoint, model, split, crop) -> tuple[str, dict]:
    """``eval --task stsb|retrieval``: the encoder of a text checkpoint, or a model folder."""
    with _user_errors():
        if task not in ("stsb", "retrieval"):
            raise ValueError(
                f"--task is {task!r}; text tasks are 'stsb' and 'retrieval'. Fix: pick one, "
                f"or drop --task to evaluate an image checkpoint."
            )
        from contrastkit.text import TextEncoder, encoder_from_checkpoint

        if checkpoint is not None and model is not None:
            raise ValueError("eval: pass a checkpoint or --model, not both. Fix: drop one.")
        if checkpoint is not None:
            encoder, name = encoder_from_checkpoint(checkpoint), str(checkpoint)
        else:
            encoder, name = TextEncoder.from_pretrained(model), model or "all-MiniLM-L6-v2"
        if task == "stsb":
            from contrastkit.evaluation.sts import evaluate_sts
            from contrastkit.text.data import stsb

            return f"{name}: STS-B {split}", evaluate_sts(encoder, stsb(split))
        from contrastkit.text.tasks import (
            crop_retrieval_task,
            evaluate_retrieval,
            stsb_retrieval_task,
        )

        corpus, seed, encoding = crop
        if corpus == "stsb":
            built = stsb_retrieval_task(split)
        else:
            built = crop_retrieval_task(corpus, seed=seed, encoding=encoding)
        return f"{name}: {built.name}", evaluate_retrieval(encoder, built)


# ---------------------------------------------------------------------------- compare


@app.command("compare")
def compare_command(
    config: Path | None = ConfigOption,
    sets: list[str] | None = SetOption,
    losses: str | None = typer.Option(None, "--losses", help="Comma-separated names, or all."),
    seeds: str | None = typer.Option(None, "--seeds", help="Comma-separated, e.g. 0,1,2."),
    epochs: int | None = typer.Option(None, "--epochs"),
    markdown: Path | None = typer.Option(None, "--markdown", help="Write the table here."),
    png: Path | None = typer.Option(None, "--png", help="Write the bar chart here."),
    json_path: Path | None = typer.Option(None, "--json", help="Write every run here."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train several objectives x seeds on one data set and encoder; print a leaderboard."""
    with _user_errors():
        from contrastkit.train import CompareConfig, apply_overrides, resolve_losses

        raw = _read_yaml(config) if config is not None else {}
        flags = {
            "compare.losses": None if losses is None else _split(losses, str),
            "compare.seeds": None if seeds is None else _split(seeds, int),
            "epochs": epochs,
            "compare.markdown": None if markdown is None else str(markdown),
            "compare.png": None if png is None else str(png),
            "compare.json": None if json_path is None else str(json_path),
        }
        overrides = {**_parse_sets(sets), **{k: v for k, v in flags.items() if v is not None}}
        cfg = CompareConfig.from_dict(apply_overrides(raw, overrides))
        names, skipped = resolve_losses(cfg.losses)
        for name, reason in skipped.items():
            _console(stderr=True).print(f"[yellow]skipping {name!r}: {reason}[/yellow]")
        cfg.losses = names
        records = _run_compare(cfg, progress)
    write_compare_outputs(cfg, records, skipped, _console())


def _run_compare(cfg, progress: bool) -> list[dict]:
    from contrastkit.train import compare

    total = len(cfg.losses) * len(cfg.seeds)
    if not progress:
        return compare(cfg)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, TimeElapsedColumn(), console=_console(stderr=True)) as bar:
        task = bar.add_task("compare", total=total)

        def on_run(record):
            result = f"kNN {record['knn_acc']:.3f}" if "knn_acc" in record else "failed"
            done = f"{record['objective']} seed {record['seed']}: {result}"
            bar.update(task, advance=1, description=done)

        return compare(cfg, on_run=on_run)


def write_compare_outputs(cfg, records: list[dict], skipped: dict, console) -> list[dict]:
    """Print the leaderboard and write the markdown / PNG / JSON that ``cfg`` asks for."""
    from contrastkit.train import aggregate

    rows = sorted(aggregate(records), key=lambda r: -r.get("knn_acc_mean", 0.0))
    console.print(leaderboard_table(rows, describe_setup(cfg)))
    if cfg.markdown:
        _write_text(cfg.markdown, leaderboard_markdown(rows, describe_setup(cfg)))
        console.print(f"markdown: {cfg.markdown}")
    if cfg.png:
        plot_leaderboard(rows, cfg.png, describe_setup(cfg))
        console.print(f"png: {cfg.png}")
    if cfg.json:
        payload = {
            "config": {**cfg.train.to_dict(), "compare": _compare_section(cfg)},
            "skipped": skipped,
            "records": records,
            "leaderboard": rows,
        }
        _write_text(cfg.json, json.dumps(payload, indent=2) + "\n")
        console.print(f"json: {cfg.json}")
    return rows


# ---------------------------------------------------------------------------- generate

app.command("generate")(generate_command)


# ---------------------------------------------------------------------------- bench


@app.command(
    "bench",
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "help_option_names": [],  # --help goes to the benchmark's own parser
    },
)
def bench_command(ctx: typer.Context) -> None:
    """Time the losses against peers and the matmul floor; writes docs/benchmarks.md.

    Needs a source checkout (benchmarks/ is not installed). Options: contrastkit bench
    --help; --quick is a smoke test.
    """
    module = _import_benchmarks()
    raise typer.Exit(code=module.main(list(ctx.args), prog="contrastkit bench"))


def _import_benchmarks():
    """``benchmarks.losses`` from the checkout: the working directory or its parents, or the
    checkout an editable install points at."""
    import importlib

    import contrastkit

    here = Path.cwd().resolve()
    candidates = [here, *here.parents, Path(contrastkit.__file__).resolve().parents[2]]
    for root in candidates:
        if (root / "benchmarks" / "losses.py").is_file():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            module = importlib.import_module("benchmarks.losses")
            if Path(module.__file__).resolve().parent.parent == root:
                return module
            break  # another package named `benchmarks` shadows the checkout's
    typer.echo(
        "error: `contrastkit bench` needs a source checkout of contrastkit: the `benchmarks/` "
        "folder is not installed with the package and none was found in the working "
        "directory, its parents or next to the installed package. Fix: clone the repository "
        "and run `contrastkit bench` (or `python -m benchmarks.losses`) in it.",
        err=True,
    )
    raise typer.Exit(code=2)


# ---------------------------------------------------------------------------- reports

_COLUMNS = (  # (metric, header, scale, digits)
    ("knn_acc", "kNN acc (%)", 100.0, 1),
    ("linear_acc", "linear acc (%)", 100.0, 1),
    ("alignment", "alignment", 1.0, 3),
    ("uniformity", "uniformity", 1.0, 3),
    ("effective_rank", "eff. rank", 1.0, 1),
)


def describe_setup(cfg) -> str:
    t = cfg.train
    return (
        f"data {t.data.name} (train/test split {1 - t.data.test_fraction:.0%}/"
        f"{t.data.test_fraction:.0%}, split seed {t.data.split_seed}"
        f"{'' if t.data.subset is None else f', subset {t.data.subset}'}), encoder "
        f"{t.model.encoder} (width {t.model.width}, feature dim {t.model.feature_dim}), "
        f"{t.epochs} epochs, batch {t.batch_size}, lr {t.optim.lr}, seeds "
        f"{', '.join(map(str, cfg.seeds))}"
    )


def _cell(row: dict, metric: str, scale: float, digits: int) -> str:
    if f"{metric}_mean" not in row:
        return "n/a"
    mean, std = row[f"{metric}_mean"] * scale, row[f"{metric}_std"] * scale
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _runs(row: dict) -> str:
    return str(row["runs"]) + (f" ({row['failed']} diverged)" if row.get("failed") else "")


def leaderboard_table(rows: list[dict], caption: str = ""):
    from rich.table import Table

    table = Table(title="leaderboard (mean ± std over seeds)", caption=caption)
    table.add_column("objective", no_wrap=True, style="bold")
    for _, header, _, _ in _COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("runs", justify="right")
    for row in rows:
        cells = [_cell(row, m, s, d) for m, _, s, d in _COLUMNS]
        table.add_row(row["objective"], *cells, _runs(row))
    return table


def leaderboard_markdown(rows: list[dict], caption: str = "") -> str:
    """A markdown table of the leaderboard (mean ± std over seeds), best kNN first."""
    header = ["objective", *(h for _, h, _, _ in _COLUMNS), "runs", "time / run (s)"]
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- | " + " | ".join("---:" for _ in header[1:]) + " |",
    ]
    for row in rows:
        cells = [_cell(row, m, s, d) for m, _, s, d in _COLUMNS]
        seconds = f"{row.get('time_mean', float('nan')):.1f}"
        lines.append(f"| {row['objective']} | " + " | ".join([*cells, _runs(row), seconds]) + " |")
    text = "\n".join(lines) + "\n"
    return (f"{caption}\n\n" if caption else "") + text


def plot_leaderboard(rows: list[dict], path, title: str = "") -> None:
    """Bar charts with seed std error bars: accuracies, alignment and uniformity."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r["objective"] for r in rows]
    x = np.arange(len(names))

    def series(metric, scale=1.0):
        mean = [r.get(f"{metric}_mean", np.nan) * scale for r in rows]
        std = [r.get(f"{metric}_std", 0.0) * scale for r in rows]
        return mean, std

    # Stacked panels sharing the objectives axis: stays readable with many objectives.
    width = max(7.0, 0.5 * len(names) + 2.0)
    fig, axes = plt.subplots(3, 1, figsize=(width, 9.0), sharex=True)
    ax = axes[0]
    for offset, (metric, label) in zip(
        (-0.2, 0.2), (("knn_acc", "kNN"), ("linear_acc", "linear probe")), strict=True
    ):
        mean, std = series(metric, 100.0)
        ax.bar(x + offset, mean, 0.4, yerr=std, capsize=2, label=label)
    finite = [v for r in rows for v in (r.get("knn_acc_mean"), r.get("linear_acc_mean")) if v]
    ax.set_ylim(max(0.0, 100 * min(finite, default=0.0) - 5), 100)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, fontsize=8, frameon=False)
    for ax, metric, label in (
        (axes[1], "alignment", "alignment\n(lower: positives closer)"),
        (axes[2], "uniformity", "uniformity\n(lower: more uniform)"),
    ):
        mean, std = series(metric)
        ax.bar(x, mean, 0.6, yerr=std, capsize=2, color="tab:gray")
        ax.set_ylabel(label)
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(x, names, rotation=45, ha="right")
    if title:
        fig.suptitle(textwrap.fill(title, 110), fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _metrics_table(title: str, metrics: dict):
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}")
    return table


# ---------------------------------------------------------------------------- parsing


def _read_yaml(path: Path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: file {path} does not exist. Fix: pass a YAML file.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"--config: {path} is not valid YAML ({e}). Fix: correct it.") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"--config: {path} holds a {type(data).__name__}, not a mapping of keys. "
            f"Fix: write `key: value` lines."
        )
    return data


def _parse_sets(sets: list[str] | None) -> dict:
    """``["optim.lr=0.01", "data.subset=null"]`` -> ``{"optim.lr": 0.01, "data.subset": None}``."""
    import yaml

    out = {}
    for item in sets or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(
                f"--set: {item!r} is not of the form key=value. Fix: write e.g. "
                f"--set optim.lr=0.01."
            )
        try:
            out[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"--set: the value of {key!r} is not valid YAML ({e}).") from e
    return out


def _split(text: str, kind):
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if kind is str and parts == ["all"]:
        return "all"
    try:
        return [kind(p) for p in parts]
    except ValueError as e:
        raise ValueError(f"{text!r} is not a comma-separated list of {kind.__name__}.") from e


def _compare_section(cfg) -> dict:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "train"}


def _write_text(path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal:  # logs and pipes: do not squeeze tables into 80 columns
        console = Console(stderr=stderr, width=140)
    return console


@contextlib.contextmanager
def _user_errors():
    """Turn configuration and data errors into a one-paragraph message and exit code 2."""
    try:
        yield
    except _USER_ERRORS as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from None
