"""Seed methods that are more than a loss over a batch: they own models (an encoder-
decoder, two encoders, a critic) or memory, and a training step.

Layering: ``methods`` may import ``core``, ``losses``, ``engine``, ``estimators``,
``diagnostics`` and ``evaluation``; never ``train`` or ``cli``.
"""

from contrastkit.core.transport import opta, opta_passes, sinkhorn
from contrastkit.methods.beclr import (
    BECLRLoss,
    DyCE,
    beclr_loss,
    beclr_loss_terms,
    equipartition_assign,
)
from contrastkit.methods.cmim import (
    CMIM,
    MIM,
    GaussianMLPEncoder,
    MLPDecoder,
    a_mim_loss,
    bernoulli_log_prob,
    cmim_contrastive,
    gaussian_log_prob,
    informative_embeddings,
)
from contrastkit.methods.core_tuning import (
    CoreTuning,
    core_tuning_loss,
    core_tuning_pairs,
    focal_sup_con,
    mine_hard_pairs,
    mix_pairs,
    soft_label_ids,
)
from contrastkit.methods.sepclr import (
    SepCLR,
    kjem,
    sepclr_alignment,
    sepclr_information_less,
    sepclr_loss,
    sepclr_terms,
    sepclr_uniformity,
)

__all__: list[str] = [
    "CMIM",
    "MIM",
    "BECLRLoss",
    "CoreTuning",
    "DyCE",
    "GaussianMLPEncoder",
    "MLPDecoder",
    "SepCLR",
    "a_mim_loss",
    "beclr_loss",
    "beclr_loss_terms",
    "bernoulli_log_prob",
    "cmim_contrastive",
    "core_tuning_loss",
    "core_tuning_pairs",
    "equipartition_assign",
    "focal_sup_con",
    "gaussian_log_prob",
    "informative_embeddings",
    "kjem",
    "mine_hard_pairs",
    "mix_pairs",
    "opta",
    "opta_passes",
    "sepclr_alignment",
    "sepclr_information_less",
    "sepclr_loss",
    "sepclr_terms",
    "sepclr_uniformity",
    "sinkhorn",
    "soft_label_ids",
]
