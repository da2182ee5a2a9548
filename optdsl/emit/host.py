"""Host-side Python for host and tensor_scalar values (float64 math, once per
group or per tensor), and the per-tensor host function that the foreach and
fused paths share."""
from __future__ import annotations

from dataclasses import dataclass

from ..ir import Kind, Let, Op, Program, Stmt, Store, Type, Value, If, walk_values, stmt_values, walk_stmts
from ..names import ident, literal
from .common import Writer, float_literal, render


def host_leaf(v: Value, scalar_state=lambda n: f"_rt.value({n})", is_empty=lambda n: f"({n} is None)") -> str:
    if v.op is Op.CONST:
        return float_literal(v.arg)
    if v.op is Op.HYPER:
        name, index = v.arg  # type: ignore[misc]
        return ident(name) if index is None else f"{ident(name)}[{int(index)}]"
    if v.op in (Op.FLAG, Op.VAR):
        return ident(str(v.arg))
    if v.op is Op.STEP:
        return "step"
    if v.op is Op.STATE:
        return scalar_state(ident(str(v.arg)))
    if v.op is Op.IS_EMPTY:
        return is_empty(ident(str(v.arg)))
    raise AssertionError(f"{v.op.name} is not a host value")


def host_expr(v: Value, **leaf_options) -> str:
    return render(v, "host", lambda x: host_leaf(x, **leaf_options))


@dataclass(frozen=True)
class Column:
    """A host value the device code reads: one per group (HOST) or per tensor (TENSOR_SCALAR)."""
    name: str
    kind: Kind
    type: Type


def is_device_stmt(s: Stmt, p: Program) -> bool:
    if isinstance(s, Let):
        return s.value.kind is Kind.TENSOR
    if isinstance(s, Store):
        return s.target == "param" or p.state(s.target).kind is Kind.TENSOR
    return True


def columns(p: Program) -> list[Column]:
    """Host VARs read by device statements (hoisted IR), in first-use order."""
    host_lets = {s.name: s.value for s in walk_stmts(p.body) if isinstance(s, Let) and s.value.kind < Kind.TENSOR}
    out: dict[str, Column] = {}

    def visit(stmts):
        for s in stmts:
            if not is_device_stmt(s, p):
                continue
            if isinstance(s, If):
                if _has_device(s.then, p) or _has_device(s.other, p):
                    _add(s.cond)
                visit(s.then)
                visit(s.other)
            else:
                for n in walk_values(s.value):
                    _add(n)

    def _add(n: Value):
        if n.op is Op.VAR and n.arg in host_lets and n.arg not in out:
            out[n.arg] = Column(str(n.arg), host_lets[n.arg].kind, n.type)
    visit(p.body)
    return list(out.values())


def _has_device(stmts, p) -> bool:
    return any(is_device_stmt(s, p) and (not isinstance(s, If) or _has_device(s.then, p) or _has_device(s.other, p))
               for s in stmts)


def per_tensor_inputs(p: Program) -> list[str]:
    """Arguments of the per-tensor host function, beside the hypers and flags."""
    args = ["step"] if p.uses_step else []
    args += [s.name for s in p.states if s.kind is Kind.TENSOR_SCALAR]
    args += [f"{s.name}_is_empty" for s in p.states if s.init == "empty"]
    return args


def scalar_states(p: Program) -> list[str]:
    return [s.name for s in p.states if s.kind is Kind.TENSOR_SCALAR]


def emit_per_tensor_function(p: Program, fn_name: str) -> str:
    """def _<name>_per_tensor(step, ..., *, hypers, flags) -> (columns..., new scalar states...)"""
    cols = columns(p)
    w = Writer()
    params = per_tensor_inputs(p)
    kw = [h.name for h in p.hypers] + [f.name for f in p.flags]
    sig = ", ".join(params + (["*"] + kw if kw else []))
    w.line(f"def {fn_name}({sig}):")
    with w.indent():
        w.line('"""Host math for one tensor (its step, its scalar state): float64, once per tensor, never per element."""')
        for c in cols:  # columns not computed on a branch not taken read as 0
            w.line(f"{ident(c.name)} = {'False' if c.type is Type.BOOL else '0.0'}")

        def block(stmts):
            emitted = False
            for s in stmts:
                if isinstance(s, Let) and s.value.kind < Kind.TENSOR:
                    w.line(f"{ident(s.name)} = {host_expr(s.value, scalar_state=lambda n: n, is_empty=lambda n: n + '_is_empty')}")
                    emitted = True
                elif isinstance(s, Store) and s.target != "param" and p.state(s.target).kind is Kind.TENSOR_SCALAR:
                    w.line(f"{ident(s.target)} = {host_expr(s.value, scalar_state=lambda n: n, is_empty=lambda n: n + '_is_empty')}")
                    emitted = True
                elif isinstance(s, If) and _has_host(s):
                    w.line(f"if {host_expr(s.cond, scalar_state=lambda n: n, is_empty=lambda n: n + '_is_empty')}:")
                    with w.indent():
                        if not block(s.then):
                            w.line("pass")
                    if _has_host_block(s.other, p):
                        w.line("else:")
                        with w.indent():
                            block(s.other)
                    emitted = True
            return emitted

        def _has_host(s: If) -> bool:
            return _has_host_block(s.then, p) or _has_host_block(s.other, p)
        block(p.body)
        results = [ident(c.name) for c in cols] + [ident(n) for n in scalar_states(p)]
        w.line(f"return ({', '.join(results)}{',' if len(results) == 1 else ''})")
    return w.text()


def _has_host_block(stmts, p: Program) -> bool:
    for s in stmts:
        if isinstance(s, Let) and s.value.kind < Kind.TENSOR:
            return True
        if isinstance(s, Store) and s.target != "param" and p.state(s.target).kind is Kind.TENSOR_SCALAR:
            return True
        if isinstance(s, If) and (_has_host_block(s.then, p) or _has_host_block(s.other, p)):
            return True
    return False
