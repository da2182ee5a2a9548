"""Gradients without backprop, written into `.grad` so that any optimizer (generated or
torch.optim) steps on them.

* `spsa(params, closure)`: the two-point zeroth-order estimate (SPSA with Rademacher
  directions, or Gaussian ones as in Gradient-Less Descent and MeZO). For a direction z,
  g ≈ (L(θ + εz) - L(θ - εz)) / (2ε) · z. The closure only evaluates the loss, under
  `torch.no_grad()`: inference memory, no graph.
* `forward_gradient(model, closure)`: the forward gradient of Baydin et al. (2022): the
  directional derivative ∇L·v from one forward-mode pass (`torch.func.jvp`) with a Gaussian
  tangent v, and g ≈ (∇L·v) v.

Both are unbiased where E[z zᵀ] = I: exactly so on a quadratic loss, where the central
difference has no O(ε²) term. Per component the variance of one probe is ‖∇L‖² - gᵢ²
(Rademacher) or ‖∇L‖² + gᵢ² (Gaussian), so `probes` averaged directions divide it by `probes`.

Memory. The directions are never stored: each tensor's direction is regenerated from
(seed, probe, tensor index) whenever it is needed, one tensor-sized temporary at a time, as MeZO
does. `spsa` perturbs the params in place and moves them back, so beyond `.grad` it needs no
parameter-sized buffer; moving back by +εz - 2εz + εz returns each element to within a few
rounding errors of ε|z| (MeZO accepts that drift). `restore="exact"` keeps one copy of the
params instead and puts them back bit for bit. `forward_gradient` holds the tangents (one
parameter-sized set) and the jvp's tangent activations, never a backward graph."""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import Tensor

DISTRIBUTIONS = ("rademacher", "gaussian")


def _direction(p: Tensor, seed: int, probe: int, index: int, distribution: str) -> Tensor:
    """Tensor `index`'s direction for `probe`: the same values each time it is asked for."""
    g = torch.Generator(device=p.device).manual_seed(((seed * 1_000_003 + probe) * 1_000_033 + index) % (1 << 63))
    if distribution == "gaussian":
        return torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype)
    return torch.randint(0, 2, p.shape, generator=g, device=p.device).to(p.dtype).mul_(2).sub_(1)


def _checked(params, probes: int, seed: int | None, what: str) -> tuple[list[Tensor], int]:
    params = [p for p in params]
    if not params:
        raise ValueError(f"{what}: no parameters")
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"{what}: probes must be a positive integer, got {probes!r}")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor) or not p.is_floating_point():
            raise TypeError(f"{what}: parameter {i} is not a floating-point tensor")
    if seed is None:   # from torch's generator: reproducible under torch.manual_seed
        seed = int(torch.randint(0, 2 ** 31 - 1, ()).item())
    return params, int(seed)


def _loss_value(loss, what: str) -> float:
    if isinstance(loss, Tensor):
        if loss.numel() != 1:
            raise ValueError(f"{what}: the closure must return one number, got a tensor of shape {tuple(loss.shape)}")
        return float(loss.detach())
    return float(loss)


@torch.no_grad()
def spsa(params: Iterable[Tensor], closure: Callable[[], Tensor | float], *, eps: float = 1e-3, probes: int = 1,
         seed: int | None = None, distribution: str = "rademacher", restore: str = "inplace") -> float:
    """Set each param's `.grad` to the two-point estimate averaged over `probes` directions;
    returns the mean of the losses evaluated (the loss at θ, to O(ε²)). `closure()` evaluates
    the loss at the params as they are; it runs under torch.no_grad. `seed` picks the
    directions (None: drawn from torch's generator); `restore`: "inplace" (no buffer, back to
    within rounding) or "exact" (one copy of the params, back bit for bit)."""
    params, seed = _checked(params, probes, seed, "spsa")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"spsa: eps must be a positive finite number, got {eps!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"spsa: distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if restore not in ("inplace", "exact"):
        raise ValueError(f"spsa: restore must be 'inplace' or 'exact', got {restore!r}")
    saved = [p.detach().clone() for p in params] if restore == "exact" else None

    def move(probe: int, scale: float) -> None:
        for i, p in enumerate(params):
            p.add_(_direction(p, seed, probe, i, distribution), alpha=scale)

    projected, losses = [], []
    for probe in range(probes):
        move(probe, eps)
        plus = _loss_value(closure(), "spsa")
        move(probe, -2 * eps)
        minus = _loss_value(closure(), "spsa")
        if saved is None:
            move(probe, eps)
        else:
            for p, s in zip(params, saved):
                p.copy_(s)
        projected.append((plus - minus) / (2 * eps))
        losses += [plus, minus]
    _set_grads(params, projected, lambda p, probe, i: _direction(p, seed, probe, i, distribution))
    return sum(losses) / len(losses)


def forward_gradient(model: torch.nn.Module, closure: Callable[[], Tensor], *, probes: int = 1,
                     seed: int | None = None, params: Iterable[Tensor] | None = None) -> float:
    """Set `.grad` of the model's parameters (those that require grad, or `params`, which must be
    the model's) to the forward gradient averaged over `probes` Gaussian tangents; returns the
    loss. `closure()` computes the loss by calling the model (or its submodules)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is not None:
        chosen = {id(p) for p in params}
        named = [(n, p) for n, p in named if id(p) in chosen]
        if len(named) != len(chosen):
            raise ValueError("forward_gradient: `params` must be parameters of the model that require grad")
    names = [n for n, _ in named]
    tensors, seed = _checked([p for _, p in named], probes, seed, "forward_gradient")
    holder = _Calling(model, closure)

    def loss_at(*values):
        return torch.func.functional_call(holder, {"model." + n: v for n, v in zip(names, values)}, ())

    primals = tuple(p.detach() for p in tensors)
    projected, loss = [], None
    for probe in range(probes):
        tangents = tuple(_direction(p, seed, probe, i, "gaussian") for i, p in enumerate(primals))
        value, derivative = torch.func.jvp(loss_at, primals, tangents)
        loss = _loss_value(value, "forward_gradient")
        projected.append(_loss_value(derivative, "forward_gradient"))
    _set_grads(tensors, projected, lambda p, probe, i: _direction(p, seed, probe, i, "gaussian"))
    return loss


class _Calling(torch.nn.Module):
    """The model as a submodule and the closure as forward: functional_call swaps the model's
    parameters for the jvp's inputs while the closure runs."""

    def __init__(self, model: torch.nn.Module, closure):
        super().__init__()
        self.model = model
        self._closure = closure

    def forward(self):
        return self._closure()


@torch.no_grad()
def _set_grads(params: list[Tensor], projected: list[float], direction) -> None:
    """grad = mean over probes of projected[probe] · direction(probe), each direction made again."""
    for i, p in enumerate(params):
        grad = p.grad if p.grad is not None and p.grad.shape == p.shape and p.grad.dtype == p.dtype \
            and not p.grad.is_sparse else torch.zeros_like(p)   # the buffer backprop would have used
        grad.zero_()
        for probe, d in enumerate(projected):
            grad.add_(direction(p, probe, i), alpha=d / len(projected))
        p.grad = grad
