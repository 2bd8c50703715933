"""The benchmark harness (benchmarks/losses.py) on tiny configurations: no timing assertions.

The full benchmark is `contrastkit bench` / `python -m benchmarks.losses`; here its
measurement function, worker protocol, projections and report are checked in seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a top-level folder of the checkout
    sys.path.insert(0, str(ROOT))

bench = pytest.importorskip("benchmarks.losses")


def _tiny_records():
    records = [
        bench.measure("ntxent", "floor", 32, 8, max_calls=2),
        bench.measure("ntxent", "ours-plain", 32, 8, max_calls=2),
        bench.measure("ntxent", "ours-tiled", 32, 8, tile=16, max_calls=2),
        bench.measure("ntxent", "ref", 32, 8, max_calls=2),
        bench.measure("clip", "floor", 32, 8, max_calls=2),
        bench.measure("clip", "ours-tiled", 32, 8, tile=16, max_calls=2),
        bench.measure("clip", "ref", 32, 8, max_calls=2),
    ]
    records.append(
        {"family": "ntxent", "impl": "pml", "B": 64, "D": 8, "status": "skipped", "reason": "x"}
    )
    return records


def test_measure_and_report_columns():
    records = _tiny_records()
    for rec in records[:-1]:
        assert rec["status"] == "ok"
        assert rec["time_ms"] > 0 and rec["warmup_ms"] > 0
        assert rec["n"] == len(rec["times_ms"]) <= 2
        if sys.platform.startswith("linux"):
            assert isinstance(rec["peak_mib"], float)
    losses = {(r["family"], r["impl"]): r["loss"] for r in records if r.get("loss") is not None}
    assert losses[("ntxent", "ours-tiled")] == pytest.approx(losses[("ntxent", "ref")], rel=1e-5)
    assert records[0]["nn_mib"] > 0 and records[0]["gflops"] > 0

    meta = {
        "command": "python -m benchmarks.losses --quick",
        "duration_s": 1.0,
        "load_before": 0.0,
        "load_max": 0.0,
        "batches": {"ntxent": [32, 64], "clip": [32]},
        "dims": [8],
        "families": ["ntxent", "clip"],
        "tile": 16,
        "max_seconds": 60.0,
        "max_gib": 16.0,
        "max_calls": 2,
        "target_runs": True,
    }
    payload = {"meta": meta, "machine": bench.machine_info(2), "records": records}
    text = bench.render_markdown(payload)
    header = "| " + " | ".join(bench.COLUMNS) + " |"
    assert text.count(header) == 2  # one table per loss family
    for column in ("time (ms)", "x floor", "x best peer", "peak extra (MiB)"):
        assert column in header
    for section in ("## Machine and software", "## Command", "## Largest B", "## Targets"):
        assert section in text
    assert "| 32 | `ours-tiled` |" in text
    assert "`pml` B=64 D=8: skipped: x" in text
    verdicts = {r["verdict"] for r in bench.evaluate_targets(records)}
    assert verdicts == {"not measured"}  # the targets' B are not in this grid


def test_targets_are_rule_based():
    floor = {"family": "clip", "impl": "floor", "B": 8192, "D": 128, "status": "ok"}
    ours = {"family": "clip", "impl": "ours-tiled", "B": 8192, "D": 128, "status": "ok"}
    rows = bench.evaluate_targets([{**floor, "time_ms": 100.0}, {**ours, "time_ms": 150.0}])
    t3 = next(r for r in rows if r["id"] == "T3" and r["impl"] == "ours-tiled")
    assert (t3["verdict"], t3["value"]) == ("met", 1.5)
    rows = bench.evaluate_targets([{**floor, "time_ms": 100.0}, {**ours, "time_ms": 170.0}])
    assert next(r for r in rows if r["id"] == "T3")["verdict"] == "not met"


def test_projection_uses_the_steeper_fitted_exponent():
    # memory ~ B^3 (pytorch-metric-learning's shape): B^2 would under-project.
    done = [
        {"B": 128, "time_ms": 100.0, "peak_mib": 100.0},
        {"B": 256, "time_ms": 400.0, "peak_mib": 800.0},
    ]
    proj = bench.projection(done, 512, tiled=False)
    assert proj["peak_mib"] == pytest.approx(6400.0)
    assert proj["time_s"] == pytest.approx(1.6)
    assert bench.projection(done[:1], 512, tiled=True)["peak_mib"] == pytest.approx(400.0)


def test_worker_subprocess_with_a_peer():
    """The fresh-process path, with lightly's stubbed loader (kept out of this process)."""
    spec = {"family": "ntxent", "impl": "lightly", "B": 16, "D": 8, "tile": 1024}
    spec.update(max_calls=1, seed=0, threads=1)
    rec = bench.run_in_subprocess(spec, timeout_s=120, rss_guard_gib=8)
    if rec["status"] == "unavailable":
        pytest.skip(rec["reason"])
    assert rec["status"] == "ok", rec
    assert rec["time_ms"] > 0 and rec["threads"] == 1


def test_cli_bench_outside_a_checkout(tmp_path, monkeypatch):
    import contrastkit
    from contrastkit.cli.main import app

    monkeypatch.chdir(tmp_path)
    fake = tmp_path / "site-packages" / "contrastkit" / "__init__.py"
    monkeypatch.setattr(contrastkit, "__file__", str(fake))
    result = CliRunner().invoke(app, ["bench", "--quick"])
    assert result.exit_code == 2
    assert "needs a source checkout" in result.output


def test_rewrite_keeps_the_sections_other_scripts_own():
    from benchmarks.losses import kept_sections

    old = "# Bench\n## Loss grid\nold rows\n## Text: epoch cost\n| B | s |\n| 16 | 1.4 |\n## Not run\nx\n"
    assert kept_sections(old) == "\n## Text: epoch cost\n| B | s |\n| 16 | 1.4 |\n"
    assert kept_sections("# Bench\n## Loss grid\nrows\n") == ""
