"""Bad input raises ValueError/TypeError naming the argument, the value, the rule and the fix."""

from __future__ import annotations

import pytest
import torch

import contrastkit
import contrastkit.functional as F
from contrastkit.engine import MemoryQueue


def z(n=4, d=3, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_mismatched_view_shapes():
    with pytest.raises(ValueError, match=r"`views\[1\]` has shape \(5, 3\).*Fix:"):
        F.info_nce(z(4), z(5))


def test_mismatched_query_key():
    with pytest.raises(ValueError, match=r"`key` has shape \(4, 2\) but `query` has \(4, 3\)"):
        F.clip(z(4, 3), z(4, 2))


def test_too_few_views():
    with pytest.raises(ValueError, match=r"`views` holds 1 view\(s\).*at least 2 views"):
        F.info_nce(z())


def test_wrong_rank():
    with pytest.raises(ValueError, match=r"`views\[0\]` has shape \(4,\).*2-D"):
        F.info_nce(torch.randn(4), torch.randn(4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_embeddings_name_the_rows(bad):
    x = z()
    x[2, 1] = bad
    with pytest.raises(ValueError, match=r"`views\[0\]` contains NaN or inf in rows \[2\]"):
        F.info_nce(x, z(seed=1))


def test_non_finite_in_stacked_views():
    x = torch.randn(4, 2, 3)
    x[3, 1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"`embeddings` contains NaN or inf in rows \[3\]"):
        F.info_nce(x)


def test_all_zero_rows_under_cosine():
    x = z()
    x[1] = 0
    with pytest.raises(ValueError, match=r"all-zero rows \[1\].*similarity='dot'"):
        F.info_nce(x, z(seed=1))


def test_all_zero_rows_are_fine_under_dot():
    x = z()
    x[1] = 0
    assert torch.isfinite(F.info_nce(x, z(seed=1), similarity="dot"))


@pytest.mark.parametrize("t", [0.0, -0.1, float("nan"), float("inf")])
def test_temperature_must_be_positive(t):
    with pytest.raises(ValueError, match=r"`temperature` is .*finite number > 0.*temperature=0.1"):
        F.info_nce(z(), z(seed=1), temperature=t)


def test_temperature_checked_at_construction():
    with pytest.raises(ValueError, match=r"InfoNCE: `temperature` is -1"):
        contrastkit.create_loss("infonce", temperature=-1)


def test_batch_of_one():
    with pytest.raises(ValueError, match=r"batch of 1.*at least 2 samples"):
        F.info_nce(z(1), z(1, seed=1))
    with pytest.raises(ValueError, match=r"`query` has a batch of 1"):
        F.clip(z(1), z(1, seed=1))


def test_anchor_without_positive_is_named():
    labels = torch.tensor([0, 0, 1, 2])
    with pytest.raises(ValueError, match=r"anchors \[2, 3\] with no positive.*class-balanced"):
        F.sup_con(z(), labels=labels)


def test_anchor_without_negative_for_decoupled_losses():
    with pytest.raises(ValueError, match=r"no negative"):
        F.triplet_margin(z(), labels=torch.zeros(4, dtype=torch.long))


def test_labels_wrong_dtype():
    with pytest.raises(TypeError, match=r"`labels` has dtype torch.float32.*integer.*\.long\(\)"):
        F.sup_con(z(), labels=torch.zeros(4))


def test_labels_wrong_length():
    with pytest.raises(ValueError, match=r"`labels` has shape \(3,\).*one label per sample \(4\)"):
        F.sup_con(z(), labels=torch.zeros(3, dtype=torch.long))


def test_not_a_tensor():
    with pytest.raises(TypeError, match=r"`query` is a list.*torch.as_tensor"):
        F.clip([[1.0, 2.0]], z())


def test_integer_embeddings():
    with pytest.raises(TypeError, match=r"dtype torch.int64.*floating point"):
        F.info_nce(torch.ones(4, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.long))


def test_unknown_reduction():
    with pytest.raises(ValueError, match=r"`reduction` is 'avg'.*'mean', 'sum', 'none'"):
        F.info_nce(z(), z(seed=1), reduction="avg")


def test_unknown_similarity():
    with pytest.raises(ValueError, match=r"`similarity` is 'l2'.*'cosine', 'dot', 'neg_sq_l2'"):
        F.info_nce(z(), z(seed=1), similarity="l2")


def test_negatives_with_wrong_dimension():
    with pytest.raises(ValueError, match=r"`negatives` has feature dimension 2"):
        F.info_nce(z(), z(seed=1), negatives=torch.randn(5, 2))


def test_unknown_loss_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"'infonc'.*did you mean 'infonce'.*list_losses"):
        contrastkit.create_loss("infonc")


def test_unknown_loss_argument_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown arguments \['temp'\].*'temperature'"):
        contrastkit.create_loss("infonce", temp=0.1)


def test_hyperparameter_ranges():
    with pytest.raises(ValueError, match=r"`tau_plus` is 1.5.*\[0.0, 0.999\]"):
        F.hcl(z(), z(seed=1), tau_plus=1.5)
    with pytest.raises(ValueError, match=r"`sigma` is 0"):
        F.dclw(z(), z(seed=1), sigma=0)
    with pytest.raises(ValueError, match=r"`variant` is 'x'.*'paper', 'official_code'"):
        F.vicreg(z(), z(seed=1), variant="x")


def test_queue_rejects_bad_size_and_dimension():
    with pytest.raises(ValueError, match=r"`size` is 0"):
        MemoryQueue(0)
    q = MemoryQueue(8)
    q.push(z(4, 3))
    with pytest.raises(ValueError, match=r"`x` has dimension 2 but the queue holds 3"):
        q.push(z(4, 2))


def test_masked_info_nce_needs_exactly_one_pairing():
    with pytest.raises(ValueError, match=r"`positive_mask` and `index_pairs` are both given"):
        F.masked_info_nce(z())
    with pytest.raises(ValueError, match=r"`positive_mask` has shape \(4, 3\).*\(4, 5\)"):
        F.masked_info_nce(z(), z(5), positive_mask=torch.ones(4, 3, dtype=torch.bool))


def test_masked_info_nce_names_the_anchor_without_positive():
    mask = torch.eye(4, dtype=torch.bool)
    mask[1, 1] = False
    with pytest.raises(ValueError, match=r"masked_info_nce: `positive_mask` leave anchors \[1\]"):
        F.masked_info_nce(z(), z(seed=1), positive_mask=mask)


def test_mixed_view_layouts_are_rejected():
    with pytest.raises(ValueError, match=r"`views\[1\]` has shape \(4, 2, 3\).*2-D"):
        F.info_nce(z(), torch.randn(4, 2, 3))


def test_similarity_checked_at_construction():
    with pytest.raises(ValueError, match=r"DCL: `similarity` is 'euclid'.*'cosine', 'dot'"):
        contrastkit.create_loss("dcl", similarity="euclid")


def test_moco_without_any_negatives():
    with pytest.raises(ValueError, match=r"`negatives` is None and `in_batch_negatives` is False"):
        F.moco(z(), z(seed=1), negatives=None, in_batch_negatives=False)
