"""Every loss against its loop reference: value and gradient in float64, dtypes,
reductions, permutation equivariance."""

from __future__ import annotations

import math

import pytest
import torch

import contrastkit.functional as F
import references as ref

N, D = 6, 5
LABELS = torch.tensor([0, 1, 0, 2, 1, 2])
# An arbitrary pairing over 6 anchors x 9 candidates: every row has a positive.
VALID_MASK = torch.rand(N, 9, generator=torch.Generator().manual_seed(4)) > 0.2
POS_MASK = (torch.rand(N, 9, generator=torch.Generator().manual_seed(5)) > 0.6) & VALID_MASK
POS_MASK[torch.arange(N), torch.arange(N)] = True
VALID_MASK[torch.arange(N), torch.arange(N)] = True


def randn(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def views(v=2, seed=0, n=N):
    return [randn(n, D, seed=seed + k) for k in range(v)]


# Each case: (inputs builder, fast per-anchor function, reference per-anchor function).
CASES = {
    "info_nce_2views": (
        lambda: views(2),
        lambda x: F.info_nce(*x, temperature=0.2, reduction="none"),
        lambda x: ref.info_nce(x, 0.2),
    ),
    "info_nce_3views": (
        lambda: views(3),
        lambda x: F.info_nce(*x, temperature=0.5, reduction="none"),
        lambda x: ref.info_nce(x, 0.5),
    ),
    "info_nce_dot": (
        lambda: views(2),
        lambda x: F.info_nce(*x, temperature=2.0, similarity="dot", reduction="none"),
        lambda x: ref.info_nce(x, 2.0, similarity="dot"),
    ),
    "info_nce_neg_sq_l2": (
        lambda: views(2),
        lambda x: F.info_nce(*x, temperature=3.0, similarity="neg_sq_l2", reduction="none"),
        lambda x: ref.info_nce(x, 3.0, similarity="neg_sq_l2"),
    ),
    "info_nce_extra_negatives": (
        lambda: views(2) + [randn(4, D, seed=9)],
        lambda x: F.info_nce(x[0], x[1], negatives=x[2], temperature=0.1, reduction="none"),
        lambda x: ref.info_nce(x[:2], 0.1, negatives=x[2]),
    ),
    "sup_con_2views": (
        lambda: views(2),
        lambda x: F.sup_con(*x, labels=LABELS, temperature=0.1, reduction="none"),
        lambda x: ref.info_nce(x, 0.1, labels=LABELS),
    ),
    "sup_con_1view": (
        lambda: views(1),
        lambda x: F.sup_con(*x, labels=LABELS, temperature=0.3, reduction="none"),
        lambda x: ref.info_nce(x, 0.3, labels=LABELS),
    ),
    "dcl": (
        lambda: views(2),
        lambda x: F.dcl(*x, temperature=0.1, reduction="none"),
        lambda x: ref.info_nce(x, 0.1, mode="decoupled"),
    ),
    "dcl_3views": (
        lambda: views(3),
        lambda x: F.dcl(*x, temperature=0.2, reduction="none"),
        lambda x: ref.info_nce(x, 0.2, mode="decoupled"),
    ),
    "dclw": (
        lambda: views(2),
        lambda x: F.dclw(*x, temperature=0.1, sigma=0.5, reduction="none"),
        lambda x: ref.info_nce(x, 0.1, mode="vmf", sigma=0.5),
    ),
    "hcl": (
        lambda: views(2),
        lambda x: F.hcl(*x, temperature=0.5, beta=1.0, tau_plus=0.1, reduction="none"),
        lambda x: ref.hcl(x, 0.5, 1.0, 0.1),
    ),
    "hcl_queue": (
        lambda: views(2) + [randn(5, D, seed=7)],
        lambda x: F.hcl(
            x[0], x[1], negatives=x[2], temperature=0.3, beta=0.5, tau_plus=0.05, reduction="none"
        ),
        lambda x: ref.hcl(x[:2], 0.3, 0.5, 0.05, negatives=x[2]),
    ),
    "debiased": (
        lambda: views(2),
        lambda x: F.debiased_info_nce(*x, temperature=0.5, tau_plus=0.1, reduction="none"),
        lambda x: ref.hcl(x, 0.5, 0.0, 0.1),
    ),
    "debiased_clamped": (
        # tau_plus 0.5 at a low temperature drives the corrected mass below the clamp.
        lambda: views(2),
        lambda x: F.debiased_info_nce(*x, temperature=0.2, tau_plus=0.5, reduction="none"),
        lambda x: ref.hcl(x, 0.2, 0.0, 0.5),
    ),
    "hard_contrastive": (
        lambda: views(2),
        lambda x: F.hard_contrastive(*x, temperature=0.2, alpha=0.3, reduction="none"),
        lambda x: ref.hard_contrastive(x, 0.2, k=math.ceil(0.3 * (2 * N - 2))),
    ),
    "simple_contrastive": (
        lambda: views(2),
        lambda x: F.simple_contrastive(*x, reduction="none"),
        lambda x: ref.simple_contrastive(x),
    ),
    "simple_contrastive_hard": (
        lambda: views(2),
        lambda x: F.simple_contrastive(*x, lam=0.05, alpha=0.5, reduction="none"),
        lambda x: ref.simple_contrastive(x, lam=0.05, k=math.ceil(0.5 * (2 * N - 2))),
    ),
    "clip": (
        lambda: views(2),
        lambda x: F.clip(*x, temperature=0.07, reduction="none"),
        lambda x: ref.clip(x[0], x[1], 0.07),
    ),
    "clip_one_direction": (
        lambda: views(2),
        lambda x: F.clip(*x, temperature=0.2, symmetric=False, reduction="none"),
        lambda x: ref.clip(x[0], x[1], 0.2, symmetric=False),
    ),
    "moco_queue": (
        lambda: views(2) + [randn(7, D, seed=5)],
        lambda x: F.moco(x[0], x[1], negatives=x[2], temperature=0.07, reduction="none"),
        lambda x: ref.moco_queue_only(x[0], x[1], x[2], 0.07),
    ),
    "moco_queue_and_batch": (
        lambda: views(2) + [randn(7, D, seed=5)],
        lambda x: F.moco(
            x[0], x[1], negatives=x[2], in_batch_negatives=True, temperature=0.2, reduction="none"
        ),
        lambda x: ref.clip(x[0], x[1], 0.2, symmetric=False, negatives=x[2]),
    ),
    "siglip": (
        lambda: views(2),
        lambda x: F.siglip(*x, temperature=0.1, bias=-10.0, reduction="none"),
        lambda x: ref.siglip(x[0], x[1], 0.1, -10.0),
    ),
    "triplet": (
        lambda: views(1),
        lambda x: F.triplet_margin(x[0], labels=LABELS, margin=0.2, reduction="none"),
        lambda x: ref.triplet_batch_hard(x[0], LABELS, 0.2),
    ),
    "triplet_soft_raw": (
        lambda: views(1),
        lambda x: F.triplet_margin(
            x[0], labels=LABELS, margin=None, normalize=False, reduction="none"
        ),
        lambda x: ref.triplet_batch_hard(x[0], LABELS, None, normalize=False),
    ),
    "barlow_twins": (
        lambda: views(2),
        lambda x: F.barlow_twins(*x, lambd=5e-3),
        lambda x: ref.barlow_twins(x[0], x[1], 5e-3),
    ),
    "vicreg_paper": (
        lambda: views(2),
        lambda x: F.vicreg(*x),
        lambda x: ref.vicreg(x[0], x[1], 25.0, 25.0, 1.0, 1e-4, "paper"),
    ),
    "vicreg_official_code": (
        lambda: views(2),
        lambda x: F.vicreg(*x, variant="official_code"),
        lambda x: ref.vicreg(x[0], x[1], 25.0, 25.0, 1.0, 1e-4, "official_code"),
    ),
    "masked_info_nce": (
        lambda: [randn(N, D, seed=1), randn(9, D, seed=2)],
        lambda x: F.masked_info_nce(
            x[0],
            x[1],
            positive_mask=POS_MASK,
            valid_mask=VALID_MASK,
            temperature=0.3,
            reduction="none",
        ),
        lambda x: ref.masked_info_nce(x[0], x[1], POS_MASK, VALID_MASK, 0.3),
    ),
    "byol": (
        lambda: views(2),
        lambda x: F.normalized_regression(*x, form="byol", reduction="none"),
        lambda x: ref.normalized_regression(x[0], x[1], "byol"),
    ),
    "simsiam": (
        lambda: views(2),
        lambda x: F.normalized_regression(*x, form="simsiam", reduction="none"),
        lambda x: ref.normalized_regression(x[0], x[1], "simsiam"),
    ),
}


def _grads(fn, inputs):
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    out = fn(leaves)
    # A fixed random cotangent checks every per-anchor gradient, not just their sum.
    weights = randn(*out.shape, seed=123) if out.dim() else torch.tensor(1.0, dtype=out.dtype)
    (out * weights).sum().backward()
    return out.detach(), [x.grad for x in leaves]


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_loop_reference_value_and_gradient(case):
    build, fast, slow = CASES[case]
    inputs = build()
    value, grads = _grads(fast, inputs)
    ref_value, ref_grads = _grads(slow, inputs)
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-12)
    for g, rg in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, rg, rtol=1e-9, atol=1e-12)


# Per-anchor losses at small temperatures: half precision inputs must stay finite and
# agree with float64 computed on the same (rounded) inputs.
LOW_PRECISION = {
    "info_nce": lambda x, t: F.info_nce(x[0], x[1], temperature=t, reduction="none"),
    "info_nce_queue": lambda x, t: F.info_nce(
        x[0], x[1], negatives=x[2], temperature=t, reduction="none"
    ),
    "sup_con": lambda x, t: F.sup_con(
        x[0], x[1], labels=torch.arange(16) % 5, temperature=t, reduction="none"
    ),
    "dcl": lambda x, t: F.dcl(x[0], x[1], temperature=t, reduction="none"),
    "dclw": lambda x, t: F.dclw(x[0], x[1], temperature=t, reduction="none"),
    "hcl": lambda x, t: F.hcl(x[0], x[1], temperature=t, reduction="none"),
    "debiased": lambda x, t: F.debiased_info_nce(x[0], x[1], temperature=t, reduction="none"),
    "hard_contrastive": lambda x, t: F.hard_contrastive(
        x[0], x[1], temperature=t, alpha=0.5, reduction="none"
    ),
    "clip": lambda x, t: F.clip(x[0], x[1], temperature=t, reduction="none"),
    "moco": lambda x, t: F.moco(x[0], x[1], negatives=x[2], temperature=t, reduction="none"),
    "siglip": lambda x, t: F.siglip(x[0], x[1], temperature=t, bias=-1.0, reduction="none"),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("temperature", [0.01, 0.05, 0.2, 1.0])
@pytest.mark.parametrize("name", sorted(LOW_PRECISION))
def test_low_precision_is_finite_and_close_to_float64(name, temperature, dtype):
    # Three tensors: two views (or query/key) and, where used, a bank of extra negatives.
    fn = LOW_PRECISION[name]
    low = [x.to(dtype).requires_grad_(True) for x in views(3, n=16)]
    out = fn(low, temperature)
    out.sum().backward()
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(x.grad).all() for x in low if x.grad is not None)
    assert low[0].grad is not None and low[1].grad is not None
    exact = fn([x.detach().double() for x in low], temperature)
    # float32 accumulation: relative error ~1e-6 of the logit scale 1/t.
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5 / temperature)


def test_reductions_are_mean_sum_none_of_the_same_values():
    x = views(2)
    per = F.info_nce(*x, reduction="none")
    assert per.shape == (2 * N,)
    torch.testing.assert_close(F.info_nce(*x, reduction="mean"), per.mean())
    torch.testing.assert_close(F.info_nce(*x, reduction="sum"), per.sum())
    for fn in (F.clip, F.siglip, F.normalized_regression):
        per = fn(*x, reduction="none")
        assert per.shape == (N,)
        torch.testing.assert_close(fn(*x, reduction="sum"), per.sum())
        torch.testing.assert_close(fn(*x, reduction="mean"), per.mean())


def test_nt_xent_of_two_views_equals_simclr_cross_entropy():
    """SimCLR convention: 2N x (2N - 1) logits, cross-entropy at the other view."""
    z1, z2 = views(2)
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / 0.5
    logits.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(N) + N, torch.arange(N)])
    expected = torch.nn.functional.cross_entropy(logits, target)
    torch.testing.assert_close(F.info_nce(z1, z2, temperature=0.5), expected)


def test_one_tensor_of_views_equals_separate_view_tensors():
    z1, z2, z3 = views(3)
    stacked = torch.stack([z1, z2, z3], 1)
    torch.testing.assert_close(F.info_nce(stacked), F.info_nce(z1, z2, z3))


def test_debiased_with_zero_prior_is_info_nce():
    z1, z2 = views(2)
    torch.testing.assert_close(
        F.debiased_info_nce(z1, z2, temperature=0.5, tau_plus=0.0),
        F.info_nce(z1, z2, temperature=0.5),
    )


def test_hard_contrastive_keeping_every_negative_is_info_nce():
    z1, z2 = views(2)
    torch.testing.assert_close(
        F.hard_contrastive(z1, z2, temperature=0.3, alpha=1.0),
        F.info_nce(z1, z2, temperature=0.3),
    )


def test_dclw_weights_follow_the_paper_not_the_unofficial_code():
    """Weights average to 1 (2 - B softmax); the unofficial 2 - softmax averages ~2."""
    from contrastkit.core.weighting import vmf_weights

    s = randn(N, N).tanh()
    positive = torch.eye(N, dtype=torch.bool)
    w = vmf_weights(s, positive, 0.5)[positive]
    torch.testing.assert_close(w.mean(), torch.tensor(1.0, dtype=torch.float64))
    expected = 2 - torch.exp(s.diagonal() / 0.5) / torch.exp(s.diagonal() / 0.5).mean()
    torch.testing.assert_close(w, expected)


PERMUTABLE = {
    "info_nce": lambda x, y: F.info_nce(*x, reduction="none"),
    "sup_con": lambda x, y: F.sup_con(*x, labels=y, reduction="none"),
    "dcl": lambda x, y: F.dcl(*x, reduction="none"),
    "dclw": lambda x, y: F.dclw(*x, reduction="none"),
    "hcl": lambda x, y: F.hcl(*x, reduction="none"),
    "hard_contrastive": lambda x, y: F.hard_contrastive(*x, alpha=0.5, reduction="none"),
    "simple_contrastive": lambda x, y: F.simple_contrastive(*x, reduction="none"),
    "triplet": lambda x, y: F.triplet_margin(*x, labels=y, reduction="none"),
    "clip": lambda x, y: F.clip(*x, reduction="none"),
    "siglip": lambda x, y: F.siglip(*x, reduction="none"),
    "barlow_twins": lambda x, y: F.barlow_twins(*x),
    "vicreg": lambda x, y: F.vicreg(*x),
}


@pytest.mark.parametrize("name", sorted(PERMUTABLE))
def test_permutation_equivariance(name):
    fn = PERMUTABLE[name]
    x = views(2)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    out = fn(x, LABELS)
    out_perm = fn([v[perm] for v in x], LABELS[perm])
    if out.dim() == 0:
        torch.testing.assert_close(out_perm, out)
        return
    # Per-anchor values are view-major: permute within each view block.
    blocks = out.numel() // N
    index = torch.cat([perm + b * N for b in range(blocks)])
    torch.testing.assert_close(out_perm, out[index])


def test_learnable_temperature_gets_a_gradient_and_is_clamped():
    from contrastkit.losses import CLIP

    loss = CLIP(temperature=0.07)
    z1, z2 = views(2, n=8)
    loss(z1.float(), z2.float()).backward()
    assert loss.logit_scale.log_scale.grad is not None
    with torch.no_grad():
        loss.logit_scale.log_scale.fill_(10.0)  # scale e^10, far beyond 100
    assert float(loss.current_temperature()) == pytest.approx(0.01)


def test_masked_info_nce_reproduces_the_presets():
    z1, z2 = views(2)
    both = torch.cat([z1, z2])
    ids = torch.arange(N).repeat(2)
    same = ids[:, None] == ids[None, :]
    torch.testing.assert_close(
        F.masked_info_nce(both, positive_mask=same), F.info_nce(z1, z2, temperature=0.1)
    )
    pairs = torch.stack([torch.arange(N), torch.arange(N)], 1)
    torch.testing.assert_close(
        F.masked_info_nce(z1, z2, index_pairs=pairs, temperature=0.07),
        F.clip(z1, z2, temperature=0.07, symmetric=False),
    )


OTHER_LOW_PRECISION = {
    "triplet": lambda x: F.triplet_margin(
        x[0], x[1], labels=torch.arange(16) % 4, reduction="none"
    ),
    "simple_contrastive": lambda x: F.simple_contrastive(x[0], x[1], reduction="none"),
    "barlow_twins": lambda x: F.barlow_twins(x[0], x[1]),
    "vicreg": lambda x: F.vicreg(x[0], x[1]),
    "byol": lambda x: F.normalized_regression(x[0], x[1], form="byol", reduction="none"),
    "simsiam": lambda x: F.normalized_regression(x[0], x[1], form="simsiam", reduction="none"),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("name", sorted(OTHER_LOW_PRECISION))
def test_other_losses_in_low_precision(name, dtype):
    fn = OTHER_LOW_PRECISION[name]
    low = [x.to(dtype).requires_grad_(True) for x in views(2, n=16)]
    out = fn(low)
    out.sum().backward()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert low[0].grad is not None  # (the BYOL/SimSiam target is stop-gradient)
    assert all(torch.isfinite(x.grad).all() for x in low if x.grad is not None)
    exact = fn([x.detach().double() for x in low])
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5)


def test_masked_info_nce_with_a_float_mask_takes_graded_positives():
    z = randn(N, D, seed=11)
    scores = torch.rand(N, N, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    graded = F.masked_info_nce(z, positive_mask=scores, temperature=0.2, reduction="none")
    torch.testing.assert_close(
        graded,
        F.soft_sup_con(z, scores=scores, temperature=0.2, reduction="none"),
        rtol=1e-12,
        atol=0,
    )
    # A 0/1 float mask is the same pairing as the bool mask.
    hard = POS_MASK[:, :N]
    torch.testing.assert_close(
        F.masked_info_nce(z, positive_mask=hard.double(), valid_mask=VALID_MASK[:, :N]),
        F.masked_info_nce(z, positive_mask=hard, valid_mask=VALID_MASK[:, :N]),
        rtol=1e-12,
        atol=0,
    )
    with pytest.raises(ValueError, match=r"`positive_mask` has entries outside \[0, 1\]"):
        F.masked_info_nce(z, positive_mask=scores * 2)
