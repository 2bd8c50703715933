"""Second references: the peer libraries' values on the same inputs (float64, 1e-5).

pytorch-metric-learning is a dev dependency. lightly and open_clip need torchvision at
package import, which this project does not install, so `make install` adds them with
``--no-deps`` and the single loss files are loaded from their install folder (their own
imports are torch-only). Each test skips, with the reason, when its peer is absent.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch

import contrastkit.functional as F

impls = pytest.importorskip("benchmarks.impls")

N, D = 8, 6


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def package_root(package: str) -> str:
    """Install folder of a package (the benchmark's loader), or skip with the reason."""
    try:
        return impls.package_root(package)
    except impls.PeerUnavailable as e:
        pytest.skip(str(e))


def load_file(package: str, relpath: str, module_name: str):
    """One file of an installed package as its own module (the benchmark's loader)."""
    package_root(package)
    return impls.load_file(package, relpath, module_name)


def lightly_module(relpath: str, name: str):
    # lightly.utils.dist is torch-only; register stub parents so `from lightly.utils import
    # dist` resolves without importing lightly/__init__ (which needs torchvision).
    if "lightly.utils.dist" not in sys.modules:
        root = package_root("lightly")
        for parent, folder in (("lightly", root), ("lightly.utils", f"{root}/utils")):
            stub = types.ModuleType(parent)
            stub.__path__ = [folder]
            sys.modules.setdefault(parent, stub)
        dist = load_file("lightly", "utils/dist.py", "lightly.utils.dist")
        sys.modules["lightly.utils"].dist = dist
    return load_file("lightly", relpath, name)


@pytest.fixture
def z():
    return randn(N, D, seed=0), randn(N, D, seed=1)


def test_nt_xent_matches_pytorch_metric_learning(z):
    pml = pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import losses, reducers

    loss = losses.NTXentLoss(temperature=0.2, reducer=reducers.MeanReducer())
    ours = F.info_nce(*z, temperature=0.2)
    theirs = losses.SelfSupervisedLoss(loss, symmetric=True)(*z)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    assert pml.__version__


def test_sup_con_matches_pytorch_metric_learning(z):
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import losses, reducers

    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    loss = losses.SupConLoss(temperature=0.1, reducer=reducers.MeanReducer())
    torch.testing.assert_close(
        F.sup_con(z[0], labels=labels, temperature=0.1), loss(z[0], labels), rtol=1e-5, atol=1e-7
    )


def test_batch_hard_triplet_matches_pytorch_metric_learning(z):
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import losses, miners, reducers

    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    miner = miners.BatchHardMiner()
    loss = losses.TripletMarginLoss(margin=0.2, reducer=reducers.MeanReducer())
    theirs = loss(z[0], labels, miner(z[0], labels))
    ours = F.triplet_margin(z[0], labels=labels, margin=0.2)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_vicreg_official_code_variant_matches_pytorch_metric_learning(z):
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning import losses

    theirs = losses.VICRegLoss()(z[0], ref_emb=z[1])
    torch.testing.assert_close(F.vicreg(*z, variant="official_code"), theirs, rtol=1e-5, atol=1e-7)


def test_dcl_and_dclw_match_lightly(z):
    mod = lightly_module("loss/dcl_loss.py", "_peer_lightly_dcl")
    torch.testing.assert_close(
        F.dcl(*z, temperature=0.1), mod.DCLLoss(temperature=0.1)(*z), rtol=1e-5, atol=1e-7
    )
    torch.testing.assert_close(
        F.dclw(*z, temperature=0.1, sigma=0.5),
        mod.DCLWLoss(temperature=0.1, sigma=0.5)(*z),
        rtol=1e-5,
        atol=1e-7,
    )


def test_barlow_twins_matches_lightly(z):
    mod = lightly_module("loss/barlow_twins_loss.py", "_peer_lightly_barlow")
    theirs = mod.BarlowTwinsLoss(lambda_param=5e-3)(*z)
    torch.testing.assert_close(F.barlow_twins(*z, lambd=5e-3), theirs, rtol=1e-5, atol=1e-7)


def test_vicreg_official_code_variant_matches_lightly(z):
    mod = lightly_module("loss/vicreg_loss.py", "_peer_lightly_vicreg")
    theirs = mod.VICRegLoss()(*z)
    torch.testing.assert_close(F.vicreg(*z, variant="official_code"), theirs, rtol=1e-5, atol=1e-7)


def test_simsiam_matches_lightly_negative_cosine(z):
    mod = lightly_module("loss/negative_cosine_similarity.py", "_peer_lightly_negcos")
    theirs = mod.NegativeCosineSimilarity()(z[0], z[1])
    torch.testing.assert_close(F.normalized_regression(*z, form="simsiam"), theirs)


def _unit(x):
    return torch.nn.functional.normalize(x, dim=-1)


def test_clip_matches_open_clip(z):
    mod = load_file("open_clip", "loss.py", "_peer_open_clip_loss")
    t = 0.07
    theirs = mod.ClipLoss()(_unit(z[0]), _unit(z[1]), logit_scale=torch.tensor(1 / t))
    torch.testing.assert_close(F.clip(*z, temperature=t), theirs, rtol=1e-5, atol=1e-7)


def test_siglip_matches_open_clip(z):
    mod = load_file("open_clip", "loss.py", "_peer_open_clip_loss")
    theirs = mod.SigLipLoss()(
        _unit(z[0]), _unit(z[1]), logit_scale=torch.tensor(10.0), logit_bias=torch.tensor(-10.0)
    )
    ours = F.siglip(*z, temperature=0.1, bias=-10.0)
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-5, atol=1e-7)
