"""Contriever-style unsupervised training of all-MiniLM-L6-v2 on the Lee background
corpus: crop-retrieval Recall@1 / MRR@10 / nDCG@10 before and after, with a key queue,
without one (momentum keys, in-batch negatives) and in-batch with a shared encoder.

Data: the Lee corpora of the shared data (``gensim-eval/``; Lee, Pincombe & Welsh 2005),
one document per line, read as latin-1 (``lee.cor`` holds a byte that is not UTF-8; the
SOURCE.md calls the files latin-1 safe).

Training (Izacard et al., TMLR 2022; ``contrastkit.text`` method ``contriever``): the 300
documents of ``lee_background.cor``, from the untouched MiniLM each time, with
``train_text``: two independent random crops per document (10%-50% of a random window of
``chunk_length`` tokens), token deletion p 0.1, InfoNCE at temperature 0.05, AdamW lr
5e-5 (the released script's), linear decay, batch 16, a few epochs. MiniLM's folder
L2-normalises its output, so the scores are cosines (the released Contriever uses
unnormalised dot products of an unnormalised encoder). Three variants:

* ``queue``: momentum key encoder (m 0.999) and a FIFO queue of 128 past keys as the
  negatives (MoCo; 128 = 8 batches, well below the 300 documents, so the queue seldom
  holds a stale key of the document being trained on: only across an epoch boundary);
* ``no queue``: momentum key encoder, ``queue_size=0``: the batch's other keys are the
  negatives;
* ``in-batch``: ``momentum=None``: one shared encoder for queries and keys, both with
  gradient, in-batch negatives (the released ``inbatch.py``).

Evaluation (``crop_retrieval_task`` + ``evaluate_retrieval``, cosine): each document's
first 100 words; one random span of 20 words per document is the query, the corpus holds
every document with its query span removed (so no verbatim match), relevance 1 for the
source document. Two tasks:

* ``lee.cor`` (50 documents): **held out**: never trained on;
* ``lee_background.cor`` (300 documents), crop seed 12345: the training documents with
  evaluation crops drawn by a different generator than the training crops (the method's
  own torch generator): held-out *crops*, not held-out documents.

    .venv/bin/python scripts/seeds/contriever_crops.py [--smoke] [--out PATH] [--threads N]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parent))  # after site-packages: never shadow
from _common import (  # noqa: E402
    Stopwatch,
    command,
    make_parser,
    markdown_table,
    mean_std,
    provenance,
    setup,
    write_section,
)

from contrastkit.text import (  # noqa: E402
    TextEncoder,
    TextTrainConfig,
    crop_retrieval_task,
    evaluate_retrieval,
    train_text,
)
from contrastkit.train.data import data_root  # noqa: E402

NAME = "contriever_crops"
VARIANTS = {
    "queue": ("MoCo, queue 128", dict(momentum=0.999, queue_size=128)),
    "no_queue": ("MoCo, no queue (queue_size=0)", dict(momentum=0.999, queue_size=0)),
    "in_batch": ("in-batch, shared encoder (momentum=None)", dict(momentum=None, queue_size=0)),
}
METRICS = (("recall@1", "Recall@1"), ("mrr@10", "MRR@10"), ("ndcg@10", "nDCG@10"))
TASK = dict(query_len=20, min_rest=20, max_words=100)
BACKGROUND_CROP_SEED = 12345
FULL = dict(
    epochs=2,
    batch_size=16,
    max_length=128,
    chunk_length=64,
    seeds=(0, 1, 2),
    background_docs=None,  # all 300
)
SMOKE = dict(
    epochs=1,
    batch_size=8,
    max_length=64,
    chunk_length=32,
    seeds=(0,),
    background_docs=48,
    max_steps=2,
)


def read_documents(path: Path) -> list[str]:
    """One document per line, latin-1 (every byte decodes), blank lines skipped."""
    with open(path, encoding="latin-1") as f:
        return [line.strip() for line in f if line.strip()]


def corpora(cfg: dict) -> tuple[list[str], list[str]]:
    root = data_root() / "gensim-eval"
    background = read_documents(root / "lee_background.cor")
    if cfg["background_docs"] is not None:
        background = background[: cfg["background_docs"]]
    return background, read_documents(root / "lee.cor")


def tasks(background: list[str], held_out: list[str]) -> dict:
    return {
        "lee": crop_retrieval_task(held_out, seed=0, name="lee (held out)", **TASK),
        "background": crop_retrieval_task(
            background, seed=BACKGROUND_CROP_SEED, name="lee_background", **TASK
        ),
    }


def evaluate(encoder, task_set: dict) -> dict:
    out = {}
    for name, task in task_set.items():
        m = evaluate_retrieval(encoder, task, ks=(1, 10), similarity="cosine")
        out.update({f"{name}/{k}": m[k] for k, _ in METRICS})
    return out


def train_one(variant: str, seed: int, cfg: dict, documents: list[str]):
    tc = TextTrainConfig(
        method="contriever",
        method_params=dict(VARIANTS[variant][1], chunk_length=cfg["chunk_length"], seed=seed),
        data_kind="documents",
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        max_length=cfg["max_length"],
        seed=seed,
        max_steps=cfg.get("max_steps"),
    )
    start = time.perf_counter()
    result = train_text(tc, examples=documents)
    return result, time.perf_counter() - start


def main(argv=None) -> dict:
    parser = make_parser(__doc__)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    args, cfg = setup(__doc__, argv, FULL, SMOKE, parser)
    torch.set_num_threads(max(1, args.threads))
    background, held_out = corpora(cfg)
    task_set = tasks(background, held_out)
    results: dict = {"before": None, **{v: [] for v in VARIANTS}}
    with Stopwatch() as clock:
        base = TextEncoder.from_pretrained(max_length=cfg["max_length"])
        results["before"] = evaluate(base, task_set)
        del base
        for seed in cfg["seeds"]:
            for variant in VARIANTS:
                res, seconds = train_one(variant, seed, cfg, background)
                row = evaluate(res.encoder, task_set)
                row.update(seconds=seconds, steps=res.history[-1]["step"])
                row["loss"] = res.history[-1]["loss"]
                results[variant].append(row)
    body = report(results, cfg, clock.minutes, args, task_set, len(background))
    write_section(NAME, body, args.out)
    return results


# ---------------------------------------------------------------------- report


def _delta(runs, before, key) -> tuple[float, float]:
    vals = [100 * (r[key] - before[key]) for r in runs]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _word(d, sd, n) -> str:
    if n < 2:
        return "one seed"
    if abs(d) <= sd:
        return "within the seed spread"
    return "up" if d > 0 else "down"


def verdict(results) -> str:
    before = results["before"]
    parts = []
    for task, label in (("lee", "held-out lee.cor"), ("background", "lee_background crops")):
        key = f"{task}/recall@1"
        cells = []
        for v, (name, _) in VARIANTS.items():
            d, sd = _delta(results[v], before, key)
            cells.append(f"{name} {d:+.1f} ± {sd:.1f} ({_word(d, sd, len(results[v]))})")
        parts.append(f"{label} (before {100 * before[key]:.1f}): " + "; ".join(cells))
    q = statistics.fmean(r["lee/recall@1"] for r in results["queue"])
    nq = statistics.fmean(r["lee/recall@1"] for r in results["no_queue"])
    return (
        "**Verdict.** Change in crop-retrieval Recall@1 x 100 after training: "
        + ". ".join(parts)
        + f". With against without the queue on the held-out task: {100 * (q - nq):+.1f} "
        "points. The untouched MiniLM is already a strong sentence/paragraph retriever "
        "(trained on 1B pairs), the corpus is 300 short news documents and the runs are a "
        "few dozen steps at lr 5e-5 with linear decay, so changes are small; the paper's "
        "claims (Contriever beats BM25 on most BEIR sets; MoCo with a large queue beats "
        "in-batch negatives at equal batch) concern training from BERT on Wikipedia + "
        "CCNet for 500k steps with a 131k-key queue and are not tested here."
    )


def report(results, cfg, minutes, args, task_set, n_docs) -> str:
    before = results["before"]
    header = ["model"]
    for task in ("lee", "background"):
        short = "lee.cor (held out)" if task == "lee" else "lee_background crops"
        header += [f"{short} {label} x 100" for _, label in METRICS]
    header += ["training time (s)", "final-epoch loss"]
    row = ["all-MiniLM-L6-v2, untouched"]
    row += [f"{100 * before[f'{t}/{k}']:.1f}" for t in ("lee", "background") for k, _ in METRICS]
    rows = [row + ["-", "-"]]
    for v, (name, _) in VARIANTS.items():
        runs = results[v]
        row = [name]
        row += [
            mean_std([r[f"{t}/{k}"] for r in runs], 100.0, 1)
            for t in ("lee", "background")
            for k, _ in METRICS
        ]
        row += [mean_std([r["seconds"] for r in runs], 1.0, 0)]
        row += [mean_std([r["loss"] for r in runs], 1.0, 3)]
        rows.append(row)
    steps = results["queue"][0]["steps"]
    lee, bg = task_set["lee"], task_set["background"]
    seeds = ", ".join(map(str, cfg["seeds"]))
    return "\n\n".join(
        [
            "### contriever_crops: Contriever-style training of all-MiniLM-L6-v2 on the Lee "
            "background corpus, crop retrieval before and after, with and without the queue "
            "(Izacard et al., TMLR 2022)",
            f"Command: `{command(NAME, args.smoke)}` (with `OMP_NUM_THREADS={args.threads}`). "
            f"{provenance(minutes, args.smoke)}",
            f"Training: the {n_docs} documents of `../shared/data/gensim-eval/"
            "lee_background.cor` (latin-1), from the untouched MiniLM each time, method "
            "`contriever`: two independent random crops (10%-50% of a random window of "
            f"{cfg['chunk_length']} tokens), token deletion p 0.1, InfoNCE at temperature "
            "0.05 on the model's L2-normalised embeddings (cosine; the released code scores "
            f"unnormalised dot products), AdamW lr 5e-5, linear decay, batch "
            f"{cfg['batch_size']}, {cfg['epochs']} epoch(s) = {steps} steps, max length "
            f"{cfg['max_length']}. Variants: momentum 0.999 key encoder with a FIFO queue of "
            "128 keys (8 batches, below the 300 documents); the same with `queue_size=0` "
            "(the batch's other keys as negatives); `momentum=None` (one shared encoder, "
            f"in-batch negatives). Seeds {seeds} (mean ± std; the seed sets the shuffling, "
            "dropout and the crops).",
            "Evaluation (`crop_retrieval_task`, `evaluate_retrieval`, cosine): per document "
            "its first 100 words; a random 20-word span is the query, the corpus holds every "
            "document with its query span removed, relevance 1 for the source. "
            f"**Held out**: `lee.cor` ({len(lee.queries)} queries over {len(lee.corpus)} "
            "documents never trained on). Also `lee_background.cor` "
            f"({len(bg.queries)} queries over {len(bg.corpus)}), crop seed "
            f"{BACKGROUND_CROP_SEED}: the training documents with new crops: held-out "
            "crops, not held-out documents. With one relevant document per query, "
            "Recall@1 = Hit@1.",
            markdown_table(header, rows),
            verdict(results),
        ]
    )


if __name__ == "__main__":
    main()
