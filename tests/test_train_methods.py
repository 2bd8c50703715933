"""The seed methods (cMIM, MIM, SepCLR, Core-tuning, CE fine-tuning, BECLR) trained by the
library loop and the CLI: metrics, exact resume, checkpoints, pretrained encoders, and the
contrastive-analysis data set (fast: digits subsets, small models)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import contrastkit
from conftest import TINY_RUN, Interrupt, stop_after
from contrastkit.cli.main import app
from contrastkit.train import (
    DataConfig,
    TrainConfig,
    apply_overrides,
    load_checkpoint,
    load_dataset,
    load_model,
    train,
)
from contrastkit.train.data import TEXTURE_STRENGTH, TEXTURES, add_texture, textures
from contrastkit.train.loop import embed
from contrastkit.train.methods import METHODS, build_method, find_method

TINY = apply_overrides(
    TINY_RUN,
    {
        "model.width": 32,
        "model.feature_dim": 16,
        "model.pred_hidden": 8,
        "eval.linear_probe": False,
    },
)
# A DyCE memory small enough to fill and cluster in the first epoch (240 images, 2 views),
# with enhancement from epoch 1 on, and few evaluation episodes.
SMALL_BECLR = {"memory_scale": 8, "num_clusters": 8, "topk": 2, "memory_start_epoch": 1}
EXTRA = {
    "cmim": {"reconstruction_bce", "informative_linear_acc"},
    "mim": {"reconstruction_bce", "informative_linear_acc"},
    "sepclr": {
        "common_digit_acc",
        "common_salient_acc",
        "salient_digit_acc",
        "salient_salient_acc",
    },
    "core_tuning": {"classifier_acc"},
    "finetune_ce": {"classifier_acc"},
    "beclr": {"1shot_acc", "1shot_opta_acc", "5shot_acc", "5shot_opta_acc"},
}


def tiny(name: str, **overrides) -> TrainConfig:
    base = apply_overrides(TINY, {"loss.name": name})
    if name == "sepclr":
        base["data"]["name"] = "digits-textures"
    if name == "beclr":
        base["loss"]["params"] = dict(SMALL_BECLR, episodes=5)
        # 21 test images per class: enough for 5-way 5-shot episodes with 15 queries.
        base["data"].update(subset=600, test_fraction=0.35)
    return TrainConfig.from_dict(apply_overrides(base, overrides))


def test_method_names_do_not_shadow_losses():
    assert set(METHODS).isdisjoint(contrastkit.list_losses())
    assert find_method("CMIM") is METHODS["cmim"] and find_method("infonce") is None


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_trains_and_reports_its_own_metrics(name):
    result = train(tiny(name, **{"eval.linear_probe": True}))
    assert len(result.history) == 2
    assert EXTRA[name] <= set(result.metrics)
    for key in EXTRA[name] | {"knn_acc", "linear_acc"}:
        assert np.isfinite(result.metrics[key]), key
    for key in EXTRA[name] - {"reconstruction_bce"}:
        assert 0.0 <= result.metrics[key] <= 1.0, key
    # Trained features beat chance (10 classes) on the held-out digits.
    assert result.metrics["knn_acc"] > 0.3


@pytest.mark.parametrize("name", ["cmim", "beclr", "core_tuning", "sepclr"])
def test_method_resume_is_exact(tmp_path, name):
    over = {"epochs": 3}
    straight = train(tiny(name, **over, out=str(tmp_path / "a")))
    with pytest.raises(Interrupt):
        train(tiny(name, **over, out=str(tmp_path / "b")), callbacks=[stop_after(2)])
    ckpt = tmp_path / "b" / "checkpoint.pt"
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    resumed = train(tiny(name, **over, out=str(tmp_path / "b"), resume=str(ckpt)))
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert list(a) == list(b)
    for key in a:
        if key.endswith("_extra_state"):  # a DyCE generator's position (k-means seeding)
            assert torch.equal(a[key]["generator"], b[key]["generator"]), key
        else:
            assert torch.equal(a[key], b[key]), key
    assert resumed.metrics == straight.metrics


def test_beclr_memories_fill_cluster_and_enhance_and_the_teacher_follows():
    result = train(tiny("beclr", epochs=2))
    run = result.model
    assert len(run.memories) == 3
    for memory in run.memories:
        assert bool(memory.clustered) and int(memory.count) == memory.size
        assert int((memory.labels >= 0).sum()) == memory.size
    teacher = dict(run.teacher.named_parameters())
    for name, p in run.student.named_parameters():
        if name.startswith("predictor"):
            continue
        assert not teacher[name].requires_grad
        assert not torch.equal(teacher[name], p), name  # EMA lags the student
    enhanced = run.memories[0](torch.randn(4, 16), torch.randn(4, 16), enhance=True)
    assert enhanced[0].shape == (4 * (1 + 2), 16)  # each row gets topk=2 neighbours


def test_beclr_without_memory_has_no_dyce():
    result = train(tiny("beclr", epochs=1, **{"loss.params": {"memory_scale": 0}}))
    assert len(result.model.memories) == 0


def test_teacher_is_not_optimised():
    from contrastkit.train.config import OptimConfig
    from contrastkit.train.loop import make_optimizer

    run = build_method(METHODS["beclr"], tiny("beclr"), (1, 8, 8), 10)
    opt = make_optimizer(run, torch.nn.Module(), OptimConfig())
    ids = {id(p) for group in opt.param_groups for p in group["params"]}
    assert not any(id(p) in ids for p in run.teacher.parameters())
    assert all(id(p) in ids for p in run.student.parameters())


def test_load_model_rebuilds_a_method_checkpoint(tmp_path):
    result = train(tiny("core_tuning", epochs=1, out=str(tmp_path)))
    model, cfg = load_model(tmp_path / "checkpoint.pt")
    assert cfg.loss.name == "core_tuning"
    x = load_dataset(cfg.data).test_x
    assert torch.equal(embed(model, x), embed(result.model, x))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["num_classes"] == 10


def test_core_tuning_starts_from_the_pretrained_encoder(tmp_path):
    pre = apply_overrides(TINY, {"loss.name": "infonce", "epochs": 1, "out": str(tmp_path)})
    pretrained = train(TrainConfig.from_dict(pre)).model
    cfg = tiny("core_tuning", **{"loss.params": {"pretrained": str(tmp_path / "checkpoint.pt")}})
    run = build_method(METHODS["core_tuning"], cfg, (1, 8, 8), 10)
    want = pretrained.encoder.state_dict()
    got = run.model.encoder.state_dict()
    assert list(want) == list(got)
    assert all(torch.equal(want[k], got[k]) for k in want)
    scratch = build_method(METHODS["core_tuning"], tiny("core_tuning"), (1, 8, 8), 10)
    first = next(iter(want))
    assert not torch.equal(scratch.model.encoder.state_dict()[first], want[first])


def test_core_tuning_refuses_a_pretrained_encoder_of_another_size(tmp_path):
    pre = apply_overrides(TINY, {"loss.name": "infonce", "epochs": 1, "out": str(tmp_path)})
    train(TrainConfig.from_dict(pre))
    ckpt = str(tmp_path / "checkpoint.pt")
    cfg = tiny("core_tuning", **{"loss.params": {"pretrained": ckpt}, "model.width": 48})
    with pytest.raises(ValueError, match=r"loss.params.pretrained.*--set model.width=32"):
        build_method(METHODS["core_tuning"], cfg, (1, 8, 8), 10)


def test_finetune_ce_minimises_cross_entropy_of_its_classifier():
    cfg = tiny("finetune_ce")
    run = build_method(METHODS["finetune_ce"], cfg, (1, 8, 8), 10)
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    want = torch.nn.functional.cross_entropy(run.model.classifier(run.model.encoder(x)), y)
    torch.testing.assert_close(run.batch_loss((x,), y, torch.arange(6), 0), want)


@pytest.mark.parametrize(
    ("name", "over", "match"),
    [
        ("sepclr", {"data.name": "digits"}, r"'sepclr' needs background.*digits-textures"),
        ("cmim", {"loss.params": {"margin": 1.0}}, r"unknown loss.params \['margin'\]"),
        ("mim", {"loss.params": {"contrastive_weight": 1.0}}, r"unknown loss.params"),
        ("finetune_ce", {"loss.params": {"eta": 0.1}}, r"Fix: use only \['pretrained'\]"),
        ("cmim", {"grad_cache_chunk": 16}, r"cannot run with grad_cache_chunk=16"),
        ("beclr", {"loss.ema": 0.9}, r"cannot run with loss.ema=0.9"),
        ("beclr", {"views": 4}, r"views=4.*Fix: unset views \(the method draws 2\)"),
    ],
)
def test_method_misconfiguration_is_named(name, over, match):
    with pytest.raises(ValueError, match=match):
        train(tiny(name, epochs=1, **over))


def test_textures_data_set_is_a_seeded_background_target_split():
    plain = load_dataset(DataConfig(name="digits", subset=300))
    a = load_dataset(DataConfig(name="digits-textures", subset=300))
    b = load_dataset(DataConfig(name="digits-textures", subset=300))
    assert a.name == "digits-textures"
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.groups[1], b.groups[1])
    assert torch.equal(a.train_y, plain.train_y) and torch.equal(a.test_y, plain.test_y)
    for x0, x, group, kind in (
        (plain.train_x, a.train_x, a.groups[0], a.salient[0]),
        (plain.test_x, a.test_x, a.groups[1], a.salient[1]),
    ):
        assert abs(int(group.sum()) - len(group) // 2) <= 1
        bg = group == 0
        assert torch.equal(x[bg], x0[bg]) and bool((kind[bg] == -1).all())
        assert set(kind[~bg].tolist()) <= set(range(len(TEXTURES)))
        # Loop reference: each target pixel is max(pixel, strength * texture pixel).
        for i in torch.nonzero(~bg).flatten()[:5].tolist():
            t = textures(8)[int(kind[i])]
            want = torch.where(t > 0, torch.clamp(x0[i], min=TEXTURE_STRENGTH), x0[i])
            assert torch.equal(x[i], want)


def test_add_texture_patterns_are_distinct_binary_masks():
    t = textures(28)
    assert t.shape == (4, 1, 28, 28) and set(t.unique().tolist()) == {0.0, 1.0}
    flat = t.flatten(1)
    assert len({tuple(r.tolist()) for r in flat}) == 4
    x = torch.zeros(2, 1, 28, 28)
    out = add_texture(x, torch.tensor([0, 3]))
    assert torch.equal(out, TEXTURE_STRENGTH * t[[0, 3]])


def test_cli_trains_a_method_and_evaluates_its_checkpoint(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    args = [
        "train", "--objective", "cmim", "--epochs", "1", "--no-progress", "--out", str(out),
        "--set", "data.subset=300", "--set", "batch_size=64", "--set", "threads=1",
        "--set", "model.width=32", "--set", "model.feature_dim=8",
        "--set", "loss.params.temperature=0.2", "--set", "eval.linear_probe=false",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "reconstruction_bce" in result.output
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and "reconstruction_bce" in record
    result = runner.invoke(app, ["eval", str(out / "checkpoint.pt"), "--no-linear"])
    assert result.exit_code == 0, result.output
    assert "knn_acc" in result.output
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0 and "core_tuning" in listed.output and "beclr" in listed.output


def test_compare_trains_methods_beside_losses():
    from contrastkit.train import CompareConfig, aggregate, compare, resolve_losses

    assert resolve_losses(["infonce", "CMIM", "nope"]) == (
        ["infonce", "cmim"],
        {"nope": "not registered (neither a loss nor a method)"},
    )
    cfg = CompareConfig.from_dict(
        {**TINY, "epochs": 1, "compare": {"losses": ["infonce", "cmim"], "seeds": [0]}}
    )
    rows = aggregate(compare(cfg))
    assert sorted(r["objective"] for r in rows) == ["cmim", "infonce"]
    assert all(r["runs"] == 1 and 0.0 <= r["knn_acc_mean"] <= 1.0 for r in rows)


def test_a_method_must_define_its_features_and_loss():
    from contrastkit.train.methods import MethodModel

    class Partial(MethodModel):
        def features(self, x):
            return x

    with pytest.raises(TypeError, match="batch_loss"):
        Partial((1, 8, 8))
