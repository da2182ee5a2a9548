"""The pipeline, end to end: text -> AST -> checked AST -> IR -> optimised IR -> sources."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from . import ast
from .check import check
from .defaults import default_violations
from .diagnostics import CompileError, Diagnostic
from .ir import Program, verify
from .lower import lower
from .parse import parse
from .passes import optimize
from .plan import PlanError
from .unused import unused_declarations


@dataclass(frozen=True)
class Compiled:
    program: Program
    eager_source: str
    triton_source: str
    spec_hash: str
    # what compiles but is probably a slip (unused hypers, flags, states): severity "warning",
    # rendered against the source like errors; `optdsl check --werror` refuses them
    warnings: tuple[Diagnostic, ...] = ()
    cpu_source: str = ""          # the fused CPU backend's Python launcher
    cpp_source: str = ""          # its C++ (one step function per phase)


def spec_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


def compile_ir(source: str, file: str = "<spec>", verify_ir: bool = False) -> Program:
    return _front(source, file, verify_ir)[1]


def _front(source: str, file: str, verify_ir: bool) -> tuple[ast.Spec, Program]:
    spec = check(parse(source, file))
    program = lower(spec)
    if (refused := default_violations(spec, program)):
        raise CompileError(refused, source)
    if verify_ir:
        verify(program)
    return spec, optimize(program, check=verify_ir)


def compile_spec(source: str, file: str = "<spec>", verify_ir: bool = False) -> Compiled:
    from .emit.pymodule import emit_eager_module
    from .emit.cpp import emit_cpu_sources
    from .emit.triton import emit_triton_module
    spec, program = _front(source, file, verify_ir)
    digest = spec_hash(source)
    name = file.rsplit("/", 1)[-1]
    try:
        cpu_source, cpp_source = emit_cpu_sources(program, name, digest)
        return Compiled(program, emit_eager_module(program, name, digest), emit_triton_module(program, name, digest),
                        digest, tuple(unused_declarations(spec)), cpu_source, cpp_source)
    except PlanError as err:   # an update the phase plan cannot split: a diagnostic at the spec's header
        header = parse(source, file).span
        raise CompileError([Diagnostic(header, f"cannot plan this update's reductions: {err}")], source) from None
