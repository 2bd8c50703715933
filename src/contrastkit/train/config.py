"""Typed training configuration.

``TrainConfig.from_dict`` is the one way in from plain data (YAML, JSON, a checkpoint):
unknown keys are rejected with the list of valid ones, values are checked against the
field types, and dotted command-line overrides are merged by ``apply_overrides``.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

# ---------------------------------------------------------------------------- sections


@dataclass
class DataConfig:
    """Which data set, and how it is split for kNN / linear evaluation."""

    # "digits" (embedded), "mnist" (test set, 10k) or "mnist5k"; "<name>-textures" is the
    # background / target version of one of them (train.data: contrastive analysis)
    name: str = "digits"
    root: str | None = None  # data root; None: $CONTRASTKIT_DATA, then ../shared/data
    subset: int | None = None  # keep this many samples (stratified) before splitting
    test_fraction: float = 0.2
    split_seed: int = 0


@dataclass
class AugmentConfig:
    """Augmentations for small grey images; each is skipped when its strength is 0."""

    crop_scale: tuple[float, float] = (0.6, 1.0)  # random resized crop area range
    crop_p: float = 1.0
    degrees: float = 10.0  # random affine rotation
    translate: float = 0.1  # random affine shift, fraction of the side
    affine_p: float = 0.8
    noise_std: float = 0.05
    noise_p: float = 0.5
    erase_p: float = 0.25
    erase_scale: tuple[float, float] = (0.02, 0.15)


@dataclass
class ModelConfig:
    """Encoder, projection head and (for prediction losses) predictor head."""

    encoder: str = "mlp"  # "mlp" or "cnn"
    width: int = 256  # MLP hidden units, or CNN base channels
    feature_dim: int = 128  # representation used for evaluation
    proj_hidden: int = 256
    proj_dim: int = 64
    pred_hidden: int = 64  # only built for losses with inputs == "prediction"


@dataclass
class LossConfig:
    """A registered objective and its keyword arguments (checked by ``create_loss``)."""

    name: str = "infonce"
    params: dict = field(default_factory=dict)
    # Momentum of an EMA target network. None: 0.99 for byol and moco (their papers use
    # one), 0 otherwise (SimSiam and the rest use the online network as target).
    ema: float | None = None


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay, stepped per batch."""

    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01  # final lr as a fraction of ``lr``
    grad_clip: float | None = None


@dataclass
class EvalConfig:
    """Periodic and final evaluation on the held-out split."""

    knn_k: int = 20
    knn_temperature: float = 0.1
    space: str = "features"  # "features" (encoder output) or "projections"
    linear_probe: bool = True  # in the final evaluation only: it is the slow part


_BASE_DATA = ("digits", "mnist", "mnist5k")
_DATA_NAMES = (*_BASE_DATA, *(f"{n}-textures" for n in _BASE_DATA))
_ENCODERS = ("mlp", "cnn")
_SPACES = ("features", "projections")


@dataclass
class TrainConfig:
    """Everything one training run depends on; ``to_dict`` / ``from_dict`` round-trip."""

    seed: int = 0
    epochs: int = 20
    batch_size: int = 256
    views: int = 2  # augmented views per sample; losses with two-tower or prediction inputs take 2
    eval_every: int = 5  # evaluate every this many epochs, and after the last one
    out: str | None = None  # run folder: metrics.jsonl and checkpoint.pt; None: nothing saved
    resume: str | None = None  # checkpoint to continue from
    progress: bool = True
    threads: int | None = None  # torch.set_num_threads; None leaves torch's default
    # Rows per encoder chunk of the cached-gradient pass (GradCache, contrastkit.engine):
    # the loss still sees the whole batch, but only one chunk's activations live at once.
    # None: one plain forward/backward. BatchNorm then normalises per chunk (see the loop).
    grad_cache_chunk: int | None = None
    # torch.distributed backend when launched with torchrun (WORLD_SIZE > 1): "gloo" or
    # "nccl"; None picks gloo for CPU tensors, nccl for CUDA ones. Ignored on one process.
    dist_backend: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        _validate_train(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> TrainConfig:
        return _build(cls, d or {}, "")

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    def ema_momentum(self) -> float:
        if self.loss.ema is not None:
            return self.loss.ema
        return 0.99 if self.loss.name.lower() in ("byol", "moco") else 0.0


@dataclass
class CompareConfig:
    """Several objectives x several seeds on one data set and encoder.

    In a file this is a ``compare:`` section next to the keys of ``TrainConfig``, which
    give the shared settings of every run.
    """

    losses: list[str] | str = "all"  # names, or "all" registered objectives
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    loss_params: dict = field(default_factory=dict)  # per objective: {name: {kwarg: value}}
    markdown: str | None = None  # leaderboard table written here
    png: str | None = None  # bar chart written here
    json: str | None = None  # every run's metrics written here
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, d: dict | None) -> CompareConfig:
        d = dict(d or {})
        section = d.pop("compare", None) or {}
        if not isinstance(section, dict):
            raise ValueError(
                f"config: `compare` is {section!r}, but it must be a mapping. "
                f"Fix: write `compare:` with keys {_field_names(cls, skip={'train'})}."
            )
        if "train" in section:
            raise ValueError(
                "config: `compare.train` is not a key; the shared training settings are the "
                "top-level keys next to `compare:`. Fix: move them up one level."
            )
        cfg = _build(cls, section, "compare.", skip={"train"})
        cfg.train = TrainConfig.from_dict(d)
        if not cfg.seeds:
            raise ValueError("config: `compare.seeds` is empty. Fix: give e.g. [0, 1, 2].")
        return cfg


# ---------------------------------------------------------------------------- overrides


def apply_overrides(d: dict, overrides: dict[str, Any]) -> dict:
    """Return a copy of ``d`` with dotted keys set (``{"optim.lr": 0.1}``).

    Missing intermediate sections are created; validation of the names happens in
    ``from_dict``, so an unknown key is reported with the valid ones there.
    """
    out = copy.deepcopy(d)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if not all(parts):
            raise ValueError(
                f"override: key {dotted!r} has an empty part. Fix: write e.g. `optim.lr=0.01`."
            )
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: i + 1])
                raise ValueError(
                    f"override: {dotted!r} goes inside {prefix!r}, which is {child!r}, not a "
                    f"section. Fix: set {prefix!r} itself, or use a key of a section."
                )
            node = child
        node[parts[-1]] = value
    return out


# ---------------------------------------------------------------------------- internals


def _field_names(cls, skip=()) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in skip]


def _build(cls, d: dict, prefix: str, skip=()):
    valid = _field_names(cls, skip)
    if not isinstance(d, dict):
        raise ValueError(
            f"config: section {prefix.rstrip('.') or '<root>'!r} is {d!r}, but it must be a "
            f"mapping with keys {valid}."
        )
    unknown = sorted(set(d) - set(valid))
    if unknown:
        where = f"in section {prefix.rstrip('.')!r}" if prefix else "at the top level"
        raise ValueError(
            f"config: unknown key(s) {', '.join(prefix + str(k) for k in unknown)} {where}. "
            f"Valid keys: {', '.join(prefix + k for k in valid)}. Fix: correct the spelling "
            f"or remove them."
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        hint = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key + ".")
        else:
            kwargs[name] = _coerce(value, hint, key)
    return cls(**kwargs)


def _coerce(value, hint, key: str):
    """Check ``value`` against ``hint``; ints pass as floats and lists as tuples."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, key)
            except ValueError:
                pass
        raise _type_error(key, value, hint)
    if hint is type(None):
        if value is None:
            return None
        raise _type_error(key, value, hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(key, value, hint)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(key, value, hint)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(key, value, hint)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _type_error(key, value, hint)
    if hint is dict or origin is dict:
        if isinstance(value, dict):
            return copy.deepcopy(value)
        raise _type_error(key, value, hint)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, value, hint)
        args = typing.get_args(hint)
        if origin is tuple:
            if len(value) != len(args):
                raise _type_error(key, value, hint)
            return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
        return [_coerce(v, args[0], key) for v in value]
    raise TypeError(f"config: field {key!r} has an unsupported type {hint!r}")


def _type_error(key, value, hint) -> ValueError:
    return ValueError(
        f"config: `{key}` is {value!r} ({type(value).__name__}), but it must be of type "
        f"{_hint_name(hint)}. Fix: set `{key}` to a value of that type."
    )


def _hint_name(hint) -> str:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_hint_name(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is not None:
        return str(hint).replace("typing.", "")
    return "null" if hint is type(None) else hint.__name__


def _to_plain(x):
    """Tuples become lists so that the dict is YAML / JSON friendly."""
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x


def _require(ok: bool, key: str, value, rule: str, fix: str) -> None:
    if not ok:
        raise ValueError(f"config: `{key}` is {value!r}, but {rule}. Fix: {fix}.")


def _validate_train(c: TrainConfig) -> None:
    _require(c.epochs >= 1, "epochs", c.epochs, "it must be >= 1", "set e.g. epochs=20")
    _require(c.batch_size >= 2, "batch_size", c.batch_size, "it must be >= 2", "use e.g. 256")
    _require(
        c.views >= 2,
        "views",
        c.views,
        "it must be >= 2",
        "use views=2 (or 4 for multi-view losses)",
    )
    _require(c.eval_every >= 1, "eval_every", c.eval_every, "it must be >= 1", "use e.g. 5")
    _require(c.threads is None or c.threads >= 1, "threads", c.threads, "it must be >= 1", "1")
    _require(
        c.grad_cache_chunk is None or c.grad_cache_chunk >= 2,
        "grad_cache_chunk",
        c.grad_cache_chunk,
        "it must be >= 2 or null (every chunk needs two samples for BatchNorm statistics)",
        "use e.g. grad_cache_chunk=64, or null for a plain forward/backward",
    )
    _require(
        c.dist_backend in (None, "gloo", "nccl"),
        "dist_backend",
        c.dist_backend,
        "it must be 'gloo', 'nccl' or null",
        "use null to pick gloo on CPU and nccl on CUDA",
    )
    d = c.data
    _require(
        d.name in _DATA_NAMES,
        "data.name",
        d.name,
        f"it must be one of {_DATA_NAMES}",
        "pick one of them",
    )
    _require(
        0.0 < d.test_fraction < 1.0,
        "data.test_fraction",
        d.test_fraction,
        "it must be in (0, 1)",
        "use e.g. 0.2",
    )
    _require(
        d.subset is None or d.subset >= 20,
        "data.subset",
        d.subset,
        "it must be >= 20 (two per class at least)",
        "use null for all samples",
    )
    a = c.augment
    for key in ("crop_p", "affine_p", "noise_p", "erase_p"):
        v = getattr(a, key)
        _require(0.0 <= v <= 1.0, f"augment.{key}", v, "a probability is in [0, 1]", "use 0-1")
    for key in ("crop_scale", "erase_scale"):
        lo, hi = getattr(a, key)
        _require(
            0.0 < lo <= hi <= 1.0,
            f"augment.{key}",
            [lo, hi],
            "it must be [low, high] with 0 < low <= high <= 1",
            "use e.g. [0.6, 1.0]",
        )
    _require(a.noise_std >= 0, "augment.noise_std", a.noise_std, "it must be >= 0", "use 0.05")
    m = c.model
    _require(
        m.encoder in _ENCODERS,
        "model.encoder",
        m.encoder,
        f"it must be one of {_ENCODERS}",
        "pick one of them",
    )
    for key in ("width", "feature_dim", "proj_hidden", "proj_dim", "pred_hidden"):
        v = getattr(m, key)
        _require(v >= 1, f"model.{key}", v, "it must be >= 1", "use a positive size")
    o = c.optim
    _require(o.lr > 0, "optim.lr", o.lr, "it must be > 0", "use e.g. 2e-3")
    _require(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "it must be >= 0", "0")
    _require(
        o.warmup_epochs >= 0,
        "optim.warmup_epochs",
        o.warmup_epochs,
        "it must be >= 0",
        "use e.g. 1",
    )
    _require(
        0.0 <= o.min_lr_ratio <= 1.0,
        "optim.min_lr_ratio",
        o.min_lr_ratio,
        "it must be in [0, 1]",
        "use e.g. 0.01",
    )
    _require(
        o.grad_clip is None or o.grad_clip > 0,
        "optim.grad_clip",
        o.grad_clip,
        "it must be > 0 or null",
        "use null to switch clipping off",
    )
    e = c.loss.ema
    _require(
        e is None or 0.0 <= e < 1.0,
        "loss.ema",
        e,
        "a momentum is in [0, 1)",
        "use 0.99, or 0 for no target network",
    )
    ev = c.eval
    _require(ev.knn_k >= 1, "eval.knn_k", ev.knn_k, "it must be >= 1", "use e.g. 20")
    _require(
        ev.knn_temperature > 0,
        "eval.knn_temperature",
        ev.knn_temperature,
        "it must be > 0",
        "use e.g. 0.1",
    )
    _require(
        ev.space in _SPACES,
        "eval.space",
        ev.space,
        f"it must be one of {_SPACES}",
        "pick one of them",
    )
