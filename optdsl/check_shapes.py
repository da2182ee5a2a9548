"""The checker's rules for what depends on a tensor's shape: a state's `if` on the shape, item(),
size(d)'s dim, and what an `else` knows of its condition."""
from __future__ import annotations

from . import ast
from .builtins import REDUCTION_FUNCTIONS
from .ir import Kind, Type


def complement(cond: ast.Expr) -> ast.Expr:
    """What an `else` knows: a single comparison flipped (`ndim >= 2` -> `ndim < 2`), else `not cond`."""
    flip = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}
    if isinstance(cond, ast.Compare) and len(cond.ops) == 1 and not any(isinstance(x, ast.NoneLit) for x in cond.operands):
        return ast.Compare(cond.span, cond.operands, (flip[cond.ops[0]],))
    if isinstance(cond, ast.Unary) and cond.op == "not":
        return cond.operand
    return ast.Unary(cond.span, "not", cond)


def dim_literal(e: ast.Expr) -> int | None:
    """A dim written as a whole number, `1` or `-1`; None for anything else."""
    if isinstance(e, ast.Unary) and e.op == "-" and isinstance(e.operand, ast.Num):
        d = -e.operand.value
    elif isinstance(e, ast.Num):
        d = e.value
    else:
        return None
    return int(d) if d == int(d) else None


def state_condition(checker, s: ast.State) -> None:
    """A state's `if`: hypers and flags, decided per group; or the param's shape too (`if ndim >= 2`),
    decided per tensor when the state is made."""
    sym = checker.expect(s.cond, Type.BOOL, max_kind=Kind.TENSOR_SCALAR, what="a state's `if` condition", locals_={})
    if sym is None or sym.kind <= Kind.HOST:
        return
    for n in ast.walk(s.cond):
        if isinstance(n, ast.Name) and (n.id in ("step", "grad", "param") or n.id in checker.states):
            checker.r.error(n.span, f"a state's `if` is decided once, when the state is made: it reads hypers, flags "
                                    f"and the param's shape (ndim, numel, channel_numel, size(d), dtype_eps), not "
                                    f"'{n.id}'")
            return
        if isinstance(n, ast.Call) and n.func in REDUCTION_FUNCTIONS | {"item": 0}:
            checker.r.error(n.span, f"a state's `if` is decided once, when the state is made: {n.func}() is not "
                                    "known then")
            return


def item(checker, e: ast.Call, sym):
    """item(x): one number per tensor, computed on the device, read back to the host."""
    if sym.kind.on_host:
        checker.r.error(e.span, "item() reads a reduction's value back to the host; this value is on the host already")
        return None
    if sym.kind > Kind.REDUCED:
        per = "channel" if sym.kind is Kind.CHANNEL else "row or column" if sym.kind.is_axis else "element"
        checker.r.error(e.span, f"item() reads one number per tensor back to the host, but this varies per {per}: "
                                "reduce it first, e.g. item(norm(x))")
        return None
    return type(sym)(Kind.TENSOR_SCALAR, Type.NUM)
