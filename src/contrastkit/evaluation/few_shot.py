"""N-way K-shot episode evaluation of frozen features, optionally with BECLR's OpTA.

The protocol is the one of BECLR's ``evaluate.py::evaluate_fewshot`` (stypoumic/BECLR;
Poulakakis-Daktylidis & Jamali-Rad, ICLR 2024), itself the usual unsupervised few-shot
protocol: per episode, ``n_way`` classes, ``k_shot`` labelled support and ``n_query``
query images per class; each feature vector is standardised; class prototypes are the
mean of the shots; a classifier fit on the prototypes labels the queries; accuracy is
averaged over episodes with a 95% confidence interval ``1.96 * std / sqrt(episodes)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from contrastkit.core import transport
from contrastkit.core.validation import _fail, check_choice
from contrastkit.diagnostics._inputs import as_embeddings, as_labels, check_bool, check_int

__all__ = ["Episodes", "episode_accuracy", "sample_episodes"]

CLASSIFIERS = ("logistic", "prototype")


class Episodes(NamedTuple):
    """Indices into the data set: ``support`` ``(E, n_way, k_shot)``, ``query``
    ``(E, n_way, n_query)``; ``classes`` ``(E, n_way)`` are the original labels, and
    position ``w`` along the way axis is the episode label ``w``."""

    support: torch.Tensor
    query: torch.Tensor
    classes: torch.Tensor


def sample_episodes(
    labels,
    n_way: int,
    k_shot: int,
    n_query: int,
    generator: torch.Generator | None = None,
    *,
    episodes: int = 1,
) -> Episodes:
    """Draw ``episodes`` N-way K-shot episodes from integer ``labels`` (torch or numpy).

    Each episode picks ``n_way`` distinct classes uniformly, then ``k_shot + n_query``
    distinct samples of each class uniformly without replacement (support first), so
    support and query never share a sample. Every class present in ``labels`` must have
    at least ``k_shot + n_query`` samples (the code's episodic sampler draws from classes
    of 600 images; a smaller class is a setup error we report rather than skip). The
    draw is a deterministic function of ``generator`` (a fresh ``torch.Generator`` seeded
    0 when None).
    """
    owner = "sample_episodes"
    y = _episode_labels(labels, owner)
    n_way = check_int(n_way, owner, "n_way", 1, "pass e.g. n_way=5")
    k_shot = check_int(k_shot, owner, "k_shot", 1, "pass e.g. k_shot=1")
    n_query = check_int(n_query, owner, "n_query", 1, "pass e.g. n_query=15")
    episodes = check_int(episodes, owner, "episodes", 1, "pass e.g. episodes=600")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    elif not isinstance(generator, torch.Generator):
        _fail(
            owner,
            "generator",
            f"is a {type(generator).__name__}",
            "it must be a torch.Generator or None",
            "pass torch.Generator().manual_seed(seed)",
            TypeError,
        )
    classes, counts = torch.unique(y, return_counts=True)
    if classes.numel() < n_way:
        _fail(
            owner,
            "n_way",
            f"is {n_way} but `labels` hold {classes.numel()} classes",
            "an episode needs n_way distinct classes",
            f"use n_way <= {classes.numel()}",
        )
    need = k_shot + n_query
    short = counts < need
    if bool(short.any()):
        worst = int(counts.min())
        _fail(
            owner,
            "labels",
            f"has classes {classes[short].tolist()[:8]} with as few as {worst} samples",
            f"every class needs k_shot + n_query = {need} samples",
            "drop those classes from the evaluation set or lower k_shot / n_query",
        )
    members = [torch.nonzero(y == c).flatten() for c in classes]
    picks = torch.empty(episodes, n_way, need, dtype=torch.long)
    chosen = torch.empty(episodes, n_way, dtype=torch.long)
    for e in range(episodes):
        ways = torch.randperm(classes.numel(), generator=generator)[:n_way]
        chosen[e] = classes[ways]
        for w, c in enumerate(ways.tolist()):
            rows = members[c]
            picks[e, w] = rows[torch.randperm(rows.numel(), generator=generator)[:need]]
    return Episodes(picks[..., :k_shot], picks[..., k_shot:], chosen)


def _episode_labels(labels, owner: str) -> torch.Tensor:
    n = labels.shape[0] if hasattr(labels, "shape") and len(labels.shape) > 0 else -1
    return as_labels(labels, n, owner, "labels").cpu()


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """Each row to zero mean and unit (unbiased) std over its own features: the code's
    ``normalize(f, f.mean(1), f.std(1))`` "mean normalization" on (N, D, 1, 1)."""
    mean = x.mean(dim=1, keepdim=True)
    std = x.std(dim=1, keepdim=True)
    return (x - mean) / std.clamp_min(torch.finfo(x.dtype).tiny)


def _predict(prototypes: torch.Tensor, queries: torch.Tensor, classifier: str) -> np.ndarray:
    if classifier == "prototype":
        return torch.cdist(queries, prototypes).argmin(dim=1).numpy()
    from sklearn.linear_model import LogisticRegression

    # The code: LogisticRegression(penalty="l2", C=1.0, solver="lbfgs", max_iter=1000,
    # random_state=0) fit on the n_way prototypes (one row per class).
    clf = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000, random_state=0)
    clf.fit(prototypes.numpy(), np.arange(prototypes.shape[0]))
    return clf.predict(queries.numpy())


def episode_accuracy(
    features,
    labels,
    *,
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 15,
    episodes: int = 600,
    classifier: str = "logistic",
    opta: bool = False,
    opta_passes: int | None = None,
    opta_blend: float | None = None,
    standardize: bool = True,
    generator: torch.Generator | None = None,
    sampled: Episodes | None = None,
) -> dict:
    """Mean accuracy and 95% confidence interval over N-way K-shot episodes.

    Per episode (BECLR ``evaluate.py::evaluate_fewshot``): features standardised per row
    (``standardize=True``, the code's "mean normalization"); prototypes = the mean of each
    class's ``k_shot`` support features; with ``opta=True``, prototypes transported toward
    the episode's queries by :func:`contrastkit.core.transport.opta` with the
    code's schedule (5 passes for 1-shot; 1 pass and a 0.7/0.3 blend otherwise; override
    with ``opta_passes`` / ``opta_blend``); then

    - ``classifier="logistic"``: multinomial logistic regression (C=1, lbfgs) fit on the
      ``n_way`` prototypes, one row per class, as the code does (not on all shots);
    - ``classifier="prototype"``: nearest prototype in Euclidean distance.

    Episodes are drawn by :func:`sample_episodes` from ``generator`` (or passed as
    ``sampled``, so that several settings can share the same episodes). Returns
    ``{"mean", "ci95", "std", "episodes", "accuracies"}`` with accuracies in [0, 1];
    ``std`` is the population std over episodes and ``ci95 = 1.96 std / sqrt(E)``, as in
    the code.
    """
    owner = "episode_accuracy"
    x = as_embeddings(features, owner, "features").detach().cpu()
    y = as_labels(labels, x.shape[0], owner, "labels").cpu()
    classifier = check_choice(classifier, owner, "classifier", CLASSIFIERS)
    opta_on = check_bool(opta, owner, "opta")
    standardize = check_bool(standardize, owner, "standardize")
    k_shot = check_int(k_shot, owner, "k_shot", 1, "pass e.g. k_shot=1")
    if sampled is None:
        sampled = sample_episodes(y, n_way, k_shot, n_query, generator, episodes=episodes)
    elif not isinstance(sampled, Episodes):
        _fail(
            owner,
            "sampled",
            f"is a {type(sampled).__name__}",
            "it must be the Episodes returned by sample_episodes",
            "pass sampled=sample_episodes(labels, ...) or leave it None",
            TypeError,
        )
    elif sampled.support.shape[2] != k_shot:
        _fail(
            owner,
            "sampled",
            f"has {sampled.support.shape[2]} shots per class",
            f"it must match k_shot={k_shot}",
            "sample the episodes with the same k_shot",
        )
    if opta_on:
        passes, blend = transport.opta_passes(k_shot)
        passes = passes if opta_passes is None else opta_passes
        blend = blend if opta_blend is None else opta_blend
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    if standardize:
        x = _standardise(x)
    accs = []
    for sup, qry in zip(sampled.support, sampled.query, strict=True):
        prototypes = x[sup].mean(dim=1)  # (n_way, D)
        w, q = qry.shape
        queries = x[qry.reshape(-1)]
        truth = np.repeat(np.arange(w), q)
        if opta_on:
            prototypes = transport.opta(prototypes, queries, passes=passes, blend=blend)
        accs.append(float((_predict(prototypes, queries, classifier) == truth).mean()))
    acc = np.asarray(accs)
    std = float(acc.std())
    return {
        "mean": float(acc.mean()),
        "ci95": 1.96 * std / math.sqrt(acc.size),
        "std": std,
        "episodes": int(acc.size),
        "accuracies": accs,
    }
