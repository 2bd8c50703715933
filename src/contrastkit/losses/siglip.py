"""SigLIP: the pairwise sigmoid loss (Zhai et al., ICCV 2023, Algorithm 1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.core.reduction import reduce
from contrastkit.core.similarity import pairwise
from contrastkit.core.temperature import as_scale
from contrastkit.core.validation import check_batch_size, check_embeddings, check_same_shape
from contrastkit.losses._inputs import prepared, working_dtype
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.registry import register_loss


def siglip(query, key, *, temperature=0.1, bias=-10.0, similarity="cosine", reduction="mean"):
    """Sigmoid loss over every query-key pair::

        l_i = - sum_j log sigmoid(y_ij (s_ij / t + b)),   y_ij = +1 if i == j else -1

    The paper (and open_clip ``src/open_clip/loss.py`` ``SigLipLoss``) divides the total by
    the batch size, which is ``reduction="mean"`` over the per-query sums ``l_i``. Paper
    initialisation: ``t = 1/10`` (log-scale ``log 10``) and ``b = -10``. ``temperature``
    and ``bias`` may be tensors (learnable).
    """
    owner = "siglip"
    check_embeddings(query, owner, "query")
    check_embeddings(key, owner, "key")
    check_same_shape(query, key, owner, ("query", "key"))
    check_batch_size(query.shape[0], owner, "query")
    dtype = working_dtype(query, key)
    q = prepared(query, similarity, owner, "query", dtype)
    k = prepared(key, similarity, owner, "key", dtype)
    logits = pairwise(q, k, similarity) * as_scale(temperature, owner) + bias
    n = logits.shape[0]
    signs = 2 * torch.eye(n, dtype=logits.dtype, device=logits.device) - 1
    per_query = -F.logsigmoid(signs * logits).sum(1)
    return reduce(per_query, reduction, owner)


@register_loss(
    "siglip",
    summary="Pairwise sigmoid loss with learnable temperature and bias",
    paper="Zhai et al. 2023, Sigmoid Loss for Language Image Pre-Training",
)
class SigLIP(ContrastiveLoss):
    """Module form of :func:`siglip`; temperature and bias are learnable by default."""

    function = staticmethod(siglip)

    inputs = "two_tower"

    def __init__(
        self, temperature=0.1, bias=-10.0, learnable=True, similarity="cosine", reduction="mean"
    ):
        super().__init__()
        self._init_contrastive(temperature, reduction, similarity, learnable)
        if isinstance(bias, bool) or not isinstance(bias, int | float) or not math.isfinite(bias):
            raise ValueError(
                f"SigLIP: `bias` is {bias!r}; it must be a finite number. Fix: pass e.g. bias=-10.0."
            )
        self.bias = float(bias)
        self.bias_param = nn.Parameter(torch.tensor(self.bias)) if self.learnable else None

    def function_kwargs(self) -> dict:
        kwargs = super().function_kwargs()
        if self.bias_param is not None:
            kwargs["bias"] = self.bias_param
        return kwargs
