"""State_dict layouts of references that nest the wrapped optimizer's state: a generated
optimizer loads theirs, and writes its own in theirs, so that a checkpoint moves both ways.

pytorch_optimizer.Lookahead saves
    {"lookahead_state": {(group, index): {"slow_params": tensor}},
     "base_optimizer": <the wrapped optimizer's state_dict, its groups counting steps in "counter">}
where a generated Lookahead (specs/wrappers/lookahead.opt) keeps one flat state_dict: each
parameter's state holds the wrapped spec's states and "slow_params" beside them, and each group
counts in "lookahead_counter". Lookahead's k and alpha are attributes of the reference, not in its
state_dict, so a load keeps this optimizer's own.
"""
from __future__ import annotations

import copy
from typing import Any

LOOKAHEAD_KEYS = frozenset({"lookahead_state", "base_optimizer"})
SLOW, COUNTER, THEIR_COUNTER = "slow_params", "lookahead_counter", "counter"
OWN_KEYS = ("lookahead_k", "lookahead_alpha")   # in this optimizer's groups, not in the reference's


def is_lookahead(state_dict: Any) -> bool:
    return isinstance(state_dict, dict) and set(state_dict) == LOOKAHEAD_KEYS


def keeps_lookahead(opt) -> bool:
    """Whether `opt` is a generated Lookahead: its states include slow_params and its groups count
    in lookahead_counter."""
    return SLOW in getattr(opt, "_state_names", ()) and all(COUNTER in g for g in opt.param_groups)


def from_lookahead(opt, state_dict: dict) -> dict:
    """pytorch_optimizer.Lookahead's state_dict as `opt`'s own (for load_state_dict)."""
    if not keeps_lookahead(opt):
        raise ValueError(f"{type(opt).__name__}.load_state_dict: this is pytorch_optimizer.Lookahead's state_dict "
                         f"({sorted(LOOKAHEAD_KEYS)}); {type(opt).__name__} is not a Lookahead")
    base, slow = state_dict["base_optimizer"], state_dict["lookahead_state"]
    if not (isinstance(base, dict) and {"state", "param_groups"} <= set(base) and isinstance(slow, dict)):
        raise ValueError(f"{type(opt).__name__}.load_state_dict: a Lookahead state_dict needs 'base_optimizer' "
                         "(an optimizer's state_dict) and 'lookahead_state' (a dict by (group, index))")
    state = copy.copy(base["state"])
    groups = []
    for g, (saved, own) in enumerate(zip(base["param_groups"], opt.param_groups)):
        group = {k: v for k, v in saved.items() if k != THEIR_COUNTER}
        group[COUNTER] = saved.get(THEIR_COUNTER, 0)
        for key in OWN_KEYS:
            group.setdefault(key, own[key])
        for i, pid in enumerate(saved["params"]):
            extra = slow.get((g, i))
            if extra and SLOW in extra:
                state[pid] = {**state.get(pid, {}), SLOW: extra[SLOW]}
        groups.append(group)
    groups += base["param_groups"][len(groups):]   # a group count that differs: load_state_dict says so
    return {"state": state, "param_groups": groups}


def to_lookahead(opt) -> dict:
    """`opt`'s state_dict in pytorch_optimizer.Lookahead's layout (its load_state_dict takes it).
    Every parameter has slow weights there (the reference makes them at construction): one that
    has none here has not been stepped, so its slow weights are its weights."""
    if not keeps_lookahead(opt):
        raise ValueError(f"{type(opt).__name__} is not a Lookahead: it keeps no {SLOW!r}")
    own = opt.state_dict()
    state, slow = {}, {}
    groups = []
    for g, (saved, group) in enumerate(zip(own["param_groups"], opt.param_groups)):
        theirs = {k: v for k, v in saved.items() if k not in (COUNTER, *OWN_KEYS)}
        theirs[THEIR_COUNTER] = int(saved.get(COUNTER, 0))
        groups.append(theirs)
        for i, (pid, p) in enumerate(zip(saved["params"], group["params"])):
            entry = dict(own["state"].get(pid, {}))
            weights = entry.pop(SLOW, None)
            slow[(g, i)] = {SLOW: p.detach().clone() if weights is None else weights}
            if entry:
                state[pid] = entry
    return {"lookahead_state": slow, "base_optimizer": {"state": state, "param_groups": groups}}
