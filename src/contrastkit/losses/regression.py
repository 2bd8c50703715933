"""Normalised regression of a prediction onto a stop-gradient target (BYOL, SimSiam)."""

from __future__ import annotations

import torch.nn.functional as F

from contrastkit.core.reduction import reduce
from contrastkit.core.validation import check_choice, check_embeddings, check_same_shape
from contrastkit.losses._inputs import working_dtype
from contrastkit.losses.base import ContrastiveLoss
from contrastkit.registry import register_loss

FORMS = ("byol", "simsiam")


def normalized_regression(prediction, target, *, form="byol", stop_gradient=True, reduction="mean"):
    """``byol``: ``|p/|p| - z/|z||^2 = 2 - 2 cos(p, z)`` (Grill et al., NeurIPS 2020, eq. 2);
    ``simsiam``: ``-cos(p, z)`` (Chen & He, CVPR 2021, eq. 1). The target is detached
    (``stop_gradient``) as both papers require. Symmetrise by calling it twice with the
    views swapped; the training loop does that.
    """
    owner = "normalized_regression"
    check_choice(form, owner, "form", FORMS)
    check_embeddings(prediction, owner, "prediction")
    check_embeddings(target, owner, "target")
    check_same_shape(prediction, target, owner, ("prediction", "target"))
    dtype = working_dtype(prediction, target)
    if stop_gradient:
        target = target.detach()
    cos = F.cosine_similarity(prediction.to(dtype), target.to(dtype), dim=-1, eps=1e-12)
    per_sample = 2 - 2 * cos if form == "byol" else -cos
    return reduce(per_sample, reduction, owner)


class _NormalizedRegression(ContrastiveLoss):
    inputs = "prediction"
    function = staticmethod(normalized_regression)
    form = "byol"

    def __init__(self, stop_gradient=True, reduction="mean"):
        super().__init__()
        self._init_reduction(reduction)
        self.stop_gradient = bool(stop_gradient)

    def function_kwargs(self) -> dict:
        return {**super().function_kwargs(), "form": self.form}


@register_loss(
    "byol",
    summary="2 - 2 cos(prediction, stop-gradient target)",
    paper="Grill et al. 2020, Bootstrap Your Own Latent (BYOL)",
)
class BYOL(_NormalizedRegression):
    """BYOL's normalised regression loss; see :func:`normalized_regression`."""

    form = "byol"


@register_loss(
    "simsiam",
    summary="-cos(prediction, stop-gradient target)",
    paper="Chen & He 2021, Exploring Simple Siamese Representation Learning (SimSiam)",
)
class SimSiam(_NormalizedRegression):
    """SimSiam's negative cosine loss; see :func:`normalized_regression`."""

    form = "simsiam"
