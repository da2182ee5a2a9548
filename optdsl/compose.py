"""Composition: a wrapper spec around any optimizer spec, spliced into one spec text.

`optimizer LookaheadAdam "doc" = lookahead(adam)` names a wrapper (`wrapper Lookahead ...`, whose
update has one `inner` statement) and the spec it wraps. `expand` turns such a file into one
ordinary spec: the wrapped spec's declarations, the wrapper's, and an update block that is the
wrapper's with `inner` replaced by the wrapped spec's update. Everything after this stage (checker,
lowering, every backend, the interpreter, the fuzzer) sees one program, so a wrapped spec compiles
to one kernel per phase, not two optimizers run one after the other.

The splice is textual, from the parser's offsets (`ast.Regions`), so the composed text keeps both
files' comments and layout and is what `optdsl show` prints and the cache hashes. Each file is
checked alone first, so its own errors point into its own text; names the two share are refused
here, before splicing (a wrapper's names must be its own: it sees only its declarations and the
inputs, and the wrapped spec never sees the wrapper's)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import ast
from .check import check
from .diagnostics import CompileError, Diagnostic, Span
from .parse import parse_any
from .resources import data_dir

MAX_DEPTH = 16   # files composing files


@dataclass(frozen=True)
class Source:
    """Spec text and where it came from: `label` names it in diagnostics, `base` is the folder
    a composition in it resolves names against (None: the current directory)."""
    text: str
    label: str
    base: Path | None = None
    path: Path | None = None     # the file it was read from (compositions refuse cycles by it)


def shipped_dirs() -> list[Path]:
    """Where a bare name (`adam`, `lookahead`) is looked for after the composing file's own folder."""
    root = data_dir("specs")
    return [root, root / "wrappers"]


def expand(text: str, file: str = "<spec>", base: Path | None = None) -> tuple[str, str]:
    """(spec text, label): `text` itself when it is a spec or a wrapper, else the composed spec."""
    return _expand(Source(text, file, base), ())


def compose(wrapper: Source, inner: Source, name: str | None = None, doc: str | None = None) -> str:
    """The spec text of `wrapper` around `inner` (each a spec, a wrapper or a composition's text)."""
    w_text, w_label = _expand(wrapper, ())
    i_text, i_label = _expand(inner, ())
    return _splice(Source(w_text, w_label), Source(i_text, i_label), name, doc)


def composition_error(err: CompileError, source: str, file: str) -> CompileError:
    """An error in a composed text, at the composition's header in the file that asked for it."""
    header = parse_any(source, file).span
    lines = (err.source or "").split("\n")
    diags = []
    for d in err.diagnostics:
        shown = lines[d.span.line - 1].strip() if 0 < d.span.line <= len(lines) else ""
        diags.append(Diagnostic(header, f"{d.message} (in the composed spec, line {d.span.line}: `{shown[:80]}`; "
                                        "`optdsl compose` prints it)", d.severity))
    return CompileError(diags, source)


def _expand(src: Source, seen: tuple[Path, ...]) -> tuple[str, str]:
    node = parse_any(src.text, src.label)
    if isinstance(node, ast.Spec):
        return src.text, src.label
    if len(seen) > MAX_DEPTH:
        raise CompileError([Diagnostic(node.span, f"compositions nested more than {MAX_DEPTH} deep")], src.text)
    text, _ = _build(node.of, src, seen, node.name, node.doc)
    return text, f"{src.label} (composed)"


def _build(ref, src: Source, seen: tuple[Path, ...], name: str | None, doc: str | None) -> tuple[str, str]:
    """The text and label of a composition term: a reference, or a wrapper applied to a term."""
    if isinstance(ref, ast.SpecRef):
        found = _resolve(ref, src, seen)
        text, label = _expand(found, (*seen, found.path))
        if name is None:
            return text, label
        spec = parse_any(text, label)
        _require_kind(spec, "optimizer", ref, src)
        return _renamed(text, spec, name, doc), label
    wrapper = _resolve(ref.wrapper, src, seen)
    w_text, w_label = _expand(wrapper, (*seen, wrapper.path))
    _require_kind(parse_any(w_text, w_label), "wrapper", ref.wrapper, src)
    i_text, i_label = _build(ref.inner, src, seen, None, None)
    _require_kind(parse_any(i_text, i_label), "optimizer", ref.inner if isinstance(ref.inner, ast.SpecRef)
                  else ref.inner.wrapper, src)
    return _splice(Source(w_text, w_label), Source(i_text, i_label), name, doc), i_label


def _require_kind(spec, kind: str, ref, src: Source) -> None:
    if spec.kind == kind:
        return
    if kind == "wrapper":
        msg = (f"'{ref.name}' is an optimizer, not a wrapper: in `w(spec)` the outer name is a wrapper "
               f"(a file whose header says `wrapper` and whose update has `inner`)")
    else:
        msg = f"'{ref.name}' is a wrapper: it needs a spec to wrap, `{ref.name}(adam)`"
    raise CompileError([Diagnostic(ref.span, msg)], src.text)


def _resolve(ref: ast.SpecRef, src: Source, seen: tuple[Path, ...]) -> Source:
    here = src.base if src.base is not None else Path.cwd()
    if ref.quoted:
        path = Path(ref.name)
        if path.suffix != ".opt":
            raise CompileError([Diagnostic(ref.span, f"a spec file ends in .opt: \"{ref.name}\"")], src.text)
        candidates = [path if path.is_absolute() else here / path]
    else:
        candidates = [d / f"{ref.name}.opt" for d in (here, *shipped_dirs())]
    for path in candidates:
        if path.is_file():
            path = path.resolve()
            if path in seen:
                raise CompileError([Diagnostic(ref.span, f"'{ref.name}' composes itself: {path.name} is already "
                                                         "being expanded")], src.text)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise CompileError([Diagnostic(ref.span, f"cannot read {path}: {err}")], src.text) from None
            return Source(text, path.name, path.parent, path)
    looked = ", ".join(str(p) for p in candidates)
    raise CompileError([Diagnostic(ref.span, f"no spec '{ref.name}' (looked for {looked})")], src.text)


def _renamed(text: str, spec: ast.Spec, name: str, doc: str | None) -> str:
    header = f'optimizer {name} "{spec.doc if doc in (None, "") else doc}"'
    return header + text[spec.regions.decls[0]:]


# ---- the splice ----------------------------------------------------------------------------------
def _declared(spec: ast.Spec) -> dict[str, tuple[str, Span]]:
    """Every name a spec declares or binds, with what it is and where."""
    out: dict[str, tuple[str, Span]] = {}
    for what, decls in (("a hyper", spec.hypers), ("a flag", spec.flags), ("a state", spec.states)):
        for d in decls:
            out.setdefault(d.name, (what, d.span))
    stack = list(spec.body) + [s for mode in spec.modes for s in mode.body]   # `on` blocks' locals too
    while stack:
        s = stack.pop(0)
        if isinstance(s, ast.Assign):
            if s.target != "param" and s.target not in out:
                out[s.target] = ("a local", s.target_span)
        else:
            stack[:0] = [*s.then, *s.other]
    return out


def _clashes(wrapper: ast.Spec, inner: ast.Spec, w_src: Source, i_src: Source) -> None:
    """Names and state_dict keys the two share: refused, at the wrapper's."""
    theirs = _declared(inner)
    diags = []
    for name, (what, span) in _declared(wrapper).items():
        if name in theirs:
            other, at = theirs[name]
            diags.append(Diagnostic(span, f"'{name}' is {what} of the wrapper {wrapper.name} and {other} of the "
                                          f"spec it wraps ({i_src.label}:{at.line}:{at.col}): a wrapper's names "
                                          f"must be its own; rename one of them"))
    their_keys = {s.key or s.name: s for s in inner.states}
    for s in wrapper.states:
        other = their_keys.get(s.key or s.name)
        if other is not None and other.name != s.name:
            diags.append(Diagnostic(s.span, f"the state_dict key \"{s.key or s.name}\" of the wrapper's state '{s.name}' "
                                            f"is also that of '{other.name}' in {i_src.label}; give one a `key`"))
    if diags:
        raise CompileError(diags, w_src.text)


def _splice(w_src: Source, i_src: Source, name: str | None, doc: str | None) -> str:
    wrapper = check(parse_any(w_src.text, w_src.label))
    inner = check(parse_any(i_src.text, i_src.label))
    if wrapper.kind != "wrapper" or inner.kind != "optimizer":
        which = w_src if wrapper.kind != "wrapper" else i_src
        raise CompileError([Diagnostic((wrapper if wrapper.kind != "wrapper" else inner).span,
                                       f"{which.label}: expected a {'wrapper' if which is w_src else 'spec'} here")],
                           which.text)
    if wrapper.keeps:
        raise CompileError([Diagnostic(wrapper.keeps[0].span, "a wrapper keeps no step count of its own: its `step` "
                                                              "is the wrapped spec's (per tensor or per group, as "
                                                              "that spec says)")], w_src.text)
    _clashes(wrapper, inner, w_src, i_src)
    name = name or wrapper.name + inner.name
    doc = doc or f"{wrapper.doc or wrapper.name} around {inner.name}"
    wr, ir = wrapper.regions, inner.regions
    w, i = w_src.text, i_src.text
    # Group states are stored before the tensors' update (check_group_update): the wrapped spec's
    # stores move up to follow the wrapper's own, ahead of the wrapper's per-tensor statements.
    # Both are host math on names of their own spec only (the clash rule), so the order between
    # them does not change a value.
    w_group, i_group = min(_group_update_end(wrapper, w), wr.inner[0]), _group_update_end(inner, i)
    before, after = w[w_group:wr.inner[0]], w[wr.inner[1]:wr.body[1]]
    parts = [
        f'optimizer {name} "{doc}"',
        f"# {wrapper.name} ({w_src.label}) around {inner.name} ({i_src.label}): composed by optdsl",
        f"# ---- {i_src.label}",
        _block(i[ir.decls[0]:ir.decls[1]]),
        f"# ---- {w_src.label}",
        _block(w[wr.decls[0]:wr.decls[1]]),
        "update {",
        _block(w[wr.body[0]:w_group]),
        f"  # ---- {inner.name}'s group states ({i_src.label})" if i_group > ir.body[0] else None,
        _block(i[ir.body[0]:i_group]),
        _block(before),
        f"  # ---- {inner.name}'s update ({i_src.label})",
        _block(i[i_group:ir.body[1]]),
        f"  # ---- end of {inner.name}'s update",
        _block(after),
        "}",
        # the wrapped spec's `on train` / `on eval` (a wrapper has none of its own)
        f"# ---- {inner.name}'s modes ({i_src.label})" if ir.modes else None,
        _block(i[ir.modes[0]:ir.modes[1]]) if ir.modes else None,
        "",
    ]
    return "\n".join(p for p in parts if p is not None)


def _group_update_end(spec: ast.Spec, text: str) -> int:
    """The offset just past the last top-level store to a group state in `spec`'s update (the
    start of the update's inside where it stores none)."""
    group = {s.name for s in spec.states if s.shape == "group"}
    stores = [st for st in spec.body if isinstance(st, ast.Assign) and st.target in group]
    if not stores:
        return spec.regions.body[0]
    end = stores[-1].span
    line_start = 0
    for _ in range(end.end_line - 1):
        line_start = text.index("\n", line_start) + 1
    return line_start + end.end_col - 1


def _block(text: str) -> str | None:
    """A region without its surrounding blank lines (None when nothing is left)."""
    text = re.sub(r"\A(?:[ \t\f\r]*\n)+", "", text.rstrip())
    return text or None
