"""N-way K-shot episodes: the sampler and the episode accuracy (BECLR's evaluate.py)."""

import itertools
import math

import numpy as np
import pytest
import torch

from contrastkit.evaluation.few_shot import Episodes, episode_accuracy, sample_episodes


def _labels(per_class=(20, 20, 20, 20, 20, 20)):
    return torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])


def test_episode_shapes_classes_and_shots():
    y = _labels()
    ep = sample_episodes(y, 5, 3, 4, torch.Generator().manual_seed(1), episodes=20)
    assert ep.support.shape == (20, 5, 3) and ep.query.shape == (20, 5, 4)
    assert ep.classes.shape == (20, 5)
    for e in range(20):
        assert len(set(ep.classes[e].tolist())) == 5
        for w in range(5):
            rows = torch.cat([ep.support[e, w], ep.query[e, w]]).tolist()
            assert len(set(rows)) == 7  # support and query disjoint, no repeats
            assert set(y[rows].tolist()) == {int(ep.classes[e, w])}


def test_episodes_are_deterministic_in_the_generator():
    y = _labels()
    a = sample_episodes(y, 4, 1, 5, torch.Generator().manual_seed(7), episodes=5)
    b = sample_episodes(y, 4, 1, 5, torch.Generator().manual_seed(7), episodes=5)
    c = sample_episodes(y, 4, 1, 5, torch.Generator().manual_seed(8), episodes=5)
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)
    assert not torch.equal(a.query, c.query)


def test_numpy_labels_are_accepted():
    y = _labels().numpy()
    ep = sample_episodes(y, 2, 1, 1, torch.Generator().manual_seed(0))
    assert ep.support.shape == (1, 2, 1)


def test_class_with_too_few_samples_is_an_error():
    y = _labels((20, 20, 20, 20, 5))
    with pytest.raises(ValueError, match=r"`labels`.*k_shot \+ n_query = 16"):
        sample_episodes(y, 5, 1, 15)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_way=7), r"`n_way` is 7 but `labels` hold 6 classes"),
        (dict(k_shot=0), r"`k_shot` is 0.*>= 1"),
        (dict(n_query=1.5), r"`n_query`.*integer"),
        (dict(generator=3), r"`generator` is a int"),
    ],
)
def test_sampler_bad_arguments(kwargs, match):
    args = dict(n_way=5, k_shot=1, n_query=2, generator=None) | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        sample_episodes(_labels(), **args)


def _separable(n_class=6, per=20, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:n_class] * 20.0
    y = torch.arange(n_class).repeat_interleave(per)
    x = centres[y] + 0.1 * torch.randn(len(y), dim, generator=g)
    return x.double(), y


@pytest.mark.parametrize("classifier", ["logistic", "prototype"])
def test_separable_features_score_one(classifier):
    x, y = _separable()
    r = episode_accuracy(x, y, k_shot=1, n_query=5, episodes=10, classifier=classifier)
    assert r["mean"] == 1.0 and r["ci95"] == 0.0 and r["episodes"] == 10


def _reference_prototype_accuracy(x, ep, standardize):
    """Loop version: standardise rows, average shots, nearest prototype by distance."""
    if standardize:
        x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    accs = []
    for e in range(ep.support.shape[0]):
        protos = [x[ep.support[e, w]].mean(0) for w in range(ep.support.shape[1])]
        hits = 0
        total = 0
        for w, i in itertools.product(range(ep.query.shape[1]), range(ep.query.shape[2])):
            q = x[ep.query[e, w, i]]
            d = [float(((q - p) ** 2).sum()) for p in protos]
            hits += int(np.argmin(d) == w)
            total += 1
        accs.append(hits / total)
    return accs


@pytest.mark.parametrize("standardize", [True, False])
def test_prototype_accuracy_matches_loop_reference(standardize):
    g = torch.Generator().manual_seed(3)
    y = torch.arange(6).repeat_interleave(15)
    x = torch.randn(6, 10, generator=g, dtype=torch.float64)[y] + torch.randn(
        90, 10, generator=g, dtype=torch.float64
    )
    ep = sample_episodes(y, 5, 2, 6, torch.Generator().manual_seed(0), episodes=12)
    r = episode_accuracy(
        x, y, k_shot=2, classifier="prototype", sampled=ep, standardize=standardize
    )
    ref = _reference_prototype_accuracy(x, ep, standardize)
    assert r["accuracies"] == pytest.approx(ref, abs=1e-12)
    assert r["mean"] == pytest.approx(np.mean(ref), abs=1e-12)
    assert r["std"] == pytest.approx(np.std(ref), abs=1e-12)
    assert r["ci95"] == pytest.approx(1.96 * np.std(ref) / math.sqrt(12), abs=1e-12)


def test_opta_recovers_shifted_one_shot_episodes():
    """Classes are tight clusters on a line, 4 apart; every support shot is shifted by the
    same +2.4 along the line (a support/query domain shift). The query cluster of class
    c + 1 is then nearer the shot of class c (1.6 < 2.4): nearest-prototype gets only class
    0 right. The monotone matching is the optimal transport, so OpTA maps each prototype
    back onto its own cluster."""
    g = torch.Generator().manual_seed(0)
    n_class, per, dim = 5, 16, 10
    centres = torch.zeros(n_class, dim)
    centres[:, 0] = 4.0 * torch.arange(n_class)
    y = torch.arange(n_class).repeat_interleave(per)
    x = centres[y] + 0.1 * torch.randn(len(y), dim, generator=g)
    x[::per] = centres + torch.tensor([2.4] + [0.0] * (dim - 1))  # first of each class
    support = torch.arange(0, len(y), per).view(1, n_class, 1)
    query = torch.stack([torch.arange(c * per + 1, (c + 1) * per) for c in range(n_class)])
    ep = Episodes(support, query[None], torch.arange(n_class)[None])
    kw = dict(k_shot=1, sampled=ep, classifier="prototype", standardize=False)
    assert episode_accuracy(x, y, **kw)["mean"] == pytest.approx(0.2)
    assert episode_accuracy(x, y, opta=True, **kw)["mean"] == 1.0


def test_same_episodes_are_reused_when_passed():
    x, y = _separable(seed=1)
    ep = sample_episodes(y, 5, 1, 3, torch.Generator().manual_seed(4), episodes=3)
    a = episode_accuracy(x, y, sampled=ep, classifier="prototype")
    b = episode_accuracy(x, y, sampled=ep, classifier="prototype", episodes=99)
    assert a["accuracies"] == b["accuracies"] and b["episodes"] == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(classifier="svm"), r"`classifier` is 'svm'"),
        (dict(opta=1), r"`opta` is 1"),
        (dict(sampled=(1, 2)), r"`sampled` is a tuple"),
    ],
)
def test_episode_accuracy_bad_arguments(kwargs, match):
    x, y = _separable()
    with pytest.raises((ValueError, TypeError), match=match):
        episode_accuracy(x, y, episodes=2, n_query=2, **kwargs)


def test_labels_must_match_features():
    x, y = _separable()
    with pytest.raises(ValueError, match=r"`labels` has shape"):
        episode_accuracy(x, y[:-1], episodes=2)
