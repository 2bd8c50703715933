"""Augmentations for small grey images (kornia), and the view sampler.

Kornia draws its random parameters from torch's global generator. ``n_views`` takes
an explicit ``torch.Generator``, draws one seed per view from it, and runs kornia under
``torch.random.fork_rng`` with that seed: the views are then a deterministic function
of the generator, and the global RNG is left untouched.
"""

from __future__ import annotations

import torch
from torch import nn

from contrastkit.train.config import AugmentConfig


def build_augment(cfg: AugmentConfig, image_size: tuple[int, int]) -> nn.Module:
    """A kornia pipeline for ``(N, C, H, W)`` batches; disabled steps are left out."""
    import kornia.augmentation as K

    steps: list[nn.Module] = []
    if cfg.crop_p > 0:
        # "resample" warps the whole batch at once; the default "slice" loops per image.
        crop = K.RandomResizedCrop(
            image_size, scale=cfg.crop_scale, p=cfg.crop_p, cropping_mode="resample"
        )
        steps.append(crop)
    if cfg.affine_p > 0 and (cfg.degrees > 0 or cfg.translate > 0):
        shift = (cfg.translate, cfg.translate) if cfg.translate > 0 else None
        steps.append(K.RandomAffine(degrees=cfg.degrees, translate=shift, p=cfg.affine_p))
    if cfg.noise_p > 0 and cfg.noise_std > 0:
        steps.append(K.RandomGaussianNoise(mean=0.0, std=cfg.noise_std, p=cfg.noise_p))
    if cfg.erase_p > 0:
        steps.append(K.RandomErasing(scale=cfg.erase_scale, value=0.0, p=cfg.erase_p))
    return nn.Sequential(*steps)


def augment_once(x: torch.Tensor, augment: nn.Module, generator: torch.Generator) -> torch.Tensor:
    """One augmented view of ``x``, determined by (and advancing) ``generator``."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.no_grad():
            return augment(x)


def n_views(
    x: torch.Tensor, augment: nn.Module, generator: torch.Generator, views: int
) -> tuple[torch.Tensor, ...]:
    """``views`` independently augmented views of the batch ``x``."""
    return tuple(augment_once(x, augment, generator) for _ in range(views))


def two_views(
    x: torch.Tensor, augment: nn.Module, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of the batch ``x``."""
    return n_views(x, augment, generator, 2)
