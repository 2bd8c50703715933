"""Symile and pairwise CLIP against scalar loop references written from the objective
(Saporta et al., NeurIPS 2024), against the official ``symile`` package where installed,
and their dtypes, reductions, errors, module configs, properties and the results script."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import contrastkit.functional as F
from conftest import run_seed_script_with_result
from contrastkit import create_loss
from contrastkit.losses import PairwiseCLIP, Symile


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def modalities(m, n=4, d=3, seed=0):
    return [randn(n, d, seed=seed + k) for k in range(m)]


# ---------------------------------------------------------------- loop references


def unit(v):
    return v / torch.sqrt(sum(v[k] * v[k] for k in range(v.shape[0])))


def mip(vectors):
    """sum_k prod_m v_m[k], one coordinate at a time."""
    d = vectors[0].shape[0]
    total = 0
    for k in range(d):
        p = 1
        for v in vectors:
            p = p * v[k]
        total = total + p
    return total


def lse(values):
    top = max(float(v.detach()) for v in values)
    return top + torch.log(sum(torch.exp(v - top) for v in values))


def rows_of(mods, normalize):
    return [[unit(x[i]) if normalize else x[i] for i in range(x.shape[0])] for x in mods]


def ref_symile(mods, t, *, normalize=True, perms=None):
    """Per-sample Symile losses: the mean over the M anchor modalities of each sample. ``perms=None``: every tuple of
    non-anchor rows is a candidate (O(N^2)); else candidate j of anchor (m, i) is the tuple
    ``(perms[m][l][j])_l`` and candidate i is the aligned tuple (O(N))."""
    rows = rows_of(mods, normalize)
    m_count, n = len(mods), mods[0].shape[0]
    out = []
    for m in range(m_count):
        others = [rows[l] for l in range(m_count) if l != m]
        for i in range(n):
            positive = mip([rows[l][i] for l in range(m_count)]) / t
            if perms is None:
                tuples = itertools.product(range(n), repeat=m_count - 1)
            else:
                tuples = [
                    tuple(i for _ in others)
                    if j == i
                    else tuple(int(perms[m][l][j]) for l in range(m_count - 1))
                    for j in range(n)
                ]
            logits = [
                mip([rows[m][i]] + [others[l][js[l]] for l in range(m_count - 1)]) / t
                for js in tuples
            ]
            out.append(lse(logits) - positive)
    return torch.stack(out).reshape(m_count, n).mean(0)


def ref_pairwise_clip_total(mods, t, normalize=True):
    """sum over pairs u < v of (mean_i CE(u_i -> v) + mean_i CE(v_i -> u)) / 2."""
    rows = rows_of(mods, normalize)
    n = mods[0].shape[0]

    def ce(a, b, i):
        logits = [mip([a[i], b[j]]) / t for j in range(n)]
        return lse(logits) - logits[i]

    total = 0
    for u in range(len(mods)):
        for v in range(u + 1, len(mods)):
            both = [ce(rows[u], rows[v], i) + ce(rows[v], rows[u], i) for i in range(n)]
            total = total + sum(both) / (2 * n)
    return total


def ref_pairwise_clip_per_sample(mods, t, normalize=True):
    """Sample i: sum over pairs u < v of (CE(u_i -> v) + CE(v_i -> u)) / 2."""
    rows = rows_of(mods, normalize)
    m_count, n = len(mods), mods[0].shape[0]
    out = []
    for i in range(n):
        s = 0
        for u in range(m_count):
            for v in range(u + 1, m_count):
                for a, b in ((u, v), (v, u)):
                    logits = [mip([rows[a][i], rows[b][j]]) / t for j in range(n)]
                    s = s + (lse(logits) - logits[i]) / 2
        out.append(s)
    return torch.stack(out)


def ref_symile_scores(queries, candidates, t, normalize=True):
    q = rows_of(queries, normalize)
    c = rows_of([candidates], normalize)[0]
    return torch.stack(
        [
            torch.stack([mip([r[b] for r in q] + [c[j]]) / t for j in range(len(c))])
            for b in range(len(q[0]))
        ]
    )


def ref_pairwise_scores(queries, candidates, t, normalize=True):
    q = rows_of(queries, normalize)
    c = rows_of([candidates], normalize)[0]
    out = []
    for b in range(len(q[0])):
        tuple_rows = [r[b] for r in q]
        row = []
        for j in range(len(c)):
            full = tuple_rows + [c[j]]
            pairs = itertools.combinations(range(len(full)), 2)
            row.append(sum(mip([full[x], full[y]]) for x, y in pairs) / t)
        out.append(torch.stack(row))
    return torch.stack(out)


# ---------------------------------------------------------------- value and gradient


def value_and_grads(fn, inputs):
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = fn(leaves)
    cotangent = randn(*out.shape, seed=123) if out.dim() else torch.tensor(1.0, dtype=out.dtype)
    (out * cotangent).sum().backward()
    return out.detach(), [x.grad for x in leaves]


PERMS = {
    (3, 4): F.symile_permutations(4, 3, generator=torch.Generator().manual_seed(5)),
    (4, 3): F.symile_permutations(3, 4, generator=torch.Generator().manual_seed(6)),
    (5, 4): F.symile_permutations(4, 5, generator=torch.Generator().manual_seed(7)),
}

# (inputs, fast per-anchor function, loop reference)
CASES = {
    "symile_n2_m3": (
        lambda: modalities(3),
        lambda x: F.symile(*x, temperature=0.3, negative_sampling="n_squared", reduction="none"),
        lambda x: ref_symile(x, 0.3),
    ),
    "symile_n2_m4_raw": (
        lambda: modalities(4, n=3),
        lambda x: F.symile(
            *x, temperature=2.0, negative_sampling="n_squared", normalize=False, reduction="none"
        ),
        lambda x: ref_symile(x, 2.0, normalize=False),
    ),
    "symile_n2_m2": (
        lambda: modalities(2, n=5),
        lambda x: F.symile(*x, temperature=0.5, negative_sampling="n_squared", reduction="none"),
        lambda x: ref_symile(x, 0.5),
    ),
    "symile_n_m3": (
        lambda: modalities(3),
        lambda x: F.symile(*x, temperature=0.2, permutations=PERMS[3, 4], reduction="none"),
        lambda x: ref_symile(x, 0.2, perms=PERMS[3, 4]),
    ),
    "symile_n_m4_raw": (
        lambda: modalities(4, n=3),
        lambda x: F.symile(
            *x, temperature=1.5, permutations=PERMS[4, 3], normalize=False, reduction="none"
        ),
        lambda x: ref_symile(x, 1.5, normalize=False, perms=PERMS[4, 3]),
    ),
    "symile_n_m5": (
        lambda: modalities(5, d=4),
        lambda x: F.symile(*x, temperature=0.05, permutations=PERMS[5, 4], reduction="none"),
        lambda x: ref_symile(x, 0.05, perms=PERMS[5, 4]),
    ),
    "symile_n_generator": (
        lambda: modalities(3),
        lambda x: F.symile(
            *x, temperature=0.7, generator=torch.Generator().manual_seed(5), reduction="none"
        ),
        lambda x: ref_symile(x, 0.7, perms=PERMS[3, 4]),
    ),
    "pairwise_clip_m3_total": (
        lambda: modalities(3),
        lambda x: F.pairwise_clip(*x, temperature=0.3),
        lambda x: ref_pairwise_clip_total(x, 0.3),
    ),
    "pairwise_clip_m4_total_raw": (
        lambda: modalities(4, n=3),
        lambda x: F.pairwise_clip(*x, temperature=2.0, normalize=False),
        lambda x: ref_pairwise_clip_total(x, 2.0, normalize=False),
    ),
    "pairwise_clip_m3_per_sample": (
        lambda: modalities(3),
        lambda x: F.pairwise_clip(*x, temperature=0.1, reduction="none"),
        lambda x: ref_pairwise_clip_per_sample(x, 0.1),
    ),
    "pairwise_clip_m4_per_sample_raw": (
        lambda: modalities(4, n=3),
        lambda x: F.pairwise_clip(*x, temperature=0.7, normalize=False, reduction="none"),
        lambda x: ref_pairwise_clip_per_sample(x, 0.7, normalize=False),
    ),
    "symile_scores": (
        lambda: [randn(3, 4, seed=1), randn(3, 4, seed=2), randn(5, 4, seed=3)],
        lambda x: F.symile_scores(x[0], x[1], candidates=x[2], temperature=0.4),
        lambda x: ref_symile_scores(x[:2], x[2], 0.4),
    ),
    "symile_scores_raw_three_queries": (
        lambda: [randn(3, 4, seed=k) for k in range(3)] + [randn(2, 4, seed=9)],
        lambda x: F.symile_scores(*x[:3], candidates=x[3], temperature=2.0, normalize=False),
        lambda x: ref_symile_scores(x[:3], x[3], 2.0, normalize=False),
    ),
    "pairwise_clip_scores": (
        lambda: [randn(3, 4, seed=k) for k in range(3)] + [randn(2, 4, seed=9)],
        lambda x: F.pairwise_clip_scores(*x[:3], candidates=x[3], temperature=0.4),
        lambda x: ref_pairwise_scores(x[:3], x[3], 0.4),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_loop_reference_value_and_gradient(case):
    build, fast, slow = CASES[case]
    inputs = build()
    value, grads = value_and_grads(fast, inputs)
    ref_value, ref_grads = value_and_grads(slow, inputs)
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-12)
    for g, rg in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, rg, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("negative_sampling", ["n", "n_squared"])
def test_learnable_temperature_gradient_matches_reference(negative_sampling):
    x = modalities(3)
    perms = PERMS[3, 4] if negative_sampling == "n" else None
    grads = []
    for fn in (
        lambda t: F.symile(
            *x, temperature=t, negative_sampling=negative_sampling, permutations=perms
        ),
        lambda t: ref_symile(x, t, perms=perms).mean(),
    ):
        t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        fn(t).backward()
        grads.append(t.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- official package


def official():
    return pytest.importorskip("symile.loss", reason="official symile package not installed")


@pytest.mark.parametrize("m", [3, 4, 5])
def test_n_squared_matches_official_package(m):
    x = [torch.nn.functional.normalize(t, dim=1) for t in modalities(m, n=4, d=5)]
    scale = torch.tensor(3.0, dtype=torch.float64)
    expected = official().Symile("n_squared")(x, scale)
    got = F.symile(*x, temperature=1 / 3.0, negative_sampling="n_squared")
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m", [3, 4])
def test_n_with_the_same_seed_matches_official_package(m):
    # The official loss draws its permutations from the global generator, anchor by anchor;
    # symile_permutations draws them in the same order.
    x = [torch.nn.functional.normalize(t, dim=1) for t in modalities(m, n=7, d=5)]
    scale = torch.tensor(0.5, dtype=torch.float64)
    state = torch.random.get_rng_state()
    torch.manual_seed(11)
    expected = official().Symile("n")(x, scale)
    torch.random.set_rng_state(state)
    got = F.symile(*x, temperature=2.0, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_scores_match_official_similarity():
    sim = pytest.importorskip("symile.similarity", reason="official symile package not installed")
    q = [torch.nn.functional.normalize(randn(6, 5, seed=k), dim=1) for k in range(2)]
    c = torch.nn.functional.normalize(randn(3, 5, seed=7), dim=1)
    expected = 1.7 * sim.MIPSimilarity()(c, [t.clone() for t in q])
    torch.testing.assert_close(F.symile_scores(*q, candidates=c, temperature=1 / 1.7), expected)


# ---------------------------------------------------------------- dtypes, reductions

LOW_PRECISION = {
    "symile_n": lambda x, t: F.symile(
        *x, temperature=t, generator=torch.Generator().manual_seed(0), reduction="none"
    ),
    "symile_n_squared": lambda x, t: F.symile(
        *x, temperature=t, negative_sampling="n_squared", reduction="none"
    ),
    "pairwise_clip": lambda x, t: F.pairwise_clip(*x, temperature=t, reduction="none"),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("temperature", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("name", sorted(LOW_PRECISION))
def test_low_precision_is_finite_and_close_to_float64(name, temperature, dtype):
    fn = LOW_PRECISION[name]
    low = [x.to(dtype).requires_grad_(True) for x in modalities(3, n=12, d=8, seed=3)]
    out = fn(low, temperature)
    out.sum().backward()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in low)
    exact = fn([x.detach().double() for x in low], temperature)
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5 / temperature)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, r: F.symile(*x, permutations=PERMS[3, 4], reduction=r),
        lambda x, r: F.symile(*x, negative_sampling="n_squared", reduction=r),
        lambda x, r: F.pairwise_clip(*x, reduction=r),
    ],
)
def test_reductions_are_mean_sum_none_of_the_same_values(fn):
    x = modalities(3)
    per = fn(x, "none")
    assert per.shape == (4,)
    torch.testing.assert_close(fn(x, "mean"), per.mean())
    torch.testing.assert_close(fn(x, "sum"), per.sum())


# ---------------------------------------------------------------- properties


def test_two_modalities_reduce_to_clip():
    a, b = modalities(2, n=6, d=4)
    expected = F.clip(a, b, temperature=0.2)
    torch.testing.assert_close(F.pairwise_clip(a, b, temperature=0.2), expected)
    torch.testing.assert_close(
        F.symile(a, b, temperature=0.2, negative_sampling="n_squared"), expected
    )


def test_pairwise_clip_is_the_sum_of_clip_over_pairs():
    x = modalities(4, n=5, d=3)
    expected = sum(
        F.clip(x[u], x[v], temperature=0.5) for u, v in itertools.combinations(range(4), 2)
    )
    torch.testing.assert_close(F.pairwise_clip(*x, temperature=0.5), expected)


def test_symile_is_invariant_to_sign_flips_an_even_number_of_modalities_share():
    # MIP(a, b, c) is unchanged when coordinate k flips sign in two of the modalities, and
    # under a permutation of the coordinates common to all modalities.
    x = modalities(3, n=5, d=4)
    flip = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    perm = torch.tensor([2, 0, 3, 1])
    base = F.symile(*x, temperature=0.3, negative_sampling="n_squared", reduction="none")
    flipped = F.symile(
        x[0] * flip,
        x[1] * flip,
        x[2],
        temperature=0.3,
        negative_sampling="n_squared",
        reduction="none",
    )
    permuted = F.symile(
        *[t[:, perm] for t in x], temperature=0.3, negative_sampling="n_squared", reduction="none"
    )
    torch.testing.assert_close(flipped, base)
    torch.testing.assert_close(permuted, base)
    # Flipping one modality only changes the objective (it is not a pairwise quantity).
    odd = F.symile(x[0] * flip, x[1], x[2], temperature=0.3, negative_sampling="n_squared")
    assert not torch.allclose(odd, base.mean())


def test_n_squared_is_equivariant_to_reordering_the_samples():
    x = modalities(3, n=5, d=4)
    order = torch.tensor([3, 0, 4, 1, 2])
    base = F.symile(*x, negative_sampling="n_squared", reduction="none")
    moved = F.symile(*[t[order] for t in x], negative_sampling="n_squared", reduction="none")
    torch.testing.assert_close(moved, base[order])


def test_o_n_mode_is_reproducible_with_a_generator_and_varies_without_one():
    x = modalities(3, n=8, d=4)
    one = F.symile(*x, generator=torch.Generator().manual_seed(1))
    again = F.symile(*x, generator=torch.Generator().manual_seed(1))
    other = F.symile(*x, generator=torch.Generator().manual_seed(2))
    explicit = F.symile(
        *x,
        permutations=F.symile_permutations(8, 3, generator=torch.Generator().manual_seed(1)),
    )
    assert torch.equal(one, again) and torch.equal(one, explicit)
    assert not torch.equal(one, other)


def test_symile_scores_recover_any_bit_of_an_eight_way_xor():
    # Eight one-bit modalities, v_h = XOR of the rest: embedding bit b as (-1)^b e_0 makes
    # the MIP of every true tuple +1 (even parity), so Symile's scores recover each bit
    # from the other seven.
    bits = torch.tensor(list(itertools.product([0, 1], repeat=7)), dtype=torch.float64)
    v = torch.cat([bits, bits.sum(1, keepdim=True) % 2], 1)
    e0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    emb = [(1 - 2 * v[:, k : k + 1]) * e0 for k in range(8)]
    cands = torch.stack([e0, -e0])
    for target in (0, 7):
        queries = [emb[k] for k in range(8) if k != target]
        pred = F.symile_scores(*queries, candidates=cands).argmax(1)
        assert torch.equal(pred, v[:, target].long())


def test_permutation_helper_draws_one_permutation_per_anchor_and_non_anchor():
    perms = F.symile_permutations(6, 4, generator=torch.Generator().manual_seed(0))
    assert perms.shape == (4, 3, 6) and perms.dtype == torch.long
    assert torch.equal(perms.sort(-1).values, torch.arange(6).expand(4, 3, 6))


# ---------------------------------------------------------------- bad input

BAD = [
    (lambda: F.symile(randn(4, 3)), ValueError, r"`modalities` holds 1 tensor"),
    (lambda: F.pairwise_clip(randn(4, 3)), ValueError, r"`modalities` holds 1"),
    (
        lambda: F.symile(randn(4, 3), randn(4, 3), randn(5, 3)),
        ValueError,
        r"`modalities\[2\]` has shape \(5, 3\)",
    ),
    (lambda: F.symile(*modalities(3), negative_sampling="bogus"), ValueError, "negative_sampling"),
    (lambda: F.symile(*modalities(3), normalize="yes"), TypeError, "`normalize` is 'yes'"),
    (lambda: F.pairwise_clip(*modalities(3), normalize=1), TypeError, "`normalize`"),
    (lambda: F.symile(*modalities(3), temperature=0.0), ValueError, "`temperature` is 0.0"),
    (lambda: F.symile(*modalities(3), reduction="avg"), ValueError, "`reduction`"),
    (lambda: F.symile(*modalities(3, n=1)), ValueError, "batch of 1"),
    (
        lambda: F.symile(*modalities(2), randn(4, 3).fill_(float("nan"))),
        ValueError,
        r"`modalities\[2\]` contains NaN",
    ),
    (
        lambda: F.symile(*modalities(2), torch.zeros(4, 3, dtype=torch.float64)),
        ValueError,
        r"`modalities\[2\]` has all-zero rows",
    ),
    (lambda: F.symile(*modalities(3), generator=0), TypeError, "`generator` is a int"),
    (
        lambda: F.symile(*modalities(3), permutations=torch.zeros(3, 2, 3, dtype=torch.long)),
        ValueError,
        r"`permutations` has shape \(3, 2, 3\).*\(3, 2, 4\)",
    ),
    (
        lambda: F.symile(*modalities(3), permutations=torch.zeros(3, 2, 4, dtype=torch.long)),
        ValueError,
        "`permutations` has a row that is not a permutation",
    ),
    (
        lambda: F.symile(*modalities(3), permutations=PERMS[3, 4].double()),
        TypeError,
        "`permutations` has dtype torch.float64",
    ),
    (
        lambda: F.symile(*modalities(3), negative_sampling="n_squared", permutations=PERMS[3, 4]),
        ValueError,
        "`permutations` is given with negative_sampling='n_squared'",
    ),
    (
        lambda: F.symile(*modalities(8, n=10, d=2), negative_sampling="n_squared"),
        ValueError,
        r"`negative_sampling` is 'n_squared' with N=10 and M=8",
    ),
    (
        lambda: F.symile_scores(randn(3, 4), candidates=randn(2, 5)),
        ValueError,
        r"`queries\[0\]` has feature dimension 4",
    ),
    (
        lambda: F.symile_scores(randn(3, 4), randn(2, 4), candidates=randn(2, 4)),
        ValueError,
        r"`queries\[1\]` has 2 rows",
    ),
    (lambda: F.pairwise_clip_scores(candidates=randn(2, 4)), ValueError, "`queries` is empty"),
    (lambda: F.symile_permutations(0, 3), ValueError, "`n` is 0"),
    (lambda: F.symile_permutations(4, 1), ValueError, "`num_modalities` is 1"),
    (lambda: Symile(negative_sampling="all"), ValueError, "Symile: `negative_sampling`"),
    (lambda: PairwiseCLIP(temperature=-1.0), ValueError, "`temperature` is -1.0"),
    (lambda: Symile(normalize=None), TypeError, "Symile: `normalize` is None"),
    (lambda: Symile(seed=1.5), TypeError, "Symile: `seed` is 1.5"),
    (lambda: Symile(max_scale=0.0), ValueError, "Symile: `max_scale` is 0.0"),
]


@pytest.mark.parametrize("k", range(len(BAD)))
def test_bad_input_names_argument_and_rule(k):
    call, kind, match = BAD[k]
    with pytest.raises(kind, match=match):
        call()


# ---------------------------------------------------------------- modules


@pytest.mark.parametrize("name", ["symile", "pairwise_clip"])
def test_module_config_round_trip_and_default_toy_batch(name):
    loss = create_loss(name)
    assert loss.inputs == "modalities" and loss.learnable
    toy = [torch.randn(8, 6) for _ in range(3)]
    out = loss(*toy)
    out.backward()
    assert out.dim() == 0 and torch.isfinite(out)
    assert loss.logit_scale.log_scale.grad is not None
    kwargs = {"temperature": 0.5, "learnable": False, "normalize": False, "reduction": "sum"}
    if name == "symile":
        kwargs.update(negative_sampling="n_squared", seed=4, max_scale=1000.0)
    built = create_loss(name, **kwargs)
    assert built.get_config() == kwargs
    assert create_loss(name, **built.get_config()).get_config() == kwargs


def test_module_matches_function_and_scores_use_current_temperature():
    x = modalities(3, n=5)
    loss = Symile(temperature=0.4, negative_sampling="n_squared")
    with torch.no_grad():
        loss.logit_scale.log_scale.fill_(math.log(3.0))
    expected = F.symile(*x, temperature=1 / 3.0, negative_sampling="n_squared")
    torch.testing.assert_close(loss(*x).double(), expected)
    g = torch.Generator().manual_seed(3)
    torch.testing.assert_close(
        Symile(temperature=0.4, learnable=False)(*x, generator=g),
        F.symile(*x, temperature=0.4, generator=torch.Generator().manual_seed(3)),
    )
    cands = randn(2, 3, seed=8)
    torch.testing.assert_close(
        loss.scores(x[0], x[1], candidates=cands).double(),
        F.symile_scores(x[0], x[1], candidates=cands, temperature=1 / 3.0),
    )
    clip = PairwiseCLIP(temperature=0.25, learnable=False)
    torch.testing.assert_close(
        clip.scores(x[0], x[1], candidates=cands),
        F.pairwise_clip_scores(x[0], x[1], candidates=cands, temperature=0.25),
    )


def test_learnable_scale_is_clamped_at_max_scale():
    x = modalities(3)
    loss = Symile(temperature=0.001, max_scale=500.0)  # starts at 1/t = 1000, above the clamp
    torch.testing.assert_close(loss.logit_scale().detach(), torch.tensor(500.0))
    loss(*x, generator=torch.Generator().manual_seed(0)).backward()
    assert float(loss.logit_scale.log_scale.grad) == 0.0  # past the clamp: no gradient
    default = Symile(temperature=0.001)
    torch.testing.assert_close(default.logit_scale().detach(), torch.tensor(100.0))


def test_module_generator_makes_o_n_draws_reproducible():
    x = modalities(3, n=8)
    a, b = Symile(seed=5), Symile(seed=5)
    first = a(*x)
    torch.testing.assert_close(b(*x), first)
    g = torch.Generator().manual_seed(5)
    torch.testing.assert_close(first, F.symile(*x, generator=g))
    torch.testing.assert_close(a(*x), F.symile(*x, generator=g))  # the generator advances
    assert not torch.equal(a(*x), first)
    torch.manual_seed(2)
    global_draw = Symile(seed=None)(*x)
    torch.manual_seed(2)
    torch.testing.assert_close(global_draw, F.symile(*x))
    # The generator's position travels in state_dict: a restored module draws what the
    # original draws next.
    restored = Symile(seed=0)
    restored.load_state_dict(a.state_dict())
    torch.testing.assert_close(restored(*x), a(*x))


def test_list_input_equals_separate_tensors():
    x = modalities(3)
    torch.testing.assert_close(
        F.symile(x, negative_sampling="n_squared"), F.symile(*x, negative_sampling="n_squared")
    )
    torch.testing.assert_close(F.pairwise_clip(x), F.pairwise_clip(*x))


# ---------------------------------------------------------------- results script


def test_results_script_smoke(tmp_path):
    text, results = run_seed_script_with_result("symile", tmp_path)
    assert "<!-- seed:symile -->" in text and "<!-- /seed:symile -->" in text
    assert "| `symile` |" in text and "| `pairwise_clip` |" in text
    assert "Smoke run" in text
    assert len(results["symile"]) == len(results["pairwise_clip"]) >= 3
