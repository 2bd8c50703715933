"""SepCLR (Louiset et al., ICLR 2024): every term against a plain loop over pairs
(float64 value and gradient), the information-less minimiser, the module, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from contrastkit.methods.sepclr import (
    SepCLR,
    kjem,
    sepclr_alignment,
    sepclr_information_less,
    sepclr_loss,
    sepclr_terms,
    sepclr_uniformity,
)

TAU = 0.5


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------ loop references


def ref_align(a, b, tau):
    return sum(((a[i] - b[i]) ** 2).sum() for i in range(len(a))) / len(a) / (2 * tau)


def ref_unif(x, tau):
    terms = [
        torch.exp(-((x[i] - x[j]) ** 2).sum() / (2 * tau))
        for i in range(len(x))
        for j in range(i + 1, len(x))
    ]
    return torch.log(sum(terms) / len(terms))


def ref_kjem(c, s, tau):
    n = len(c)
    rows = []
    for i in range(n):
        k = sum(
            torch.exp(-((s[i] - s[j]) ** 2).sum() / (2 * tau))
            * torch.exp(-((c[i] - c[j]) ** 2).sum() / (2 * tau))
            for j in range(n)
        )
        rows.append(torch.log(k / n))
    return sum(rows) / n


def ref_total(c1, c2, s1, s2, labels, tau=TAU, bs=1000.0, br=1000.0, lam=10.0, wu=2.0):
    """The official combination, written out row by row."""
    c1 = c1 / c1.norm(dim=1, keepdim=True)
    c2 = c2 / c2.norm(dim=1, keepdim=True)
    tgt = [i for i in range(len(labels)) if int(labels[i]) == 1]
    bg = [i for i in range(len(labels)) if int(labels[i]) == 0]
    n1 = torch.stack([s1[i] if i in tgt else torch.zeros_like(s1[i]) for i in range(len(s1))])
    n2 = torch.stack([s2[i] if i in tgt else torch.zeros_like(s2[i]) for i in range(len(s2))])
    common = ref_align(c1, c2, tau) + wu * (ref_unif(c1, tau) + ref_unif(c2, tau)) / 2
    salient = ref_align(s1[tgt], s2[tgt], tau) + wu * (ref_unif(n1, tau) + ref_unif(n2, tau)) / 2
    reg = (
        (
            sum((s1[i] ** 2).sum() for i in bg) / len(bg)
            + sum((s2[i] ** 2).sum() for i in bg) / len(bg)
        )
        / 2
        / (2 * tau)
    )
    jem = (ref_kjem(c1, n1, tau) + ref_kjem(c2, n2, tau)) / 2
    return common + bs * salient + br * reg + lam * jem


def grads(fn, inputs):
    inputs = [x.clone().requires_grad_(True) for x in inputs]
    value = fn(*inputs)
    return value.detach(), torch.autograd.grad(value, inputs)


def assert_value_and_grad(fast, ref, inputs):
    v1, g1 = grads(fast, inputs)
    v2, g2 = grads(ref, inputs)
    torch.testing.assert_close(v1, v2, rtol=1e-10, atol=1e-12)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


# ------------------------------------------------------------------ terms vs loops


@pytest.mark.parametrize("tau", [0.5, 0.1, 2.0])
def test_alignment_matches_loop(tau):
    x = [randn(7, 4, seed=1), randn(7, 4, seed=2)]
    assert_value_and_grad(
        lambda a, b: sepclr_alignment(a, b, tau), lambda a, b: ref_align(a, b, tau), x
    )


@pytest.mark.parametrize("tau", [0.5, 0.05])
def test_uniformity_matches_loop(tau):
    x = [randn(8, 3, seed=3)]
    assert_value_and_grad(lambda a: sepclr_uniformity(a, tau), lambda a: ref_unif(a, tau), x)


def test_uniformity_with_repeated_rows_has_finite_gradient():
    # s' holds many equal null vectors; a square root of the distance would give NaN.
    x = torch.zeros(6, 3, dtype=torch.float64)
    x[:2] = randn(2, 3, seed=4)
    assert_value_and_grad(lambda a: sepclr_uniformity(a, TAU), lambda a: ref_unif(a, TAU), [x])


@pytest.mark.parametrize("tau", [0.5, 0.2])
def test_kjem_matches_loop(tau):
    c = randn(6, 4, seed=5)
    s = randn(6, 3, seed=6)
    assert_value_and_grad(lambda a, b: kjem(a, b, tau), lambda a, b: ref_kjem(a, b, tau), [c, s])


def test_kjem_is_stable_for_far_apart_codes_in_float32():
    # Every off-diagonal kernel underflows; the self term keeps the value at log(1/N).
    s = torch.arange(5, dtype=torch.float32)[:, None] * 100.0
    c = torch.zeros(5, 2)
    c[:, 0] = 1.0
    value = kjem(c, s, 0.5)
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(math.log(1 / 5), abs=1e-6)


def test_information_less_matches_closed_form_and_its_minimiser_is_zero():
    s1, s2 = randn(5, 3, seed=7), randn(5, 3, seed=8)
    expected = ((s1**2).sum(1).mean() + (s2**2).sum(1).mean()) / 2 / (2 * TAU)
    torch.testing.assert_close(sepclr_information_less(s1, s2, TAU), expected)
    # Gradient: d/ds of mean ||s||^2 / 2 / (2 tau) is s / (N * 2 tau).
    s1.requires_grad_(True)
    sepclr_information_less(s1, s2, TAU).backward()
    torch.testing.assert_close(s1.grad, s1.detach() / (5 * 2 * TAU))
    zero = torch.zeros(5, 3, dtype=torch.float64, requires_grad=True)
    value = sepclr_information_less(zero, zero.detach().clone(), TAU)
    value.backward()
    assert value.item() == 0.0 and bool((zero.grad == 0).all())
    # Descent from any start goes to the null vector: it is the unique minimiser.
    s = randn(4, 3, seed=9).requires_grad_(True)
    opt = torch.optim.SGD([s], lr=1.0)
    for _ in range(60):
        opt.zero_grad()
        sepclr_information_less(s, temperature=TAU).backward()
        opt.step()
    assert s.detach().abs().max().item() < 1e-4


def test_total_matches_official_combination_loop():
    n = 7
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 1])
    inputs = [
        randn(n, 4, seed=10),
        randn(n, 4, seed=11),
        randn(n, 3, seed=12),
        randn(n, 3, seed=13),
    ]
    assert_value_and_grad(
        lambda *x: sepclr_loss(*x, labels),
        lambda *x: ref_total(*x, labels),
        inputs,
    )


def test_total_matches_loop_with_other_weights():
    labels = torch.tensor([1, 0, 1, 0, 0, 1], dtype=torch.bool)
    inputs = [
        randn(6, 4, seed=20),
        randn(6, 4, seed=21),
        randn(6, 2, seed=22),
        randn(6, 2, seed=23),
    ]
    kw = dict(
        salient_weight=1.0, information_less_weight=10.0, jem_weight=3.0, uniformity_weight=1.0
    )
    assert_value_and_grad(
        lambda *x: sepclr_loss(*x, labels, temperature=0.3, **kw),
        lambda *x: ref_total(*x, labels, tau=0.3, bs=1.0, br=10.0, lam=3.0, wu=1.0),
        inputs,
    )


def test_background_salient_codes_get_gradient_only_from_the_information_less_term():
    labels = torch.tensor([0, 1, 1, 0, 1])
    c1, c2 = randn(5, 4, seed=30), randn(5, 4, seed=31)
    s1 = randn(5, 3, seed=32).requires_grad_(True)
    s2 = randn(5, 3, seed=33)
    terms = sepclr_terms(c1, c2, s1, s2, labels, information_less_weight=0.0)
    terms["loss"].backward()
    assert bool((s1.grad[labels == 0] == 0).all())
    assert bool((s1.grad[labels == 1] != 0).any())


def test_terms_are_finite_in_half_precision():
    labels = torch.tensor([0, 1] * 8)
    inputs = [randn(16, 8, seed=k).to(torch.bfloat16) for k in range(4)]
    terms = sepclr_terms(*inputs, labels)
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in terms.values())


# ------------------------------------------------------------------ module


def test_module_forward_and_loss_backward():
    torch.manual_seed(0)
    model = SepCLR(input_dim=12, common_dim=4, salient_dim=3, hidden=16, head_hidden=8)
    x1, x2 = randn(10, 12, seed=40).float(), randn(10, 12, seed=41).float()
    labels = torch.tensor([0, 1] * 5)
    c_rep, c, s_rep, s = model(x1)
    assert (
        c_rep.shape == (10, 4)
        and c.shape == (10, 4)
        and s_rep.shape == (10, 3)
        and s.shape == (10, 3)
    )
    terms = model.terms(x1, x2, labels)
    assert set(terms) == {"loss", "common", "salient", "information_less", "jem"}
    terms["loss"].backward()
    assert model.salient_encoder[1].weight.grad is not None
    assert model.common_encoder[1].weight.grad is not None


def test_module_takes_given_encoders():
    enc_c, enc_s = torch.nn.Linear(6, 5), torch.nn.Linear(6, 2)
    model = SepCLR(enc_c, enc_s, common_dim=5, salient_dim=2)
    assert model.common_encoder is enc_c and model.salient_encoder is enc_s
    loss = model.loss(torch.randn(4, 6), torch.randn(4, 6), torch.tensor([0, 1, 0, 1]))
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_training_pulls_background_salient_codes_to_zero():
    """A few Adam steps on a toy set: background salient codes shrink towards s' = 0
    while target salient codes stay spread."""
    g = torch.Generator().manual_seed(0)
    n = 32
    x = torch.randn(n, 6, generator=g)
    labels = torch.tensor([0, 1] * (n // 2))
    x[labels == 1, 0] += 3.0  # a target-only factor
    torch.manual_seed(0)
    model = SepCLR(input_dim=6, common_dim=4, salient_dim=2, hidden=32, head_hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        noise = [x + 0.05 * torch.randn(n, 6, generator=g) for _ in range(2)]
        opt.zero_grad()
        model.loss(*noise, labels).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        s = model(x)[3]
    bg, tg = s[labels == 0].norm(dim=1).mean(), s[labels == 1].norm(dim=1).mean()
    assert bg < 0.1 * tg


# ------------------------------------------------------------------ bad inputs


def test_rejects_labels_with_one_group():
    z = randn(4, 3)
    with pytest.raises(ValueError, match=r"`labels` marks every image as background.*at least one"):
        sepclr_terms(z, z, z, z, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"`labels` marks every image as target"):
        sepclr_terms(z, z, z, z, torch.ones(4, dtype=torch.long))


def test_rejects_labels_outside_zero_one_and_float_labels():
    z = randn(4, 3)
    with pytest.raises(ValueError, match=r"`labels` contains \[2\].*0 \(background\) or 1"):
        sepclr_terms(z, z, z, z, torch.tensor([0, 1, 2, 1]))
    with pytest.raises(TypeError, match=r"`labels` has dtype torch.float32.*integer or bool"):
        sepclr_terms(z, z, z, z, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"`labels` has shape \(3,\).*one flag per image \(4\)"):
        sepclr_terms(z, z, z, z, torch.tensor([0, 1, 0]))


def test_rejects_mismatched_rows_and_bad_numbers():
    z = randn(4, 3)
    labels = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"`s1` has 3 rows but `c1` has 4"):
        sepclr_terms(z, z, z[:3], z[:3], labels)
    with pytest.raises(ValueError, match=r"`c2` has shape \(4, 2\) but `c1` has \(4, 3\)"):
        sepclr_terms(z, z[:, :2], z, z, labels)
    with pytest.raises(ValueError, match=r"`temperature` is 0.0.*> 0"):
        sepclr_terms(z, z, z, z, labels, temperature=0.0)
    with pytest.raises(ValueError, match=r"`jem_weight` is -1.0.*>= 0"):
        sepclr_terms(z, z, z, z, labels, jem_weight=-1.0)
    bad = z.clone()
    bad[2, 0] = math.nan
    with pytest.raises(ValueError, match=r"`s2` contains NaN or inf in rows \[2\]"):
        sepclr_terms(z, z, z, bad, labels)
    with pytest.raises(ValueError, match=r"`salient` has 3 rows but `common` has 4"):
        kjem(z, z[:3])
    with pytest.raises(ValueError, match=r"`x` has a batch of 1"):
        sepclr_uniformity(z[:1])


def test_module_needs_input_dim_without_encoders():
    with pytest.raises(ValueError, match=r"`input_dim` is None.*flattened input size"):
        SepCLR()


# ------------------------------------------------------------------ results script


def test_smoke_results_section(tmp_path):
    from conftest import run_seed_script

    text = run_seed_script("sepclr", tmp_path)
    assert "<!-- seed:sepclr -->" in text and "### sepclr:" in text
    assert "| space |" in text and "Smoke run" in text
