"""contrastkit.diagnostics against slow loop references and closed-form cases (float64)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from contrastkit import diagnostics as D

TOL = 1e-10


def _unit(x: torch.Tensor) -> np.ndarray:
    a = x.double().numpy()
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _randn(*shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


# ----------------------------------------------------------------------------- references


def ref_alignment(z1, z2, alpha):
    a, b = _unit(z1), _unit(z2)
    return sum(math.sqrt(sum((a[i] - b[i]) ** 2)) ** alpha for i in range(len(a))) / len(a)


def ref_uniformity(z, t):
    u = _unit(z)
    terms = [
        -t * float(((u[i] - u[j]) ** 2).sum()) for i, j in itertools.combinations(range(len(u)), 2)
    ]
    m = max(terms)  # log-mean-exp with the maximum taken out, exact for any t
    return m + math.log(sum(math.exp(x - m) for x in terms) / len(terms))


def ref_effective_rank(z, center=False):
    a = z.double().numpy()
    if center:
        a = a - a.mean(axis=0, keepdims=True)
    s = np.linalg.svd(a, compute_uv=False)
    p = s / s.sum()
    return math.exp(-sum(x * math.log(x) for x in p if x > 0))


def ref_mean_cosine(z):
    u = _unit(z)
    n = len(u)
    return sum(float(u[i] @ u[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))


def ref_isotropy(z, normalize=False):
    w = _unit(z) if normalize else z.double().numpy()
    _, vecs = np.linalg.eigh(w.T @ w)
    zs = []
    for k in range(vecs.shape[1]):
        for sign in (1.0, -1.0):
            c = sign * vecs[:, k]
            zs.append(sum(math.exp(float(c @ w_i)) for w_i in w))
    return min(zs) / max(zs)


def ref_gap(z1, z2):
    a, b = _unit(z1), _unit(z2)
    n = len(a)
    pos = sum(float(a[i] @ b[i]) for i in range(n)) / n
    neg = sum(float(a[i] @ b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return pos, neg


def ref_tolerance(z, labels):
    u = _unit(z)
    y = labels.tolist()
    sims = [
        float(u[i] @ u[j]) for i in range(len(u)) for j in range(len(u)) if i != j and y[i] == y[j]
    ]
    return sum(sims) / len(sims)


# ----------------------------------------------------------------------------- alignment


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.5])
def test_alignment_matches_loop(alpha):
    z1, z2 = _randn(17, 5, seed=1), _randn(17, 5, seed=2)
    assert D.alignment(z1, z2, alpha=alpha) == pytest.approx(ref_alignment(z1, z2, alpha), abs=TOL)


def test_alignment_closed_forms():
    z = _randn(9, 4)
    assert D.alignment(z, z) == 0.0
    assert D.alignment(z, 3.0 * z) == pytest.approx(0.0, abs=TOL)  # on the sphere
    assert D.alignment(z, -z) == pytest.approx(4.0, abs=TOL)  # ||u - (-u)||^2 = 4
    assert D.alignment(z, -z, alpha=1.0) == pytest.approx(2.0, abs=TOL)


# ----------------------------------------------------------------------------- uniformity


@pytest.mark.parametrize("t", [0.5, 2.0, 7.0])
def test_uniformity_matches_loop(t):
    z = _randn(23, 6, seed=3)
    assert D.uniformity(z, t=t) == pytest.approx(ref_uniformity(z, t), abs=TOL)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 22, 23, 100])
def test_uniformity_chunking_does_not_change_the_value(chunk_size):
    z = _randn(23, 6, seed=4)
    assert D.uniformity(z, chunk_size=chunk_size) == pytest.approx(D.uniformity(z), abs=TOL)


def test_uniformity_default_blocks_on_a_larger_set():
    # N = 3000: the default block is 1398 rows, so the upper triangle spans three blocks.
    z = _randn(3000, 16, seed=40)
    got = D.uniformity(z)
    assert got == pytest.approx(D.uniformity(z, chunk_size=3000), abs=TOL)
    u = torch.nn.functional.normalize(z, dim=1)
    expected = torch.pdist(u).pow(2).mul(-2.0).exp().mean().log()  # Wang & Isola's code
    assert got == pytest.approx(float(expected), abs=TOL)


def test_uniformity_two_antipodal_points():
    z = torch.tensor([[1.0, 0.0, 0.0], [-2.0, 0.0, 0.0]], dtype=torch.float64)
    assert D.uniformity(z, t=2.0) == pytest.approx(-8.0, abs=TOL)  # log exp(-2 * 4)
    assert D.uniformity(z, t=0.5) == pytest.approx(-2.0, abs=TOL)


def test_uniformity_collapsed_is_zero_and_large_t_is_stable():
    z = torch.ones(6, 3, dtype=torch.float64)
    assert D.uniformity(z) == pytest.approx(0.0, abs=TOL)  # every distance is 0
    zr = _randn(12, 4, seed=5)
    # exp(-t d^2) underflows in float64 at t=1000; the log-sum-exp does not.
    assert D.uniformity(zr, t=1000.0) == pytest.approx(ref_uniformity(zr, 1000.0), abs=1e-8)


def test_uniformity_float32_close_to_float64():
    z = _randn(40, 8, seed=6)
    assert D.uniformity(z.float()) == pytest.approx(D.uniformity(z), abs=1e-5)


# ----------------------------------------------------------------------------- effective rank


def test_effective_rank_identity_and_rank_one():
    for d in (1, 3, 8):
        assert D.effective_rank(torch.eye(d, dtype=torch.float64)) == pytest.approx(d, abs=TOL)
    rank_one = torch.outer(_randn(10, seed=7), _randn(6, seed=8))
    assert D.effective_rank(rank_one) == pytest.approx(1.0, abs=TOL)


def test_effective_rank_hand_computed():
    z = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))  # p = (3/4, 1/4)
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert D.effective_rank(z) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("center", [False, True])
def test_effective_rank_matches_numpy(center):
    z = _randn(30, 7, seed=9) + 2.0
    got = D.effective_rank(z, center=center)
    assert got == pytest.approx(ref_effective_rank(z, center), abs=TOL)


def test_effective_rank_centering_and_collapse():
    z = torch.ones(5, 4, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert D.effective_rank(z) == pytest.approx(1.0, abs=TOL)  # one shared direction
    assert D.effective_rank(z, center=True) == 0.0  # nothing left around the mean
    assert D.effective_rank(torch.zeros(3, 2, dtype=torch.float64)) == 0.0


# ----------------------------------------------------------------------------- mean cosine


def test_mean_pairwise_cosine_matches_loop():
    z = _randn(19, 5, seed=10)
    assert D.mean_pairwise_cosine(z) == pytest.approx(ref_mean_cosine(z), abs=TOL)


def test_mean_pairwise_cosine_closed_forms():
    same = torch.tensor([[1.0, 2.0]] * 4, dtype=torch.float64)
    assert D.mean_pairwise_cosine(same) == pytest.approx(1.0, abs=TOL)
    anti = torch.tensor([[1.0, 0.0], [-3.0, 0.0]], dtype=torch.float64)
    assert D.mean_pairwise_cosine(anti) == pytest.approx(-1.0, abs=TOL)
    assert D.mean_pairwise_cosine(torch.eye(5, dtype=torch.float64)) == pytest.approx(0.0, abs=TOL)


# ----------------------------------------------------------------------------- isotropy


@pytest.mark.parametrize("normalize", [False, True])
def test_isotropy_matches_eigenvector_loop(normalize):
    z = _randn(25, 4, seed=11) * 0.7 + 0.3
    got = D.isotropy(z, normalize=normalize)
    assert got == pytest.approx(ref_isotropy(z, normalize), abs=TOL)
    assert 0.0 < got <= 1.0


def test_isotropy_closed_form_on_a_scaled_cross():
    # Rows +-a_k e_k: W^T W = diag(2 a_k^2) has eigenvectors +-e_k, and
    # Z(+-e_k) = 2 cosh(a_k) + 2 (d - 1) (the other 2(d-1) rows are orthogonal to e_k).
    a = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    d = len(a)
    w = torch.cat([torch.diag(a), -torch.diag(a)])
    zs = [2 * math.cosh(x) + 2 * (d - 1) for x in a.tolist()]
    assert D.isotropy(w) == pytest.approx(min(zs) / max(zs), abs=TOL)


def test_isotropy_symmetric_set_is_one_and_normalize_is_scale_free():
    w = torch.cat([torch.eye(3), -torch.eye(3)]).double()
    assert D.isotropy(w) == pytest.approx(1.0, abs=TOL)
    z = _randn(20, 3, seed=12)
    assert D.isotropy(50.0 * z, normalize=True) == pytest.approx(
        D.isotropy(z, normalize=True), abs=TOL
    )
    assert math.isfinite(D.isotropy(1e4 * z))  # log-space: no overflow at large norms


# ----------------------------------------------------------------------------- similarity gap


def test_similarity_gap_matches_loop():
    z1, z2 = _randn(13, 6, seed=13), _randn(13, 6, seed=14)
    got = D.similarity_gap(z1, z1 + 0.5 * z2)
    pos, neg = ref_gap(z1, z1 + 0.5 * z2)
    assert got["pos_sim"] == pytest.approx(pos, abs=TOL)
    assert got["neg_sim"] == pytest.approx(neg, abs=TOL)
    assert got["gap"] == pytest.approx(pos - neg, abs=TOL)


def test_similarity_gap_orthonormal_views():
    e = torch.eye(4, dtype=torch.float64)
    got = D.similarity_gap(e, 2 * e)
    assert got == pytest.approx({"pos_sim": 1.0, "neg_sim": 0.0, "gap": 1.0}, abs=TOL)


# ----------------------------------------------------------------------------- tolerance


def test_tolerance_matches_loop():
    z = _randn(21, 5, seed=15)
    y = torch.tensor([0, 1, 2] * 7)
    assert D.tolerance(z, y) == pytest.approx(ref_tolerance(z, y), abs=TOL)


def test_tolerance_closed_form_and_singletons_ignored():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    # Class 0 = rows 0, 1 (cosine 1); class 5 = row 2 only; class 7 = row 3 only.
    assert D.tolerance(z, torch.tensor([0, 0, 5, 7])) == pytest.approx(1.0, abs=TOL)
    # Class 3 = rows 2, 3: cosine 1/sqrt(2); mean over the four ordered pairs.
    got = D.tolerance(z, torch.tensor([0, 0, 3, 3]))
    assert got == pytest.approx((1.0 + 1 / math.sqrt(2)) / 2, abs=TOL)


# ----------------------------------------------------------------------------- summarize / io


def test_summarize_equals_the_individual_functions():
    z1, z2 = _randn(15, 4, seed=16), _randn(15, 4, seed=17)
    y = torch.arange(15) % 3
    out = D.summarize(z1, z2, y)
    gap = D.similarity_gap(z1, z2)
    expected = {
        "alignment": D.alignment(z1, z2),
        "uniformity": D.uniformity(z1),
        "effective_rank": D.effective_rank(z1),
        "mean_cosine": D.mean_pairwise_cosine(z1),
        "isotropy": D.isotropy(z1),
        "pos_sim": gap["pos_sim"],
        "neg_sim": gap["neg_sim"],
        "gap": gap["gap"],
        "tolerance": D.tolerance(z1, y),
    }
    assert out == expected
    assert all(type(v) is float for v in out.values())
    assert set(D.summarize(z1, z2)) == set(expected) - {"tolerance"}


def test_numpy_and_float32_inputs():
    z1, z2 = _randn(10, 3, seed=18), _randn(10, 3, seed=19)
    assert D.alignment(z1.numpy(), z2.numpy()) == D.alignment(z1, z2)
    assert D.tolerance(z1.numpy(), np.arange(10) % 2) == D.tolerance(z1, torch.arange(10) % 2)
    assert D.mean_pairwise_cosine(z1.float()) == pytest.approx(D.mean_pairwise_cosine(z1), abs=1e-6)
    assert D.effective_rank(z1.half()) == pytest.approx(D.effective_rank(z1), abs=1e-2)


def test_inputs_are_not_modified():
    z1, z2 = _randn(8, 3, seed=20), _randn(8, 3, seed=21)
    c1, c2 = z1.clone(), z2.clone()
    D.summarize(z1, z2, torch.arange(8) % 2)
    assert torch.equal(z1, c1) and torch.equal(z2, c2)


# ----------------------------------------------------------------------------- errors

_Z = torch.randn(4, 3)
_NAN = torch.tensor([[0.0, 1.0], [float("nan"), 1.0]])
_ZERO_ROW = torch.tensor([[0.0, 0.0], [1.0, 1.0]])

ERRORS = [
    (lambda: D.alignment(_Z, torch.randn(5, 3)), ValueError, r"`z2` has shape \(5, 3\)"),
    (lambda: D.alignment(_Z, _Z, alpha=0), ValueError, r"`alpha` is 0"),
    (lambda: D.alignment(_Z, _Z, alpha="2"), TypeError, r"`alpha` is a str"),
    (lambda: D.alignment(_NAN, _NAN), ValueError, r"`z1` contains NaN or inf in rows \[1\]"),
    (lambda: D.alignment(_ZERO_ROW, _Z[:2, :2]), ValueError, r"`z1` has all-zero rows \[0\]"),
    (lambda: D.alignment([[1.0]], _Z), TypeError, r"`z1` is a list.*torch.Tensor or a numpy"),
    (lambda: D.alignment(_Z.long(), _Z.long()), TypeError, r"`z1` has dtype torch.int64"),
    (lambda: D.uniformity(_Z[:1]), ValueError, r"`z` has 1 row\(s\).*at least 2"),
    (lambda: D.uniformity(_Z, t=-1.0), ValueError, r"`t` is -1.0.*> 0"),
    (lambda: D.uniformity(_Z, chunk_size=0), ValueError, r"`chunk_size` is 0"),
    (lambda: D.uniformity(_Z, chunk_size=2.5), TypeError, r"`chunk_size` is 2.5"),
    (lambda: D.uniformity(torch.randn(2, 3, 4)), ValueError, r"`z` has shape \(2, 3, 4\)"),
    (lambda: D.effective_rank(_Z, center=1), TypeError, r"`center` is 1.*bool"),
    (lambda: D.effective_rank(_NAN), ValueError, r"`z` contains NaN"),
    (lambda: D.mean_pairwise_cosine(_Z[:1]), ValueError, r"`z` has 1 row"),
    (lambda: D.mean_pairwise_cosine(_ZERO_ROW), ValueError, r"`z` has all-zero rows"),
    (lambda: D.isotropy(_Z, normalize="yes"), TypeError, r"`normalize` is 'yes'"),
    (lambda: D.isotropy(np.array([["a"]])), TypeError, r"`z` is a numpy array of dtype <U1"),
    (lambda: D.similarity_gap(_Z[:1], _Z[:1]), ValueError, r"`z1` has 1 row"),
    (lambda: D.similarity_gap(_Z, _Z[:, :2]), ValueError, r"`z2` has shape \(4, 2\)"),
    (lambda: D.tolerance(_Z, torch.arange(4)), ValueError, r"`labels` has 4 samples in 4"),
    (lambda: D.tolerance(_Z, torch.zeros(3).long()), ValueError, r"`labels` has shape \(3,\)"),
    (lambda: D.tolerance(_Z, torch.zeros(4)), TypeError, r"`labels` has dtype torch.float32"),
    (lambda: D.summarize(_Z, _Z[:3]), ValueError, r"summarize: `z2` has shape \(3, 3\)"),
    (lambda: D.summarize(_Z, _Z, torch.arange(3)), ValueError, r"`labels` has shape \(3,\)"),
]


@pytest.mark.parametrize(("call", "kind", "match"), ERRORS)
def test_bad_input_messages_name_the_argument(call, kind, match):
    with pytest.raises(kind, match=match) as info:
        call()
    message = str(info.value)
    assert "Fix:" in message  # the rule and the fix come with every message


def test_diagnostics_import_no_upper_layer():
    import ast
    import pathlib

    root = pathlib.Path(D.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith(("contrastkit.train", "contrastkit.cli")), path
                assert name.split(".")[0] != "sklearn", path  # sklearn only lazily
