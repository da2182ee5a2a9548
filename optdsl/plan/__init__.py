"""Stage 5: the plan, between the passes and the emitters. For one backend it fixes

* the program as that backend runs it: host math named (passes.hoist_host) where the
  backend reads it from a table rather than inline;
* the phases (optdsl.plan.phases): where reductions are barriers for this backend;
* the per-tensor value table (optdsl.plan.table): the host values device code reads, and
  the inputs of the per-tensor host function that computes them;
* the streams a fused launch walks.

Every emitter renders a Plan and decides none of this itself."""
from __future__ import annotations

from dataclasses import dataclass

from ..ir import MATRIX_OPS, If, Kind, Let, Op, Program, stmt_values, walk_stmts, walk_values
from ..passes import hoist_host
from .phases import (ALL_SCOPES, GROUP_ONLY, NO_BARRIERS, Phase, PhasePlan, PlanError, is_barrier_let,  # noqa: F401
                     plan_phases, shadow)
from .table import (Column, columns, first_stored, is_device_stmt, per_tensor_inputs, scalar_states,  # noqa: F401
                    shape_inputs)

# backend -> (the lowest kind of host math it reads from the table instead of computing inline,
#             the reduction scopes that are barriers for it, whether its programs branch per tensor)
BACKENDS = {
    # host math inline, per tensor; a per-tensor or per-channel reduction is one torch call on the
    # tensor at hand, a group one needs every tensor first
    "loop": (None, GROUP_ONLY, False),
    # per-tensor host values as lists of numbers; each reduction is one call over the group
    "foreach": (Kind.TENSOR_SCALAR, NO_BARRIERS, False),
    # every host number from a table in device memory; every reduction ends a launch
    "fused": (Kind.HOST, ALL_SCOPES, True),
}


@dataclass(frozen=True)
class Plan:
    backend: str
    program: Program                 # the IR as this backend runs it
    phases: PhasePlan
    columns: tuple[Column, ...]      # host values device code reads, in table order
    inputs: tuple[str, ...]          # the per-tensor host function's arguments, beside hypers and flags
    shape_inputs: tuple[str, ...]    # numel / ndim / channel_numel, where host math reads them
    scalar_states: tuple[str, ...]   # host scalar states (the host function computes their new values)
    first_stored: tuple[str, ...]    # `empty` tensor states
    streams: tuple[str, ...]         # param, grad and the tensor states, in kernel argument order
    # an `if` on a reduction's value branches per tensor, and host math on a reduction read back
    # (item()) needs that tensor's reduction first: a list backend (foreach) then takes the tensors
    # one at a time, as the loop path. So does an update with a whole-matrix op: its matmuls are per
    # tensor anyway, and torch's foreach ops round a Python number to a bf16 list's dtype where the
    # loop's do not, so one at a time its foreach path is its loop path in every dtype
    tensor_at_a_time: bool = False
    at_a_time_reason: str = ""       # why, in a sentence (the generated foreach function says it)

    def column_index(self, name: str) -> int:
        return next(j for j, c in enumerate(self.columns) if c.name == name)


def _at_a_time(p: Program) -> str:
    """Why a list backend (foreach) takes `p`'s tensors one at a time, or ""."""
    if reads_whole_matrix(p):
        return "A whole-matrix op runs per tensor: the tensors are taken one at a time, rounded as the loop."
    if _reads_beyond_elements(p) == "cover":
        return "A cover keeps one accumulator per dim, as many as each tensor has: the tensors are taken one at a time."
    if reads_back(p):
        return "item() reads each tensor's reduction back to the host: the tensors are taken one at a time."
    if any(isinstance(s, If) and s.cond.kind.on_device for s in walk_stmts(p.body)):
        return "An `if` on a reduction's value branches per tensor: the tensors are taken one at a time."
    return ""


def reads_back(p: Program) -> bool:
    """Whether the update reads a reduction back to the host (item())."""
    return any(n.op is Op.ITEM for s in walk_stmts(p.body) for v in stmt_values(s) for n in walk_values(v))


def reads_whole_matrix(p: Program) -> bool:
    """Whether the update reads a value as one matrix (newton_schulz()), not element by element."""
    return any(n.op in MATRIX_OPS for s in walk_stmts(p.body) for v in stmt_values(s) for n in walk_values(v))


def _reads_beyond_elements(p: Program) -> str:
    """What of a param's layout the update reads beyond its elements: "cover" (a state kept per dim or
    a reduction over all dims but one), "rows" (states kept per row or column, reductions along an
    axis), "matrix" (a whole-matrix op), or ""."""
    kinds = {n.kind for s in walk_stmts(p.body) for v in stmt_values(s) for n in walk_values(v)}
    if any(s.shape == "cover" for s in p.states) or Kind.COVER in kinds:
        return "cover"
    if any(s.shape for s in p.states) or any(k.is_axis for k in kinds):
        return "rows"
    return "matrix" if reads_whole_matrix(p) else ""


def dtensor_refusal(p: Program) -> str:
    """Why a DTensor (FSDP2) shard cannot be stepped on its own, or "": what it would need of the rest."""
    return {"cover": "its reductions over all dims but one would cross shards",
            "rows": "its reductions along the last two dims would cross shards",
            "matrix": "newton_schulz() orthogonalizes each param's whole matrix, of which a shard holds a part",
            }.get(_reads_beyond_elements(p), "")


def complex_refusal(p: Program) -> str:
    """Why a complex param (stepped as its real view elsewhere) is refused, or ""."""
    return {"cover": "a complex param's real view has one more dim than the param, so another cover",
            "rows": "a complex param's real view has no rows to reduce",
            "matrix": "a complex param's real view is no matrix to orthogonalize"}.get(_reads_beyond_elements(p), "")


def fused_refusal(p: Program) -> str:
    """Why the fused backends (Triton, C++) do not run `p`, or "" where they do: what their one
    pass over a flat work list cannot hold yet."""
    values = [n for s in walk_stmts(p.body) for v in stmt_values(s) for n in walk_values(v)]
    if reads_whole_matrix(p):
        return ("its whole-matrix op (newton_schulz()) runs as torch matmuls between elementwise phases, which "
                "the fused kernels do not split around yet; use foreach=True or the default loop")
    if any(s.shape == "cover" for s in p.states) or any(n.kind is Kind.COVER for n in values):
        return ("its cover states (one accumulator per dim, a different number per tensor) are not in the "
                "fused kernels yet; use foreach=True or the default loop")
    if any(s.shape for s in p.states) or any(n.kind.is_axis for n in values):
        return ("its row or column values (reductions along an axis, states kept per row or column) are not "
                "in the fused kernels yet; use foreach=True or the default loop")
    if reads_back(p):
        return ("it reads a reduction back to the host (item()) in the middle of its update, which a fused "
                "launch cannot; use foreach=True or the default loop")
    if any(s.per_tensor_cond for s in p.states):
        return ("it keeps a state only on some tensors of a group (a state's `if` on the shape), which the "
                "fused kernels' streams cannot yet; use foreach=True or the default loop")
    return ""


def make_plan(p: Program, backend: str) -> Plan:
    """The plan of `p` (after passes.optimize) for `backend`: 'loop', 'foreach' or 'fused'."""
    hoist, barriers, per_tensor_branches = BACKENDS[backend]
    program = p if hoist is None else hoist_host(p, hoist)
    return Plan(
        backend=backend,
        program=program,
        phases=plan_phases(program, barriers),
        columns=tuple(columns(program, per_tensor_branches=per_tensor_branches)) if hoist is not None else (),
        inputs=tuple(per_tensor_inputs(program)),
        shape_inputs=tuple(shape_inputs(program)),
        scalar_states=tuple(scalar_states(program)),
        first_stored=tuple(first_stored(program)),
        streams=("param", "grad") + tuple(s.name for s in program.states if s.kind is Kind.TENSOR),
        tensor_at_a_time=bool(_at_a_time(program)) and backend == "foreach",
        at_a_time_reason=_at_a_time(program) if backend == "foreach" else "",
    )
