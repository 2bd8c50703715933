"""Pure loss functions: tensors in, loss out, no state."""

from contrastkit.losses.hardness_aware import hard_contrastive, simple_contrastive
from contrastkit.losses.info_nce import (
    clip,
    dcl,
    dclw,
    debiased_info_nce,
    hcl,
    info_nce,
    masked_info_nce,
    moco,
    nt_xent,
    sup_con,
)
from contrastkit.losses.redundancy import barlow_twins, vicreg
from contrastkit.losses.regression import normalized_regression
from contrastkit.losses.siglip import siglip
from contrastkit.losses.triplet import triplet_margin

__all__ = [
    "barlow_twins",
    "clip",
    "dcl",
    "dclw",
    "debiased_info_nce",
    "hard_contrastive",
    "hcl",
    "info_nce",
    "masked_info_nce",
    "moco",
    "normalized_regression",
    "nt_xent",
    "siglip",
    "simple_contrastive",
    "sup_con",
    "triplet_margin",
    "vicreg",
]
