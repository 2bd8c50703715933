"""Core-tuning (Zhang et al., NeurIPS 2021): hard-pair mining against loops (paper and
official-code selection), focal SupCon against a loop (float64 value and gradient),
mixup, soft-label ids past 18 classes, the module, bad inputs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from contrastkit.methods.core_tuning import (
    CoreTuning,
    core_tuning_loss,
    core_tuning_pairs,
    focal_sup_con,
    mine_hard_pairs,
    mix_pairs,
    soft_label_ids,
)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def cosine(a, b):
    return float((a @ b) / (a.norm() * b.norm()))


# ------------------------------------------------------------------ mining


def ref_mine_paper(h, labels):
    hp, hn = [], []
    for i in range(len(h)):
        pos = [j for j in range(len(h)) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(len(h)) if labels[j] != labels[i]]
        hp.append(min(pos, key=lambda j: (cosine(h[i], h[j]), j)) if pos else i)
        hn.append(max(neg, key=lambda j: (cosine(h[i], h[j]), -j)) if neg else i)
    return hp, hn


def ref_mine_official(h, labels):
    """The code's selection written as a loop: masked entries are 0, first extreme wins,
    a hard-positive index of 0 becomes the anchor."""
    hp, hn = [], []
    n = len(h)
    for i in range(n):
        pos_row = [
            cosine(h[i], h[j]) if (j != i and labels[j] == labels[i]) else 0.0 for j in range(n)
        ]
        neg_row = [cosine(h[i], h[j]) if labels[j] != labels[i] else 0.0 for j in range(n)]
        p = min(range(n), key=lambda j: (pos_row[j], j))
        hp.append(i if p == 0 else p)
        hn.append(max(range(n), key=lambda j: (neg_row[j], -j)))
    return hp, hn


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mining_matches_loop_reference(seed):
    h = randn(12, 5, seed=seed)
    labels = torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(seed))
    hp, hn = mine_hard_pairs(h, labels)
    exp_hp, exp_hn = ref_mine_paper(h, labels.tolist())
    assert hp.tolist() == exp_hp and hn.tolist() == exp_hn
    h = h.relu() + 0.01  # non-negative like post-ReLU features, no all-zero row
    hp, hn = mine_hard_pairs(h, labels, variant="official_code")
    exp_hp, exp_hn = ref_mine_official(h, labels.tolist())
    assert hp.tolist() == exp_hp and hn.tolist() == exp_hn


def test_paper_mining_picks_same_class_positive_and_other_class_negative():
    h = randn(16, 4, seed=5).relu() + 0.01
    labels = torch.arange(16) % 4
    hp, hn = mine_hard_pairs(h, labels)
    assert bool((labels[hp] == labels).all()) and bool((hp != torch.arange(16)).all())
    assert bool((labels[hn] != labels).all())


def test_official_selection_picks_a_non_positive_on_a_constructed_case():
    # Non-negative (post-ReLU) features: masked entries (0) undercut every true positive.
    h = torch.tensor([[1.0, 0.2], [0.1, 1.0], [0.9, 0.3], [0.2, 0.8]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1])
    hp_code, _ = mine_hard_pairs(h, labels, variant="official_code")
    hp_paper, _ = mine_hard_pairs(h, labels)
    # Anchor 2 (class 0): the code's argmin lands on index 1, a class-1 sample.
    assert int(hp_code[2]) == 1 and int(labels[hp_code[2]]) != int(labels[2])
    # Anchor 0: argmin lands on index 0 (itself, masked), which the code maps to itself.
    assert int(hp_code[0]) == 0
    # The paper's selection: the only other class-0 sample.
    assert hp_paper.tolist() == [2, 3, 0, 1]


def test_mining_without_positive_or_negative_falls_back_to_the_anchor():
    h = randn(3, 2, seed=6)
    hp, hn = mine_hard_pairs(h, torch.tensor([0, 1, 2]))
    assert hp.tolist() == [0, 1, 2]
    hp, hn = mine_hard_pairs(h, torch.tensor([4, 4, 4]))
    assert hn.tolist() == [0, 1, 2]


# ------------------------------------------------------------------ focal SupCon


def ref_focal(z, ids, tau, normaliser):
    n = len(z)
    z = z / z.norm(dim=1, keepdim=True)
    per, counted = [], 0
    for i in range(n):
        denom = sum(torch.exp(z[i] @ z[a] / tau) for a in range(n) if a != i)
        pos = [p for p in range(n) if p != i and ids[p] == ids[i]]
        if not pos:
            per.append(torch.zeros((), dtype=z.dtype))
            continue
        counted += 1
        total = 0.0
        for p in pos:
            prob = torch.exp(z[i] @ z[p] / tau) / denom
            total = total + (1 - prob) * torch.log(prob)
        per.append(-total / (len(pos) if normaliser == "positives" else n))
    return torch.stack(per), counted


@pytest.mark.parametrize(
    ("variant", "normaliser"), [("paper", "positives"), ("official_code", "row")]
)
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_focal_sup_con_matches_loop(variant, normaliser, tau):
    ids = torch.tensor([0, 1, 0, 2, 1, 0, 3])  # anchor 6 (id 3) and 3 (id 2) have no positive
    z = randn(7, 4, seed=7).requires_grad_(True)
    fast = focal_sup_con(z, ids, temperature=tau, variant=variant)
    (g_fast,) = torch.autograd.grad(fast, z)
    z2 = z.detach().clone().requires_grad_(True)
    per, counted = ref_focal(z2, ids.tolist(), tau, normaliser)
    ref = per.sum() / counted
    (g_ref,) = torch.autograd.grad(ref, z2)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-11)
    none = focal_sup_con(z.detach(), ids, temperature=tau, variant=variant, reduction="none")
    torch.testing.assert_close(none, per.detach(), rtol=1e-10, atol=1e-12)
    assert none[3].item() == 0.0 and none[6].item() == 0.0


def test_focal_sup_con_is_finite_at_low_temperature_in_float32():
    z = randn(32, 8, seed=8).float()
    ids = torch.arange(32) % 4
    z.requires_grad_(True)
    loss = focal_sup_con(z, ids, temperature=0.01)
    loss.backward()
    assert torch.isfinite(loss) and bool(torch.isfinite(z.grad).all())


# ------------------------------------------------------------------ soft-label ids


def test_soft_label_ids_group_rounded_equal_rows():
    y = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.8, 0.0], [1.0, 0.0, 0.0], [0.2 + 1e-9, 0.8, 0.0]])
    ids = soft_label_ids(y)
    assert ids[0] == ids[2] and ids[1] == ids[3] and ids[0] != ids[1]


def test_soft_label_ids_beyond_18_classes_where_the_official_hash_collides():
    c = 30
    rows = []
    for a, b in itertools.combinations(range(c), 2):
        y = torch.zeros(c)
        y[a], y[b] = 0.75, 0.25
        rows.append(y)
    y = torch.cat([torch.eye(c), torch.stack(rows)])
    ids = soft_label_ids(y)
    assert len(set(ids.tolist())) == len(y)  # every distinct soft label is its own class
    # The code's hash (labels @ 10**arange(C) in float32; int64 wraps past 10**18).
    weights = torch.tensor(10 ** np.arange(c)).unsqueeze(1).float()
    official = (y @ weights).squeeze(1)
    assert len(set(official.tolist())) < len(y)
    assert int(10 ** np.arange(c)[19]) < 0  # the overflow itself


# ------------------------------------------------------------------ mixup and the step


def test_mix_pairs_closed_form():
    h, y = randn(4, 3, seed=9), torch.eye(4, dtype=torch.float64)
    lam = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    first, second = torch.tensor([1, 2, 3, 0]), torch.tensor([0, 0, 1, 2])
    f, s = mix_pairs(h, y, first, second, lam)
    for i in range(4):
        torch.testing.assert_close(f[i], lam[i] * h[first[i]] + (1 - lam[i]) * h[second[i]])
        torch.testing.assert_close(s[i], lam[i] * y[first[i]] + (1 - lam[i]) * y[second[i]])


def test_pairs_layout_soft_labels_and_negative_clamp():
    h = randn(10, 5, seed=10)
    labels = torch.arange(10) % 3
    rows, soft = core_tuning_pairs(h, labels, 3, generator=torch.Generator().manual_seed(0))
    assert rows.shape == (30, 5) and soft.shape == (30, 3)
    torch.testing.assert_close(rows[:10], h)
    torch.testing.assert_close(soft.sum(1), torch.ones(30, dtype=torch.float64))
    # Mixup negatives: the shuffled partner weighs >= 0.8, so its class holds >= 0.8.
    assert bool((soft[10:20].max(1).values >= 0.8 - 1e-12).all())
    # Each row is the documented mix of two batch rows, with its soft label mixed alike:
    # solve for lam from the soft labels of the hard-pair rows and check the features.
    hp, hn = mine_hard_pairs(h, labels)
    for i in range(10):
        a, b = int(hp[i]), int(hn[i])
        lam = soft[20 + i, labels[a]].item()
        torch.testing.assert_close(rows[20 + i], lam * h[a] + (1 - lam) * h[b])
    again = core_tuning_pairs(h, labels, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again[0], rows)


def test_official_code_detaches_the_original_rows():
    h = randn(6, 4, seed=11).requires_grad_(True)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    for variant, expected in (("paper", 1.0), ("official_code", 0.0)):
        gen = torch.Generator().manual_seed(1)
        rows, _ = core_tuning_pairs(h, labels, 2, variant=variant, generator=gen)
        (grad,) = torch.autograd.grad(rows[:6].sum(), h)
        torch.testing.assert_close(grad, torch.full_like(h, expected))


def test_module_step_backward_and_eta_zero_is_soft_ce():
    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU())
    model = CoreTuning(encoder, 6, 3, contrast_dim=4)
    x = randn(12, 8, seed=12).float()
    labels = torch.arange(12) % 3
    terms = model.terms(x, labels, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms["loss"], terms["ce"] + 0.1 * terms["contrastive"])
    terms["loss"].backward()
    assert encoder[0].weight.grad is not None and model.contrast_head.input.weight.grad is not None
    assert model(x).shape == (12, 3)
    out = core_tuning_loss(
        encoder(x),
        labels,
        model.classifier,
        model.contrast_head,
        3,
        eta=0.0,
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(out["loss"], out["ce"])


# ------------------------------------------------------------------ bad inputs


def test_bad_inputs():
    h = randn(4, 3)
    with pytest.raises(ValueError, match=r"`variant` is 'code'.*'paper', 'official_code'"):
        mine_hard_pairs(h, torch.tensor([0, 1, 0, 1]), variant="code")
    with pytest.raises(TypeError, match=r"`labels` has dtype torch.float32.*integer"):
        mine_hard_pairs(h, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"`labels` contains \[5\].*\[0, num_classes\)"):
        core_tuning_pairs(h, torch.tensor([0, 1, 5, 1]), 3)
    with pytest.raises(ValueError, match=r"`num_classes` is 1.*>= 2"):
        core_tuning_pairs(h, torch.tensor([0, 0, 0, 0]), 1)
    with pytest.raises(ValueError, match=r"`min_negative_lam` is 1.5.*\[0, 1\]"):
        core_tuning_pairs(h, torch.tensor([0, 1, 0, 1]), 2, min_negative_lam=1.5)
    with pytest.raises(ValueError, match=r"`alpha` is 0.*> 0"):
        core_tuning_pairs(h, torch.tensor([0, 1, 0, 1]), 2, alpha=0)
    with pytest.raises(ValueError, match=r"`class_ids` give no anchor a positive"):
        focal_sup_con(h, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"`temperature` is -0.1.*> 0"):
        focal_sup_con(h, torch.tensor([0, 0, 1, 1]), temperature=-0.1)
    with pytest.raises(ValueError, match=r"`embeddings` has a batch of 1"):
        focal_sup_con(h[:1], torch.tensor([0]))
    with pytest.raises(ValueError, match=r"`lam` .*in \[0, 1\]"):
        mix_pairs(
            h, torch.eye(4, dtype=h.dtype), torch.arange(4), torch.arange(4), torch.full((4,), 2.0)
        )
    with pytest.raises(ValueError, match=r"`eta` is -1.0.*>= 0"):
        core_tuning_loss(
            h, torch.tensor([0, 1, 0, 1]), torch.nn.Linear(3, 2), torch.nn.Identity(), 2, eta=-1.0
        )
    with pytest.raises(TypeError, match=r"`encoder` is a str"):
        CoreTuning("resnet", 4, 2)
    bad = h.clone()
    bad[1, 1] = math.inf
    with pytest.raises(ValueError, match=r"`features` contains NaN or inf in rows \[1\]"):
        mine_hard_pairs(bad, torch.tensor([0, 1, 0, 1]))


# ------------------------------------------------------------------ results script


def test_smoke_results_section(tmp_path):
    from conftest import run_seed_script

    text = run_seed_script("core_tuning", tmp_path)
    assert "<!-- seed:core_tuning -->" in text and "### core_tuning:" in text
    assert "| fine-tuning |" in text and "Smoke run" in text
