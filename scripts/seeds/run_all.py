#!/usr/bin/env python
"""Run every seed-objective result script (``scripts/seeds/<name>.py``) in turn; each
rewrites its own section of docs/results.md (``make results-seeds``).

``--only a,b`` runs a subset; ``--smoke`` passes ``--smoke`` on (seconds-long runs whose
sections say so); ``--out`` names another results file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts() -> dict[str, Path]:
    """The result scripts by name (every module here but ``_common`` and this one)."""
    return {
        p.stem: p
        for p in sorted(HERE.glob("*.py"))
        if not p.stem.startswith("_") and p.stem != "run_all"
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=None, help="comma-separated script names")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=None, help="results file [default: docs/results.md]")
    args = p.parse_args(argv)
    found = scripts()
    names = list(found) if args.only is None else args.only.split(",")
    unknown = sorted(set(names) - set(found))
    if unknown:
        raise SystemExit(f"--only: {unknown} are not scripts here; pick from {sorted(found)}")
    for name in names:
        command = [sys.executable, str(found[name])]
        command += ["--smoke"] if args.smoke else []
        command += ["--out", args.out] if args.out else []
        started = time.perf_counter()
        print(f"$ {' '.join(command)}", flush=True)
        subprocess.run(command, check=True)
        print(f"{name}: {(time.perf_counter() - started) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
