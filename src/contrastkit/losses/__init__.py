"""Loss modules (``nn.Module``), each registered under a lowercase name.

A module stores hyperparameters and state and calls its pure function, which is in
``contrastkit.functional``.
"""

from contrastkit.losses.base import ContrastiveLoss
from contrastkit.losses.hardness_aware import HardContrastive, SimpleContrastive
from contrastkit.losses.info_nce import (
    CLIP,
    DCL,
    DCLW,
    HCL,
    DebiasedInfoNCE,
    InfoNCE,
    MoCo,
    SupCon,
)
from contrastkit.losses.redundancy import BarlowTwins, VICReg
from contrastkit.losses.regression import BYOL, SimSiam
from contrastkit.losses.siglip import SigLIP
from contrastkit.losses.triplet import TripletMargin

__all__ = [
    "BYOL",
    "CLIP",
    "DCL",
    "DCLW",
    "HCL",
    "BarlowTwins",
    "ContrastiveLoss",
    "DebiasedInfoNCE",
    "HardContrastive",
    "InfoNCE",
    "MoCo",
    "SigLIP",
    "SimSiam",
    "SimpleContrastive",
    "SupCon",
    "TripletMargin",
    "VICReg",
]
