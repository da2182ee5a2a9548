"""What one step of the fused path costs, per phase, computed from the plan: the one source of the
"bytes moved per element" in every kernel module's docstring and of `optdsl show`'s cost report.

Streams: a phase reads every stream its device statements read and every stream it stores (a
store is a read-modify-write of the block), and writes what it stores; only the last phase
stores. A state kept only where its (host) condition holds (`state m = zeros if amsgrad`) is an
*optional* stream: the figures are given without and with every optional stream.

FLOPs per element (`FLOPS` below): every elementwise operation on a per-element value counts 1
(`+ - * /`, `sqrt`, `exp`, `log`, `^`, `min`, `max`, `abs`, `sign`, a comparison, a select);
`sigmoid`, `tanh`, `softplus`, `log1p`, `expm1`, `cbrt` and `floor` 1 each, as `exp`;
`rsqrt` 2 (a square root and a division, as the kernel computes it), `clamp` 2, `lerp` 3
(a + w * (b - a)), `mod` 3 (a - b * floor(a / b)); logic on booleans, copies and leaves 0. A reduction a phase computes counts
its map and fold per element (`sum`/`mean` 1, `norm`/`rms`/`amax`/`dot` 2); one it reads from a
combined table counts 0. Host math (hypers, step, reductions' values: once per group, tensor or
channel) is not per element and counts 0. Each node of the value DAG counts once per phase (the
IR is hash-consed: a repeated sub-expression is computed once), and of the two sides of an `if`
the costlier one counts: an upper bound where flags are left open (fix them with
`specialize_flags` to count one configuration)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..ir import (REDUCE, If, Kind, Let, Op, Program, Stmt, Store, Value, const, rebuild, stmt_values, walk_stmts,
                  walk_values)
from ..passes import fold_value, specialize
from . import Plan
from .table import is_device_stmt

FLOPS: dict[Op, int] = {
    **{op: 0 for op in (Op.CONST, Op.HYPER, Op.FLAG, Op.STEP, Op.PARAM, Op.GRAD, Op.STATE, Op.VAR, Op.IS_EMPTY,
                        Op.IS_SET, Op.CHOICE, Op.NUMEL, Op.NDIM, Op.CHANNEL_NUMEL, Op.SIZE, Op.DTYPE_EPS, Op.COPY, Op.ON_DEVICE,
                        Op.ITEM,
                        Op.AND, Op.OR, Op.NOT)},
    **{op: 1 for op in (Op.NEG, Op.SQRT, Op.ABS, Op.SIGN, Op.EXP, Op.LOG, Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW,
                        Op.MIN, Op.MAX, Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE, Op.WHERE)},
    **{op: 1 for op in (Op.SIGMOID, Op.TANH, Op.SOFTPLUS, Op.LOG1P, Op.EXPM1, Op.CBRT, Op.FLOOR)},
    Op.RSQRT: 2, Op.CLAMP: 2, Op.LERP: 3, Op.MOD: 3,
    Op.SUM: 1, Op.MEAN: 1, Op.NORM: 2, Op.RMS: 2, Op.AMAX: 2, Op.DOT: 2,
    # matmuls: their FLOPs per element grow with the matrix's size (a few times its short side per
    # iteration); the per-element count here is the elementwise part's only, which is all a fused phase runs
    Op.NEWTON_SCHULZ: 0,
    Op.COVER_MIN: 1,   # one min per accumulator after the first: about one per element
}
assert set(FLOPS) == set(Op), "every Op has a FLOP count"

# bytes per element of a stream's dtype
ITEMSIZE = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "fp64": 8, "float64": 8}


@dataclass(frozen=True)
class PhaseCost:
    index: int
    final: bool
    computes: tuple[str, ...]    # the reductions whose partials it computes ("norm per group"); () for the last
    read: tuple[str, ...]        # streams loaded, in stream order (optional ones included)
    stored: tuple[str, ...]      # streams written
    flops: int                   # per element

    @property
    def label(self) -> str:
        return "last phase" if self.final else f"phase {self.index}"


@dataclass(frozen=True)
class Bytes:
    """Bytes per element: without optional streams (`base`) and with every one (`full`)."""
    read: int
    written: int
    read_full: int
    written_full: int

    @property
    def total(self) -> int:
        return self.read + self.written

    @property
    def total_full(self) -> int:
        return self.read_full + self.written_full


def device_reads(p: Program, stmts: tuple[Stmt, ...] | None = None) -> set[str]:
    """Streams (param, grad, states) the device statements of `stmts` (default: the whole update) read."""
    out: set[str] = set()
    for s in walk_stmts(p.body if stmts is None else stmts):
        if not is_device_stmt(s, p):
            continue
        for v in stmt_values(s):
            for n in walk_values(v):
                if n.op is Op.PARAM:
                    out.add("param")
                elif n.op is Op.GRAD:
                    out.add("grad")
                elif n.op is Op.STATE:
                    out.add(str(n.arg))
    return out


def device_stores(p: Program) -> list[str]:
    """Targets the device statements store, in first-store order (device scalar states included)."""
    out: list[str] = []
    for s in walk_stmts(p.body):
        if isinstance(s, Store) and is_device_stmt(s, p) and s.target not in out:
            out.append(s.target)
    return out


def optional_streams(p: Program) -> frozenset[str]:
    return frozenset(s.name for s in p.states if s.kind is Kind.TENSOR and s.cond is not None)


def describe_reduction(v: Value) -> str:
    scope = "" if v.arg == "tensor" else f" per {v.arg}"
    return f"{v.op.name.lower()}{scope}"


def phase_costs(plan: Plan) -> list[PhaseCost]:
    """Per phase of a fused plan: what it computes, the streams it moves, its FLOPs per element."""
    assert plan.backend == "fused", plan.backend
    p = plan.program
    streams = plan.streams
    device_scalars = {s.name for s in p.states if s.kind is Kind.REDUCED}
    stored_all = [t for t in device_stores(p) if t not in device_scalars]
    out = []
    for phase in plan.phases.phases:
        read = device_reads(p, phase.body) & set(streams)
        stored = stored_all if phase.final else []
        out.append(PhaseCost(
            phase.index, phase.final,
            tuple(describe_reduction(plan.phases.reductions[n]) for n in phase.sinks),
            tuple(s for s in streams if s in read or s in stored),
            tuple(stored),
            _flops(phase.body, p, set(phase.sinks), set()),
        ))
    return out


def phase_bytes(cost: PhaseCost, optional: frozenset[str], itemsize: dict[str, int] | int = 4) -> Bytes:
    """Bytes per element a phase moves; `itemsize`: one for every stream, or per stream."""
    def size(s: str) -> int:
        return itemsize if isinstance(itemsize, int) else itemsize[s]
    read = sum(size(s) for s in cost.read if s not in optional)
    written = sum(size(s) for s in cost.stored if s not in optional)
    return Bytes(read, written, sum(size(s) for s in cost.read), sum(size(s) for s in cost.stored))


def _flops(stmts: tuple[Stmt, ...], p: Program, sinks: set[str], seen: set[Value]) -> int:
    total = 0
    for s in stmts:
        if not is_device_stmt(s, p):
            continue
        if isinstance(s, If):
            total += _value_flops(s.cond, sinks, seen)
            then_seen, other_seen = set(seen), set(seen)
            total += max(_flops(s.then, p, sinks, then_seen), _flops(s.other, p, sinks, other_seen))
            seen |= then_seen | other_seen
        elif isinstance(s, Let) and s.value.op in REDUCE and s.name not in sinks:
            continue    # a barrier reduction another phase computed: read from a table
        else:
            total += _value_flops(s.value, sinks, seen)
    return total


def _value_flops(v: Value, sinks: set[str], seen: set[Value]) -> int:
    total = 0
    for n in walk_values(v):
        if n in seen:
            continue
        seen.add(n)
        # elementwise work, and the per-element map and fold of a reduction computed here
        if n.kind is Kind.TENSOR or (n.op in REDUCE and any(a.kind is Kind.TENSOR for a in n.args)):
            total += FLOPS[n.op]
    return total


def specialize_flags(p: Program, flags: dict[str, bool]) -> Program:
    """`p` with the given flags fixed: their dead branches folded away, a state whose condition is
    then false dropped, one whose condition is then true made unconditional."""
    values = {(Op.FLAG, name): value for name, value in flags.items()}

    def fixed(n: Value) -> Value:
        return const(values[(n.op, n.arg)]) if not n.args and (n.op, n.arg) in values else n
    states = []
    for s in p.states:
        c = None if s.cond is None else fold_value(rebuild(s.cond, fixed))
        if c is not None and c.op is Op.CONST:
            if not c.arg:
                continue
            c = None
        states.append(replace(s, cond=c))
    return replace(specialize(p, values), states=tuple(states))
