"""Warnings for declarations nothing reads: a hyper or flag that neither the update, a state's
initial value or condition, another hyper's `where` nor a `require` reads, and a state the update
never reads or stores. Such a spec still compiles (the class takes the argument and ignores it),
but it is almost always a slip: a typo'd name in the update, or a leftover.

They are warnings, not errors: `compile_spec` returns them in `Compiled.warnings`, `optdsl check`
and `optdsl build` print them, and `optdsl check --werror` makes them errors."""
from __future__ import annotations

from . import ast
from .diagnostics import Diagnostic


def _names(e: ast.Expr | None) -> set[str]:
    if e is None:
        return set()
    out = set()
    for x in ast.walk(e):
        if isinstance(x, ast.Name):
            out.add(x.id)
    return out


def _body_names(stmts) -> set[str]:
    out: set[str] = set()
    stack = list(stmts)
    while stack:
        st = stack.pop()
        if isinstance(st, ast.Assign):
            out.add(st.target)
            out |= _names(st.value)
        else:
            out |= _names(st.cond)
            stack.extend(st.then + st.other)
    return out


def unused_declarations(spec: ast.Spec) -> list[Diagnostic]:
    body = _body_names(spec.body)
    elsewhere = set()   # read outside the update: states' initial values and conditions, checks
    for s in spec.states:
        elsewhere |= _names(s.cond)
        if isinstance(s.init, str):
            elsewhere.add(s.init)
    for r in spec.requires:
        elsewhere |= _names(r.cond)
    for i in spec.inputs:   # an estimator's settings
        elsewhere |= set(i.args)
    for m in spec.modes:
        body |= _body_names(m.body)
    out = []
    for h in spec.hypers:
        others = set().union(*(_names(g.where) for g in spec.hypers if g is not h))
        if h.name not in body | elsewhere | others:
            out.append(Diagnostic(h.span, f"hyper '{h.name}' is never used: the update, the states and the checks "
                                          "do not read it (remove it, or read it in `update`)", "warning"))
    for f in spec.flags:
        wheres = set().union(*(_names(g.where) for g in spec.hypers))
        if f.name not in body | elsewhere | wheres:
            out.append(Diagnostic(f.span, f"flag '{f.name}' is never used: no condition tests it "
                                          "(remove it, or test it with `if`)", "warning"))
    for s in spec.states:
        if s.name not in body:
            out.append(Diagnostic(s.span, f"state '{s.name}' is never used: the update neither reads nor stores it "
                                          "(remove it, or store it in `update`)", "warning"))
    return out
