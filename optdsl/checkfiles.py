"""`optdsl check FILE...`: parse and check spec files, printing diagnostics. The command line
(optdsl.cli) and the text fuzzer (optdsl.fuzz.text, which feeds it raw bytes) both call this, so
neither imports the other."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from . import ast
from .diagnostics import CompileError
from .unused import unused_declarations


def check_files(files, out=None, err=None, werror: bool = False) -> int:
    """Exit status 0 if every file compiles, else 1; one line per good file on `out`, the
    diagnostics (file:line:col: error: ...) and warnings on `err`. With `werror` a warning is
    an error: it is printed as one and the file fails."""
    from .compiler import compile_spec
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    status = 0
    for name in files:
        path = Path(name)
        try:
            source = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            print(f"{name}:1:1: error: not UTF-8 text ({e.reason} at byte {e.start})", file=err)
            status = 1
            continue
        except OSError as e:
            print(f"{name}: error: {e.strerror}", file=err)
            status = 1
            continue
        try:
            wrapper = _wrapper(source, name)
            compiled = compile_spec(source, name, base=path.resolve().parent) if wrapper is None else None
        except CompileError as e:
            print(e.render(), file=err)
            status = 1
            continue
        warnings = unused_declarations(wrapper) if wrapper is not None else compiled.warnings
        if warnings:
            shown = [replace(w, severity="error", message=f"{w.message} [--werror]") if werror else w
                     for w in warnings]
            print("\n".join(w.render(source if wrapper is not None else compiled.source) for w in shown), file=err)
            if werror:
                status = 1
                continue
        if wrapper is not None:
            print(f"{name}: ok (wrapper {wrapper.name}: {len(wrapper.hypers)} hypers, {len(wrapper.flags)} flags, "
                  f"{len(wrapper.states)} states; compose it: `optimizer Name = {path.stem}(adam)`)", file=out)
            continue
        print(f"{name}: ok ({summary(compiled.program)})", file=out)
    return status


def _wrapper(source: str, name: str):
    """The checked wrapper a file holds (checked alone: its `inner` runs nothing), else None."""
    from .check import check
    from .parse import parse_any
    spec = parse_any(source, name)
    if not isinstance(spec, ast.Spec) or spec.kind != "wrapper":
        return None
    return check(spec)


def summary(p) -> str:
    """What a compiled spec declares, counted as the language names them."""
    group = sum(h.group_state for h in p.hypers)
    parts = [f"{len(p.hypers) - group} hypers", f"{len(p.flags)} flags", f"{len(p.states) - len(p.inputs)} states"]
    parts += [f"{group} group states"] if group else []
    parts += [f"{len(p.inputs)} input{'s' if len(p.inputs) > 1 else ''}"] if p.inputs else []
    parts += ["train/eval modes"] if p.modes else []
    parts += [f"sparse {p.sparse}"] if p.sparse else []
    return f"{p.name}: " + ", ".join(parts)
