"""Slow, obviously correct loop references written from each paper's formula.

Every function loops over anchors and candidates with scalar tensor arithmetic (so
autograd gives reference gradients too) and shares no code with the library.
"""

from __future__ import annotations

import math

import torch


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def dot(a, b):
    return (a * b).sum()


def sim(a, b, similarity):
    if similarity == "cosine":
        return dot(unit(a), unit(b))
    if similarity == "dot":
        return dot(a, b)
    return -((a - b) ** 2).sum()


def flatten_views(views):
    """View-major rows: row v * N + i is view v of sample i; returns rows and sample ids."""
    n = views[0].shape[0]
    rows = [views[v][i] for v in range(len(views)) for i in range(n)]
    ids = [i for v in range(len(views)) for i in range(n)]
    return rows, ids


def log_sum_exp(values):
    m = max(float(v.detach()) for v in values)
    return m + torch.log(sum(torch.exp(v - m) for v in values))


def info_nce(views, t, labels=None, negatives=None, similarity="cosine", mode="uniform", sigma=0.5):
    """NT-Xent / SupCon L_out / DCL / DCLW, written per anchor and per positive."""
    rows, ids = flatten_views(views)
    keys = ids if labels is None else [int(labels[i]) for i in ids]
    extra = [] if negatives is None else list(negatives)
    # DCLW weights: 2 - exp(s_p / sigma) / mean over all positive pairs (detached).
    pos_pairs = [
        (i, j) for i in range(len(rows)) for j in range(len(rows)) if i != j and keys[i] == keys[j]
    ]
    pos_sims = {p: float(sim(rows[p[0]], rows[p[1]], similarity)) for p in pos_pairs}
    mean_exp = sum(math.exp(s / sigma) for s in pos_sims.values()) / len(pos_sims)
    losses = []
    for i in range(len(rows)):
        positives = [j for j in range(len(rows)) if j != i and keys[j] == keys[i]]
        negatives_i = [rows[j] for j in range(len(rows)) if keys[j] != keys[i]] + extra
        others = [rows[j] for j in range(len(rows)) if j != i] + extra
        terms = []
        for p in positives:
            s_ip = sim(rows[i], rows[p], similarity) / t
            if mode == "uniform":
                den = log_sum_exp([sim(rows[i], a, similarity) / t for a in others])
            else:
                den = log_sum_exp([sim(rows[i], a, similarity) / t for a in negatives_i])
            w = 1.0
            if mode == "vmf":
                w = 2 - math.exp(pos_sims[(i, p)] / sigma) / mean_exp
            terms.append(-w * s_ip + den)
        losses.append(sum(terms) / len(terms))
    return torch.stack(losses)


def hcl(views, t, beta, tau_plus, negatives=None):
    """joshr17/HCL image/main.py `criterion`, one anchor at a time, in linear space."""
    rows, ids = flatten_views(views)
    extra = [] if negatives is None else list(negatives)
    losses = []
    for i in range(len(rows)):
        (p,) = [j for j in range(len(rows)) if j != i and ids[j] == ids[i]]
        pos = torch.exp(sim(rows[i], rows[p], "cosine") / t)
        negs = [
            torch.exp(sim(rows[i], rows[j], "cosine") / t)
            for j in range(len(rows))
            if ids[j] != ids[i]
        ]
        negs += [torch.exp(sim(rows[i], e, "cosine") / t) for e in extra]
        n = len(negs)
        imp = [torch.exp(beta * torch.log(g)) for g in negs]
        reweight = sum(a * g for a, g in zip(imp, negs, strict=True)) / (sum(imp) / n)
        ng = (-tau_plus * n * pos + reweight) / (1 - tau_plus)
        ng = torch.clamp(ng, min=n * math.exp(-1 / t))
        losses.append(-torch.log(pos / (pos + ng)))
    return torch.stack(losses)


def hard_contrastive(views, t, k):
    """Wang & Liu eq. 9: only the k most similar negatives enter the denominator."""
    rows, ids = flatten_views(views)
    losses = []
    for i in range(len(rows)):
        (p,) = [j for j in range(len(rows)) if j != i and ids[j] == ids[i]]
        negs = sorted(
            (sim(rows[i], rows[j], "cosine") for j in range(len(rows)) if ids[j] != ids[i]),
            key=float,
            reverse=True,
        )[:k]
        s_ip = sim(rows[i], rows[p], "cosine") / t
        losses.append(-s_ip + log_sum_exp([s_ip] + [s / t for s in negs]))
    return torch.stack(losses)


def simple_contrastive(views, lam=None, k=None):
    """Wang & Liu eq. 3: -s_ii + lam * sum of negative similarities (optionally top k)."""
    rows, ids = flatten_views(views)
    losses = []
    for i in range(len(rows)):
        (p,) = [j for j in range(len(rows)) if j != i and ids[j] == ids[i]]
        negs = sorted(
            (sim(rows[i], rows[j], "cosine") for j in range(len(rows)) if ids[j] != ids[i]),
            key=float,
            reverse=True,
        )
        if k is not None:
            negs = negs[:k]
        weight = 1.0 / len(negs) if lam is None else lam
        losses.append(-sim(rows[i], rows[p], "cosine") + weight * sum(negs))
    return torch.stack(losses)


def cross_entropy_row(logits, target):
    return -logits[target] + log_sum_exp(list(logits))


def clip(q, k, t, symmetric=True, negatives=None):
    n = q.shape[0]
    keys = list(k) + ([] if negatives is None else list(negatives))
    losses = []
    for i in range(n):
        forward = cross_entropy_row([sim(q[i], key, "cosine") / t for key in keys], i)
        if symmetric:
            backward = cross_entropy_row([sim(k[i], q[j], "cosine") / t for j in range(n)], i)
            losses.append((forward + backward) / 2)
        else:
            losses.append(forward)
    return torch.stack(losses)


def siglip(q, k, t, b):
    n = q.shape[0]
    rows = []
    for i in range(n):
        total = 0
        for j in range(n):
            y = 1.0 if i == j else -1.0
            logit = sim(q[i], k[j], "cosine") / t + b
            total = total + torch.log(1 + torch.exp(-y * logit))
        rows.append(total)
    return torch.stack(rows)


def triplet_batch_hard(x, labels, margin, normalize=True):
    if normalize:
        x = unit(x)
    n = x.shape[0]
    losses = []
    for a in range(n):
        d = [torch.sqrt(((x[a] - x[j]) ** 2).sum()) for j in range(n)]
        d_ap = max((d[j] for j in range(n) if j != a and labels[j] == labels[a]), key=float)
        d_an = min((d[j] for j in range(n) if labels[j] != labels[a]), key=float)
        gap = d_ap - d_an
        losses.append(torch.log1p(torch.exp(gap)) if margin is None else torch.relu(gap + margin))
    return torch.stack(losses)


def barlow_twins(z1, z2, lambd, eps=1e-5):
    n, d = z1.shape

    def standardise(z):
        cols = []
        for j in range(d):
            col = z[:, j]
            mean = sum(col) / n
            var = sum((c - mean) ** 2 for c in col) / n
            cols.append((col - mean) / torch.sqrt(var + eps))
        return torch.stack(cols, 1)

    a, b = standardise(z1), standardise(z2)
    loss = 0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss = loss + ((1 - c_ij) ** 2 if i == j else lambd * c_ij**2)
    return loss


def vicreg(z1, z2, sim_coeff, std_coeff, cov_coeff, eps, variant):
    n, d = z1.shape
    invariance = sum(((z1[i] - z2[i]) ** 2).sum() for i in range(n)) / n

    def var_cov(z):
        means = [sum(z[:, j]) / n for j in range(d)]
        std_term = 0
        cov_term = 0
        for i in range(d):
            for j in range(d):
                cov = sum((z[k, i] - means[i]) * (z[k, j] - means[j]) for k in range(n)) / (n - 1)
                if i == j:
                    std_term = std_term + torch.relu(1 - torch.sqrt(cov + eps)) / d
                else:
                    cov_term = cov_term + cov**2 / d
        return std_term, cov_term

    v1, c1 = var_cov(z1)
    v2, c2 = var_cov(z2)
    variance = v1 + v2
    if variant == "official_code":
        invariance = invariance / d
        variance = variance / 2
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * (c1 + c2)


def normalized_regression(p, z, form):
    out = []
    for i in range(p.shape[0]):
        cos = dot(unit(p[i]), unit(z[i].detach()))
        out.append(2 - 2 * cos if form == "byol" else -cos)
    return torch.stack(out)


def masked_info_nce(anchors, candidates, positive, valid, t):
    """Per anchor: mean over its positives p of -s_ip/t + log sum over valid a of exp(s_ia/t)."""
    losses = []
    for i in range(anchors.shape[0]):
        den = log_sum_exp(
            [
                sim(anchors[i], candidates[a], "cosine") / t
                for a in range(candidates.shape[0])
                if valid[i, a]
            ]
        )
        terms = [
            -sim(anchors[i], candidates[p], "cosine") / t + den
            for p in range(candidates.shape[0])
            if positive[i, p] and valid[i, p]
        ]
        losses.append(sum(terms) / len(terms))
    return torch.stack(losses)


def moco_queue_only(q, k, queue, t):
    """MoCo Algorithm 1: logits [q.k_i, q.queue] / t, cross-entropy at index 0."""
    losses = []
    for i in range(q.shape[0]):
        logits = [sim(q[i], k[i], "cosine") / t] + [sim(q[i], e, "cosine") / t for e in queue]
        losses.append(cross_entropy_row(logits, 0))
    return torch.stack(losses)
