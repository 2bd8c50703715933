"""Loss modules (``nn.Module``), each registered under a lowercase name.

A module stores hyperparameters and state and calls its pure function, which is in
``contrastkit.functional``.
"""

from contrastkit.losses.base import ContrastiveLoss
from contrastkit.losses.cacr import CACR
from contrastkit.losses.debcse import DebCSE
from contrastkit.losses.groco import GroCo
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
from contrastkit.losses.isogclr import ISogCLR, SogCLR
from contrastkit.losses.listwise import ListwiseWasserstein
from contrastkit.losses.m3col import M3CoL
from contrastkit.losses.multi_view import MVDHEL, MVInfoNCE, PairwiseInfoNCE
from contrastkit.losses.multicsr import MultiCSR
from contrastkit.losses.one_to_k import OneToK
from contrastkit.losses.redundancy import BarlowTwins, VICReg
from contrastkit.losses.regression import BYOL, SimSiam
from contrastkit.losses.siglip import SigLIP
from contrastkit.losses.simctg import SimCTG
from contrastkit.losses.simlap import SimLAP
from contrastkit.losses.soft_supcon import SoftSupCon
from contrastkit.losses.spectral import SpectralContrastive
from contrastkit.losses.supremix import SupReMix
from contrastkit.losses.symile import PairwiseCLIP, Symile
from contrastkit.losses.triplet import TripletMargin
from contrastkit.losses.whitened_cse import WhitenedCSE

__all__ = [
    "BYOL",
    "CACR",
    "CLIP",
    "DCL",
    "DCLW",
    "HCL",
    "MVDHEL",
    "BarlowTwins",
    "ContrastiveLoss",
    "DebCSE",
    "DebiasedInfoNCE",
    "GroCo",
    "HardContrastive",
    "ISogCLR",
    "InfoNCE",
    "ListwiseWasserstein",
    "M3CoL",
    "MVInfoNCE",
    "MoCo",
    "MultiCSR",
    "OneToK",
    "PairwiseCLIP",
    "PairwiseInfoNCE",
    "SigLIP",
    "SimCTG",
    "SimLAP",
    "SimSiam",
    "SimpleContrastive",
    "SoftSupCon",
    "SogCLR",
    "SpectralContrastive",
    "SupCon",
    "SupReMix",
    "Symile",
    "TripletMargin",
    "VICReg",
    "WhitenedCSE",
]
