"""Host-side Python for host and tensor_scalar values (float64 math, once per
group or per tensor), and the per-tensor host function that the foreach and
fused paths share."""
from __future__ import annotations

from ..ir import LEAF as LEAF_OPS, SHAPE_INPUTS, shape_input_name, Kind, Let, Op, Program, Stmt, Store, Type, Value, If, walk_values, stmt_values, walk_stmts
from ..names import ident, is_empty_name, literal, stored_name
from ..plan.table import (Column, columns, first_stored, is_device_stmt, per_tensor_inputs,  # noqa: F401
                          scalar_states, shape_inputs)
from ..selects import Selector, condition_may_be_tensor, is_select, unflattenable_host
from .common import Writer, float_literal, render


def host_leaf(v: Value, scalar_state=lambda n: f"({n} if capturable else _rt.value({n}))", is_empty=lambda n: f"({n} is None)") -> str:
    if v.op is Op.CONST:
        return float_literal(v.arg)
    if v.op is Op.HYPER:
        name, index = v.arg  # type: ignore[misc]
        return ident(name) if index is None else f"{ident(name)}[{int(index)}]"
    if v.op in (Op.FLAG, Op.VAR):
        return ident(str(v.arg))
    if v.op is Op.STEP:
        return "step"
    if v.op in SHAPE_INPUTS:
        return shape_input_name(v)
    if v.op is Op.IS_SET:
        if isinstance(v.arg, tuple):   # a tuple entry `none` by default
            return f"({ident(v.arg[0])}[{int(v.arg[1])}] is not None)"
        return f"({ident(str(v.arg))} is not None)"
    if v.op is Op.CHOICE:
        return f"({ident(v.arg[0])} == {literal(v.arg[1])})"
    if v.op is Op.STATE:
        return scalar_state(ident(str(v.arg)))
    if v.op is Op.IS_EMPTY:
        return is_empty(ident(str(v.arg)))
    raise AssertionError(f"{v.op.name} is not a host value")


def host_expr(v: Value, **leaf_options) -> str:
    def leaf(x: Value) -> str:
        return host_leaf(x, **leaf_options)
    if not any(is_select(n) or _per_tensor_logic(n) for n in walk_values(v)):
        return render(v, "host", leaf)
    return _with_selects(v, leaf)


# `and`, `or`, `not` whose (left) operand is a per-tensor condition, a 0-d tensor with capturable=True
# and under torch.compile, which Python's operators would read back (bool()). Python's `and`/`or`
# stay where the left operand is a host bool (never read back), and where the right one reads a
# state: a host conjunct on the left may be what guards it (`f and s > 0`, `state s ... if f`),
# which only Python's short circuit keeps unread.
TENSOR_LOGIC = {Op.AND: "_rt.both({0}, {1})", Op.OR: "_rt.either({0}, {1})", Op.NOT: "_rt.negate({0})"}


def _per_tensor_logic(v: Value) -> bool:
    if v.op not in TENSOR_LOGIC or v.args[0].kind is not Kind.TENSOR_SCALAR:
        return False
    return v.op is Op.NOT or not any(n.op is Op.STATE for n in walk_values(v.args[1]))


def _with_selects(v: Value, leaf) -> str:
    """Host source where an if-conversion's select (optdsl.selects) may pick between tensors:
    `_rt.where(c, a, b)`, never Python's `a if c else b` (a host read of a tensor condition);
    and logic on per-tensor conditions through `_rt.both`/`either`/`negate`."""
    from ..builtins import OPS
    if v.op in LEAF_OPS:
        return leaf(v)
    args = [_with_selects(a, leaf) for a in v.args]
    if is_select(v):
        return f"_rt.where({args[0]}, {args[1]}, {args[2]})"
    if _per_tensor_logic(v):
        return TENSOR_LOGIC[v.op].format(*args)
    return OPS[v.op].host.format(*args)


# Stores `s = s (op) h` to a scalar state that torch.optim writes in place (`mu_product *= mu`).
INPLACE_SCALAR = {Op.ADD: "add_", Op.SUB: "sub_", Op.MUL: "mul_", Op.DIV: "div_"}


def _reads_state(v: Value, name: str) -> bool:
    return any(n.op is Op.STATE and n.arg == name for n in walk_values(v))


def scalar_store(target: str, v: Value) -> tuple[Op, Value] | None:
    """How a store to scalar state `target` rounds. A scalar state is a 0-d float32 tensor:

    * `s = s + h`, `h + s`, `s - h`, `s * h`, `h * s`, `s / h` (h not reading s) is the tensor's
      own in-place op, as torch.optim writes it (`mu_product *= mu`): float32 arithmetic, h
      rounded to float32 first. Returns (op, h).
    * anything else is computed on the host in float64 and rounded to float32 once, when
      stored (`eta.copy_(torch.as_tensor(lr / ...))`). Returns None.

    Every path (the loop's tensor ops, the per-tensor host function of the foreach and fused
    paths) follows this rule, so they agree bit for bit, and with torch."""
    if v.op not in INPLACE_SCALAR:
        return None
    a, b = v.args
    is_s = lambda x: x.op is Op.STATE and x.arg == target  # noqa: E731
    if is_s(a) and not _reads_state(b, target):
        return v.op, b
    if v.op in (Op.ADD, Op.MUL) and is_s(b) and not _reads_state(a, target):
        return v.op, a
    return None


def scalar_store_host(target: str, v: Value, **leaf_options) -> str:
    """Host source of the float32 value a store leaves in scalar state `target` (see scalar_store)."""
    form = scalar_store(target, v)
    if form is None:
        return f"_rt.f32({host_expr(v, **leaf_options)})"
    op, h = form
    from ..builtins import OPS
    current = host_leaf(Value(Op.STATE, (), target, Kind.TENSOR_SCALAR, Type.NUM), **leaf_options)
    return f"_rt.f32({OPS[op].host.format(current, f'_rt.f32({host_expr(h, **leaf_options)})')})"


def emit_per_tensor_function(p: Program, fn_name: str, cols: list[Column] | None = None,
                             track_stores: bool = False) -> str:
    """def _<name>_per_tensor(step, ..., *, hypers, flags) -> (columns..., new scalar states...
    [, whether a store to each `empty` state is reached, with track_stores]); `cols`: the plan's."""
    cols = columns(p) if cols is None else cols
    tracked = set(first_stored(p)) if track_stores else set()
    # `is_empty(x)` read after a store to x is false there: the host function follows the stores
    flat = list(walk_stmts(p.body))
    reread = {s.target for i, s in enumerate(flat) if isinstance(s, Store) and s.target in first_stored(p)
              and any(n.op is Op.IS_EMPTY and n.arg == s.target for t in flat[i + 1:] for v in stmt_values(t)
                      for n in walk_values(v))}
    w = Writer()
    params = per_tensor_inputs(p)
    kw = [ident(n) for n in p.group_value_names]
    sig = ", ".join(params + (["*"] + kw if kw else []))
    w.line(f"def {fn_name}({sig}):")
    with w.indent():
        w.line('"""Host math for one tensor (its step, its scalar state): float64, once per tensor, never per element."""')
        for c in cols:  # columns not computed on a branch not taken read as 0
            w.line(f"{ident(c.name)} = {'False' if c.type is Type.BOOL else '0.0'}")
        for name in first_stored(p):
            if name in tracked:
                w.line(f"{stored_name(name)} = False")

        def block(stmts):
            emitted = False
            for s in stmts:
                if isinstance(s, Let) and s.value.kind.on_host:
                    w.line(f"{ident(s.name)} = {host_expr(s.value, scalar_state=lambda n: n, is_empty=lambda n: f'_{n}_is_empty')}")
                    emitted = True
                elif isinstance(s, Store) and s.target != "param" and p.state(s.target).kind is Kind.TENSOR_SCALAR:
                    w.line(f"{ident(s.target)} = {scalar_store_host(s.target, s.value, scalar_state=lambda n: n, is_empty=lambda n: f'_{n}_is_empty')}")
                    emitted = True
                elif isinstance(s, Store) and s.target in tracked | reread:
                    if s.target in tracked:
                        w.line(f"{stored_name(s.target)} = True")
                    if s.target in reread:
                        w.line(f"{is_empty_name(s.target)} = False")
                    emitted = True
                elif isinstance(s, If) and s.cond.kind.on_device and _has_host(s):
                    # a condition on a reduction is known on the device only: the host math under it
                    # is computed either way (pure math; the device code picks what it reads)
                    _check_unconditional_host(s, p)
                    emitted |= block(s.then)
                    emitted |= block(s.other)
                elif isinstance(s, If) and _has_host(s):
                    w.line(f"if {host_expr(s.cond, scalar_state=lambda n: n, is_empty=lambda n: f'_{n}_is_empty')}:")
                    with w.indent():
                        if not block(s.then):
                            w.line("pass")
                    if _has_host_block(s.other, p, tracked | reread):
                        w.line("else:")
                        with w.indent():
                            block(s.other)
                    emitted = True
            return emitted

        def _has_host(s: If) -> bool:
            return _has_host_block(s.then, p, tracked | reread) or _has_host_block(s.other, p, tracked | reread)
        # a per-tensor `if` on the step or a scalar state: both sides computed, the results selected
        # (optdsl.selects), so that capturable steps (0-d tensors) are never read back; with floats
        # the values are the same (host math is IEEE-safe, the select picks the branch taken)
        tensor_condition = condition_may_be_tensor(p)
        selector = Selector(p, p.body, lambda c: c.kind is Kind.TENSOR_SCALAR and tensor_condition(c), scalar_stores=False,
                            host_only=True)
        block(selector.convert_all(p.body, {c.name for c in cols} | set(scalar_states(p))))
        results = [ident(c.name) for c in cols] + [ident(n) for n in scalar_states(p)]
        results += [stored_name(n) for n in first_stored(p) if n in tracked]
        w.line(f"return ({', '.join(results)}{',' if len(results) == 1 else ''})")
    return w.text()


def _check_unconditional_host(s: If, p: Program) -> None:
    problem = unflattenable_host(s, p)
    if problem is not None:
        from ..plan import PlanError
        raise PlanError(problem)


def _has_host_block(stmts, p: Program, tracked=frozenset()) -> bool:
    for s in stmts:
        if isinstance(s, Store) and s.target in tracked:
            return True
        if isinstance(s, Let) and s.value.kind.on_host:
            return True
        if isinstance(s, Store) and s.target != "param" and p.state(s.target).kind is Kind.TENSOR_SCALAR:
            return True
        if isinstance(s, If) and (_has_host_block(s.then, p, tracked) or _has_host_block(s.other, p, tracked)):
            return True
    return False


# ---- host values that may be tensors ---------------------------------------------------------
#
# A host value is a Python float in eager mode, but a 0-d tensor where it depends on `step` or a
# scalar state and the step is capturable (the math stays on the device) or traced by
# torch.compile, or where it depends on a hyper torch.optim accepts as a Tensor (`lr`). Emitters
# pass such values as `alpha=` / `value=` through runtime helpers that keep a device tensor on
# its device (optdsl.runtime.add_, addcdiv_, foreach_addcdiv_, ...).

TENSOR_HYPERS = frozenset({"lr"})


def _depends(v: Value, names: set[str], leaf) -> bool:
    return any(leaf(n) or (n.op is Op.VAR and n.arg in names) for n in walk_values(v))


def _dependents(p: Program, leaf) -> set[str]:
    """Host locals whose value depends on a leaf for which leaf(node) holds (through other locals)."""
    names: set[str] = set()
    changed = True
    while changed:
        changed = False
        for s in walk_stmts(p.body):
            if isinstance(s, Let) and s.value.kind.on_host and s.name not in names \
                    and _depends(s.value, names, leaf):
                names.add(s.name)
                changed = True
    return names


def _tensor_leaf(n: Value) -> bool:
    return (n.op is Op.STEP or (n.op is Op.STATE and n.kind is Kind.TENSOR_SCALAR)
            or (n.op is Op.HYPER and n.arg[0] in TENSOR_HYPERS))


def tensor_capable(p: Program) -> set[str]:
    """Host locals that may hold a tensor at run time (see above)."""
    return _dependents(p, _tensor_leaf)


def may_be_tensor(v: Value, names: set[str]) -> bool:
    return v.kind is not Kind.CONST and _depends(v, names, _tensor_leaf)


def lr_reaches_per_tensor_column(p: Program) -> bool:
    """Whether the foreach path (hoisted IR `p`) folds `lr` into a per-tensor host column, as
    Adam's step size `lr / bias_correction1`: such a column is a list of Python numbers, so a
    Tensor lr needs capturable=True there (torch.optim.Adam's rule)."""
    lr_names = _dependents(p, lambda n: n.op is Op.HYPER and n.arg[0] in TENSOR_HYPERS)
    return any(c.kind is Kind.TENSOR_SCALAR and c.name in lr_names for c in columns(p))
