"""BECLR pretraining: the loss ``L_pos + lambda L_neg`` and the DyCE clustered memory.

Poulakakis-Daktylidis & Jamali-Rad, "BECLR: Batch Enhanced Contrastive Few-Shot
Learning", ICLR 2024 (arXiv:2402.02444). Code followed: stypoumic/BECLR
``model/beclr.py`` (``BECLRLoss``), ``dyce.py`` (``DyCE``), ``utils/sinkhorn.py``
(``distributed_sinkhorn``). The paper's PDF could not be read here, so equation numbers
are not given: the maths below is the released code's, and every place where we depart
from that code is listed in the docstring concerned.

- :func:`beclr_loss` / :class:`BECLRLoss`: BYOL-style alignment of student predictions
  with stop-gradient teacher projections, plus ``lambda`` times a log-mean-exp
  uniformity term over the student projections (temperature 2.0, lambda 0.1).
- :func:`equipartition_assign`: SwAV-style Sinkhorn-Knopp equipartition of a batch over
  prototypes (log domain, :func:`contrastkit.core.transport.sinkhorn`).
- :class:`DyCE`: FIFO memory of embeddings partitioned into ``num_clusters`` clusters
  (k-means when the memory first fills, then Sinkhorn-equipartitioned assignment of each
  new batch and mean prototypes), and batch enhancement: each batch row gets its top-k
  nearest memory rows *within its nearest prototype's cluster* appended, so a batch of
  ``B`` rows per view becomes ``B (1 + k)``.

OpTA, BECLR's inference stage, is :func:`contrastkit.core.transport.opta`.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.core.transport import _check_int, sinkhorn
from contrastkit.core.validation import (
    _fail,
    check_batch_size,
    check_choice,
    check_embeddings,
    check_flag,
    check_in_range,
    check_positive_number,
    check_same_shape,
)
from contrastkit.losses.base import SeededDraws

__all__ = ["BECLRLoss", "DyCE", "beclr_loss", "beclr_loss_terms", "equipartition_assign"]

VARIANTS = ("paper", "official_code")
# exp(x) is inf in float32 beyond this; the official code's exp(input / eps) hits it.
FLOAT32_EXP_MAX = math.log(torch.finfo(torch.float32).max)


# ---------------------------------------------------------------------- the loss


def _dtype(*xs: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


def beclr_loss_terms(
    p1: torch.Tensor,
    p2: torch.Tensor,
    teacher1: torch.Tensor,
    teacher2: torch.Tensor,
    student1: torch.Tensor,
    student2: torch.Tensor,
    *,
    temperature: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_pos, L_neg)`` of BECLR (``model/beclr.py::BECLRLoss``, ``uniformity_config="SS"``).

    With ``^`` denoting L2 normalisation and ``sg`` stop-gradient, over ``B`` rows per view:

    - ``L_pos = -1/2 [mean_i <p1^_i, sg(t2^_i)> + mean_i <p2^_i, sg(t1^_i)>]``: student
      predictions ``p`` against the teacher projections ``t`` of the *other* view;
    - ``L_neg = log( 1/(2B) sum_i 1/(2B-2) sum_{j != i, pos(i)} exp(<z^_i, z^_j> / T) )``
      over the ``2B`` stacked student projections ``z = [student1; student2]``, where
      ``pos(i)`` is the same sample's other view. The code computes exactly this (log of
      the mean over rows, not a mean of logs: ``(exp(out/T).sum(1) - 2) / n_neg`` then
      ``.mean().log()``); here it is one ``logsumexp`` over the ``2B (2B - 2)`` negative
      pairs minus ``log(2B (2B - 2))``, so it never overflows.

    With DyCE the per-view tensors are the enhanced ``B (1 + k)`` rows and row ``i`` of
    one view still pairs with row ``i`` of the other, as in the code.
    """
    owner = "beclr_loss"
    names = ("p1", "p2", "teacher1", "teacher2", "student1", "student2")
    xs = (p1, p2, teacher1, teacher2, student1, student2)
    for name, x in zip(names, xs, strict=True):
        check_embeddings(x, owner, name)
        check_same_shape(p1, x, owner, ("p1", name))
    check_batch_size(p1.shape[0], owner, "p1")
    temperature = check_positive_number(temperature, owner, "temperature", "pass e.g. 2.0")
    dtype = _dtype(*xs)
    p1n, p2n = (F.normalize(p.to(dtype), dim=1) for p in (p1, p2))
    t1n, t2n = (F.normalize(t.detach().to(dtype), dim=1) for t in (teacher1, teacher2))
    pos = -0.5 * ((p1n * t2n).sum(1).mean() + (p2n * t1n).sum(1).mean())
    z = F.normalize(torch.cat([student1, student2]).to(dtype), dim=1)
    n = z.shape[0]
    b = n // 2
    idx = torch.arange(n, device=z.device)
    keep = torch.ones(n, n, dtype=torch.bool, device=z.device)
    keep[idx, idx] = False
    keep[idx, (idx + b) % n] = False  # the other view of the same sample
    logits = (z @ z.T / temperature)[keep]
    neg = torch.logsumexp(logits, dim=0) - math.log(n * (n - 2))
    return pos, neg


def beclr_loss(
    p1: torch.Tensor,
    p2: torch.Tensor,
    teacher1: torch.Tensor,
    teacher2: torch.Tensor,
    student1: torch.Tensor,
    student2: torch.Tensor,
    *,
    lambda_neg: float = 0.1,
    temperature: float = 2.0,
) -> torch.Tensor:
    """BECLR's pretraining loss ``L_pos + lambda_neg * L_neg`` (see :func:`beclr_loss_terms`;
    defaults ``lamb_neg=0.1``, ``temp=2.0`` of ``BECLRLoss`` and ``train.py``)."""
    lambda_neg = check_in_range(
        lambda_neg, "beclr_loss", "lambda_neg", 0.0, math.inf, "pass e.g. lambda_neg=0.1"
    )
    pos, neg = beclr_loss_terms(
        p1, p2, teacher1, teacher2, student1, student2, temperature=temperature
    )
    return pos + lambda_neg * neg


class BECLRLoss(nn.Module):
    """Module form of :func:`beclr_loss`: ``loss(p1, p2, teacher1, teacher2, student1,
    student2)``. Stores ``lambda_neg`` and ``temperature`` only."""

    def __init__(self, lambda_neg: float = 0.1, temperature: float = 2.0):
        super().__init__()
        self.lambda_neg = lambda_neg
        self.temperature = temperature

    def forward(self, p1, p2, teacher1, teacher2, student1, student2) -> torch.Tensor:
        return beclr_loss(
            p1,
            p2,
            teacher1,
            teacher2,
            student1,
            student2,
            lambda_neg=self.lambda_neg,
            temperature=self.temperature,
        )


# ---------------------------------------------------------------------- equipartition


@torch.no_grad()
def equipartition_assign(
    embeddings: torch.Tensor,
    prototypes: torch.Tensor,
    *,
    epsilon: float = 0.05,
    iterations: int = 10,
    variant: str = "paper",
) -> torch.Tensor:
    """Soft assignment ``(B, K)`` of ``B`` embeddings to ``K`` prototypes, each prototype
    receiving ``B / K`` samples' worth of mass (rows sum to 1).

    DyCE (``dyce.py::DyCE.save_memory_embeddings`` with ``memory_dist_metric="euclidean"``,
    ``eucl_norm=True``) computes ``D_ij = ||e^_i - c^_j||`` between L2-normalised
    embeddings and prototypes and hands it to ``distributed_sinkhorn``, the SwAV routine
    that expects *similarities*: ``Q = exp(input / eps)``, then ``iterations`` rounds of
    prototype-row then sample-column normalisation, rows of the result summing to 1.

    - ``variant="paper"`` (default): similarity = ``-D``, i.e. entropic OT with cost
      ``D``: a sample is pulled toward its *near* prototypes, which is what the method
      describes (equipartitioned clustering of the memory).
    - ``variant="official_code"``: similarity = ``+D`` as the code passes it, so among the
      equipartitioned plans it favours *far* prototypes. We reproduce it for published
      numbers only. Where ``max D / eps`` exceeds float32's ``exp`` range the code's
      ``exp`` overflows and it then silently retries with ``eps + 0.1`` until no NaN; we
      do not change the hyperparameter behind the user's back (log domain needs no
      retry) and warn instead, because results at that ``eps`` cannot match the code's.

    Both run the same fixed number of iterations ending with the sample normalisation,
    in the log domain (:func:`~contrastkit.core.transport.sinkhorn` with
    ``tol=0``); in exact arithmetic this equals the code's scaling loop.
    """
    owner = "equipartition_assign"
    check_embeddings(embeddings, owner, "embeddings")
    check_embeddings(prototypes, owner, "prototypes")
    if embeddings.shape[1] != prototypes.shape[1]:
        _fail(
            owner,
            "prototypes",
            f"has dimension {prototypes.shape[1]} but `embeddings` has {embeddings.shape[1]}",
            "both must live in the same space",
            "pass prototypes of the embeddings' dimension",
        )
    variant = check_choice(variant, owner, "variant", VARIANTS)
    epsilon = check_positive_number(epsilon, owner, "epsilon", "pass e.g. epsilon=0.05")
    iterations = _check_int(iterations, owner, "iterations", 1, "pass e.g. iterations=10")
    dtype = _dtype(embeddings, prototypes)
    e = F.normalize(embeddings.to(dtype), dim=1)
    c = F.normalize(prototypes.to(dtype), dim=1)
    dist = (e[:, None, :] - c[None, :, :]).pow(2).sum(-1).sqrt()
    scores = -dist if variant == "paper" else dist
    if variant == "official_code" and float(dist.max()) / epsilon > FLOAT32_EXP_MAX:
        warnings.warn(
            f"equipartition_assign: epsilon={epsilon:g} makes the official code's "
            f"exp(distance / epsilon) overflow (max distance {float(dist.max()):.3g}); that "
            "code then silently raises epsilon by 0.1 until it is finite, so its result "
            "differs from this one, which keeps epsilon as given (log domain).",
            RuntimeWarning,
            stacklevel=2,
        )
    # (K, B): prototype rows are normalised first, sample columns last, as in the code.
    plan, _ = sinkhorn(-scores.T, epsilon, max_iter=iterations, tol=0.0)
    return (plan * embeddings.shape[0]).T


# ---------------------------------------------------------------------- k-means


@torch.no_grad()
def _kmeans(x: torch.Tensor, k: int, iterations: int, generator: torch.Generator):
    """Lloyd's k-means with k-means++ seeding: ``(centers, labels)``. An emptied cluster
    is re-seeded at the point farthest from its centre."""
    n = x.shape[0]
    centers = x[torch.randint(n, (1,), generator=generator)]
    for _ in range(1, k):
        d2 = torch.cdist(x, centers).pow(2).min(dim=1).values
        weights = d2 if float(d2.sum()) > 0 else torch.ones_like(d2)
        nxt = torch.multinomial(weights, 1, generator=generator)
        centers = torch.cat([centers, x[nxt]])
    labels = torch.cdist(x, centers).argmin(dim=1)
    for _ in range(iterations):
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        new = sums / counts.clamp(min=1)[:, None].to(x.dtype)
        empty = counts == 0
        if bool(empty.any()):
            far = torch.cdist(x, centers).min(dim=1).values.argsort(descending=True)
            new[empty] = x[far[: int(empty.sum())]]
        new_labels = torch.cdist(x, new).argmin(dim=1)
        centers = new
        if bool((new_labels == labels).all()):
            break
        labels = new_labels
    return centers, labels


# ---------------------------------------------------------------------- DyCE


class DyCE(SeededDraws, nn.Module):
    """DyCE, BECLR's dynamic clustered memory (``dyce.py::DyCE``), for one embedding space.

    BECLR keeps three: teacher projections, student predictions and student projections
    (one instance each). Call ``z1, z2 = dyce(z1, z2)`` once per step with the ``(B, D)``
    embeddings of the two views; it

    1. enqueues both views (detached, FIFO, ``size`` rows). Before the memory is first full
       the batch is stored without labels. When it first becomes full, k-means
       (``num_clusters``) on the L2-normalised memory gives the partition and the
       prototypes (the centres);
    2. once clustered, assigns the batch with :func:`equipartition_assign` (``epsilon``,
       ``sinkhorn_iterations``, ``variant``), takes the argmax as labels, enqueues, and
       sets each prototype to the mean of its memory rows (a cluster left empty keeps its
       prototype), with EMA ``momentum`` toward the previous prototype (0 = plain mean);
    3. if ``enhance`` and the memory is clustered: for each row of each view, finds the
       nearest prototype (cosine), then the ``topk`` memory rows of that cluster most
       cosine-similar to the row, and appends them: each view becomes ``[z (B rows);
       neighbours of row 0 (k rows, best first); ...; neighbours of row B-1]``, so row
       ``i`` of one view still pairs with row ``i`` of the other. Appended rows are memory
       (no gradient). If the cluster has fewer than ``topk`` rows, the top-k over the whole
       memory are used (as the code does; it tests ``<= k`` for the first view and
       ``< k`` for the second, we use ``< k`` for both).

    Departures from the code, and why:

    - ``variant="paper"`` assigns with similarity = minus distance; ``"official_code"``
      keeps the code's sign (see :func:`equipartition_assign`).
    - the code takes top-k positions *within* the cluster's rows and then indexes the
      whole memory with those positions (``index_select(bank, 0, topk_indices)``), so it
      appends memory rows ``0..|cluster|-1`` rather than the cluster's neighbours. The
      default appends the actual neighbours; ``variant="official_code"`` reproduces the
      code's indexing.
    - the code clusters the memory at the step where ``ptr + bsz >= size``, when part of
      the lightly memory bank still holds its random initialisation; we cluster once the
      memory holds only real embeddings (right after the filling enqueue).
    - k-means: ``scikit-learn KMeans(n_init=10)`` in the code; here one seeded torch run
      of Lloyd with k-means++ seeding (``kmeans_iterations``), deterministic in ``seed``.
    - the code re-clusters when all labels collapse into one cluster and every
      ``cluster_freq`` epochs if ``recluster``; call :meth:`recluster` for the latter,
      the former is done automatically.

    As in the code, the memory is searched *after* the current batch is enqueued, so a row
    may retrieve itself or its other view. ``enhance=False`` updates the memory without
    enhancing (the code's epochs before ``memory_start_epoch``).
    """

    def __init__(
        self,
        size: int,
        dim: int,
        num_clusters: int,
        *,
        topk: int = 5,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 10,
        momentum: float = 0.0,
        kmeans_iterations: int = 50,
        variant: str = "paper",
        seed: int = 0,
    ):
        super().__init__()
        owner = "DyCE"
        self.size = _check_int(size, owner, "size", 2, "pass e.g. size=8000")
        dim = _check_int(dim, owner, "dim", 1, "pass the embedding dimension")
        self.num_clusters = _check_int(num_clusters, owner, "num_clusters", 1, "pass e.g. 200")
        if self.num_clusters > self.size:
            _fail(
                owner,
                "num_clusters",
                f"is {num_clusters} with size={size}",
                "k-means needs at least as many memory rows as clusters",
                "use a larger memory or fewer clusters",
            )
        self.topk = _check_int(topk, owner, "topk", 1, "pass e.g. topk=5")
        if self.topk > self.size:
            _fail(owner, "topk", f"is {topk}", f"it must be <= size ({size})", "lower topk")
        self.epsilon = check_positive_number(epsilon, owner, "epsilon", "pass e.g. 0.05")
        self.sinkhorn_iterations = _check_int(
            sinkhorn_iterations, owner, "sinkhorn_iterations", 1, "pass e.g. 10"
        )
        self.momentum = check_in_range(momentum, owner, "momentum", 0.0, 1.0, "pass e.g. 0.0")
        self.kmeans_iterations = _check_int(
            kmeans_iterations, owner, "kmeans_iterations", 1, "pass e.g. 50"
        )
        self.variant = check_choice(variant, owner, "variant", VARIANTS)
        self._init_generator(seed)  # k-means seeding; its position is saved in state_dict
        self.register_buffer("memory", torch.zeros(self.size, dim))
        self.register_buffer("labels", torch.full((self.size,), -1, dtype=torch.long))
        self.register_buffer("prototypes", torch.zeros(self.num_clusters, dim))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("clustered", torch.zeros((), dtype=torch.bool))

    # -- memory

    def _enqueue(self, z: torch.Tensor, labels: torch.Tensor) -> None:
        n = z.shape[0]
        if n > self.size:  # only the newest rows fit
            z, labels, n = z[-self.size :], labels[-self.size :], self.size
        slots = (int(self.ptr) + torch.arange(n, device=z.device)) % self.size
        self.memory[slots] = z.to(self.memory.dtype)
        self.labels[slots] = labels
        self.ptr.fill_((int(self.ptr) + n) % self.size)
        self.count.fill_(min(self.size, int(self.count) + n))

    @torch.no_grad()
    def recluster(self) -> None:
        """k-means on the L2-normalised memory: new partition and prototypes (the code's
        ``cluster_memory_embeddings``; also its periodic re-clustering)."""
        if int(self.count) < self.size:
            _fail(
                "DyCE.recluster",
                "memory",
                f"holds {int(self.count)} of {self.size} rows",
                "clustering needs a full memory",
                "call it after the memory has filled (self.clustered is True)",
            )
        x = F.normalize(self.memory.float(), dim=1)
        centers, labels = _kmeans(x, self.num_clusters, self.kmeans_iterations, self.generator)
        self.prototypes.copy_(centers.to(self.prototypes.dtype))
        self.labels.copy_(labels)
        self.clustered.fill_(True)

    @torch.no_grad()
    def _update(self, z: torch.Tensor) -> None:
        if not bool(self.clustered):
            self._enqueue(z, torch.full((z.shape[0],), -1, dtype=torch.long, device=z.device))
            if int(self.count) == self.size:
                self.recluster()
            return
        if torch.unique(self.labels).numel() <= 1:  # collapsed partition: start again
            self.recluster()
        q = equipartition_assign(
            z,
            self.prototypes,
            epsilon=self.epsilon,
            iterations=self.sinkhorn_iterations,
            variant=self.variant,
        )
        self._enqueue(z, q.argmax(dim=1))
        k, mem = self.num_clusters, self.memory
        counts = torch.bincount(self.labels, minlength=k)
        sums = torch.zeros_like(self.prototypes).index_add_(0, self.labels, mem)
        means = sums / counts.clamp(min=1)[:, None].to(mem.dtype)
        means = torch.where((counts > 0)[:, None], means, self.prototypes)
        self.prototypes.copy_((1 - self.momentum) * means + self.momentum * self.prototypes)

    # -- enhancement

    @torch.no_grad()
    def neighbours(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, topk)`` memory indices appended for the rows of ``z`` (see the class doc)."""
        mem = F.normalize(self.memory.to(z.dtype), dim=1)
        zn = F.normalize(z, dim=1)
        sim = zn @ mem.T  # (B, M)
        cluster = (zn @ F.normalize(self.prototypes.to(z.dtype), dim=1).T).argmax(dim=1)
        member = self.labels[None, :] == cluster[:, None]  # (B, M)
        inside = sim.masked_fill(~member, -math.inf).topk(self.topk, dim=1).indices
        overall = sim.topk(self.topk, dim=1).indices
        if self.variant == "official_code":
            # The code indexes the whole memory with positions inside the cluster.
            inside = member.long().cumsum(dim=1).gather(1, inside) - 1
        small = member.sum(dim=1) < self.topk
        return torch.where(small[:, None], overall, inside)

    def forward(
        self, z1: torch.Tensor, z2: torch.Tensor, *, enhance: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        owner = "DyCE"
        check_embeddings(z1, owner, "z1")
        check_embeddings(z2, owner, "z2")
        check_same_shape(z1, z2, owner, ("z1", "z2"))
        check_flag(enhance, owner, "enhance")
        if z1.shape[1] != self.memory.shape[1]:
            _fail(
                owner,
                "z1",
                f"has dimension {z1.shape[1]}",
                f"this memory stores {self.memory.shape[1]}-D embeddings",
                "create DyCE with dim equal to the embedding dimension",
            )
        self._update(torch.cat([z1, z2]).detach())
        if not (enhance and bool(self.clustered)):
            return z1, z2
        out = []
        for z in (z1, z2):
            idx = self.neighbours(z.detach())
            extra = self.memory[idx.reshape(-1)].to(z.dtype)
            out.append(torch.cat([z, extra]))
        return out[0], out[1]
