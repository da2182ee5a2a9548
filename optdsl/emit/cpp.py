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

A spec with reductions runs its plan's phases (optdsl.plan.phases), each one more C++ function
rendered from the same chunk skeleton: phases before the last write one partial per chunk and per
reduction, which optdsl.kernel_runtime.combine (the Triton path's combine, where group-wide values
and distributed all-reduces join) turns into the per-tensor / per-channel tables later phases read.
What a reduction is in each phase (partial or combined value) is the plan's `Phase.role`."""
from __future__ import annotations

import math
import struct

from ..builtins import OPS, REDUCTIONS
from ..ir import REDUCE, Kind, Let, Op, Program, Type, Value, stmt_values, walk_stmts, walk_values
from ..names import ident, literal, module_name
from ..plan import make_plan
from ..plan.cost import describe_reduction, optional_streams, phase_costs
from .common import BlockSyntax, Writer
from .host import emit_per_tensor_function, first_stored, is_device_stmt, scalar_states
from .pymodule import environment
from .triton import KernelEmitter, describe_traffic, stream_condition
from .triton_phases import describe_phase_traffic

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
    """The Triton emitter's leaves and table/flag bookkeeping, with C++ expressions and statements.

    `seen` collects the C++ names the statements emitted since the last reset read, so that each
    phase's chunk function takes as template bits only the booleans its own body tests (fewer
    instantiations to compile)."""

    def __init__(self, p: Program):
        super().__init__(p)
        self.seen: set[str] = set()

    def leaf(self, v: Value) -> str:
        if v.op is Op.CONST:
            if isinstance(v.arg, bool):
                return "true" if v.arg else "false"
            return cpp_float(float(v.arg))
        name = cpp_name(super().leaf(v))
        self.seen.add(name)
        return name

    def expr(self, v: Value) -> str:
        if v.op is Op.POW and v.args[1].op is Op.CONST and v.args[1].arg == 2.0:
            x = self.expr(v.args[0])
            return f"({x} * {x})"
        if not v.args:
            return self.leaf(v)
        return OPS[v.op].cpp.format(*(self.expr(a) for a in v.args))

    def reduction(self, s: Let) -> str:
        """A reduction Let in a phase: this element's contribution to the chunk's partial (a sink of
        the phase: the reduction's map, folded after the loop), or the combined value (ready)."""
        assert self.phase is not None, "a reduction in an elementwise C++ kernel"
        role = self.phase.role(s.name)
        if role == "sink":
            contribution = REDUCTIONS[s.value.op].cpp.format(*(self.expr(a) for a in s.value.args))
            return f"{contribution_name(s.name)} = {contribution};"
        assert role == "ready", (s.name, role)
        return f"{cpp_name(ident(s.name))} = {ready_name(s.name)};"

    def stored(self, target: str, v: Value) -> str:
        return self.expr(v)   # one element at a time: a number is already what a stream holds

    SYNTAX = BlockSyntax(assign="{name} = {value};", open_if="if ({cond}) {{", else_line="} else {",
                         close_if="}", empty=None)

    def name(self, name: str) -> str:
        return cpp_name(ident(name))

    def locals(self, stmts, exclude: set[str]) -> list[tuple[str, str]]:
        """(C++ type, name) of every device local `stmts` assign, first binding's type."""
        out: dict[str, str] = {}
        for s in walk_stmts(stmts):
            if isinstance(s, Let) and is_device_stmt(s, self.p) and ident(s.name) not in exclude:
                out.setdefault(cpp_name(ident(s.name)), "bool" if s.value.type is Type.BOOL else "float")
        return list((t, n) for n, t in out.items())


def contribution_name(reduction: str) -> str:
    """The per-element local holding an element's contribution to a reduction's partial."""
    return f"_p{cpp_name(ident(reduction))}"


def ready_name(reduction: str) -> str:
    """The chunk argument holding a combined reduction's value (per tensor or per channel)."""
    return f"_rd{cpp_name(ident(reduction))}"


def is_phased(hoisted: Program) -> bool:
    """Whether the fused plan needs the phased skeleton: a reduction, or a scalar state kept on the
    device (stored from a reduction, even one folded away), which only that skeleton loads and writes."""
    return any(isinstance(s, Let) and s.value.op in REDUCE for s in walk_stmts(hoisted.body)) \
        or any(s.kind is Kind.REDUCED for s in hoisted.states)


def _scalar_reads(stmts, names: list[str]) -> set[str]:
    return {str(n.arg) for s in walk_stmts(stmts) for v in stmt_values(s) for n in walk_values(v)
            if n.op is Op.STATE and n.arg in names}


def emit_cpu_sources(p: Program, source_name: str, spec_hash: str) -> tuple[str, str]:
    """(the Python launcher, the C++ source): one C++ step function per phase of the fused plan."""
    plan = make_plan(p, "fused")
    hoisted = plan.program
    fn = module_name(p.name)
    phased = is_phased(hoisted)
    k = CppEmitter(hoisted)
    streams = ["param", "grad"] + [s.name for s in k.tensor_states]   # spec names: the plan's
    device_scalars = [s.name for s in hoisted.states if s.kind is Kind.REDUCED]
    phases = plan.phases.phases
    slots: dict[str, tuple[str, int]] = {}   # reduction -> (its combined table, row), as the Triton path's
    rows = {"tensor": 0, "channel": 0}
    for name, v in plan.phases.reductions.items():
        table = "channel" if v.arg == "channel" else "tensor"
        slots[name] = (table, rows[table])
        rows[table] += 1

    costs = phase_costs(plan)   # the streams each phase moves: the one source (optdsl.plan.cost)
    emitted = []
    for phase, cost in zip(phases, costs):
        k.phase, k.seen = (phase if phased else None), set()
        w = Writer(2)
        k.body(phase.body, w)
        emitted.append((phase, cost, w.text(), k.seen))

    # the table layout and the booleans are the whole spec's, known once every phase is emitted
    group_names = [cpp_name(n) for n in k.group_columns]
    row_columns = [(("bool" if c.type is Type.BOOL else "float"), cpp_name(ident(c.name)), j)
                   for j, c in enumerate(k.table_cols)]
    flags = list(k.constexprs)
    # Booleans (group flags, per-tensor boolean columns) are template bits of a chunk function:
    # GCC does not vectorise a select on a run-time scalar bool, so each combination is its own
    # loop, with the untaken branches folded away (2^bits instantiations, a chunk picks one).
    all_bits = flags + [name for t, name, _ in row_columns if t == "bool"]
    columns = [("float", n) for n in group_names] + [(t, n) for t, n, _ in row_columns if t == "float"]
    kernels = []
    for phase, cost, text, seen in emitted:
        bits = [b for b in all_bits if b in seen]
        templated = len(bits) <= MAX_TEMPLATE_BITS
        stored = list(cost.stored)
        used = [s for s in streams if s in cost.read or s in stored]
        scalars = [s for s in device_scalars if s in _scalar_reads(phase.body, device_scalars)
                   or phase.final] if phased else []
        sinks = list(phase.sinks) if phased else []
        ready = [r for r in plan.phases.reductions if r in phase.ready] if phased else []
        label = "the update" if phase.final else "partials of " + ", ".join(
            describe_reduction(plan.phases.reductions[r]) for r in sinks)
        kernels.append(dict(
            what=label[0].upper() + label[1:],
            chunk=f"_chunk{'' if phase.final else phase.index}",
            symbol=f"optdsl_{fn}_{'step' if phase.final else f'phase{phase.index}'}",
            streams=[(cpp_name(ident(s)), s in stored) for s in used],
            stored=[(cpp_name(ident(s)), j) for j, s in enumerate(used) if s in stored],
            stream_names=literal(tuple(ident(s) for s in used)),
            bits=bits if templated else [], runtime_bools=[] if templated else bits,
            row_bools=[(n, j) for t, n, j in row_columns if t == "bool" and n in bits],
            locals=k.locals(phase.body, {ident(s) for s in streams + device_scalars}),
            body=text,
            sinks=[contribution_name(r) for r in sinks],
            folds=[(r, REDUCTIONS[plan.phases.reductions[r].op].fold) for r in sinks],
            partials=[(row, slots[r][1], plan.phases.reductions[r].arg, REDUCTIONS[plan.phases.reductions[r].op].fold,
                       f"_finish_{plan.phases.reductions[r].op.name.lower()}") for row, r in enumerate(sinks)],
            ready=[ready_name(r) for r in ready],
            ready_loads=[(ready_name(r),) + slots[r] for r in ready],
            scalars=[cpp_name(ident(s)) for s in scalars],
            scalar_loads=[(cpp_name(ident(s)), device_scalars.index(s)) for s in scalars],
            scalars_out=[cpp_name(ident(s)) for s in device_scalars] if phase.final else [],
            chunk_args=group_names + [f"_row[{j}]" for t, n, j in row_columns if t == "float"]
            + ([] if templated else bits) + [ready_name(r) for r in ready]
            + [f"_in_{cpp_name(ident(s))}" for s in scalars],
        ))
    optional = optional_streams(hoisted)
    traffic = describe_phase_traffic(costs, optional) if phased else describe_traffic(costs[0], optional)
    env = environment()
    kernel = env.get_template("cpu.cpp.jinja").render(
        source_name=source_name, spec_hash=spec_hash, class_name=ident(p.name), block=BLOCK, phased=phased,
        bytes_per_element=traffic.replace("\n", "\n//   "), kernels=kernels, columns=columns, flags=flags,
        group_loads=[f"const float {n} = _table[{j}];" for j, n in enumerate(group_names)],
        n_group=len(group_names), n_columns=max(1, len(k.table_cols)),
    )
    all_read = set().union(*(c.read for c in costs)) | set().union(*(c.stored for c in costs))
    finishes = sorted({(v.op.name.lower(), REDUCTIONS[v.op].finish.format(r="r", n="n"))
                       for v in plan.phases.reductions.values()})
    launcher = env.get_template("cpu.py.jinja").render(
        phased=phased, source_name=source_name, spec_hash=spec_hash, class_name=ident(p.name), fn=fn,
        bytes_per_element=traffic, block=BLOCK, kernels=kernels, finishes=finishes,
        channels=literal(any(v.arg == "channel" for v in plan.phases.reductions.values())),
        scalar_states=literal(tuple(ident(s) for s in device_scalars)),
        scalar_active=[(ident(s.name), stream_condition(k, s.cond)) for s in hoisted.states if s.kind is Kind.REDUCED],
        n_tensor_values=rows["tensor"], n_channel_values=rows["channel"], n_scalar_states=len(device_scalars),
        stored_literal=literal(tuple(ident(s) for s in costs[-1].stored)),
        host_fn=emit_per_tensor_function(hoisted, host_fn_name(fn), track_stores=True), host_fn_name=host_fn_name(fn),
        scalar_writeback=[(n, len(k.cols) + i) for i, n in enumerate(scalar_states(p))],
        hyper_names=[ident(h.name) for h in p.hypers] + [ident(f.name) for f in p.flags],
        stream_active=[(ident(s.name), stream_condition(k, s.cond)) for s in k.tensor_states if s.name in all_read],
        table_columns=literal(tuple(k.col_index[c.name] for c in k.table_cols)),
        group_sources=list(k.group_columns.values()), flag_sources=list(k.constexprs.values()),
        empty_streams=[(ident(n), len(k.cols) + len(scalar_states(p)) + j) for j, n in enumerate(first_stored(hoisted))],
    )
    return launcher, kernel


def host_fn_name(fn: str) -> str:
    return f"_{fn}_host_values"
