"""contrastkit.evaluation against brute-force references, scikit-learn and hand-computed cases."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from contrastkit import evaluation as E

TOL = 1e-10


def _randn(*shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _blobs(n_per_class, n_classes, dim, spread, seed):
    """Well-separated clusters around orthogonal directions (class c near e_c)."""
    g = torch.Generator().manual_seed(seed)
    centers = 10.0 * torch.eye(n_classes, dim, dtype=torch.float64)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    z = centers[y] + spread * torch.randn(len(y), dim, generator=g, dtype=torch.float64)
    return z, y


# ----------------------------------------------------------------------------- kNN


def ref_knn(train_z, train_y, test_z, test_y, k, temperature):
    """One test row at a time: sort all training rows, vote with exp(s / T)."""
    tr = train_z.numpy() / np.linalg.norm(train_z.numpy(), axis=1, keepdims=True)
    te = test_z.numpy() / np.linalg.norm(test_z.numpy(), axis=1, keepdims=True)
    k = min(k, len(tr))
    correct = 0
    for x, label in zip(te, test_y.tolist(), strict=True):
        sims = [(float(x @ t), j) for j, t in enumerate(tr)]
        sims.sort(key=lambda p: -p[0])
        votes = {}
        for s, j in sims[:k]:
            c = int(train_y[j])
            votes[c] = votes.get(c, 0.0) + math.exp(s / temperature)
        best = max(votes.values())
        predicted = min(c for c, v in votes.items() if v == best)
        correct += predicted == label
    return correct / len(te)


def test_knn_separated_clusters_is_perfect():
    train_z, train_y = _blobs(30, 4, 8, 0.5, seed=1)
    test_z, test_y = _blobs(10, 4, 8, 0.5, seed=2)
    assert E.knn_accuracy(train_z, train_y, test_z, test_y, k=20) == 1.0


@pytest.mark.parametrize(
    ("k", "temperature", "batch_size"),
    [(1, 0.1, None), (5, 0.07, 3), (20, 0.5, 1), (200, 0.1, None), (7, 1.0, 1000)],
)
def test_knn_matches_brute_force_loop(k, temperature, batch_size):
    train_z, test_z = _randn(60, 6, seed=3), _randn(25, 6, seed=4)
    g = torch.Generator().manual_seed(5)
    train_y = torch.randint(0, 4, (60,), generator=g)
    test_y = torch.randint(0, 4, (25,), generator=g)
    got = E.knn_accuracy(
        train_z, train_y, test_z, test_y, k=k, temperature=temperature, batch_size=batch_size
    )
    assert got == ref_knn(train_z, train_y, test_z, test_y, k, temperature)


def test_knn_small_temperature_does_not_overflow():
    train_z, train_y = _blobs(20, 3, 5, 2.0, seed=6)
    test_z, test_y = _blobs(10, 3, 5, 2.0, seed=7)
    got = E.knn_accuracy(train_z.float(), train_y, test_z.float(), test_y, k=30, temperature=0.01)
    # exp(s / 0.01) would overflow float32; the shifted weights give the same votes.
    assert got == ref_knn(train_z, train_y, test_z, test_y, 30, 0.01)


def test_knn_hand_computed_vote_and_numpy_inputs():
    # Test point at angle 0. Train: one class-1 point at angle 0 (s=1), two class-0 points at
    # +-60 degrees (s=0.5 each). With T=1: class 1 gets e^1 = 2.72 < class 0 gets 2 e^0.5 = 3.30.
    c, s = 0.5, math.sqrt(3) / 2
    train_z = np.array([[1.0, 0.0], [c, s], [c, -s]])
    train_y = np.array([1, 0, 0])
    test_z, test_y = np.array([[2.0, 0.0]]), np.array([0])
    assert E.knn_accuracy(train_z, train_y, test_z, test_y, k=3, temperature=1.0) == 1.0
    # With T=0.1 the nearest point dominates: e^10 > 2 e^5.
    assert E.knn_accuracy(train_z, train_y, test_z, test_y, k=3, temperature=0.1) == 0.0
    # k=1 uses only the nearest (class 1); k above the train size is clipped to 3.
    assert E.knn_accuracy(train_z, train_y, test_z, test_y, k=1) == 0.0
    assert E.knn_accuracy(train_z, train_y, test_z, test_y, k=10**6, temperature=1.0) == 1.0


def test_knn_label_missing_from_train_counts_as_error():
    train_z, train_y = _blobs(10, 2, 4, 0.1, seed=8)
    test_z, _ = _blobs(5, 2, 4, 0.1, seed=9)
    test_y = torch.tensor([0] * 5 + [7] * 5)  # class 1 relabelled 7: never predicted
    assert E.knn_accuracy(train_z, train_y, test_z, test_y, k=5) == 0.5


# ----------------------------------------------------------------------------- linear probes


def test_linear_probe_separable_is_perfect_and_deterministic():
    train_z, train_y = _blobs(30, 3, 6, 0.5, seed=10)
    test_z, test_y = _blobs(10, 3, 6, 0.5, seed=11)
    assert E.linear_probe(train_z, train_y, test_z, test_y) == 1.0
    a = E.linear_probe(_randn(60, 5, seed=12), train_y[:60], _randn(30, 5, seed=13), test_y)
    b = E.linear_probe(_randn(60, 5, seed=12), train_y[:60], _randn(30, 5, seed=13), test_y)
    assert a == b


@pytest.mark.parametrize("standardize", [True, False])
def test_linear_probe_matches_sklearn(standardize):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train_z, test_z = 3.0 * _randn(80, 5, seed=14) + 1.0, 3.0 * _randn(40, 5, seed=15) + 1.0
    train_y = (train_z[:, 0] + 0.5 * _randn(80, seed=16) > 1.0).long() + (train_z[:, 1] > 2).long()
    test_y = (test_z[:, 0] > 1.0).long() + (test_z[:, 1] > 2).long()
    x_tr, x_te = train_z.numpy(), test_z.numpy()
    if standardize:
        sc = StandardScaler().fit(x_tr)
        x_tr, x_te = sc.transform(x_tr), sc.transform(x_te)
    clf = LogisticRegression(C=0.3, max_iter=500, random_state=3).fit(x_tr, train_y.numpy())
    expected = float((clf.predict(x_te) == test_y.numpy()).mean())
    got = E.linear_probe(
        train_z, train_y, test_z, test_y, seed=3, max_iter=500, C=0.3, standardize=standardize
    )
    assert got == expected


def test_linear_probe_regression_exact_linear_target():
    train_z, test_z = _randn(50, 4, seed=17), _randn(20, 4, seed=18)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    out = E.linear_probe_regression(train_z, train_z @ w + 1, test_z, test_z @ w + 1, alpha=1e-12)
    assert out["r2"] == pytest.approx(1.0, abs=TOL)
    assert out["mae"] == pytest.approx(0.0, abs=TOL)


@pytest.mark.parametrize("targets", [1, 3])
def test_linear_probe_regression_matches_sklearn(targets):
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_absolute_error, r2_score
    from sklearn.preprocessing import StandardScaler

    train_z, test_z = _randn(40, 6, seed=19) * 4, _randn(15, 6, seed=20) * 4
    shape = (40,) if targets == 1 else (40, targets)
    train_t = (train_z[:, :1] * 2).squeeze(1) if targets == 1 else train_z[:, :targets]
    train_t = train_t + _randn(*shape, seed=21)
    test_t = (test_z[:, :1] * 2).squeeze(1) if targets == 1 else test_z[:, :targets]
    sc = StandardScaler().fit(train_z.numpy())
    pred = (
        Ridge(alpha=2.0)
        .fit(sc.transform(train_z.numpy()), train_t.numpy())
        .predict(sc.transform(test_z.numpy()))
    )
    got = E.linear_probe_regression(train_z, train_t, test_z, test_t, alpha=2.0)
    assert got["mae"] == pytest.approx(mean_absolute_error(test_t.numpy(), pred), abs=TOL)
    assert got["r2"] == pytest.approx(r2_score(test_t.numpy(), pred), abs=TOL)


# ----------------------------------------------------------------------------- retrieval


def ref_retrieval(scores, relevance, ks):
    """Per query: rank by score (ties by column), then the textbook formulas."""
    out = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg", "hit")}
    out["mrr"] = 0.0
    used = 0
    for s, r in zip(scores.tolist(), relevance.tolist(), strict=True):
        n_rel = sum(1 for x in r if x > 0)
        if n_rel == 0:
            continue
        used += 1
        order = sorted(range(len(s)), key=lambda j: (-s[j], j))
        ranked = [r[j] for j in order]
        first = next(i for i, x in enumerate(ranked) if x > 0)
        out["mrr"] += 1.0 / (first + 1)
        ideal = sorted(r, reverse=True)
        for k in ks:
            top = ranked[:k]
            out[f"recall@{k}"] += sum(1 for x in top if x > 0) / n_rel
            out[f"hit@{k}"] += float(any(x > 0 for x in top))
            dcg = sum(x / math.log2(i + 2) for i, x in enumerate(top))
            idcg = sum(x / math.log2(i + 2) for i, x in enumerate(ideal[:k]))
            out[f"ndcg@{k}"] += dcg / idcg
    return {key: v / used for key, v in out.items()}


def test_retrieval_perfect_ranking_is_all_ones():
    scores = torch.eye(6, dtype=torch.float64)
    out = E.retrieval_metrics(scores, torch.eye(6), ks=(1, 5, 10))
    assert out == {
        "recall@1": 1.0,
        "ndcg@1": 1.0,
        "hit@1": 1.0,
        "recall@5": 1.0,
        "ndcg@5": 1.0,
        "hit@5": 1.0,
        "recall@10": 1.0,
        "ndcg@10": 1.0,
        "hit@10": 1.0,
        "mrr": 1.0,
    }


def test_retrieval_hand_computed_example():
    # Scores rank the candidates 0..4 in order; their grades in that order: 0, 2, 1, 0, 3.
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    relevance = torch.tensor([[0.0, 2.0, 1.0, 0.0, 3.0]])
    out = E.retrieval_metrics(scores, relevance, ks=(1, 2, 5))
    dcg5 = 2 / math.log2(3) + 1 / 2 + 3 / math.log2(6)
    idcg5 = 3 + 2 / math.log2(3) + 1 / 2
    assert out["mrr"] == pytest.approx(0.5, abs=TOL)
    assert out["recall@1"] == 0.0 and out["hit@1"] == 0.0 and out["ndcg@1"] == 0.0
    assert out["recall@2"] == pytest.approx(1 / 3, abs=TOL)
    assert out["hit@2"] == 1.0
    assert out["ndcg@2"] == pytest.approx((2 / math.log2(3)) / (3 + 2 / math.log2(3)), abs=TOL)
    assert out["recall@5"] == pytest.approx(1.0, abs=TOL)
    assert out["ndcg@5"] == pytest.approx(dcg5 / idcg5, abs=TOL)


def test_retrieval_matches_loop_on_random_graded_relevance():
    g = torch.Generator().manual_seed(22)
    scores = torch.randn(30, 17, generator=g, dtype=torch.float64)
    scores[:, 3] = scores[:, 5]  # a tie, broken by column order
    relevance = torch.randint(0, 4, (30, 17), generator=g) * (torch.rand(30, 17, generator=g) < 0.3)
    relevance[4] = 0  # a query with no relevant item is skipped
    ks = (1, 3, 10, 40)  # 40 > 17 candidates: clipped
    got = E.retrieval_metrics(scores, relevance, ks=ks)
    expected = ref_retrieval(scores, relevance, ks)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=TOL), key


def test_retrieval_ties_and_masking():
    relevance = torch.tensor([[0, 1, 0]])
    tie = torch.tensor([[1.0, 1.0, 1.0]])  # stable: column order, relevant item is 2nd
    assert E.retrieval_metrics(tie, relevance, ks=1)["mrr"] == pytest.approx(0.5, abs=TOL)
    masked = torch.tensor([[float("-inf"), 0.2, 0.9]])
    out = E.retrieval_metrics(masked, relevance, ks=(1, 2))
    assert out["recall@1"] == 0.0 and out["recall@2"] == 1.0


def test_retrieval_from_embeddings_equals_cosine_scores():
    q, d = _randn(12, 5, seed=23), _randn(20, 5, seed=24)
    g = torch.Generator().manual_seed(25)
    relevance = (torch.rand(12, 20, generator=g) < 0.2).double()
    relevance[:, 0] = 1.0
    qn, dn = q / q.norm(dim=1, keepdim=True), d / d.norm(dim=1, keepdim=True)
    expected = E.retrieval_metrics(qn @ dn.T, relevance, ks=(1, 5))
    assert E.retrieval_from_embeddings(q, d, relevance, ks=(1, 5)) == expected
    assert E.retrieval_from_embeddings(q.numpy(), d.numpy(), relevance.bool().numpy(), (1, 5)) == (
        expected
    )
    # The positive pair (i, i) of identical embeddings is ranked first.
    assert E.retrieval_from_embeddings(q, 2 * q, torch.eye(12))["mrr"] == 1.0


# ----------------------------------------------------------------------------- clustering


def test_clustering_separated_blobs():
    z, y = _blobs(40, 5, 10, 0.5, seed=26)
    out = E.clustering_scores(z, y)
    assert out["nmi"] > 0.99 and out["ari"] > 0.99


def test_clustering_matches_sklearn_on_unit_rows():
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    z = _randn(60, 4, seed=27)
    y = torch.arange(60) % 3
    u = (z / z.norm(dim=1, keepdim=True)).numpy()
    pred = KMeans(n_clusters=4, n_init=10, random_state=5).fit_predict(u)
    got = E.clustering_scores(z.numpy(), y.numpy(), n_clusters=4, seed=5)
    assert got == {
        "nmi": float(normalized_mutual_info_score(y.numpy(), pred)),
        "ari": float(adjusted_rand_score(y.numpy(), pred)),
    }


# ----------------------------------------------------------------------------- errors

_Z, _Y = torch.randn(6, 3), torch.arange(6) % 2
_S, _R = torch.randn(2, 4), torch.ones(2, 4)

ERRORS = [
    (lambda: E.knn_accuracy(_Z, _Y, _Z, _Y, k=0), ValueError, r"`k` is 0.*>= 1"),
    (lambda: E.knn_accuracy(_Z, _Y, _Z, _Y, k=2.0), TypeError, r"`k` is 2.0"),
    (lambda: E.knn_accuracy(_Z, _Y, _Z, _Y, temperature=0), ValueError, r"`temperature` is 0"),
    (lambda: E.knn_accuracy(_Z, _Y[:5], _Z, _Y), ValueError, r"`train_y` has shape \(5,\)"),
    (lambda: E.knn_accuracy(_Z, _Y, _Z, _Y.float()), TypeError, r"`test_y` has dtype"),
    (lambda: E.knn_accuracy(_Z, _Y, _Z[:, :2], _Y), ValueError, r"`test_z` has feature dim"),
    (
        lambda: E.knn_accuracy(_Z, _Y, _Z * float("inf"), _Y),
        ValueError,
        r"`test_z` contains NaN or inf",
    ),
    (lambda: E.knn_accuracy(_Z, _Y, _Z, _Y, batch_size=0), ValueError, r"`batch_size` is 0"),
    (lambda: E.knn_accuracy(_Z.tolist(), _Y, _Z, _Y), TypeError, r"`train_z` is a list"),
    (lambda: E.linear_probe(_Z, _Y, _Z, _Y, C=-1.0), ValueError, r"`C` is -1.0"),
    (lambda: E.linear_probe(_Z, _Y, _Z, _Y, max_iter=0), ValueError, r"`max_iter` is 0"),
    (lambda: E.linear_probe(_Z, _Y, _Z, _Y, seed=-1), ValueError, r"`seed` is -1"),
    (lambda: E.linear_probe(_Z, _Y, _Z, _Y, standardize=1), TypeError, r"`standardize` is 1"),
    (lambda: E.linear_probe(_Z, _Y * 0, _Z, _Y), ValueError, r"`train_y` holds a single class"),
    (lambda: E.linear_probe(_Z, _Y, _Z, _Y[:4]), ValueError, r"`test_y` has shape \(4,\)"),
    (
        lambda: E.linear_probe_regression(_Z, _Y.double(), _Z, _Y.double(), alpha=0),
        ValueError,
        r"`alpha` is 0",
    ),
    (
        lambda: E.linear_probe_regression(_Z, _Y.double()[:5], _Z, _Y.double()),
        ValueError,
        r"`train_t` has shape \(5,\)",
    ),
    (
        lambda: E.linear_probe_regression(_Z, _Y.double(), _Z, _Y.double() / 0),
        ValueError,
        r"`test_t` contains NaN or inf",
    ),
    (
        lambda: E.linear_probe_regression(_Z, _Y.bool(), _Z, _Y.double()),
        TypeError,
        r"`train_t` has dtype torch.bool",
    ),
    (
        lambda: E.linear_probe_regression(_Z, _Y.double(), _Z[:1], _Y.double()[:1]),
        ValueError,
        r"`test_z` has 1 row\(s\)",
    ),
    (
        lambda: E.linear_probe_regression(_Z, _Z[:, :2], _Z, _Z[:, :3]),
        ValueError,
        r"`test_t` has shape \(6, 3\) but `train_t` has \(6, 2\)",
    ),
    (lambda: E.retrieval_metrics(_S, _R[:, :3]), ValueError, r"`relevance` has shape \(2, 3\)"),
    (lambda: E.retrieval_metrics(_S, -_R), ValueError, r"`relevance` has negative entries"),
    (lambda: E.retrieval_metrics(_S, _R * 0), ValueError, r"`relevance` has no entry > 0"),
    (lambda: E.retrieval_metrics(_S, _R / 0), ValueError, r"`relevance` contains NaN or inf"),
    (lambda: E.retrieval_metrics(_S / 0 * 0, _R), ValueError, r"`scores` contains NaN in rows"),
    (lambda: E.retrieval_metrics(_S[0], _R[0]), ValueError, r"`scores` has shape \(4,\)"),
    (lambda: E.retrieval_metrics(_S > 0, _R), TypeError, r"`scores` has dtype torch.bool"),
    (lambda: E.retrieval_metrics(_S, _R, ks=(1, 0)), ValueError, r"`ks` is 0"),
    (lambda: E.retrieval_metrics(_S, _R, ks=()), ValueError, r"`ks` is empty"),
    (lambda: E.retrieval_metrics(_S, _R, ks="5"), TypeError, r"`ks` is '5'"),
    (
        lambda: E.retrieval_from_embeddings(_Z, _Z[:4], torch.ones(6, 5)),
        ValueError,
        r"`relevance` has shape \(6, 5\) but \(len\(query_z\), len\(doc_z\)\) is \(6, 4\)",
    ),
    (
        lambda: E.retrieval_from_embeddings(_Z, _Z[:, :2], torch.ones(6, 6)),
        ValueError,
        r"`doc_z` has feature dimension 2",
    ),
    (
        lambda: E.retrieval_from_embeddings(_Z * 0, _Z, torch.ones(6, 6)),
        ValueError,
        r"`query_z` has all-zero rows",
    ),
    (lambda: E.clustering_scores(_Z, _Y, n_clusters=0), ValueError, r"`n_clusters` is 0"),
    (lambda: E.clustering_scores(_Z, _Y, n_clusters=7), ValueError, r"`n_clusters` is 7 but"),
    (lambda: E.clustering_scores(_Z, _Y, seed=1.5), TypeError, r"`seed` is 1.5"),
    (lambda: E.clustering_scores(_Z, _Y[:3]), ValueError, r"`labels` has shape \(3,\)"),
    (lambda: E.clustering_scores(_Z.long(), _Y), TypeError, r"`z` has dtype torch.int64"),
]


@pytest.mark.parametrize(("call", "kind", "match"), ERRORS)
def test_bad_input_messages_name_the_argument(call, kind, match):
    with pytest.raises(kind, match=match) as info:
        call()
    assert "Fix:" in str(info.value)  # the rule and the fix come with every message


# ----------------------------------------------------------------------------- layering


def test_evaluation_imports_sklearn_lazily_and_no_upper_layer():
    import ast
    import pathlib

    root = pathlib.Path(E.__file__).parent
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
                for name in names:
                    assert not name.startswith(("contrastkit.train", "contrastkit.cli")), path
        for node in tree.body:  # module level: no sklearn
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("sklearn"), path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("sklearn") for a in node.names), path


def test_importing_the_packages_does_not_import_sklearn():
    code = (
        "import sys, contrastkit.diagnostics, contrastkit.evaluation; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
