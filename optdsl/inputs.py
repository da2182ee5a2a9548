"""The `input`s of a spec (`input hessian = hutchinson(n_samples, update_each, avg_conv_kernel)`),
estimated at the start of each step, before any group's update, into the tensor state of the
input's name, which the update reads like `grad` on every path.

hutchinson: the Hessian's diagonal as timm's Adahessian estimates it. For each probe, Rademacher
z (±1) for every parameter with a gradient, from one generator seeded 2147483647 on the first such
parameter's device and drawn in parameter order, as timm draws them; Hz from one
torch.autograd.grad over the gradients' graph (`loss.backward(create_graph=True)`); the estimate
is the mean of z ⊙ Hz over the probes. A tensor's estimate is renewed on every `every`-th of its
steps (counted in its state, "<input> step", as timm counts "hessian step") and kept between.
With `average_conv`, a 4-D tensor (a conv kernel) takes |estimate| averaged over its two spatial
dims, broadcast back. With the same gradients the probes are timm's own, so the estimates agree
exactly; on a separable loss (a diagonal Hessian) z ⊙ Hz is the diagonal whatever z is."""
from __future__ import annotations

import torch
from torch import Tensor

from . import precision

SEED = 2147483647   # timm's Adahessian generator seed


def estimate(opt) -> None:
    for key, (estimator, settings) in opt._inputs.items():
        ESTIMATORS[estimator](opt, key, settings)


def _count(value) -> int:
    return int(value.item()) if isinstance(value, Tensor) else int(value)


@torch.no_grad()
def hutchinson(opt, key: str, settings: dict[str, str]) -> None:
    counter = f"{key} step"
    renew: dict[int, list[tuple[Tensor, dict]]] = {}   # probes -> the tensors to estimate afresh
    for gi, group in enumerate(opt.param_groups):
        for i, p in enumerate(group["params"]):
            if p.grad is None or not p.requires_grad:
                continue
            state = opt.state[p]
            every, samples, seen = _count(group[settings["every"]]), _count(group[settings["samples"]]), \
                _count(state.get(counter, 0))
            if every < 1 or samples < 1:
                raise ValueError(f"{type(opt).__name__}: {settings['every']} and {settings['samples']} must be "
                                 f"at least 1, got {every} and {samples}")
            if seen % every == 0 or key not in state:
                if p.grad.grad_fn is None:
                    raise RuntimeError(
                        f"{type(opt).__name__} estimates its input '{key}' from the gradient's graph: compute the "
                        f"gradients with loss.backward(create_graph=True) before step(); "
                        f"{opt._param_label(group, i)} has a gradient without a graph")
                renew.setdefault(samples, []).append((p, group))
            state[counter] = seen + 1
    for samples, chosen in renew.items():
        params = [p for p, _ in chosen]
        if getattr(opt, "_hutchinson_generator", None) is None or opt._hutchinson_generator.device != params[0].device:
            opt._hutchinson_generator = torch.Generator(params[0].device).manual_seed(SEED)
        gen = opt._hutchinson_generator
        grads = [p.grad for p in params]
        sums: list[Tensor | float] = [0.0] * len(params)
        for k in range(samples):
            zs = [torch.randint(0, 2, p.size(), generator=gen, device=p.device) * 2.0 - 1.0 for p in params]
            h_zs = torch.autograd.grad(grads, params, grad_outputs=zs, only_inputs=True, retain_graph=k < samples - 1)
            for j, (h_z, z) in enumerate(zip(h_zs, zs)):
                sums[j] = sums[j] + h_z * z / samples
        for (p, group), value in zip(chosen, sums):
            opt.state[p][key] = torch.as_tensor(value).to(precision.state_dtype_of(p, group)).detach()
    for group in opt.param_groups:   # timm averages every step, the kept estimates too (idempotent)
        if not group[settings["average_conv"]]:
            continue
        for p in group["params"]:
            h = opt.state.get(p, {}).get(key)
            if h is not None and p.grad is not None and h.dim() == 4:
                opt.state[p][key] = torch.abs(h).mean(dim=[2, 3], keepdim=True).expand_as(h).clone()


ESTIMATORS = {"hutchinson": hutchinson}
