"""The defaults against the spec's own checks, at compile time: a default its `where` clause
refuses, or defaults a `require` refuses, would make the class raise `ValueError` when built
with its defaults. Each is a diagnostic at the default (or the `require`) instead.

The checks are evaluated as the interpreter (the semantic oracle) evaluates the generated
`__init__`'s, on the lowered program, so the verdict is the one the class would give."""
from __future__ import annotations

from . import ast
from .diagnostics import Diagnostic, Span
from .ir import HyperInfo, Kind, Program, entries_read
from .lower import _conjuncts   # the split lowering makes: one check per part, in this order
from .names import message_parts


def _text(source: str, span: Span) -> str | None:
    lines = source.split("\n")
    if span.line != span.end_line or not 0 < span.line <= len(lines):
        return None
    return lines[span.line - 1][span.col - 1:span.end_col - 1]


def absent_entries(cond, h: HyperInfo, values: dict) -> bool:
    """Whether check `cond` of `h` reads a tuple entry that is absent (None) in `values`: it is
    checked only where the entry is given, as the generated __init__ does."""
    value = values.get(h.name)
    return value is not None and any(value[i] is None for i in entries_read(cond, h.name) & h.optional_entries)


def default_violations(spec: ast.Spec, program: Program) -> list[Diagnostic]:
    from .interp import Interpreter
    oracle = Interpreter(program, validate=False)
    out: list[Diagnostic] = []
    for h, info in zip(spec.hypers, program.hypers):
        if info.default is None or h.where is None:
            continue
        for part, (cond, message, (name, index)) in zip(_conjuncts(h.where), info.checks):
            if absent_entries(cond, info, oracle.hypers) or bool(oracle.host(cond)):
                continue
            value = _value(oracle.hypers, oracle.flags, name, index)
            shown = f"`{_text(spec.source, part.span)}`" if _text(spec.source, part.span) else "its `where` clause"
            out.append(Diagnostic(h.default_span or h.span,
                                  f"the default of hyper '{h.name}' fails {shown}: built with its defaults, the "
                                  f"class would raise ValueError: {message.format(value)}"))
            break
    if not out:   # a `require` reading a refused default would only repeat the error above
        for req, (cond, message) in zip(spec.requires, program.requires):
            if cond.kind is Kind.TENSOR_SCALAR:   # on the param's shape: no default to fail
                continue
            if not bool(oracle.host(cond)):
                shown = "".join(p if isinstance(p, str) else str(_value(oracle.hypers, oracle.flags, *p))
                                for p in message_parts(message))
                out.append(Diagnostic(req.span, f"the defaults fail this `require`: built with its defaults, the "
                                                f"class would raise ValueError: {shown}"))
    return out


def _value(hypers, flags, name: str, index: int | None):
    value = hypers[name] if name in hypers else flags[name]
    return value if index is None else value[index]
