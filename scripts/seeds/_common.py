"""Shared by the seed-objective result scripts (``scripts/seeds/<name>.py``).

Each script trains its objective against the baseline its paper names, over at least
three seeds, and writes one section of ``docs/results.md`` between the markers
``<!-- seed:NAME -->`` and ``<!-- /seed:NAME -->``. ``scripts/make_results.py`` keeps
those sections when it rewrites the rest of the file, so each section is regenerated only
by its own command.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import platform
import re
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results.md"
SEEDS_HEADING = "## Seed objectives against their papers' claims"


def mean_std(values, scale: float = 1.0, digits: int = 2) -> str:
    """``"m ± s"`` over seeds (sample standard deviation; 0 for one value)."""
    values = [float(v) * scale for v in values]
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


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
