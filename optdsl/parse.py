"""Stage 1: text -> AST.

Lark LALR with positions on every node. Syntax errors become Diagnostics: the
parser state at the error is matched against a table of example mistakes
(lark's ``match_examples``) to give a message a person can act on."""
from __future__ import annotations

import math
from functools import lru_cache

from lark import Lark, Token, Transformer_NonRecursive, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast
from .diagnostics import CompileError, Diagnostic, Span
from .resources import data_path

# Deeper expressions are rejected before any recursive pass sees them.
MAX_DEPTH = 200
MAX_SOURCE_BYTES = 1 << 20

# label -> example mistakes; the label is the message. Tested in tests/test_diagnostics.py.
SYNTAX_EXAMPLES: dict[str, list[str]] = {
    "a spec must start with `optimizer Name \"doc\"`": [
        "hyper lr = 1", "update {}", "Adam", "optimizer", "optimizer 3",
    ],
    "expected a declaration (hyper, flag, state, require) or the `update { ... }` block": [
        "optimizer A lr = 1", "optimizer A \"d\" hyper lr = 1 lr", "optimizer A \"d\" \"e\"",
    ],
    "the spec ends before its `update { ... }` block": [
        "optimizer A", "optimizer A \"d\"", "optimizer A \"d\" hyper lr = 1",
    ],
    "expected a hyper declaration `hyper name = default [where condition]`": [
        "optimizer A hyper", "optimizer A hyper 1", "optimizer A hyper lr", "optimizer A hyper lr 1",
    ],
    "a hyper's default must be a number or a tuple of numbers (`= 1.0 or none`, `= none`: optional)": [
        "optimizer A hyper lr =", "optimizer A hyper lr = x", "optimizer A hyper lr = (1)",
        "optimizer A hyper lr = ()", "optimizer A hyper lr = true", "optimizer A hyper lr = (1,",
        "optimizer A hyper lr = (1, x)", "optimizer A hyper lr = (1 2)",
        "optimizer A hyper lr = 1 or", "optimizer A hyper lr = 1 or 2", "optimizer A hyper lr = 1 or x",
    ],
    "a flag's default must be `true` or `false`": [
        "optimizer A flag f", "optimizer A flag f =", "optimizer A flag f = 1", "optimizer A flag",
        "optimizer A flag f = x",
    ],
    "expected a state declaration `state name [: scalar] = zeros | empty | number | hyper [if condition]`": [
        "optimizer A state", "optimizer A state m", "optimizer A state m =", "optimizer A state m :",
        "optimizer A state m : scalar", "optimizer A state m = (1, 2)", "optimizer A state m : 1",
        "optimizer A state m = zeros key", "optimizer A state m = zeros key m", "optimizer A state m = zeros key 1",
    ],
    "a `require` needs a condition, `else` and a message in double quotes": [
        "optimizer A require", "optimizer A require x", "optimizer A require x else",
        "optimizer A require x else y",
    ],
    "expected `keep step`, `keep step per group` or `keep step as int`": [
        "optimizer A keep", "optimizer A keep 1", "optimizer A keep (",
        "optimizer A keep step per", "optimizer A keep step per 1", "optimizer A keep step per (",
        "optimizer A keep step per update {", "optimizer A keep step as", "optimizer A keep step as 1",
    ],
    "expected `sparse rows` or `sparse rows only`": [
        "optimizer A sparse", "optimizer A sparse 1", "optimizer A sparse (", "optimizer A sparse rows 1",
        "optimizer A sparse rows (", "optimizer A sparse update {",
    ],
    "expected `{` to open the update block": [
        "optimizer A update", "optimizer A update x", "optimizer A update (",
    ],
    "expected a statement: an assignment `name = expression` or `if condition { ... }`": [
        "optimizer A update { 1 }", "optimizer A update { x }", "optimizer A update { x = 1 y }",
        "optimizer A update { + }", "optimizer A update { x == 1 }", "optimizer A update { else }",
    ],
    "unclosed block: expected `}`": [
        "optimizer A update {", "optimizer A update { if c { x = 1 }", "optimizer A update { } on train {",
        "optimizer A update { x = y", "optimizer A update { x = f(y)", "optimizer A update { x = y[0]",
    ],
    "expected an expression": [
        "optimizer A update { x = }", "optimizer A update { } on train { x = }", "optimizer A update { x = 1 + }", "optimizer A update { x = * 2 }",
        "optimizer A update { x = f(1, ) }", "optimizer A update { x = c ? }", "optimizer A update { x = c ? 1 : }",
        "optimizer A update { x = (}", "optimizer A update { x = not }", "optimizer A update { x = 1 < }",
        "optimizer A update { x = - }", "optimizer A update { x = 2 ^ }", "optimizer A update { x = a and }",
        "optimizer A update { if { } }", "optimizer A update { x = f(, }",
        "optimizer A hyper lr = 1 where update {", "optimizer A require update {",
        "optimizer A hyper lr = 1 where", "optimizer A update { x = ( ) }",
    ],
    "expected `:` in a conditional expression `c ? a : b`": [
        "optimizer A update { x = c ? 1 }", "optimizer A update { x = c ? 1 2 }",
    ],
    "expected `)`": [
        "optimizer A update { x = (1 }",
        "optimizer A update { x = f(1 }", "optimizer A update { x = f(y 2) }", "optimizer A update { x = f(y z) }",
        "optimizer A update { x = (y 2) }", "optimizer A update { x = f(y }",
    ],
    "an index must be a non-negative integer literal, `name[0]`": [
        "optimizer A update { x = b[] }", "optimizer A update { x = b[x] }", "optimizer A update { x = b[1.5] }",
        "optimizer A update { x = b[-1] }", "optimizer A update { x = b[0 }",
    ],
    "expected `{` after the condition of `if`": [
        "optimizer A update { if c x = 1 }", "optimizer A update { if c }", "optimizer A update { if c else }",
    ],
    "expected `{` or `if` after `else`": [
        "optimizer A update { if c { } else x = 1 }", "optimizer A update { if c { } else }",
    ],
    "unexpected text after the update block (only `on train { ... }` and `on eval { ... }` may follow it)": [
        "optimizer A update { } x", "optimizer A update { } }", "optimizer A update { } update { }",
        "optimizer A update { } on train { } x", "optimizer A update { } on train { } }",
    ],
    "an `on` block is `on train { ... }` or `on eval { ... }`": [
        "optimizer A update { } on", "optimizer A update { } on {", "optimizer A update { } on train",
        "optimizer A update { } on train x", "optimizer A update { } on 3 { }", "optimizer A update { } on eval { } on",
    ],
    "expected a name": [
        "optimizer A update { = 1 }",
    ],
    "a composition is `optimizer Name = wrapper(spec)`: spec names (`adam`) or quoted .opt paths": [
        "optimizer A =", "optimizer A = 1", "optimizer A = w(", "optimizer A = w(1", "optimizer A = (",
    ],
    "expected `(spec)` or the end of the file after a composition's spec": [
        "optimizer A = w s", "optimizer A = w(s) x", "optimizer A = w(s))",
    ],
    "a wrapper starts `wrapper Name \"doc\"`": [
        "wrapper", "wrapper 3", "wrapper \"doc\"",
    ],
    "`inner` is a statement of its own (a wrapper's update runs the wrapped one there), not a name": [
        "wrapper W update { inner = 1 }", "wrapper W update { inner[0] = 1 }",
    ],
}


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = data_path("grammars", "optdsl.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _unquote(tok) -> str:
    return str(tok)[1:-1]


def _span(file: str, meta_or_token) -> Span:
    m = meta_or_token
    if getattr(m, "empty", False):
        return Span(file, 1, 1, 1, 1)
    return Span(file, m.line, m.column, m.end_line, m.end_column)


class _Builder(Transformer_NonRecursive):
    """Lark tree -> ast nodes. Iterative, so deep input cannot overflow the stack here."""

    def __init__(self, file: str, source: str):
        super().__init__()
        self.file = file
        self.source = source

    def _s(self, x) -> Span:
        return _span(self.file, x)

    # literals
    @v_args(meta=True)
    def number(self, meta, children):
        tok: Token = children[0]
        return ast.Num(self._s(meta), float(tok), str(tok))

    @v_args(meta=True)
    def neg_number(self, meta, children):
        n: ast.Num = children[0]
        return ast.Num(self._s(meta), -n.value, "-" + n.text)

    @v_args(meta=True)
    def tuple_lit(self, meta, children):
        return ("tuple", self._s(meta), tuple(children))

    @v_args(meta=True)
    def bool_lit(self, meta, children):
        return ast.Bool(self._s(meta), children[0] == "true")

    @v_args(meta=True)
    def none_lit(self, meta, children):
        return ast.NoneLit(self._s(meta))

    @v_args(meta=True)
    def name(self, meta, children):
        return ast.Name(self._s(meta), str(children[0]))

    @v_args(meta=True)
    def index(self, meta, children):
        tok, idx = children
        digits = str(idx).lstrip("0") or "0"
        if len(digits) > 9:   # int() of thousands of digits raises; no tuple is that long
            raise CompileError([Diagnostic(self._s(idx), "an index must be a small non-negative integer, `name[0]`")])
        return ast.Index(self._s(meta), ast.Name(self._s(tok), str(tok)), int(digits))

    @v_args(meta=True)
    def call(self, meta, children):
        func, *args = children
        return ast.Call(self._s(meta), str(func), tuple(a for a in args if a is not None))

    @v_args(meta=True)
    def neg(self, meta, children):
        return ast.Unary(self._s(meta), "-", children[0])

    @v_args(meta=True)
    def not_(self, meta, children):
        return ast.Unary(self._s(meta), "not", children[0])

    @v_args(meta=True)
    def pow(self, meta, children):
        return ast.Binary(self._s(meta), "^", children[0], children[1])

    @v_args(meta=True)
    def binary(self, meta, children):
        left, op, right = children
        return ast.Binary(self._s(meta), str(op), left, right)

    def _chain(self, meta, children, op):
        out = children[0]
        for right in children[1:]:
            out = ast.Binary(out.span.to(right.span), op, out, right)
        return out

    @v_args(meta=True)
    def or_(self, meta, children):
        return self._chain(meta, children, "or")

    @v_args(meta=True)
    def and_(self, meta, children):
        return self._chain(meta, children, "and")

    @v_args(meta=True)
    def compare(self, meta, children):
        if len(children) == 1:
            return children[0]
        return ast.Compare(self._s(meta), tuple(children[0::2]), tuple(str(t) for t in children[1::2]))

    @v_args(meta=True)
    def ternary(self, meta, children):
        return ast.Ternary(self._s(meta), *children)

    # statements
    @v_args(meta=True)
    def assign(self, meta, children):
        tok, value = children
        return ast.Assign(self._s(meta), str(tok), self._s(tok), value)

    @v_args(meta=True)
    def inner(self, meta, children):
        return _Inner(self._s(meta), meta.start_pos, meta.end_pos)

    @v_args(meta=True)
    def block(self, meta, children):
        return tuple(children)

    @v_args(meta=True)
    def if_stmt(self, meta, children):
        cond, then, *rest = children
        other: tuple = ()
        if rest:
            other = rest[0] if isinstance(rest[0], tuple) else (rest[0],)
        for s in then + other:
            if isinstance(s, _Inner):
                raise CompileError([Diagnostic(s.span, "`inner` stands at the top level of a wrapper's update, "
                                                       "not inside an `if`: the wrapped update runs every step")])
        return ast.If(self._s(meta), cond, then, other)

    # declarations
    def _header(self, meta, children, kind: str):
        name = children[0]
        doc = str(children[1])[1:-1] if len(children) > 1 else ""
        return ("header", self._s(name), str(name), doc, kind, meta.end_pos)

    @v_args(meta=True)
    def header(self, meta, children):
        return self._header(meta, children, "optimizer")

    @v_args(meta=True)
    def wrapper_header(self, meta, children):
        return self._header(meta, children, "wrapper")

    @v_args(meta=True)
    def spec_ref(self, meta, children):
        tok = children[0]
        quoted = tok.type == "STRING"
        return ast.SpecRef(self._s(meta), str(tok)[1:-1] if quoted else str(tok), quoted)

    @v_args(meta=True)
    def wrapped(self, meta, children):
        return ast.Wrapped(self._s(meta), children[0], children[1])

    @v_args(meta=True)
    def composed(self, meta, children):
        _, span, name, doc, kind, _ = children[0]
        if kind != "optimizer":
            raise CompileError([Diagnostic(span, "a composition is an optimizer: `optimizer Name = wrapper(spec)`")])
        return ast.Composed(span, name, doc, children[1], self.source)

    @v_args(meta=True)
    def hyper(self, meta, children):
        tok, value, *rest = children
        optional = bool(rest) and isinstance(rest[0], tuple) and rest[0][0] == "optional"
        where = rest[1:] if optional else rest
        if isinstance(value, tuple):
            default: float | tuple | None = tuple(None if isinstance(n, ast.NoneLit) else n.value for n in value[2])
            is_tuple, default_span = True, value[1]
        elif isinstance(value, ast.NoneLit):
            default, is_tuple, optional, default_span = None, False, True, value.span
        else:   # a whole number written without a point is an int, as torch's defaults are (Muon's ns_steps = 5)
            whole = value.text.lstrip("-").isdigit() and abs(value.value) < 2 ** 53
            default, is_tuple, default_span = int(value.value) if whole else value.value, False, value.span
        return ast.Hyper(self._s(tok), str(tok), default, is_tuple, where[0] if where else None, optional,
                         default_span)

    @v_args(meta=True)
    def choice_hyper(self, meta, children):
        tok, *entries = children
        message = entries.pop()[1] if entries and isinstance(entries[-1], tuple) else None
        choices = tuple(None if isinstance(x, ast.NoneLit) else _unquote(x) for x in entries)
        first = entries[0]
        return ast.Hyper(self._s(tok), str(tok), choices[0], False, None, None in choices,
                         first.span if isinstance(first, ast.NoneLit) else self._s(first), choices, message)

    def choice_message(self, children):
        return ("message", _unquote(children[0]))

    @v_args(meta=True)
    def string_lit(self, meta, children):
        return ast.StrLit(self._s(meta), _unquote(children[0]))

    def hyper_optional(self, children):
        return ("optional",)

    @v_args(meta=True)
    def flag(self, meta, children):
        tok, value = children
        return ast.Flag(self._s(tok), str(tok), str(value) == "true")

    @v_args(meta=True)
    def state(self, meta, children):
        tok, *rest = children
        shape = "tensor"
        if isinstance(rest[0], tuple) and rest[0][0] == "shape":
            shape = rest.pop(0)[1]
        init = rest.pop(0)
        key = None
        if rest and isinstance(rest[0], tuple) and rest[0][0] == "key":
            key = rest.pop(0)[1]
        cond = rest[0] if rest else None
        init_value = init.value if isinstance(init, ast.Num) else str(init)
        return ast.State(self._s(tok), str(tok), shape, init_value, cond, key)

    def state_shape(self, children):
        return ("shape", str(children[0]), self._s(children[0]))

    def state_key(self, children):
        return ("key", str(children[0])[1:-1])

    @v_args(meta=True)
    def input(self, meta, children):
        name, estimator, *args = [c for c in children if c is not None]
        return ast.Input(self._s(name), str(name), str(estimator), tuple(str(a) for a in args),
                         self._s(estimator), tuple(self._s(a) for a in args))

    @v_args(meta=True)
    def require(self, meta, children):
        cond, message = children
        return ast.Require(self._s(meta), cond, str(message)[1:-1])

    @v_args(meta=True)
    def keep(self, meta, children):
        parts = dict(c for c in children[1:] if c is not None)
        per, as_ = parts.get("per"), parts.get("as")
        return ast.Keep(self._s(children[0]), str(children[0]), None if per is None else str(per),
                        None if per is None else self._s(per), None if as_ is None else str(as_),
                        None if as_ is None else self._s(as_))

    def keep_per(self, children):
        return ("per", children[0])

    def keep_as(self, children):
        return ("as", children[0])

    @v_args(meta=True)
    def sparse(self, meta, children):
        how, only = children[0], (children[1] if len(children) > 1 else None)
        return ast.Sparse(self._s(meta), str(how), self._s(how), None if only is None else str(only),
                          None if only is None else self._s(only))

    @v_args(meta=True)
    def update(self, meta, children):
        return ("update", children[0], meta.start_pos, _block_inside(self.source, meta.start_pos, meta.end_pos))

    @v_args(meta=True)
    def mode(self, meta, children):
        tok, statements = children
        for s in statements:
            if isinstance(s, _Inner):
                raise CompileError([Diagnostic(s.span, "`inner` runs the wrapped update inside a wrapper's "
                                                       "`update`, not in an `on` block")])
        return ast.Mode(self._s(meta), str(tok), self._s(tok), statements), meta.start_pos, meta.end_pos

    @v_args(meta=True)
    def start(self, meta, children):
        _, span, name, doc, kind, header_end = children[0]
        at = next(i for i, c in enumerate(children) if isinstance(c, tuple) and c and c[0] == "update")
        decls = children[1:at]
        _, statements, update_at, inside = children[at]
        modes = children[at + 1:]
        marks = [(i, s) for i, s in enumerate(statements) if isinstance(s, _Inner)]
        if kind == "optimizer" and marks:
            raise CompileError([Diagnostic(marks[0][1].span, "`inner` runs a wrapped optimizer's update: only a "
                                                             "`wrapper` has it (an optimizer's header says `optimizer`)")])
        if kind == "wrapper" and len(marks) != 1:
            where = marks[1][1].span if marks else span
            raise CompileError([Diagnostic(where, "a wrapper's update runs the wrapped update exactly once: one "
                                                  f"`inner` statement at its top level ({len(marks)} here)")])
        inner_at = marks[0][0] if marks else None
        mark = marks[0][1] if marks else None
        return ast.Spec(
            span, name, doc,
            hypers=tuple(d for d in decls if isinstance(d, ast.Hyper)),
            flags=tuple(d for d in decls if isinstance(d, ast.Flag)),
            states=tuple(d for d in decls if isinstance(d, ast.State)),
            requires=tuple(d for d in decls if isinstance(d, ast.Require)),
            body=tuple(s for s in statements if not isinstance(s, _Inner)), source=self.source,
            keeps=tuple(d for d in decls if isinstance(d, ast.Keep)),
            inputs=tuple(d for d in decls if isinstance(d, ast.Input)),
            sparse=tuple(d for d in decls if isinstance(d, ast.Sparse)),
            kind=kind, inner_at=inner_at, inner_span=None if mark is None else mark.span,
            regions=ast.Regions((header_end, update_at), inside,
                                None if mark is None else (mark.start, mark.end),
                                (modes[0][1], modes[-1][2]) if modes else None),
            modes=tuple(m for m, _, _ in modes),
        )


class _Inner:
    """The `inner` statement while the tree is built; `start` takes it out of the body."""
    def __init__(self, span: Span, start: int, end: int):
        self.span, self.start, self.end = span, start, end


def _block_inside(source: str, update_at: int, end: int) -> tuple[int, int]:
    """The offsets just inside the braces of `update { ... }` (comments may sit before `{`)."""
    i = update_at + len("update")
    while i < end:
        if source[i] == "#":
            while i < end and source[i] not in "\r\n":
                i += 1
        elif source[i] == "{":
            return i + 1, end - 1
        else:
            i += 1
    return end - 1, end - 1


def _describe(tok: Token | None) -> str:
    if tok is None or tok.type == "$END":
        return "the end of the file"
    text = str(tok)
    if len(text) > 30:
        text = text[:27] + "..."
    return f"`{text}`" if text.isprintable() else repr(text)


def _syntax_diagnostic(err: UnexpectedInput, file: str, source: str) -> Diagnostic:
    line, col = max(1, err.line if err.line not in (None, -1) else 1), max(1, err.column if err.column not in (None, -1) else 1)
    if isinstance(err, UnexpectedCharacters):
        ch = source[err.pos_in_stream] if err.pos_in_stream < len(source) else ""
        what = repr(ch) if not ch.isprintable() else f"`{ch}`"
        if ch == '"' or ch == "'":
            msg = "unterminated or misplaced string: strings are only allowed as docs and messages, in double quotes, on one line"
        else:
            msg = f"unexpected character {what}"
        return Diagnostic(Span(file, line, col, line, col + 1), msg)
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        # lines as lark counts them (by "\n" only: a lone "\r" or "\u2028" does not end one)
        lines = (source[:-1] if source.endswith("\n") else source).split("\n")
        line, col = len(lines), len(lines[-1].rstrip("\r")) + 1
    label = None
    try:
        label = err.match_examples(_parser().parse, SYNTAX_EXAMPLES, use_accepts=True)
    except Exception:  # an example that itself fails oddly must not hide the user's error
        label = None
    tok = getattr(err, "token", None)
    if (power := _python_power(tok, file, source)) is not None:
        return power
    found = f"found {_describe(tok)}"
    msg = f"{label}; {found}" if label else (
        "unexpected end of the file" if tok is None or tok.type == "$END" else f"unexpected {_describe(tok)}")
    width = len(str(tok)) if tok is not None and tok.type != "$END" else 1
    return Diagnostic(Span(file, line, col, line, col + max(1, width)), msg)


def _python_power(tok: Token | None, file: str, source: str) -> Diagnostic | None:
    """`x ** 2` (Python's power) fails at one of its two `*`: say what the language writes instead."""
    if tok is None or tok.type == "$END" or str(tok) != "*" or tok.start_pos is None:
        return None
    pos = tok.start_pos
    if source[pos - 1:pos] == "*":
        line, col = tok.line, tok.column - 1
    elif source[pos + 1:pos + 2] == "*":
        line, col = tok.line, tok.column
    else:
        return None
    return Diagnostic(Span(file, line, col, line, col + 2),
                      "`**` is not an operator; a power is written `x ^ y` (as in `beta2 ^ step`)")


# rules whose children are a flat chain (`a or b or c`, `a < b < c`): the checker and the IR see a
# nested tree, one level per operator
_CHAINS = frozenset({"or_", "and_", "compare"})


def _check_depth(tree: Tree, file: str) -> None:
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if node.data in _CHAINS and len(node.children) > 2:
            depth += len(node.children) // (2 if node.data == "compare" else 1)
        if depth > MAX_DEPTH:
            meta = node.meta
            span = _span(file, meta)
            raise CompileError([Diagnostic(span, f"expression nested too deeply (more than {MAX_DEPTH} levels)")])
        for child in node.children:
            if isinstance(child, Tree):
                stack.append((child, depth + 1))


def parse(source: str, file: str = "<spec>") -> ast.Spec:
    """Parse spec text. Raises CompileError (never another exception) on bad input, and on a
    composition (`optimizer Name = wrapper(spec)`), which `optdsl.compose.expand` turns into a spec."""
    spec = parse_any(source, file)
    if isinstance(spec, ast.Composed):
        raise CompileError([Diagnostic(spec.span, "this file composes specs (`= wrapper(spec)`): expand it first "
                                                  "(optdsl.compose.expand; optdsl.load and optdsl build do)")],
                           spec.source)
    return spec


def parse_any(source: str, file: str = "<spec>") -> ast.Spec | ast.Composed:
    """A spec or a composition. Raises CompileError (never another exception) on bad input."""
    if not isinstance(source, str):
        raise TypeError("spec source must be a str")
    if len(source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise CompileError([Diagnostic(Span(file, 1, 1, 1, 1), f"spec is larger than {MAX_SOURCE_BYTES} bytes")], source)
    if source.startswith("\ufeff"):
        source = source[1:]
    if "\x00" in source:
        pos = source.index("\x00")
        line = source.count("\n", 0, pos) + 1
        col = pos - (source.rfind("\n", 0, pos) + 1) + 1
        raise CompileError([Diagnostic(Span(file, line, col, line, col + 1), "NUL byte in spec text")], source)
    try:
        tree = _parser().parse(source)
    except UnexpectedInput as err:
        raise CompileError([_syntax_diagnostic(err, file, source)], source) from None
    try:
        _check_depth(tree, file)
    except CompileError as err:
        raise CompileError(err.diagnostics, source) from None
    try:
        spec = _Builder(file, source).transform(tree)
    except VisitError as err:  # unwrap at the boundary: the user sees our diagnostic, not lark's wrapper
        if isinstance(err.orig_exc, CompileError):
            raise CompileError(err.orig_exc.diagnostics, source) from None
        raise err.orig_exc from None
    if isinstance(spec, ast.Composed):
        return spec
    for h in spec.hypers:
        values = h.default if h.is_tuple else () if h.default is None or h.choices else (h.default,)
        if not all(v is None or math.isfinite(v) for v in values):
            raise CompileError([Diagnostic(h.span, f"default of hyper '{h.name}' is not a finite number")], source)
    return spec
