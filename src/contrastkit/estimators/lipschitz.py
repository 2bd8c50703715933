"""Lipschitz constraints for critics: a gradient penalty on the critic's inputs and
spectrally normalised MLPs.

Both are the "Lipschitz constraint techniques from the GAN literature" with which Ozair,
Lynch, Bengio, van den Oord, Levine & Sermanet, "Wasserstein Dependency Measure for
Representation Learning" (NeurIPS 2019, arXiv 1903.11780) turn a contrastive (CPC /
InfoNCE) critic into a Wasserstein one (see ``estimators.wasserstein``):

- the gradient penalty of Gulrajani, Ahmed, Arjovsky, Dumoulin & Courville, "Improved
  Training of Wasserstein GANs" (NeurIPS 2017, arXiv 1704.00028), Eq. 3:
  ``lambda * E_xhat[(||grad_xhat f(xhat)||_2 - 1)^2]``, the gradient taken with respect
  to the critic's **inputs**; the one-sided form ``max(0, ||grad|| - 1)^2`` of Petzka,
  Fischer & Lukovnikov, "On the regularization of Wasserstein GANs" (ICLR 2018) is an
  option;
- spectral normalisation of Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization
  for Generative Adversarial Networks" (ICLR 2018): every linear layer divided by a
  power-iteration estimate of its largest singular value, so an MLP with 1-Lipschitz
  activations is (up to that estimate) 1-Lipschitz. We use PyTorch's
  ``torch.nn.utils.parametrizations.spectral_norm``, not a copy of the authors' code.

No official WDM/WPC code was found (research notes, ``seeds-A.md`` section 3), and the body
of the WDM paper (which of the two constraints it used in which experiment, the penalty
weight, where the penalty is evaluated) could not be read with the tools available to
us: only its abstract. These helpers therefore implement the two cited GAN techniques
as their own papers define them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from contrastkit.core.validation import (
    _fail,
    check_choice,
    check_flag,
    check_in_range,
    check_reduction,
    check_tensor,
)

__all__ = [
    "gradient_penalty",
    "input_gradient_norms",
    "lipschitz_upper_bound",
    "spectral_norm_mlp",
]

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "elu": nn.ELU}


def _check_inputs(inputs: Sequence, owner: str) -> list[torch.Tensor]:
    if len(inputs) == 0:
        _fail(owner, "inputs", "is empty", "pass at least one tensor", "pass e.g. (x, y)")
    out = []
    for k, t in enumerate(inputs):
        arg = f"inputs[{k}]"
        check_tensor(t, owner, arg)
        if not torch.is_floating_point(t):
            _fail(
                owner,
                arg,
                f"has dtype {t.dtype}",
                "a gradient needs floating-point inputs",
                f"cast with {arg}.float()",
                TypeError,
            )
        if t.dim() < 1 or t.shape[0] != inputs[0].shape[0]:
            _fail(
                owner,
                arg,
                f"has shape {tuple(t.shape)}",
                f"every input needs the same leading batch size ({inputs[0].shape[0]})",
                "pass row-aligned tensors, one row per evaluation point",
            )
        if not bool(torch.isfinite(t).all()):
            _fail(owner, arg, "contains NaN or inf", "inputs must be finite", "clean the data")
        # A leaf copy when nothing upstream needs the gradient, so autograd.grad can reach it.
        out.append(t if t.requires_grad else t.detach().requires_grad_(True))
    return out


def input_gradient_norms(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
    """Per-row norm ``||grad_{(inputs[0][n], inputs[1][n], ...)} fn(...)[n]||_2``, shape (N,).

    ``fn(*inputs)`` must return one scalar per row, shape (N,), and row n of the output
    must depend on row n of the inputs only (no batch norm or other mixing across rows):
    then the gradient of the sum is the stack of the per-row gradients. The gradients of
    all inputs of a row are concatenated before the norm (the critic's inputs are the
    pair ``(x, y)`` jointly). Built with ``create_graph=True``, so the norms can be
    back-propagated to the parameters of ``fn`` (double backward).
    """
    owner = "input_gradient_norms"
    if not callable(fn):
        _fail(
            owner,
            "fn",
            f"is a {type(fn).__name__}",
            "it must be callable",
            "pass a critic",
            TypeError,
        )
    leaves = _check_inputs(inputs, owner)
    out = fn(*leaves)
    n = leaves[0].shape[0]
    if not isinstance(out, torch.Tensor) or out.shape != (n,):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        _fail(
            owner,
            "fn",
            f"returned {got}",
            f"it must return one scalar per row, shape ({n},)",
            "return e.g. torch.diagonal(critic(x, y)) for a (B, B) critic",
        )
    grads = torch.autograd.grad(out.sum(), leaves, create_graph=True, allow_unused=True)
    # An input the critic ignores contributes a zero gradient, not an error.
    sq = sum(
        (g.reshape(n, -1).pow(2).sum(1) if g is not None else leaves[0].new_zeros(n)) for g in grads
    )
    # sqrt has an infinite derivative at 0; the clamp keeps double backward finite there.
    return sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt()


def gradient_penalty(
    fn: Callable[..., torch.Tensor],
    *inputs: torch.Tensor,
    target: float = 1.0,
    one_sided: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """WGAN-GP gradient penalty on the critic's inputs (Gulrajani et al. 2017, Eq. 3).

    ``(||grad f(xhat_n)||_2 - target)^2`` per row n (``one_sided=True``:
    ``max(0, ||grad|| - target)^2``, Petzka et al. 2018, which only penalises slopes above
    ``target``), then ``reduction`` ("mean" = the expectation of Eq. 3, "sum", "none").
    The weight ``lambda`` is applied by the caller. Where the points ``xhat`` are sampled
    is the caller's choice too: WGAN-GP uses random interpolates between real and
    generated samples; ``estimators.wasserstein.wpc_loss`` interpolates between samples of
    the joint and of the product of marginals. ``fn`` and ``inputs`` are as in
    :func:`input_gradient_norms`; differentiable in ``fn``'s parameters.
    """
    owner = "gradient_penalty"
    target = check_in_range(target, owner, "target", 0.0, float("inf"), "pass e.g. target=1.0")
    one_sided = check_flag(one_sided, owner, "one_sided")
    reduction = check_reduction(reduction, owner)
    norms = input_gradient_norms(fn, *inputs)
    gap = norms - target
    per_row = (gap.clamp_min(0) if one_sided else gap).pow(2)
    if reduction == "none":
        return per_row
    return per_row.sum() if reduction == "sum" else per_row.mean()


def spectral_norm_mlp(
    sizes: Sequence[int],
    activation: str = "relu",
    bias: bool = True,
    n_power_iterations: int = 1,
) -> nn.Sequential:
    """An MLP ``sizes[0] -> ... -> sizes[-1]`` whose linear layers are spectrally normalised
    (Miyato et al. 2018, Sec. 2.1: ``W / sigma(W)``), via
    ``torch.nn.utils.parametrizations.spectral_norm``.

    With 1-Lipschitz activations (``relu``, ``leaky_relu``, ``tanh``, ``elu``) the network is
    1-Lipschitz in the l2 norm as far as the power-iteration estimate ``sigma`` is exact:
    it is refined by ``n_power_iterations`` steps at each forward pass in training mode
    (15 at construction), and never overestimates ``sigma``, so a layer's true norm can
    exceed 1 slightly while the estimate converges. No activation after the last layer.
    """
    owner = "spectral_norm_mlp"
    if isinstance(sizes, str | bytes) or not isinstance(sizes, Sequence) or len(sizes) < 2:
        _fail(
            owner,
            "sizes",
            f"is {sizes!r}",
            "it must list >= 2 layer widths",
            "pass e.g. (8, 64, 1)",
        )
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            _fail(
                owner,
                "sizes",
                f"is {list(sizes)!r}",
                "widths must be integers >= 1",
                "pass e.g. (8, 64, 1)",
            )
    check_choice(activation, owner, "activation", tuple(ACTIVATIONS))
    check_flag(bias, owner, "bias")
    if (
        isinstance(n_power_iterations, bool)
        or not isinstance(n_power_iterations, int)
        or n_power_iterations < 1
    ):
        _fail(
            owner,
            "n_power_iterations",
            f"is {n_power_iterations!r}",
            "it must be an integer >= 1",
            "pass e.g. n_power_iterations=1",
        )
    spectral_norm = nn.utils.parametrizations.spectral_norm
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(
            spectral_norm(nn.Linear(a, b, bias=bias), n_power_iterations=n_power_iterations)
        )
        if k < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def lipschitz_upper_bound(module: nn.Module) -> float:
    """Product of the exact l2 operator norms (largest singular values, by SVD) of the
    ``nn.Linear`` layers of ``module``, in registration order: an upper bound on the
    Lipschitz constant of a feed-forward stack of those layers with 1-Lipschitz
    activations in between (the bound of Miyato et al. 2018, Sec. 2.1). Uses each layer's
    effective weight, so a spectrally normalised layer counts as ``W / sigma_hat``.
    Raises if ``module`` holds no linear layer.
    """
    owner = "lipschitz_upper_bound"
    if not isinstance(module, nn.Module):
        _fail(
            owner,
            "module",
            f"is a {type(module).__name__}",
            "it must be an nn.Module",
            "pass a network",
            TypeError,
        )
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        _fail(
            owner,
            "module",
            "has no nn.Linear layer",
            "the bound multiplies linear-layer norms",
            "pass an MLP",
        )
    bound = 1.0
    # Eval mode: reading a spectrally normalised weight in training mode would run (and
    # store) a power-iteration step, a side effect a measurement must not have.
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            for layer in linears:
                bound *= float(torch.linalg.matrix_norm(layer.weight.double(), ord=2))
    finally:
        for m, training in modes:
            m.training = training
    return bound
