"""What generated optimizers share at run time: the torch.optim-shaped base class
(lazy state, param groups, closures, state_dict checks) and IEEE-safe host math.

Generated modules hold the math; this module holds the plumbing, once."""
from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, _default_to_fused_or_foreach, _get_scalar_dtype

# ---- host math: float64, IEEE results instead of Python exceptions or complex numbers ----


def value(x: Any) -> Any:
    return x.item() if isinstance(x, Tensor) else x


def sqrt(x: float) -> float:
    # `x ** 0.5` is what torch.optim writes for bias_correction2_sqrt; keep its rounding
    return x ** 0.5 if x >= 0 else math.nan


def rsqrt(x: float) -> float:
    return div(1.0, sqrt(x))


def div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        if a == 0 or a != a:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def pow(a: float, b: float) -> float:  # noqa: A001 - mirrors the builtin's name on purpose
    try:
        out = a ** b
    except ZeroDivisionError:
        return math.inf
    except OverflowError:
        return math.inf
    return math.nan if isinstance(out, complex) else out


def exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def log(x: float) -> float:
    if x > 0:
        return math.log(x)
    return -math.inf if x == 0 else math.nan


def sign(x: float) -> float:
    return 0.0 if x == 0 else math.copysign(1.0, x) if x == x else x


def minimum(a: float, b: float) -> float:
    return a if a != a else b if b != b else min(a, b)


def maximum(a: float, b: float) -> float:
    return a if a != a else b if b != b else max(a, b)


def clamp(x: float, lo: float, hi: float) -> float:
    return minimum(maximum(x, lo), hi)


def lerp(a: float, b: float, w: float) -> float:
    # torch's formula, exact at both ends
    return a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (1 - w)


# ---- tensors -----------------------------------------------------------------------------


def like_param(t: Tensor, p: Tensor) -> Tensor:
    """State created from a value computed on a complex param's real view is stored complex, as torch stores it."""
    return torch.view_as_complex(t) if torch.is_complex(p) and not torch.is_complex(t) else t


def real_views(*tensors):
    return tuple(torch.view_as_real(t) if t is not None and torch.is_complex(t) else t for t in tensors)


def real_view_lists(*lists):
    return [[torch.view_as_real(t) if t is not None and torch.is_complex(t) else t for t in ts] for ts in lists]


def per_tensor(fn: Callable, inputs: list[list], kwargs: dict, n: int) -> list[tuple]:
    """fn(*row, **kwargs) for each tensor; tensors sharing inputs (the usual case: one step) share one call."""
    memo: dict[tuple, tuple] = {}
    out = []
    for row in (zip(*inputs) if inputs else [()] * n):
        if row not in memo:
            memo[row] = fn(*row, **kwargs)
        out.append(memo[row])
    return out


def uniform(values: list) -> bool:
    return all(v == values[0] for v in values)


def column(rows: list[tuple], j: int) -> list:
    return [r[j] for r in rows]


def import_sibling(module_file: str, suffix: str):
    """Import `<stem><suffix>.py` beside a generated module (Triton needs kernels in a real file)."""
    path = Path(module_file).with_name(Path(module_file).stem + suffix + ".py")
    name = f"optdsl._kernels.{path.stem}_{abs(hash(str(path))):x}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def fused_available(params: list[Tensor]) -> str | None:
    """Why the fused path cannot run on these tensors, or None."""
    if all(p.device.type == "cuda" for p in params):
        return None
    if os.environ.get("TRITON_INTERPRET") == "1" and all(p.device.type == "cpu" for p in params):
        return None
    return ("fused=True runs the Triton kernel: it needs CUDA tensors, or CPU tensors with "
            "TRITON_INTERPRET=1 set before the first fused step")


# ---- the optimizer base class ----------------------------------------------------------------


class GeneratedOptimizer(Optimizer):
    """torch.optim.Optimizer plus the bookkeeping every generated optimizer shares.

    A generated subclass provides `_active_states(group)` (name -> initial value
    kind), `_state_names`, `_empty_states`, `_uses_step` and `_update(...)`."""

    _state_names: tuple[str, ...] = ()
    _empty_states: frozenset[str] = frozenset()
    _uses_step: bool = True
    _supports_complex: bool = True

    def __init__(self, params, defaults: dict[str, Any]):
        if defaults.get("fused") and defaults.get("foreach"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    def _active_states(self, group) -> dict[str, Any]:
        raise NotImplementedError

    def _new_state(self, kind, p: Tensor, group) -> Tensor | None:
        if kind == "zeros":
            return torch.zeros_like(p, memory_format=torch.preserve_format)
        if kind == "empty":
            return None
        what, fill = kind
        if what == "fill":
            return torch.full_like(p, fill, memory_format=torch.preserve_format)
        return torch.tensor(float(fill), dtype=_get_scalar_dtype())   # ("scalar", value)

    def _init_group(self, group):
        params, grads, steps = [], [], []
        lists: dict[str, list] = {name: [] for name in self._state_names}
        active = self._active_states(group)
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients "
                                   f"(parameter of shape {tuple(p.shape)} in group {self.param_groups.index(group)})")
            if torch.is_complex(p) and not self._supports_complex:
                raise RuntimeError(f"{type(self).__name__} does not support complex parameters")
            params.append(p)
            grads.append(p.grad)
            state = self.state[p]
            if self._uses_step and "step" not in state:
                state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
            for name in self._state_names:
                if name in active and name not in state:
                    init = self._new_state(active[name], p, group)
                    if init is not None:
                        state[name] = init
                lists[name].append(state.get(name) if name in active else None)
            if self._uses_step:
                steps.append(state["step"])
        return params, grads, lists, steps

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, lists, steps = self._init_group(group)
            if not params:
                continue
            self._update(group, params, grads, lists, steps)
            for name in self._empty_states:   # states created by this step
                for p, t in zip(params, lists[name]):
                    if t is not None:
                        self.state[p][name] = t
        return loss

    def _update(self, group, params, grads, lists, steps) -> None:
        raise NotImplementedError

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        check_state_dict(self, state_dict)
        super().load_state_dict(state_dict)


def check_state_dict(opt: GeneratedOptimizer, state_dict: dict[str, Any]) -> None:
    """Refuse, before changing anything, a state_dict this optimizer cannot continue from."""
    name = type(opt).__name__
    if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
        raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups'")
    groups = state_dict["param_groups"]
    if len(groups) != len(opt.param_groups):
        raise ValueError(f"{name}.load_state_dict: loaded state dict has {len(groups)} parameter groups, "
                         f"this optimizer has {len(opt.param_groups)}")
    ids = {}
    for g_saved, g_own in zip(groups, opt.param_groups):
        if len(g_saved["params"]) != len(g_own["params"]):
            raise ValueError(f"{name}.load_state_dict: loaded state dict contains a parameter group "
                             "that doesn't match the size of optimizer's group")
        ids.update(zip(g_saved["params"], g_own["params"]))
    known = set(opt._state_names) | {"step"}
    for key, entry in state_dict["state"].items():
        p = ids.get(key)
        if p is None:
            raise ValueError(f"{name}.load_state_dict: state for parameter id {key!r} matches no parameter")
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"{name}.load_state_dict: state of parameter {key!r} has keys {unknown} that "
                             f"{name} does not use (expected some of {sorted(known)}); is this another optimizer's state_dict?")
        for k, t in entry.items():
            if k == "step" or not isinstance(t, Tensor) or t.dim() == 0:
                continue
            if t.shape != p.shape:
                raise ValueError(f"{name}.load_state_dict: state '{k}' of parameter {key!r} has shape "
                                 f"{tuple(t.shape)}, the parameter has shape {tuple(p.shape)}")


def default_foreach(params: list[Tensor], foreach, fused) -> tuple[bool, bool]:
    if foreach is None and fused is None:
        fused, foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)
        return bool(foreach), False
    return bool(foreach), bool(fused)
