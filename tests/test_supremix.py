"""SupReMix (Wu et al., arXiv:2309.16633) against a loop reference that builds every
mixture vector explicitly; dtypes, reductions, randomness, bad input, the result script."""

from __future__ import annotations

import pytest
import torch

import contrastkit
import contrastkit.functional as F
from conftest import run_seed_script
from contrastkit.losses.supremix import SupReMix, supremix, supremix_mix_ratios

N, D = 5, 4
TARGETS = torch.tensor([0.0, 1.0, 1.0, 2.5, 3.5], dtype=torch.float64)


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def make_views(v=2, seed=0, n=N, d=D):
    return [randn(n, d, seed=seed + k).requires_grad_() for k in range(v)]


# ----------------------------------------------------------------------------- reference


def _unit(x):
    return x / x.norm()


def _weight(diff, distance):
    if distance == "l1":
        return abs(diff) + 1.0
    if distance == "l2":
        return diff * diff + 1.0
    return 1.0


def reference(
    views,
    targets,
    t,
    lam,
    *,
    window=5.0,
    distance="l1",
    mix_negatives=True,
    mix_positives=True,
    renormalize=False,
    variant="paper",
    similarity="cosine",
    detach=True,
):
    """Per-anchor SupReMix written from the formula: one anchor at a time, every mixture
    built as a vector from detached embeddings, scalar logits, a weighted sum of exps.

    ``variant="official_code"`` follows SupConLoss_v2 literally: real and mixture logits
    each shifted by their own detached row max (the mixture max includes the 0 logit of
    the code's zero-vector slots) and the positive mean divided by |P| + 1."""
    n = views[0].shape[0]
    rows = [views[v][i] for v in range(len(views)) for i in range(n)]
    ys = [float(targets[i]) for v in range(len(views)) for i in range(n)]
    if similarity == "cosine":
        rows = [_unit(r) for r in rows]
    fixed = [r.detach() if detach else r for r in rows]  # a mixture's ingredients
    out = []
    for i, a in enumerate(rows):
        real, mixed = [], []  # (logit, weight, is_positive)
        for r, b in enumerate(rows):
            if r != i:
                real.append(((a * b).sum() / t, _weight(ys[i] - ys[r], distance), ys[r] == ys[i]))
        if mix_negatives:
            for k in range(len(rows)):
                if ys[k] == ys[i]:
                    continue
                w = float(lam[i, k])
                m = w * fixed[i] + (1 - w) * fixed[k]
                if renormalize:
                    m = m / m.norm()
                label = w * ys[i] + (1 - w) * ys[k]
                mixed.append(((a * m).sum() / t, _weight(ys[i] - label, distance), False))
        if mix_positives:
            for j in range(len(rows)):
                for k in range(len(rows)):
                    if not (ys[j] < ys[i] < ys[k]):
                        continue
                    if window is not None and not (
                        ys[i] - ys[j] < window and ys[k] - ys[i] < window
                    ):
                        continue
                    w = (ys[k] - ys[i]) / (ys[k] - ys[j])
                    m = w * fixed[j] + (1 - w) * fixed[k]
                    if renormalize:
                        m = m / m.norm()
                    label = w * ys[j] + (1 - w) * ys[k]
                    mixed.append(((a * m).sum() / t, _weight(ys[i] - label, distance), True))
        if variant == "official_code":
            top_real = max(float((a * b).sum().detach() / t) for b in rows)  # self included
            top_mix = max([0.0] + [float(c[0].detach()) for c in mixed])
        else:
            top_real = top_mix = max(float(c[0].detach()) for c in real + mixed)
        shifted = [(c[0] - top_real, c[1], c[2]) for c in real]
        shifted += [(c[0] - top_mix, c[1], c[2]) for c in mixed]
        log_den = torch.log(sum(w * torch.exp(z) for z, w, _ in shifted))
        terms = [z - log_den for z, _, pos in shifted if pos]
        denominator = len(terms) + (1 if variant == "official_code" else 0)
        out.append(-sum(terms) / denominator)
    return torch.stack(out)


CONFIGS = {
    "paper": dict(),
    "paper_t05_window2": dict(t=0.5, window=2.0),
    "no_window": dict(window=None),
    "l2": dict(distance="l2", t=0.7),
    "no_weight": dict(distance="none"),
    "neg_only": dict(mix_positives=False),
    "pos_only": dict(mix_negatives=False),
    "renormalize": dict(renormalize=True),
    "dot": dict(similarity="dot", t=3.0),
    "official_code": dict(variant="official_code"),
    "official_code_neg_only": dict(variant="official_code", mix_positives=False),
    "official_code_three_views": dict(variant="official_code", v=3, window=2.0),
    "three_views": dict(v=3),
}


def _run(cfg, views, lam, dtype_cast=None):
    cfg = dict(cfg)
    t = cfg.pop("t", 0.2)
    cfg.pop("v", None)
    fast = supremix(*views, targets=TARGETS, temperature=t, mix_ratios=lam, reduction="none", **cfg)
    slow = reference(views, TARGETS, t, lam, **cfg)
    return fast, slow


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_loop_reference_value_and_gradient(name):
    cfg = CONFIGS[name]
    v = cfg.get("v", 2)
    views = make_views(v, seed=3)
    lam = supremix_mix_ratios(v * N, generator=torch.Generator().manual_seed(7))
    fast, slow = _run(cfg, views, lam)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    cot = randn(*fast.shape, seed=11)
    g_fast = torch.autograd.grad(fast, views, cot)
    g_slow = torch.autograd.grad(slow, views, cot)
    for a, b in zip(g_fast, g_slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_every_anchor_sees_both_kinds_of_mixture():
    """The test batch must exercise the mixtures: some anchors have mix-positives."""
    views = make_views(2, seed=3)
    lam = supremix_mix_ratios(2 * N, generator=torch.Generator().manual_seed(7))
    base = dict(targets=TARGETS, mix_ratios=lam, reduction="none", distance="none")
    plain = supremix(*views, mix_negatives=False, mix_positives=False, **base)
    with_pos = supremix(*views, mix_negatives=False, **base)
    with_neg = supremix(*views, mix_positives=False, **base)
    changed = (with_pos - plain).abs() > 1e-6
    # targets 1.0 (between 0 and 2.5) and 2.5 (between 1 and 3.5) have mix-positives
    assert changed.tolist() == [False, True, True, True, False] * 2
    assert ((with_neg - plain).abs() > 1e-6).all()


def test_stacked_views_layout_equals_separate_views():
    views = make_views(2, seed=1)
    lam = supremix_mix_ratios(2 * N, generator=torch.Generator().manual_seed(2))
    a = supremix(*views, targets=TARGETS, mix_ratios=lam)
    b = supremix(torch.stack(views, 1), targets=TARGETS, mix_ratios=lam)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_reduces_to_supcon_without_mixtures_and_weights():
    """No mixtures, no distance weights: SupCon L_out over exact-target classes."""
    views = make_views(2, seed=4)
    classes = torch.unique(TARGETS, return_inverse=True)[1]
    ours = supremix(
        *views,
        targets=TARGETS,
        temperature=0.3,
        distance="none",
        mix_negatives=False,
        mix_positives=False,
        reduction="none",
    )
    theirs = F.sup_con(*views, labels=classes, temperature=0.3, reduction="none")
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_distance_weights_only_raise_the_loss():
    """w >= 1 on every denominator term and w = 1 on every positive: each anchor's loss
    grows with the weights: l1 > none always, and l2 > l1 here because most target gaps
    exceed 1."""
    views = make_views(2, seed=5)
    lam = supremix_mix_ratios(2 * N, generator=torch.Generator().manual_seed(3))
    out = {
        d: supremix(*views, targets=TARGETS, distance=d, mix_ratios=lam, reduction="none")
        for d in ("none", "l1", "l2")
    }
    assert (out["l1"] > out["none"]).all() and (out["l2"] > out["l1"]).all()


def test_official_code_shift_upweights_mixtures():
    """With one positive-count convention, the code's separate max shift multiplies each
    mixture term by exp(max_real - max_mix) >= 1, so its denominator is larger."""
    views = make_views(2, seed=6)
    lam = supremix_mix_ratios(2 * N, generator=torch.Generator().manual_seed(4))
    kw = dict(targets=TARGETS, mix_ratios=lam, mix_positives=False, reduction="none")
    paper = supremix(*views, **kw)
    code = supremix(*views, variant="official_code", **kw)
    # only real positives: the other view (|P| = 1), and for the two samples with target
    # 1.0 also both views of the twin (|P| = 3); undo the code's / (|P| + 1)
    n_pos = torch.tensor([1, 3, 3, 1, 1] * 2, dtype=torch.float64)
    assert (code * (n_pos + 1) / n_pos > paper).all()


def test_mixtures_are_detached():
    """Only the anchor gets gradient through an anchor-mixture similarity: the library's
    gradient equals the detached reference's and differs from a reference whose mixtures
    carry gradient to their ingredients (so the check can tell the two apart)."""
    views = make_views(2, seed=8)
    lam = supremix_mix_ratios(2 * N, generator=torch.Generator().manual_seed(5))
    fast = supremix(*views, targets=TARGETS, temperature=0.2, mix_ratios=lam)
    (g,) = torch.autograd.grad(fast, [views[1]])
    attached = reference(views, TARGETS, 0.2, lam, detach=False).mean()
    (g_attached,) = torch.autograd.grad(attached, [views[1]])
    detached = reference(views, TARGETS, 0.2, lam).mean()
    (g_detached,) = torch.autograd.grad(detached, [views[1]])
    torch.testing.assert_close(g, g_detached, rtol=1e-9, atol=1e-12)
    assert (g - g_attached).abs().max() > 1e-3


def test_large_batch_never_builds_mixture_vectors():
    """R = 128 rows of D = 2048: the released code's (R, R^2, D) mixture tensor would hold
    4.3e9 floats (17 GB); here the ~350k mix-positive logits are scalars."""
    g = torch.Generator().manual_seed(0)
    z1, z2 = (torch.randn(64, 2048, generator=g) for _ in range(2))
    y = torch.rand(64, generator=g) * 100
    out = supremix(z1, z2, targets=y, window=None, generator=g)
    assert torch.isfinite(out)


def test_generator_determines_the_draws():
    views = make_views(2, seed=9)
    a = supremix(*views, targets=TARGETS, generator=torch.Generator().manual_seed(1))
    b = supremix(*views, targets=TARGETS, generator=torch.Generator().manual_seed(1))
    lam = supremix_mix_ratios(2 * N, generator=torch.Generator().manual_seed(1))
    c = supremix(*views, targets=TARGETS, mix_ratios=lam)
    d = supremix(*views, targets=TARGETS, generator=torch.Generator().manual_seed(2))
    assert a.item() == b.item() == c.item()
    assert a.item() != d.item()


def test_generator_leaves_global_rng_alone():
    state = torch.get_rng_state()
    supremix_mix_ratios(6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.get_rng_state())


def test_mix_ratios_follow_the_beta_law():
    lam = supremix_mix_ratios(200, (2.0, 8.0), generator=torch.Generator().manual_seed(0))
    assert 0 <= lam.min() and lam.max() <= 1
    assert abs(lam.mean().item() - 0.2) < 0.005  # Beta(2, 8) mean; s.e. 6e-4
    lam = supremix_mix_ratios(200, (5.0, 5.0), generator=torch.Generator().manual_seed(0))
    assert abs(lam.mean().item() - 0.5) < 0.005


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs(dtype):
    views = [randn(N, D, seed=k, dtype=torch.float64).to(dtype) for k in range(2)]
    lam = supremix_mix_ratios(2 * N, generator=torch.Generator().manual_seed(0))
    views = [x.requires_grad_() for x in views]
    out = supremix(*views, targets=TARGETS, mix_ratios=lam, temperature=0.1)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    grads = torch.autograd.grad(out, views)
    exact_views = [x.detach().double().requires_grad_() for x in views]
    exact = supremix(*exact_views, targets=TARGETS, mix_ratios=lam, temperature=0.1)
    exact_grads = torch.autograd.grad(exact, exact_views)
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5)
    # gradients come back in the input dtype: allow its rounding (one ulp) and no more
    tol = max(torch.finfo(dtype).eps, 1e-5)
    for g, e in zip(grads, exact_grads, strict=True):
        assert g.dtype == dtype and torch.isfinite(g).all()
        torch.testing.assert_close(g.double(), e, rtol=tol, atol=tol * e.abs().max().item())


@pytest.mark.parametrize("variant", ["paper", "official_code"])
def test_small_temperature_is_finite(variant):
    views = [randn(N, D, seed=k, dtype=torch.float32).requires_grad_() for k in range(2)]
    out = supremix(*views, targets=TARGETS.float(), temperature=0.01, variant=variant)
    assert torch.isfinite(out)
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(out, views))


def test_reductions():
    views = make_views(2, seed=2)
    lam = supremix_mix_ratios(2 * N, generator=torch.Generator().manual_seed(0))
    kw = dict(targets=TARGETS, mix_ratios=lam)
    none = supremix(*views, reduction="none", **kw)
    assert none.shape == (2 * N,)
    torch.testing.assert_close(supremix(*views, **kw), none.mean(), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        supremix(*views, reduction="sum", **kw), none.sum(), rtol=1e-12, atol=0
    )


def test_integer_targets_are_accepted():
    views = make_views(2, seed=2)
    lam = supremix_mix_ratios(2 * N, generator=torch.Generator().manual_seed(0))
    ints = torch.tensor([0, 1, 1, 3, 4])
    a = supremix(*views, targets=ints, mix_ratios=lam)
    b = supremix(*views, targets=ints.double(), mix_ratios=lam)
    assert a.item() == b.item()


def test_module_round_trip_and_learnable_temperature():
    loss = contrastkit.create_loss("supremix", window=2.0, mix_beta=(5.0, 5.0), distance="l2")
    assert isinstance(loss, SupReMix) and loss.inputs == "targets"
    clone = contrastkit.create_loss("supremix", **loss.get_config())
    assert clone.get_config() == loss.get_config()
    views = make_views(2, seed=1)
    lam = supremix_mix_ratios(2 * N, generator=torch.Generator().manual_seed(0))
    expected = supremix(
        *views, targets=TARGETS, mix_ratios=lam, window=2.0, mix_beta=(5.0, 5.0), distance="l2"
    )
    torch.testing.assert_close(loss(*views, targets=TARGETS, mix_ratios=lam), expected)
    learn = SupReMix(temperature=0.2, learnable=True)
    value = learn(*views, targets=TARGETS, mix_ratios=lam)
    value.backward()
    assert learn.logit_scale.log_scale.grad is not None
    torch.testing.assert_close(
        value, supremix(*views, targets=TARGETS, mix_ratios=lam, temperature=0.2)
    )


def test_module_seed_makes_draws_reproducible_and_is_saved():
    views = make_views(2, seed=1)
    a, b = SupReMix(seed=3), SupReMix(seed=3)
    first = a(*views, targets=TARGETS)
    assert first.item() == b(*views, targets=TARGETS).item()
    lam = supremix_mix_ratios(2 * N, generator=torch.Generator().manual_seed(3))
    assert first.item() == supremix(*views, targets=TARGETS, mix_ratios=lam).item()
    c = SupReMix(seed=3)
    c.load_state_dict(a.state_dict())  # restores the generator's position
    assert c(*views, targets=TARGETS).item() == a(*views, targets=TARGETS).item()
    state = torch.get_rng_state()
    a(*views, targets=TARGETS)
    assert torch.equal(state, torch.get_rng_state())
    with pytest.raises(TypeError, match=r"SupReMix: `seed` is 1.5"):
        SupReMix(seed=1.5)


def test_default_module_on_the_registry_toy_batch():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(8, 6, generator=g, requires_grad=True)
    z2 = torch.randn(8, 6, generator=g)
    value = contrastkit.create_loss("supremix")(z1, z2, targets=(torch.arange(8) % 3).float())
    value.backward()
    assert torch.isfinite(value) and z1.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        (dict(), TypeError, r"`targets` is missing.*targets=y"),
        (dict(targets=torch.zeros(N, 1)), ValueError, r"`targets` has shape \(5, 1\).*squeeze"),
        (dict(targets=torch.zeros(3)), ValueError, r"`targets` has shape \(3,\).*one target"),
        (dict(targets=torch.zeros(N, dtype=torch.bool)), TypeError, r"`targets` has dtype"),
        (
            dict(targets=torch.tensor([0.0, 1, float("nan"), 2, 3])),
            ValueError,
            r"`targets` contains NaN.*finite",
        ),
        (dict(targets=[0.0] * N), TypeError, r"`targets` is a list"),
        (dict(targets=TARGETS, window=0.0), ValueError, r"`window` is 0.0.*> 0"),
        (dict(targets=TARGETS, mix_beta=(2.0,)), TypeError, r"`mix_beta` is \(2.0,\).*pair"),
        (dict(targets=TARGETS, mix_beta=(2.0, -1.0)), ValueError, r"`mix_beta\[1\]` is -1.0"),
        (dict(targets=TARGETS, distance="L1_inv"), ValueError, r"`distance` is 'L1_inv'"),
        (dict(targets=TARGETS, variant="code"), ValueError, r"`variant` is 'code'.*'paper'"),
        (dict(targets=TARGETS, similarity="neg_sq_l2"), ValueError, r"`similarity`"),
        (dict(targets=TARGETS, temperature=0.0), ValueError, r"`temperature` is 0.0"),
        (dict(targets=TARGETS, reduction="avg"), ValueError, r"`reduction` is 'avg'"),
        (dict(targets=TARGETS, generator=3), TypeError, r"`generator` is a int.*Generator"),
        (
            dict(targets=TARGETS, mix_ratios=torch.zeros(3, 3)),
            ValueError,
            r"`mix_ratios` has shape \(3, 3\).*\(10, 10\)",
        ),
        (
            dict(targets=TARGETS, mix_ratios=torch.full((10, 10), 1.5)),
            ValueError,
            r"`mix_ratios` has entries outside \[0, 1\]",
        ),
    ],
)
def test_bad_input(kwargs, error, pattern):
    views = make_views(2)
    with pytest.raises(error, match=pattern):
        supremix(*views, **kwargs)


def test_one_view_is_rejected():
    with pytest.raises(ValueError, match=r"`views` holds 1 view\(s\)"):
        supremix(randn(N, D), targets=TARGETS)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"SupReMix: `window` is -1"):
        SupReMix(window=-1)
    with pytest.raises(ValueError, match=r"SupReMix: `variant` is 'x'"):
        SupReMix(variant="x")


# ----------------------------------------------------------------------------- script


def test_result_script_smoke(tmp_path):
    from contrastkit.train.data import data_root

    if not (data_root() / "mnist-test" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("the shared MNIST test set (../shared/data/mnist-test) is not here")
    text = run_seed_script("supremix", tmp_path)
    assert "<!-- seed:supremix -->" in text and "### supremix:" in text
    assert "| SupReMix |" in text and "| SimCLR" in text and "±" in text
