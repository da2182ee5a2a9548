"""The IR interpreter: the semantic oracle for every spec and every fuzzed program.

It runs a compiled Program's update rule straight from the IR, in NumPy float64,
one parameter tensor at a time, with the bookkeeping a generated optimizer keeps:

* a step counter per tensor, incremented before the update (as in torch); a
  tensor whose grad is None is skipped and its step lags behind (`keep step per
  group`: one counter, `group_step`, incremented by every `step` call);
* `initial_lr`: the `lr` hyper's value unless given (`hypers={"initial_lr": ...}`);
* states created lazily on a tensor's first step, where their host condition
  holds: `zeros`, a number, a hyper's value, or `empty` (absent until first
  stored; `is_empty(x)` is true until then); scalar state is one float per tensor
  (a scalar state stored from a reduction lives on the device: float32 as well);
* hypers and flags per group (an Interpreter is one parameter group); an optional
  hyper (`= none`) may be None, and `h != none` tests it;
* `If` on host and per-tensor conditions; `c ? a : b` with a host or per-tensor
  condition evaluates only the side it takes (as the loop path does), with a
  per-element condition both sides (as the kernels do);
* reductions (`sum mean norm rms amax dot`) over the tensor, each output channel
  (dim 0), or the whole group. Group reductions are barriers: the interpreter runs
  the phases of optdsl.plan (GROUP_ONLY): each phase's store-free slice for every
  tensor with a grad, collecting each tensor's part, combined into one value the
  later phases (and the final one, the whole update) read;
* `numel`, `ndim`, `channel_numel` of each tensor;
* `sparse rows`: a `SparseGrad` (its rows summed where repeated) updates the touched rows of the
  param and its tensor states only; without it, a sparse gradient is an InterpError.

Every operation takes its NumPy form from builtins.OPS (the `numpy` column), and every
reduction its map, fold and finish from builtins.REDUCTIONS: the interpreter and the
backends read one table (optdsl/interp_math.py turns them into functions).

    interp = Interpreter(compile_ir(text), hypers={"lr": 0.1}, flags={"amsgrad": True})
    params = interp.step(params, grads)         # lists of float64 arrays; a grad may be None

Error bounds (`bounds=`, used by the fuzzer): beside each exact value the
interpreter carries an interval holding every value a backend computing in a
narrower precision may produce (unit roundoffs and ulps per op class come from a
`Precision`, see optdsl/fuzz/tolerance.py; the rules, reductions' included, are in
optdsl/interp_math.py), and a mask of the elements whose value hangs on a decision
(sign, compare, select) that the interval cannot settle. Then `step` returns
`Bounded` values; `load` resets a tensor's state to given values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .axis_ops import reduced_shape
from .ir import LEAF, REDUCE, Kind, Let, Op, Program, Stmt, Store, If, Value, dim_size
from .interp_axes import cover_split, cover_stack, reduce_to, stacked_shape
from .interp_math import (FLT_EPS, FLT_MAX, Bounded, Partial, Precision, _convert, _exact_apply, _num, _stored,
                          bounded_apply, bounded_combine, bounded_finish, bounded_fold, exact_combine, exact_finish,
                          exact_fold, numpy_form, reduce_bounded, reduce_exact)


class InterpError(RuntimeError):
    """The program did something the language leaves undefined (e.g. read an `empty` state before storing it)."""

# ---- the interpreter -----------------------------------------------------------------------

ABSENT = None   # an `empty` state before its first store, or a state whose condition does not hold


def _scalar(info) -> bool:
    """A scalar state: one float per tensor (host math, or a 0-d float32 tensor on the device)."""
    return info.kind in (Kind.TENSOR_SCALAR, Kind.REDUCED)


def _shape_input(op: Op, shape: tuple, arg=None, eps: float = FLT_EPS) -> float:
    """numel, ndim, channel_numel, size(arg), dtype_eps of a parameter of `shape` (as
    optdsl.runtime.shape_input); `eps`: its dtype's machine epsilon."""
    if op is Op.SIZE:    # size(d): 1 past the last dim, before the first, as broadcasting reads it
        return float(dim_size(shape, int(arg)))
    if op is Op.DTYPE_EPS:
        return float(eps)
    numel = int(np.prod(shape, dtype=np.int64))
    if op is Op.NUMEL:
        return float(numel)
    if op is Op.NDIM:
        return float(len(shape))
    return float(numel // shape[0] if shape and shape[0] else (numel if not shape else 0))


@dataclass
class _Context:
    param: Any
    grad: Any
    step: Any
    state: dict
    shape: tuple
    env: dict = field(default_factory=dict)
    taint: bool = False   # an `if` took a side the error bounds could not settle
    ready: dict = field(default_factory=dict)     # group reductions already combined: Let name -> value
    sinks: dict | None = None                     # this phase's group reductions: Let name -> parts collected
    parts: list = field(default_factory=list)     # the parts this tensor gave in this phase
    eps: float = FLT_EPS                          # the machine epsilon of the parameter's dtype (dtype_eps)


class Interpreter:
    """One parameter group of a compiled program, run in float64 straight from the IR.

    `state[i]` is tensor i's state: {"step": float (when the program uses it), <state name>:
    array | float}; a state that is absent (not active, or `empty` and never stored) has no key."""

    def __init__(self, program: Program, hypers: Mapping[str, Any] | None = None,
                 flags: Mapping[str, bool] | None = None, *, bounds: bool = False, validate: bool = True):
        self.program = program
        self.hypers: dict[str, Any] = {h.name: h.default for h in program.hypers}
        self.flags: dict[str, bool] = {f.name: f.default for f in program.flags}
        if program.reads_initial_lr:   # the lr at construction, unless given (a scheduler's initial_lr)
            self.hypers["initial_lr"] = None
        for name, value in (hypers or {}).items():
            if name not in self.hypers:
                raise KeyError(f"{program.name} has no hyper {name!r}")
            self.hypers[name] = tuple(value) if isinstance(value, (tuple, list)) else value
        for name, value in (flags or {}).items():
            if name not in self.flags:
                raise KeyError(f"{program.name} has no flag {name!r}")
            self.flags[name] = bool(value)
        if program.reads_initial_lr and self.hypers["initial_lr"] is None:
            self.hypers["initial_lr"] = self.hypers["lr"]
        self.bounded = bounds
        self.state: dict[int, dict[str, Any]] = {}
        self.group_step = 0.0   # `keep step per group`: the group's count (every step() call adds 1)
        self._phases = None
        if validate:
            self.validate()

    # ---- hypers, flags, requires ------------------------------------------------------------
    def host(self, v: Value):
        """A host value (hypers, flags, numbers) in float64, exactly."""
        ctx = _Context(None, None, None, {}, ())
        out = self._eval(v, ctx, {}, Precision() if self.bounded else None)
        return out.x if isinstance(out, Bounded) else out

    def validate(self) -> None:
        """The checks the generated __init__ makes: `where` clauses (an optional hyper's only where
        it is given) and `require`s. Raises ValueError."""
        from .defaults import absent_entries
        from .runtime import check_tuple_length
        for h in self.program.hypers:
            if h.arity and self.hypers[h.name] is not None:
                check_tuple_length(h.name, self.hypers[h.name], h.arity)
        for h in self.program.hypers:
            if h.choices and self.hypers[h.name] not in h.choices:
                raise ValueError(f"{self.hypers[h.name]!r} is not a choice of {h.name}: {h.choices}")
            if self.hypers[h.name] is None:
                if not h.optional:
                    raise ValueError(f"hyper {h.name!r} is not optional: it cannot be None")
                continue
            for check in h.checks:
                if absent_entries(check[0], h, self.hypers):
                    continue
                if not bool(self.host(check[0])):
                    raise ValueError(f"{check[1]} ({h.name}={self.hypers[h.name]!r})")
        for cond, message in self.program.requires:
            if cond.kind <= Kind.HOST and not bool(self.host(cond)):   # on the shape: validate_param
                raise ValueError(message)

    def validate_param(self, shape: tuple) -> None:
        """The `require`s on the param's shape (`require ndim == 2`), for a param of this shape."""
        for cond, message in self.program.requires:
            if cond.kind is Kind.TENSOR_SCALAR and not bool(self._eval(cond, _Context(None, None, None, {}, shape), {}, None)):
                raise ValueError(message)

    def active_states(self, shape: tuple | None = None) -> dict[str, Any]:
        """name -> initial value kind of the states this group keeps (their conditions hold); with
        `shape`, those a tensor of that shape keeps (a condition on the shape: `if ndim >= 2`)."""
        def holds(s) -> bool:
            if s.cond is None:
                return True
            if s.per_tensor_cond:
                return shape is not None and bool(_exact(self._eval(s.cond, _Context(None, None, None, {}, shape), {}, None)))
            return bool(self.host(s.cond))
        return {s.name: s.init for s in self.program.states if holds(s)}

    def _initial(self, s, param_shape, prec: Precision | None):
        init = s.init
        if isinstance(init, str) and init not in ("zeros", "empty"):
            init = self.hypers[init]
        if _scalar(s):
            value = np.float64(0.0 if init == "zeros" else init)
            if self.bounded:
                return _stored(Bounded.point(value), prec.scalar_store, 1.0, prec.scalar_tiny, FLT_MAX)
            return value
        if s.shape == "cover":   # one accumulator per dim, each broadcast back, stacked on a leading axis
            param_shape = stacked_shape(tuple(param_shape))
        elif s.shape:   # one value per row or column: the param's last (second-to-last) dim reduced to 1
            param_shape = reduced_shape(tuple(param_shape), s.shape)
        value = np.zeros(param_shape) if init == "zeros" else np.full(param_shape, float(init))
        if self.bounded:
            return _stored(Bounded.point(value), prec.store, prec.store_ulps, prec.store_tiny, prec.store_overflow)
        return value

    # ---- state access for the fuzzer -----------------------------------------------------------
    def load(self, i: int, step: float | None, states: Mapping[str, Any]) -> None:
        """Set tensor i's step and states (absent where missing or None), e.g. from a backend's own."""
        st: dict[str, Any] = {}
        if step is not None:
            st["step"] = float(step)
        covers = {s.name for s in self.program.states if s.shape == "cover"}
        for name, value in states.items():
            if value is None:
                continue
            if name in covers and isinstance(value, (list, tuple)):   # a backend's accumulators
                value = cover_stack(value, np.broadcast_shapes(*(np.shape(a) for a in value)))
            value = np.asarray(value, dtype=np.float64).copy() if np.ndim(value) else np.float64(value)
            st[name] = Bounded.point(value) if self.bounded else value
        self.state[i] = st

    def stored(self, i: int, name: str):
        """Tensor i's state `name` as a backend keeps it (exact values): a cover state as its list of
        accumulators (optdsl.interp_axes.cover_split), the others as they are; None where absent."""
        value = self.state.get(i, {}).get(name)
        if value is None:
            return None
        value = _exact(value)
        if self.program.state(name).shape == "cover":
            return cover_split(value, np.shape(value)[1:])
        return value

    # ---- one step ----------------------------------------------------------------------------
    def phases(self):
        """The phase plan for group-wide reductions (optdsl.plan, barriers GROUP_ONLY)."""
        if self._phases is None:
            from .plan import GROUP_ONLY, PlanError, plan_phases
            try:
                self._phases = plan_phases(self.program, GROUP_ONLY)
            except PlanError as err:
                raise InterpError(f"the group reductions cannot be phased: {err}") from err
        return self._phases

    def step(self, params: Sequence[Any], grads: Sequence[Any], precisions: Sequence[Precision] | None = None) -> list:
        """One optimizer step over the group's tensors. Returns the new parameters (float64
        arrays; `Bounded` with bounds=True); a tensor whose grad is None is left as it was."""
        p = self.program
        active = self.active_states()
        out: list = [None] * len(params)
        runs = []
        backs = []   # (tensor, its full param, the touched rows, its compact state) for `sparse rows`
        if p.uses_step and p.step_per_group:
            self.group_step += 1.0
        if p.group_update and len(params):   # the group states, once per step() call, grads or not
            self.group_update()
        for i, (param, grad) in enumerate(zip(params, grads)):
            param = np.asarray(param, dtype=np.float64)
            self.validate_param(param.shape)
            if grad is None:
                out[i] = Bounded.point(param.copy()) if self.bounded else param.copy()
                continue
            prec = (precisions[i] if precisions is not None else Precision()) if self.bounded else None
            rows = None
            if isinstance(grad, SparseGrad):
                if not p.sparse:
                    raise InterpError(f"{p.name} refuses a sparse gradient (tensor {i}): its spec has no `sparse rows`")
                if grad.index.shape[0] == 0:   # no sparse dim: one dense block
                    grad = grad.dense()
                else:
                    rows = grad.coalesced()
            elif p.sparse == "rows only":
                raise InterpError(f"{p.name} refuses a dense gradient (tensor {i}): its spec says `sparse rows only`")
            else:
                grad = np.asarray(grad, dtype=np.float64)
            st = self.state.setdefault(i, {})
            if p.uses_step and p.step_per_group:
                step = self.group_step
            elif p.uses_step:
                st["step"] = step = st.get("step", 0.0) + 1.0
            else:
                step = 0.0
            mine = self.active_states(param.shape) if any(s.per_tensor_cond for s in p.states) else active
            for s in p.states:
                if s.name in mine and s.name not in st and s.init != "empty":
                    st[s.name] = self._initial(s, param.shape, prec)
            if rows is not None:   # `sparse rows`: the update runs on the touched rows, gathered
                if rows.values.shape[0] == 0:
                    out[i] = Bounded.point(param.copy()) if self.bounded else param.copy()
                    continue
                full, param, grad = param, _take(param, rows.index), rows.values
                st = {k: _take(v, rows.index) if np.shape(_exact(v)) == full.shape else v for k, v in st.items()}
                backs.append((i, full, rows.index, st))
            if self.bounded:   # the dtype's epsilon is twice its unit roundoff
                ctx = _Context(Bounded.point(param.copy()), Bounded.point(grad), Bounded.point(np.float64(step)),
                               st, param.shape, eps=2 * prec.store)
            else:
                ctx = _Context(param.copy(), grad, np.float64(step), st, param.shape)
            runs.append((i, ctx, prec))
        plan = self.phases()
        ready: dict[str, Any] = {}
        for phase in plan.phases[:-1]:     # the group reductions, one depth at a time
            sinks: dict[str, list] = {name: [] for name in phase.sinks}
            for _, ctx, prec in runs:
                sub = _Context(ctx.param, ctx.grad, ctx.step, ctx.state, ctx.shape, ready=ready, sinks=sinks, eps=ctx.eps)
                self._block(phase.body, sub, prec)
                if sub.taint:   # a part computed on a side of an `if` the bounds could not settle
                    for part in sub.parts:
                        part.unc = np.bool_(True)
            for name in phase.sinks:
                node = plan.reductions[name]
                parts = sinks[name]
                if self.bounded:
                    precs = [pr for part, pr in parts]
                    folded = bounded_combine(node.op, [part for part, pr in parts], precs)
                    ready[name] = bounded_finish(node.op, folded, precs[0] if precs else Precision())
                else:
                    ready[name] = exact_finish(node.op, exact_combine(node.op, [part for part, _ in parts]))
        for i, ctx, prec in runs:
            ctx.ready = ready
            self._block(p.body, ctx, prec)
            if ctx.taint:   # an `if` went one way where a backend may go the other: every output is unsettled
                everywhere = lambda b: b.with_unc(np.ones(np.shape(b.x), dtype=bool))  # noqa: E731
                ctx.param = everywhere(ctx.param)
                for name, value in ctx.state.items():
                    if isinstance(value, Bounded):
                        ctx.state[name] = everywhere(value)
            out[i] = ctx.param
        for i, full, index, compact in backs:   # the touched rows back into the full tensors
            out[i] = _put(full, index, out[i], self.bounded)
            whole = self.state[i]
            for k, v in compact.items():
                whole[k] = _put(whole[k], index, v, self.bounded) if k in whole and \
                    np.shape(_exact(whole[k])) == full.shape else v
        return out

    def switch(self, mode: str, params: Sequence[Any], precisions: Sequence[Precision] | None = None) -> list:
        """optimizer.train() / .eval(): the `on mode` block over the tensors that have state (have
        been stepped); the others are returned as they are. Returns the new parameters."""
        program, phases = self.program, self._phases
        self.program, self._phases = program.mode_program(mode), None
        try:
            unread = [np.zeros(np.shape(p)) if self.state.get(i) else None for i, p in enumerate(params)]
            return self.step(params, unread, precisions)
        finally:
            self.program, self._phases = program, phases

    def group_update(self) -> None:
        """Program.group_update in float64: its stores set the group states (read as hypers)."""
        ctx = _Context(None, None, None, {}, ())
        prec = Precision() if self.bounded else None
        for s in self.program.group_update:
            out = self._eval(s.value, ctx, {}, prec)
            value = float(out.x if isinstance(out, Bounded) else out)
            if isinstance(s, Let):
                ctx.env[s.name] = Bounded.point(np.float64(value)) if self.bounded else value
            else:
                self.hypers[s.target] = value

    def _block(self, stmts: Sequence[Stmt], ctx: _Context, prec) -> None:
        for s in stmts:
            if isinstance(s, Let):
                if s.name in ctx.ready:
                    ctx.env[s.name] = ctx.ready[s.name]
                elif ctx.sinks is not None and s.name in ctx.sinks:
                    ctx.env[s.name] = None     # a part, not a value: nothing in this phase reads it
                    part = self._part(s.value, ctx, prec)
                    ctx.sinks[s.name].append((part, prec))
                    ctx.parts.append(part)
                else:
                    ctx.env[s.name] = self._eval(s.value, ctx, {}, prec)
            elif isinstance(s, Store):
                memo: dict = {}
                value = self._eval(s.value, ctx, memo, prec)
                if self.bounded and s.value.op in (Op.ADD, Op.SUB) and s.target != "param" and \
                        _scalar(self.program.state(s.target)):
                    # `mu = mu + h` is mu's own in-place float32 op: h is rounded to float32 first, an
                    # error that scales with |h|, not with the sum
                    mags = sum(np.maximum(np.abs(a.lo), np.abs(a.hi)) for a in (memo.get(id(x)) for x in s.value.args)
                               if a is not None and not a.is_bool)
                    k = prec.scalar_store_ulps * prec.scalar_store * mags
                    value = Bounded(value.x, value.lo - k, value.hi + k, value.unc)
                self._store(s.target, value, ctx, prec)
            elif isinstance(s, If):
                c = self._eval(s.cond, ctx, {}, prec)
                if self.bounded:
                    if np.ndim(c.x):
                        raise InterpError("an `if` condition varies per element")
                    if bool(c.unc):
                        ctx.taint = True
                    taken = bool(c.x)
                else:
                    if np.ndim(c):
                        raise InterpError("an `if` condition varies per element")
                    taken = bool(c)
                self._block(s.then if taken else s.other, ctx, prec)
            else:
                raise InterpError(f"unknown statement {type(s).__name__}")

    def _kept(self, target: str, ctx: _Context):
        """What a store to `target` keeps of a value: broadcast to the parameter's shape, or a row or
        column state's part of it."""
        axis = "" if target == "param" else self.program.state(target).shape
        if axis == "cover":
            return lambda v: np.broadcast_to(v, stacked_shape(ctx.shape))
        if axis:
            return lambda v: reduce_to(v, ctx.shape, axis)
        return lambda v: np.broadcast_to(v, ctx.shape)

    def _store(self, target: str, value, ctx: _Context, prec) -> None:
        scalar = target != "param" and _scalar(self.program.state(target))
        if self.bounded:
            if scalar:
                if np.ndim(value.x):
                    raise InterpError(f"scalar state {target!r} stored from a per-element value")
                value = _stored(value, prec.scalar_store, prec.scalar_store_ulps, prec.scalar_tiny, FLT_MAX)
            else:
                kept = self._kept(target, ctx)
                value = Bounded(kept(value.x).astype(np.float64), kept(value.lo).astype(np.float64),
                                kept(value.hi).astype(np.float64), kept(value.unc).copy())
                value = _stored(value, prec.store, prec.store_ulps, prec.store_tiny, prec.store_overflow)
            if ctx.taint:
                value = value.with_unc(np.ones(np.shape(value.x), dtype=bool))
        else:
            if scalar:
                if np.ndim(value):
                    raise InterpError(f"scalar state {target!r} stored from a per-element value")
                value = np.float64(value)
            else:
                value = self._kept(target, ctx)(np.asarray(value, dtype=np.float64)).copy()
        if target == "param":
            ctx.param = value
        else:
            ctx.state[target] = value

    # ---- values ----------------------------------------------------------------------------
    def _leaf(self, v: Value, ctx: _Context):
        op = v.op
        if op is Op.CONST:
            x = _num(v.arg)
        elif op is Op.HYPER:
            name, index = v.arg
            value = self.hypers[name]
            if value is None or index is not None and value[index] is None:
                raise InterpError(f"optional hyper {name!r} is read while it is none")
            x = np.float64(value if index is None else value[index])
        elif op is Op.FLAG:
            x = np.bool_(self.flags[v.arg])
        elif op is Op.IS_SET:
            name, index = v.arg if isinstance(v.arg, tuple) else (v.arg, None)
            x = np.bool_(self.hypers[name] is not None and (index is None or self.hypers[name][index] is not None))
        elif op is Op.CHOICE:
            x = np.bool_(self.hypers[v.arg[0]] == v.arg[1])
        elif op is Op.STEP:
            return ctx.step
        elif op is Op.PARAM:
            return ctx.param
        elif op is Op.GRAD:
            return ctx.grad
        elif op in (Op.NUMEL, Op.NDIM, Op.CHANNEL_NUMEL, Op.SIZE, Op.DTYPE_EPS):
            x = np.float64(_shape_input(op, ctx.shape, v.arg, ctx.eps))
        elif op is Op.STATE:
            if v.arg not in ctx.state:
                raise InterpError(f"state {v.arg!r} is read while it is absent (`empty` before its first "
                                  "store, or its condition does not hold)")
            return ctx.state[v.arg]
        elif op is Op.VAR:
            if v.arg not in ctx.env:
                raise InterpError(f"local {v.arg!r} is read before it is bound")
            return ctx.env[v.arg]
        elif op is Op.IS_EMPTY:
            x = np.bool_(v.arg not in ctx.state)
        else:
            raise InterpError(f"the interpreter does not know leaf {op.name}")
        return Bounded.point(x) if self.bounded else x

    def _eval(self, v: Value, ctx: _Context, memo: dict, prec):
        key = id(v)
        if key in memo:
            return memo[key]
        op = v.op
        bounded = self.bounded
        if op in LEAF:
            out = self._leaf(v, ctx)
        elif op is Op.WHERE or op in (Op.AND, Op.OR):
            out = self._lazy(v, ctx, memo, prec)
        elif op in REDUCE:
            if v.arg == "group":
                raise InterpError("a group reduction outside its phase (run the program through passes.optimize)")
            args = self._reduction_args(v, ctx, memo, prec)
            out = reduce_bounded(op, v.arg, args, ctx.shape, prec) if bounded else reduce_exact(op, v.arg, args, ctx.shape)
        else:
            args = [self._eval(a, ctx, memo, prec) for a in v.args]
            out = self._apply(v, args, prec) if bounded else _exact_apply(op, args)
        memo[key] = out
        return out

    def _reduction_args(self, v: Value, ctx: _Context, memo: dict, prec) -> list:
        """A reduction's operands; a host number becomes a tensor of the parameter's dtype (`sum(1)` is numel)."""
        args = [self._eval(a, ctx, memo, prec) for a in v.args]
        if self.bounded:
            args = [a if node.kind.on_device else _convert(a, prec) for a, node in zip(args, v.args)]
        return args

    def _part(self, v: Value, ctx: _Context, prec) -> Partial:
        """This tensor's part of a group reduction (its fold over this tensor)."""
        args = self._reduction_args(v, ctx, {}, prec)
        if self.bounded:
            return bounded_fold(v.op, args, ctx.shape, "tensor", prec)
        return exact_fold(v.op, args, ctx.shape, "tensor")

    def _apply(self, v: Value, args, prec):
        device = v.kind.on_device
        if device:
            args = [_convert(a, prec) if not node.kind.on_device else a for a, node in zip(args, v.args)]
        return bounded_apply(v.op, args, device, prec)

    def _lazy(self, v: Value, ctx: _Context, memo: dict, prec):
        """`c ? a : b` and `a and b` / `a or b` with a host or per-tensor left side evaluate only
        what the loop path evaluates (a guarded state may be absent on the other side)."""
        bounded = self.bounded
        first = self._eval(v.args[0], ctx, memo, prec)
        fx = first.x if bounded else first
        if np.ndim(fx) == 0:
            unsettled = bounded and bool(first.unc)
            if v.op is Op.WHERE:
                out = self._eval(v.args[1] if bool(fx) else v.args[2], ctx, memo, prec)
                return out.with_unc(np.ones(np.shape(out.x), dtype=bool)) if unsettled else out
            if (v.op is Op.AND and not bool(fx)) or (v.op is Op.OR and bool(fx)):
                return first
        args = [first] + [self._eval(a, ctx, memo, prec) for a in v.args[1:]]
        return self._apply(v, args, prec) if bounded else _exact_apply(v.op, args)


# ---- convenience ---------------------------------------------------------------------------------


def run(program: Program, params: Sequence[Any], grad_fn, steps: int, hypers=None, flags=None) -> tuple[list, Interpreter]:
    """`steps` steps from `params` with grads from grad_fn(step, i, param) -> array | None."""
    interp = Interpreter(program, hypers, flags)
    params = [np.asarray(p, dtype=np.float64).copy() for p in params]
    for k in range(steps):
        grads = [grad_fn(k, i, p) for i, p in enumerate(params)]
        params = interp.step(params, grads)
    return params, interp


def is_close(a, b, rtol: float, atol: float) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(all="ignore"):
        return bool(np.all((np.abs(a - b) <= atol + rtol * np.abs(b)) | (np.isnan(a) & np.isnan(b)) | (a == b)))


__all__ = ["Interpreter", "InterpError", "Precision", "Bounded", "bounded_apply", "numpy_form", "run", "is_close"]



@dataclass(frozen=True)
class SparseGrad:
    """A sparse (COO) gradient for the interpreter: `index` (sparse dims, nnz) integer rows, maybe
    repeated, `values` (nnz, *dense dims); `shape` the dense shape."""
    index: np.ndarray
    values: np.ndarray
    shape: tuple

    @classmethod
    def from_torch(cls, g) -> "SparseGrad":
        return cls(g._indices().numpy().copy(), g._values().double().numpy().copy(), tuple(g.shape))

    def dense(self) -> np.ndarray:
        out = np.zeros(self.shape)
        for k in range(self.index.shape[1]):
            out[tuple(self.index[:, k])] += self.values[k]
        return out

    def coalesced(self) -> "_Rows":
        """Repeated rows summed (in float64), rows in lexicographic order, as coalesce() orders them."""
        if self.index.shape[1] == 0:
            return _Rows((), np.zeros((0, *self.shape[self.index.shape[0]:])))
        keys, inverse = np.unique(self.index.T, axis=0, return_inverse=True)
        values = np.zeros((len(keys), *self.values.shape[1:]))
        np.add.at(values, inverse.reshape(-1), self.values)
        return _Rows(tuple(keys.T), values)


@dataclass(frozen=True)
class _Rows:
    index: tuple
    values: np.ndarray


def _exact(v):
    return v.x if isinstance(v, Bounded) else v


def _take(v, index):
    if isinstance(v, Bounded):
        return Bounded(v.x[index], None if v.lo is None else v.lo[index], None if v.hi is None else v.hi[index],
                       v.unc[index])
    return np.asarray(v)[index]


def _put(full, index, rows, bounded: bool):
    """`full` with its `index` rows replaced by `rows` (a copy)."""
    if bounded or isinstance(full, Bounded) or isinstance(rows, Bounded):
        full = full if isinstance(full, Bounded) else Bounded.point(full)
        rows = rows if isinstance(rows, Bounded) else Bounded.point(rows)
        parts = []
        for whole, part in ((full.x, rows.x), (full.lo, rows.lo), (full.hi, rows.hi), (full.unc, rows.unc)):
            if whole is None:
                parts.append(None)
                continue
            whole = np.array(whole, copy=True)
            whole[index] = part
            parts.append(whole)
        return Bounded(*parts)
    out = np.array(full, copy=True)
    out[index] = rows
    return out
