"""contrastkit losses as sentence-transformers training losses, and model export.

sentence-transformers' ``SentenceTransformerTrainer`` needs the ``datasets`` package, which
is not a dependency here, so the training steps below are the trainer's own call made by
hand: ``loss(features_per_column, labels)``, ``backward``, optimizer step.
"""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
st = pytest.importorskip("sentence_transformers")

from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.sentence_transformer.losses import (  # noqa: E402
    MultipleNegativesRankingLoss,
)

from contrastkit.functional import info_nce, sup_con  # noqa: E402
from contrastkit.losses import InfoNCE  # noqa: E402
from contrastkit.text.encoder import TextEncoder, default_model_path  # noqa: E402
from contrastkit.text.interop import (  # noqa: E402
    STLoss,
    export_sentence_transformer,
    supported_losses,
)

ANCHORS = [
    "A man is playing a guitar.",
    "A woman slices an onion.",
    "Kids run in a park.",
    "It rains.",
]
POSITIVES = [
    "Someone plays guitar.",
    "Onions are being cut.",
    "Children play outside.",
    "Rain falls.",
]
NEGATIVES = ["A dog sleeps.", "The car is red.", "Stocks fell today.", "The sun is out."]


def _model_path():
    try:
        return default_model_path()
    except ImportError as err:
        pytest.skip(f"default model package missing: {err}")


@pytest.fixture(scope="module")
def model():
    m = SentenceTransformer(str(_model_path()), device="cpu")
    m.max_seq_length = 32
    return m


def _tokenize(model, texts):
    """``model.preprocess`` (v6; ``tokenize`` is its deprecated alias)."""
    return (model.preprocess if hasattr(model, "preprocess") else model.tokenize)(texts)


class Identity(torch.nn.Module):
    """A stand-in model whose 'features' are already the embeddings."""

    def forward(self, features):
        return {"sentence_embedding": features}


def _mnrl_loop(a, cands, scale):
    """MNRL by hand: anchor i against every candidate column row, cosine * scale."""
    a = torch.nn.functional.normalize(a, dim=-1)
    c = torch.nn.functional.normalize(cands, dim=-1)
    total = 0.0
    for i in range(a.shape[0]):
        row = torch.stack([scale * (a[i] @ c[j]) for j in range(c.shape[0])])
        total = total - (row[i] - torch.logsumexp(row, 0))
    return total / a.shape[0]


@pytest.mark.parametrize("columns", [2, 3])
def test_one_directional_clip_equals_mnrl_float64(columns):
    g = torch.Generator().manual_seed(0)
    cols = [torch.randn(6, 8, generator=g, dtype=torch.float64) for _ in range(columns)]
    ours = STLoss(Identity(), "clip", symmetric=False, temperature=0.05)
    mnrl = MultipleNegativesRankingLoss(Identity(), scale=20.0)
    got = ours.compute_loss_from_embeddings(cols)
    assert abs(got.item() - mnrl.compute_loss_from_embeddings(cols, None).item()) < 1e-12
    assert abs(got.item() - _mnrl_loop(cols[0], torch.cat(cols[1:]), 20.0).item()) < 1e-10


def test_wrapped_loss_equals_mnrl_on_minilm(model):
    model.eval()  # no dropout: both losses see the same embeddings
    features = [_tokenize(model, c) for c in (ANCHORS, POSITIVES, NEGATIVES)]
    ours = STLoss(model, "clip", symmetric=False, temperature=0.05)
    mnrl = MultipleNegativesRankingLoss(model)  # scale 20 = 1 / 0.05, cosine
    with torch.no_grad():
        for k in (2, 3):
            a, b = ours(features[:k], None), mnrl(features[:k], None)
            assert abs(a.item() - b.item()) < 1e-6


def test_views_mapping_matches_functional():
    g = torch.Generator().manual_seed(1)
    a, p, n1, n2 = (torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(4))
    got = STLoss(Identity(), "infonce", temperature=0.05)([a, p, n1, n2])
    ref = info_nce(a, p, negatives=torch.cat([n1, n2]), temperature=0.05)
    assert abs(got.item() - ref.item()) < 1e-12
    labels = torch.tensor([0, 1, 0, 1, 1])
    got = STLoss(Identity(), "supcon", temperature=0.1)([a], labels)
    assert abs(got.item() - sup_con(a, labels=labels, temperature=0.1).item()) < 1e-12
    module = InfoNCE(temperature=0.2)
    assert STLoss(Identity(), module).loss is module


def _train_step(model, loss, columns, labels=None):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    features = [_tokenize(model, c) for c in columns]
    value = loss(features, labels)
    opt.zero_grad()
    value.backward()
    grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    opt.step()
    moved = sum(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    return value, float(torch.stack(grads).norm()), moved


@pytest.mark.parametrize("name", ["infonce", "dcl", "supcon"])
def test_one_training_step_on_a_sentence_transformer(model, name):
    if name == "supcon":  # one column of sentences with class labels
        columns, labels = [ANCHORS + POSITIVES], torch.tensor([0, 1, 2, 3] * 2)
    else:
        columns, labels = [ANCHORS, POSITIVES], None
    loss = STLoss(model, name, temperature=0.5)  # 0.05 makes these easy pairs a ~0 loss
    value, grad_norm, moved = _train_step(model, loss, columns, labels)
    assert torch.isfinite(value) and grad_norm > 0
    assert moved > 10  # the transformer's weights changed


def test_refused_losses_name_the_reason():
    refused = {k for k, v in supported_losses().items() if v.startswith("refused")}
    assert {"byol", "simsiam", "isogclr", "sogclr", "simctg", "soft_supcon"} <= refused
    assert {"infonce", "dcl", "supcon", "clip", "moco", "listwise_wasserstein"}.isdisjoint(refused)
    with pytest.raises(ValueError, match="predictor head"):
        STLoss(Identity(), "byol")
    with pytest.raises(ValueError, match="token-level"):
        STLoss(Identity(), "simctg")

    class Odd(InfoNCE):
        inputs = "graph_edges"

    with pytest.raises(ValueError, match="no column mapping"):
        STLoss(Identity(), Odd())


def test_bad_input():
    x = [torch.randn(4, 3) for _ in range(3)]
    with pytest.raises(ValueError, match="takes no extra negatives"):
        STLoss(Identity(), "barlowtwins")(x)
    with pytest.raises(ValueError, match="labels"):
        STLoss(Identity(), "supcon")(x[:1])
    with pytest.raises(ValueError, match="at least 2"):
        STLoss(Identity(), "infonce")(x[:1])
    with pytest.raises(ValueError, match="not a registered loss"):
        STLoss(Identity(), "infoncee")
    with pytest.raises(ValueError, match="extra_columns"):
        STLoss(Identity(), "infonce", extra_columns="both")
    with pytest.raises(ValueError, match="params"):
        STLoss(Identity(), InfoNCE(), temperature=0.1)
    with pytest.raises(TypeError, match="encoder"):
        export_sentence_transformer(torch.nn.Linear(2, 2), "/tmp/unused")


def test_listwise_columns_with_grades():
    g = torch.Generator().manual_seed(2)
    q, d1, d2 = (torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(3))
    grades = torch.tensor([[2, 0], [1, 0], [0, 2], [1, 1]])
    loss = STLoss(Identity(), "listwise_wasserstein")
    from contrastkit.functional import listwise_wasserstein

    ref = listwise_wasserstein(q, torch.stack([d1, d2], 1), relevance=grades)
    assert abs(loss([q, d1, d2], grades).item() - ref.item()) < 1e-12
    with pytest.raises(ValueError, match="relevance grades"):
        loss([q, d1, d2])


def test_export_text_encoder_loads_in_sentence_transformers(tmp_path):
    enc = TextEncoder.from_pretrained(_model_path(), max_length=32)
    folder = export_sentence_transformer(enc, tmp_path / "exported")
    loaded = SentenceTransformer(str(folder), device="cpu")
    texts = ANCHORS[:2]
    ours = enc.encode(texts)
    theirs = torch.as_tensor(loaded.encode(texts, convert_to_numpy=True))
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-5)
