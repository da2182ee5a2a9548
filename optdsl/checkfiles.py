"""`optdsl check FILE...`: parse and check spec files, printing diagnostics. The command line
(optdsl.cli) and the text fuzzer (optdsl.fuzz.text, which feeds it raw bytes) both call this, so
neither imports the other."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from .diagnostics import CompileError


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
            compiled = compile_spec(source, name)
        except CompileError as e:
            print(e.render(), file=err)
            status = 1
            continue
        if compiled.warnings:
            shown = [replace(w, severity="error", message=f"{w.message} [--werror]") if werror else w
                     for w in compiled.warnings]
            print("\n".join(w.render(source) for w in shown), file=err)
            if werror:
                status = 1
                continue
        print(f"{name}: ok ({compiled.program.name}: {len(compiled.program.hypers)} hypers, "
              f"{len(compiled.program.flags)} flags, {len(compiled.program.states)} states)", file=out)
    return status
