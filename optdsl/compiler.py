"""The pipeline, end to end: text -> AST -> checked AST -> IR -> optimised IR -> sources."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from . import ast
from .check import check
from .compose import composition_error, expand
from .defaults import default_violations
from .diagnostics import CompileError, Diagnostic
from .ir import Program, verify
from .lower import lower
from .parse import parse
from .passes import optimize
from .plan import PlanError, fused_refusal
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
    source: str = ""              # the spec text compiled (a composition's, expanded)


def file_stem(file: str) -> str:
    return file.rsplit("/", 1)[-1].split(" ", 1)[0].removesuffix(".opt")


def spec_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


def compile_ir(source: str, file: str = "<spec>", verify_ir: bool = False, base: Path | None = None) -> Program:
    return _expanded(source, file, base, lambda text, label: _front(text, label, verify_ir)[1])


def _expanded(source: str, file: str, base: Path | None, stage):
    """`stage(text, label)` on the spec a composition expands to; its errors are reported at the
    composition's header in `file` (the composed text is in no file: `optdsl compose` prints it)."""
    text, label = expand(source, file, base)
    if text is source:
        return stage(source, file)
    try:
        return stage(text, label)
    except CompileError as err:
        raise composition_error(err, source, file) from None


def _front(source: str, file: str, verify_ir: bool) -> tuple[ast.Spec, Program]:
    spec = check(parse(source, file))
    if spec.kind == "wrapper":
        raise CompileError([Diagnostic(spec.span, f"{spec.name} is a wrapper, not an optimizer by itself: compose it "
                                                  f"with one, `optimizer Name = {file_stem(file)}(adam)`")], source)
    program = lower(spec)
    if (refused := default_violations(spec, program)):
        raise CompileError(refused, source)
    if verify_ir:
        verify(program)
    return spec, optimize(program, check=verify_ir)


def compile_spec(source: str, file: str = "<spec>", verify_ir: bool = False, base: Path | None = None) -> Compiled:
    """`base`: the folder a composition (`= wrapper(spec)`) finds its specs in (None: the current
    directory, then the shipped specs). `Compiled.source` is the text compiled, composed if it was."""
    return _expanded(source, file, base, lambda text, label: _compile(text, label, verify_ir))


def _compile(source: str, file: str, verify_ir: bool) -> Compiled:
    from .emit.pymodule import emit_eager_module
    from .emit.cpp import emit_cpu_sources
    from .emit.triton import emit_triton_module
    spec, program = _front(source, file, verify_ir)
    digest = spec_hash(source)
    name = file.rsplit("/", 1)[-1]
    if fused_refusal(program):   # no kernel modules: fused=True raises with the reason
        return Compiled(program, emit_eager_module(program, name, digest), "", digest,
                        tuple(unused_declarations(spec)), "", "", source)
    try:
        cpu_source, cpp_source = emit_cpu_sources(program, name, digest)
        return Compiled(program, emit_eager_module(program, name, digest), emit_triton_module(program, name, digest),
                        digest, tuple(unused_declarations(spec)), cpu_source, cpp_source, source)
    except PlanError as err:   # an update the phase plan cannot split: a diagnostic at the spec's header
        header = parse(source, file).span
        raise CompileError([Diagnostic(header, f"cannot plan this update's reductions: {err}")], source) from None
