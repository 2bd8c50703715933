"""MV-InfoNCE, MV-DHEL (Koromilas et al. 2025) and the pairwise NT-Xent baseline against
scalar loop references; two-view reductions to CLIP / NT-Xent / DHEL; the float32
overflow of the official product form; low precision, reductions, errors."""

from __future__ import annotations

import math

import pytest
import torch

import contrastkit
import contrastkit.functional as F
import references as ref
from conftest import run_seed_script
from contrastkit.losses import MVDHEL, MVInfoNCE, PairwiseInfoNCE

N, D = 5, 4


def randn(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def views(v, n=N, seed=0):
    return [randn(n, D, seed=seed + k) for k in range(v)]


# ------------------------------------------------------------------ loop references


def _lse(values):
    top = max(float(x.detach()) for x in values)
    return top + torch.log(sum(torch.exp(x - top) for x in values))


def _sims(vs, t):
    """s[(l, i)][(m, j)] = U_il . U_jm / t as nested lists of scalars."""
    u = [[x / x.norm() for x in view] for view in vs]
    nv, n = len(vs), vs[0].shape[0]
    return {(l, i, m, j): (u[l][i] * u[m][j]).sum() / t
            for l in range(nv) for i in range(n) for m in range(nv) for j in range(n)}  # fmt: skip


def ref_mv_info_nce(vs, t, variant):
    nv, n = len(vs), vs[0].shape[0]
    s = _sims(vs, t)
    out = []
    for i in range(n):
        pos = [s[l, i, m, i] for l in range(nv) for m in range(nv) if m != l]
        if variant == "paper":  # cross-view pairs with every sample, positives included
            neg = [s[l, i, m, j] for l in range(nv) for m in range(nv) if m != l for j in range(n)]
        else:  # every other row of the (V N, D) batch
            neg = [s[l, i, m, j] for l in range(nv) for m in range(nv) for j in range(n)
                   if (m, j) != (l, i)]  # fmt: skip
        out.append(-_lse(pos) + _lse(neg))
    return torch.stack(out)


def ref_mv_dhel(vs, t, variant):
    nv, n = len(vs), vs[0].shape[0]
    s = _sims(vs, t)
    out = []
    for i in range(n):
        if variant == "paper":
            pos = [s[l, i, m, i] for l in range(nv) for m in range(nv) if m != l]
            energy = [_lse([s[l, i, l, j] for j in range(n)]) for l in range(nv)]
        else:
            pos = [s[l, i, m, i] for l in range(nv) for m in range(l + 1, nv)]
            energy = [_lse([s[l, i, l, j] for j in range(n) if j != i]) for l in range(nv)]
        out.append(-_lse(pos) + sum(energy))
    return torch.stack(out)


def ref_pairwise(vs, t):
    """Mean over pairs l < l' of the 2-view NT-Xent (tests' own loop reference)."""
    n = vs[0].shape[0]
    pairs = [(a, b) for a in range(len(vs)) for b in range(a + 1, len(vs))]
    per = [ref.info_nce([vs[a], vs[b]], t).reshape(2, n).mean(0) for a, b in pairs]
    return sum(per) / len(pairs)


CASES = {
    f"{name}_{variant}_{v}views_t{t}": (fn, reference, v, t, variant)
    for name, fn, reference in [
        ("mv_info_nce", F.mv_info_nce, ref_mv_info_nce),
        ("mv_dhel", F.mv_dhel, ref_mv_dhel),
    ]
    for variant in ("paper", "official_code")
    for v, t in [(2, 0.5), (3, 0.2), (4, 0.1)]
}


def _grads(fn, inputs):
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    out = fn(leaves)
    (out * randn(*out.shape, seed=123)).sum().backward()
    return out.detach(), [x.grad for x in leaves]


def _assert_same(fast, slow, inputs):
    value, grads = _grads(fast, inputs)
    ref_value, ref_grads = _grads(slow, inputs)
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-12)
    for g, rg in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, rg, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_loop_reference_value_and_gradient(case):
    fn, reference, v, t, variant = CASES[case]
    _assert_same(
        lambda x: fn(*x, temperature=t, variant=variant, reduction="none"),
        lambda x: reference(x, t, variant),
        views(v),
    )


@pytest.mark.parametrize(("v", "t"), [(2, 0.5), (3, 0.2), (4, 0.1)])
@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_pairwise_matches_loop_reference(v, t):
    _assert_same(
        lambda x: F.pairwise_info_nce(*x, temperature=t, reduction="none"),
        lambda x: ref_pairwise(x, t),
        views(v),
    )


# ------------------------------------------------------------------ two-view reductions


def test_mv_info_nce_two_views_is_log_mean_exp_of_clip_directions():
    """Paper form, V = 2: the log of the mean of exp of CLIP's two one-directional losses."""
    z1, z2 = views(2)
    t = 0.3
    q_to_k = F.clip(z1, z2, temperature=t, symmetric=False, reduction="none")
    k_to_q = F.clip(z2, z1, temperature=t, symmetric=False, reduction="none")
    expected = torch.logaddexp(q_to_k, k_to_q) - math.log(2)
    got = F.mv_info_nce(z1, z2, temperature=t, reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_mv_info_nce_code_two_views_is_log_mean_exp_of_nt_xent_anchors():
    """Code form, V = 2: the same with the two NT-Xent anchors (views) of sample i."""
    z1, z2 = views(2)
    anchors = F.info_nce(z1, z2, temperature=0.3, reduction="none").reshape(2, N)
    expected = torch.logsumexp(anchors, 0) - math.log(2)
    got = F.mv_info_nce(z1, z2, temperature=0.3, variant="official_code", reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def _dhel(anchor, other, t, include_self):
    """One-directional DHEL from the core's decoupled weighting: positive = the other
    view of the same sample, denominator = the anchor's own view (self optional)."""
    eye = torch.eye(N, dtype=torch.bool)
    positive = torch.cat([eye, torch.zeros_like(eye)], 1)
    valid = torch.cat([eye, torch.ones_like(eye) if include_self else ~eye], 1)
    return F.masked_info_nce(
        anchor,
        torch.cat([other, anchor]),
        positive_mask=positive,
        valid_mask=valid,
        temperature=t,
        negative_weighting="decoupled",
        reduction="none",
    )


@pytest.mark.parametrize("variant", ["paper", "official_code"])
def test_mv_dhel_two_views_is_sum_of_one_directional_dhel(variant):
    """V = 2: MV-DHEL = DHEL(view 1) + DHEL(view 2) + s_i / t (- log 2 for the paper's
    two-ordered-pair numerator); the paper's energy also keeps the self term."""
    z1, z2 = views(2)
    t = 0.2
    paper = variant == "paper"
    s = torch.nn.functional.cosine_similarity(z1, z2) / t
    expected = _dhel(z1, z2, t, paper) + _dhel(z2, z1, t, paper) + s - paper * math.log(2)
    got = F.mv_dhel(z1, z2, temperature=t, variant=variant, reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_pairwise_two_views_is_nt_xent():
    z1, z2 = views(2)
    torch.testing.assert_close(
        F.pairwise_info_nce(z1, z2, temperature=0.2), F.info_nce(z1, z2, temperature=0.2)
    )


# ------------------------------------------------------------------ numerics


def _clustered_views(v, n, dtype):
    """Views that all point near one direction: same-view similarities close to 1."""
    base = randn(1, 1, 32, seed=7)
    return (base + 0.1 * randn(n, v, 32, seed=8)).to(dtype)


def _official_product_form(z, t):
    """models/losses.py MVDHEL as written: pos / prod_l neg_l (float32 overflows)."""
    n, v, _ = z.shape
    u = torch.nn.functional.normalize(z, dim=-1).transpose(0, 1)  # (V, N, D)
    off = ~torch.eye(n, dtype=torch.bool)
    neg = torch.stack([torch.exp(x @ x.T / t)[off].view(n, n - 1).sum(-1) for x in u])
    pos = sum(torch.exp((u[a] * u[b]).sum(-1) / t) for a in range(v) for b in range(a + 1, v))
    return -(torch.log(pos / torch.prod(neg, dim=0))).mean()


def test_official_product_form_overflows_in_float32_where_log_form_does_not():
    z = _clustered_views(6, 32, torch.float32)
    t = 0.05
    assert not torch.isfinite(_official_product_form(z, t))  # prod of 6 sums > 3.4e38
    ours = F.mv_dhel(z, temperature=t, variant="official_code")
    assert torch.isfinite(ours)
    exact = _official_product_form(z.double(), t)  # float64 has the range
    assert torch.isfinite(exact)
    torch.testing.assert_close(ours.double(), exact, rtol=1e-5, atol=0)
    zg = z.clone().requires_grad_(True)
    F.mv_dhel(zg, temperature=t).backward()
    assert torch.isfinite(zg.grad).all()


LOW_PRECISION = {
    "mv_info_nce": lambda x, t: F.mv_info_nce(*x, temperature=t, reduction="none"),
    "mv_info_nce_code": lambda x, t: F.mv_info_nce(
        *x, temperature=t, variant="official_code", reduction="none"
    ),
    "mv_dhel": lambda x, t: F.mv_dhel(*x, temperature=t, reduction="none"),
    "mv_dhel_code": lambda x, t: F.mv_dhel(
        *x, temperature=t, variant="official_code", reduction="none"
    ),
    "pairwise": lambda x, t: F.pairwise_info_nce(*x, temperature=t, reduction="none"),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("temperature", [0.01, 0.05, 0.5])
@pytest.mark.parametrize("name", sorted(LOW_PRECISION))
def test_low_precision_is_finite_and_close_to_float64(name, temperature, dtype):
    fn = LOW_PRECISION[name]
    low = [x.to(dtype).requires_grad_(True) for x in views(3, n=16)]
    out = fn(low, temperature)
    out.sum().backward()
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(x.grad).all() for x in low)
    exact = fn([x.detach().double() for x in low], temperature)
    # float32 accumulation: relative error ~1e-6 of the logit scale 1/t, V terms.
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=3e-5 / temperature)


# ------------------------------------------------------------------ properties


FUNCTIONS = {
    "mv_info_nce": F.mv_info_nce,
    "mv_dhel": F.mv_dhel,
    "pairwise_info_nce": F.pairwise_info_nce,
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_invariant_to_view_order_and_scale_equivariant_to_sample_order(name):
    fn = FUNCTIONS[name]
    x = views(4)
    per = fn(*x, reduction="none")
    torch.testing.assert_close(fn(*[x[k] for k in (2, 0, 3, 1)], reduction="none"), per)
    torch.testing.assert_close(fn(*[2.5 * z for z in x], reduction="none"), per)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(fn(*[z[perm] for z in x], reduction="none"), per[perm])
    torch.testing.assert_close(fn(torch.stack(x, 1), reduction="none"), per)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_reductions(name):
    fn = FUNCTIONS[name]
    x = views(3)
    per = fn(*x, reduction="none")
    assert per.shape == (N,)
    torch.testing.assert_close(fn(*x), per.mean())
    torch.testing.assert_close(fn(*x, reduction="sum"), per.sum())


def test_variants_differ_as_documented():
    """Code MV-InfoNCE adds same-view negatives (a larger denominator); code MV-DHEL
    drops the self term and halves the numerator."""
    x = views(3)
    assert (F.mv_info_nce(*x, variant="official_code", reduction="none")
            > F.mv_info_nce(*x, reduction="none")).all()  # fmt: skip
    assert not torch.allclose(F.mv_dhel(*x, variant="official_code"), F.mv_dhel(*x))


@pytest.mark.parametrize(("name", "cls"), [("mv_infonce", MVInfoNCE), ("mv_dhel", MVDHEL),
                                           ("pairwise_infonce", PairwiseInfoNCE)])  # fmt: skip
def test_module_config_round_trip_and_learnable_temperature(name, cls):
    kwargs = dict(temperature=0.2, learnable=True, reduction="sum")
    if cls is not PairwiseInfoNCE:
        kwargs["variant"] = "official_code"
    m = contrastkit.create_loss(name, **kwargs)
    assert type(m) is cls and m.get_config() == kwargs
    again = contrastkit.create_loss(name, **m.get_config())
    x = [z.float() for z in views(4)]
    torch.testing.assert_close(again(*x), m(*x))
    m(*x).backward()
    assert m.logit_scale.log_scale.grad is not None
    fixed = {**kwargs, "learnable": False}
    torch.testing.assert_close(m(*x), cls(**fixed)(*x))
    toy = contrastkit.create_loss(name)(torch.randn(8, 6), torch.randn(8, 6))
    assert toy.dim() == 0 and torch.isfinite(toy)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize(
    ("kwargs", "inputs", "exc", "match"),
    [
        (dict(temperature=0.0), None, ValueError, r"`temperature` is 0.0.*> 0"),
        (dict(reduction="avg"), None, ValueError, r"`reduction` is 'avg'.*one of"),
        ({}, [torch.randn(4, 3)], ValueError, r"`views` holds 1 view.*at least 2 views"),
        ({}, [torch.randn(1, 3), torch.randn(1, 3)], ValueError, r"batch of 1"),
        ({}, [torch.randn(4, 3), torch.randn(4, 2)], ValueError, r"`views\[1\]` has shape"),
        ({}, [torch.zeros(4, 3), torch.randn(4, 3)], ValueError, r"all-zero rows"),
        ({}, [torch.randn(4, 3), torch.full((4, 3), math.inf)], ValueError, r"NaN or inf"),
    ],
)
def test_bad_input_names_argument_and_rule(name, kwargs, inputs, exc, match):
    inputs = inputs or [torch.randn(4, 3), torch.randn(4, 3)]
    with pytest.raises(exc, match=match):
        FUNCTIONS[name](*inputs, **kwargs)


@pytest.mark.parametrize("fn", [F.mv_info_nce, F.mv_dhel])
def test_bad_variant(fn):
    with pytest.raises(ValueError, match=r"`variant` is 'code'.*'paper', 'official_code'"):
        fn(torch.randn(4, 3), torch.randn(4, 3), variant="code")
    with pytest.raises(ValueError, match=r"MVDHEL: `variant` is 'code'"):
        MVDHEL(variant="code")


def test_seed_script_smoke(tmp_path):
    text = run_seed_script("multi_view", tmp_path)
    assert "<!-- seed:multi_view -->" in text and "<!-- /seed:multi_view -->" in text
    assert "### multi_view:" in text and "| MV-DHEL |" in text and "±" in text
