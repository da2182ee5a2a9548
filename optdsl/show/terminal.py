"""`optdsl show` in a terminal (rich): the update rule as Unicode math beside each value's kind,
the kinds table, the fused path's cost report and the spec itself, highlighted by the .opt lexer.
Colour only on a terminal; piped (or with `--no-color`) the same text without escape codes."""
from __future__ import annotations

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..ir import Program
from .lexer import OptLexer
from .math import lines
from .report import COST_HEADER, KIND_WORDS, CostReport, cost_rows, cost_summary, kinds, state_lines

KIND_STYLE = {"constant": "dim", "host": "cyan", "per tensor": "green", "per tensor, on the device": "yellow",
              "per channel": "magenta", "per matrix": "blue", "per row": "blue", "per column": "blue", "per dim": "blue",
              "elementwise": "bold red"}


def console(file=None, color: bool = True) -> Console:
    """Colour where the output is a terminal and colour is wanted; a fixed width when piped."""
    c = Console(file=file, highlight=False, soft_wrap=False)
    if not c.is_terminal or not color:
        c = Console(file=file, highlight=False, color_system=None, width=max(c.width, 120), soft_wrap=False)
    return c


def _kind_text(kind) -> Text:
    word = KIND_WORDS[kind][0]
    return Text(word, style=KIND_STYLE[word])


def rule_table(math: Program) -> Table:
    t = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2))
    t.add_column("math", overflow="fold")   # a narrow terminal folds the math, never the kinds
    t.add_column("kind", no_wrap=True, min_width=len("per tensor, on the device"))
    for ln in lines(math):
        kind = _kind_text(ln.value.kind) if ln.value is not None else Text("")
        t.add_row(Text("    " * ln.depth + ln.text, style="" if ln.target else "bold"), kind)
    return t


def kinds_table(math: Program) -> Table:
    """One row per kind: what it means, and the names of that kind (inputs, hypers, flags, states, locals)."""
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("kind", no_wrap=True)
    t.add_column("computed")
    t.add_column("names")
    by_kind: dict = {}
    for row in kinds(math):
        by_kind.setdefault(row.kind, []).append(row.name + ("" if row.role == "local" else f" ({row.role})"))
    for kind in sorted(by_kind):
        t.add_row(_kind_text(kind), KIND_WORDS[kind][1], ", ".join(by_kind[kind]))
    return t


def cost_table(report: CostReport) -> Group:
    """The numbers in a table; which streams each phase reads and writes below it."""
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    numbers = [i for i, col in enumerate(COST_HEADER) if col not in ("reads", "writes")]
    for i in numbers:
        t.add_column(COST_HEADER[i], justify="right" if "/el" in COST_HEADER[i] else "left")
    rows = cost_rows(report)
    for row in rows:
        t.add_row(*(row[i] for i in numbers))
    streams = [Text(f"{row[0]}: reads {row[2]}; writes {row[3]}", style="dim") for row in rows]
    if report.total_full != report.total:
        streams.append(Text(f"(n): with every optional state ({', '.join(report.optional)})", style="dim"))
    summary = [Text(line, style="bold" if i == 0 else "") for i, line in enumerate(cost_summary(report))]
    return Group(t, *streams, Text(""), *summary)


def show(out: Console, math: Program, report: CostReport | str, source: str, title: str) -> None:
    """`report`: the fused path's cost, or why there is no fused path (its eager state is shown then)."""
    out.print(Text(title, style="bold"))
    out.print()
    out.print(Panel(rule_table(math), title="update rule", title_align="left", box=box.ROUNDED, expand=False))
    for mode, _ in math.modes:   # what optimizer.train() / .eval() do to each stepped tensor
        out.print(Panel(rule_table(math.mode_program(mode)), title=f"on {mode}: optimizer.{mode}()",
                        title_align="left", box=box.ROUNDED, expand=False))
    out.print(Text("kinds", style="bold"))
    out.print(kinds_table(math))
    if isinstance(report, str):
        out.print(Text("fused path", style="bold"))
        out.print(f"fused=True is refused: {report}")
        for line in state_lines(math):
            out.print(line)
    else:
        out.print(Text("cost of one step, fused path (per parameter element)", style="bold"))
        out.print(cost_table(report))
    out.print()
    out.print(Text("spec", style="bold"))
    out.print(Syntax(source.rstrip("\n"), OptLexer(), theme="ansi_dark", background_color="default",
                     line_numbers=True, word_wrap=True))
