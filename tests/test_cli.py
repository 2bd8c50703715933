"""The command line (typer's CliRunner) and scripts/make_results.py in smoke mode."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from contrastkit.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

TINY = [
    "--set", "data.subset=300",
    "--set", "batch_size=64",
    "--set", "threads=1",
    "--set", "model.width=32",
    "--set", "model.feature_dim=16",
]  # fmt: skip


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_list_shows_objectives_with_papers():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    assert "infonce" in result.output and "supcon" in result.output
    assert "SimCLR" in result.output  # InfoNCE's paper
    assert "simcse_unsup" in result.output and "contriever" in result.output  # text methods


def test_train_rejects_unknown_key_with_the_valid_list(tmp_path):
    result = invoke("train", "--set", "optim.lrr=0.1", "--out", tmp_path)
    assert result.exit_code == 2
    assert "optim.lrr" in result.output and "optim.lr," in result.output
    assert "Traceback" not in result.output
    result = invoke("train", "--set", "no_equals_sign")
    assert result.exit_code == 2 and "key=value" in result.output


def test_train_unknown_loss_lists_registered_ones(tmp_path):
    result = invoke("train", "--loss", "infonc", "--epochs", "1", "--out", tmp_path, *TINY)
    assert result.exit_code == 2
    assert "infonce" in result.output


def test_train_objective_with_views(tmp_path):
    run = tmp_path / "run"
    args = ["--objective", "infonce", "--views", "3", "--epochs", "1", "--out", run]
    result = invoke("train", *args, "--no-progress", *TINY)
    assert result.exit_code == 0, result.output
    from contrastkit.train import config_from_checkpoint

    saved = config_from_checkpoint(run / "checkpoint.pt")
    assert saved.views == 3 and saved.loss.name == "infonce"


def test_train_then_resume_then_eval(tmp_path):
    run = tmp_path / "run"
    args = ["--loss", "simsiam", "--epochs", "1", "--seed", "3", "--out", run, "--no-progress"]
    result = invoke("train", *args, *TINY)
    assert result.exit_code == 0, result.output
    assert "knn_acc" in result.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    # --resume alone takes the checkpoint's configuration; --epochs extends the run.
    result = invoke("train", "--resume", run / "checkpoint.pt", "--epochs", "2", "--no-progress")
    assert result.exit_code == 0, result.output
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    out_json = tmp_path / "eval.json"
    result = invoke("eval", run / "checkpoint.pt", "--no-linear", "--json", out_json)
    assert result.exit_code == 0, result.output
    payload = json.loads(out_json.read_text())
    assert payload["data"] == "digits"
    assert 0.0 <= payload["metrics"]["knn_acc"] <= 1.0
    assert "uniformity" in payload["metrics"] and "linear_acc" not in payload["metrics"]


def test_eval_of_a_corrupt_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"garbage")
    result = invoke("eval", bad)
    assert result.exit_code == 2
    assert "checkpoint.pt" in result.output and "corrupt" in result.output


def test_compare_writes_markdown_png_and_json(tmp_path):
    config = {
        "compare": {"losses": ["infonce", "vicreg", "not_a_loss"], "seeds": [0, 1]},
        "epochs": 1,
        "progress": False,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    md, png, js = tmp_path / "board.md", tmp_path / "board.png", tmp_path / "runs.json"
    result = invoke(
        "compare", "--config", path, *TINY, "--markdown", md, "--png", png, "--json", js,
        "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "not_a_loss" in result.output  # reported as skipped
    table = md.read_text()
    assert "| objective | kNN acc (%) |" in table
    assert "| infonce |" in table and "| vicreg |" in table and "± " in table
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads(js.read_text())
    assert len(payload["records"]) == 4 and payload["skipped"] == {
        "not_a_loss": "not registered (neither a loss nor a method)"
    }


def test_compare_unknown_section_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("compare:\n  seed: [0]\n")
    result = invoke("compare", "--config", path)
    assert result.exit_code == 2 and "compare.seeds" in result.output


def test_demo_config_is_valid_and_lists_registered_objectives():
    from contrastkit.train import CompareConfig, resolve_losses

    cfg = CompareConfig.from_dict(yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text()))
    names, skipped = resolve_losses(cfg.losses)
    assert not skipped, skipped
    assert cfg.train.data.name == "digits" and len(cfg.seeds) >= 3
    mnist = yaml.safe_load((ROOT / "configs" / "mnist_compare.yaml").read_text())
    assert CompareConfig.from_dict(mnist).train.data.name == "mnist"


def test_python_dash_m_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "contrastkit", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for command in ("list", "train", "eval", "compare"):
        assert command in done.stdout


def test_make_results_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_results", ROOT / "scripts" / "make_results.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.path.append(str(ROOT / "scripts" / "seeds"))
    from _common import write_section

    write_section("example", "### example: kept\n\n| a |\n|---|\n| 1 |", tmp_path / "results.md")
    module.main(["--smoke", "--out-dir", str(tmp_path)])
    text = (tmp_path / "results.md").read_text()
    # A seed objective's section is rewritten only by its own command: kept here.
    assert text.count("<!-- seed:example -->\n### example: kept") == 1
    assert text.index("## Objectives on MNIST") < text.index("### example: kept")
    assert "contrastkit compare --config" in text
    assert "| infonce |" in text
    assert "temperature" in text.lower() and "tolerance" in text
    assert (tmp_path / "results_leaderboard.png").is_file()
    assert (tmp_path / "results_temperature.png").is_file()


@pytest.mark.parametrize("bad", ["--epochs", "--seed"])
def test_flags_need_integers(bad):
    result = invoke("train", bad, "x")
    assert result.exit_code != 0
