"""Weighted k-nearest-neighbour accuracy on cosine similarity (the kNN monitor)."""

from __future__ import annotations

import torch

from contrastkit.core.validation import check_feature_dim, check_temperature
from contrastkit.diagnostics._inputs import (
    as_embeddings,
    as_labels,
    check_int,
    chunk_rows,
    compute_dtype,
    unit_rows,
)

__all__ = ["knn_accuracy"]


def knn_accuracy(
    train_z,
    train_y,
    test_z,
    test_y,
    k: int = 200,
    temperature: float = 0.1,
    *,
    batch_size: int | None = None,
) -> float:
    """Top-1 accuracy of the weighted kNN classifier of Wu et al. (CVPR 2018, InstDisc).

    Rows are L2-normalised; each test row takes its ``k`` most cosine-similar training
    rows, each votes for its class with weight ``exp(s / temperature)``, and the class
    with the largest summed weight is predicted (the first, i.e. smallest label, on an
    exact tie). This is the monitor used by InstDisc, MoCo and SimCLR re-implementations
    (k=200, temperature=0.1 there). ``k`` is clipped to the number of training rows. A
    test label absent from ``train_y`` can never be predicted and counts as an error.

    Test rows are processed in blocks of ``batch_size`` rows (by default sized to about
    4M similarities, so 10000 x 60000 needs tens of MiB, not 2.4 GB). Weights are
    computed as ``exp((s - s_max) / temperature)`` per test row: the same vote ranking
    as ``exp(s / temperature)`` without overflow at small temperatures.
    Accepts torch tensors or numpy arrays; runs on ``train_z``'s device.
    """
    owner = "knn_accuracy"
    train_z = as_embeddings(train_z, owner, "train_z")
    test_z = as_embeddings(test_z, owner, "test_z")
    check_feature_dim(train_z, test_z, owner, ("train_z", "test_z"))
    device = train_z.device
    train_y = as_labels(train_y, train_z.shape[0], owner, "train_y", device=device)
    test_y = as_labels(test_y, test_z.shape[0], owner, "test_y", device=device)
    k = check_int(k, owner, "k", 1, "pass e.g. k=200 (InstDisc) or k=20")
    temperature = check_temperature(temperature, owner)
    if batch_size is not None:
        check_int(batch_size, owner, "batch_size", 1, "pass batch_size=None or e.g. 256")

    dtype = compute_dtype(train_z, test_z)
    train_u = unit_rows(train_z, owner, "train_z", dtype)
    test_u = unit_rows(test_z.to(device), owner, "test_z", dtype)
    classes, train_class = torch.unique(train_y, return_inverse=True)
    n_train, n_test = train_u.shape[0], test_u.shape[0]
    k = min(k, n_train)
    rows = chunk_rows(n_train, batch_size)

    correct = 0
    for start in range(0, n_test, rows):
        sim = test_u[start : start + rows] @ train_u.T
        top_sim, top_idx = sim.topk(k, dim=1)  # sorted, largest first
        weights = torch.exp((top_sim - top_sim[:, :1]) / temperature)
        votes = torch.zeros(sim.shape[0], classes.numel(), dtype=dtype, device=device)
        votes.scatter_add_(1, train_class[top_idx], weights)
        predicted = classes[votes.argmax(dim=1)]
        correct += int((predicted == test_y[start : start + rows]).sum())
    return correct / n_test
