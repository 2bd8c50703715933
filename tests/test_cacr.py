"""CACR (Zheng et al., TMLR 2023) against a scalar loop reference written from the
formula: value and gradient in float64, low precision, reductions, properties, errors."""

from __future__ import annotations

import math

import pytest
import torch

import contrastkit
import contrastkit.functional as F
from conftest import run_seed_script
from contrastkit.losses import CACR

N, D = 5, 4


def randn(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def views(v, n=N, seed=0):
    return [randn(n, D, seed=seed + k) for k in range(v)]


# ------------------------------------------------------------------ loop reference


def _unit(x):
    return x / x.norm()


def _sq_dist(a, b):
    return ((a - b) ** 2).sum()


def _softmax_expectation(logits, costs):
    """sum_k softmax(logits)_k * costs_k, one scalar at a time."""
    top = max(float(t.detach()) for t in logits)
    e = [torch.exp(t - top) for t in logits]
    total = sum(e)
    return sum(ek / total * c for ek, c in zip(e, costs, strict=True))


def ref_cacr(vs, alpha=1.0, beta=1.0, tau_plus=1.0, tau_minus=0.9, debiased=False, prior=0.1,
             detach=False):  # fmt: skip
    """Per sample i: mean over query views v of the attraction to the other views of i,
    plus the mean over view pairs v < w of the repulsion from view w of the others."""
    nv, n = len(vs), vs[0].shape[0]
    u = [[_unit(vs[v][i]) for i in range(n)] for v in range(nv)]
    per_sample = []
    for i in range(n):
        ca = 0.0
        for v in range(nv):
            costs = [_sq_dist(u[v][i], u[w][i]) for w in range(nv) if w != v]
            logits = [tau_plus * (c.detach() if detach else c) for c in costs]
            ca = ca + _softmax_expectation(logits, [alpha * c for c in costs])
        cr, pairs = 0.0, 0
        for v in range(nv):
            for w in range(v + 1, nv):
                dists = [_sq_dist(u[v][i], u[w][j]) for j in range(n) if j != i]
                logits = [-tau_minus * (c.detach() if detach else c) for c in dists]
                term = _softmax_expectation(logits, [-beta * c for c in dists])
                if debiased:
                    term = (-prior * _sq_dist(u[v][i], u[w][i]) + term) / (1 - prior)
                cr, pairs = cr + term, pairs + 1
        per_sample.append(ca / nv + cr / pairs)
    return torch.stack(per_sample)


CONFIGS = {
    "two_views_defaults": (2, {}),
    "four_views_defaults": (4, {}),
    "three_views_alpha_beta": (3, dict(alpha=0.7, beta=1.3, tau_plus=2.0, tau_minus=0.5)),
    "cifar100_tau_minus": (4, dict(tau_minus=2.0)),
    "detached": (3, dict(detach_weights=True)),
    "debiased": (3, dict(debiased=True, class_prior=0.1)),
    "debiased_detached": (2, dict(debiased=True, class_prior=0.3, detach_weights=True)),
    "uniform_weights": (3, dict(tau_plus=0.0, tau_minus=0.0)),
}
REF_NAMES = dict(detach_weights="detach", class_prior="prior")


def _grads(fn, inputs):
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    out = fn(leaves)
    (out * randn(*out.shape, seed=123)).sum().backward()
    return out.detach(), [x.grad for x in leaves]


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_matches_loop_reference_value_and_gradient(case):
    v, kw = CONFIGS[case]
    ref_kw = {REF_NAMES.get(k, k): val for k, val in kw.items()}
    inputs = views(v)
    value, grads = _grads(lambda x: F.cacr(*x, reduction="none", **kw), inputs)
    ref_value, ref_grads = _grads(lambda x: ref_cacr(x, **ref_kw), inputs)
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-12)
    for g, rg in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, rg, rtol=1e-9, atol=1e-12)


def test_detached_weights_change_the_gradient_not_the_value():
    x = views(3)
    a, ga = _grads(lambda z: F.cacr(*z, reduction="none"), x)
    b, gb = _grads(lambda z: F.cacr(*z, reduction="none", detach_weights=True), x)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    assert (ga[0] - gb[0]).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("tau", [0.9, 10.0, 100.0])
def test_low_precision_is_finite_and_close_to_float64(tau, dtype):
    low = [x.to(dtype).requires_grad_(True) for x in views(4, n=16)]
    out = F.cacr(*low, tau_plus=tau, tau_minus=tau, reduction="none")
    out.sum().backward()
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(x.grad).all() for x in low)
    exact = F.cacr(*[x.detach().double() for x in low], tau_plus=tau, tau_minus=tau,
                   reduction="none")  # fmt: skip
    # Costs are O(1) (squared distances of unit vectors); tau scales the weights' logits.
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-6 * tau)


def test_reductions():
    x = views(3)
    per = F.cacr(*x, reduction="none")
    assert per.shape == (N,)
    torch.testing.assert_close(F.cacr(*x), per.mean())
    torch.testing.assert_close(F.cacr(*x, reduction="sum"), per.sum())


def test_stacked_views_equal_separate_tensors():
    x = views(4)
    torch.testing.assert_close(F.cacr(torch.stack(x, 1)), F.cacr(*x))


def test_equivariant_to_sample_order_and_invariant_to_scale():
    x = views(3)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(1))
    per = F.cacr(*x, reduction="none")
    torch.testing.assert_close(F.cacr(*[z[perm] for z in x], reduction="none"), per[perm])
    torch.testing.assert_close(F.cacr(*[3.0 * z for z in x], reduction="none"), per)


def test_zero_temperatures_give_uniform_weights():
    """tau_plus = tau_minus = 0 is the code's 'none' ablation: plain mean costs."""
    x = views(3)
    u = [torch.nn.functional.normalize(z, dim=1) for z in x]
    d = lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1)  # noqa: E731
    ca = sum(d(u[v], u[w]).diagonal() for v in range(3) for w in range(3) if v != w) / 6
    off = ~torch.eye(N, dtype=torch.bool)
    cr = sum(-(d(u[v], u[w]) * off).sum(1) / (N - 1) for v, w in [(0, 1), (0, 2), (1, 2)]) / 3
    got = F.cacr(*x, tau_plus=0.0, tau_minus=0.0, reduction="none")
    torch.testing.assert_close(got, ca + cr)


def test_weights_favour_far_positives_and_close_negatives():
    """The attraction's expected cost grows with tau_plus (more weight on far positives,
    towards the farthest one); the repulsion's expected distance shrinks with tau_minus
    (towards the closest negative)."""
    x = views(4)
    ca = [float(F.cacr(*x, beta=0.0, tau_plus=t)) for t in (0.0, 1.0, 5.0, 400.0)]
    assert ca == sorted(ca) and ca[0] < ca[-1]
    u = torch.nn.functional.normalize(torch.stack(x), dim=-1)
    farthest = ((u[:, None] - u[None]) ** 2).sum(-1).amax(1).mean()  # max over other views
    torch.testing.assert_close(torch.tensor(ca[-1], dtype=torch.float64), farthest,
                               rtol=1e-6, atol=0)  # fmt: skip
    cr = [float(F.cacr(*x, alpha=0.0, tau_minus=t)) for t in (0.0, 0.9, 5.0, 50.0)]
    assert cr == sorted(cr) and cr[0] < cr[-1]  # -beta * distance rises as it shrinks


def test_debiased_with_zero_prior_is_plain_cacr():
    x = views(3)
    torch.testing.assert_close(F.cacr(*x, debiased=True, class_prior=0.0), F.cacr(*x))


def test_module_config_round_trip_and_registry():
    m = CACR(alpha=0.5, tau_minus=2.0, debiased=True, detach_weights=True, reduction="sum")
    again = contrastkit.create_loss("cacr", **m.get_config())
    assert type(again) is CACR and again.get_config() == m.get_config()
    x = views(3)
    torch.testing.assert_close(again(*x), F.cacr(*x, alpha=0.5, tau_minus=2.0, debiased=True,
                                                 detach_weights=True, reduction="sum"))  # fmt: skip
    assert CACR.inputs == "views" and CACR.per_anchor
    toy = contrastkit.create_loss("cacr")(torch.randn(8, 6), torch.randn(8, 6))
    assert toy.dim() == 0 and torch.isfinite(toy)


@pytest.mark.parametrize(
    ("kwargs", "inputs", "exc", "match"),
    [
        (dict(alpha=-1.0), None, ValueError, r"`alpha` is -1.0.*\[0.0, inf\]"),
        (dict(tau_minus=math.inf), None, ValueError, r"`tau_minus` is inf.*finite"),
        (dict(tau_plus="1"), None, TypeError, r"`tau_plus` is a str.*number"),
        (dict(class_prior=1.0), None, ValueError, r"`class_prior` is 1.0.*\[0.0, 0.999\]"),
        (dict(detach_weights="yes"), None, TypeError, r"`detach_weights` is 'yes'.*True or"),
        (dict(reduction="avg"), None, ValueError, r"`reduction` is 'avg'.*one of"),
        ({}, [torch.randn(4, 3)], ValueError, r"`views` holds 1 view.*at least 2 views"),
        ({}, [torch.randn(1, 3), torch.randn(1, 3)], ValueError, r"batch of 1"),
        ({}, [torch.randn(4, 3), torch.randn(5, 3)], ValueError, r"`views\[1\]` has shape"),
        ({}, [torch.zeros(4, 3), torch.randn(4, 3)], ValueError, r"all-zero rows"),
        ({}, [torch.full((4, 3), math.nan), torch.randn(4, 3)], ValueError, r"NaN or inf"),
    ],
)
def test_bad_input_names_argument_and_rule(kwargs, inputs, exc, match):
    inputs = inputs or [torch.randn(4, 3), torch.randn(4, 3)]
    with pytest.raises(exc, match=match):
        F.cacr(*inputs, **kwargs)
    if kwargs:
        with pytest.raises(exc, match=match.replace("cacr", "CACR")):
            CACR(**kwargs)


def test_seed_script_smoke(tmp_path):
    text = run_seed_script("cacr", tmp_path)
    assert "<!-- seed:cacr -->" in text and "<!-- /seed:cacr -->" in text
    assert "### cacr:" in text and "| CACR, 4 views |" in text and "±" in text
