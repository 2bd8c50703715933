"""Mutual-information estimators: lower bounds as functions of a critic's score matrix,
critics, and Lipschitz constraints. Depends on ``core`` and torch only.

Score-matrix API shared by every estimator and critic: ``scores[i, j] = f(x_i, y_j)``
(B, B); the diagonal holds the joint samples, the off-diagonal the product of marginals.
"""

from contrastkit.estimators.bounds import (
    MINE,
    check_scores,
    dv_bound,
    infonce_bound,
    js_bound,
    js_fgan_bound,
    log_mean_exp_off_diagonal,
    mine_bound,
    nwj_bound,
)
from contrastkit.estimators.critics import BilinearCritic, ConcatCritic, SeparableCritic, mlp
from contrastkit.estimators.lipschitz import (
    gradient_penalty,
    input_gradient_norms,
    lipschitz_upper_bound,
    spectral_norm_mlp,
)
from contrastkit.estimators.wasserstein import wdm_dual_bound, wpc_loss, wpc_penalty_points

__all__: list[str] = [
    "MINE",
    "BilinearCritic",
    "ConcatCritic",
    "SeparableCritic",
    "check_scores",
    "dv_bound",
    "gradient_penalty",
    "infonce_bound",
    "input_gradient_norms",
    "js_bound",
    "js_fgan_bound",
    "lipschitz_upper_bound",
    "log_mean_exp_off_diagonal",
    "mine_bound",
    "mlp",
    "nwj_bound",
    "spectral_norm_mlp",
    "wdm_dual_bound",
    "wpc_loss",
    "wpc_penalty_points",
]
