"""Loss registry: ``register_loss``, ``create_loss``, ``list_losses``, ``loss_info``.

Names are lowercase (``"infonce"``, ``"supcon"``, ``"dcl"``, ...). Looking up an unknown
name raises ``ValueError`` with the close matches; unknown keyword arguments raise with
the list of valid ones.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class LossInfo:
    name: str
    cls: type
    summary: str
    paper: str
    defaults: dict = field(default_factory=dict)

    def parameters(self) -> list[str]:
        sig = inspect.signature(self.cls.__init__)
        return [p for p in sig.parameters if p != "self"]


_REGISTRY: dict[str, LossInfo] = {}


def register_loss(name: str, *, summary: str, paper: str, **defaults):
    """Class decorator; ``defaults`` make a preset of an existing class under a new name."""

    def wrap(cls):
        key = name.lower()
        if key in _REGISTRY and _REGISTRY[key].cls is not cls:
            raise ValueError(f"register_loss: name {key!r} is already taken by {cls.__name__}")
        _REGISTRY[key] = LossInfo(key, cls, summary, paper, dict(defaults))
        return cls

    return wrap


def _populate() -> None:
    importlib.import_module("contrastkit.losses")


def list_losses() -> list[str]:
    _populate()
    return sorted(_REGISTRY)


def loss_info(name: str) -> LossInfo:
    _populate()
    key = str(name).lower()
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"create_loss: `name` is {name!r}, which is not a registered loss. "
            f"{hint} Fix: pass one of list_losses(): {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[key]


def create_loss(name: str, **kwargs) -> nn.Module:
    """Build a registered loss; ``None`` values are dropped so defaults still apply."""
    info = loss_info(name)
    allowed = info.parameters()
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"create_loss: {info.name!r} got unknown arguments {unknown}. Fix: use only {allowed}."
        )
    merged = {**info.defaults, **{k: v for k, v in kwargs.items() if v is not None}}
    return info.cls(**merged)
