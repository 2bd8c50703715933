"""Training loop, configuration, data, augmentation and checkpoints (fast: digits subsets)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from conftest import TINY_RUN, Interrupt, stop_after
from contrastkit.train import (
    CompareConfig,
    DataConfig,
    TrainConfig,
    aggregate,
    apply_overrides,
    compare,
    data_root,
    evaluate,
    load_checkpoint,
    load_dataset,
    resolve_losses,
    train,
)
from contrastkit.train.augment import build_augment, two_views
from contrastkit.train.config import AugmentConfig, ModelConfig
from contrastkit.train.loop import lr_factor
from contrastkit.train.models import build_model

TINY = TINY_RUN


def tiny(**overrides) -> TrainConfig:
    return TrainConfig.from_dict(apply_overrides(TINY, overrides))


# ---------------------------------------------------------------------------- config


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ValueError) as e:
        TrainConfig.from_dict({"optim": {"lrr": 0.1}})
    msg = str(e.value)
    assert "optim.lrr" in msg
    for valid in ("optim.lr", "optim.weight_decay", "optim.warmup_epochs"):
        assert valid in msg
    with pytest.raises(ValueError, match="epochs, batch_size"):
        TrainConfig.from_dict({"epoch": 3})


def test_wrong_types_and_values_are_rejected():
    with pytest.raises(ValueError, match=r"`epochs` is 'x' \(str\).*int"):
        TrainConfig.from_dict({"epochs": "x"})
    with pytest.raises(ValueError, match="data.name"):
        TrainConfig.from_dict({"data": {"name": "cifar"}})
    with pytest.raises(ValueError, match="optim.lr"):
        TrainConfig.from_dict({"optim": {"lr": -1}})
    with pytest.raises(ValueError, match="section 'model'"):
        TrainConfig.from_dict({"model": 3})


def test_config_round_trips_and_coerces():
    cfg = TrainConfig.from_dict({"optim": {"lr": 1}, "augment": {"crop_scale": [0.5, 1]}})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.augment.crop_scale == (0.5, 1.0)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_overrides_and_compare_config():
    d = apply_overrides({"optim": {"lr": 1.0}}, {"optim.weight_decay": 0.0, "data.name": "mnist"})
    assert d == {"optim": {"lr": 1.0, "weight_decay": 0.0}, "data": {"name": "mnist"}}
    with pytest.raises(ValueError, match="not a section"):
        apply_overrides({"epochs": 3}, {"epochs.x": 1})
    cfg = CompareConfig.from_dict({"compare": {"losses": ["infonce"], "seeds": [3]}, "epochs": 2})
    assert cfg.seeds == [3] and cfg.train.epochs == 2
    with pytest.raises(ValueError, match="compare.seeds, compare.loss_params"):
        CompareConfig.from_dict({"compare": {"seed": [1]}})


def test_ema_momentum_defaults():
    assert tiny(**{"loss.name": "byol"}).ema_momentum() == 0.99
    assert tiny(**{"loss.name": "simsiam"}).ema_momentum() == 0.0
    assert tiny(**{"loss.name": "infonce"}).ema_momentum() == 0.0
    with pytest.raises(ValueError, match="loss.ema"):
        train(tiny(**{"loss.name": "infonce", "loss.ema": 0.9}))


# ---------------------------------------------------------------------------- pieces


def test_digits_split_is_stratified_and_deterministic():
    a = load_dataset(DataConfig(name="digits"))
    b = load_dataset(DataConfig(name="digits"))
    assert a.train_x.shape == (1437, 1, 8, 8) and a.test_x.shape == (360, 1, 8, 8)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert 0.0 <= float(a.train_x.min()) and float(a.train_x.max()) == 1.0
    counts = torch.bincount(a.test_y)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of ~180 per class


def test_missing_data_names_path_and_env_var(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(DataConfig(name="mnist", root=str(tmp_path)))
    assert str(tmp_path / "mnist-test") in str(e.value)
    assert "CONTRASTKIT_DATA" in str(e.value)


@pytest.mark.data
def test_mnist_loads_from_shared_data():
    root = data_root()
    if not (root / "mnist-test" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST not found under {root} (set CONTRASTKIT_DATA or add ../shared/data)")
    d = load_dataset(DataConfig(name="mnist"))
    assert d.train_x.shape == (8000, 1, 28, 28) and d.test_x.shape == (2000, 1, 28, 28)
    all_y = torch.cat([d.train_y, d.test_y])
    # Class counts of the canonical MNIST test set (SOURCE.md).
    expected = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert torch.bincount(all_y).tolist() == expected
    assert float(d.train_x.max()) == 1.0
    five = load_dataset(DataConfig(name="mnist5k"))
    assert len(five.train_y) + len(five.test_y) == 5000


def test_two_views_follow_the_generator_and_leave_global_rng_alone():
    x = load_dataset(DataConfig(name="digits")).train_x[:32]
    aug = build_augment(AugmentConfig(), (8, 8))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a1, a2 = two_views(x, aug, torch.Generator().manual_seed(5))
    b1, b2 = two_views(x, aug, torch.Generator().manual_seed(5))
    assert torch.equal(before, torch.get_rng_state())
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, a2) and a1.shape == x.shape


@pytest.mark.parametrize("encoder", ["mlp", "cnn"])
@pytest.mark.parametrize("side", [8, 28])
def test_encoders_fit_both_image_sizes(encoder, side):
    cfg = ModelConfig(encoder=encoder, width=8, feature_dim=12, proj_hidden=8, proj_dim=6)
    model = build_model(cfg, (1, side, side), predictor=True)
    h, z = model(torch.rand(4, 1, side, side))
    assert h.shape == (4, 12) and z.shape == (4, 6)
    assert model.predictor(z).shape == (4, 6)


def test_warmup_then_cosine():
    assert lr_factor(0, 10, 100, 0.0) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.0) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, 0.0) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100, 0.01) == pytest.approx(0.01)


# ---------------------------------------------------------------------------- training


@pytest.mark.parametrize(
    "name, kind",
    [
        ("infonce", "views"),
        ("supcon", "labels"),
        ("isogclr", "index"),
        ("clip", "two_tower"),
        ("byol", "prediction"),
    ],
)
def test_short_run_each_input_kind(tmp_path, name, kind):
    from contrastkit import loss_info

    assert loss_info(name).cls.inputs == kind
    result = train(tiny(**{"loss.name": name, "out": str(tmp_path)}))
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for r in lines:
        assert math.isfinite(r["loss"]) and r["lr"] > 0 and r["time"] > 0
        assert 0.0 <= r["knn_acc"] <= 1.0
        assert {"alignment", "uniformity", "effective_rank", "tolerance"} <= set(r)
    assert "linear_acc" in lines[-1] and "linear_acc" not in lines[0]
    assert result.metrics["knn_acc"] == lines[-1]["knn_acc"]
    assert (tmp_path / "checkpoint.pt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_multi_view_batches_feed_every_view_to_the_loss():
    import contrastkit.functional as F
    from contrastkit import create_loss
    from contrastkit.train.loop import batch_loss

    torch.manual_seed(0)
    cfg = tiny(views=3)
    model = build_model(cfg.model, (1, 8, 8))
    views = tuple(torch.rand(16, 1, 8, 8) for _ in range(cfg.views))
    labels, index = torch.arange(16) % 4, torch.arange(16)
    loss = batch_loss(model, None, create_loss("infonce"), "views", (views, labels, index))
    _, z = model(torch.cat(views))
    torch.testing.assert_close(loss, F.info_nce(*z.chunk(3)))
    result = train(tiny(views=3, epochs=1))
    assert math.isfinite(result.history[-1]["loss"])


def test_views_other_than_two_are_refused_for_two_tower_and_prediction_losses():
    with pytest.raises(ValueError, match=r"`views` is 1, but it must be >= 2"):
        tiny(views=1)
    for name in ("byol", "clip"):
        with pytest.raises(ValueError, match=rf"`views` is 4 for '{name}'.*Fix: set views=2"):
            train(tiny(views=4, **{"loss.name": name}))


def test_training_learns():
    result = train(tiny(epochs=6, **{"data.subset": 600}))
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.9 * losses[0]
    assert result.metrics["knn_acc"] > 0.8  # chance is 0.1


@pytest.mark.parametrize(
    "name, params",
    [("infonce", {}), ("moco", {"queue_size": 96}), ("byol", {}), ("clip", {})],
)
def test_resume_is_exact(tmp_path, name, params):
    over = {"epochs": 4, "eval_every": 2, "loss.name": name, "loss.params": params}
    straight = train(tiny(**over, out=str(tmp_path / "a")))
    with pytest.raises(Interrupt):
        train(tiny(**over, out=str(tmp_path / "b")), callbacks=[stop_after(2)])
    ckpt = tmp_path / "b" / "checkpoint.pt"
    assert load_checkpoint(ckpt)["epoch"] == 2
    # Scramble the global RNGs: resume must restore them, not rely on them.
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    resumed = train(tiny(**over, out=str(tmp_path / "b"), resume=str(ckpt)))
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    for (k, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    for a, b in zip(
        straight.loss_fn.state_dict().values(), resumed.loss_fn.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert resumed.metrics == straight.metrics
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2, 3, 4]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    train(tiny(epochs=1, out=str(tmp_path)))
    ckpt = tmp_path / "checkpoint.pt"
    good = ckpt.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.jsonl"]

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train(tiny(epochs=2, out=str(tmp_path), resume=str(ckpt)))
    assert ckpt.read_bytes() == good  # the last whole checkpoint survives the crash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.jsonl"]


def test_corrupt_and_foreign_checkpoints_raise_value_error(tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ValueError, match="corrupt") as e:
        load_checkpoint(bad)
    assert str(bad) in str(e.value)
    with pytest.raises(ValueError, match=str(bad)):
        train(tiny(resume=str(bad)))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="not a contrastkit training checkpoint"):
        load_checkpoint(foreign)
    train(tiny(epochs=1, out=str(tmp_path / "run")))
    good = tmp_path / "run" / "checkpoint.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ValueError, match="truncated.pt"):
        load_checkpoint(truncated)


def test_resume_with_another_config_names_the_difference(tmp_path):
    train(tiny(epochs=1, out=str(tmp_path)))
    with pytest.raises(ValueError) as e:
        train(tiny(resume=str(tmp_path / "checkpoint.pt"), **{"optim.lr": 0.5}))
    msg = str(e.value)
    assert "optim.lr" in msg and "checkpoint.pt" in msg and "Fix" in msg


def test_evaluate_reports_every_metric():
    result = train(tiny(epochs=1))
    data = load_dataset(result.config.data)
    m = evaluate(result.model, data, linear=True)
    assert set(m) == {
        "knn_acc",
        "linear_acc",
        "alignment",
        "uniformity",
        "effective_rank",
        "tolerance",
    }
    assert all(math.isfinite(v) for v in m.values())
    assert evaluate(result.model, data, linear=False) == {
        k: v for k, v in m.items() if k != "linear_acc"
    }  # the diagnostics views are seeded: repeatable


def test_compare_and_aggregate():
    names, skipped = resolve_losses(["infonce", "no_such_loss", "simsiam"])
    assert names == ["infonce", "simsiam"] and "no_such_loss" in skipped
    cfg = CompareConfig.from_dict(
        apply_overrides(TINY, {"epochs": 1, "compare": {"losses": names, "seeds": [0, 1]}})
    )
    records = compare(cfg)
    assert [(r["objective"], r["seed"]) for r in records] == [
        ("infonce", 0),
        ("infonce", 1),
        ("simsiam", 0),
        ("simsiam", 1),
    ]
    rows = aggregate(records)
    assert [r["objective"] for r in rows] == ["infonce", "simsiam"]
    accs = [r["knn_acc"] for r in records[:2]]
    assert rows[0]["knn_acc_mean"] == pytest.approx(sum(accs) / 2)
    assert rows[0]["runs"] == 2 and rows[0]["failed"] == 0


def test_evaluate_rejects_images_an_mlp_cannot_take():
    from contrastkit.train import ImageData

    result = train(tiny(epochs=1))
    y = torch.arange(20) % 10
    big = ImageData("big", torch.rand(20, 1, 16, 16), y, torch.rand(20, 1, 16, 16), y)
    with pytest.raises(ValueError, match=r"\(1, 8, 8\).*\(1, 16, 16\).*Fix"):
        evaluate(result.model, big)
