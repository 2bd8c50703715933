"""Contriever-style unsupervised dense-retrieval training and list-wise graded fine-tuning.

``contriever`` (Izacard et al., "Unsupervised Dense Information Retrieval with Contrastive
Learning", TMLR 2022; code facebookresearch/contriever ``src/data.py::randomcrop`` and
``deleteword``, ``src/moco.py::MoCo``, ``src/inbatch.py::InBatch``): two independent random
crops of each document are the query and the key; queries go through the trained encoder,
keys through a momentum copy of it, and a FIFO queue of past keys supplies the negatives of
an InfoNCE loss at temperature 0.05 on unnormalised dot products.

``listwise_graded``: supervised fine-tuning on graded relevance labels with the registered
list-wise 2-Wasserstein loss (``contrastkit.losses.listwise``; SyCL, Esfandiarpoor et al.,
Findings of EMNLP 2025).

What differs from the released Contriever code, and why:

* the queue starts empty and is filled by the keys (``engine.MemoryQueue``); the code
  starts it with random unit vectors. While it is empty (the first step only) the other
  keys of the batch are the negatives, so no step trains against noise;
* the momentum update runs in ``after_step`` (after each optimizer step) instead of at the
  start of the next forward; without gradient accumulation the sequence of key-encoder
  weights is the same (the code's first update is a no-op, because the copy equals the
  query encoder); with accumulation the code updates once per micro-batch, this once per
  optimizer step;
* each example is one document (its first ``chunk_length`` tokens after a random offset)
  rather than a 256-token chunk of the concatenated corpus; pre-chunk long texts to get
  the code's sampling;
* a crop keeps at least one token (``min_length=1``); the code's ``int(len * ratio)`` can
  be 0 on documents shorter than ``1 / ratio_min`` tokens, which gives every such crop the
  same ``[CLS] [SEP]`` embedding; likewise, when token deletion removes every token of a
  crop, its first token is kept.

The paper itself could not be read in this session (only the code and a summary of the
paper); the defaults below follow the paper where the summary states it (crop ratios
10%-50%, token deletion with probability 0.1, temperature 0.05, MoCo) and say where the
released script differs.
"""

from __future__ import annotations

import copy

import torch

from contrastkit.core.similarity import SIMILARITIES
from contrastkit.core.validation import (
    _fail,
    check_choice,
    check_in_range,
    check_temperature,
)
from contrastkit.engine.queue import MemoryQueue
from contrastkit.functional import moco
from contrastkit.losses.base import SeededDraws
from contrastkit.text.methods import TextMethod, register_text_method

KEY_PREFIX = "key_encoder."


def _check_ratios(ratio_min, ratio_max, owner: str) -> tuple[float, float]:
    lo = check_in_range(ratio_min, owner, "ratio_min", 0.0, 1.0, "pass e.g. ratio_min=0.1")
    hi = check_in_range(ratio_max, owner, "ratio_max", 0.0, 1.0, "pass e.g. ratio_max=0.5")
    if lo > hi:
        _fail(
            owner,
            "ratio_min",
            f"is {lo} > ratio_max={hi}",
            "the crop ratio is drawn from U(ratio_min, ratio_max)",
            "pass ratio_min <= ratio_max, e.g. 0.1 and 0.5",
        )
    return lo, hi


def random_crop(
    token_ids,
    ratio_min: float = 0.1,
    ratio_max: float = 0.5,
    generator: torch.Generator | None = None,
    min_length: int = 0,
):
    """One random contiguous span of ``token_ids`` (Contriever's independent cropping;
    Izacard et al., TMLR 2022, Sec. 3.2; code ``src/data.py::randomcrop``).

    The code's rule, kept exactly: ``ratio ~ U(ratio_min, ratio_max)``,
    ``length = int(len(x) * ratio)`` (floor), ``start`` uniform on the integers
    ``0 .. len(x) - length`` inclusive, crop ``x[start : start + length]``. Two calls give
    the two *independent* crops of a positive pair (they may overlap or coincide, unlike
    the inverse cloze task). ``min_length`` raises the length to at least that many tokens
    (capped by ``len(x)``); ``0`` is the code, whose crop is empty when
    ``len(x) * ratio < 1``.

    ``token_ids``: a list of ints or a 1-D tensor (returned as the same kind), without
    special tokens. Draws come from ``generator`` (torch's global one when ``None``): one
    float64 uniform for the ratio, then one integer for the start.
    """
    owner = "random_crop"
    lo, hi = _check_ratios(ratio_min, ratio_max, owner)
    if isinstance(token_ids, torch.Tensor):
        if token_ids.dim() != 1:
            _fail(
                owner,
                "token_ids",
                f"has shape {tuple(token_ids.shape)}",
                "it must be one document's token ids, a 1-D sequence",
                "crop each document separately",
            )
        n = int(token_ids.shape[0])
    elif isinstance(token_ids, (list, tuple)):
        n = len(token_ids)
    else:
        _fail(
            owner,
            "token_ids",
            f"is a {type(token_ids).__name__}",
            "it must be a list of token ids or a 1-D tensor",
            "pass tokenizer(text, add_special_tokens=False)['input_ids']",
            TypeError,
        )
    if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 0:
        _fail(owner, "min_length", f"is {min_length!r}", "it must be an int >= 0", "pass 0 or 1")
    u = torch.rand((), generator=generator, dtype=torch.float64).item()
    length = int(n * (lo + (hi - lo) * u))
    length = min(max(length, min_length), n)
    start = int(torch.randint(0, n - length + 1, (), generator=generator))
    return token_ids[start : start + length]


def delete_tokens(token_ids, p: float, generator: torch.Generator | None = None):
    """Drop each token independently with probability ``p`` (Contriever's ``delete``
    augmentation, code ``src/data.py::deleteword``: keep a token when its uniform draw
    is ``> p``). Returns a list."""
    if p <= 0 or len(token_ids) == 0:
        return list(token_ids)
    keep = torch.rand(len(token_ids), generator=generator, dtype=torch.float64) > p
    return [t for t, k in zip(list(token_ids), keep.tolist(), strict=True) if k]


def contriever_loss(query, key, *, queue=None, temperature=0.05, similarity="dot"):
    """Contriever's InfoNCE (code ``src/moco.py::MoCo._compute_logits`` and
    ``src/inbatch.py::InBatch``), one direction, query -> key, as ``functional.moco``:

    * with ``queue`` (M, D): ``logits_i = [q_i . k_i, q_i . queue] / t``, label 0; only
      the queue supplies negatives (MoCo);
    * without: ``logits_i = q_i . k_j / t`` over the batch's keys, label i (in-batch).

    Scores are unnormalised dot products by default (the released script sets neither
    ``--norm_query`` nor ``--norm_doc``); ``similarity="cosine"`` normalises both sides.
    """
    return moco(query, key, negatives=queue, temperature=temperature, similarity=similarity)


def _documents(batch, owner: str) -> list[str]:
    if not isinstance(batch, (list, tuple)) or len(batch) == 0:
        _fail(
            owner,
            "batch",
            f"is {type(batch).__name__} of length {len(batch) if hasattr(batch, '__len__') else '?'}",
            "it must be a non-empty list of document strings",
            "pass e.g. ['first document ...', 'second document ...']",
            TypeError if not isinstance(batch, (list, tuple)) else ValueError,
        )
    for i, doc in enumerate(batch):
        if not isinstance(doc, str) or not doc.strip():
            _fail(
                owner,
                f"batch[{i}]",
                f"is {doc!r}",
                "every example of a 'documents' method is a non-empty string",
                "drop empty lines before training",
                TypeError if not isinstance(doc, str) else ValueError,
            )
    return list(batch)


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single text (``[CLS]`` / ``[SEP]`` for
    BERT, the code's ``add_bos_eos``), found by tokenizing a probe with and without them."""
    probe = "hello"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return full[:i], full[i + len(bare) :]
    return [], []  # pragma: no cover - a tokenizer that rewrites the text itself


def crop_features(tokenizer, spans: list[list[int]], max_length: int) -> dict:
    """Token-id spans -> padded model inputs: each span (cut to fit ``max_length``) wrapped
    in the tokenizer's special tokens (see :func:`special_tokens`), right-padded."""
    head, tail = special_tokens(tokenizer)
    room = max(max_length - len(head) - len(tail), 0)
    rows = [head + list(s)[:room] + tail for s in spans]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    features = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in getattr(tokenizer, "model_input_names", ()):
        features["token_type_ids"] = torch.zeros_like(ids)
    return features


@register_text_method(
    "contriever",
    summary="Independent random crops, momentum key encoder and key queue, InfoNCE at t=0.05",
    paper="Izacard et al. 2022 (TMLR), Unsupervised Dense Information Retrieval with "
    "Contrastive Learning",
)
class Contriever(SeededDraws, TextMethod):
    """Contriever's unsupervised training on raw documents (MoCo variant by default).

    Per document: its token ids (no special tokens; the first ``chunk_length`` after a
    random offset when longer), two independent :func:`random_crop` spans, token deletion
    with probability ``delete_prob`` on each, then the tokenizer's special tokens. Query
    = crop 1 through ``encoder``; key = crop 2 through the key encoder, without gradient.

    ``momentum`` (default 0.999): the key encoder is a deep copy of ``encoder`` made at
    the first batch, updated in :meth:`after_step` as ``k <- m k + (1 - m) q`` over the
    parameters (code ``MoCo._momentum_update_key_encoder``); it follows the encoder's
    train/eval mode, so in training keys are computed with dropout, as the code does.
    ``momentum=None`` is the in-batch variant (code ``inbatch.py``): one shared encoder
    computes queries and keys, both with gradient, negatives are the batch's other keys;
    it takes no queue.

    ``queue_size`` (default 4096): keys of past batches kept as negatives
    (``engine.MemoryQueue``, FIFO, saved in ``state_dict``); 0 keeps only the batch's own
    keys (MoCo with in-batch negatives, the "without queue" row). The paper's run keeps
    131072 keys for a global batch of 2048, i.e. 64 batches; 4096 is the same 64 batches
    at batch 64. On a corpus smaller than the queue, old keys of the very document being
    trained on sit in the queue as negatives; keep ``queue_size`` well below the number
    of documents.

    Defaults: ``ratio_min=0.1`` (paper; the released script ``contriever.sh`` uses 0.05),
    ``ratio_max=0.5``, ``delete_prob=0.1`` (script and paper summary), ``temperature=0.05``,
    ``similarity="dot"`` (script: no normalisation; an encoder that normalises its
    output, as all-MiniLM-L6-v2 does by its folder's settings, makes it cosine: pass
    ``normalize=False`` to the encoder for the script's raw dot products),
    ``momentum=0.999`` (the script uses 0.9995 over 500k steps; 0.999 suits runs of
    hundreds of steps). ``seed`` seeds the
    method's own generator for crops and deletions (saved in ``state_dict``).

    The key encoder, the queue and the generator are all in ``state_dict``: a method
    restored from a checkpoint with ``load_state_dict`` (before its first batch) rebuilds
    its key encoder from the saved weights at the next :meth:`bind` / batch, so training
    resumes exactly.
    """

    inputs = "documents"
    default_lr = 5e-5  # the released script (contriever.sh)

    def __init__(
        self,
        temperature=0.05,
        momentum=0.999,
        queue_size=4096,
        ratio_min=0.1,
        ratio_max=0.5,
        delete_prob=0.1,
        chunk_length=256,
        similarity="dot",
        seed=0,
    ):
        super().__init__()
        owner = "Contriever"
        self.temperature = check_temperature(temperature, owner)
        if momentum is not None:
            momentum = check_in_range(momentum, owner, "momentum", 0.0, 1.0, "pass 0.999")
        self.momentum = momentum
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 0:
            _fail(owner, "queue_size", f"is {queue_size!r}", "it must be an int >= 0", "pass 4096")
        if momentum is None and queue_size > 0:
            _fail(
                owner,
                "queue_size",
                f"is {queue_size} with momentum=None",
                "the in-batch variant (shared encoder) keeps no queue of keys",
                "pass queue_size=0 with momentum=None, or a momentum such as 0.999",
            )
        self.queue_size = queue_size
        self.ratio_min, self.ratio_max = _check_ratios(ratio_min, ratio_max, owner)
        self.delete_prob = check_in_range(
            delete_prob, owner, "delete_prob", 0.0, 1.0, "pass 0.1 (or 0 for none)"
        )
        if self.delete_prob >= 1.0:
            _fail(owner, "delete_prob", "is 1.0", "it would delete every token", "pass 0.1")
        if isinstance(chunk_length, bool) or not isinstance(chunk_length, int) or chunk_length < 1:
            _fail(owner, "chunk_length", f"is {chunk_length!r}", "it must be an int >= 1", "256")
        self.chunk_length = chunk_length
        self.similarity = check_choice(similarity, owner, "similarity", SIMILARITIES)
        self._init_generator(seed)
        self.queue = MemoryQueue(queue_size) if queue_size > 0 else None
        self.key_encoder = None
        self._pending_key_state = None

    # ------------------------------------------------------------------ key encoder
    def bind(self, encoder) -> None:
        """Create the momentum key encoder from ``encoder`` (once); a key-encoder state
        loaded before this point is applied now."""
        if self.momentum is None or self.key_encoder is not None:
            return
        key = copy.deepcopy(encoder)
        for p in key.parameters():
            p.requires_grad_(False)
        if self._pending_key_state is not None:
            key.load_state_dict(self._pending_key_state)
            self._pending_key_state = None
        self.key_encoder = key

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A fresh method has no key encoder yet: keep its saved weights for bind().
        if self.key_encoder is None:
            full = prefix + KEY_PREFIX
            saved = {
                k[len(full) :]: state_dict.pop(k) for k in list(state_dict) if k.startswith(full)
            }
            if saved:
                self._pending_key_state = saved
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def after_step(self, encoder) -> None:
        """Momentum update ``k <- m k + (1 - m) q`` of every key-encoder parameter."""
        if self.momentum is None:
            return
        self.bind(encoder)
        online = dict(encoder.named_parameters())
        for name, pk in self.key_encoder.named_parameters():
            pk.mul_(self.momentum).add_(online[name].detach(), alpha=1.0 - self.momentum)

    # ------------------------------------------------------------------ views
    def crop_pair(self, token_ids: list[int]) -> tuple[list[int], list[int]]:
        """The (query, key) spans of one document's token ids."""
        g = self.generator
        ids = list(token_ids)
        if len(ids) > self.chunk_length:  # a random window, as the code's random chunk offset
            off = int(torch.randint(0, len(ids) - self.chunk_length + 1, (), generator=g))
            ids = ids[off : off + self.chunk_length]
        spans = []
        for _ in range(2):
            span = random_crop(ids, self.ratio_min, self.ratio_max, g, min_length=1)
            spans.append(delete_tokens(span, self.delete_prob, g) or span[:1])
        return spans[0], spans[1]

    def views(self, encoder, batch) -> tuple[dict, dict]:
        """Model inputs of the query crops and the key crops of ``batch``."""
        docs = _documents(batch, "Contriever.batch_loss")
        tok = encoder.tokenizer
        ids = tok(docs, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        pairs = [self.crop_pair(x) for x in ids]
        q = crop_features(tok, [p[0] for p in pairs], encoder.max_length)
        k = crop_features(tok, [p[1] for p in pairs], encoder.max_length)
        return q, k

    # ------------------------------------------------------------------ loss
    def batch_loss(self, encoder, batch: list) -> torch.Tensor:
        q_features, k_features = self.views(encoder, batch)
        q = encoder(q_features)
        if self.momentum is None:
            k = encoder(k_features)
        else:
            self.bind(encoder)
            self.key_encoder.train(encoder.training)  # dropout on keys, as the code
            with torch.no_grad():
                k = self.key_encoder(k_features)
        negatives = self.queue.get(like=k) if self.queue is not None else None
        loss = contriever_loss(
            q, k, queue=negatives, temperature=self.temperature, similarity=self.similarity
        )
        if self.queue is not None and encoder.training:
            self.queue.push(k)  # after the loss: this batch's keys are not its own negatives
        return loss


def _graded(batch, owner: str):
    if not isinstance(batch, (list, tuple)) or len(batch) == 0:
        _fail(
            owner,
            "batch",
            f"is {batch!r:.60}",
            "it must be a non-empty list of (query, [docs], [grades]) examples",
            "pass e.g. [('q', ['d1', 'd2'], [3, 0])]",
            TypeError,
        )
    groups = set()
    for i, ex in enumerate(batch):
        ok = isinstance(ex, (list, tuple)) and len(ex) == 3 and isinstance(ex[0], str)
        ok = ok and isinstance(ex[1], (list, tuple)) and isinstance(ex[2], (list, tuple))
        if not ok or len(ex[1]) != len(ex[2]) or not all(isinstance(d, str) for d in ex[1]):
            _fail(
                owner,
                f"batch[{i}]",
                f"is {ex!r:.80}",
                "each example is (query: str, docs: list[str], grades: list[number]) "
                "with one grade per document",
                "pass e.g. ('what is x', ['x is ...', 'y is ...'], [2, 0])",
                TypeError,
            )
        groups.add(len(ex[1]))
    if len(groups) != 1:
        _fail(
            owner,
            "batch",
            f"has groups of {sorted(groups)} documents",
            "every query of a batch needs the same number G of graded documents",
            "pad each group with grade-0 documents or trim them to a common G",
        )
    return batch


@register_text_method(
    "listwise_graded",
    summary="Supervised list-wise 2-Wasserstein fine-tuning on graded relevance labels",
    paper="Esfandiarpoor et al. 2025 (Findings of EMNLP), Beyond Contrastive Learning: "
    "Synthetic Data Enables List-wise Training with Multiple Levels of Relevance",
)
class ListwiseGraded(TextMethod):
    """Graded-relevance fine-tuning with the registered ``listwise_wasserstein`` loss.

    Each example is ``(query, [doc_1 .. doc_G], [grade_1 .. grade_G])``; the encoder embeds
    the B queries and the B * G documents, and
    ``ListwiseWasserstein(**params)(queries, docs (B, G, D), relevance=(B, G))`` is the
    loss (other queries' documents are grade-0 candidates unless
    ``in_batch_negatives=False``). ``params`` go to the loss: ``temperature`` (0.05),
    ``variant`` ("paper" per-query W2, or "official_code", the SyCL code's batch Fréchet
    distance), ``in_batch_negatives``, ``similarity``, ``reduction``. See
    ``contrastkit.losses.listwise`` for the formulas and the paper-vs-code difference.
    """

    inputs = "graded"
    default_lr = 1e-5  # SyCL's fine-tuning learning rate

    def __init__(self, **params):
        super().__init__()
        from contrastkit.registry import create_loss

        self.loss = create_loss("listwise_wasserstein", **params)

    def batch_loss(self, encoder, batch: list) -> torch.Tensor:
        batch = _graded(batch, "ListwiseGraded.batch_loss")
        b, g = len(batch), len(batch[0][1])
        queries = encoder(encoder.tokenize([ex[0] for ex in batch]))
        docs = encoder(encoder.tokenize([d for ex in batch for d in ex[1]]))
        relevance = torch.tensor([list(ex[2]) for ex in batch], dtype=queries.dtype)
        return self.loss(queries, docs.reshape(b, g, -1), relevance=relevance.to(docs.device))
