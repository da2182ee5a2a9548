"""IR -> the fused Triton module of a spec with reductions: one kernel per phase (optdsl.plan).

Every reduction scope is a barrier for the fused path. Phase k < last runs the store-free slice
of the update its reductions need and writes, per program and per reduction, a partial result
(`map`, then a fixed-order fold over the masked block) to `partials`; the host side then runs
one `kernel_runtime.combine` over every bucket of the group, which turns the partials into
per-tensor, per-channel and per-group values (`finish`) in two device tables that later phases
read (`reduced`: one row per tensor/group-scope reduction, one column per tensor;
`_reduced_channel`: one row per channel-scope reduction, one column per channel). The last
phase runs the whole update and stores.

Values of kind `reduced` (a reduction and math on it) and `channel` are scalars in a program:
a program belongs to one tensor, and, where the spec has a channel reduction, to one channel
(kernel_runtime.Work), so reading them in elementwise math broadcasts against the block, and an
`if` on a `reduced` condition is a Triton `if` on that scalar.

Device scalar states (a scalar state stored from a reduction, a 0-d float32 tensor) are loaded
by every phase through a pointer table; the last phase writes their new values to
`_scalar_out` from each tensor's first program only (no read/write race between programs),
and the launcher copies them into the state tensors after the last launch."""
from __future__ import annotations

from ..builtins import REDUCTIONS
from ..ir import Kind, Op, Program, walk_stmts, walk_values, stmt_values
from ..names import has_name, ident, literal, module_name, part_name, ptrs_name
from ..plan import Plan
from ..plan.cost import PhaseCost, describe_reduction, optional_streams, phase_bytes, phase_costs
from .common import Writer
from .pymodule import environment
from .triton import (KernelEmitter, block_constexprs, dispatch, launcher_context, load_line, store_line,
                     stream_condition, stream_names)


def _scalar_reads(stmts, names: set[str]) -> set[str]:
    return {str(n.arg) for s in walk_stmts(stmts) for v in stmt_values(s) for n in walk_values(v)
            if n.op is Op.STATE and n.arg in names}


def emit_phased_module(p: Program, fused: Plan, source_name: str, spec_hash: str) -> str:
    hoisted, plan = fused.program, fused.phases
    costs = phase_costs(fused)   # the streams each phase moves: the one source (optdsl.plan.cost)
    k = KernelEmitter(hoisted)
    fn = module_name(p.name)
    streams = ["param", "grad"] + [s.name for s in k.tensor_states]
    device_scalars = [s for s in hoisted.states if s.kind is Kind.REDUCED]
    scalar_names = {s.name for s in device_scalars}
    channels = any(v.arg == "channel" for v in plan.reductions.values())

    # where each reduction's combined value lives: a row of the per-tensor or the per-channel table
    n_rows = {"tensor": 0, "channel": 0}
    for name, v in plan.reductions.items():
        table = "channel" if v.arg == "channel" else "tensor"
        k.slots[name] = (table, n_rows[table])
        n_rows[table] += 1

    kernels = []
    for phase, cost in zip(plan.phases, costs):
        k.phase = phase
        k.sink_rows = {name: j for j, name in enumerate(phase.sinks)}
        w = Writer(1)
        for name in phase.sinks:   # identity first: a sink under an `if` not taken adds nothing
            w.line(f"{part_name(name)} = tl.full((), 0.0, tl.float32)")
        k.body(phase.body, w)
        kernels.append(dict(phase=phase, body=w.text() or "    pass", read=set(cost.read), stored=list(cost.stored),
                            scalars=sorted(_scalar_reads(phase.body, scalar_names)
                                           | (scalar_names if phase.final else set()),
                                           key=[s.name for s in device_scalars].index)))

    def stream_lines(kern) -> tuple[str, str]:
        loads, stores = Writer(1), Writer(1)
        for s in streams:
            if s not in kern["read"] and s not in kern["stored"]:
                continue
            state = next((st for st in k.tensor_states if st.name == s), None)
            _guarded(loads, k, state, load_line(s))
        for s in device_scalars:
            if s.name in kern["scalars"]:
                _guarded(loads, k, s, f"{ident(s.name)} = load_scalar({ptrs_name(s.name)}, _t)")
        for s in kern["stored"]:
            state = next((st for st in k.tensor_states if st.name == s), None)
            _guarded(stores, k, state, store_line(s, streams.index(s)))
        if kern["phase"].final:
            for j, s in enumerate(device_scalars):   # each tensor's first program writes the new value
                _guarded(stores, k, s, f"tl.store(_scalar_out + {j} * _n_tensors + _t, {ident(s.name)}, mask=_start == 0)")
        for j, name in enumerate(kern["phase"].sinks):
            stores.line(f"tl.store(partials + {j} * (tl.num_programs(0) + 1) + _pid, {part_name(name)})")
        return loads.text(), stores.text()

    rendered = []
    for j, kern in enumerate(kernels):
        loads, stores = stream_lines(kern)
        phase = kern["phase"]
        name = f"_{fn}_kernel" if phase.final else f"_{fn}_phase{j}_kernel"
        sinks = ", ".join(f"{describe_reduction(plan.reductions[s])}" for s in phase.sinks)
        what = "the update: reads every reduction, stores" if phase.final else f"partials of {sinks}"
        rendered.append(dict(name=name, block=name.replace("_kernel", "_block"), what=what, loads=loads, body=kern["body"], stores=stores,
                             sinks=[(row, k.slots[s][1], plan.reductions[s].arg, REDUCTIONS[plan.reductions[s].op].fold,
                                     f"_finish_{plan.reductions[s].op.name.lower()}")
                                    for row, s in enumerate(phase.sinks)]))

    column_loads = k.column_loads()
    for s in device_scalars:
        if s.cond is not None:
            k.constexprs.setdefault(has_name(s.name), f"{literal(ident(s.name))} in _scalars")
    constexprs = block_constexprs(k, streams)
    params = [ptrs_name(s) for s in streams] + [ptrs_name(s.name) for s in device_scalars] + [
        "table", "rounding_seeds", "reduced", "_reduced_channel", "_n_tensors", "_n_channels", "partials", "_scalar_out",
        "_pid", "_t", "_start", "_ch", "_offs", "_mask"]
    for kern in rendered:
        kern["dispatch"] = dispatch(kern["block"], params, constexprs, channels)

    finishes = []
    for op in sorted({v.op for v in plan.reductions.values()}, key=lambda o: o.name):
        finishes.append((op.name.lower(), REDUCTIONS[op].finish.format(r="r", n="n")))

    all_stored = kernels[-1]["stored"]
    all_read = set().union(*(kern["read"] for kern in kernels))
    scalar_active = [(ident(s.name), stream_condition(k, s.cond)) for s in device_scalars]
    return environment().get_template("triton.py.jinja").render(
        **launcher_context(k, p, hoisted, fn, all_read | set(all_stored)),
        phased=True, source_name=source_name, spec_hash=spec_hash,
        traffic=describe_phase_traffic(costs, optional_streams(hoisted)), n_phases=len(kernels),
        kernels=rendered, channels=channels, channels_literal=literal(channels),
        streams_literal=literal(tuple(ident(s) for s in streams)), stored_literal=literal(tuple(ident(s) for s in all_stored)),
        streams=stream_names(streams), scalar_streams=stream_names(s.name for s in device_scalars),
        scalar_streams_literal=literal(tuple(ident(s.name) for s in device_scalars)),
        block_params=params, block_constexprs=constexprs, column_loads=column_loads, scalar_active=scalar_active,
        finishes=finishes,
        n_tensor_values=n_rows["tensor"], n_channel_values=n_rows["channel"], n_scalar_states=len(device_scalars),
    )


def _guarded(w: Writer, k: KernelEmitter, state, line: str) -> None:
    if state is not None and state.cond is not None:
        has = has_name(state.name)
        if state.kind is Kind.TENSOR:
            k.constexprs[has] = f"{literal(ident(state.name))} in streams"
        w.line(f"if {has}:")
        with w.indent():
            w.line(line)
    else:
        w.line(line)


def describe_phase_traffic(costs: list[PhaseCost], optional: frozenset[str]) -> str:
    """fp32 bytes per element each phase moves, and the total. Phases before the last recompute
    what they need from their streams and write none (their partials and the combined tables are
    a few bytes per program / per tensor, not per element)."""
    parts, total, total_full = [], 0, 0
    for cost in costs:
        moved = phase_bytes(cost, optional)
        loaded = [s for s in cost.read if s not in optional]
        stored = [s for s in cost.stored if s not in optional]
        text = f"{cost.label}: {moved.total} B (reads {', '.join(loaded) or 'nothing'}; writes {', '.join(stored) or 'none'})"
        if moved.total_full != moved.total:
            text += f", {moved.total_full} B with every optional state ({', '.join(s for s in cost.read if s in optional)})"
        parts.append(text)
        total += moved.total
        total_full += moved.total_full
    summary = f"total {total} B" + (f" ({total_full} B with every optional state)" if total_full != total else "")
    return ";\n".join(parts) + f";\n{summary}"
