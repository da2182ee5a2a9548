"""The checker's rules for `sparse rows`: an update that runs at a sparse gradient's touched rows
only must mean there what it means on the whole tensor, element by element."""
from __future__ import annotations

from . import ast
from .builtins import INPUTS, REDUCTION_FUNCTIONS, SHAPE_FUNCTIONS

HOWS = ("rows",)
# inputs that read the whole parameter's shape: on its touched rows they would read another one
SHAPE_INPUTS = frozenset({"numel", "ndim", "channel_numel"})
assert SHAPE_INPUTS <= set(INPUTS)


def check_sparse(spec: ast.Spec, report, did_you_mean) -> None:
    """At most one `sparse` declaration, spelled `sparse rows` or `sparse rows only`. With it, the
    update reads no reduction and no shape (they would see the touched rows, not the tensor), keeps
    no `empty` state (its untouched rows would hold nothing) and has no `input` (its estimate is
    of the whole tensor)."""
    if not spec.sparse:
        return
    for extra in spec.sparse[1:]:
        report.error(extra.span, "`sparse` is declared once")
    decl = spec.sparse[0]
    if decl.how not in HOWS:
        report.error(decl.how_span, f"`sparse {decl.how}`: a sparse gradient updates its touched `rows` (`sparse rows`, "
                                    f"or `sparse rows only` to refuse a dense one){did_you_mean(decl.how, HOWS)}")
        return
    if decl.only is not None and decl.only != "only":
        report.error(decl.only_span, f"`sparse rows {decl.only}`: after `sparse rows` comes only `only` (a dense "
                                     f"gradient is then an error){did_you_mean(decl.only, ('only',))}")
    why = "the update runs at a sparse gradient's touched rows only (`sparse rows`)"
    for s in spec.states:
        if s.shape in ("row", "column", "cover") or s.cond is not None and any(
                isinstance(n, ast.Name) and n.id in INPUTS for n in ast.walk(s.cond)):
            report.error(s.span, f"state '{s.name}' depends on the parameter's shape: {why}, which have another")
        elif s.init == "empty":
            report.error(s.span, f"state '{s.name}' starts empty: {why}, so its other rows would never hold a value; "
                                 "start it at `zeros` or a number")
    for i in spec.inputs:
        report.error(i.span, f"input '{i.name}' is estimated over the whole tensor: {why}")
    for e in _update_exprs(spec.body):
        if isinstance(e, ast.Call) and e.func in REDUCTION_FUNCTIONS:
            report.error(e.span, f"`{e.func}(...)` reduces over the tensor: {why}, where it would reduce over "
                                 "those rows; a spec with reductions refuses sparse gradients (drop `sparse rows`)")
        elif isinstance(e, ast.Call) and e.func in SHAPE_FUNCTIONS or isinstance(e, ast.Name) and e.id in SHAPE_INPUTS:
            what = e.func if isinstance(e, ast.Call) else e.id
            report.error(e.span, f"`{what}` reads the parameter's shape: {why}, which have another")


def _update_exprs(body):
    stack = list(body)
    while stack:
        s = stack.pop()
        if isinstance(s, ast.Assign):
            yield from ast.walk(s.value)
        elif isinstance(s, ast.If):
            yield from ast.walk(s.cond)
            stack.extend(s.then)
            stack.extend(s.other)
