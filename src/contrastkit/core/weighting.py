"""How scores become a loss: the log-denominator and the positive weight of each pair.

All InfoNCE-family objectives share the per-(anchor i, positive p) term

    l_ip = - w_ip * z_ip + log D_ip,      z = similarity / temperature,

and differ only in the denominator ``D`` (negative weighting) and the weight ``w``
(positive weighting):

* ``uniform``   D_i  = sum over all valid candidates a of exp(z_ia) (SimCLR, SupCon L_out);
* ``decoupled`` D_i  = sum over negatives n of exp(z_in) (Yeh et al., DCL);
* ``own_positive`` D_ip = exp(z_ip) + sum over negatives n of exp(z_in): each positive is
  contrasted with the negatives only, the anchor's other positives left out of its
  denominator. This is SimLAP's ``multipos_ce_loss`` (Wu et al., arXiv 2410.18200;
  erow/FastSSL ``model/simlap.py``) and pytorch-metric-learning's multi-positive
  NT-Xent; with one positive per anchor it equals ``uniform``. An anchor without
  negatives gets ``l_ip = 0`` (no error: the term is well defined);
* ``debiased``  D_ip = exp(z_ip) + max((M R_i - tau_plus M exp(z_ip)) / (1 - tau_plus),
                                       M exp(-1 / temperature)),
  with M negatives and R_i = sum exp((1 + beta) z_in) / sum exp(beta z_in) their
  importance-weighted mean. beta = 0 is Chuang et al. (2020); beta > 0 is Robinson et
  al.'s hard-negative HCL (2021); tau_plus = beta = 0 reduces to ``uniform`` for one positive.
* positive weight ``vmf``: w_ip = 2 - exp(s_ip / sigma) / mean over positive pairs of
  exp(s / sigma) (DCLW), on the raw similarity s; ``uniform``: w = 1.

Soft / graded positives (``Pairs.weight``, see ``core.pairs``) are a separate, per-pair
average: anchor i's loss is ``sum_p a_ip l_ip / sum_p a_ip`` with ``a_ip`` in [0, 1]
(SupCon L_out with a soft mask, as SPACE-2 uses it), instead of the plain mean over its
positives; they combine with any of the denominators and positive weights above.
"""

from __future__ import annotations

import math

import torch

from contrastkit.core.logits import masked_logsumexp

NEGATIVE_WEIGHTINGS = ("uniform", "decoupled", "debiased", "own_positive")
POSITIVE_WEIGHTINGS = ("uniform", "vmf")


def log_denominator(
    z: torch.Tensor,
    positive: torch.Tensor,
    valid: torch.Tensor,
    weighting: str,
    *,
    beta: float = 0.0,
    tau_plus: float = 0.0,
    scale=1.0,
) -> torch.Tensor:
    """``log D`` broadcastable to ``(N, M)``: per row for uniform/decoupled, per pair else
    (debiased, own_positive)."""
    if weighting == "uniform":
        return masked_logsumexp(z, valid, keepdim=True)
    negative = valid & ~positive
    if weighting == "decoupled":
        return masked_logsumexp(z, negative, keepdim=True)
    if weighting == "own_positive":
        return torch.logaddexp(z, masked_logsumexp(z, negative, keepdim=True))
    return _debiased_log_denominator(z, negative, beta, tau_plus, scale)


def _debiased_log_denominator(z, negative, beta, tau_plus, scale):
    log_m = negative.sum(1, keepdim=True).to(z.dtype).log()
    # x = log(M R_i): the importance-weighted negative mass.
    if beta == 0:
        x = masked_logsumexp(z, negative, keepdim=True)
    else:
        x = log_m + masked_logsumexp((1 + beta) * z, negative, keepdim=True)
        x = x - masked_logsumexp(beta * z, negative, keepdim=True)
    floor = log_m - scale  # log(M exp(-1/temperature)); Chuang's clamp for cosine in [-1, 1]
    if tau_plus == 0:
        log_ng = torch.maximum(x, floor)
    else:
        # log((e^x - e^y) / (1 - tau_plus)) with y = log(tau_plus M) + z_ip, shifted by c so
        # every exponent is <= 0; below the floor (or e^x <= e^y) the clamp takes over.
        y = math.log(tau_plus) + log_m + z
        c = torch.maximum(x, y).detach()
        diff = (x - c).exp() - (y - c).exp()
        above = diff > 0
        log_diff = c + torch.where(above, diff, torch.ones_like(diff)).log()
        log_ng = torch.where(above, log_diff - math.log1p(-tau_plus), floor.expand_as(z))
        log_ng = torch.maximum(log_ng, floor)
    return torch.logaddexp(z, log_ng)


def vmf_weights(
    pos_similarity: torch.Tensor, positive: torch.Tensor, sigma: float, all_reduce=None
):
    """DCLW's von Mises-Fisher positive weights ``2 - exp(s/sigma) / mean(exp(s/sigma))``.

    The mean runs over all positive pairs of the batch (for two views: over the N samples,
    as in the paper), shifted by the largest exponent so nothing overflows at small sigma.
    ``all_reduce(tensor, op)`` ("max" / "sum") extends the batch over processes.
    """
    logits = (pos_similarity / sigma).masked_fill(~positive, float("-inf"))
    top = logits.max()
    count = positive.sum().to(logits.dtype)
    if all_reduce is not None:
        top = all_reduce(top, "max")
    e = torch.exp(logits - top)
    total = e.sum()
    if all_reduce is not None:
        total, count = all_reduce(total, "sum"), all_reduce(count, "sum")
    return 2 - count * e / total
