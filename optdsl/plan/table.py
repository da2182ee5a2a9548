"""The per-tensor value table: which host values the device code reads (the columns), and
the inputs of the per-tensor host function that computes them. Part of the plan (optdsl.plan):
the emitters render it, they do not derive it."""
from __future__ import annotations

from dataclasses import dataclass

from ..names import ident, is_empty_name
from ..ir import SHAPE_INPUTS, size_dim, If, Kind, shape_input_name, Let, Op, Program, Stmt, Store, Type, Value, stmt_values, walk_stmts, walk_values


@dataclass(frozen=True)
class Column:
    """A host value the device code reads: one per group (HOST) or per tensor (TENSOR_SCALAR)."""
    name: str
    kind: Kind
    type: Type


def is_device_stmt(s: Stmt, p: Program) -> bool:
    if isinstance(s, Let):
        return s.value.kind.on_device
    if isinstance(s, Store):
        return s.target == "param" or p.state(s.target).kind.on_device
    return True


def columns(p: Program, per_tensor_branches: bool = False) -> list[Column]:
    """Host VARs read by device statements (hoisted IR), in first-use order."""
    host_lets: dict[str, Value] = {}
    for s in walk_stmts(p.body):   # a name bound more than once: its highest kind
        if isinstance(s, Let) and s.value.kind.on_host and (
                s.name not in host_lets or s.value.kind > host_lets[s.name].kind):
            host_lets[s.name] = s.value
    # per_tensor_branches (the kernel, whose programs branch per tensor): a host value computed under a
    # per-tensor condition (`if is_empty(m)`, `if step > 5`) differs between tensors like a per-tensor
    # one, and is read per tensor too. (The foreach path takes such branches only where all tensors agree.)
    # -- and so is a host value computed from one of those (to a fixed point: names are rebound)
    per_tensor: set[str] = set()

    def reads(v: Value) -> bool:
        return v.kind >= Kind.TENSOR_SCALAR or any(n.op is Op.VAR and n.arg in per_tensor for n in walk_values(v))

    def under(stmts, inside: bool) -> bool:
        grew = False
        for s in stmts:
            if isinstance(s, Let) and s.name not in per_tensor and (inside or reads(s.value)):
                per_tensor.add(s.name)
                grew = True
            elif isinstance(s, If):
                deeper = inside or reads(s.cond)
                grew |= under(s.then, deeper)
                grew |= under(s.other, deeper)
        return grew
    while per_tensor_branches and under(p.body, False):
        pass
    out: dict[str, Column] = {}

    def visit(stmts):
        for s in stmts:
            if not is_device_stmt(s, p):
                continue
            if isinstance(s, If):
                if _has_device(s.then, p) or _has_device(s.other, p):
                    for n in walk_values(s.cond):   # a host condition reads host locals too
                        _add(n)
                visit(s.then)
                visit(s.other)
            else:
                for n in walk_values(s.value):
                    _add(n)

    def _add(n: Value):
        if n.op is Op.VAR and n.arg in host_lets and n.arg not in out:
            # math on numbers left unfolded (kind const) is a group-level host value like a hyper's
            floor = Kind.TENSOR_SCALAR if n.arg in per_tensor else Kind.HOST
            out[n.arg] = Column(str(n.arg), max(host_lets[n.arg].kind, floor), n.type)
    visit(p.body)
    return list(out.values())


def _has_device(stmts, p) -> bool:
    return any(is_device_stmt(s, p) and (not isinstance(s, If) or _has_device(s.then, p) or _has_device(s.other, p))
               for s in stmts)


def per_tensor_inputs(p: Program) -> list[str]:
    """Arguments of the per-tensor host function, beside the hypers and flags, as generated code spells them."""
    args = ["step"] if p.uses_step else []
    args += shape_inputs(p)
    args += [ident(s.name) for s in p.states if s.kind is Kind.TENSOR_SCALAR]
    args += [is_empty_name(s.name) for s in p.states if s.init == "empty"]
    return args


def shape_inputs(p: Program) -> list[str]:
    """`numel`, `ndim`, `channel_numel` where host math reads them: inputs of the per-tensor host function."""
    used = {shape_input_name(n) for s in walk_stmts(p.body) for v in stmt_values(s) for n in walk_values(v)
            if n.op in SHAPE_INPUTS}
    fixed = [name for name in ("numel", "ndim", "channel_numel", "dtype_eps") if name in used]
    return fixed + sorted(used - set(fixed), key=size_dim)


def scalar_states(p: Program) -> list[str]:
    return [s.name for s in p.states if s.kind is Kind.TENSOR_SCALAR]


def first_stored(p: Program) -> list[str]:
    """`empty` tensor states: the fused path asks the host function whether a store to each is reached."""
    return [s.name for s in p.states if s.init == "empty" and s.kind is Kind.TENSOR]
