"""MIM and cMIM: the Mutual Information Machine and its contrastive extension, plus the
training-free "informative embeddings" of an encoder-decoder.

Papers
------
* MIM: Livne, Swersky & Fleet, "MIM: Mutual Information Machine", arXiv 1910.03175
  (2019). A-MIM (asymmetric MIM) is the variant whose samples come from the encoding
  distribution only, ``x ~ P(x)`` (the data), ``z ~ q(z|x)``; it is the one used for
  high-dimensional data (sentenceMIM, arXiv 2003.02645; MolMIM) and the base of cMIM.
* cMIM: Livne, "Contrastive MIM: A Contrastive Mutual Information Framework for Unified
  Generative and Discriminative Representation Learning", arXiv 2411.10548 (working
  draft, also 2502.19642), and "Contrastive Mutual Information Learning: Toward Robust
  Representations without Positive-Pair Augmentations", arXiv 2509.21511 (OpenReview
  I8FkTtgsUu).

Code followed
-------------
* MIM loss: seraphlabs-ca/MIM ``src/vae-as-mim-dataset.py::loss_function_mim``::

      loss = -1/2 * (log p(x|z) + log P(z) + beta * (log q(z|x) + log q(x)))

  averaged over the batch, with ``z ~ q(z|x)`` drawn by reparameterisation. ``log q(x)``
  is the data anchor: constant in the parameters when x is a data sample, so it is left
  out here (the value shifts by a constant, the gradient is identical). NVIDIA NeMo's
  ``MegatronAMIMHiddenLoss`` (by the same author) computes the same latent terms with a
  unit-Normal anchor ``P(z)``.
* cMIM: **no official code was found** (code, docs and pages corpora searched). The
  contrastive term and the informative embeddings below are NOT VERIFIED against the
  paper's equations: only the abstracts and public reviews of arXiv 2509.21511 could be
  read, not its Sec. 2-3. See :func:`cmim_contrastive` and :func:`informative_embeddings`
  for exactly what was read and what was assumed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.core.reduction import reduce
from contrastkit.core.validation import (
    _fail,
    check_batch_size,
    check_choice,
    check_embeddings,
    check_in_range,
    check_positive_number,
    check_same_shape,
    check_temperature,
    check_tensor,
)

__all__ = [
    "CMIM",
    "MIM",
    "GaussianMLPEncoder",
    "MLPDecoder",
    "a_mim_loss",
    "bernoulli_log_prob",
    "cmim_contrastive",
    "gaussian_log_prob",
    "informative_embeddings",
]

LIKELIHOODS = ("bernoulli", "gaussian")
POSITIVES = ("self", "mean")
_LOG_2PI = math.log(2.0 * math.pi)
_ACTIVATIONS = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.ELU, nn.LeakyReLU, nn.Softplus)


# ---------------------------------------------------------------------- log densities


def gaussian_log_prob(z, mean, logvar=None) -> torch.Tensor:
    """``log N(z; mean, diag(exp(logvar)))`` summed over the last dimension: ``(N,)``.

    ``logvar=None`` is the unit-variance Normal, e.g. the MIM anchor ``P(z) = N(0, I)``
    with ``mean = zeros``. Computed from ``logvar`` (never ``log(exp(.))``)::

        -1/2 * sum_d [ log(2 pi) + logvar_d + (z_d - mean_d)^2 * exp(-logvar_d) ]
    """
    owner = "gaussian_log_prob"
    check_embeddings(z, owner, "z")
    check_tensor(mean, owner, "mean")
    check_same_shape(z, mean, owner, ("z", "mean"))
    if logvar is None:
        return -0.5 * ((z - mean).pow(2) + _LOG_2PI).sum(-1)
    check_tensor(logvar, owner, "logvar")
    check_same_shape(z, logvar, owner, ("z", "logvar"))
    return -0.5 * (_LOG_2PI + logvar + (z - mean).pow(2) * torch.exp(-logvar)).sum(-1)


def bernoulli_log_prob(x, logits) -> torch.Tensor:
    """``sum_d [ x_d log sigmoid(l_d) + (1 - x_d) log sigmoid(-l_d) ]``: ``(N,)``.

    The Bernoulli decoder ``p(x|z)`` of MIM's MNIST models, from logits (``logsigmoid``,
    stable at any logit). ``x`` in [0, 1]; grey levels act as soft targets (the usual
    practice for MNIST; the MIM code also offers dynamic binarisation). Inputs of more
    than two dimensions are flattened after the batch dimension.
    """
    owner = "bernoulli_log_prob"
    x, logits = _flat_pair(x, logits, owner, ("x", "logits"))
    _check_unit_interval(x, owner, "x")
    return (x * F.logsigmoid(logits) + (1.0 - x) * F.logsigmoid(-logits)).sum(-1)


def _flat_pair(a, b, owner: str, names: tuple[str, str]):
    check_tensor(a, owner, names[0])
    check_tensor(b, owner, names[1])
    check_same_shape(a, b, owner, names)
    if a.dim() < 2:
        _fail(
            owner,
            names[0],
            f"has shape {tuple(a.shape)}",
            "it must have a batch dimension first, (N, ...)",
            f"pass {names[0]}.unsqueeze(0) for a single sample",
        )
    return a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)


def _check_unit_interval(x: torch.Tensor, owner: str, arg: str) -> None:
    if not torch.is_floating_point(x):
        _fail(
            owner,
            arg,
            f"has dtype {x.dtype}",
            "it must be floating point",
            f"pass {arg}.float()",
            TypeError,
        )
    if not bool(torch.isfinite(x).all()):
        _fail(owner, arg, "contains NaN or inf", "it must be finite", "clean the input")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        _fail(
            owner,
            arg,
            f"has values in [{lo:.4g}, {hi:.4g}]",
            "a Bernoulli likelihood needs values in [0, 1]",
            "scale images to [0, 1] (e.g. x / 255) or use likelihood='gaussian'",
        )


# ---------------------------------------------------------------------- losses


def a_mim_loss(log_px_given_z, log_pz, log_qz_given_x, *, beta=1.0, reduction="mean"):
    """The A-MIM loss per sample (Livne et al. 2019, arXiv 1910.03175, A-MIM objective;
    seraphlabs-ca/MIM ``loss_function_mim``)::

        l_i = -1/2 * ( log p(x_i|z_i) + log P(z_i) + beta * log q(z_i|x_i) ),  z_i ~ q(z|x_i)

    The three inputs are ``(N,)`` per-sample log densities (sums over dimensions), e.g.
    from :func:`bernoulli_log_prob` and :func:`gaussian_log_prob`. The data anchor term
    ``beta * log P(x_i)`` of the code is constant in the parameters and is omitted.
    ``beta = 1`` is MIM (the paper has no such weight; the code's ``beta`` is kept as an
    option). Returns a 0-d tensor (``"mean"``, ``"sum"``) or ``(N,)`` (``"none"``).
    """
    owner = "a_mim_loss"
    terms = (log_px_given_z, log_pz, log_qz_given_x)
    names = ("log_px_given_z", "log_pz", "log_qz_given_x")
    for t, name in zip(terms, names, strict=True):
        check_tensor(t, owner, name)
        if t.dim() != 1:
            _fail(
                owner,
                name,
                f"has shape {tuple(t.shape)}",
                "it must be 1-D, one log density per sample (summed over dimensions)",
                "sum the per-dimension log densities with .sum(-1)",
            )
    check_same_shape(log_px_given_z, log_pz, owner, (names[0], names[1]))
    check_same_shape(log_px_given_z, log_qz_given_x, owner, (names[0], names[2]))
    beta = check_positive_number(beta, owner, "beta", "pass beta=1.0 (MIM)")
    per_sample = -0.5 * (log_px_given_z + log_pz + beta * log_qz_given_x)
    return reduce(per_sample, reduction, owner)


def cmim_contrastive(z, keys=None, *, temperature=0.1, reduction="mean"):
    """The cMIM contrastive term, as read from the abstracts and reviews (NOT VERIFIED).

    What could be read (arXiv 2509.21511 / 2411.10548 abstracts, OpenReview I8FkTtgsUu
    reviews): cMIM adds to MIM a *probabilistic* contrastive term that needs no positive
    data augmentation, is less batch-size sensitive than InfoNCE, "encourages angular
    separation among dissimilar samples", is expressed with similarities ``s_ij`` whose
    diagonal ``s_ii`` is not a positive pair from an augmentation, and enters the
    objective as a unit-weighted log-probability. The paper's equations (its Sec. 2.2)
    could not be retrieved, so this function implements the most defensible reading:
    the log-probability that latent i is identified as its own sample among the batch,
    with cosine similarities::

        s_ij = cos(z_i, k_j) / temperature
        l_i  = -log( exp(s_ii) / sum_j exp(s_ij) )        (j runs over the whole batch)

    * ``keys=None`` (``positive="self"`` in :class:`CMIM`): ``k = z``, so ``s_ii = 1/t``
      is a constant and the term reduces to ``logsumexp_j s_ij - 1/t``: pure angular
      repulsion of the codes of different samples, no positive pair at all.
    * ``keys=mu`` (``positive="mean"``): ``z_i ~ q(z|x_i)`` must be closest to its own
      encoder mean ``mu_i``; the encoder noise plays the role of the augmentation.

    Shapes: ``z`` and ``keys`` ``(N, D)``, N >= 2. Returns a 0-d tensor or ``(N,)`` with
    ``reduction="none"``. Float16/bfloat16 inputs are computed in float32.
    """
    owner = "cmim_contrastive"
    check_embeddings(z, owner, "z")
    check_batch_size(z.shape[0], owner, "z")
    t = check_temperature(temperature, owner)
    if keys is not None:
        check_embeddings(keys, owner, "keys")
        check_same_shape(z, keys, owner, ("z", "keys"))
    dtype = torch.float32 if z.dtype in (torch.float16, torch.bfloat16) else z.dtype
    a = _unit(z.to(dtype), owner, "z")
    b = a if keys is None else _unit(keys.to(dtype), owner, "keys")
    logits = a @ b.T / t
    per_sample = -torch.diagonal(torch.log_softmax(logits, dim=1))
    return reduce(per_sample, reduction, owner)


def _unit(x: torch.Tensor, owner: str, arg: str) -> torch.Tensor:
    norms = x.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        rows = (norms.flatten() == 0).nonzero().flatten().tolist()
        _fail(
            owner,
            arg,
            f"has all-zero rows {rows[:8]}",
            "cosine similarity is undefined for a zero vector",
            "check the encoder output",
        )
    return x / norms


# ---------------------------------------------------------------------- models


def _mlp(sizes: Sequence[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return layers


def _check_sizes(hidden, owner: str) -> tuple[int, ...]:
    if isinstance(hidden, int) or not all(isinstance(h, int) and h > 0 for h in hidden):
        _fail(
            owner,
            "hidden",
            f"is {hidden!r}",
            "it must be a sequence of positive layer widths",
            "pass e.g. hidden=(256, 256)",
            TypeError,
        )
    return tuple(hidden)


def _check_dim(value, owner: str, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(owner, arg, f"is {value!r}", "it must be a positive integer", f"pass e.g. {arg}=16")
    return value


class GaussianMLPEncoder(nn.Module):
    """``q(z|x) = N(mu(x), diag(exp(logvar(x))))`` from an MLP on the flattened input.

    ``logvar`` is clamped to ``[min_logvar, max_logvar]``: the A-MIM loss contains
    ``-1/2 log q(z|x)``, which is unbounded below as the encoder variance goes to 0, so
    the variance needs a floor (the MIM repository's toy runs are named ``logvar6``; the
    exact clamp there was not read: the default ``-6`` is ours).
    """

    def __init__(
        self,
        input_dim: int = 784,
        hidden: Sequence[int] = (256, 256),
        latent_dim: int = 16,
        min_logvar: float = -6.0,
        max_logvar: float = 6.0,
    ):
        super().__init__()
        owner = "GaussianMLPEncoder"
        input_dim = _check_dim(input_dim, owner, "input_dim")
        latent_dim = _check_dim(latent_dim, owner, "latent_dim")
        hidden = _check_sizes(hidden, owner)
        if not min_logvar < max_logvar:
            _fail(
                owner,
                "min_logvar",
                f"is {min_logvar} with max_logvar={max_logvar}",
                "min_logvar must be below max_logvar",
                "pass e.g. min_logvar=-6.0, max_logvar=6.0",
            )
        self.min_logvar, self.max_logvar = float(min_logvar), float(max_logvar)
        self.body = nn.Sequential(*_mlp((input_dim, *hidden)))
        self.head = nn.Linear(hidden[-1], 2 * latent_dim)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(x.flatten(1))).chunk(2, dim=-1)
        return mu, logvar.clamp(self.min_logvar, self.max_logvar)


class MLPDecoder(nn.Module):
    """``p(x|z)``: an MLP from the latent to the parameters of the observation model.

    Returns Bernoulli logits, or Gaussian means (``likelihood="gaussian"``, fixed
    standard deviation held by :class:`CMIM`), of shape ``(N, output_dim)``. Its ReLU
    layers are the hidden states that :func:`informative_embeddings` reads.
    """

    def __init__(
        self, latent_dim: int = 16, hidden: Sequence[int] = (256, 256), output_dim: int = 784
    ):
        super().__init__()
        owner = "MLPDecoder"
        latent_dim = _check_dim(latent_dim, owner, "latent_dim")
        output_dim = _check_dim(output_dim, owner, "output_dim")
        hidden = _check_sizes(hidden, owner)
        self.net = nn.Sequential(*_mlp((latent_dim, *hidden)), nn.Linear(hidden[-1], output_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class CMIM(nn.Module):
    """A-MIM encoder-decoder with the cMIM contrastive term (Livne, arXiv 2509.21511).

    ``loss(x)`` draws ``z ~ q(z|x)`` by reparameterisation and returns a dict:

    * ``"loss"``: ``mim + contrastive_weight * contrastive`` (0-d, what to minimise);
    * ``"mim"``: :func:`a_mim_loss` (batch mean);
    * ``"contrastive"``: :func:`cmim_contrastive` on the sampled codes (batch mean;
      ``positive="self"`` compares the codes with each other, ``"mean"`` with the encoder
      means; both readings are unverified, see that function);
    * ``"log_px_given_z"``, ``"log_pz"``, ``"log_qz_given_x"``: batch means of the terms;
    * ``"z"``, ``"mu"``, ``"logvar"``, ``"x_param"``: the tensors they came from.

    ``contrastive_weight = 1`` (default) follows the unit-weighted log-probability factors
    described for cMIM (arXiv 2606.11508 abstract; not verified in 2509.21511);
    ``contrastive_weight = 0`` is plain A-MIM (see :class:`MIM`). ``temperature = 0.1``
    is our default: the paper's value was not read. ``P(z) = N(0, I)``.

    ``likelihood``: ``"bernoulli"`` (x in [0, 1], decoder logits) or ``"gaussian"``
    (decoder means, fixed ``x_std``). ``encoder`` / ``decoder`` replace the default MLPs:
    the encoder maps ``(N, *input_shape)`` to ``(mu, logvar)``, the decoder ``(N, latent)``
    to ``(N, prod(input_shape))``.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 16,
        hidden: Sequence[int] = (256, 256),
        *,
        likelihood: str = "bernoulli",
        x_std: float = 0.1,
        temperature: float = 0.1,
        contrastive_weight: float = 1.0,
        positive: str = "self",
        beta: float = 1.0,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ):
        super().__init__()
        owner = type(self).__name__
        self.input_shape = tuple(int(s) for s in input_shape)
        self.input_dim = math.prod(self.input_shape)
        self.likelihood = check_choice(likelihood, owner, "likelihood", LIKELIHOODS)
        self.positive = check_choice(positive, owner, "positive", POSITIVES)
        self.x_std = check_positive_number(x_std, owner, "x_std", "pass e.g. x_std=0.1")
        self.temperature = check_temperature(temperature, owner)
        self.contrastive_weight = check_in_range(
            contrastive_weight, owner, "contrastive_weight", 0.0, math.inf, "pass e.g. 1.0"
        )
        self.beta = check_positive_number(beta, owner, "beta", "pass beta=1.0 (MIM)")
        self.latent_dim = _check_dim(latent_dim, owner, "latent_dim")
        self.encoder = encoder or GaussianMLPEncoder(self.input_dim, hidden, latent_dim)
        self.decoder = decoder or MLPDecoder(latent_dim, hidden, self.input_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of ``q(z|x)``, each ``(N, latent_dim)``."""
        self._check_x(x)
        return self.encoder(x)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """The cMIM loss of the batch ``x`` ``(N, *input_shape)`` and its parts (see the
        class docstring). ``generator`` draws the reparameterisation noise."""
        owner = f"{type(self).__name__}.loss"
        self._check_x(x)
        check_batch_size(x.shape[0], owner, "x")
        mu, logvar = self.encoder(x)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
        x_param = self.decoder(z)
        log_px = self._log_px_given_z(x, x_param)
        log_pz = gaussian_log_prob(z, torch.zeros_like(z))
        log_qz = gaussian_log_prob(z, mu, logvar)
        mim = a_mim_loss(log_px, log_pz, log_qz, beta=self.beta)
        keys = mu if self.positive == "mean" else None
        con = cmim_contrastive(z, keys, temperature=self.temperature)
        total = mim + self.contrastive_weight * con if self.contrastive_weight else mim
        return {
            "loss": total,
            "mim": mim,
            "contrastive": con,
            "log_px_given_z": log_px.mean(),
            "log_pz": log_pz.mean(),
            "log_qz_given_x": log_qz.mean(),
            "z": z,
            "mu": mu,
            "logvar": logvar,
            "x_param": x_param,
        }

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.loss(x, generator)["loss"]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's mean at ``z = mu(x)``, shaped like ``x`` (probabilities for a
        Bernoulli decoder)."""
        mu, _ = self.encode(x)
        out = self.decoder(mu)
        out = torch.sigmoid(out) if self.likelihood == "bernoulli" else out
        return out.reshape(x.shape)

    def _log_px_given_z(self, x: torch.Tensor, x_param: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        if self.likelihood == "bernoulli":
            return bernoulli_log_prob(flat, x_param)
        logvar = torch.full_like(x_param, 2.0 * math.log(self.x_std))
        return gaussian_log_prob(flat, x_param, logvar)

    def _check_x(self, x) -> None:
        owner = type(self).__name__
        check_tensor(x, owner, "x")
        if not torch.is_floating_point(x):
            _fail(
                owner,
                "x",
                f"has dtype {x.dtype}",
                "it must be floating point",
                "pass x.float()",
                TypeError,
            )
        if tuple(x.shape[1:]) != self.input_shape and not (
            x.dim() == 2 and x.shape[1] == self.input_dim
        ):
            _fail(
                owner,
                "x",
                f"has shape {tuple(x.shape)}",
                f"it must be (N, {', '.join(map(str, self.input_shape))}) or (N, {self.input_dim})",
                "reshape the batch or build the model with the right input_shape",
            )
        if not bool(torch.isfinite(x).all()):
            _fail(owner, "x", "contains NaN or inf", "inputs must be finite", "clean the batch")
        if self.likelihood == "bernoulli":
            _check_unit_interval(x, owner, "x")


class MIM(CMIM):
    """A-MIM alone (Livne et al. 2019): :class:`CMIM` with ``contrastive_weight=0``. The
    returned ``"contrastive"`` value is still computed, for monitoring only."""

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 16,
        hidden=(256, 256),
        **kwargs,
    ):
        if "contrastive_weight" in kwargs:
            _fail(
                "MIM",
                "contrastive_weight",
                f"is {kwargs['contrastive_weight']!r}",
                "MIM has no contrastive term",
                "use CMIM(contrastive_weight=...) instead",
                TypeError,
            )
        super().__init__(input_shape, latent_dim, hidden, contrastive_weight=0.0, **kwargs)


# ---------------------------------------------------------------------- informative embeddings


@torch.no_grad()
def informative_embeddings(model, x, *, hidden_modules=None, include_latent: bool = True):
    """Training-free "informative embeddings" of a trained encoder-decoder (NOT VERIFIED).

    What could be read (abstracts and reviews of arXiv 2509.21511): a general technique,
    applicable to any encoder-decoder without extra training, that extracts enriched
    features from the **decoder hidden states**. The exact recipe (which layers, which
    latent is decoded, pooling, normalisation) was not read. Implemented reading: decode
    the deterministic code ``mu(x)`` (the mean of ``q(z|x)``) and concatenate, in order,
    ``mu(x)`` (when ``include_latent``) and the outputs of the decoder's hidden layers,
    each flattened to ``(N, -1)``.

    ``model`` needs ``encode(x)`` returning the mean (or a tuple whose first item is the
    mean) and a ``decoder`` module. ``hidden_modules``: the decoder sub-modules whose
    outputs are read; ``None`` takes every activation module inside ``model.decoder``
    (ReLU, GELU, SiLU, Tanh, ELU, LeakyReLU, Softplus: the hidden states of an MLP or
    conv decoder; the output layer has none). Runs in eval mode under ``no_grad`` and
    restores the training flag. Returns ``(N, latent + sum of hidden sizes)``.
    """
    owner = "informative_embeddings"
    check_tensor(x, owner, "x")
    for attr in ("encode", "decoder"):
        if not hasattr(model, attr):
            _fail(
                owner,
                "model",
                f"is a {type(model).__name__} without `{attr}`",
                "it needs encode(x) -> mean (or (mean, ...)) and a `decoder` module",
                "wrap the encoder-decoder to expose both",
                TypeError,
            )
    if hidden_modules is None:
        hidden_modules = [m for m in model.decoder.modules() if isinstance(m, _ACTIVATIONS)]
    if len(hidden_modules) == 0 and not include_latent:
        _fail(
            owner,
            "hidden_modules",
            "is empty and include_latent=False",
            "there is nothing to embed",
            "pass the decoder layers to read, or include_latent=True",
        )
    captured: list[torch.Tensor] = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out: captured.append(out.flatten(1)))
        for m in hidden_modules
    ]
    was_training = model.training
    model.eval()
    try:
        mean = model.encode(x)
        mean = mean[0] if isinstance(mean, tuple | list) else mean
        model.decoder(mean)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    parts = ([mean.flatten(1)] if include_latent else []) + captured
    return torch.cat(parts, dim=1)
