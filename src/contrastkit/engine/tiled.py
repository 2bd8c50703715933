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
AUTO_TILE_ENTRIES = 2048 * 2048  # above this many logits the tiled path is faster (bench)
DEFAULT_TILE = 1024


def _excluded(akeys, ckeys, r0, c0, self_offset, decoupled, positives_only):
    """Which logits of one block leave the denominator (None: none of them). Only blocks
    that hold an anchor's own column, or decoupled / positives-only runs, need a mask."""
    n, m = akeys.shape[0], ckeys.shape[0]
    excluded = None
    if decoupled or positives_only > c0:
        positive = akeys[:, None] == ckeys[None, :]
        if decoupled:
            excluded = positive
        if positives_only > c0:
            cols = torch.arange(c0, c0 + m, device=akeys.device)
            in_batch = (cols < positives_only)[None, :] & ~positive
            excluded = in_batch if excluded is None else excluded | in_batch
    if self_offset is not None and r0 + self_offset < c0 + m and c0 < r0 + self_offset + n:
        rows = torch.arange(r0, r0 + n, device=akeys.device) + self_offset
        itself = rows[:, None] == torch.arange(c0, c0 + m, device=akeys.device)[None, :]
        excluded = itself if excluded is None else excluded | itself
    return excluded


def _masked(z, excluded):
    return z if excluded is None else z.masked_fill(excluded, float("-inf"))


def _positive_sums(anchors, candidates, akeys, ckeys, self_offset):
    """Per anchor, the sum of its positive candidates' vectors and their count, from
    per-key sums of the candidates (O((N + M) D), no N x M mask): positives are linear."""
    keys, inverse = torch.unique(torch.cat([akeys, ckeys]), return_inverse=True)
    a_idx, c_idx = inverse[: akeys.shape[0]], inverse[akeys.shape[0] :]
    per_key = candidates.new_zeros(keys.shape[0], candidates.shape[1])
    per_key.index_add_(0, c_idx, candidates)
    counts = torch.bincount(c_idx, minlength=keys.shape[0])
    pos_vec, n_pos = per_key[a_idx], counts[a_idx]
    if self_offset is not None:  # an anchor is not its own positive
        pos_vec = pos_vec - candidates[self_offset : self_offset + akeys.shape[0]]
        n_pos = n_pos - 1
    return pos_vec, n_pos, (a_idx, c_idx, keys.shape[0])


def _block_backward(g, z, a, c, scale, want_scale, d_a, d_c):
    """Push one block's ``d loss / d z`` into the row and column gradients (in place) and
    return its share of the temperature gradient (skipped when the temperature is fixed)."""
    d_scale = (g * z).sum() / scale if want_scale else 0.0
    g = g * scale
    d_a += g @ c
    d_c += g.T @ a
    return d_scale


class _TiledInfoNCE(torch.autograd.Function):
    """Forward: per-anchor ``lse - scale a.pos_vec / n_pos``. With ``symmetric`` (anchors
    are the candidates, NT-Xent) only blocks on and above the diagonal are computed: the
    transposed block serves the mirror rows."""

    @staticmethod
    def forward(ctx, anchors, candidates, scale, akeys, ckeys, options):
        self_offset, decoupled, positives_only, tile, symmetric = options
        n, m = anchors.shape[0], candidates.shape[0]
        pos_vec, n_pos, key_index = _positive_sums(anchors, candidates, akeys, ckeys, self_offset)
        excl_args = (self_offset, decoupled, positives_only)
        lse = anchors.new_full((n,), float("-inf"))
        n_excluded = torch.zeros(n, dtype=torch.long, device=anchors.device)
        for r0 in range(0, n, tile):
            r1 = min(r0 + tile, n)
            a = anchors[r0:r1] * scale
            for c0 in range(r0 if symmetric else 0, m, tile):
                c1 = min(c0 + tile, m)
                z = a @ candidates[c0:c1].T  # the one product of forward
                excl = _excluded(akeys[r0:r1], ckeys[c0:c1], r0, c0, *excl_args)
                z = _masked(z, excl)
                lse[r0:r1] = torch.logaddexp(lse[r0:r1], torch.logsumexp(z, 1))
                if excl is not None:
                    n_excluded[r0:r1] += excl.sum(1)
                if symmetric and c0 != r0:  # the mirror block (rows c0:c1, columns r0:r1)
                    lse[c0:c1] = torch.logaddexp(lse[c0:c1], torch.logsumexp(z, 0))
                    if excl is not None:
                        n_excluded[c0:c1] += excl.sum(0)
        pos_mean = scale * (anchors * pos_vec).sum(1) / n_pos.clamp_min(1)
        ctx.save_for_backward(anchors, candidates, scale, akeys, ckeys, lse, pos_vec, n_pos)
        ctx.key_index = key_index
        ctx.options = options
        return lse - pos_mean, n_pos, m - n_excluded - n_pos * (not decoupled)

    @staticmethod
    def backward(ctx, grad, _grad_n_pos, _grad_n_neg):
        anchors, candidates, scale, akeys, ckeys, lse, pos_vec, n_pos = ctx.saved_tensors
        self_offset, decoupled, positives_only, tile, symmetric = ctx.options
        excl_args = (self_offset, decoupled, positives_only)
        want_scale = ctx.needs_input_grad[2]
        n, m = anchors.shape[0], candidates.shape[0]
        d_anchors = torch.zeros_like(anchors)
        d_candidates = torch.zeros_like(candidates)
        d_scale = scale.new_zeros(())
        for r0 in range(0, n, tile):
            r1 = min(r0 + tile, n)
            a = anchors[r0:r1]
            a_scaled = a * scale
            for c0 in range(r0 if symmetric else 0, m, tile):
                c1 = min(c0 + tile, m)
                c = candidates[c0:c1]
                z = a_scaled @ c.T  # recomputed block logits
                excl = _excluded(akeys[r0:r1], ckeys[c0:c1], r0, c0, *excl_args)
                zm = _masked(z, excl)
                g = torch.exp(zm - lse[r0:r1, None]) * grad[r0:r1, None]  # softmax part
                if symmetric and c0 != r0:
                    g = g + torch.exp(zm - lse[None, c0:c1]) * grad[None, c0:c1]
                d_scale += _block_backward(
                    g, z, a, c, scale, want_scale, d_anchors[r0:r1], d_candidates[c0:c1]
                )
        # The positive term -scale a_i . pos_vec_i / n_pos_i, differentiated directly.
        w = grad / n_pos.clamp_min(1).to(grad.dtype)  # (N,)
        d_scale -= (w * (anchors * pos_vec).sum(1)).sum()
        d_anchors -= scale * w[:, None] * pos_vec
        a_idx, c_idx, n_keys = ctx.key_index
        per_key = anchors.new_zeros(n_keys, anchors.shape[1]).index_add_(
            0, a_idx, w[:, None] * anchors
        )
        d_pos = per_key[c_idx]
        if self_offset is not None:
            d_pos[self_offset : self_offset + n] -= w[:, None] * anchors
        d_candidates -= scale * d_pos
        if symmetric:  # anchors and candidates are one tensor: hand back the total once
            d_anchors, d_candidates = d_anchors + d_candidates, None
        return d_anchors, d_candidates, d_scale, None, None, None


class _TiledTwoWay(torch.autograd.Function):
    """Symmetric two-tower InfoNCE (CLIP) in one walk over the blocks of ``q k^T``: rows
    give the query->key log-sum-exp, columns the key->query one, so each block's product
    is computed once in forward and once in backward for both directions."""

    @staticmethod
    def forward(ctx, q, k, scale, keys, tile):
        n = q.shape[0]
        pos_q, n_pos, key_index = _positive_sums(q, k, keys, keys, None)
        pos_k = _positive_sums(k, q, keys, keys, None)[0]
        lse_q = q.new_full((n,), float("-inf"))
        lse_k = q.new_full((n,), float("-inf"))
        for r0 in range(0, n, tile):
            r1 = min(r0 + tile, n)
            a = q[r0:r1] * scale
            for c0 in range(0, n, tile):
                c1 = min(c0 + tile, n)
                z = a @ k[c0:c1].T
                lse_q[r0:r1] = torch.logaddexp(lse_q[r0:r1], torch.logsumexp(z, 1))
                lse_k[c0:c1] = torch.logaddexp(lse_k[c0:c1], torch.logsumexp(z, 0))
        inv = 1.0 / n_pos.clamp_min(1).to(q.dtype)
        loss_q = lse_q - scale * (q * pos_q).sum(1) * inv
        loss_k = lse_k - scale * (k * pos_k).sum(1) * inv
        ctx.save_for_backward(q, k, scale, lse_q, lse_k, pos_q, pos_k, inv)
        ctx.key_index, ctx.tile = key_index, tile
        return 0.5 * (loss_q + loss_k), n_pos

    @staticmethod
    def backward(ctx, grad, _grad_n_pos):
        q, k, scale, lse_q, lse_k, pos_q, pos_k, inv = ctx.saved_tensors
        tile, n = ctx.tile, q.shape[0]
        want_scale = ctx.needs_input_grad[2]
        half = 0.5 * grad
        d_q, d_k = torch.zeros_like(q), torch.zeros_like(k)
        d_scale = scale.new_zeros(())
        for r0 in range(0, n, tile):
            r1 = min(r0 + tile, n)
            a = q[r0:r1]
            a_scaled = a * scale
            for c0 in range(0, n, tile):
                c1 = min(c0 + tile, n)
                c = k[c0:c1]
                z = a_scaled @ c.T
                g = torch.exp(z - lse_q[r0:r1, None]) * half[r0:r1, None]
                g = g + torch.exp(z - lse_k[None, c0:c1]) * half[None, c0:c1]
                d_scale += _block_backward(g, z, a, c, scale, want_scale, d_q[r0:r1], d_k[c0:c1])
        # Positive terms of both directions: -scale q_i.pos_q_i / n_pos, -scale k_j.pos_k_j / n_pos.
        w = half * inv
        d_scale -= (w * ((q * pos_q).sum(1) + (k * pos_k).sum(1))).sum()
        a_idx, c_idx, n_keys = ctx.key_index
        sum_wq = q.new_zeros(n_keys, q.shape[1]).index_add_(0, a_idx, w[:, None] * q)
        sum_wk = k.new_zeros(n_keys, k.shape[1]).index_add_(0, a_idx, w[:, None] * k)
        d_q -= scale * (w[:, None] * pos_q + sum_wk[c_idx])
        d_k -= scale * (w[:, None] * pos_k + sum_wq[c_idx])
        return d_q, d_k, d_scale, None, None


def tiled_clip(q, k, keys, *, scale, tile_size=DEFAULT_TILE, owner="clip"):
    """Per-pair mean of the query->key and key->query InfoNCE (CLIP), tiled in one walk."""
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        _fail(owner, "tile_size", f"is {tile_size!r}", "it must be an int >= 1", "pass e.g. 1024")
    scale_t = torch.as_tensor(scale, dtype=q.dtype, device=q.device)
    per_pair, n_pos = _TiledTwoWay.apply(q, k, scale_t, keys, tile_size)
    check_has_positive((n_pos > 0)[:, None], owner, NO_POSITIVE_HINT, "labels")
    return per_pair


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
    symmetric = candidates is anchors and self_offset == 0 and positives_only == 0
    per_anchor, n_pos, n_neg = _TiledInfoNCE.apply(
        anchors,
        candidates,
        scale_t,
        anchor_keys,
        candidate_keys,
        (self_offset, decoupled, positives_only, tile_size, symmetric),
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
