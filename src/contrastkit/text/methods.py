"""Text training methods: how a batch of examples becomes a loss for a ``TextEncoder``.

A ``TextMethod`` declares which examples it consumes (``inputs``) and computes
``batch_loss(encoder, batch)``. Methods register themselves with
``register_text_method(name, summary=..., paper=...)`` into ``TEXT_METHODS``.

Optional split protocol (for the cached-gradient pass, ``TextTrainConfig.grad_cache_chunk``):
a method whose loss is a function of the embeddings of a few aligned text lists can
expose the two halves of ``batch_loss``:

* ``embed_inputs(batch) -> tuple[list[str], ...]``: the text lists to encode, all of the
  batch's length N (row i of each belongs to example i), e.g. unsupervised SimCSE
  ``(sentences, sentences)``;
* ``objective(*embeddings) -> Tensor``: the 0-d loss of their (N, d) embeddings, in the
  same order.

:func:`split_batch_loss` is then the plain ``batch_loss`` (all lists in one encoder
pass), and ``contrastkit.text.train.cached_text_backward`` its GradCache counterpart.
A subclass that overrides ``batch_loss`` of a split-protocol method must keep the two
halves consistent with it (or set them to ``None``): ``grad_cache_chunk`` trains the
halves, not ``batch_loss``.
"""

from __future__ import annotations

import abc
import inspect

import torch

from contrastkit.core.validation import _fail

INPUT_KINDS = ("sentences", "pairs", "triples", "documents", "graded")

TEXT_METHODS: dict[str, type] = {}


class TextMethod(torch.nn.Module, metaclass=abc.ABCMeta):
    """Base class. ``inputs`` names the example kind the method trains on.

    Examples per kind: ``sentences``/``documents`` -> ``str``; ``pairs`` -> ``(a, b)``;
    ``triples`` -> ``(anchor, positive, negative)``; ``graded`` -> ``(query, [docs], [grades])``.
    """

    inputs: str = "sentences"
    name: str = ""
    summary: str = ""
    paper: str = ""

    @abc.abstractmethod
    def batch_loss(self, encoder, batch: list) -> torch.Tensor:
        """The loss of one batch of examples (a list in this method's ``inputs`` shape)."""

    def after_step(self, encoder) -> None:
        """Called after each optimizer step (momentum encoders, queues). Default: nothing."""


def supports_grad_cache(method) -> bool:
    """Whether ``method`` implements the split protocol (``embed_inputs`` and ``objective``)."""
    return callable(getattr(method, "embed_inputs", None)) and callable(
        getattr(method, "objective", None)
    )


def check_embed_inputs(lists, owner: str) -> tuple[list[str], ...]:
    """Validate ``embed_inputs``'s result: a non-empty tuple of equally long text lists."""
    ok = isinstance(lists, (tuple, list)) and len(lists) > 0
    ok = ok and all(isinstance(t, (list, tuple)) for t in lists)
    if not ok:
        _fail(
            owner,
            "embed_inputs(batch)",
            f"returned {type(lists).__name__}",
            "it must return a non-empty tuple of text lists",
            "return e.g. (sentences, sentences)",
            TypeError,
        )
    sizes = [len(t) for t in lists]
    if len(set(sizes)) != 1 or sizes[0] == 0:
        _fail(
            owner,
            "embed_inputs(batch)",
            f"returned text lists of lengths {sizes}",
            "every list must hold one text per example of the batch (same length >= 1)",
            "return aligned lists, row i of each belonging to example i",
        )
    return tuple(list(t) for t in lists)


def split_batch_loss(method, encoder, batch) -> torch.Tensor:
    """The plain loss of a split-protocol method: every text list of
    ``method.embed_inputs(batch)`` concatenated (list after list) and encoded in one
    pass, so each row draws its own dropout mask, then ``method.objective`` on the
    per-list embeddings."""
    lists = check_embed_inputs(method.embed_inputs(batch), getattr(method, "name", "") or "method")
    n = len(lists[0])
    z = encoder(encoder.tokenize([t for texts in lists for t in texts]))
    return method.objective(*(z[k * n : (k + 1) * n] for k in range(len(lists))))


def register_text_method(name: str, *, summary: str = "", paper: str = ""):
    """Class decorator adding a ``TextMethod`` subclass to ``TEXT_METHODS`` under ``name``."""

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, TextMethod)):
            _fail(
                "register_text_method",
                "cls",
                f"is {cls!r}",
                "only TextMethod subclasses can be registered",
                "subclass contrastkit.text.methods.TextMethod",
                TypeError,
            )
        if cls.inputs not in INPUT_KINDS:
            _fail(
                "register_text_method",
                f"{cls.__name__}.inputs",
                f"is {cls.inputs!r}",
                f"it must be one of {INPUT_KINDS}",
                "set the class attribute `inputs` to one of them",
            )
        if name in TEXT_METHODS and TEXT_METHODS[name] is not cls:
            _fail(
                "register_text_method",
                "name",
                f"{name!r} is already registered to {TEXT_METHODS[name].__name__}",
                "method names are unique",
                "choose another name",
            )
        cls.name, cls.summary, cls.paper = name, summary, paper
        TEXT_METHODS[name] = cls
        return cls

    return deco


def list_text_methods() -> list[str]:
    return sorted(TEXT_METHODS)


def create_text_method(name: str, **params) -> TextMethod:
    """Instantiate a registered text method by name with keyword ``params``."""
    if name not in TEXT_METHODS:
        _fail(
            "create_text_method",
            "name",
            f"is {name!r}",
            f"known text methods are {list_text_methods()}",
            "pick one of them (or import the module that registers yours)",
        )
    cls = TEXT_METHODS[name]
    sig = inspect.signature(cls.__init__)
    accepts_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    allowed = [p for p, v in sig.parameters.items() if p != "self" and v.kind is not v.VAR_KEYWORD]
    unknown = [k for k in params if k not in allowed]
    if unknown and not accepts_kw:
        _fail(
            "create_text_method",
            "params",
            f"contain {unknown} for method {name!r}",
            f"{name!r} accepts {allowed}",
            "remove or rename the unknown parameters",
        )
    return cls(**params)
