"""IR -> the fused Triton kernel module (templates/triton.py.jinja).

All host math is hoisted (passes.hoist_host) into a per-tensor host function;
the kernel sees group-level booleans as constexprs (so a flag's dead branch is
never compiled) and every host number in a small fp32 table in device memory:
the group-level ones (hypers, `1 - betas[0]`) first, then one row of per-tensor
values (bias corrections) per tensor. Reading numbers from memory rather than from scalar
arguments is what makes `capturable=True` work: the table is built on the
device from device tensors (step, a Tensor lr), with no .item(), so the launch
can be captured in a CUDA graph."""
from __future__ import annotations

import re

from ..builtins import OPS
from ..ir import REDUCE, Kind, Let, Op, Program, Stmt, Store, Type, Value, stmt_values, walk_stmts, walk_values
from ..names import dtype_name, entry_name, has_name, ident, literal, module_name, new_name, part_name, ptrs_name, set_name, choice_name
from ..plan import make_plan
from ..plan.cost import PhaseCost, optional_streams, phase_bytes, phase_costs
from .common import BlockSyntax, Writer, device_body, float_literal
from .host import columns, emit_per_tensor_function, first_stored, host_expr, is_device_stmt, scalar_states
from .pymodule import environment


class KernelEmitter:
    def __init__(self, p: Program):
        self.p = p
        self.cols = columns(p, per_tensor_branches=True)
        self.col_index = {c.name: j for j, c in enumerate(self.cols)}
        self.table_cols = [c for c in self.cols if c.kind is Kind.TENSOR_SCALAR]
        self.group_columns: dict[str, str] = {}   # kernel local read from the table -> launcher source (one value per group)
        self.constexprs: dict[str, str] = {}      # kernel constexpr -> launcher source
        self.tensor_states = [s for s in p.states if s.kind is Kind.TENSOR]
        # phased specs (optdsl.emit.triton_phases): the phase being emitted, and where each barrier
        # reduction's combined value lives ("tensor" or "channel" table, row) or its partial goes (row)
        self.phase = None
        self.slots: dict[str, tuple[str, int]] = {}
        self.sink_rows: dict[str, int] = {}

    # ---- leaves ----------------------------------------------------------------
    def leaf(self, v: Value) -> str:
        if v.op is Op.CONST:
            if isinstance(v.arg, bool):
                return "True" if v.arg else "False"
            x = float(v.arg)
            if x != 0 and not (2.0 ** -126 <= abs(x) <= 3.4028234663852886e38):
                # Triton makes a number outside fp32's normal range fp64, which then spreads
                return f"tl.full((), {float_literal(x)}, tl.float32)"
            return float_literal(x)
        if v.op is Op.PARAM:
            return "param"
        if v.op is Op.GRAD:
            return "grad"
        if v.op is Op.STATE:
            return ident(str(v.arg))
        if v.op is Op.HYPER:
            name, index = v.arg  # type: ignore[misc]
            arg = ident(name) if index is None else entry_name(name, index)
            self.group_columns[arg] = ident(name) if index is None else f"{ident(name)}[{int(index)}]"
            return arg
        if v.op is Op.FLAG:
            name = ident(str(v.arg)).upper()
            self.constexprs[name] = f"bool({ident(str(v.arg))})"
            return name
        if v.op is Op.IS_SET:   # an optional hyper given (not None): a constexpr, as a flag
            name = set_name(str(v.arg))
            self.constexprs[name] = f"({ident(str(v.arg))} is not None)"
            return name
        if v.op is Op.CHOICE:   # a choice hyper holding a value: a constexpr, as a flag
            name = choice_name(*v.arg)
            self.constexprs[name] = f"({ident(v.arg[0])} == {literal(v.arg[1])})"
            return name
        if v.op is Op.VAR:
            name = str(v.arg)
            if name in self.col_index:
                col = self.cols[self.col_index[name]]
                if col.kind is Kind.HOST:
                    if col.type is Type.BOOL:
                        const = ident(name).upper()
                        self.constexprs[const] = f"bool(head[{self.col_index[name]}])"
                        return const
                    self.group_columns[ident(name)] = f"head[{self.col_index[name]}]"
                return ident(name)
            return ident(name)
        raise AssertionError(f"{v.op.name} cannot appear in a kernel")

    def expr(self, v: Value) -> str:
        if v.op is Op.WHERE and v.args[0].kind is Kind.HOST:
            # a constexpr condition: only the taken side is compiled; a per-tensor boolean side of a
            # per-element select is broadcast, as the taken one may meet a block in `&` or `|`
            then, other = (self.broadcast_bool(a, self.expr(a)) if v.kind is Kind.TENSOR else self.expr(a)
                           for a in v.args[1:])
            return f"({then} if {self.expr(v.args[0])} else {other})"
        if v.op is Op.WHERE and v.type is Type.BOOL:
            # a select between booleans as logic: the Triton interpreter's tl.where on booleans
            # gives values `&` and `|` then reject
            c, a, b = self.logic_operands(v)
            return f"(({c} & {a}) | (({c} == 0) & {b}))"
        if v.op in (Op.AND, Op.OR):
            a, b = self.logic_operands(v)
            return f"({a} {'&' if v.op is Op.AND else '|'} {b})"
        if v.op is Op.POW and v.args[1].op is Op.CONST and v.args[1].arg == 2.0:
            x = self.expr(v.args[0])
            return f"({x} * {x})"
        if not v.args:
            return self.leaf(v)
        from ..builtins import OPS
        return OPS[v.op].triton.format(*(self.expr(a) for a in v.args))

    def stored(self, target: str, v: Value) -> str:
        """The value a store gives: into an elementwise stream (param, a tensor state) a block, also
        where it is a number or a per-tensor value (`s = 0.5`), as later math on the stream may
        meet a block in `&`/`|`, which the Triton interpreter refuses beside a 0-d value."""
        src = self.expr(v)
        return f"_as_block({src}, _offs)" if fills_a_stream(self.p, target, v) else src

    def logic_operands(self, v: Value) -> list[str]:
        """Operands of a boolean op; a per-tensor boolean (a 0-d tensor) beside a per-element one is
        broadcast by integer arithmetic first: the Triton interpreter rejects `block & scalar`."""
        block = any(a.kind is Kind.TENSOR for a in v.args)
        return [self.broadcast_bool(a, self.expr(a)) if block else self.expr(a) for a in v.args]

    def broadcast_bool(self, a: Value, src: str) -> str:
        """`src` (the source of `a`) as a block where `a` is a per-tensor boolean (a 0-d tensor)."""
        per_tensor = a.kind in (Kind.TENSOR_SCALAR, Kind.REDUCED, Kind.CHANNEL) or (
            a.op is Op.VAR and a.arg in self.col_index and self.cols[self.col_index[a.arg]].kind is Kind.TENSOR_SCALAR)
        return f"((_offs * 0 + ({src}).to(tl.int32)) != 0)" if per_tensor and a.type is Type.BOOL else src

    # ---- statements --------------------------------------------------------------
    SYNTAX = BlockSyntax(assign="{name} = {value}", open_if="if {cond}:", else_line="else:", close_if=None,
                         empty="pass")

    def body(self, stmts: tuple[Stmt, ...], w: Writer) -> bool:
        return device_body(self, stmts, w, self.SYNTAX)

    def is_device(self, s: Stmt) -> bool:
        return is_device_stmt(s, self.p)

    def name(self, name: str) -> str:
        return ident(name)

    def reduction(self, s: Let) -> str:
        """A reduction Let in a phase kernel: this program's partial (a sink of the phase: map, then
        fold over the masked block), or the combined value read from the device table (ready)."""
        from ..builtins import REDUCTIONS
        assert self.phase is not None, "a reduction outside a phased kernel"
        name = ident(s.name)
        role = self.phase.role(s.name)
        if role == "sink":
            form = REDUCTIONS[s.value.op]
            contribution = form.map.format(*(self.expr(a) for a in s.value.args))
            if max(a.kind for a in s.value.args) is Kind.CONST:   # a literal is a Python number here: folds need a tensor
                contribution = f"tl.full((), {contribution}, tl.float32)"
            return f"{part_name(s.name)} = fold_{form.fold}({contribution}, _mask, _offs)"
        assert role == "ready", (s.name, role)
        table, row = self.slots[s.name]
        if table == "channel":
            return f"{name} = tl.load(_reduced_channel + {row} * _n_channels + _ch)"
        return f"{name} = tl.load(reduced + {row} * _n_tensors + _t)"

    def column_loads(self) -> list[str]:
        """The kernel's reads of the host-value table: the group's values first (one each), then one
        row of N_COLUMNS per tensor."""
        out = []
        n_group = len(self.group_columns)
        for j, name in enumerate(self.group_columns):
            out.append(f"{name} = tl.load(table + {j})")
        for j, c in enumerate(self.table_cols):
            load = f"tl.load(table + {f'{n_group} + ' if n_group else ''}_row * N_COLUMNS + {j})"
            out.append(f"{ident(c.name)} = {load} != 0" if c.type is Type.BOOL else f"{ident(c.name)} = {load}")
        return out



# the helpers every kernel module imports (templates/triton.py.jinja); others are imported where used
BASE_HELPERS = frozenset({"load_stream", "store_stream", "_sign", "_maximum", "_minimum", "_lerp", "_pow"})


def extra_helpers(p: Program) -> list[str]:
    """optdsl.triton_lib helpers the kernels call beyond BASE_HELPERS (the Triton column of OPS)."""
    names: set[str] = set()
    for s in walk_stmts(p.body):
        for v in stmt_values(s):
            for n in walk_values(v):
                if n.op in OPS:
                    names.update(re.findall(r"\b(_[a-z][a-z0-9_]*)\(", OPS[n.op].triton))
        if isinstance(s, Store) and fills_a_stream(p, s.target, s.value):
            names.add("_as_block")   # KernelEmitter.stored
    return sorted(names - BASE_HELPERS)


def fills_a_stream(p: Program, target: str, v: Value) -> bool:
    """A store of a number or a per-tensor value into an elementwise stream (param, a tensor state)."""
    return v.kind is not Kind.TENSOR and (target == "param" or p.state(target).kind is Kind.TENSOR)


def stream_condition(emitter: KernelEmitter, cond: Value | None) -> str:
    return "True" if cond is None else host_expr(cond)


def emit_triton_module(p: Program, source_name: str, spec_hash: str) -> str:
    plan = make_plan(p, "fused")
    hoisted = plan.program
    # a scalar state on the device (stored from a reduction, even one folded away) is the phased
    # skeleton's: it loads and writes such states
    if any(isinstance(s, Let) and s.value.op in REDUCE for s in walk_stmts(hoisted.body)) \
            or any(s.kind is Kind.REDUCED for s in hoisted.states):
        from .triton_phases import emit_phased_module
        return emit_phased_module(p, plan, source_name, spec_hash)
    k = KernelEmitter(hoisted)
    fn = module_name(p.name)
    streams = ["param", "grad"] + [s.name for s in k.tensor_states]

    body = Writer(1)
    k.body(hoisted.body, body)
    (cost,) = phase_costs(plan)   # the streams each phase moves: the one source (optdsl.plan.cost)
    stored, read = list(cost.stored), set(cost.read)

    loads = Writer(1)
    for s in streams:
        if s not in read and s not in stored:
            continue
        state = next((st for st in k.tensor_states if st.name == s), None)
        line = load_line(s)
        if state is not None and state.cond is not None:
            has = has_name(s)
            k.constexprs[has] = f"{literal(ident(s))} in streams"
            loads.line(f"if {has}:")
            with loads.indent():
                loads.line(line)
        else:
            loads.line(line)

    stores = Writer(1)
    for s in stored:
        line = store_line(s, streams.index(s))
        state = next((st for st in k.tensor_states if st.name == s), None)
        if state is not None and state.cond is not None:
            stores.line(f"if {has_name(s)}:")
            with stores.indent():
                stores.line(line)
        else:
            stores.line(line)

    column_loads = k.column_loads()
    constexprs = block_constexprs(k, streams)
    params = [ptrs_name(s) for s in streams] + ["table", "rounding_seeds", "_t", "_offs", "_mask"]

    bytes_per_element = describe_traffic(cost, optional_streams(hoisted))

    return environment().get_template("triton.py.jinja").render(
        **launcher_context(k, p, hoisted, fn, read | set(stored)),
        phased=False, source_name=source_name, spec_hash=spec_hash,
        bytes_per_element=bytes_per_element, kernel_name=f"_{fn}_kernel", block_name=f"_{fn}_block",
        block_params=params, block_constexprs=constexprs, dispatch=dispatch(f"_{fn}_block", params, constexprs),
        streams_literal=literal(tuple(ident(s) for s in streams)), stored_literal=literal(tuple(ident(s) for s in stored)),
        streams=stream_names(streams), constexprs=list(k.constexprs),
        column_loads=column_loads, loads=loads.text(), body=body.text() or "    pass", stores=stores.text(),
    )


def launcher_context(k: KernelEmitter, p: Program, hoisted: Program, fn: str, streamed: set[str]) -> dict:
    """What the launcher part of triton.py.jinja reads, alike for an elementwise and a phased
    kernel: the per-tensor host function, the value table's columns, the streams a launch passes
    (`streamed`: the states a kernel reads or stores) and the scalar states written back."""
    host_fn_name = f"_{fn}_host_values"
    return dict(
        extra_helpers=extra_helpers(p), class_name=ident(p.name),
        host_fn=emit_per_tensor_function(hoisted, host_fn_name, track_stores=True), host_fn_name=host_fn_name,
        scalar_writeback=[(ident(n), len(k.cols) + i) for i, n in enumerate(scalar_states(p))],
        hyper_names=[ident(n) for n in p.group_value_names],
        stream_active=[(ident(s.name), stream_condition(k, s.cond)) for s in k.tensor_states if s.name in streamed],
        table_columns=literal(tuple(k.col_index[c.name] for c in k.table_cols)),
        group_sources=list(k.group_columns.values()), constexpr_sources=list(k.constexprs.items()),
        n_columns=max(1, len(k.table_cols)),
        # (state, column saying whether a store to it was reached): the kernel needs memory for an
        # `empty` state from the start, which stays empty (None) where no store was reached
        empty_streams=[({"key": ident(n), "new": new_name(n)}, len(k.cols) + len(scalar_states(p)) + j)
                       for j, n in enumerate(first_stored(hoisted))],
    )


def block_constexprs(k: KernelEmitter, streams: list[str]) -> list[str]:
    """The constexprs a kernel and its block function take: the group's flags, each stream's dtype,
    the table's row width, _ONE_ROW (one row for every tensor) and _ALIGNED (16-byte starts)."""
    return list(k.constexprs) + [dtype_name(s) for s in streams] + ["N_COLUMNS", "_ONE_ROW", "_ALIGNED"]


def dispatch(block: str, params: list[str], constexprs: list[str], channels: bool = False) -> str:
    """The kernel's two calls of its block function: a full block without a mask, with the hints
    that let the compiler use 128-bit accesses (its offsets are contiguous and start at a multiple
    of BLOCK -- of 8 where programs are cut at channels, so that is tested), else the masked tail."""
    w = Writer(1)

    def call(offs: str, mask: str) -> None:
        args = [offs if a == "_offs" else mask if a == "_mask" else a for a in params] + constexprs
        lines, line = [], ""
        for a in args:
            if line and len(line) + len(a) + 2 > 92:
                lines.append(line + ",")
                line = ""
            line = f"{line}, {a}" if line else a
        w.line(f"{block}(")
        with w.indent():
            for text in lines + [line + ","]:
                w.line(text)
        w.line(")")

    if channels:
        w.line("if (_start + BLOCK <= _end) & (_start % 8 == 0):   # a full block, 8-aligned: no mask")
    else:
        w.line("if _start + BLOCK <= _end:   # a full block: contiguous from a multiple of BLOCK, no mask")
    with w.indent():
        call(f"tl.max_contiguous(tl.multiple_of(_offs, {8 if channels else 'BLOCK'}), BLOCK)", "None")
    w.line("else:   # the channel's last block (or one not 8-aligned), masked" if channels
           else "else:   # the tensor's last block, masked")
    with w.indent():
        call("_offs", "_offs < _end")
    return w.text()


def load_line(s: str) -> str:
    return f"{ident(s)} = load_stream({ptrs_name(s)}, _t, _offs, _mask, {dtype_name(s)}, _ALIGNED)"


def store_line(s: str, stream: int) -> str:
    # `stream` (its place in STREAMS) counts stochastic rounding's random bits apart from the other streams'
    return (f"store_stream({ptrs_name(s)}, _t, _offs, {ident(s)}, _mask, {dtype_name(s)}, _ALIGNED, "
            f"rounding_seeds, {stream})")


def stream_names(streams) -> list[dict]:
    """What the template spells for each stream: its key and local (ident), pointer table and dtype."""
    return [{"key": ident(s), "ptrs": ptrs_name(s), "dtype": dtype_name(s)} for s in streams]


def describe_traffic(cost: PhaseCost, optional: frozenset[str]) -> str:
    """fp32 bytes per element a launch moves, without and with the optional streams."""
    moved = phase_bytes(cost, optional)
    loaded = [s for s in cost.read if s not in optional]
    stored = [s for s in cost.stored if s not in optional]
    text = f"{moved.total} B (reads {', '.join(loaded) or 'nothing'}; writes {', '.join(stored) or 'none'})"
    extra = [s for s in cost.read if s in optional]
    if moved.total_full == moved.total:
        return text
    return text + f"; {moved.total_full} B with every optional state ({', '.join(extra)})"
