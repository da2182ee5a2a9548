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


# what a `require` on the param's shape may show in its message: torch's p.size(), p.ndim, p.numel()
PARAM_FACTS = ("shape", "ndim", "numel")


def reads_shape(checker, cond: ast.Expr) -> bool:
    """Whether a condition reads the param's shape and nothing of a step (a `require` on the shape)."""
    names = {n.id for n in ast.walk(cond) if isinstance(n, ast.Name)}
    calls = {n.func for n in ast.walk(cond) if isinstance(n, ast.Call)}
    per_step = names & ({"step", "grad", "param"} | set(checker.states)) or calls & {*REDUCTION_FUNCTIONS, "item"}
    return bool(names & {"ndim", "numel", "channel_numel", "dtype_eps"} or "size" in calls) and not per_step


def shape_condition(checker, cond: ast.Expr, what: str) -> bool:
    """A state's `if` or a `require`: hypers and flags, decided per group; or the param's shape too
    (`if ndim >= 2`, `require ndim == 2`), decided per tensor: when the state is made, or for every
    param when its group is added. Whether it reads the shape."""
    sym = checker.expect(cond, Type.BOOL, max_kind=Kind.TENSOR_SCALAR, what=what, locals_={})
    if sym is None or sym.kind <= Kind.HOST:
        return False
    who = what.removesuffix(" condition")
    for n in ast.walk(cond):
        if isinstance(n, ast.Name) and (n.id in ("step", "grad", "param") or n.id in checker.states):
            checker.r.error(n.span, f"{who} is decided once per param, before any step: it reads hypers, flags "
                                    f"and the param's shape (ndim, numel, channel_numel, size(d), dtype_eps), not "
                                    f"'{n.id}'")
            return True
        if isinstance(n, ast.Call) and n.func in REDUCTION_FUNCTIONS | {"item": 0}:
            checker.r.error(n.span, f"{who} is decided once per param, before any step: {n.func}() is not "
                                    "known then")
            return True
    return True


def item(checker, e: ast.Call, sym):
    """item(x): one number per tensor, computed on the device, read back to the host."""
    if sym.kind.on_host:
        checker.r.error(e.span, "item() reads a reduction's value back to the host; this value is on the host already")
        return None
    if sym.kind > Kind.REDUCED:
        per = "channel" if sym.kind is Kind.CHANNEL else "row or column" if sym.kind.is_axis \
            else "accumulator of a cover" if sym.kind is Kind.COVER else "element"
        checker.r.error(e.span, f"item() reads one number per tensor back to the host, but this varies per {per}: "
                                "reduce it first, e.g. item(norm(x))")
        return None
    return type(sym)(Kind.TENSOR_SCALAR, Type.NUM)


# functions that read their first argument as one 2-D matrix: newton_schulz(x, a, b, c, steps, eps)
MATRIX_FUNCTIONS = ("newton_schulz",)


def says_2d(cond: ast.Expr) -> bool:
    """Whether a condition says the param is a matrix: `ndim == 2` (or `2 == ndim`), or a conjunct so."""
    if isinstance(cond, ast.Binary) and cond.op == "and":
        return says_2d(cond.left) or says_2d(cond.right)
    if not (isinstance(cond, ast.Compare) and cond.ops == ("==",)):
        return False
    names = {x.id for x in cond.operands if isinstance(x, ast.Name)}
    return names == {"ndim"} and any(isinstance(x, ast.Num) and x.value == 2 for x in cond.operands)


def matrix_op(checker, e: ast.Call, syms, guards):
    """newton_schulz(x, a, b, c, steps, eps): x elementwise (the param's shape), known to be 2-D by a
    `require ndim == 2` or an enclosing `if ndim == 2`; the rest one number per tensor, on the host."""
    if syms[0].kind is not Kind.TENSOR:
        checker.r.error(e.args[0].span, f"{e.func}() orthogonalizes the param-shaped matrix its first argument "
                                        "holds: give it an elementwise value (a momentum, the grad)")
        return None
    for a, s in zip(e.args[1:], syms[1:]):
        if not s.kind.on_host:
            checker.r.error(a.span, f"{e.func}()'s coefficients, steps and eps are numbers known on the host "
                                    "(hypers, step math), not values on the device")
            return None
    if not (any(says_2d(r.cond) for r in checker.spec.requires) or any(says_2d(g) for g in guards)):
        checker.r.error(e.span, f"{e.func}() needs a 2-D param, and nothing here says the param is one: add "
                                "`require ndim == 2 else \"...\"` (checked for every param as its group is added), "
                                "or call it inside `if ndim == 2 { ... }`")
        return None
    return type(syms[0])(Kind.TENSOR, Type.NUM)
