"""Definite assignment of `empty` states: a read of one must be preceded, on every path through
the update block, by a store to it or by a test that it is not empty.

On the first step an `empty` state has no value at all; the three paths then disagree on what a
read means (the eager paths raise a TypeError, the fused kernel loads zeros), so the checker
refuses such a read. A state is known to hold a value after a store on every path, or where
`is_empty(x)` is known to be false: the `else` side of `if is_empty(x)`, the body of
`if not is_empty(x) and ...`, and the `else` side of `is_empty(x) ? a : b` and
`where(is_empty(x), a, b)`. A boolean local set from such a test remembers what it says
(`first = is_empty(x)`, then `first ? grad : x`).

Only what the eager paths really skip counts. An `if` runs one side. A select runs one side only
where its condition is decided per tensor on the host (hypers, flags, the step, `is_empty`);
one that varies per element or reads a reduction is `torch.where`, which computes both sides, so
its condition says nothing about them. `and`/`or` compute both operands, so
`not is_empty(x) and norm(x) > 0` reads x where it is empty."""
from __future__ import annotations

from . import ast
from .builtins import FUNCTIONS, INPUTS, SHAPE_FUNCTIONS, STATE_PREDICATES

Known = frozenset   # names of `empty` states known to hold a value here
# a local decided on the host -> (states known to hold a value if it is true, ... if it is false)
Facts = dict[str, tuple[Known, Known]]
# inputs decided per tensor on the host
_HOST_INPUTS = frozenset(INPUTS) - {"param", "grad"}


def unguarded_empty_reads(spec: ast.Spec) -> list[ast.Name]:
    """The first read of each `empty` state that some path reaches before the state holds a value."""
    flow = _flow(spec)
    if flow.empties:
        after = flow.block(spec.body, Known(), {})
        for mode in spec.modes:   # on tensors that have stepped: what every path of the update stored
            flow.block(mode.body, after, {})
    return flow.reads


def stored_on_every_path(spec: ast.Spec) -> Known:
    """The `empty` states that hold a value after every path through the update block."""
    flow = _flow(spec)
    return flow.block(spec.body, Known(), {}) if flow.empties else Known()


def _flow(spec: ast.Spec) -> "_Flow":
    return _Flow({s.name for s in spec.states if s.init == "empty"},
                 {*(h.name for h in spec.hypers), *(f.name for f in spec.flags), *_HOST_INPUTS})


class _Flow:
    def __init__(self, empties: set[str], host_names: set[str]):
        self.empties = empties
        self.host_names = host_names
        self.reads: list[ast.Name] = []
        self.reported: set[str] = set()

    def block(self, stmts, known: Known, facts: Facts) -> Known:
        for st in stmts:
            if isinstance(st, ast.Assign):
                self.expr(st.value, known, facts)
                if st.target in self.empties:
                    known = known | {st.target}
                elif self.on_host(st.value, facts):
                    facts[st.target] = (self.holds(st.value, True, facts), self.holds(st.value, False, facts))
                else:
                    facts.pop(st.target, None)
            else:
                self.expr(st.cond, known, facts)
                then = self.block(st.then, known | self.holds(st.cond, True, facts), dict(facts))
                other = self.block(st.other, known | self.holds(st.cond, False, facts), dict(facts))
                # locals first bound in a branch do not outlive it; the conservative reading of a
                # local rebound in a branch is that it says nothing after the `if`
                for name in _assigned(st.then + st.other):
                    facts.pop(name, None)
                known = then & other
        return known

    def expr(self, e: ast.Expr, known: Known, facts: Facts) -> None:
        """Record the unguarded reads in e; the parts a condition selects see what it implies."""
        stack = [(e, known)]
        while stack:
            x, k = stack.pop()
            if isinstance(x, ast.Name):
                if x.id in self.empties and x.id not in k and x.id not in self.reported:
                    self.reported.add(x.id)
                    self.reads.append(x)
            elif isinstance(x, ast.Call) and x.func in STATE_PREDICATES:
                continue   # is_empty(x) tests x without reading its value
            elif (sel := _selection(x)) is not None and self.on_host(sel[0], facts):
                cond, then, other = sel
                stack += [(other, k | self.holds(cond, False, facts)), (then, k | self.holds(cond, True, facts)),
                          (cond, k)]
            else:
                stack += [(c, k) for c in reversed(_children(x))]

    def on_host(self, e: ast.Expr, facts: Facts) -> bool:
        """Whether e is decided per tensor on the host: numbers, hypers, flags, host inputs, `is_empty`,
        `size(d)`, host locals and math on them (scalar states, which may live on the device, are not)."""
        stack = [e]
        while stack:
            x = stack.pop()
            if isinstance(x, ast.Name) and not (x.id in self.host_names or x.id in facts):
                return False
            if isinstance(x, ast.Call) and x.func in STATE_PREDICATES:
                continue   # its argument names a state, it does not read one
            if isinstance(x, ast.Call) and x.func not in FUNCTIONS and x.func not in SHAPE_FUNCTIONS:
                return False
            stack += _children(x)
        return True

    def holds(self, e: ast.Expr, truth: bool, facts: Facts) -> Known:
        """The `empty` states known to hold a value where e evaluates to `truth`."""
        if isinstance(e, ast.Call) and e.func in STATE_PREDICATES:
            arg = e.args[0] if len(e.args) == 1 else None
            return Known({arg.id}) if not truth and isinstance(arg, ast.Name) and arg.id in self.empties else Known()
        if isinstance(e, ast.Unary) and e.op == "not":
            return self.holds(e.operand, not truth, facts)
        if isinstance(e, ast.Binary) and e.op in ("and", "or"):
            left, right = self.holds(e.left, truth, facts), self.holds(e.right, truth, facts)
            # `a and b` true: both are; false: one of them is (what both imply). `or` the other way.
            return left | right if truth == (e.op == "and") else left & right
        if (sel := _selection(e)) is not None:
            cond, then, other = sel
            return (self.holds(cond, True, facts) | self.holds(then, truth, facts)) \
                & (self.holds(cond, False, facts) | self.holds(other, truth, facts))
        if isinstance(e, ast.Name) and e.id in facts:
            return facts[e.id][0 if truth else 1]
        return Known()


def _selection(e: ast.Expr):
    """(condition, then, else) of `c ? a : b` and `where(c, a, b)`, else None."""
    if isinstance(e, ast.Ternary):
        return e.cond, e.then, e.other
    if isinstance(e, ast.Call) and e.func == "where" and len(e.args) == 3:
        return e.args
    return None


def _children(e: ast.Expr) -> tuple:
    if isinstance(e, ast.Index):
        return ()
    if isinstance(e, ast.Call):
        return e.args
    if isinstance(e, ast.Unary):
        return (e.operand,)
    if isinstance(e, ast.Binary):
        return (e.left, e.right)
    if isinstance(e, ast.Compare):
        return e.operands
    if isinstance(e, ast.Ternary):
        return (e.cond, e.then, e.other)
    return ()


def _assigned(stmts) -> set[str]:
    out: set[str] = set()
    stack = list(stmts)
    while stack:
        st = stack.pop()
        if isinstance(st, ast.Assign):
            out.add(st.target)
        else:
            stack.extend(st.then + st.other)
    return out
