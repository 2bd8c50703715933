"""contrastkit.retrieval.Index: flat and IVF search against a torch brute force, persistence,
bad input."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("faiss")

from contrastkit.retrieval import Index  # noqa: E402


def _data(n=300, q=20, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(q, d, generator=g)


def _brute(x, queries, k, metric):
    """Top-k by an explicit loop over queries (float64 scores)."""
    x, queries = x.double(), queries.double()
    if metric == "cosine":
        x = x / x.norm(dim=1, keepdim=True)
        queries = queries / queries.norm(dim=1, keepdim=True)
    scores, ids = [], []
    for qv in queries:
        if metric == "l2":
            s = -((x - qv) ** 2).sum(dim=1)
        else:
            s = (x * qv).sum(dim=1)
        top = torch.topk(s, k)
        scores.append(top.values)
        ids.append(top.indices)
    return torch.stack(scores), torch.stack(ids)


def _assert_same_ranking(scores, ids, ref_scores, ref_ids, atol=1e-5):
    torch.testing.assert_close(scores.double(), ref_scores, atol=atol, rtol=0)
    # ids must agree wherever the reference scores are distinct from their neighbours
    gaps = ref_scores[:, :-1] - ref_scores[:, 1:]
    distinct = torch.ones_like(ref_ids, dtype=torch.bool)
    distinct[:, :-1] &= gaps > 1e-4
    distinct[:, 1:] &= gaps > 1e-4
    assert distinct.float().mean() > 0.9  # the check below has teeth
    assert torch.equal(ids[distinct], ref_ids[distinct])


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_flat_equals_brute_force(metric):
    x, q = _data()
    index = Index.flat(16, metric=metric)
    index.add(x)
    assert len(index) == 300
    scores, ids = index.search(q, 10)
    assert scores.shape == ids.shape == (20, 10)
    assert scores.dtype == torch.float32 and ids.dtype == torch.int64
    _assert_same_ranking(scores, ids, *_brute(x, q, 10, metric))


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_ivf_full_probe_equals_flat(metric, capfd):
    x, q = _data(n=400)
    flat = Index.flat(16, metric=metric)
    flat.add(x)
    ivf = Index.ivf(16, nlist=8, nprobe=8, metric=metric)
    assert not ivf.is_trained
    ivf.add(x)  # trains on the first add
    assert ivf.is_trained and len(ivf) == 400
    s_ivf, i_ivf = ivf.search(q, 15)
    s_flat, i_flat = flat.search(q, 15)
    _assert_same_ranking(s_ivf, i_ivf, s_flat.double(), i_flat)


def test_ivf_few_probes_is_a_subset_and_pads_missing():
    x, q = _data(n=200)
    ivf = Index.ivf(16, nlist=10, nprobe=1)
    ivf.add(x)
    scores, ids = ivf.search(q, 200)
    # one list of 10 holds fewer than 200 vectors: the rest are padded with -1 / -inf
    assert bool((ids == -1).any())
    assert torch.equal(ids == -1, torch.isinf(scores))
    assert bool((scores[torch.isinf(scores)] < 0).all())
    # every returned score is the true inner product of the returned vector
    found = ids >= 0
    true = (q[:, None, :] * x[ids.clamp(min=0)]).sum(-1)
    torch.testing.assert_close(scores[found], true[found], atol=1e-5, rtol=0)


def test_custom_ids_and_incremental_add():
    x, q = _data(n=50)
    ids = torch.arange(50) * 7 + 3
    a = Index.flat(16)
    a.add(x[:20], ids=ids[:20])
    a.add(x[20:], ids=ids[20:].numpy())
    b = Index.flat(16)
    b.add(x)
    sa, ia = a.search(q, 5)
    sb, ib = b.search(q, 5)
    torch.testing.assert_close(sa, sb, atol=0, rtol=0)
    assert torch.equal(ia, ids[ib])
    # default ids continue after the largest one
    c = Index.flat(16)
    c.add(x[:3], ids=[10, 11, 12])
    c.add(x[3:5])
    assert c.ids.tolist() == [10, 11, 12, 13, 14]


def test_k_larger_than_index_pads():
    x, q = _data(n=4)
    index = Index.flat(16)
    index.add(x)
    scores, ids = index.search(q[:2], 6)
    assert (ids[:, 4:] == -1).all() and torch.isinf(scores[:, 4:]).all()
    assert sorted(ids[0, :4].tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_save_load_round_trip(tmp_path, kind):
    x, q = _data(n=120)
    index = Index.flat(16, "cosine") if kind == "flat" else Index.ivf(16, 6, nprobe=3)
    index.add(x, ids=torch.arange(120) + 1000)
    path = tmp_path / "sub" / "corpus.faiss"
    index.save(path)
    meta = json.loads((tmp_path / "sub" / "corpus.faiss.json").read_text())
    assert meta["kind"] == kind and meta["ntotal"] == 120 and meta["ids"][0] == 1000
    assert [p.name for p in (tmp_path / "sub").iterdir() if p.name.endswith(".tmp")] == []
    loaded = Index.load(path)
    assert (loaded.kind, loaded.metric, loaded.nlist, loaded.nprobe, len(loaded)) == (
        index.kind,
        index.metric,
        index.nlist,
        index.nprobe,
        120,
    )
    s0, i0 = index.search(q, 7)
    s1, i1 = loaded.search(q, 7)
    assert torch.equal(s0, s1) and torch.equal(i0, i1)
    # a loaded index keeps growing with fresh ids
    loaded.add(x[:1])
    assert loaded.ids[-1].item() == 1120


def test_load_detects_mismatched_sidecar(tmp_path):
    x, _ = _data(n=10)
    a, b = Index.flat(16), Index.flat(16)
    a.add(x)
    b.add(x[:5])
    a.save(tmp_path / "a.faiss")
    b.save(tmp_path / "b.faiss")
    (tmp_path / "a.faiss.json").write_text((tmp_path / "b.faiss.json").read_text())
    with pytest.raises(ValueError, match="checksum"):
        Index.load(tmp_path / "a.faiss")
    with pytest.raises(ValueError, match="does not exist"):
        Index.load(tmp_path / "missing.faiss")


def test_dtypes_are_cast_to_float32():
    x, q = _data(n=30)
    ref = Index.flat(16)
    ref.add(x)
    s_ref, i_ref = ref.search(q, 3)
    for conv in (
        lambda t: t.double(),
        lambda t: t.double().numpy(),
        lambda t: np.asfortranarray(t.numpy()),  # non-contiguous for C order
        lambda t: t.t().contiguous().t(),  # non-contiguous tensor
    ):
        index = Index.flat(16)
        index.add(conv(x))
        s, i = index.search(conv(q), 3)
        torch.testing.assert_close(s, s_ref, atol=1e-6, rtol=0)
        assert torch.equal(i, i_ref)
    # float16 queries are accepted (cast), results close to float32
    s16, _ = ref.search(q.half(), 3)
    assert s16.dtype == torch.float32


def test_bad_inputs():
    x, q = _data(n=20)
    index = Index.flat(16)
    with pytest.raises(ValueError, match="holds no vectors"):
        index.search(q, 1)
    with pytest.raises(ValueError, match="dimension 8"):
        index.add(torch.randn(5, 8))
    index.add(x)
    with pytest.raises(ValueError, match="dimension 8"):
        index.search(torch.randn(2, 8), 1)
    with pytest.raises(ValueError, match="2-D"):
        index.search(q[0], 1)
    with pytest.raises(ValueError, match="2-D"):
        index.add(x[None])
    with pytest.raises(ValueError, match="`k` is 0"):
        index.search(q, 0)
    with pytest.raises(TypeError, match="`k`"):
        index.search(q, 2.5)
    with pytest.raises(TypeError, match="dtype torch.bool"):
        index.search(q > 0, 1)
    with pytest.raises(TypeError, match="list"):
        index.add([[0.0] * 16])
    with pytest.raises(ValueError, match="NaN or inf in rows \\[1\\]"):
        index.add(torch.stack([x[0], torch.full((16,), float("nan"))]))
    with pytest.raises(ValueError, match="already in the index"):
        index.add(x[:2], ids=[0, 100])
    with pytest.raises(ValueError, match="repeats"):
        index.add(x[:2], ids=[100, 100])
    with pytest.raises(ValueError, match="negative"):
        index.add(x[:1], ids=[-1])
    with pytest.raises(ValueError, match="shape"):
        index.add(x[:2], ids=[100])
    with pytest.raises(ValueError, match="metric"):
        Index.flat(16, metric="cos")
    with pytest.raises(ValueError, match="zero"):
        Index.flat(16, metric="cosine").add(torch.zeros(1, 16))
    with pytest.raises(ValueError, match="nprobe"):
        Index.ivf(16, nlist=4, nprobe=5)
    with pytest.raises(ValueError, match="nprobe"):
        index.nprobe = 2
    assert len(index) == 20  # failed adds left the index untouched


def test_ivf_needs_at_least_nlist_vectors():
    x, _ = _data(n=10)
    ivf = Index.ivf(16, nlist=16)
    with pytest.raises(ValueError, match="at least 16 vectors"):
        ivf.add(x)
    with pytest.raises(ValueError, match="at least 16 vectors"):
        ivf.train(x)
    assert len(ivf) == 0 and not ivf.is_trained
    # train on a larger sample, then add a few
    big, _ = _data(n=64, seed=1)
    ivf.train(big)
    ivf.add(x)
    assert len(ivf) == 10
