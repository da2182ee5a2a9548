"""The checker's rule for group states (`state x : group`): their stores run once per param group and
step() call, before the tensors' update."""
from __future__ import annotations

from . import ast
from .ir import Kind


def check_group_update(checker, spec: ast.Spec) -> None:
    """Stores to group states run once per param group and step() call, before the tensors'
    update: they stand at the top level of the update, before every statement that is not host
    math (a local from hypers, flags, numbers, group states) or such a store, and no local
    there reads a group state before its last store (the tensors' update sees the new value)."""
    group = {s.name for s in spec.states if s.shape == "group"}
    if not group:
        return
    top = list(spec.body)
    stores = [i for i, st in enumerate(top) if isinstance(st, ast.Assign) and st.target in group]
    last = stores[-1] if stores else -1
    nested = [x for st in top if isinstance(st, ast.If)
              for x in _assigns_in(st.then + st.other) if x.target in group]
    for st in nested:
        checker.r.error(st.target_span, f"group state '{st.target}' is stored once per step, before the tensors' "
                                     "update: store it at the top level of the update, not inside an `if` "
                                     f"(a select works: `{st.target} = c ? a : {st.target}`)")
    for i, st in enumerate(top[:last] if stores else ()):
        if isinstance(st, ast.If) or (st.target not in group and (st.target == "param" or st.target in checker.states
                                                                  or checker.assigned_kind.get(id(st), Kind.HOST)
                                                                  > Kind.HOST)):
            checker.r.error(st.span, "the update's group states are stored before the tensors' update: only host "
                                  "math (a local from hypers, flags, numbers, group states) may come before the "
                                  f"last store to one (line {top[last].span.line})")
            break
        later = {x.target for x in top[i + 1:last + 1] if isinstance(x, ast.Assign) and x.target in group}
        read = sorted(later & {n.id for n in ast.walk(st.value) if isinstance(n, ast.Name)} - {st.target})
        if read and st.target not in group:
            checker.r.error(st.value.span, f"'{st.target}' reads group state '{read[0]}' before its store below; "
                                        "the tensors' update reads the stored value: read it after the store")


def _assigns_in(stmts):
    out, stack = [], list(stmts)
    while stack:
        st = stack.pop()
        if isinstance(st, ast.Assign):
            out.append(st)
        else:
            stack.extend(st.then + st.other)
    return out
