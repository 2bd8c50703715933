"""Tiny seeded float64 GPT-2 and Llama causal LMs and left padding, shared by the
decoding tests (import after ``pytest.importorskip("transformers")``)."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
VOCAB = 40
PAD = 0


def gpt2():
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=VOCAB,
        n_positions=64,
        initializer_range=0.3,
        bos_token_id=1,
        eos_token_id=1,
    )
    return GPT2LMHeadModel(config).double().eval()


def llama():
    torch.manual_seed(1)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        initializer_range=0.3,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=PAD,
    )
    return LlamaForCausalLM(config).double().eval()


MODELS = {"gpt2": gpt2, "llama": llama}


def left_pad(prompts, pad=PAD):
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return ids, mask
