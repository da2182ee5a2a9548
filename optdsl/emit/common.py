"""Helpers shared by every backend: rendering a value through an OPS column,
and the code writer."""
from __future__ import annotations

from typing import Callable

from ..builtins import OPS
from ..ir import LEAF, Op, Value
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


def across_ranks(value: str, reduction) -> str:
    """Eager group reduction `value` joined over the ranks a partitioned optimizer
    (`partitioned=True`, ZeRO) spans; the value itself otherwise (optdsl.distributed)."""
    return f"_rt.across_ranks({value}, {reduction.op.name.lower()!r}, _rt.group_numel(params))"
