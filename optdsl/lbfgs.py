"""L-BFGS, iterate for iterate and state key for state key as torch.optim.LBFGS runs it.

It is not a spec. Its step calls the closure again at trial points, repeats inner iterations
until tolerances stop it, and walks a history of flat vectors. docs/language.md § "What a spec
cannot say (yet)" says why none of these fit a per-step update. So it is Python control flow
around a few flat-vector primitives (`FlatParams`). Those primitives are the only thing the
loop and foreach paths do differently, and both do it in the same arithmetic. torch's algorithm
is kept exactly, rounding included: the concatenated gradient, one `dot` over it, the same
cubic interpolation and the same bracketing and zoom of the strong-Wolfe search, so the
iterates and the state_dict are torch's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.optim.optimizer import _to_scalar

# the state torch keeps, all of it on the first parameter (load_state_dict casts it from there)
STATE_KEYS = frozenset({"func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
                        "prev_flat_grad", "prev_loss", "al"})
LINE_SEARCHES = (None, "strong_wolfe")
# a curvature pair enters the history only when y·s exceeds this (torch's threshold)
CURVATURE_MIN = 1e-10
# the strong-Wolfe constants torch uses: sufficient decrease c1, curvature c2
WOLFE_C1, WOLFE_C2 = 1e-4, 0.9


class FlatParams:
    """The group's parameters as one real vector of their concatenation (complex ones as their
    real views): the gradient gathered flat, a step along a flat direction, and the saved point
    a line search returns to. `foreach` writes every parameter in one foreach call."""

    def __init__(self, params: list[Tensor], foreach: bool):
        self.params = params
        self.foreach = foreach
        self.numel = sum(2 * p.numel() if torch.is_complex(p) else p.numel() for p in params)

    def reals(self) -> list[Tensor]:
        return [torch.view_as_real(p) if torch.is_complex(p) else p for p in self.params]

    def flat_grad(self) -> Tensor:
        views = []
        for p in self.params:
            if p.grad is None:   # a parameter the loss does not reach has gradient zero
                view = p.new(p.numel()).zero_()
            elif p.grad.is_sparse:
                view = p.grad.to_dense().view(-1)
            else:
                view = p.grad.view(-1)
            views.append(torch.view_as_real(view).view(-1) if torch.is_complex(view) else view)
        return torch.cat(views, 0)

    def slices(self, flat: Tensor, reals: list[Tensor]) -> list[Tensor]:
        out, offset = [], 0
        for r in reals:
            out.append(flat[offset:offset + r.numel()].view_as(r))
            offset += r.numel()
        if offset != self.numel:
            raise AssertionError(f"a flat vector of {self.numel} covers {offset} parameter elements")
        return out

    def add_(self, step, direction: Tensor) -> None:
        """param += step · direction, each parameter its slice."""
        reals = self.reals()
        parts = self.slices(direction, reals)
        if self.foreach:
            torch._foreach_add_(reals, parts, alpha=step)
        else:
            for r, part in zip(reals, parts):
                r.add_(part, alpha=step)

    def save(self) -> list[Tensor]:
        return [p.clone(memory_format=torch.contiguous_format) for p in self.params]

    def restore(self, saved: list[Tensor]) -> None:
        if self.foreach:
            torch._foreach_copy_(self.params, saved)
        else:
            for p, value in zip(self.params, saved, strict=True):
                p.copy_(value)


def cubic_minimum(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimizer of the cubic through (x1, f1) and (x2, f2) with slopes g1 and g2, clamped to
    `bounds` (default: between the two points); their midpoint where the cubic has no minimum,
    or a NaN leaves that unknown."""
    lo, hi = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 ** 2 - g1 * g2
    if not d2_square >= 0:   # also NaN: torch then bisects, and so must we
        return (lo + hi) / 2.0
    d2 = d2_square.sqrt()
    if x1 <= x2:
        at = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        at = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(at, lo), hi)


@dataclass
class Trial:
    """One point of a line search: step t, loss f, flat gradient g, slope gtd = g·d."""
    t: object
    f: float
    g: Tensor
    gtd: object


def strong_wolfe(evaluate: Callable, t, d: Tensor, f: float, g: Tensor, gtd, tolerance_change: float = 1e-9,
                 max_evals: int = 25):
    """A step along d satisfying the strong Wolfe conditions (Nocedal & Wright, Algorithms 3.5 and
    3.6, with cubic interpolation), from the point (0, f, g, gtd). `evaluate(t)` gives the loss and
    flat gradient at x + t·d. Returns (loss, gradient, t, evaluations)."""
    d_norm = d.abs().max()
    start = Trial(0, f, g.clone(memory_format=torch.contiguous_format), gtd)
    f_new, g_new = evaluate(t)
    evals = 1
    new = Trial(t, f_new, g_new, g_new.dot(d))
    prev = start
    bracket: list[Trial] | None = None
    done = False
    searches = 0
    # widen the step until an interval brackets an acceptable point, or the point is acceptable
    while searches < max_evals:
        if new.f > (f + WOLFE_C1 * new.t * gtd) or (searches > 1 and new.f >= prev.f):
            bracket = [prev, _kept(new)]
            break
        if abs(new.gtd) <= -WOLFE_C2 * gtd:
            bracket, done = [new], True
            break
        if new.gtd >= 0:
            bracket = [prev, _kept(new)]
            break
        low, high = new.t + 0.01 * (new.t - prev.t), new.t * 10
        t = cubic_minimum(prev.t, prev.f, prev.gtd, new.t, new.f, new.gtd, bounds=(low, high))
        prev = _kept(new)
        f_new, g_new = evaluate(t)
        evals += 1
        new = Trial(t, f_new, g_new, g_new.dot(d))
        searches += 1
    if searches == max_evals:   # out of evaluations: the start and the last point
        bracket = [Trial(0, f, start.g, None), Trial(new.t, new.f, new.g, None)]

    # shrink the bracket by interpolation until its best point is acceptable
    low_i, high_i = (0, 1) if bracket[0].f <= bracket[-1].f else (1, 0)
    stalled = False
    while not done and searches < max_evals:
        a, b = bracket
        if abs(b.t - a.t) * d_norm < tolerance_change:
            break
        t = cubic_minimum(a.t, a.f, a.gtd, b.t, b.f, b.gtd)
        # a point too near an end twice running, or outside, is moved a tenth of the width inside
        t_max, t_min = max(a.t, b.t), min(a.t, b.t)
        margin = 0.1 * (t_max - t_min)
        if min(t_max - t, t - t_min) < margin:
            if stalled or t >= t_max or t <= t_min:
                t = t_max - margin if abs(t - t_max) < abs(t - t_min) else t_min + margin
                stalled = False
            else:
                stalled = True
        else:
            stalled = False
        f_new, g_new = evaluate(t)
        evals += 1
        new = Trial(t, f_new, g_new, g_new.dot(d))
        searches += 1
        if new.f > (f + WOLFE_C1 * t * gtd) or new.f >= bracket[low_i].f:
            bracket[high_i] = _kept(new)
            low_i, high_i = (0, 1) if bracket[0].f <= bracket[1].f else (1, 0)
        else:
            if abs(new.gtd) <= -WOLFE_C2 * gtd:
                done = True
            elif new.gtd * (bracket[high_i].t - bracket[low_i].t) >= 0:
                bracket[high_i] = bracket[low_i]
            bracket[low_i] = _kept(new)
    best = bracket[low_i]
    return best.f, best.g, best.t, evals


def _kept(trial: Trial) -> Trial:
    return Trial(trial.t, trial.f, trial.g.clone(memory_format=torch.contiguous_format), trial.gtd)


class LBFGS(torch.optim.Optimizer):
    """torch.optim.LBFGS's algorithm, arguments and state_dict, with a foreach path.

    `foreach=True` moves every parameter along a direction, and restores them after a line-search
    trial, in one foreach call each. The arithmetic is the same, so the iterates are the same.
    There is no fused path: each inner iteration is a few dot products and axpys over one flat
    vector, between closure calls that dominate its cost. Memory, as torch's:
    `(2 · history_size + 3)` flat vectors of every parameter element.
    """

    def __init__(self, params, lr: float | Tensor = 1, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None, *, foreach: bool | None = None, fused: bool | None = None):
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        for name, value in (("max_iter", max_iter), ("max_eval", max_eval), ("history_size", history_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {name}: {value!r} (a whole number of at least 1)")
        for name, value in (("tolerance_grad", tolerance_grad), ("tolerance_change", tolerance_change)):
            if not 0.0 <= value:
                raise ValueError(f"Invalid {name}: {value}")
        if line_search_fn not in LINE_SEARCHES:
            raise ValueError(f"Invalid line_search_fn: {line_search_fn!r}; LBFGS has "
                             f"{' or '.join(map(repr, LINE_SEARCHES))}")
        if fused:
            raise ValueError("LBFGS has no fused path: an inner iteration is a few dot products over one flat "
                             "vector between closure calls; use foreach=True")
        defaults = {"lr": lr, "max_iter": max_iter, "max_eval": max_eval, "tolerance_grad": tolerance_grad,
                    "tolerance_change": tolerance_change, "history_size": history_size,
                    "line_search_fn": line_search_fn, "foreach": foreach}
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")

    def _flat(self) -> FlatParams:
        group = self.param_groups[0]
        return FlatParams(group["params"], bool(group.get("foreach")))

    def load_state_dict(self, state_dict) -> None:
        """Refuses, before changing anything, another optimizer's state: LBFGS keeps all of its
        state on the first parameter, under torch's keys."""
        if isinstance(state_dict, dict) and isinstance(state_dict.get("state"), dict):
            for key, entry in state_dict["state"].items():
                unknown = sorted(map(str, set(entry) - STATE_KEYS)) if isinstance(entry, dict) else [repr(entry)]
                if unknown:
                    raise ValueError(f"LBFGS.load_state_dict: the state of parameter {key!r} has {unknown}, which "
                                     f"LBFGS does not keep (LBFGS keeps {sorted(STATE_KEYS)}); is this another "
                                     "optimizer's state_dict?")
        foreach = self.param_groups[0].get("foreach")
        super().load_state_dict(state_dict)
        # torch's LBFGS saves no foreach key: a checkpoint of it keeps this optimizer's path
        self.param_groups[0].setdefault("foreach", foreach)

    @torch.no_grad()
    def step(self, closure=None):
        """Up to max_iter inner iterations, each calling `closure` (which must recompute the loss,
        call backward and return the loss) once, or once per line-search trial. Returns the loss
        of the first call, as torch does."""
        if closure is None:
            raise TypeError("LBFGS.step needs a closure that zeroes the gradients, recomputes the loss, calls "
                            "backward() and returns the loss: it evaluates the loss several times per step")
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        closure = torch.enable_grad()(closure)
        group = self.param_groups[0]
        lr = _to_scalar(group["lr"])
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        flat = self._flat()
        state = self.state[flat.params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        first_loss = closure()
        loss = float(first_loss)
        evals = 1
        state["func_evals"] += 1
        flat_grad = flat.flat_grad()
        if flat_grad.abs().max() <= tolerance_grad:   # already optimal
            return first_loss
        d, t = state.get("d"), state.get("t")
        prev_flat_grad, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")
        history = History(state, group["history_size"])

        for inner in range(1, max_iter + 1):
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = flat_grad.neg()
                history.clear()
            else:
                history.push(flat_grad.sub(prev_flat_grad), d.mul(t))
                d = history.direction(flat_grad)
            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.clone(memory_format=torch.contiguous_format)
            else:
                prev_flat_grad.copy_(flat_grad)
            prev_loss = loss
            # the first step of a run is scaled so that its largest move is at most lr
            t = min(1.0, 1.0 / flat_grad.abs().sum()) * lr if state["n_iter"] == 1 else lr
            gtd = flat_grad.dot(d)
            if gtd > -tolerance_change:   # not a descent direction any more
                break

            step_evals = 0
            optimal = False
            if group["line_search_fn"] == "strong_wolfe":
                start = flat.save()

                def evaluate(trial_t):
                    flat.add_(trial_t, d)
                    trial_loss = float(closure())
                    trial_grad = flat.flat_grad()
                    flat.restore(start)
                    return trial_loss, trial_grad

                loss, flat_grad, t, step_evals = strong_wolfe(evaluate, t, d, loss, flat_grad, gtd,
                                                              max_evals=max_eval - evals)
                flat.add_(t, d)
                optimal = flat_grad.abs().max() <= tolerance_grad
            else:
                flat.add_(t, d)
                if inner != max_iter:   # the last iteration's loss would go unused
                    loss = float(closure())
                    flat_grad = flat.flat_grad()
                    optimal = flat_grad.abs().max() <= tolerance_grad
                    step_evals = 1
            evals += step_evals
            state["func_evals"] += step_evals

            if inner == max_iter or evals >= max_eval or optimal:
                break
            if d.mul(t).abs().max() <= tolerance_change:   # the step no longer moves the params
                break
            if abs(loss - prev_loss) < tolerance_change:   # nor the loss
                break

        state.update(d=d, t=t, prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        history.store()
        return first_loss


class History:
    """The last history_size curvature pairs (y = Δgradient, s = step) with ρ = 1 / y·s, and the
    scale of the initial inverse Hessian, kept in torch's state layout (old_dirs, old_stps, ro,
    H_diag, al)."""

    def __init__(self, state: dict, size: int):
        self.state, self.size = state, size
        self.ys: list[Tensor] = state.get("old_dirs")
        self.ss: list[Tensor] = state.get("old_stps")
        self.rho: list = state.get("ro")
        self.scale = state.get("H_diag")

    def clear(self) -> None:
        self.ys, self.ss, self.rho, self.scale = [], [], [], 1

    def push(self, y: Tensor, s: Tensor) -> None:
        """Keep the pair only where it carries positive curvature (y·s above CURVATURE_MIN)."""
        ys = y.dot(s)
        if not ys > CURVATURE_MIN:
            return
        if len(self.ys) == self.size:
            del self.ys[0], self.ss[0], self.rho[0]
        self.ys.append(y)
        self.ss.append(s)
        self.rho.append(1.0 / ys)
        self.scale = ys / y.dot(y)

    def direction(self, flat_grad: Tensor) -> Tensor:
        """−H·g by the two-loop recursion, newest pair first, then oldest first."""
        alphas = self.state.setdefault("al", [None] * self.size)
        q = flat_grad.neg()
        for i in reversed(range(len(self.ys))):
            alphas[i] = self.ss[i].dot(q) * self.rho[i]
            q.add_(self.ys[i], alpha=-alphas[i])
        r = torch.mul(q, self.scale)
        for i in range(len(self.ys)):
            beta = self.ys[i].dot(r) * self.rho[i]
            r.add_(self.ss[i], alpha=alphas[i] - beta)
        return r

    def store(self) -> None:
        self.state.update(old_dirs=self.ys, old_stps=self.ss, ro=self.rho, H_diag=self.scale)
