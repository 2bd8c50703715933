"""Training, evaluation and comparison of objectives on small image data sets.

``train(cfg)`` runs one objective (see ``TrainConfig``) and returns a ``TrainResult``;
``evaluate(model, data)`` gives kNN / linear-probe accuracy and geometry diagnostics;
``compare(cfg)`` trains several objectives with several seeds on equal terms.
"""

from contrastkit.train.config import (
    AugmentConfig,
    CompareConfig,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    apply_overrides,
)
from contrastkit.train.data import ImageData, data_root, load_dataset
from contrastkit.train.loop import (
    TrainResult,
    aggregate,
    compare,
    config_from_checkpoint,
    embed,
    evaluate,
    load_checkpoint,
    load_model,
    resolve_losses,
    train,
)
from contrastkit.train.models import build_model

__all__ = [
    "AugmentConfig",
    "CompareConfig",
    "DataConfig",
    "EvalConfig",
    "ImageData",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainResult",
    "aggregate",
    "apply_overrides",
    "build_model",
    "compare",
    "config_from_checkpoint",
    "data_root",
    "embed",
    "evaluate",
    "load_checkpoint",
    "load_dataset",
    "load_model",
    "resolve_losses",
    "train",
]
