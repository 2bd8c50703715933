"""sentence-transformers interop: any registered contrastive loss as a sentence-transformers
training loss, and export of a ``TextEncoder`` as a sentence-transformers model folder.

sentence-transformers (v6) calls a training loss as ``loss(sentence_features, labels)``:
``sentence_features`` is one tokenized feature dict per input column of the data set
(anchor, positive, negative_1, ...), ``labels`` the "label"/"score" column or ``None``
(``SentenceTransformerTrainer.compute_loss`` -> ``collect_features``); the loss keeps the
model as ``self.model`` (the trainer swaps in its wrapped model there) and embeds each
column with ``model(features)["sentence_embedding"]``, as ``MultipleNegativesRankingLoss``
does. :class:`STLoss` follows that protocol and hands the column embeddings to a
contrastkit loss according to the loss's ``inputs`` kind (see :class:`STLoss`).

sentence-transformers is imported inside functions only.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from contrastkit.core.validation import _fail
from contrastkit.registry import create_loss, list_losses

OWNER = "STLoss"
EXTRA_COLUMNS = ("negatives", "views")
SUPPORTED = (
    "views",
    "labels",
    "two_tower",
    "relevance",
    "one_to_many",
    "targets",
    "modalities",
)

# inputs kind -> why the wrapper cannot feed it from sentence-transformers columns
REFUSED = {
    "prediction": "it needs a predictor head and a target network (BYOL/SimSiam), not columns "
    "of one model; train it with contrastkit's own loop",
    "index": "it needs each example's position in the data set (index=) to update per-sample "
    "state, which sentence-transformers batches do not carry",
    "sequence": "it works on token-level hidden states and LM logits, not sentence embeddings",
    "scores": "it needs an (N, N) matrix of soft pair scores per batch, which a "
    "sentence-transformers label column cannot hold",
}


def _refusal(kind: str) -> str | None:
    """Why a loss of this ``inputs`` kind cannot be wrapped (None when it can)."""
    if kind in SUPPORTED:
        return None
    return REFUSED.get(kind, f"its inputs kind {kind!r} has no column mapping in STLoss yet")


def _loss_module(loss, params: dict) -> nn.Module:
    if isinstance(loss, str):
        return create_loss(loss, **params)
    if isinstance(loss, nn.Module):
        if params:
            _fail(
                OWNER,
                "params",
                f"are {sorted(params)} with an already built loss module",
                "keyword parameters only configure a loss given by name",
                "pass STLoss(model, 'infonce', temperature=0.05) or build the module yourself",
            )
        return loss
    _fail(
        OWNER,
        "loss",
        f"is a {type(loss).__name__}",
        "it must be a registered loss name or a contrastkit loss module",
        f"pass one of {list_losses()}",
        TypeError,
    )


def _accepts(module: nn.Module, arg: str) -> bool:
    fn = getattr(type(module), "function", None)
    sig = inspect.signature(fn if fn is not None else module.forward)
    return arg in sig.parameters


class STLoss(nn.Module):
    """A contrastkit loss as a sentence-transformers training loss.

    ``STLoss(model, "infonce", temperature=0.05)`` builds the registered loss with
    ``params`` (or takes a built loss module) and, on ``forward(sentence_features,
    labels)``, embeds every column with ``model`` and calls the loss by its ``inputs``:

    * ``"views"`` (infonce, dcl, dclw, hcl, ...): columns 1 and 2 (anchor, positive) are
      two views of the same sample; columns 3.. are hard negatives passed as
      ``negatives=`` (stacked), when the loss takes them; ``extra_columns="views"``
      passes every column as a view instead (multi-view losses);
    * ``"labels"`` (supcon, triplet, simlap): the columns are views, ``labels`` (N,)
      integer classes; a single column with labels is SupCon's one-view form; with two
      or more columns and no labels each pair is its own class;
    * ``"two_tower"`` (clip, moco, siglip, m3col): ``loss(anchor, positive)``, columns
      3.. as ``negatives=`` when the loss takes them;
    * ``"relevance"`` (listwise_wasserstein): ``(query, doc_1 .. doc_G)`` columns with
      ``labels`` (N, G) grades;
    * ``"one_to_many"`` (one_to_k): ``(anchor, positive_1 .. positive_K)``;
    * ``"targets"`` (supremix): the columns are views, ``labels`` (N,) continuous targets;
    * ``"modalities"`` (symile, pairwise_clip): one column per modality.

    Losses whose extra per-batch inputs have defaults (``debcse``'s ``weights=``,
    ``multicsr``'s ``frozen_similarity=``) run without them, i.e. as their plain
    InfoNCE core; pass a built module and call it yourself to supply them.

    Refused, with the reason, at construction: ``"prediction"`` (byol, simsiam),
    ``"index"`` (isogclr, sogclr), ``"sequence"`` (simctg), ``"scores"`` (soft_supcon),
    and any other kind without a mapping.

    With ``"clip"``, ``symmetric=False`` and ``temperature=0.05`` the wrapper computes
    sentence-transformers' ``MultipleNegativesRankingLoss`` (scale 20, cosine): one
    direction, anchor against all positives and all hard negatives of the batch. Note that
    ``"infonce"`` is NT-Xent, which is a different objective: both columns are anchors
    and the same-column rows are negatives too (SimCLR's 2N x (2N - 1) form).
    """

    def __init__(self, model, loss="infonce", *, extra_columns="negatives", **params):
        super().__init__()
        self.model = model
        self.loss = _loss_module(loss, params)
        self.kind = getattr(type(self.loss), "inputs", "views")
        why = _refusal(self.kind)
        if why is not None:
            _fail(
                OWNER,
                "loss",
                f"is {type(self.loss).__name__} (inputs={self.kind!r})",
                f"sentence-transformers columns cannot feed it: {why}",
                "pick a loss whose inputs are views, labels, two_tower, relevance, "
                "one_to_many, targets or modalities",
            )
        if extra_columns not in EXTRA_COLUMNS:
            _fail(
                OWNER,
                "extra_columns",
                f"is {extra_columns!r}",
                f"it must be one of {EXTRA_COLUMNS}",
                "pass 'negatives' (columns 3.. are hard negatives) or 'views'",
            )
        self.extra_columns = extra_columns

    def embed(self, sentence_features) -> list[torch.Tensor]:
        """One ``(N, D)`` embedding per column, each through ``self.model``."""
        features = list(sentence_features)
        if not features:
            _fail(OWNER, "sentence_features", "is empty", "pass one dict per column", "check")
        return [self.model(f)["sentence_embedding"] for f in features]

    def forward(self, sentence_features, labels=None) -> torch.Tensor:
        return self.compute_loss_from_embeddings(self.embed(sentence_features), labels)

    def compute_loss_from_embeddings(self, embeddings: list[torch.Tensor], labels=None):
        """The wrapped loss on column embeddings (the mapping in the class docstring)."""
        cols = list(embeddings)
        kind, loss = self.kind, self.loss
        if kind in ("views", "labels", "targets"):
            return self._views(cols, labels)
        if kind == "two_tower":
            self._need(cols, 2, "(anchor, positive[, negative_1, ...])")
            extra = self._negatives(cols[2:])
            return loss(cols[0], cols[1], **extra)
        if kind in ("relevance", "one_to_many"):
            self._need(cols, 2, "(query, doc_1[, doc_2, ...])")
            grouped = torch.stack(cols[1:], dim=1)
            if kind == "one_to_many":
                return loss(cols[0], grouped)
            if labels is None:
                _fail(
                    OWNER,
                    "labels",
                    "is None",
                    f"{type(loss).__name__} needs (N, G) relevance grades, one per document column",
                    "add a label column holding each row's list of G grades",
                )
            rel = torch.as_tensor(labels, device=grouped.device).reshape(grouped.shape[:2])
            return loss(cols[0], grouped, relevance=rel)
        return loss(*cols)  # modalities

    def _views(self, cols, labels):
        kind, loss = self.kind, self.loss
        if self.extra_columns == "views" or kind == "targets":
            views, rest = cols, []
        else:
            views, rest = cols[:2], cols[2:]
        kwargs = self._negatives(rest)
        if kind == "labels":
            if labels is None:
                if len(views) < 2:
                    _fail(
                        OWNER,
                        "labels",
                        "is None with a single column",
                        f"{type(loss).__name__} needs class labels to find positives",
                        "add an integer 'label' column, or pass (anchor, positive) columns",
                    )
                labels = torch.arange(views[0].shape[0], device=views[0].device)
            kwargs["labels"] = torch.as_tensor(labels, device=views[0].device).long()
        elif kind == "targets":
            if labels is None:
                _fail(
                    OWNER,
                    "labels",
                    "is None",
                    f"{type(loss).__name__} needs continuous targets (N,)",
                    "add a float 'score' / 'label' column",
                )
            kwargs["targets"] = torch.as_tensor(labels, device=views[0].device)
        elif len(views) < 2:
            self._need(views, 2, "(anchor, positive[, negative_1, ...])")
        return loss(*views, **kwargs)

    def _negatives(self, rest) -> dict:
        if not rest:
            return {}
        if not _accepts(self.loss, "negatives"):
            _fail(
                OWNER,
                "sentence_features",
                f"hold {len(rest)} column(s) after (anchor, positive)",
                f"{type(self.loss).__name__} takes no extra negatives",
                "drop the negative columns, pick a loss with negatives= (infonce, dcl, "
                "supcon, clip, moco), or extra_columns='views' for a multi-view loss",
            )
        return {"negatives": torch.cat(rest, 0)}

    def _need(self, cols, n: int, layout: str) -> None:
        if len(cols) < n:
            _fail(
                OWNER,
                "sentence_features",
                f"hold {len(cols)} column(s)",
                f"{type(self.loss).__name__} needs at least {n}: {layout}",
                "add the missing column(s) to the data set",
            )

    def get_config_dict(self) -> dict:
        """What sentence-transformers writes into the model card."""
        cfg = self.loss.get_config() if hasattr(self.loss, "get_config") else {}
        return {"loss": type(self.loss).__name__, "extra_columns": self.extra_columns, **cfg}


def supported_losses() -> dict[str, str]:
    """Every registered loss name -> its ``inputs`` kind, or ``"refused: <reason>"``."""
    from contrastkit.registry import loss_info

    out = {}
    for name in list_losses():
        kind = getattr(loss_info(name).cls, "inputs", "views")
        why = _refusal(kind)
        out[name] = kind if why is None else f"refused: {why}"
    return out


def export_sentence_transformer(encoder, path):
    """Write ``encoder`` (a ``TextEncoder`` or a ``SentenceTransformer``) as a folder that
    ``sentence_transformers.SentenceTransformer(path)`` loads; returns the path.

    A ``TextEncoder`` is saved by ``TextEncoder.save`` (transformer weights, tokenizer,
    ``modules.json``, pooling and normalisation configs); a ``SentenceTransformer`` by its
    own ``save``."""
    from pathlib import Path

    from contrastkit.text.encoder import TextEncoder

    path = Path(path)
    if isinstance(encoder, TextEncoder):
        return encoder.save(path)
    if hasattr(encoder, "save") and hasattr(encoder, "encode") and hasattr(encoder, "tokenize"):
        encoder.save(str(path))
        return path
    _fail(
        "export_sentence_transformer",
        "encoder",
        f"is a {type(encoder).__name__}",
        "it must be a contrastkit TextEncoder or a sentence_transformers.SentenceTransformer",
        "pass the encoder you trained",
        TypeError,
    )
