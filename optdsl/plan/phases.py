"""The phase plan: where a backend must stop and combine a reduction before it can go on.

A reduction over a whole tensor (or a whole param group) is a barrier: its value exists only
after every element has been read. A backend that works through memory in one pass per
launch (the fused kernels: one launch over the flat work list) or one tensor at a time (the
loop path, for group-wide reductions) splits the update into *phases*:

    phase 0 .. n-2   each computes the partial results of the reductions of its depth;
    combine          joins the partials in a fixed order (no float atomics) into per-tensor,
                     per-channel or per-group values, which later phases read;
    phase n-1        runs the whole update, reading every reduction's combined value, and stores.

A reduction's *depth* is 0 when its operand reads no barrier reduction, else one more than the
deepest barrier reduction it reads (through locals, states, and the conditions of enclosing
`if`s). Phase j computes the partials of depth j.

Phases before the last recompute what they need from the start of the update instead of
storing it: their body is a store-free slice of the update (stores become locals,
`exp_avg = ...` -> `_s_exp_avg = ...`) cut down to what their reductions read. They write
nothing but partials, so a phase can always be re-run, every path computes one value the
same way, and the last phase reads each stream once more. (What each phase moves per element
is stated by the fused emitters.)

Which scopes are barriers is the backend's: every scope for a fused kernel; only `group` for
the loop path (a per-tensor or per-channel reduction is one torch call on the tensor at hand);
none for the foreach path (each reduction is one call over all tensors of the group)."""
from __future__ import annotations

from dataclasses import dataclass

from ..ir import (REDUCE, SCOPES, If, Kind, Let, Op, Program, Stmt, Store, Type, Value, apply, rebuild, stmt_values,
                  walk_values)

ALL_SCOPES = frozenset(SCOPES)
GROUP_ONLY = frozenset({"group"})
NO_BARRIERS: frozenset[str] = frozenset()


class PlanError(ValueError):
    """The update cannot be split into phases (a construct the plan does not support yet)."""


@dataclass(frozen=True)
class Phase:
    index: int
    body: tuple[Stmt, ...]       # what this phase runs: a store-free slice, or (last) the whole update
    sinks: tuple[str, ...]       # barrier reductions (their Let names) whose partials this phase computes
    ready: frozenset[str]        # barrier reductions already combined: read, never recomputed
    final: bool

    def role(self, name: str) -> str:
        """What a reduction Let is in this phase: 'sink', 'ready' or 'inline' (not a barrier here)."""
        if name in self.sinks:
            return "sink"
        if name in self.ready:
            return "ready"
        return "inline"


@dataclass(frozen=True)
class PhasePlan:
    phases: tuple[Phase, ...]
    barriers: frozenset[str]
    reductions: dict[str, Value]     # barrier reduction Let name -> its reduction node, in program order
    depth: dict[str, int]

    @property
    def final(self) -> Phase:
        return self.phases[-1]

    def sinks_of(self, phase: Phase) -> list[tuple[str, Value]]:
        return [(n, self.reductions[n]) for n in phase.sinks]

    @property
    def combines(self) -> int:
        """Combine steps per group step: one after each phase but the last."""
        return len(self.phases) - 1


def is_barrier_let(s: Stmt, barriers: frozenset[str]) -> bool:
    return isinstance(s, Let) and s.value.op in REDUCE and s.value.arg in barriers


def plan_phases(p: Program, barriers: frozenset[str]) -> PhasePlan:
    """The phases of `p` (after passes.name_reductions) for a backend whose barriers are `barriers`."""
    reductions: dict[str, Value] = {}
    depth: dict[str, int] = {}
    _depths(p.body, {}, {}, frozenset(), barriers, reductions, depth)
    n = 1 + (max(depth.values()) + 1 if depth else 0)
    phases = []
    for j in range(n - 1):
        sinks = tuple(name for name in reductions if depth[name] == j)
        ready = frozenset(name for name in reductions if depth[name] < j)
        phases.append(Phase(j, slice_for(p, sinks, barriers), sinks, ready, False))
    phases.append(Phase(n - 1, p.body, (), frozenset(reductions), True))
    return PhasePlan(tuple(phases), barriers, reductions, depth)


# ---- depths: flow-sensitive dependence on barrier reductions -------------------------------------

def _reads(v: Value, env: dict[str, frozenset], states: dict[str, frozenset]) -> frozenset:
    out: set[str] = set()
    for node in walk_values(v):
        if node.op is Op.VAR:
            out |= env.get(str(node.arg), frozenset())
        elif node.op is Op.STATE:
            out |= states.get(str(node.arg), frozenset())
        elif node.op is Op.PARAM:
            out |= states.get("param", frozenset())
    return frozenset(out)


def _depths(stmts, env, states, control, barriers, reductions, depth) -> None:
    """env: local -> barrier reductions its value depends on; states likewise (and 'param')."""
    for s in stmts:
        if isinstance(s, Let):
            deps = _reads(s.value, env, states) | control
            if is_barrier_let(s, barriers):
                reductions[s.name] = s.value
                depth[s.name] = 1 + max((depth[d] for d in deps), default=-1)
                env[s.name] = frozenset({s.name})
            else:
                env[s.name] = deps
        elif isinstance(s, Store):
            states[s.target] = _reads(s.value, env, states) | control
        else:
            inner = control | _reads(s.cond, env, states)
            env_a, env_b = dict(env), dict(env)
            st_a, st_b = dict(states), dict(states)
            _depths(s.then, env_a, st_a, inner, barriers, reductions, depth)
            _depths(s.other, env_b, st_b, inner, barriers, reductions, depth)
            for name in set(env_a) | set(env_b):
                env[name] = env_a.get(name, frozenset()) | env_b.get(name, frozenset())
            for name in set(st_a) | set(st_b):
                states[name] = st_a.get(name, frozenset()) | st_b.get(name, frozenset())


# ---- slices: the store-free part of the update a phase needs -------------------------------------

def shadow(target: str) -> str:
    """The local a store-free slice keeps a state (or the parameter) in."""
    return f"_s_{target}"


def slice_for(p: Program, sinks: tuple[str, ...], barriers: frozenset[str]) -> tuple[Stmt, ...]:
    stored = _stored_targets(p.body)
    body = _functionalize(p, stored)
    kept, _ = _live_slice(body, frozenset(), set(sinks))
    live_shadows = {str(n.arg) for s in _flat(kept) for v in stmt_values(s) for n in walk_values(v)
                    if n.op is Op.VAR and str(n.arg).startswith("_s_")}
    for target in stored:
        if shadow(target) not in live_shadows or target == "param":
            continue
        info = p.state(target)
        if info.init == "empty" and _is_empty_read_after_store(kept, target):
            raise PlanError(f"a reduction needs `is_empty({target})` after the update stores '{target}': not "
                            "supported yet; test is_empty before the store (`m = is_empty(m) ? g : ...`)")
        if info.kind is Kind.TENSOR_SCALAR:
            raise PlanError(f"a group-wide or fused reduction reads scalar state '{target}' after it is stored "
                            "from host math: not supported yet; reduce before that store")
    return kept


def _is_empty_read_after_store(stmts, target: str) -> bool:
    """Whether a slice reads is_empty(target) after a store to target (a shadow Let past the head)."""
    stored = False
    for s in _flat(stmts):
        if stored and any(n.op is Op.IS_EMPTY and n.arg == target for v in stmt_values(s) for n in walk_values(v)):
            return True
        if isinstance(s, Let) and s.name == shadow(target) and not (s.value.op is Op.STATE and s.value.arg == target):
            stored = True
    return False


def _flat(stmts):
    for s in stmts:
        yield s
        if isinstance(s, If):
            yield from _flat(s.then)
            yield from _flat(s.other)


def _stored_targets(stmts) -> list[str]:
    out: list[str] = []
    for s in _flat(stmts):
        if isinstance(s, Store) and s.target not in out:
            out.append(s.target)
    return out


def _functionalize(p: Program, stored: list[str]) -> tuple[Stmt, ...]:
    """Stores become Lets of shadow locals, initialised from the state at the top."""
    def kind_of(target: str) -> Kind:
        return Kind.TENSOR if target == "param" else p.state(target).read_kind

    def read(node: Value) -> Value:
        if node.op is Op.STATE and node.arg in stored:
            return Value(Op.VAR, (), shadow(str(node.arg)), node.kind, node.type)
        if node.op is Op.PARAM and "param" in stored:
            return Value(Op.VAR, (), shadow("param"), node.kind, node.type)
        return node

    def fix(v: Value) -> Value:
        return rebuild(v, read)

    def block(stmts) -> tuple[Stmt, ...]:
        out: list[Stmt] = []
        for s in stmts:
            if isinstance(s, Let):
                out.append(Let(s.name, fix(s.value)))
            elif isinstance(s, Store):
                value = fix(s.value)
                if kind_of(s.target) is Kind.TENSOR and value.kind is not Kind.TENSOR:
                    # a store broadcasts into the state's shape; its shadow local must have that shape too
                    param = Value(Op.PARAM, (), None, Kind.TENSOR, Type.NUM)
                    value = apply(Op.WHERE, apply(Op.EQ, param, param), value, value)
                out.append(Let(shadow(s.target), value))
            else:
                out.append(If(fix(s.cond), block(s.then), block(s.other)))
        return tuple(out)

    head: list[Stmt] = []
    for target in stored:
        leaf = (Value(Op.PARAM, (), None, Kind.TENSOR, Type.NUM) if target == "param"
                else Value(Op.STATE, (), target, kind_of(target), Type.NUM))
        cond = None if target == "param" else p.state(target).cond
        # a state kept only where its condition holds is read only under that condition (the checker's rule)
        head.append(Let(shadow(target), leaf) if cond is None else If(cond, (Let(shadow(target), leaf),)))
    return tuple(head) + block(p.body)


def _names_read(v: Value) -> set[str]:
    return {str(n.arg) for n in walk_values(v) if n.op is Op.VAR}


def _live_slice(stmts: tuple[Stmt, ...], live_after: frozenset, sinks: set[str]) -> tuple[tuple[Stmt, ...], frozenset]:
    """Backward liveness: the statements needed for the sinks and for what is live after; returns
    (kept statements, names live before them)."""
    live = set(live_after)
    kept: list[Stmt] = []
    for s in reversed(stmts):
        if isinstance(s, Let):
            if s.name in sinks or s.name in live:
                live.discard(s.name)
                live |= _names_read(s.value)
                kept.append(s)
        elif isinstance(s, If):
            then, live_then = _live_slice(s.then, frozenset(live), sinks)
            other, live_other = _live_slice(s.other, frozenset(live), sinks)
            if then or other:
                live = set(live_then | live_other) | _names_read(s.cond)
                kept.append(If(s.cond, then, other))
        else:
            raise AssertionError("a slice has no stores")
    return tuple(reversed(kept)), frozenset(live)
