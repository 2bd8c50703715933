"""What every loss module shares: hyperparameters as attributes, an optional learnable
temperature, and a config that ``create_loss`` can rebuild it from."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from contrastkit.core.similarity import SIMILARITIES
from contrastkit.core.temperature import LogitScale
from contrastkit.core.validation import _fail, check_choice, check_reduction, check_temperature


class ContrastiveLoss(nn.Module):
    """Base for loss modules. A module stores hyperparameters and state, then calls its
    pure function in ``contrastkit.functional``.

    ``inputs`` tells a training loop how to call it:

    * ``"views"``: ``loss(z1, z2, ...)`` or ``loss(z)`` with ``z`` of shape (N, V, D);
    * ``"labels"``: like views, plus ``labels=`` (N,) integer classes (required);
    * ``"two_tower"``: ``loss(query, key)``, row i of one matching row i of the other;
    * ``"prediction"``: ``loss(prediction, target)`` with a stop-gradient on ``target``.

    ``per_anchor`` is False for objectives defined over the whole batch (Barlow Twins,
    VICReg), which then take no ``reduction``.
    """

    inputs: ClassVar[str] = "views"
    per_anchor: ClassVar[bool] = True
    function: ClassVar[Callable]  # the pure function in contrastkit.functional

    def forward(self, *inputs, **kwargs):
        """Call the pure function with the stored hyperparameters; ``kwargs`` carries the
        per-batch inputs (``labels=``, ``negatives=``)."""
        return type(self).function(*inputs, **self.function_kwargs(), **kwargs)

    def function_kwargs(self) -> dict:
        """Stored hyperparameters that the function takes, with the current temperature."""
        params = inspect.signature(type(self).function).parameters
        kwargs = {k: v for k, v in self.get_config().items() if k in params}
        if "temperature" in kwargs:
            kwargs["temperature"] = self.current_temperature()
        return kwargs

    def _init_temperature(self, temperature: float, learnable: bool) -> None:
        self.temperature = check_temperature(temperature, type(self).__name__)
        self.learnable = bool(learnable)
        self.logit_scale = LogitScale(self.temperature) if self.learnable else None

    def current_temperature(self):
        """The temperature to use now: a float, or a 0-d tensor when learnable."""
        if self.logit_scale is not None:
            return self.logit_scale.temperature()
        return self.temperature

    def _init_contrastive(self, temperature, reduction, similarity, learnable=False) -> None:
        """The hyperparameters every InfoNCE-family module stores, checked at construction."""
        self._init_temperature(temperature, learnable)
        self._init_reduction(reduction)
        self.similarity = check_choice(similarity, type(self).__name__, "similarity", SIMILARITIES)

    def _init_reduction(self, reduction: str) -> None:
        self.reduction = check_reduction(reduction, type(self).__name__)

    def get_config(self) -> dict:
        """Constructor arguments as stored; ``create_loss(name, **get_config())`` rebuilds it."""
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())


class SeededDraws:
    """Mixin for modules whose objective draws random numbers (negatives, mixup ratios).

    ``_init_generator(seed)``: an int seeds the module's own ``torch.Generator``, so two
    modules built from one config draw the same, and torch's global generator is left
    alone; its position is saved in ``state_dict`` (extra state), so a restored checkpoint
    draws next what the original would have. ``seed=None`` uses the global generator.
    """

    def _init_generator(self, seed) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            _fail(
                type(self).__name__,
                "seed",
                f"is {seed!r}",
                "it must be an int or None",
                "pass seed=0 (or seed=None for torch's global generator)",
                TypeError,
            )
        self.seed = seed
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def get_extra_state(self):
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def set_extra_state(self, state):
        if self.generator is not None and state and "generator" in state:
            self.generator.set_state(state["generator"])
