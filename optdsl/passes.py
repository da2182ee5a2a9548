"""Stage 4: IR -> IR passes, plain functions run in order (sqlglot style).

fold_constants  evaluates const-only math once, at build time;
hoist_host      names every host-computed part of an elementwise expression, so
                backends compute it once per group (host) or per tensor
                (tensor_scalar), never per element."""
from __future__ import annotations

import math

from .ir import (REDUCE, join, walk_stmts, Kind, Let, Op, Program, Stmt, Store, Type, Value, If, apply, const, map_values,
                 rebuild, walk_values, verify, with_args)


def _fold_node(v: Value) -> Value:
    if v.op in (Op.CONST,) or v.kind is not Kind.CONST or not v.args or v.op is Op.COPY or v.op in REDUCE:
        return v
    a = [x.arg for x in v.args]
    try:
        if v.op is Op.WHERE:
            return v.args[1] if a[0] else v.args[2]
        fn = {
            Op.NEG: lambda x: -x, Op.NOT: lambda x: not x, Op.ABS: abs,
            Op.ADD: lambda x, y: x + y, Op.SUB: lambda x, y: x - y, Op.MUL: lambda x, y: x * y,
            Op.DIV: lambda x, y: x / y, Op.POW: lambda x, y: float(x ** y),
            Op.SQRT: math.sqrt, Op.EXP: math.exp, Op.LOG: math.log,
            # as optdsl.runtime computes them on the host
            Op.RSQRT: lambda x: 1.0 / (x ** 0.5) if x >= 0 else math.nan,
            Op.SIGN: lambda x: 0.0 if x == 0 or x != x else math.copysign(1.0, x),
            Op.CLAMP: lambda x, lo, hi: min(max(x, lo), hi),
            Op.LERP: lambda a, b, w: a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (1 - w),
            Op.MIN: min, Op.MAX: max,
            Op.LT: lambda x, y: x < y, Op.LE: lambda x, y: x <= y, Op.GT: lambda x, y: x > y,
            Op.GE: lambda x, y: x >= y, Op.EQ: lambda x, y: x == y, Op.NE: lambda x, y: x != y,
            Op.AND: lambda x, y: x and y, Op.OR: lambda x, y: x or y,
        }.get(v.op)
        if fn is None:
            return v
        out = fn(*a)
    except (ArithmeticError, ValueError, TypeError):
        return v  # leave it to run time, where IEEE rules apply per backend
    if isinstance(out, bool):
        return const(out)
    if isinstance(out, (int, float)) and math.isfinite(out):
        return const(float(out))
    return v


def _simplify(v: Value) -> Value:
    """Algebraic identities that are exact in IEEE arithmetic."""
    v = _fold_node(v)
    if v.op is Op.WHERE and v.args[0].op is Op.CONST:
        return v.args[1] if v.args[0].arg else v.args[2]
    if v.op is Op.AND:
        for x, y in ((v.args[0], v.args[1]), (v.args[1], v.args[0])):
            if x.op is Op.CONST:
                return y if x.arg else const(False)
    if v.op is Op.OR:
        for x, y in ((v.args[0], v.args[1]), (v.args[1], v.args[0])):
            if x.op is Op.CONST:
                return const(True) if x.arg else y
    return v


def fold_value(v: Value) -> Value:
    """One value with its constant parts folded (a state's condition, once its flags are fixed)."""
    return rebuild(v, _simplify)


def fold_constants(p: Program) -> Program:
    body = map_values(p.body, lambda v: rebuild(v, _simplify))
    body = _rekind(_prune(body), {})
    return _replace(p, body=body)


def _broadcast(name: str, kind: Kind, typ: Type) -> Let:
    """`name = where(param == param, name, name)`: the number in `name`, as a tensor of the
    parameter's shape (NaN parameters included)."""
    param = Value(Op.PARAM, (), None, Kind.TENSOR, Type.NUM)
    var = Value(Op.VAR, (), name, kind, typ)
    return Let(name, apply(Op.WHERE, apply(Op.EQ, param, param), var, var))


def _on_device(name: str, kind: Kind, typ: Type) -> Let:
    return Let(name, apply(Op.ON_DEVICE, Value(Op.VAR, (), name, kind, typ)))


def _rekind(stmts: tuple[Stmt, ...], env: dict[str, Kind], types: dict[str, Type] | None = None) -> tuple[Stmt, ...]:
    """Folding can lower a local's kind (`v = c ? param : 0.5` with c folded to false is a
    number, no longer a tensor): give each read of a local the kind of the values that reach
    it (the highest, after an `if`), so backends never treat a number as a tensor."""
    def fix(v: Value) -> Value:
        def leaf(n: Value) -> Value:
            if n.op is Op.VAR and n.arg in env and env[n.arg] != n.kind:
                return Value(Op.VAR, (), n.arg, env[n.arg], n.type)
            return n
        return rebuild(v, leaf)

    types = {} if types is None else types
    out: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Let):
            s = Let(s.name, fix(s.value))
            env[s.name] = s.value.kind
            types[s.name] = s.value.type
        elif isinstance(s, Store):
            s = Store(s.target, fix(s.value))
        else:
            cond = fix(s.cond)    # read before either branch runs
            then_env, other_env = dict(env), dict(env)
            then, other = _rekind(s.then, then_env, types), _rekind(s.other, other_env, types)
            for name in sorted(set(then_env) | set(other_env)):
                if not (name in then_env and name in other_env):
                    continue    # bound on one path only: not visible after the `if`
                joined = join(then_env[name], other_env[name])
                # a tensor on one path and a number on the other (`v = 0.5; if c { v = grad }`): the
                # path with the number broadcasts it at its end, so after the `if` v is a tensor
                if joined is Kind.TENSOR and then_env[name] is not Kind.TENSOR:
                    then = then + (_broadcast(name, then_env[name], types[name]),)
                if joined is Kind.TENSOR and other_env[name] is not Kind.TENSOR:
                    other = other + (_broadcast(name, other_env[name], types[name]),)
                # a reduction's value on one path and a host one on the other: the host one becomes a
                # device value at the end of its path, so after the `if` every backend has one kind
                if (joined in (Kind.REDUCED, Kind.CHANNEL) or joined.is_axis) and then_env[name].on_host:
                    then = then + (_on_device(name, then_env[name], types[name]),)
                if (joined in (Kind.REDUCED, Kind.CHANNEL) or joined.is_axis) and other_env[name].on_host:
                    other = other + (_on_device(name, other_env[name], types[name]),)
                env[name] = joined
            s = If(cond, then, other)
        out.append(s)
    return tuple(out)


def _prune(stmts: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
    """Drop `if` statements whose condition folded to a constant."""
    out: list[Stmt] = []
    for s in stmts:
        if isinstance(s, If):
            if s.cond.op is Op.CONST:
                out.extend(_prune(s.then if s.cond.arg else s.other))
                continue
            s = If(s.cond, _prune(s.then), _prune(s.other))
        out.append(s)
    return tuple(out)


def specialize(p: Program, values: dict[tuple[Op, object], bool | float]) -> Program:
    """Replace leaves (e.g. a flag, is_empty(x)) with constants, then fold."""
    def sub(v: Value) -> Value:
        key = (v.op, v.arg)
        if not v.args and key in values:
            return const(values[key])
        return v
    body = map_values(p.body, lambda v: rebuild(v, sub))
    return fold_constants(_replace(p, body=body))


def hoist_host(p: Program, min_kind: Kind = Kind.HOST) -> Program:
    """Give every maximal host-computed sub-expression of an elementwise value (and
    every `if` condition) of kind >= min_kind a Let of its own, placed just before
    its statement. Hyper and flag leaves stay where they are: every backend can
    read them directly. The foreach path hoists only per-tensor values (min_kind
    TENSOR_SCALAR, lists of floats); the kernel hoists all host math."""
    counter = [0]
    # A host local bound more than once is read by device code (through a column, by name) at
    # the value it has where it is read, so such reads are hoisted too.
    bound = [s.name for s in walk_stmts(p.body) if isinstance(s, Let)]
    rebound = {n for n in bound if bound.count(n) > 1}

    def reads_rebound(node: Value) -> bool:
        return bool(rebound) and any(n.op is Op.VAR and n.arg in rebound for n in walk_values(node))

    def fresh() -> str:
        counter[0] += 1
        return f"_h{counter[0]}"

    optional = {h.name for h in p.hypers if h.optional}
    entries = {(h.name, i) for h in p.hypers for i in h.optional_entries}

    def given_only(node: Value) -> Value:
        """A hoisted value is computed on every path, but an optional hyper in it may be None where
        a select (`h != none ? h * x : y`) does not take the branch that reads it. Each read of one
        becomes `h if given else 0`: the checker guarantees the 0 is never what the update uses."""
        def guard(n: Value) -> Value:
            if n.op is Op.HYPER and (n.arg[0] in optional or n.arg in entries):
                zero = const(False if n.type is Type.BOOL else 0.0)
                which = n.arg[0] if n.arg[0] in optional else n.arg
                return apply(Op.WHERE, Value(Op.IS_SET, (), which, Kind.HOST, Type.BOOL), n, zero)
            return n
        return rebuild(node, guard) if optional or entries else node

    def effective(node: Value) -> Kind:
        # math on numbers that folding left alone (`rsqrt(2)`) is computed on the host like a hyper's
        return max(node.kind, Kind.HOST) if node.args and node.kind is Kind.CONST else node.kind

    def hoist_value(v: Value, out: list[Stmt], memo: dict[Value, Value], whole: bool = False) -> Value:
        if not v.kind.on_device and not whole:
            return v
        def visit(node: Value) -> Value:
            if node.kind.on_device or not node.args and node.op in (Op.CONST, Op.HYPER, Op.FLAG, Op.IS_SET, Op.CHOICE):
                return node
            if reads_rebound(node):
                pass
            elif effective(node) < min_kind or node.op is Op.VAR:
                return node
            if node in memo:
                return memo[node]
            name = fresh()
            out.append(Let(name, given_only(node)))
            ref = Value(Op.VAR, (), name, node.kind, node.type)
            memo[node] = ref
            return ref
        return _rebuild_top_down(v, visit)

    def block(stmts: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
        out: list[Stmt] = []
        memo: dict[Value, Value] = {}
        for s in stmts:
            if isinstance(s, Let):
                out.append(Let(s.name, hoist_value(s.value, out, memo)))
                memo.clear()  # a rebound local may change what a memoised host value means
            elif isinstance(s, Store):
                # a host value stored into a tensor (`param = lr`) is hoisted whole
                whole = s.target == "param" or p.state(s.target).kind.on_device
                out.append(Store(s.target, hoist_value(s.value, out, memo, whole)))
                memo.clear()
            else:
                cond = s.cond
                if cond.kind.on_device:   # a condition on a reduction: its host parts are hoisted
                    cond = hoist_value(cond, out, memo)
                elif cond.op not in (Op.VAR, Op.CONST, Op.FLAG, Op.IS_SET, Op.CHOICE) and effective(cond) >= min_kind or reads_rebound(cond):
                    name = fresh()
                    out.append(Let(name, cond))
                    cond = Value(Op.VAR, (), name, cond.kind, cond.type)
                out.append(If(cond, block(s.then), block(s.other)))
                memo.clear()
        return tuple(out)

    return _replace(p, body=block(p.body))


def _rebuild_top_down(v: Value, visit) -> Value:
    """Replace maximal host subtrees (visit decides), rebuilding device nodes above them."""
    if not v.kind.on_device:
        return visit(v)
    if not v.args:
        return v
    new_args = tuple(_rebuild_top_down(a, visit) for a in v.args)
    if all(n is o for n, o in zip(new_args, v.args)):
        return v
    return with_args(v, new_args)


def _replace(p: Program, **changes) -> Program:
    from dataclasses import replace
    return replace(p, **changes)


def name_reductions(p: Program) -> Program:
    """Give every reduction a Let of its own (`_r1 = norm(param)`), placed just before the statement
    that reads it, innermost first: a reduction is a barrier, and the phase plan (optdsl.plan)
    schedules these Lets. An `item()` gets one too (`_h1 = item(_r1)`): the eager paths read it
    back there, and host math after reads the local."""
    counter = [0]

    def lift(v: Value, out: list[Stmt]) -> Value:
        def sub(node: Value) -> Value:
            if node.op not in REDUCE and node.op is not Op.ITEM:
                return node
            counter[0] += 1
            name = f"_{'h' if node.op is Op.ITEM else 'r'}{counter[0]}"
            out.append(Let(name, node))
            return Value(Op.VAR, (), name, node.kind, node.type)
        return rebuild(v, sub)

    def block(stmts: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
        out: list[Stmt] = []
        for s in stmts:
            if isinstance(s, Let):
                out.append(Let(s.name, lift(s.value, out)))
            elif isinstance(s, Store):
                out.append(Store(s.target, lift(s.value, out)))
            else:
                out.append(If(lift(s.cond, out), block(s.then), block(s.other)))
        return tuple(out)
    return _replace(p, body=block(p.body))


PIPELINE = (fold_constants, name_reductions)


def optimize(p: Program, check: bool = False) -> Program:
    """PIPELINE over the update, and over each `on` block as a program of its own."""
    modes = tuple((m, optimize(p.mode_program(m), check).body) for m, _ in p.modes)
    for step in PIPELINE:
        p = step(p)
        if check:
            verify(p)
    return _replace(p, modes=modes) if modes else p
