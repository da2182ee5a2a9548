"""The checker's rules for choice hypers (`hyper adjust_lr_fn = none | "original" | "match_rms_adamw"`):
a value among quoted strings (and `none`), read only by comparing it with one of them."""
from __future__ import annotations

from . import ast


def check_choice(checker, h: ast.Hyper) -> None:
    seen: set = set()
    for value in h.choices:
        if value in seen:
            checker.r.error(h.span, f"'{h.name}' lists {_shown(value)} twice")
        seen.add(value)
        if value is not None and (not value or not value.isprintable()):
            checker.r.error(h.span, f"a choice of '{h.name}' must be non-empty printable text on one line")
    if h.choice_message is not None:
        checker.check_message(ast.Require(h.span, ast.Bool(h.span, True), h.choice_message), what="choice")


def is_choice_test(checker, e: ast.Compare, locals_) -> bool:
    """A comparison with a quoted string, or one reading a choice hyper."""
    return any(isinstance(x, ast.StrLit) or _choice(checker, x, locals_) is not None for x in e.operands)


def choice_test(checker, e: ast.Compare, locals_) -> bool:
    """`h == "value"` / `h != "value"` (or `none`, where it is a choice): a host boolean. False after
    reporting an error."""
    names = [h for x in e.operands if (h := _choice(checker, x, locals_)) is not None]
    values = [x for x in e.operands if isinstance(x, (ast.StrLit, ast.NoneLit))]
    if len(e.operands) != 2 or e.ops[0] not in ("==", "!=") or len(names) != 1 or len(values) != 1:
        checker.r.error(e.span, "a quoted string is compared with a choice hyper only, one to one: "
                                "`adjust_lr_fn == \"original\"` or `!=`")
        return False
    h, lit = names[0], values[0]
    value = None if isinstance(lit, ast.NoneLit) else lit.value
    if value not in h.choices:
        checker.r.error(lit.span, f"{_shown(value)} is not a choice of '{h.name}'; its choices are "
                                  + ", ".join(_shown(c) for c in h.choices))
        return False
    return True


def misread(checker, e: ast.Name) -> None:
    h = checker.hypers[e.id]
    checker.r.error(e.span, f"'{e.id}' is a choice ({', '.join(_shown(c) for c in h.choices)}): compare it, "
                            f"`{e.id} == {_shown(next((c for c in h.choices if c is not None), None))}`")


def _choice(checker, x: ast.Expr, locals_) -> ast.Hyper | None:
    if isinstance(x, ast.Name) and x.id not in locals_:
        h = checker.hypers.get(x.id)
        if h is not None and h.choices:
            return h
    return None


def _shown(value) -> str:
    return "none" if value is None else f'"{value}"'
