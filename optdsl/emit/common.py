"""Helpers shared by every backend: rendering a value through an OPS column,
and the code writer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..builtins import OPS
from ..ir import LEAF, REDUCE, Let, Stmt, Store, Value
from ..names import literal


def render(v: Value, column: str, leaf: Callable[[Value], str]) -> str:
    """Source for `v` with every op taken from OPS[op].<column>; leaves from `leaf`."""
    if v.op in LEAF:
        return leaf(v)
    form = getattr(OPS[v.op], column)
    return form.format(*(render(a, column, leaf) for a in v.args))


def float_literal(x) -> str:
    if isinstance(x, bool):
        return literal(x)
    return literal(float(x))


class Writer:
    def __init__(self, indent: int = 0):
        self.lines: list[str] = []
        self.level = indent

    def line(self, text: str = "") -> None:
        self.lines.append(("    " * self.level + text) if text else "")

    def indent(self):
        w = self

        class _Ctx:
            def __enter__(self):
                w.level += 1

            def __exit__(self, *exc):
                w.level -= 1
        return _Ctx()

    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class BlockSyntax:
    """How a kernel backend spells the statements of a device body (Triton's Python, C++)."""
    assign: str            # "{name} = {value}" and its terminator
    open_if: str           # "if {cond}:" / "if ({cond}) {{"
    else_line: str
    close_if: str | None   # the line that ends an `if` (None: indentation ends it)
    empty: str | None      # what a side that writes nothing needs (Python's `pass`)


def device_body(kernel, stmts: tuple[Stmt, ...], w: Writer, syntax: BlockSyntax) -> bool:
    """Writes the device statements of `stmts` through `kernel` (its expr, reduction, name and the
    program it renders); returns whether any line was written. An `if` with nothing on the device
    on either side leaves no lines, and an `else` side with nothing leaves no `else`."""
    wrote = False
    for s in stmts:
        if not kernel.is_device(s):
            continue
        if isinstance(s, Let) and s.value.op in REDUCE:
            w.line(kernel.reduction(s))
            wrote = True
        elif isinstance(s, (Let, Store)):
            target = s.name if isinstance(s, Let) else s.target
            value = kernel.stored(s.target, s.value) if isinstance(s, Store) else kernel.expr(s.value)
            w.line(syntax.assign.format(name=kernel.name(target), value=value))
            wrote = True
        else:
            mark = len(w.lines)
            w.line(syntax.open_if.format(cond=kernel.expr(s.cond)))
            with w.indent():
                then = device_body(kernel, s.then, w, syntax)
                if not then and syntax.empty:
                    w.line(syntax.empty)
            other = False
            if s.other:
                w.line(syntax.else_line)
                with w.indent():
                    other = device_body(kernel, s.other, w, syntax)
                if not other:
                    w.lines.pop()
            if syntax.close_if:
                w.line(syntax.close_if)
            if not then and not other:
                del w.lines[mark:]
            else:
                wrote = True
    return wrote


def across_ranks(value: str, reduction) -> str:
    """Eager group reduction `value` joined over the ranks a partitioned optimizer
    (`partitioned=True`, ZeRO) spans; the value itself otherwise (optdsl.distributed)."""
    return f"_rt.across_ranks({value}, {reduction.op.name.lower()!r}, _rt.group_numel(params))"
