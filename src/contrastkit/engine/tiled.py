"""Tiled InfoNCE: the uniform and decoupled members of the core in row x column blocks.

The per-anchor loss of ``core.contrast`` with one denominator per row is

    l_i = lse_i - (1 / |P(i)|) sum_{p in P(i)} z_ip,      z = scale * a_i . c_j,

where ``lse_i`` runs over the valid candidates of anchor i (all but itself; for the
decoupled loss also without its positives). Forward walks over ``tile x tile`` blocks and
keeps only ``lse``, the positive sums and counts (O(N) floats); backward recomputes each
block's logits and uses ``d l_i / d z_ij = softmax_ij - 1[j in P(i)] / |P(i)|``. No
``N x M`` matrix is ever held: memory is O(N D + M D + tile^2).

Pairs are given by integer keys instead of masks: candidate j is a positive of anchor i
when ``anchor_keys[i] == candidate_keys[j]``, except anchor i itself, which is candidate
``i + self_offset`` when the anchors are a slice of the candidates (``self_offset=None``:
they are not). Views of one sample share its index as key,
classes share their label, two towers use ``arange``; extra negatives get key -1.
"""

from __future__ import annotations

import torch

from contrastkit.core.validation import _fail, check_has_negative, check_has_positive

NO_POSITIVE_HINT = (
    "give every class at least two samples in the batch (a class-balanced sampler), "
    "or pass two or more views per sample"
)
AUTO_TILE_ENTRIES = 8192 * 8192  # above this many logits, auto-selection tiles
DEFAULT_TILE = 1024


def _block_masks(akeys, ckeys, r0, c0, self_offset, decoupled, positives_only):
    """Positive and excluded masks of one block. The first ``positives_only`` candidates
    may only be positives (MoCo without in-batch negatives)."""
    positive = akeys[:, None] == ckeys[None, :]
    excluded = torch.zeros_like(positive)
    if positives_only > c0:
        cols = torch.arange(c0, c0 + ckeys.shape[0], device=akeys.device)
        excluded = (cols < positives_only)[None, :] & ~positive
    if self_offset is not None:
        rows = torch.arange(r0, r0 + akeys.shape[0], device=akeys.device) + self_offset
        cols = torch.arange(c0, c0 + ckeys.shape[0], device=akeys.device)
        itself = rows[:, None] == cols[None, :]
        positive &= ~itself
        excluded |= itself
    if decoupled:
        excluded = excluded | positive
    return positive, excluded


class _TiledInfoNCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, anchors, candidates, scale, akeys, ckeys, options):
        self_offset, decoupled, positives_only, tile = options
        n, m = anchors.shape[0], candidates.shape[0]
        lse = anchors.new_full((n,), float("-inf"))
        pos_sum = anchors.new_zeros(n)
        n_pos = torch.zeros(n, dtype=torch.long, device=anchors.device)
        n_neg = torch.zeros(n, dtype=torch.long, device=anchors.device)
        for r0 in range(0, n, tile):
            r1 = min(r0 + tile, n)
            a = anchors[r0:r1] * scale
            for c0 in range(0, m, tile):
                c1 = min(c0 + tile, m)
                z = a @ candidates[c0:c1].T  # (tile, tile): the one product of forward
                pos, excl = _block_masks(
                    akeys[r0:r1], ckeys[c0:c1], r0, c0, self_offset, decoupled, positives_only
                )
                pos_sum[r0:r1] += torch.where(pos, z, 0).sum(1)
                n_pos[r0:r1] += pos.sum(1)
                n_neg[r0:r1] += (~(pos | excl)).sum(1)
                block = torch.logsumexp(z.masked_fill(excl, float("-inf")), 1)
                lse[r0:r1] = torch.logaddexp(lse[r0:r1], block)
        ctx.save_for_backward(anchors, candidates, scale, akeys, ckeys, lse, n_pos)
        ctx.options = options
        return lse - pos_sum / n_pos.clamp_min(1), n_pos, n_neg

    @staticmethod
    def backward(ctx, grad, _grad_n_pos, _grad_n_neg):
        anchors, candidates, scale, akeys, ckeys, lse, n_pos = ctx.saved_tensors
        self_offset, decoupled, positives_only, tile = ctx.options
        n, m = anchors.shape[0], candidates.shape[0]
        d_anchors = torch.zeros_like(anchors)
        d_candidates = torch.zeros_like(candidates)
        d_scale = scale.new_zeros(())
        inv_pos = 1.0 / n_pos.clamp_min(1).to(anchors.dtype)
        for r0 in range(0, n, tile):
            r1 = min(r0 + tile, n)
            a = anchors[r0:r1]
            a_scaled = a * scale
            for c0 in range(0, m, tile):
                c1 = min(c0 + tile, m)
                c = candidates[c0:c1]
                z = a_scaled @ c.T  # recomputed block logits
                pos, excl = _block_masks(
                    akeys[r0:r1], ckeys[c0:c1], r0, c0, self_offset, decoupled, positives_only
                )
                soft = torch.exp(z.masked_fill(excl, float("-inf")) - lse[r0:r1, None])
                g = (soft - pos * inv_pos[r0:r1, None]) * grad[r0:r1, None]  # d loss / d z
                d_scale += (g * z).sum() / scale
                g = g * scale
                d_anchors[r0:r1] += g @ c
                d_candidates[c0:c1] += g.T @ a
        return d_anchors, d_candidates, d_scale, None, None, None


def tiled_contrast(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    anchor_keys: torch.Tensor,
    candidate_keys: torch.Tensor,
    *,
    scale,
    self_offset: int | None,
    decoupled: bool = False,
    positives_only: int = 0,
    tile_size: int = DEFAULT_TILE,
    owner: str = "info_nce",
    pairs_arg: str = "labels",
) -> torch.Tensor:
    """Per-anchor InfoNCE (uniform or decoupled denominator) of prepared embeddings,
    computed in blocks; equals ``core.contrast`` with the masks the keys describe.

    ``scale`` (1 / temperature) may be a float or a 0-d tensor that receives a gradient.
    ``positives_only`` marks the first candidates as usable only as positives.
    Returns the ``(N,)`` per-anchor losses (reduce them with ``core.reduction.reduce``).
    """
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        _fail(owner, "tile_size", f"is {tile_size!r}", "it must be an int >= 1", "pass e.g. 1024")
    scale_t = torch.as_tensor(scale, dtype=anchors.dtype, device=anchors.device)
    per_anchor, n_pos, n_neg = _TiledInfoNCE.apply(
        anchors,
        candidates,
        scale_t,
        anchor_keys,
        candidate_keys,
        (self_offset, decoupled, positives_only, tile_size),
    )
    check_has_positive((n_pos > 0)[:, None], owner, NO_POSITIVE_HINT, pairs_arg)
    if decoupled:
        check_has_negative((n_neg > 0)[:, None], owner, "pass a larger batch", pairs_arg)
    return per_anchor


def resolve_tile(tile_size, n: int, m: int, supported: bool, owner: str, why: str):
    """``tile_size`` None: tile (at ``DEFAULT_TILE``) when ``n * m`` exceeds
    ``AUTO_TILE_ENTRIES`` and the configuration is supported; 0: never; an int: always
    (an unsupported configuration then raises, naming ``why``). Returns the tile or None."""
    if tile_size is None:
        return DEFAULT_TILE if supported and n * m > AUTO_TILE_ENTRIES else None
    if tile_size == 0:
        return None
    if not supported:
        _fail(
            owner,
            "tile_size",
            f"is {tile_size!r} but {why}",
            "the tiled path covers the uniform and decoupled InfoNCE family",
            "pass tile_size=None (auto) or 0 to use the plain path",
        )
    return tile_size
