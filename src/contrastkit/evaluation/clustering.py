"""Clustering quality of embeddings: k-means on the unit sphere scored by NMI and ARI.

scikit-learn is imported inside the function so that ``import contrastkit`` stays light.
"""

from __future__ import annotations

import numpy as np

from contrastkit.core.validation import _fail
from contrastkit.diagnostics._inputs import as_embeddings, as_labels, check_int, to_numpy, unit_rows

__all__ = ["clustering_scores"]


def clustering_scores(z, labels, n_clusters: int | None = None, seed: int = 0) -> dict[str, float]:
    """``{"nmi": ..., "ari": ...}`` of k-means clusters of L2-normalised embeddings.

    scikit-learn ``KMeans(n_clusters, n_init=10, random_state=seed)`` on the unit rows
    of ``z`` (float64); ``n_clusters`` defaults to the number of distinct ``labels``.
    NMI is ``normalized_mutual_info_score`` (arithmetic-mean normalisation, the
    scikit-learn default), ARI is ``adjusted_rand_score``. Deterministic given ``seed``.
    """
    owner = "clustering_scores"
    z = as_embeddings(z, owner, "z")
    y = as_labels(labels, z.shape[0], owner, "labels").cpu().numpy()
    seed = check_int(seed, owner, "seed", 0, "pass a non-negative integer, e.g. seed=0")
    n = z.shape[0]
    if n_clusters is None:
        n_clusters = int(np.unique(y).size)
    else:
        n_clusters = check_int(n_clusters, owner, "n_clusters", 1, "pass e.g. n_clusters=10")
    if n_clusters > n:
        _fail(
            owner,
            "n_clusters",
            f"is {n_clusters} but there are only {n} embeddings",
            "k-means needs at least as many samples as clusters",
            "lower n_clusters or pass more samples",
        )
    x = to_numpy(unit_rows(z, owner, "z"))
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    pred = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(x)
    return {
        "nmi": float(normalized_mutual_info_score(y, pred)),
        "ari": float(adjusted_rand_score(y, pred)),
    }
