"""Linear probes on frozen embeddings: logistic regression (classes) and ridge (targets).

scikit-learn is imported inside the functions so that ``import contrastkit`` stays light.
"""

from __future__ import annotations

import numpy as np
import torch

from contrastkit.core.validation import _fail, check_feature_dim, check_positive_number
from contrastkit.diagnostics._inputs import (
    as_embeddings,
    as_labels,
    as_tensor,
    check_bool,
    check_int,
    to_numpy,
)

__all__ = ["linear_probe", "linear_probe_regression"]


def _features(train_z, test_z, owner: str, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    train_z = as_embeddings(train_z, owner, "train_z")
    test_z = as_embeddings(test_z, owner, "test_z")
    check_feature_dim(train_z, test_z, owner, ("train_z", "test_z"))
    x_train, x_test = to_numpy(train_z), to_numpy(test_z)
    if standardize:
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    return x_train, x_test


def linear_probe(
    train_z,
    train_y,
    test_z,
    test_y,
    *,
    seed: int = 0,
    max_iter: int = 1000,
    C: float = 1.0,
    standardize: bool = True,
) -> float:
    """Test accuracy of a multinomial logistic regression fit on frozen train embeddings.

    scikit-learn ``LogisticRegression(solver="lbfgs", C=C, max_iter=max_iter,
    random_state=seed)`` on float64 features, standardised (zero mean, unit variance,
    statistics from the training rows only) when ``standardize=True``. lbfgs is
    deterministic, so the result is a function of the inputs and arguments. Accepts torch
    tensors or numpy arrays. A test label absent from ``train_y`` counts as an error.
    """
    owner = "linear_probe"
    seed = check_int(seed, owner, "seed", 0, "pass a non-negative integer, e.g. seed=0")
    max_iter = check_int(max_iter, owner, "max_iter", 1, "pass e.g. max_iter=1000")
    C = check_positive_number(C, owner, "C", "pass e.g. C=1.0 (smaller means more L2 penalty)")
    standardize = check_bool(standardize, owner, "standardize")
    x_train, x_test = _features(train_z, test_z, owner, standardize)
    y_train = as_labels(train_y, x_train.shape[0], owner, "train_y").cpu().numpy()
    y_test = as_labels(test_y, x_test.shape[0], owner, "test_y").cpu().numpy()
    if np.unique(y_train).size < 2:
        _fail(
            owner,
            "train_y",
            f"holds a single class ({int(y_train[0])})",
            "a classifier needs at least two classes to fit",
            "pass training rows from two or more classes",
        )
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, random_state=seed)
    clf.fit(x_train, y_train)
    return float((clf.predict(x_test) == y_test).mean())


def _targets(t, n: int, owner: str, arg: str) -> np.ndarray:
    t = as_tensor(t, owner, arg)
    if t.dtype.is_complex or t.dtype == torch.bool:
        _fail(
            owner,
            arg,
            f"has dtype {t.dtype}",
            "regression targets must be real numbers",
            f"pass {arg}.double()",
            TypeError,
        )
    if t.dim() not in (1, 2) or t.shape[0] != n:
        _fail(
            owner,
            arg,
            f"has shape {tuple(t.shape)}",
            f"it must be (N,) or (N, T) with one row per embedding ({n})",
            "pass one target (row) per row of the embeddings",
        )
    arr = to_numpy(t)
    if not np.isfinite(arr).all():
        _fail(
            owner,
            arg,
            "contains NaN or inf",
            "regression targets must be finite",
            "drop or impute the missing targets",
        )
    return arr


def linear_probe_regression(
    train_z,
    train_t,
    test_z,
    test_t,
    *,
    alpha: float = 1.0,
    standardize: bool = True,
) -> dict[str, float]:
    """Ridge regression on frozen embeddings: test ``{"mae": ..., "r2": ...}``.

    scikit-learn ``Ridge(alpha=alpha)`` (with intercept) on float64 features,
    standardised with training statistics when ``standardize=True`` so that ``alpha``
    means the same for every encoder. Targets are ``(N,)`` or ``(N, T)``; for several
    targets MAE and R^2 are averaged uniformly over them (scikit-learn's
    ``mean_absolute_error`` and ``r2_score`` defaults). Needs two or more test rows for
    R^2 to be defined.
    """
    owner = "linear_probe_regression"
    alpha = check_positive_number(alpha, owner, "alpha", "pass e.g. alpha=1.0")
    standardize = check_bool(standardize, owner, "standardize")
    n_test = as_embeddings(test_z, owner, "test_z").shape[0]
    if n_test < 2:
        _fail(
            owner,
            "test_z",
            f"has {n_test} row(s)",
            "R^2 needs at least two test samples",
            "pass a larger test set",
        )
    x_train, x_test = _features(train_z, test_z, owner, standardize)
    t_train = _targets(train_t, x_train.shape[0], owner, "train_t")
    t_test = _targets(test_t, x_test.shape[0], owner, "test_t")
    if t_train.ndim != t_test.ndim or t_train.shape[1:] != t_test.shape[1:]:
        _fail(
            owner,
            "test_t",
            f"has shape {t_test.shape} but `train_t` has {t_train.shape}",
            "train and test targets must have the same number of outputs",
            "pass targets of the same layout",
        )
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_absolute_error, r2_score

    pred = Ridge(alpha=alpha).fit(x_train, t_train).predict(x_test)
    return {"mae": float(mean_absolute_error(t_test, pred)), "r2": float(r2_score(t_test, pred))}
