"""The cached-gradient encoder pass (GradCache): exact gradients, random-state replay,
BatchNorm buffers, bad input, and its use in the training loop and CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import contrastkit.engine.grad_cache as gc_module
from conftest import Interrupt, stop_after
from contrastkit import create_loss
from contrastkit.engine import RandContext, cached_backward
from contrastkit.train import TrainConfig, apply_overrides, load_checkpoint, train

N, D_IN, D_OUT = 10, 6, 5
CHUNKS = [1, 3, 4, 5, 16]  # 3 and 4 leave an uneven last chunk; 16 > N is one chunk
ATOL = 1e-10


def mlp(p: float = 0.3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(D_IN, 16), nn.Tanh(), nn.Dropout(p), nn.Linear(16, D_OUT)
    ).double()


class Case:
    """An objective as ``cached_backward`` sees it: inputs, an encoder, a loss closure,
    and every parameter that must receive a gradient (encoders and the loss's own)."""

    def __init__(self, name: str):
        g = torch.Generator().manual_seed(1)
        x1 = torch.randn(N, D_IN, generator=g, dtype=torch.float64)
        x2 = x1 + 0.3 * torch.randn(N, D_IN, generator=g, dtype=torch.float64)
        self.inputs = (x1, x2)
        self.net = mlp()
        self.modules = [self.net]
        labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3])
        if name == "infonce":
            loss = create_loss("infonce", temperature=0.2)
            self.encode = lambda a, b: (self.net(a), self.net(b))
            self.loss_fn = loss
        elif name == "supcon":
            loss = create_loss("supcon", temperature=0.2)
            self.encode = lambda a, b: (self.net(a), self.net(b))
            self.loss_fn = lambda z1, z2: loss(z1, z2, labels=labels)
        elif name == "clip":  # two towers and a learnable temperature
            loss = create_loss("clip", temperature=0.1, learnable=True).double()
            self.key_net = mlp(seed=1)
            self.modules = [self.net, self.key_net, loss]
            self.encode = lambda a, b: (self.net(a), self.key_net(b))
            self.loss_fn = loss
        elif name == "barlowtwins":
            loss = create_loss("barlowtwins")
            self.encode = lambda a, b: (self.net(a), self.net(b))
            self.loss_fn = loss
        elif name in ("byol", "simsiam"):  # a predictor head inside the loss closure
            loss = create_loss(name)
            torch.manual_seed(2)
            predictor = nn.Sequential(nn.Linear(D_OUT, 8), nn.ReLU(), nn.Linear(8, D_OUT))
            predictor = predictor.double()
            self.modules = [self.net, predictor]
            self.encode = lambda a, b: (self.net(a), self.net(b))
            self.loss_fn = lambda z1, z2: 0.5 * (loss(predictor(z1), z2) + loss(predictor(z2), z1))
        else:
            raise KeyError(name)

    def params(self) -> list[torch.Tensor]:
        return [p for m in self.modules for p in m.parameters()]

    def zero(self) -> None:
        for p in self.params():
            p.grad = None

    def grads(self) -> list[torch.Tensor]:
        return [p.grad.clone() for p in self.params()]

    def reference(self, chunk: int | None, seed: int = 7):
        """Plain autograd: the encoder applied to row chunks (all rows when None), with
        graph, then one backward of the loss on the concatenation."""
        self.zero()
        torch.manual_seed(seed)
        size = chunk or N
        outs = [self.encode(*(t[i : i + size] for t in self.inputs)) for i in range(0, N, size)]
        loss = self.loss_fn(*(torch.cat(z) for z in zip(*outs, strict=True)))
        loss.backward()
        return loss.detach(), self.grads(), torch.get_rng_state()

    def cached(self, chunk: int, seed: int = 7, **kwargs):
        self.zero()
        torch.manual_seed(seed)
        loss = cached_backward(self.encode, self.inputs, self.loss_fn, chunk, **kwargs)
        return loss, self.grads(), torch.get_rng_state()


LOSSES = ["infonce", "supcon", "clip", "barlowtwins", "byol", "simsiam"]


def assert_close(a, b, atol=ATOL):
    (loss_a, grads_a, _), (loss_b, grads_b, _) = a, b
    assert not loss_b.requires_grad
    assert abs(float(loss_a) - float(loss_b)) <= atol
    assert len(grads_a) == len(grads_b)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        assert float((ga - gb).abs().max()) <= atol


def max_diff(a, b) -> float:
    return max(float((ga - gb).abs().max()) for ga, gb in zip(a[1], b[1], strict=True))


# ---------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("name", LOSSES)
def test_equals_full_batch_backward_without_dropout(name):
    case = Case(name)
    for m in case.modules:
        m.eval()  # dropout off: the encoder treats rows independently
    full = case.reference(None)
    for chunk in CHUNKS:
        assert_close(full, case.cached(chunk))


@pytest.mark.parametrize("name", LOSSES)
def test_dropout_is_replayed_exactly(name):
    case = Case(name)
    for chunk in CHUNKS:
        ref, got = case.reference(chunk), case.cached(chunk)
        assert_close(ref, got)
        # The global stream ends where the plain chunk-wise pass leaves it.
        assert torch.equal(ref[2], got[2])
    # Dropout is really active: another seed draws other masks, other gradients.
    assert max_diff(case.reference(3, seed=7), case.reference(3, seed=8)) > 1e-3


def test_without_rng_replay_the_gradients_differ(monkeypatch):
    case = Case("infonce")
    ref = case.reference(3)
    assert_close(ref, case.cached(3))

    class NoReplay(RandContext):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(gc_module, "RandContext", NoReplay)
    broken = case.cached(3)
    assert abs(float(ref[0]) - float(broken[0])) <= ATOL  # the loss is from step 1
    assert max_diff(ref, broken) > 1e-3  # the re-run used other dropout masks


def test_learnable_temperature_gets_its_gradient_from_the_loss_pass():
    case = Case("clip")
    loss_module = case.modules[-1]
    _, grads, _ = case.cached(4)
    scale_grad = grads[-1]
    assert scale_grad.abs().sum() > 0
    torch.testing.assert_close(scale_grad, case.reference(4)[1][-1], atol=ATOL, rtol=0)
    assert loss_module.logit_scale is not None


def test_explicit_generator_is_replayed():
    net = mlp(p=0.0)
    x = torch.randn(N, D_IN, dtype=torch.float64)
    loss_fn = create_loss("infonce", temperature=0.5)

    def encode(a, gen):
        noisy = a + 0.5 * torch.randn(a.shape, generator=gen, dtype=a.dtype)
        return net(a), net(noisy)

    def run(cached: bool):
        net.zero_grad()
        gen = torch.Generator().manual_seed(3)
        if cached:
            loss = cached_backward(lambda a: encode(a, gen), x, loss_fn, 4, generators=[gen])
        else:
            outs = [encode(x[i : i + 4], gen) for i in range(0, N, 4)]
            loss = loss_fn(*(torch.cat(z) for z in zip(*outs, strict=True)))
            loss.backward()
        return loss.detach(), [p.grad.clone() for p in net.parameters()], gen.get_state()

    ref, got = run(False), run(True)
    assert_close(ref, got)
    assert torch.equal(ref[2], got[2])

    net.zero_grad()  # not passing the generator: the re-run sees other noise
    gen = torch.Generator().manual_seed(3)
    cached_backward(lambda a: encode(a, gen), x, loss_fn, 4)
    assert (
        max(float((p.grad - g).abs().max()) for p, g in zip(net.parameters(), ref[1], strict=True))
        > 1e-3
    )


def test_gradients_accumulate_and_scaler_scales_them():
    case = Case("infonce")
    _, once, _ = case.cached(3)
    torch.manual_seed(7)
    cached_backward(case.encode, case.inputs, case.loss_fn, 3)  # adds to the .grad above
    for g, p in zip(once, case.params(), strict=True):
        torch.testing.assert_close(p.grad, 2 * g, atol=ATOL, rtol=0)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    loss, scaled, _ = case.cached(3, scaler=scaler)
    assert abs(float(loss) - float(case.reference(3)[0])) <= ATOL  # returned unscaled
    for g, s in zip(once, scaled, strict=True):
        torch.testing.assert_close(s, 8 * g, atol=1e-9, rtol=0)


def test_batchnorm_running_stats_update_once_per_chunk():
    def net_bn():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(D_IN, 8), nn.BatchNorm1d(8), nn.Tanh()).double()

    x = torch.randn(N, D_IN, dtype=torch.float64)
    loss_fn = create_loss("infonce", temperature=0.5)

    plain = net_bn()  # reference: plain autograd over the same chunks (4, 4, 2)
    outs = [plain(x[i : i + 4]) for i in range(0, N, 4)]
    loss_fn(torch.cat(outs), torch.cat(outs).flip(0)).backward()

    handled, unhandled = net_bn(), net_bn()
    for net, modules in ((handled, handled), (unhandled, ())):
        cached_backward(net, x, lambda z: loss_fn(z, z.flip(0)), 4, modules=modules)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(
            getattr(handled[1], name), getattr(plain[1], name), atol=ATOL, rtol=0
        )
    assert int(plain[1].num_batches_tracked) == 3
    assert int(unhandled[1].num_batches_tracked) == 6  # both passes update without modules=
    for a, b in zip(plain.parameters(), handled.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=ATOL, rtol=0)


def test_rand_context_replays_and_restores():
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(0)
    ctx = RandContext(generators=[gen])
    first = (torch.rand(3), torch.rand(3, generator=gen))
    after = (torch.get_rng_state(), gen.get_state())
    for _ in range(2):  # re-enterable
        with ctx:
            again = (torch.rand(3), torch.rand(3, generator=gen))
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
        assert torch.equal(after[0], torch.get_rng_state())
        assert torch.equal(after[1], gen.get_state())


# ---------------------------------------------------------------------------- bad input


def test_bad_arguments_name_the_argument_and_the_fix():
    net = mlp()
    x = torch.randn(N, D_IN, dtype=torch.float64)

    def loss(z):
        return z.pow(2).mean()

    cases = [
        (dict(chunk_size=0), ValueError, r"`chunk_size` is 0; it must be >= 1"),
        (dict(chunk_size=2.5), TypeError, "`chunk_size` is a float"),
        (dict(chunk_size=True), TypeError, "`chunk_size` is a bool"),
        (dict(inputs=[x, x[:4]]), ValueError, r"`inputs\[1\]` has 4 rows but inputs\[0\] has 10"),
        (dict(inputs=[]), ValueError, "`inputs` is empty"),
        (dict(inputs=x.numpy()), TypeError, "`inputs` is a ndarray"),
        (dict(inputs=[x, 3]), TypeError, r"`inputs\[1\]` is a int"),
        (dict(inputs=x[:0]), ValueError, "has 0 rows"),
        (dict(encode=3), TypeError, "`encode` is a int; it must be callable"),
        (dict(loss_fn=None), TypeError, "`loss_fn` is a NoneType"),
        (dict(generators=[1]), TypeError, r"`generators\[0\]` is a int"),
        (dict(modules=[net, "bn"]), TypeError, r"`modules\[1\]` is a str"),
        (dict(loss_fn=lambda z: z.sum(1)), ValueError, "returned a tensor of shape"),
        (dict(loss_fn=lambda z: 1.0), TypeError, "`loss_fn` returned a float"),
        (dict(loss_fn=lambda z: z.detach().sum()), ValueError, "does not require grad"),
        (dict(encode=lambda a: a.long()), TypeError, "dtype torch.int64"),
        (dict(encode=lambda a: [a.sum(1), "x"]), TypeError, "returned a str as output 1"),
        (dict(encode=lambda a: ()), TypeError, "returned an empty tuple"),
    ]
    for over, kind, pattern in cases:
        kwargs = {**dict(encode=net, inputs=x, loss_fn=loss, chunk_size=3), **over}
        with pytest.raises(kind, match=pattern) as e:
            cached_backward(**kwargs)
        assert str(e.value).startswith("cached_backward: ") and "Fix:" in str(e.value)


def test_encoder_that_changes_between_passes_is_caught():
    net, calls = mlp(), []

    def moody(a):  # the re-run of each chunk gives one row fewer
        calls.append(1)
        return net(a if len(calls) <= 4 else a[1:])

    x = torch.randn(N, D_IN, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"re-running chunk 0 \(rows 0:3\).*\(3, 5\)"):
        cached_backward(moody, x, lambda z: z.pow(2).mean(), 3)
    ragged = [net(torch.zeros(3, D_IN, dtype=torch.float64)), None]
    with pytest.raises(ValueError, match="returned 1 outputs for rows 3:6 but 2"):
        cached_backward(
            lambda a: (net(a), net(a)) if ragged.pop() is None else net(a),
            x,
            lambda *z: sum(t.sum() for t in z),
            3,
        )


# ---------------------------------------------------------------------------- training loop

TINY = {
    "epochs": 2,
    "batch_size": 64,
    "eval_every": 2,
    "progress": False,
    "threads": 1,
    "data": {"name": "digits", "subset": 300},
    "eval": {"linear_probe": False},
    "model": {"width": 64, "feature_dim": 32, "proj_hidden": 32, "proj_dim": 16, "pred_hidden": 16},
}


def tiny(**overrides) -> TrainConfig:
    return TrainConfig.from_dict(apply_overrides(TINY, overrides))


@pytest.fixture
def no_batchnorm(monkeypatch):
    """The loop's models with every BatchNorm replaced by Identity: then the encoder
    treats samples independently and chunking changes nothing but rounding."""
    import contrastkit.train.loop as loop

    build = loop.build_model

    def build_without_bn(*args, **kwargs):
        model = build(*args, **kwargs)
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.modules.batchnorm._BatchNorm):
                    setattr(module, name, nn.Identity())
        return model

    monkeypatch.setattr(loop, "build_model", build_without_bn)


# Objectives whose parameters all get a real gradient. (Barlow Twins standardises the
# projections, so the last projector bias has a zero true gradient; Adam turns its float
# rounding noise into lr-sized steps, and weights then differ by ~1e-2 although the
# float64 gradients agree to 1e-14.)
@pytest.mark.parametrize(
    "name, params",
    [("infonce", {}), ("clip", {"learnable": True}), ("byol", {}), ("moco", {"queue_size": 96})],
)
def test_training_matches_the_plain_loop_without_batchnorm(no_batchnorm, monkeypatch, name, params):
    import contrastkit.train.loop as loop

    calls = []

    def spy(encode, inputs, loss_fn, chunk_size, **kwargs):
        calls.append(chunk_size)
        return cached_backward(encode, inputs, loss_fn, chunk_size, **kwargs)

    monkeypatch.setattr(loop, "cached_backward", spy)
    over = {"loss.name": name, "loss.params": params}
    plain = train(tiny(**over))
    assert calls == []
    for chunk in (16, 24):  # 64 = 4 x 16; 64 = 24 + 24 + 16 (uneven)
        cached = train(tiny(**over, grad_cache_chunk=chunk))
        assert calls == [chunk] * 6  # 2 epochs x 3 steps, all through the cached pass
        calls.clear()
        # float32: parameter gradients are summed chunk by chunk instead of in one matmul,
        # so they agree to rounding (observed: losses 1e-7 relative, weights 5e-7).
        for a, b in zip(plain.history, cached.history, strict=True):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        for (k, a), b in zip(
            plain.model.state_dict().items(), cached.model.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5, msg=k)
        for a, b in zip(
            plain.loss_fn.state_dict().values(), cached.loss_fn.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_resume_is_exact_with_grad_cache(tmp_path):
    """The default models (with BatchNorm): chunked statistics, but a checkpointed run
    continues bit for bit, and the chunk size may change on resume."""
    over = {"epochs": 4, "loss.name": "byol", "grad_cache_chunk": 16}
    straight = train(tiny(**over, out=str(tmp_path / "a")))
    assert all(math.isfinite(h["loss"]) for h in straight.history)

    with pytest.raises(Interrupt):
        train(tiny(**over, out=str(tmp_path / "b")), callbacks=[stop_after(2)])
    ckpt = tmp_path / "b" / "checkpoint.pt"
    assert load_checkpoint(ckpt)["config"]["grad_cache_chunk"] == 16
    torch.manual_seed(99)
    resumed = train(tiny(**over, out=str(tmp_path / "b"), resume=str(ckpt)))
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    for a, b in zip(
        straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    # A memory setting: resuming with another chunk (or none) is allowed.
    train(tiny(**{**over, "grad_cache_chunk": 32}, out=str(tmp_path / "b"), resume=str(ckpt)))


def test_grad_cache_config_is_checked():
    assert tiny().grad_cache_chunk is None
    with pytest.raises(ValueError, match="`grad_cache_chunk` is 1, but it must be >= 2"):
        tiny(grad_cache_chunk=1)
    with pytest.raises(ValueError, match=r"`grad_cache_chunk` is 'x' \(str\)"):
        tiny(grad_cache_chunk="x")
    # 64 = 3 x 21 + 1: a last chunk of one sample
    with pytest.raises(ValueError, match=r"last chunk of 1 sample.*grad_cache_chunk=16"):
        train(tiny(grad_cache_chunk=21))


def test_cli_grad_cache_flag_and_set(tmp_path):
    from typer.testing import CliRunner

    from contrastkit.cli.main import app

    runner = CliRunner()
    small = ["--set", "data.subset=300", "--set", "batch_size=64", "--set", "threads=1"]
    small += ["--set", "model.width=32", "--set", "eval.linear_probe=false", "--no-progress"]
    for flag, out in ((["--grad-cache-chunk", "16"], "a"), (["--set", "grad_cache_chunk=16"], "b")):
        args = ["train", "--epochs", "1", "--out", str(tmp_path / out), *flag, *small]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        saved = load_checkpoint(tmp_path / out / "checkpoint.pt")["config"]
        assert saved["grad_cache_chunk"] == 16
        assert json.loads((tmp_path / out / "metrics.jsonl").read_text())["epoch"] == 1
    result = runner.invoke(app, ["train", "--grad-cache-chunk", "1", *small])
    assert result.exit_code == 2 and "grad_cache_chunk" in result.output
