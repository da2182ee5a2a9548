"""What `optdsl show` and the generated docs report about a spec, as data: the kind of every
value, and the fused path's cost per phase (optdsl.plan.cost, the source the kernel docstrings'
bytes come from too)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..ir import Kind, Let, join, Op, Program, walk_stmts, walk_values, stmt_values
from ..plan import make_plan
from ..plan.cost import FLOPS, ITEMSIZE, Bytes, PhaseCost, optional_streams, phase_bytes, phase_costs, specialize_flags

# what each kind means, in the words the docs use (docs/language.md, "Inputs and kinds")
KIND_WORDS = {
    Kind.CONST: ("constant", "a literal: at build time"),
    Kind.HOST: ("host", "once per group, on the host (float64)"),
    Kind.TENSOR_SCALAR: ("per tensor", "once per tensor, on the host (float64)"),
    Kind.REDUCED: ("per tensor, on the device", "a reduction's value: once per tensor, a 0-d tensor"),
    Kind.CHANNEL: ("per channel", "a per-channel reduction's value: once per output channel, on the device"),
    Kind.MATRIX: ("per matrix", "reduced along both last dims: once per matrix, on the device"),
    Kind.ROW: ("per row", "reduced along the last dim: once per row, on the device"),
    Kind.COLUMN: ("per column", "reduced along the second-to-last dim: once per column, on the device"),
    Kind.COVER: ("per dim", "one accumulator per dim (a cover): per index of each dim, on the device"),
    Kind.TENSOR: ("elementwise", "per element: torch ops, foreach ops or the Triton kernel"),
}
assert set(KIND_WORDS) == set(Kind)

@dataclass(frozen=True)
class KindRow:
    name: str
    role: str          # input, hyper, flag, state, local
    kind: Kind


def kinds(p: Program) -> list[KindRow]:
    """Every name the update reads or binds, with its kind (a local bound more than once: the
    highest of its bindings), in the order inputs, hypers, flags, states, locals."""
    rows: list[KindRow] = []
    read = [n for s in walk_stmts(p.body) for v in stmt_values(s) for n in walk_values(v)]
    seen_inputs = []
    for n in read:
        if n.op in (Op.PARAM, Op.GRAD, Op.STEP, Op.NUMEL, Op.NDIM, Op.CHANNEL_NUMEL, Op.SIZE):
            name = f"size({n.arg})" if n.op is Op.SIZE else n.op.name.lower()
            if name not in seen_inputs:
                seen_inputs.append(name)
    order = ["param", "grad", "step", "numel", "ndim", "channel_numel"]
    for name in sorted(seen_inputs, key=lambda x: (order.index(x) if x in order else len(order), x)):
        kind = Kind.TENSOR if name in ("param", "grad") else Kind.TENSOR_SCALAR
        rows.append(KindRow(name, "input", kind))
    rows += [KindRow(h.name, "hyper" + (" (a choice)" if h.choices else " (optional)" if h.optional else ""), Kind.HOST)
             for h in p.hypers]
    rows += [KindRow(f.name, "flag", Kind.HOST) for f in p.flags]
    rows += [KindRow(s.name, "state" + (" (scalar)" if s.kind is not Kind.TENSOR else f" ({s.shape})" if s.shape else ""),
                     s.read_kind) for s in p.states]
    locals_: dict[str, Kind] = {}
    for s in walk_stmts(p.body):
        if isinstance(s, Let):
            locals_[s.name] = join(locals_.get(s.name, Kind.CONST), s.value.kind)
    rows += [KindRow(name, "local", kind) for name, kind in locals_.items()]
    return rows


@dataclass(frozen=True)
class CostReport:
    """The fused path's cost of one step, for one setting of the flags (those not fixed stay open:
    their states are optional streams, counted apart)."""
    name: str
    flags: dict[str, bool]
    dtype: str                        # the streams' dtypes, in words ("fp32", "param bf16, exp_avg fp32")
    itemsize: dict[str, int]
    phases: tuple[tuple[PhaseCost, Bytes], ...]
    optional: tuple[str, ...]         # streams kept only where a (still open) condition holds
    state_bytes: Bytes                # per parameter element: read = without optional states, read_full = with
    scalar_states: tuple[str, ...]    # one float32 per tensor each
    keeps_step: bool                  # a 0-d float32 step per tensor, as torch.optim keeps it
    by_flag: tuple[tuple[str, bool, int], ...]   # (flag, value, total bytes per element with it fixed)

    @property
    def total(self) -> int:
        return sum(b.total for _, b in self.phases)

    @property
    def total_full(self) -> int:
        return sum(b.total_full for _, b in self.phases)

    @property
    def flops(self) -> int:
        return sum(c.flops for c, _ in self.phases)

    @property
    def launches(self) -> int:
        """Kernel launches per step, per parameter group and (device, dtypes) bucket."""
        return len(self.phases)

    @property
    def combines(self) -> int:
        return len(self.phases) - 1


def itemsizes(p: Program, dtype: str | dict[str, str] = "fp32") -> dict[str, int]:
    """Bytes per element of each stream: one dtype for all, or {stream: dtype} (others fp32)."""
    streams = ["param", "grad"] + [s.name for s in p.states if s.kind is Kind.TENSOR]
    if isinstance(dtype, str):
        return {s: _itemsize(dtype) for s in streams}
    unknown = set(dtype) - set(streams)
    if unknown:
        raise ValueError(f"no stream {sorted(unknown)[0]!r}; streams: {', '.join(streams)}")
    return {s: _itemsize(dtype.get(s, "fp32")) for s in streams}


def _itemsize(dtype: str) -> int:
    if dtype not in ITEMSIZE:
        raise ValueError(f"unknown dtype {dtype!r}; one of {', '.join(sorted(ITEMSIZE))}")
    return ITEMSIZE[dtype]


def cost_report(p: Program, flags: dict[str, bool] | None = None, dtype: str | dict[str, str] = "fp32") -> CostReport:
    """`p` after passes.optimize; `flags` fixes some flags (the others stay open)."""
    flags = dict(flags or {})
    unknown = set(flags) - {f.name for f in p.flags}
    if unknown:
        raise ValueError(f"{p.name} has no flag {sorted(unknown)[0]!r}; flags: "
                         f"{', '.join(f.name for f in p.flags) or 'none'}")
    fixed = specialize_flags(p, flags) if flags else p
    every = itemsizes(p, dtype)   # streams named for the spec, whether or not these flags keep them
    sizes = {stream: every[stream] for stream in itemsizes(fixed)}
    plan = make_plan(fixed, "fused")
    optional = optional_streams(plan.program)
    phases = tuple((c, phase_bytes(c, optional, sizes)) for c in phase_costs(plan))
    tensor_states = [s.name for s in plan.program.states if s.kind is Kind.TENSOR]
    base = sum(sizes[s] for s in tensor_states if s not in optional)
    full = sum(sizes[s] for s in tensor_states)
    by_flag = []
    for f in p.flags:
        governs = any(s.kind is Kind.TENSOR and s.cond is not None and any(n.op is Op.FLAG and n.arg == f.name for n in walk_values(s.cond))
                      for s in plan.program.states)
        if f.name in flags or not governs:
            continue
        for value in (False, True):
            other = cost_report(p, {**flags, f.name: value}, dtype)
            by_flag.append((f.name, value, other.total))
    label = dtype if isinstance(dtype, str) else ", ".join(f"{s} {dtype.get(s, 'fp32')}" for s in sizes)
    return CostReport(
        p.name, flags, label, sizes, phases, tuple(s for s in plan.streams if s in optional), Bytes(base, 0, full, 0),
        tuple(s.name for s in plan.program.states if s.kind is not Kind.TENSOR), p.uses_step, tuple(by_flag))


def flops_convention() -> str:
    """One line per FLOP count (the docs page's footnote)."""
    groups: dict[int, list[str]] = {}
    for op, n in FLOPS.items():
        groups.setdefault(n, []).append(op.name.lower())
    return "; ".join(f"{n}: {', '.join(sorted(names))}" for n, names in sorted(groups.items()) if n)


# ---- plain-text and Markdown rendering of the cost report -----------------------------------------

def with_optional(base: int, full: int) -> str:
    return str(base) if base == full else f"{base} ({full})"


def cost_rows(report: CostReport) -> list[list[str]]:
    """Table rows: phase, computes, reads, writes, read/written/total B per element, FLOPs per element."""
    rows = []
    for cost, moved in report.phases:
        rows.append([cost.label, ", ".join(cost.computes) or "the update, stores",
                     ", ".join(cost.read) or "nothing", ", ".join(cost.stored) or "none",
                     with_optional(moved.read, moved.read_full), with_optional(moved.written, moved.written_full),
                     with_optional(moved.total, moved.total_full), str(cost.flops)])
    return rows


COST_HEADER = ["phase", "computes", "reads", "writes", "read B/el", "written B/el", "total B/el", "FLOPs/el"]


def cost_summary(report: CostReport) -> list[str]:
    """The report's bottom lines (the figures a reader looks for)."""
    out = []
    total = f"bytes moved per element: {report.total} B/element ({report.dtype} streams)"
    if report.total_full != report.total:
        total += f"; {report.total_full} B/element with every optional state ({', '.join(report.optional)})"
    out.append(total)
    for flag, value, n in report.by_flag:
        out.append(f"  with {flag}={'true' if value else 'false'}: {n} B/element")
    state = f"state per parameter element: {report.state_bytes.read} B"
    if report.state_bytes.read_full != report.state_bytes.read:
        state += f" ({report.state_bytes.read_full} B with every optional state)"
    per_tensor = [f"{len(report.scalar_states)} scalar state(s) ({', '.join(report.scalar_states)})"] \
        if report.scalar_states else []
    if report.keeps_step:
        per_tensor.append("the step")
    if per_tensor:
        state += "; per tensor, 4 B each for " + " and ".join(per_tensor)
    out.append(state)
    out.append(f"FLOPs per element: {report.flops} (all phases; the costlier side of each branch)")
    launch = f"kernel launches per step: {report.launches} per parameter group and (device, dtype) bucket"
    if report.combines:
        launch += f", with {report.combines} combine step(s) between them"
    out.append(launch)
    if report.flags:
        out.append("flags fixed: " + ", ".join(f"{k}={'true' if v else 'false'}" for k, v in report.flags.items()))
    return out


def cost_markdown(report: CostReport) -> str:
    lines = ["| " + " | ".join(COST_HEADER) + " |", "|" + "---|" * len(COST_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in cost_rows(report)]
    lines.append("")
    lines += [f"- {line.strip()}" for line in cost_summary(report)]
    return "\n".join(lines)


# ---- the eager paths' state, where the fused path is refused ---------------------------------------

# the shapes whose state the report states: a large matrix (factored state pays off there) and a vector
EXAMPLE_SHAPES = ((4096, 4096), (4096,))


def state_bytes(p: Program, shape: tuple[int, ...], itemsize: int = 4) -> dict[str, int]:
    """Bytes of each tensor state a param of `shape` keeps (the defaults' hypers and flags): a row or
    column state is the param's size over its reduced dim, a cover state the sum of its dims' sizes."""
    from ..axis_ops import stored_shapes
    from ..interp import Interpreter
    active = Interpreter(p, validate=False).active_states(tuple(shape))
    return {s.name: sum(math.prod(t) for t in stored_shapes(tuple(shape), s.shape)) * itemsize
            for s in p.states if s.kind is Kind.TENSOR and s.name in active}


def _size(n: int) -> str:
    for unit, scale in (("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


def state_lines(p: Program) -> list[str]:
    """The state a large matrix and a vector keep, against one full-shape fp32 state."""
    out = []
    for shape in EXAMPLE_SHAPES:
        per = state_bytes(p, shape)
        parts = ", ".join(f"{name} {_size(n)}" for name, n in per.items()) or "none"
        out.append(f"state of a {'×'.join(map(str, shape))} fp32 param: {_size(sum(per.values()))} ({parts}); "
                   f"one full-shape state is {_size(math.prod(shape) * 4)}")
    return out
