"""Source positions and compiler diagnostics.

Every AST node carries a Span; every error the compiler reports is a Diagnostic
rendered as ``file:line:col: error: message`` followed by the source line and a
caret line under the culprit (sqlglot/lark style)."""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def to(self, other: "Span") -> "Span":
        """The span covering self through other."""
        return Span(self.file, self.line, self.col, other.end_line, other.end_col)


NO_SPAN = Span("<builtin>", 0, 0, 0, 0)


@dataclass(frozen=True)
class Diagnostic:
    span: Span
    message: str
    severity: str = "error"

    def render(self, source: str | None) -> str:
        head = f"{self.span.file}:{self.span.line}:{self.span.col}: {self.severity}: {_shorten(self.message)}"
        if not source or self.span.line <= 0:
            return head
        lines = source.split("\n")   # as the parser counts lines
        if self.span.line > len(lines):
            return head
        text = _printable(lines[self.span.line - 1].rstrip("\r"))
        # Very long lines are cut around the culprit so the caret stays readable.
        start = max(0, self.span.col - 60) if len(text) > 120 else 0
        shown = text[start:start + 120]
        width = (self.span.end_col - self.span.col) if self.span.end_line == self.span.line else 1
        width = max(1, min(width, len(shown) - (self.span.col - 1 - start)))
        caret = " " * max(0, min(self.span.col - 1 - start, len(shown))) + "^" + "~" * (width - 1)
        return f"{head}\n  {shown}\n  {caret}"


def _shorten(message: str, limit: int = 40) -> str:
    """Quoted names and long numbers in a message cut to `limit` characters: a 100,000-character
    identifier must not make a 100,000-character diagnostic. A run with a space in it is prose
    between two quoted words, never a name, and stays whole."""
    def cut(m: re.Match) -> str:
        q, body = m.group(1), m.group(2)
        return f"{q}{body[:limit - 3]}...{q}"
    message = re.sub(r"(['`])([^'`\s]{%d,})\1" % (limit + 1), cut, message)
    return re.sub(r"\d{%d,}" % (limit + 1), lambda m: m.group(0)[:limit - 3] + "...", message)


def _printable(line: str) -> str:
    """Control characters would garble a terminal; show them escaped, keeping columns."""
    return "".join(ch if ch.isprintable() or ch == "\t" else "?" for ch in line)


class CompileError(Exception):
    """One or more diagnostics; raised once per stage, after collecting them all."""

    def __init__(self, diagnostics: list[Diagnostic], source: str | None = None):
        self.diagnostics = list(diagnostics)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.source) for d in self.diagnostics)

    def __str__(self) -> str:
        return self.render()


class Reporter:
    """Collects diagnostics during a stage; ``raise_if_any`` ends the stage."""

    def __init__(self, source: str):
        self.source = source
        self.diagnostics: list[Diagnostic] = []

    def error(self, span: Span, message: str) -> None:
        self.diagnostics.append(Diagnostic(span, message))

    def raise_if_any(self) -> None:
        if self.diagnostics:
            ordered = sorted(set(self.diagnostics), key=lambda d: (d.span.line, d.span.col, d.message))
            raise CompileError(ordered, self.source)
