"""The checks `load_state_dict` makes before it changes anything: a state_dict from another
optimizer, or saved for other parameters, is refused with a message that names the key."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from .axis_ops import cover_shapes, reduced_shape
from .state_shapes import PerTensor, cover_keys


def check_state_dict(opt, state_dict: dict[str, Any]) -> None:
    """Refuse, before changing anything, a state_dict this optimizer cannot continue from: another
    optimizer's (state keys it does not keep, or lacks ones it needs) or one for other parameters
    (group sizes, state shapes). torch.optim's wording where torch.optim has a check."""
    name = type(opt).__name__
    if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
        raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups' "
                         f"(what Optimizer.state_dict() returns), got {type(state_dict).__name__}"
                         + (f" with keys {sorted(map(str, state_dict))}" if isinstance(state_dict, dict) else ""))
    groups = state_dict["param_groups"]
    if len(groups) != len(opt.param_groups):
        raise ValueError("loaded state dict has a different number of parameter groups")
    ids: dict[Any, tuple[Tensor, dict]] = {}
    for g_saved, g_own in zip(groups, opt.param_groups):
        if len(g_saved["params"]) != len(g_own["params"]):
            raise ValueError("loaded state dict contains a parameter group "
                             "that doesn't match the size of optimizer's group")
        for key, p in zip(g_saved["params"], g_own["params"]):
            ids[key] = (p, g_saved)
    per_tensor_step = opt._uses_step and not opt._step_per_group   # else the step is in the group
    # an `input`'s estimate and its count of steps (optdsl.inputs); a state without them estimates afresh
    covers = {n for n in opt._state_names if opt._state_shapes.get(n) == "cover"}
    known_all = set(opt._state_names) - covers | ({"step"} if per_tensor_step else set()) | {f"{k} step" for k in opt._inputs}
    for key, entry in state_dict["state"].items():
        if key not in ids:
            continue   # torch.optim keeps state that matches no parameter as it is
        p, g_saved = ids[key]
        # a cover state is kept as one accumulator per dim of this param, under name_0, name_1, ...
        cover_of = {k: (n, i) for n in covers for i, k in enumerate(cover_keys(n, p))}
        known = known_all | set(cover_of)
        if not isinstance(entry, dict):
            raise ValueError(f"{name}.load_state_dict: the state of parameter {key!r} is a {type(entry).__name__}, "
                             "expected a dict of tensors")
        unknown = sorted(map(str, set(entry) - known))
        if unknown:
            raise ValueError(f"{name}.load_state_dict: the state of parameter {key!r} has {unknown}, which {name} "
                             f"does not keep ({name} keeps {sorted(known)}); is this another optimizer's state_dict?")
        try:
            active = opt._active_states({**opt.defaults, **g_saved})
        except Exception:   # a group this optimizer cannot read: judge the keys alone
            active = {}
        # a state kept on some tensors only (its `if` on the shape): needed where this one's shape says
        active = {n: (kind.init if isinstance(kind, PerTensor) else kind) for n, kind in active.items()
                  if not isinstance(kind, PerTensor) or kind.kept_by(p)}
        if entry:
            needed = {k for n, kind in active.items() if kind != "empty" and n not in opt._inputs
                      for k in (cover_keys(n, p) if n in covers else (n,))} \
                | ({"step"} if per_tensor_step else set())
            missing = sorted(needed - set(entry))
            if missing:
                raise ValueError(f"{name}.load_state_dict: the state of parameter {key!r} lacks {missing}, which {name} "
                                 f"needs to continue (it has {sorted(map(str, entry))}); is this another optimizer's state_dict?")
        for k, t in entry.items():
            if k == "step" or not isinstance(t, Tensor):
                continue
            scalar = isinstance(active.get(k), tuple) and active[k][0] in ("scalar", "device_scalar")
            axis = opt._state_shapes.get(k)
            if k in cover_of:
                axis = f"index of dim {cover_of[k][1]}" if p.dim() else "tensor"
                want = cover_shapes(tuple(p.shape))[cover_of[k][1]]
            else:
                want = () if scalar else reduced_shape(tuple(p.shape), axis) if axis else tuple(p.shape)
            if tuple(t.shape) != want and not (scalar and t.numel() == 1):
                what = f" (the parameter's shape, one number per {axis})" if axis else "" if scalar \
                    else " (the parameter's shape)"
                raise ValueError(f"{name}.load_state_dict: state {k!r} of parameter {key!r} has shape {tuple(t.shape)}, "
                                 f"expected {want}" + what
                                 + "; was this state_dict saved for other parameters?")
