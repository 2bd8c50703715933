"""Pure loss functions: tensors in, loss out, no state."""

from contrastkit.losses.cacr import cacr
from contrastkit.losses.debcse import (
    debcse,
    debcse_propensity,
    debcse_select,
    debcse_weights,
)
from contrastkit.losses.groco import groco
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
from contrastkit.losses.isogclr import (
    global_contrastive_objective,
    isogclr,
    isogclr_update,
    sogclr,
    sogclr_update,
)
from contrastkit.losses.listwise import listwise_wasserstein
from contrastkit.losses.m3col import m3col
from contrastkit.losses.multi_view import mv_dhel, mv_info_nce, pairwise_info_nce
from contrastkit.losses.multicsr import false_negative_mask, multicsr
from contrastkit.losses.one_to_k import one_to_k
from contrastkit.losses.redundancy import barlow_twins, vicreg
from contrastkit.losses.regression import normalized_regression
from contrastkit.losses.siglip import siglip
from contrastkit.losses.simctg import next_token_nll, simctg, simctg_contrastive
from contrastkit.losses.simlap import simlap
from contrastkit.losses.soft_supcon import soft_sup_con
from contrastkit.losses.spectral import spectral_contrastive
from contrastkit.losses.supremix import supremix, supremix_mix_ratios
from contrastkit.losses.symile import (
    pairwise_clip,
    pairwise_clip_scores,
    symile,
    symile_permutations,
    symile_scores,
)
from contrastkit.losses.triplet import triplet_margin
from contrastkit.losses.whitened_cse import (
    shuffled_group_whitening,
    whitened_cse,
    whitened_cse_objective,
    whitened_views,
)

__all__ = [
    "barlow_twins",
    "cacr",
    "clip",
    "dcl",
    "debcse",
    "debcse_propensity",
    "debcse_select",
    "debcse_weights",
    "dclw",
    "debiased_info_nce",
    "false_negative_mask",
    "global_contrastive_objective",
    "groco",
    "hard_contrastive",
    "hcl",
    "info_nce",
    "isogclr",
    "isogclr_update",
    "listwise_wasserstein",
    "m3col",
    "masked_info_nce",
    "moco",
    "multicsr",
    "mv_dhel",
    "mv_info_nce",
    "next_token_nll",
    "normalized_regression",
    "nt_xent",
    "one_to_k",
    "pairwise_clip",
    "pairwise_clip_scores",
    "pairwise_info_nce",
    "shuffled_group_whitening",
    "siglip",
    "simctg",
    "simctg_contrastive",
    "simlap",
    "simple_contrastive",
    "soft_sup_con",
    "sogclr",
    "sogclr_update",
    "spectral_contrastive",
    "sup_con",
    "supremix",
    "supremix_mix_ratios",
    "symile",
    "symile_permutations",
    "symile_scores",
    "triplet_margin",
    "vicreg",
    "whitened_cse",
    "whitened_cse_objective",
    "whitened_views",
]
