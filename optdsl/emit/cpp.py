"""IR -> the fused CPU backend: one C++ function per spec (templates/cpu.cpp.jinja) and its Python
launcher (templates/cpu.py.jinja).

The plan is the fused one (optdsl.plan, backend "fused"): host math hoisted into the per-tensor
host function, every host number read from the same fp32 value table as the Triton kernel's
(group-level values first, then one row per tensor), group-level booleans from a small flag
array. The C++ walks a flat work list of chunks (tensor, first element) over every tensor of a
dtype bucket with OpenMP threads; a chunk upcasts its bf16/fp16 streams into fp32 buffers (fp32
streams are used in place), runs the update as one loop over fp32 scalars that the compiler
vectorises, and rounds the stored streams back to nearest even. Every op's C++ comes from the
`cpp` column of optdsl.builtins.OPS.

Specs with reductions (phases) are not covered yet: their launcher raises at the first step,
naming the spec and the alternatives (optdsl.cpp_runtime.unsupported)."""
from __future__ import annotations

import math
import struct

from ..builtins import OPS
from ..ir import REDUCE, Kind, Let, Op, Program, Stmt, Store, Type, Value, walk_stmts
from ..names import ident, literal, module_name
from ..plan import make_plan
from ..plan.cost import phase_costs, optional_streams
from .common import Writer
from .host import emit_per_tensor_function, first_stored, is_device_stmt, scalar_states
from .pymodule import environment
from .triton import KernelEmitter, describe_traffic, stream_condition

MAX_TEMPLATE_BITS = 6   # at most 64 instantiations of a chunk loop; beyond, booleans stay run-time
BLOCK = 2048   # elements per chunk: the fp32 buffers of a chunk's streams stay in L1/L2

# Lower-case words C++ (or the headers the kernel includes) gives a meaning: a spec name equal to
# one gets the suffix `_V` in C++ (a spec name has no capitals, so no spec name can equal the result).
# The kernel's own locals start with `_`, which no spec name does.
CPP_RESERVED = frozenset("""
    alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t char32_t
    class compl concept const consteval constexpr constinit const_cast continue co_await co_return
    co_yield decltype default delete do double dynamic_cast else enum explicit export extern false float
    for friend goto if inline int long mutable namespace new noexcept not not_eq nullptr operator or or_eq
    private protected public register reinterpret_cast requires return short signed sizeof static
    static_assert static_cast struct switch template this thread_local throw true try typedef typeid
    typename union unsigned using virtual void volatile wchar_t while xor xor_eq std errno assert
    int8_t int16_t int32_t int64_t uint8_t uint16_t uint32_t uint64_t size_t ptrdiff_t omp
""".split())


def cpp_name(name: str) -> str:
    """A checked identifier (optdsl.names.ident's result) as a C++ name."""
    return f"{name}_V" if name in CPP_RESERVED else name


def cpp_float(x: float) -> str:
    """An fp32 C++ literal of `x` rounded to fp32 (as Triton reads a number), exact in hex form."""
    if math.isnan(x):
        return "NAN"
    if math.isinf(x):
        return "INFINITY" if x > 0 else "(-INFINITY)"
    f = struct.unpack("f", struct.pack("f", x))[0] if abs(x) <= 3.4028234663852886e38 else math.copysign(math.inf, x)
    if math.isinf(f):
        return "INFINITY" if f > 0 else "(-INFINITY)"
    if f == int(f) and abs(f) < 1 << 24:
        return f"{int(f)}.0f" if f >= 0 or int(f) != 0 else "-0.0f"
    return f"{f.hex()}f /* {x!r} */" if repr(f) != repr(x) else f"{f!r}f"


class CppEmitter(KernelEmitter):
    """The Triton emitter's leaves and table/flag bookkeeping, with C++ expressions and statements."""

    def leaf(self, v: Value) -> str:
        if v.op is Op.CONST:
            if isinstance(v.arg, bool):
                return "true" if v.arg else "false"
            return cpp_float(float(v.arg))
        return cpp_name(super().leaf(v))

    def expr(self, v: Value) -> str:
        if v.op is Op.POW and v.args[1].op is Op.CONST and v.args[1].arg == 2.0:
            x = self.expr(v.args[0])
            return f"({x} * {x})"
        if not v.args:
            return self.leaf(v)
        return OPS[v.op].cpp.format(*(self.expr(a) for a in v.args))

    def body(self, stmts: tuple[Stmt, ...], w: Writer) -> bool:
        wrote = False
        for s in stmts:
            if not is_device_stmt(s, self.p):
                continue
            if isinstance(s, Let):
                if s.value.op in REDUCE:
                    raise AssertionError("a reduction in an elementwise C++ kernel")
                w.line(f"{cpp_name(ident(s.name))} = {self.expr(s.value)};")
                wrote = True
            elif isinstance(s, Store):
                w.line(f"{cpp_name(ident(s.target))} = {self.expr(s.value)};")
                wrote = True
            else:
                mark = len(w.lines)
                w.line(f"if ({self.expr(s.cond)}) {{")
                with w.indent():
                    then = self.body(s.then, w)
                if s.other:
                    w.line("} else {")
                    with w.indent():
                        other = self.body(s.other, w)
                else:
                    other = False
                w.line("}")
                if not then and not other:
                    del w.lines[mark:]
                else:
                    wrote = True
        return wrote

    def locals(self, streams: list[str]) -> list[tuple[str, str]]:
        """(C++ type, name) of every device local the element loop assigns, first binding's type."""
        out: dict[str, str] = {}
        for s in walk_stmts(self.p.body):
            if isinstance(s, Let) and is_device_stmt(s, self.p) and ident(s.name) not in streams:
                out.setdefault(cpp_name(ident(s.name)), "bool" if s.value.type is Type.BOOL else "float")
        return list((t, n) for n, t in out.items())


def is_phased(hoisted: Program) -> bool:
    return any(isinstance(s, Let) and s.value.op in REDUCE for s in walk_stmts(hoisted.body)) \
        or any(s.kind is Kind.REDUCED for s in hoisted.states)


def emit_cpu_sources(p: Program, source_name: str, spec_hash: str) -> tuple[str, str | None]:
    """(the Python launcher, the C++ source or None where the spec is not covered)."""
    plan = make_plan(p, "fused")
    hoisted = plan.program
    fn = module_name(p.name)
    env = environment()
    if is_phased(hoisted):
        return env.get_template("cpu.py.jinja").render(
            supported=False, source_name=source_name, spec_hash=spec_hash, class_name=ident(p.name)), None
    k = CppEmitter(hoisted)
    streams = ["param", "grad"] + [ident(s.name) for s in k.tensor_states]
    body = Writer(2)
    k.body(hoisted.body, body)
    (cost,) = phase_costs(plan)
    stored, read = list(cost.stored), set(cost.read)
    used = [s for s in streams if s in read or s in stored]
    group_names = [cpp_name(n) for n in k.group_columns]
    row_columns = [(("bool" if c.type is Type.BOOL else "float"), cpp_name(ident(c.name)), j)
                   for j, c in enumerate(k.table_cols)]
    flags = list(k.constexprs)
    # Booleans (group flags, per-tensor boolean columns) are template bits of the chunk function:
    # GCC does not vectorise a select on a run-time scalar bool, so each combination is its own
    # loop, with the untaken branches folded away (2^bits instantiations, a chunk picks one).
    bits = flags + [name for t, name, _ in row_columns if t == "bool"]
    templated = len(bits) <= MAX_TEMPLATE_BITS
    bytes_per_element = describe_traffic(cost, optional_streams(hoisted))
    kernel = env.get_template("cpu.cpp.jinja").render(
        source_name=source_name, spec_hash=spec_hash, class_name=ident(p.name), fn=fn, block=BLOCK,
        bytes_per_element=bytes_per_element,
        streams=[(cpp_name(s), s in stored) for s in used],
        stored=[(cpp_name(s), j) for j, s in enumerate(used) if s in stored],
        columns=[("float", n) for n in group_names] + [(t, n) for t, n, _ in row_columns
                                                        if not (templated and t == "bool")],
        flags=flags, bits=bits if templated else [], runtime_bools=[] if templated else bits,
        row_bools=[(n, j) for t, n, j in row_columns if t == "bool"],
        locals=k.locals(streams), body=body.text(),
        group_loads=[f"const float {n} = _table[{j}];" for j, n in enumerate(group_names)],
        chunk_args=group_names + [f"_row[{j}]" for t, n, j in row_columns if t == "float"]
        + ([] if templated else bits),
        n_group=len(group_names), n_columns=max(1, len(k.table_cols)),
    )
    hyper_names = [ident(h.name) for h in p.hypers] + [ident(f.name) for f in p.flags]
    host_fn_name = f"_{fn}_host_values"
    stream_active = [(ident(s.name), stream_condition(k, s.cond)) for s in k.tensor_states if s.name in used]
    launcher = env.get_template("cpu.py.jinja").render(
        supported=True, source_name=source_name, spec_hash=spec_hash, class_name=ident(p.name), fn=fn,
        bytes_per_element=bytes_per_element, block=BLOCK,
        streams_literal=literal(tuple(used)), stored_literal=literal(tuple(s for s in used if s in stored)),
        host_fn=emit_per_tensor_function(hoisted, host_fn_name, track_stores=True), host_fn_name=host_fn_name,
        scalar_writeback=[(n, len(k.cols) + i) for i, n in enumerate(scalar_states(p))],
        hyper_names=hyper_names, stream_active=stream_active,
        table_columns=literal(tuple(k.col_index[c.name] for c in k.table_cols)),
        group_sources=list(k.group_columns.values()), flag_sources=list(k.constexprs.values()),
        empty_streams=[(ident(n), len(k.cols) + len(scalar_states(p)) + j) for j, n in enumerate(first_stored(hoisted))],
    )
    return launcher, kernel
