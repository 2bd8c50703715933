"""Encoders (MLP, small CNN), projection and predictor heads, and ``build_model``.

``ContrastiveModel(x)`` returns ``(features, projections)``: the features are what
evaluation uses, the projections are what the loss sees (SimCLR's split).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from contrastkit.train.config import ModelConfig


def mlp_encoder(input_shape: tuple[int, ...], width: int, feature_dim: int) -> nn.Module:
    in_dim = math.prod(input_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_dim, width),
        nn.BatchNorm1d(width),
        nn.ReLU(inplace=True),
        nn.Linear(width, feature_dim),
    )


def cnn_encoder(in_channels: int, width: int, feature_dim: int, stem_stride: int = 1) -> nn.Module:
    """Three 3x3 conv blocks (the last two with stride 2), then global average pooling.

    ``stem_stride=2`` also downsamples in the first block, as image encoders do for
    larger inputs; it cuts the compute by about 4 (8x8 digits: 8 -> 4 -> 2 with stride 1;
    MNIST: 28 -> 14 -> 7 -> 4 with stride 2).
    """

    def block(cin, cout, stride):
        return [
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]

    return nn.Sequential(
        *block(in_channels, width, stem_stride),
        *block(width, 2 * width, 2),
        *block(2 * width, feature_dim, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def mlp_head(in_dim: int, hidden: int, out_dim: int) -> nn.Module:
    """Linear-BN-ReLU-Linear, the projection head of SimCLR and predictor of BYOL/SimSiam."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim),
    )


class ContrastiveModel(nn.Module):
    """Encoder + projection head, and a predictor head when ``predictor=True``."""

    def __init__(
        self,
        encoder: nn.Module,
        projector: nn.Module,
        predictor: nn.Module | None,
        input_shape: tuple[int, int, int],
        any_size: bool,
    ):
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.predictor = predictor
        self.input_shape = tuple(input_shape)
        self.any_size = any_size  # a CNN takes any image size; an MLP only its own

    def check_input(self, shape: tuple[int, ...], owner: str) -> None:
        """Raise ``ValueError`` when images of ``shape`` (C, H, W) cannot go through."""
        fits = shape[0] == self.input_shape[0] and (self.any_size or shape == self.input_shape)
        if not fits:
            raise ValueError(
                f"{owner}: the model takes images of shape {self.input_shape}"
                f"{'' if self.any_size else ' (an MLP encoder fixes the size)'}, but the data "
                f"has shape {tuple(shape)}. Fix: use data of the training image size, or "
                f"train with model.encoder='cnn', which accepts any size."
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return h, self.projector(h)


def build_model(
    cfg: ModelConfig, input_shape: tuple[int, int, int], predictor: bool = False
) -> ContrastiveModel:
    """The model for images of ``input_shape`` = (C, H, W)."""
    if cfg.encoder == "mlp":
        encoder = mlp_encoder(input_shape, cfg.width, cfg.feature_dim)
    elif cfg.encoder == "cnn":
        # Downsample at the stem from 16x16 up (MNIST), keep full resolution for 8x8 digits.
        stride = 2 if min(input_shape[1:]) >= 16 else 1
        encoder = cnn_encoder(input_shape[0], cfg.width, cfg.feature_dim, stride)
    else:
        raise ValueError(
            f"build_model: `encoder` is {cfg.encoder!r}, which is not an encoder. "
            f"Fix: use 'mlp' or 'cnn'."
        )
    projector = mlp_head(cfg.feature_dim, cfg.proj_hidden, cfg.proj_dim)
    head = mlp_head(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim) if predictor else None
    return ContrastiveModel(encoder, projector, head, input_shape, any_size=cfg.encoder == "cnn")
