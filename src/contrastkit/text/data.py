"""Readers for text training data: plain files, in-memory datasets and STS-B.

Every reader returns a list of examples in the shapes ``TextMethod`` consumes:
``str`` (sentences / documents), ``(a, b)`` (pairs), ``(anchor, positive, negative)``
(triples), ``(query, [docs], [grades])`` (graded). Errors name the file, the line
number and the fix.

File formats (chosen by suffix: ``.jsonl`` / ``.json`` is JSON Lines, anything else is
tab-separated text; blank lines are skipped in both):

- sentences / documents: one text per line (surrounding whitespace stripped);
- pairs: TSV with exactly 2 columns, or JSONL objects with keys ``anchor``/``positive``,
  ``text1``/``text2`` or ``sentence1``/``sentence2``;
- triples: TSV with exactly 3 columns, or JSONL with ``anchor``/``positive``/``negative``,
  ``text1``/``text2``/``text3`` or ``sentence1``/``sentence2``/``hard_negative``;
- graded: JSONL with ``query``, ``docs`` (list of str) and ``grades`` (list of numbers,
  same length).
"""

from __future__ import annotations

import json
from pathlib import Path

from contrastkit.core.validation import _fail

KINDS = ("sentences", "documents", "pairs", "triples", "graded")
PAIR_KEYS = (("anchor", "positive"), ("text1", "text2"), ("sentence1", "sentence2"))
TRIPLE_KEYS = (
    ("anchor", "positive", "negative"),
    ("text1", "text2", "text3"),
    ("sentence1", "sentence2", "hard_negative"),
)
STSB_SPLITS = ("train", "dev", "test")


def _existing(path, owner: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{owner}: file {path} does not exist. Fix: pass the path of an existing "
            f"text file (TSV or JSONL)."
        )
    return path


def _lines(path: Path, encoding: str = "utf-8"):
    """(line number from 1, text without the newline) of the non-blank lines."""
    with open(path, encoding=encoding) as f:
        try:
            lines = f.read().splitlines()
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{path}: byte {e.object[e.start]:#04x} at offset {e.start} is not valid "
                f"{encoding}. Fix: pass encoding= of the file (e.g. encoding='latin-1'), or "
                f"convert it (iconv -f latin1 -t utf-8)."
            ) from None
    for no, line in enumerate(lines, 1):
        if line.strip():
            yield no, line


def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".json")


def _bad(path, no, what, fix):
    raise ValueError(f"{path}, line {no}: {what}. Fix: {fix}.")


def read_sentences(path, encoding: str = "utf-8") -> list[str]:
    """One text per line; blank lines skipped, surrounding whitespace stripped."""
    path = _existing(path, "read_sentences")
    return [line.strip() for _, line in _lines(path, encoding)]


def _read_tuples(path, n: int, keysets, owner: str) -> list[tuple]:
    path = _existing(path, owner)
    out = []
    if _is_jsonl(path):
        for no, line in _lines(path):
            obj = _json_object(path, no, line)
            keys = next((ks for ks in keysets if all(k in obj for k in ks)), None)
            if keys is None:
                accepted = " or ".join("/".join(ks) for ks in keysets)
                _bad(path, no, f"has keys {sorted(obj)}", f"give each object the keys {accepted}")
            out.append(tuple(_text(path, no, obj[k], k) for k in keys))
        return out
    for no, line in _lines(path):
        cols = line.split("\t")
        if len(cols) != n:
            _bad(
                path,
                no,
                f"has {len(cols)} tab-separated columns",
                f"write exactly {n} columns separated by tabs (no tabs inside a text), or use "
                f"a .jsonl file",
            )
        out.append(tuple(cols))
    return out


def _json_object(path, no, line) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        _bad(path, no, f"is not valid JSON ({e.msg})", "write one JSON object per line")
    if not isinstance(obj, dict):
        _bad(path, no, f"is a JSON {type(obj).__name__}", "write one JSON object per line")
    return obj


def _text(path, no, value, key) -> str:
    if not isinstance(value, str):
        _bad(path, no, f"key {key!r} holds {type(value).__name__}", "make it a string")
    return value


def read_pairs(path) -> list[tuple[str, str]]:
    """``(a, b)`` pairs from a 2-column TSV or JSONL (keys in ``PAIR_KEYS``)."""
    return _read_tuples(path, 2, PAIR_KEYS, "read_pairs")


def read_triples(path) -> list[tuple[str, str, str]]:
    """``(anchor, positive, negative)`` from a 3-column TSV or JSONL (``TRIPLE_KEYS``)."""
    return _read_tuples(path, 3, TRIPLE_KEYS, "read_triples")


def read_graded(path) -> list[tuple[str, list[str], list[float]]]:
    """``(query, docs, grades)`` from JSONL objects with ``query``, ``docs``, ``grades``."""
    path = _existing(path, "read_graded")
    if not _is_jsonl(path):
        _bad(path, 1, "is not a .jsonl file", "graded examples are read from JSON Lines only")
    out = []
    for no, line in _lines(path):
        obj = _json_object(path, no, line)
        missing = [k for k in ("query", "docs", "grades") if k not in obj]
        if missing:
            _bad(path, no, f"lacks keys {missing}", "give each object query, docs and grades")
        docs, grades = obj["docs"], obj["grades"]
        ok = isinstance(docs, list) and isinstance(grades, list) and len(docs) == len(grades)
        if not ok or not docs:
            _bad(
                path,
                no,
                "has docs/grades that are not two equal-length non-empty lists",
                "write docs as a list of strings and grades as a list of numbers, one each",
            )
        if not all(isinstance(g, (int, float)) and not isinstance(g, bool) for g in grades):
            _bad(path, no, f"has non-numeric grades {grades}", "write grades as numbers")
        docs = [_text(path, no, d, "docs") for d in docs]
        out.append((_text(path, no, obj["query"], "query"), docs, [float(g) for g in grades]))
    return out


def read_examples(path, kind: str) -> list:
    """Dispatch on ``kind`` (``KINDS``): sentences/documents, pairs, triples or graded."""
    readers = {
        "sentences": read_sentences,
        "documents": read_sentences,
        "pairs": read_pairs,
        "triples": read_triples,
        "graded": read_graded,
    }
    if kind not in readers:
        _fail(
            "read_examples",
            "kind",
            f"is {kind!r}",
            f"it must be one of {KINDS}",
            "pass the kind the method trains on (its `inputs`)",
        )
    return readers[kind](path)


def from_dataset(ds, columns) -> list:
    """Examples from any column-addressable object (``datasets.Dataset``, a dict of
    lists, a pandas DataFrame): one column gives ``str`` items, several give tuples in
    the order of ``columns``. ``datasets`` itself is not imported."""
    cols = [columns] if isinstance(columns, str) else list(columns)
    if not cols or not all(isinstance(c, str) for c in cols):
        _fail(
            "from_dataset",
            "columns",
            f"is {columns!r}",
            "it must be a column name or a non-empty list of names",
            "pass e.g. columns=['sentence1', 'sentence2']",
            TypeError,
        )
    data = []
    for c in cols:
        try:
            data.append(list(ds[c]))
        except (KeyError, IndexError, TypeError, ValueError) as e:
            names = getattr(ds, "column_names", None) or (list(ds) if isinstance(ds, dict) else "?")
            _fail(
                "from_dataset",
                "columns",
                f"names {c!r}, which `ds` lacks ({type(e).__name__})",
                f"the available columns are {names}",
                "pass existing column names",
            )
    lengths = {len(d) for d in data}
    if len(lengths) != 1:
        _fail(
            "from_dataset",
            "columns",
            f"{cols} have lengths {[len(d) for d in data]}",
            "all columns must have the same length",
            "pass columns of one table",
        )
    for c, d in zip(cols, data, strict=True):
        bad = next((i for i, v in enumerate(d) if not isinstance(v, str)), None)
        if bad is not None:
            _fail(
                "from_dataset",
                "columns",
                f"column {c!r} row {bad} is {d[bad]!r}",
                "text columns must hold strings",
                "pass text columns only",
                TypeError,
            )
    return data[0] if len(cols) == 1 else list(zip(*data, strict=True))


def stsb_path(split: str, root=None) -> Path:
    """``<data root>/stsb/sts-<split>.csv``; the data root as ``contrastkit.train.data``."""
    from contrastkit.train.data import data_root

    if split not in STSB_SPLITS:
        _fail(
            "stsb",
            "split",
            f"is {split!r}",
            f"it must be one of {STSB_SPLITS}",
            "pass split='train', 'dev' or 'test'",
        )
    return data_root(root) / "stsb" / f"sts-{split}.csv"


def stsb(split: str, root=None) -> list[tuple[str, str, float]]:
    """STS Benchmark ``(s1, s2, score)`` triples, read as ``stsb/SOURCE.md`` says: line by
    line, ``c = line.rstrip('\\n').split('\\t')``, ``score = float(c[4])``, ``s1 = c[5]``,
    ``s2 = c[6]`` (no csv quoting: the texts contain quote characters). Cer et al.,
    SemEval 2017. ``root`` is the shared data folder (default ``data_root()``)."""
    path = stsb_path(split, root)
    if not path.is_file():
        raise FileNotFoundError(
            f"stsb: {path} does not exist. Fix: set CONTRASTKIT_DATA (or pass root=) to the "
            f"folder holding stsb/sts-{split}.csv (shared/data)."
        )
    rows = []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            c = line.rstrip("\n").split("\t")
            if len(c) < 7:
                _bad(
                    path,
                    no,
                    f"has {len(c)} tab-separated fields",
                    "restore the original STS-B file (genre, file, year, id, score, s1, s2)",
                )
            try:
                score = float(c[4])
            except ValueError:
                _bad(path, no, f"has score {c[4]!r}", "restore the original STS-B file")
            rows.append((c[5], c[6], score))
    return rows


def stsb_sentences(split: str, root=None) -> list[str]:
    """The unique sentences of an STS-B split in first-seen order (s1, s2 of each row)."""
    seen = {}
    for s1, s2, _ in stsb(split, root):
        seen.setdefault(s1, None)
        seen.setdefault(s2, None)
    return list(seen)
