"""Formula references for the optimizers of CATALOG.md that no installable package implements
(AdaX, Funnelled SGDM): plain transcriptions of the formulas into small torch.optim.Optimizer
classes, written from the formulas, not from the specs, one torch op per term.

They are references for tests and `optdsl verify` only; nothing in the compiler imports them."""
from __future__ import annotations

import functools

import torch
from torch.optim import Optimizer


class AdaX(Optimizer):
    """AdaX (Li et al., 2020), CATALOG.md's formula:

        m = b1 m + (1 - b1) g
        v = (1 + b2) v + b2 g^2
        v_hat = v / ((1 + b2)^t - 1)
        p -= lr m / (sqrt(v_hat) + eps)

    with L2 weight decay added to g (0: the bare formula) and `maximize` (g -> -g)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 1e-4), eps=1e-8, weight_decay=0.0, maximize=False):
        if lr < 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0 <= betas[0] < 1:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not betas[1] > 0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if weight_decay < 0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group["maximize"] else p.grad
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(1 + beta2).addcmul_(g, g, value=beta2)
                bias_correction = (1 + beta2) ** t - 1
                denom = (v / bias_correction).sqrt_().add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"])
        return loss


class FunnelledSGDM(Optimizer):
    """Funnelled SGDM, CATALOG.md's formula: SGD with momentum whose per-element step sizes p and
    per-tensor step size s learn by exponentiated gradient,

        p_t = p_{t-1} * exp(gamma_p m_{t-1} * g_t)           (elementwise)
        s_t = s_{t-1} * exp(gamma_s <u_{t-1}, g_t>)          (a dot product over the tensor)
        m_t = beta m_{t-1} + (1 - beta) g_t
        u_t = mu u_{t-1} + eta (p_t * g_t)
        theta_t = theta_{t-1} - s_t u_t

    with p_0 = 1, s_0 = lr, m_0 = u_0 = 0 (so the first step is momentum SGD with step size lr),
    L2 weight decay added to g, and `maximize`. State keys: precond (p), step_size (s, 0-d float32),
    exp_avg (m), momentum_buffer (u)."""

    def __init__(self, params, lr=1e-2, momentum=0.9, beta=0.9, eta=1.0, gamma_p=1e-2, gamma_s=1e-2,
                 weight_decay=0.0, maximize=False):
        if lr < 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(params, dict(lr=lr, momentum=momentum, beta=beta, eta=eta, gamma_p=gamma_p,
                                      gamma_s=gamma_s, weight_decay=weight_decay, maximize=maximize))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group["maximize"] else p.grad
                if group["weight_decay"] != 0:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["precond"] = torch.ones_like(p)
                    state["step_size"] = torch.tensor(group["lr"], dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["momentum_buffer"] = torch.zeros_like(p)
                state["step"] += 1
                pre, s = state["precond"], state["step_size"]
                m, u = state["exp_avg"], state["momentum_buffer"]
                pre.mul_(torch.exp(group["gamma_p"] * m * g))
                s.mul_(torch.exp(group["gamma_s"] * torch.sum(u * g)))
                m.mul_(group["beta"]).add_(g, alpha=1 - group["beta"])
                u.mul_(group["momentum"]).add_(pre * g, alpha=group["eta"])
                p.sub_(u * s)
        return loss


class Averaged(Optimizer):
    """torch.optim.swa_utils.AveragedModel updated after steps of a torch optimizer, as its docs
    train: `opt.step()` then `averaged.update_parameters(model)`, here from step `start` on, every
    `freq` steps (counted per param group, every `step()` call). The averaged weights are exposed
    as `state[p][key]` beside the wrapped optimizer's state, where a generated wrapper keeps them
    (specs/wrappers/ema.opt, swa.opt), once AveragedModel has averaged once. `multi_avg_fn` None:
    AveragedModel's default, the running mean (SWA)."""

    def __init__(self, optimizer: Optimizer, key: str, multi_avg_fn=None, start: int = 0, freq: int = 1):
        from collections import OrderedDict
        self.optimizer, self.key, self.multi_avg_fn, self.start, self.freq = optimizer, key, multi_avg_fn, start, freq
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._patch_step_function()
        self.defaults = optimizer.defaults
        self._models: list = []    # per param group: [its params, AveragedModel, steps, the module over them]

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        out = {}
        for params, model, _, _ in self._models:
            if int(model.n_averaged) == 0:
                continue
            for p, avg in zip(params, model.module):
                out[p] = {**self.optimizer.state.get(p, {}), self.key: avg.detach()}
        return {p: out.get(p, s) for p, s in self.optimizer.state.items()} | out

    def add_param_group(self, param_group) -> None:
        self.optimizer.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.optimizer.load_state_dict(state_dict)

    @torch.no_grad()
    def step(self, closure=None):
        from torch.optim.swa_utils import AveragedModel
        loss = self.optimizer.step(closure)
        while len(self._models) < len(self.param_groups):
            # a module over the group's tensors (ParameterList wraps plain tensors in new Parameters,
            # which share their storage): what AveragedModel copies and averages
            params = list(self.param_groups[len(self._models)]["params"])
            holder = torch.nn.ParameterList(params)
            self._models.append([params, AveragedModel(holder, multi_avg_fn=self.multi_avg_fn), 0, holder])
        for entry in self._models:
            entry[2] += 1
            steps = entry[2]
            if steps > self.start and (steps - self.start) % self.freq == 0:
                entry[1].update_parameters(entry[3])
        return loss


@functools.cache
def _schedule_free_class() -> type:
    """schedulefree's class, stepping on copies of the gradients (made once, on first use)."""
    import schedulefree

    class AdamWScheduleFree(schedulefree.AdamWScheduleFree):
        def step(self, closure=None):
            kept = {}   # param -> its own gradient, given back after the step
            self._copy_grads(kept)
            try:
                if closure is None:
                    return super().step()

                def copying():   # the gradients the closure makes, copied before the step divides them
                    loss = closure()
                    self._copy_grads(kept)
                    return loss
                return super().step(copying)
            finally:
                for p, grad in kept.items():
                    p.grad = grad

        def _copy_grads(self, kept):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        kept[p] = p.grad
                        p.grad = p.grad.clone()
    return AdamWScheduleFree


def schedule_free_adamw(params, **kwargs) -> Optimizer:
    """schedulefree.AdamWScheduleFree (its `foreach` as given), stepping on a copy of each gradient:
    its step divides p.grad in place, where a torch.optim step leaves the gradient as it is (a test
    that feeds one gradient to two optimizers, or steps twice on it, must see it unchanged). Returned in
    train mode, as a generated optimizer starts (schedulefree's starts in eval mode)."""
    opt = _schedule_free_class()(params, **kwargs)
    opt.train()
    return opt
