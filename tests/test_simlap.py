"""SimLAP (Hydra): loop reference in float64 (value and gradient), the two released codes'
formulas as second references, partner draws, gate module, precision, errors, script."""

from __future__ import annotations

import pytest
import torch

import contrastkit
import contrastkit.functional as F
from conftest import run_seed_script
from contrastkit.losses.simlap import LabelGate, SimLAP, draw_partner_labels

N, D = 8, 5
Y1 = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3])
Y2 = torch.tensor([1, 2, 0, 3, 1, 3, 2, 0])  # arbitrary partners (some identical: b = 4)


def randn(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def gates(seed=7, n=N, d=D, dtype=torch.float64):
    return torch.sigmoid(2 * randn(n, d, seed=seed, dtype=dtype))


# ----------------------------------------------------------------- loop reference


def _lse(values):
    m = max(float(v.detach()) for v in values)
    return m + torch.log(sum(torch.exp(v - m) for v in values))


def _subspace_sim(a, b, g, variant):
    if variant == "gated_cosine":
        ga, gb = g * a, g * b
        return (ga @ gb) / (ga.norm() * gb.norm())
    return ((a / a.norm()) * g * g) @ (b / b.norm())


def reference(z1, z2, y1, y2, g, t, variant="gated_cosine"):
    """Per anchor b: positives = class y2_b, negatives = classes other than y1_b and y2_b;
    each positive against the negatives only (Wu et al., arXiv 2410.18200)."""
    one_view = z2 is None
    cands = z1 if one_view else z2
    out = []
    for b in range(z1.shape[0]):
        allowed = [n for n in range(cands.shape[0]) if not (one_view and n == b)]
        pos = [n for n in allowed if int(y1[n]) == int(y2[b])]
        neg = [n for n in allowed if int(y1[n]) not in (int(y1[b]), int(y2[b]))]
        logit = {n: _subspace_sim(z1[b], cands[n], g[b], variant) / t for n in pos + neg}
        terms = [_lse([logit[p]] + [logit[m] for m in neg]) - logit[p] for p in pos]
        out.append(sum(terms) / len(terms))
    return torch.stack(out)


CASES = {
    "gated_cosine": dict(variant="gated_cosine", t=0.1),
    "gated_cosine_hot": dict(variant="gated_cosine", t=1.5),
    "gate_squared": dict(variant="gate_squared", t=0.2),
    "one_view": dict(variant="gated_cosine", t=0.3, one_view=True),
    "one_view_gate_squared": dict(variant="gate_squared", t=0.5, one_view=True),
    "identical": dict(variant="gated_cosine", t=0.1, y2=Y1),
}


def _grads(fn, inputs):
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    out = fn(leaves)
    weights = randn(*out.shape, seed=123) if out.dim() else torch.tensor(1.0, dtype=out.dtype)
    (out * weights).sum().backward()
    return out.detach(), [x.grad for x in leaves]


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_loop_reference_value_and_gradient(case):
    cfg = CASES[case]
    y2, t, variant = cfg.get("y2", Y2), cfg["t"], cfg["variant"]
    one_view = cfg.get("one_view", False)
    inputs = [randn(N, D, seed=1), gates()] + ([] if one_view else [randn(N, D, seed=2)])

    def fast(x):
        views = x[:1] if one_view else [x[0], x[2]]
        return F.simlap(
            *views,
            labels=Y1,
            gate=x[1],
            partner_labels=y2,
            temperature=t,
            variant=variant,
            reduction="none",
        )

    def slow(x):
        return reference(x[0], None if one_view else x[2], Y1, y2, x[1], t, variant)

    value, grads = _grads(fast, inputs)
    ref_value, ref_grads = _grads(slow, inputs)
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-12)
    for g, rg in zip(grads, ref_grads, strict=True):  # z1, the gate, z2
        torch.testing.assert_close(g, rg, rtol=1e-9, atol=1e-12)


# ------------------------------------------ the released codes' formulas (transcribed)


def multipos_ce(logits, pos_mask, neg_mask, detach_centering):
    """The released ``multipos_ce_loss`` written out: row-centred logits, exp, per-pair
    ``log(e^l + sum_neg e^l) - l`` summed over positive pairs / number of positive pairs."""
    mean = logits.mean(1, keepdim=True)
    logits = logits - (mean.detach() if detach_centering else mean)
    score = logits.exp()
    neg = (score * neg_mask).sum(1, keepdim=True)
    return (pos_mask * (torch.log(score + neg) - logits)).sum() / pos_mask.sum()


def fastssl(z1, z2, y1, y2, g, t):
    """FastSSL ``disparate_loss``: normalise, gate squared on the anchor, fixed scale."""
    a = z1 / z1.norm(dim=1, keepdim=True)
    c = z2 / z2.norm(dim=1, keepdim=True)
    logits = (a * g * g) @ c.T / t
    c2 = y2[:, None] == y1[None, :]
    excluded = (y1[:, None] == y1[None, :]) | c2
    return multipos_ce(logits, c2.double(), (~excluded).double(), True)


def standalone(z1, z2, y1, y2, g, t):
    """The standalone script's ``disparate_loss``: gate both sides, renormalise, 1/t."""
    ga = g * z1
    ga = ga / ga.norm(dim=1, keepdim=True)
    gb = g[:, None, :] * z2[None, :, :]
    gb = gb / gb.norm(dim=2, keepdim=True)
    logits = torch.einsum("bj,bnj->bn", ga, gb) / t
    c2 = y2[:, None] == y1[None, :]
    neg = ~((y1[:, None] == y1[None, :]) | c2)
    return multipos_ce(logits, c2.double(), neg.double(), False)


@pytest.mark.parametrize("code, variant", [(fastssl, "gate_squared"), (standalone, "gated_cosine")])
def test_released_code_is_the_pair_weighted_mean_of_our_per_anchor_values(code, variant):
    # Row centring (detached or not) is a no-op; the codes average over positive pairs, so
    # their loss is sum_b |P(b)| L_b / sum_b |P(b)|, in value and in gradient.
    n_pos = (Y2[:, None] == Y1[None, :]).sum(1).double()

    def ours(x):
        per = F.simlap(
            x[0], x[2], labels=Y1, gate=x[1], partner_labels=Y2, temperature=0.1,
            variant=variant, reduction="none",
        )  # fmt: skip
        return (n_pos * per).sum() / n_pos.sum()

    inputs = [randn(N, D, seed=1), gates(), randn(N, D, seed=2)]
    value, grads = _grads(ours, inputs)
    ref_value, ref_grads = _grads(lambda x: code(x[0], x[2], Y1, Y2, x[1], 0.1), inputs)
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-12)
    for g, rg in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, rg, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------- properties


def test_gated_cosine_ignores_a_constant_gate_and_gate_squared_rescales_the_temperature():
    z1, z2 = randn(N, D, seed=1), randn(N, D, seed=2)
    kw = dict(labels=Y1, partner_labels=Y2, reduction="none")
    ones = torch.ones(N, D, dtype=torch.float64)
    base = F.simlap(z1, z2, gate=ones, temperature=0.2, **kw)
    torch.testing.assert_close(
        F.simlap(z1, z2, gate=0.3 * ones, temperature=0.2, **kw), base, rtol=1e-12, atol=0
    )
    torch.testing.assert_close(
        F.simlap(z1, z2, gate=0.5 * ones, temperature=0.2, variant="gate_squared", **kw),
        F.simlap(z1, z2, gate=ones, temperature=0.8, variant="gate_squared", **kw),
        rtol=1e-12,
        atol=0,
    )


def test_distinct_classes_identical_mode_and_open_gate_is_one_way_info_nce():
    # One positive per anchor (its own other view), nothing excluded: CLIP's q -> k term.
    z1, z2 = randn(N, D, seed=1), randn(N, D, seed=2)
    ids = torch.arange(N)
    got = F.simlap(
        z1, z2, labels=ids, gate=torch.ones(N, D, dtype=torch.float64), mode="identical",
        temperature=0.1, reduction="none",
    )  # fmt: skip
    want = F.clip(z1, z2, temperature=0.1, symmetric=False, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_partner_draws_follow_the_mode():
    y = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4])
    g = torch.Generator().manual_seed(0)
    arbitrary = draw_partner_labels(y, "arbitrary", generator=g)
    assert sorted(arbitrary.tolist()) == sorted(y.tolist()) and not torch.equal(arbitrary, y)
    assert torch.equal(draw_partner_labels(y, "identical"), y)
    for _ in range(20):
        distinct = draw_partner_labels(y, "distinct", num_classes=7, generator=g)
        assert (distinct != y).all() and ((distinct >= 0) & (distinct < 7)).all()
    again = draw_partner_labels(y, "arbitrary", generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, arbitrary)


def test_gate_module_is_a_sigmoid_of_the_fused_label_embedding():
    gate = LabelGate(num_classes=4, dim=D, embed_dim=6, hidden_dim=7).double()
    y1, y2 = Y1, Y2
    fused = (gate.embedding.weight[y1] + gate.embedding.weight[y2]) / 2
    out = gate(y1, y2)
    assert out.shape == (N, D) and ((out > 0) & (out < 1)).all()
    torch.testing.assert_close(out, torch.sigmoid(gate.mlp(fused)), rtol=0, atol=0)


# ----------------------------------------------------------------- the module


def test_module_owns_the_gate_and_is_deterministic_from_its_seed():
    z1 = randn(N, D, seed=1, dtype=torch.float32).requires_grad_(True)
    z2 = randn(N, D, seed=2, dtype=torch.float32)
    a = SimLAP(num_classes=4, gate_dim=8, gate_hidden=16)
    b = SimLAP(num_classes=4, gate_dim=8, gate_hidden=16)
    assert a.gate is None  # dim=None: built from the first batch
    first = a(z1, z2, labels=Y1)
    first.backward()
    assert a.dim == D and a.gate.embedding.weight.grad is not None
    torch.testing.assert_close(b(z1, z2, labels=Y1), first)  # same init, same first draw
    # The pure function with the module's gate and the same draw gives the same value.
    partner = draw_partner_labels(Y1, "arbitrary", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        a(z1, z2, labels=Y1, partner_labels=partner),
        F.simlap(z1, z2, labels=Y1, gate=a.gate, partner_labels=partner),
    )


def test_module_state_dict_restores_gate_and_partner_stream():
    z1 = randn(N, D, seed=1, dtype=torch.float32)
    z2 = randn(N, D, seed=2, dtype=torch.float32)
    loss = contrastkit.create_loss("simlap", num_classes=4, gate_dim=8, gate_hidden=16)
    loss(z1, z2, labels=Y1)
    clone = contrastkit.create_loss("simlap", **{**loss.get_config(), "dim": None, "seed": 5})
    clone.seed = loss.seed
    clone.load_state_dict(loss.state_dict())  # builds the lazy gate, copies the counter
    assert int(clone.draws) == 1
    torch.testing.assert_close(clone(z1, z2, labels=Y1), loss(z1, z2, labels=Y1))
    rebuilt = contrastkit.create_loss("simlap", **loss.get_config())
    assert rebuilt.get_config() == loss.get_config()


def test_module_learnable_scale_reproduces_fastssl_setting():
    loss = SimLAP(num_classes=4, dim=D, gate_dim=8, gate_hidden=16, variant="gate_squared",
                  learnable=True, temperature=0.1)  # fmt: skip
    z1 = randn(N, D, seed=1, dtype=torch.float32)
    z2 = randn(N, D, seed=2, dtype=torch.float32)
    loss(z1, z2, labels=Y1).backward()
    assert loss.logit_scale.log_scale.grad is not None
    torch.testing.assert_close(loss.logit_scale(), torch.tensor(10.0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("temperature", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("variant", ["gated_cosine", "gate_squared"])
def test_low_precision_is_finite_and_close_to_float64(dtype, temperature, variant):
    low = [randn(N, D, seed=k).to(dtype).requires_grad_(True) for k in (1, 2)]
    g = gates(dtype=dtype)
    kw = dict(labels=Y1, partner_labels=Y2, temperature=temperature, variant=variant)
    out = F.simlap(*low, gate=g, reduction="none", **kw)
    out.sum().backward()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert all(torch.isfinite(x.grad).all() for x in low)
    exact = F.simlap(*[x.detach().double() for x in low], gate=g.double(), reduction="none", **kw)
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5 / temperature)


def test_reductions_are_mean_sum_none_of_the_same_values():
    z1, z2, g = randn(N, D, seed=1), randn(N, D, seed=2), gates()
    kw = dict(labels=Y1, gate=g, partner_labels=Y2)
    per = F.simlap(z1, z2, reduction="none", **kw)
    assert per.shape == (N,)
    torch.testing.assert_close(F.simlap(z1, z2, **kw), per.mean())
    torch.testing.assert_close(F.simlap(z1, z2, reduction="sum", **kw), per.sum())


# ----------------------------------------------------------------- errors


def test_anchor_whose_partner_class_is_absent_raises_the_core_error():
    z1, z2 = randn(N, D, seed=1), randn(N, D, seed=2)
    partner = Y2.clone()
    partner[2] = 9  # class 9 has no sample in the batch
    with pytest.raises(ValueError, match=r"`labels` leave anchors \[2\] with no positive"):
        F.simlap(z1, z2, labels=Y1, gate=gates(), partner_labels=partner)
    with pytest.raises(ValueError, match="no positive.*mode='arbitrary'"):
        F.simlap(z1, z2, labels=Y1, gate=gates(), mode="distinct", num_classes=50,
                 generator=torch.Generator().manual_seed(0))  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(gate=torch.ones(N, D + 1)), ValueError, r"`gate` has shape \(8, 6\)"),
        (dict(gate=torch.full((N, D), 1.5)), ValueError, r"`gate` has values in \[1.5, 1.5\]"),
        (dict(gate="open"), TypeError, "`gate` is a str"),
        (dict(variant="squared"), ValueError, "`variant` is 'squared'; it must be one of"),
        (dict(mode="random"), ValueError, "`mode` is 'random'"),
        (dict(labels=Y1.float()), TypeError, "`labels` has dtype torch.float32"),
        (dict(partner_labels=Y2[:4]), ValueError, r"`partner_labels` has shape \(4,\)"),
        (dict(temperature=0.0), ValueError, "`temperature` is 0.0"),
    ],
)
def test_bad_inputs_are_rejected_with_the_rule(kwargs, error, match):
    args = {**dict(labels=Y1, gate=gates(), partner_labels=Y2), **kwargs}
    with pytest.raises(error, match=match):
        F.simlap(randn(N, D, seed=1), randn(N, D, seed=2), **args)


def test_module_rejects_labels_outside_the_embedding_and_three_views():
    loss = SimLAP(num_classes=3, dim=D, gate_dim=8, gate_hidden=16)
    z = randn(N, D, seed=1, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"`labels` has classes in \[0, 3\].*num_classes="):
        loss(z, z, labels=Y1)
    with pytest.raises(ValueError, match="`views` holds 3 views"):
        F.simlap(z, z, z, labels=Y1, gate=gates(dtype=torch.float32), partner_labels=Y2)
    with pytest.raises(ValueError, match="`num_classes` is 0"):
        SimLAP(num_classes=0)


# ----------------------------------------------------------------- results script


def test_results_script_smoke(tmp_path):
    text = run_seed_script("simlap", tmp_path)
    assert "<!-- seed:simlap -->" in text and "### simlap:" in text
    assert "| simlap" in text and "| supcon" in text and text.count("±") >= 4


def test_anchor_without_negatives_contributes_zero_with_finite_gradient():
    # Two classes, partner = the other class: classes {y1, y2} cover the batch, so the
    # anchor has no negative; its own_positive terms are log(e^l / e^l) = 0.
    z1 = randn(4, 3, seed=1).requires_grad_(True)
    y1, y2 = torch.tensor([0, 0, 1, 1]), torch.tensor([1, 0, 0, 1])
    per = F.simlap(
        z1, randn(4, 3, seed=2), labels=y1, gate=torch.full((4, 3), 0.5, dtype=torch.float64),
        partner_labels=y2, reduction="none",
    )  # fmt: skip
    per.sum().backward()
    assert per[0] == 0 and per[2] == 0 and per[1] > 0
    assert torch.isfinite(z1.grad).all() and (z1.grad[0] == 0).all()


def test_own_positive_weighting_equals_uniform_with_one_positive_per_anchor():
    a, c = randn(N, D, seed=1), randn(N + 3, D, seed=2)
    positive = torch.zeros(N, N + 3, dtype=torch.bool)
    positive[torch.arange(N), torch.arange(N)] = True
    kw = dict(positive_mask=positive, temperature=0.2, reduction="none")
    torch.testing.assert_close(
        F.masked_info_nce(a, c, negative_weighting="own_positive", **kw),
        F.masked_info_nce(a, c, **kw),
        rtol=1e-12,
        atol=1e-12,
    )
