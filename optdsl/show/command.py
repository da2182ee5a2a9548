"""`optdsl show FILE|NAME`: the update rule as math, each value's kind, the fused path's cost, and
the spec; `--latex`, `--ir` and `--code` print one of those views alone."""
from __future__ import annotations

import ast as pyast
import sys

from ..diagnostics import CompileError
from ..names import module_name
from ..plan.cost import specialize_flags

CODE_PATHS = ("loop", "foreach", "fused")


def parse_flags(items: list[str]) -> dict[str, bool]:
    """`--flag amsgrad=true` (repeatable)."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or value.lower() not in ("true", "false"):
            raise ValueError(f"--flag takes NAME=true or NAME=false, not {item!r}")
        out[name] = value.lower() == "true"
    return out


def parse_dtype(text: str) -> str | dict[str, str]:
    """`bf16` (every stream) or `param=bf16,exp_avg=fp32` (the others fp32)."""
    if "=" not in text:
        return text
    pairs = [part.split("=", 1) for part in text.split(",")]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"--dtype takes a dtype or STREAM=DTYPE pairs separated by commas, not {text!r}")
    return dict(pairs)


def with_state_dtype(p, dtype: str | dict[str, str], state_dtype: str) -> dict[str, str]:
    """The streams' dtypes with every elementwise state in `state_dtype` (the optimizer's
    `state_dtype=` option): param and grad keep `dtype`."""
    from ..ir import Kind
    base = dict(dtype) if isinstance(dtype, dict) else {"param": dtype, "grad": dtype}
    return {**base, **{s.name: state_dtype for s in p.states if s.kind is Kind.TENSOR}}


def eager_function(source: str, name: str) -> str:
    """One top-level function of a generated module, by name, as its source text."""
    tree = pyast.parse(source)
    for node in tree.body:
        if isinstance(node, pyast.FunctionDef) and node.name == name:
            return pyast.get_source_segment(source, node)
    raise LookupError(name)


def code(compiled, path: str) -> str:
    """The generated source of one path: the loop or foreach function (with the per-tensor host
    function it calls), or the whole fused kernel module."""
    if path == "fused":
        return compiled.triton_source
    fn = module_name(compiled.program.name)
    if path == "loop":
        return eager_function(compiled.eager_source, f"_single_tensor_{fn}")
    parts = []
    try:
        parts.append(eager_function(compiled.eager_source, f"_{fn}_per_tensor"))
    except LookupError:
        pass   # no per-tensor host values
    parts.append(eager_function(compiled.eager_source, f"_multi_tensor_{fn}"))
    return "\n\n\n".join(parts)


def main(args) -> int:
    from ..compiler import compile_spec
    from .math import latex_rule
    from ..plan import fused_refusal
    from .report import cost_report
    from .spec import SpecNotFound, compile_stages, find_spec, format_stages
    try:
        path = find_spec(args.spec)
        source = path.read_bytes().decode("utf-8")
        flags = parse_flags(args.flag or [])
        dtype = parse_dtype(args.dtype)
    except (SpecNotFound, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except UnicodeDecodeError as e:
        print(f"{args.spec}:1:1: error: not UTF-8 text ({e.reason} at byte {e.start})", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{args.spec}: error: {e.strerror}", file=sys.stderr)
        return 1
    file = str(path) if args.spec.endswith(".opt") or "/" in args.spec else path.name
    try:
        compiled = compile_spec(source, file, base=path.parent)   # every diagnostic `optdsl check` gives
        stages = compile_stages(source, file, base=path.parent)
    except CompileError as e:
        print(e.render(), file=sys.stderr)
        return 1
    if args.code:
        print(code(compiled, args.code))
        return 0
    if args.ir:
        print(format_stages(stages))
        return 0
    try:
        if args.state_dtype:
            dtype = with_state_dtype(stages.program, dtype, args.state_dtype)
        math = specialize_flags(stages.math, flags) if flags else stages.math
        refused = fused_refusal(stages.program)
        report = refused or cost_report(stages.program, flags, dtype)   # a str: why there is no fused path
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.latex:
        print(latex_rule(math))
        return 0
    from .terminal import console, show
    title = stages.program.name + (f" — {stages.program.doc}" if stages.program.doc else "")
    show(console(color=not args.no_color), math, report, source, title)
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("show", help="a spec as math, with each value's kind, its cost per element, and the spec")
    s.add_argument("spec", help="a .opt file, or a shipped spec's name (adam, lamb, ...)")
    view = s.add_mutually_exclusive_group()
    view.add_argument("--latex", action="store_true", help="print the update rule as LaTeX only")
    view.add_argument("--ir", action="store_true", help="print the IR after lowering, each pass and each plan")
    view.add_argument("--code", choices=CODE_PATHS, help="print the generated source of one path")
    s.add_argument("--flag", action="append", metavar="NAME=true|false",
                   help="fix a flag for the math and the cost report (repeatable)")
    s.add_argument("--dtype", default="fp32", metavar="DTYPE",
                   help="the streams' dtype for the byte counts: fp32 (default), bf16, fp16, fp64, "
                        "or per stream: param=bf16,exp_avg=fp32")
    s.add_argument("--state-dtype", metavar="DTYPE",
                   help="every elementwise state's dtype (the optimizer's state_dtype=), e.g. bf16")
    s.add_argument("--no-color", action="store_true", help="plain text even on a terminal")
    s.set_defaults(func=main)
