"""The IR: one value node type over a closed Op enum, plus three statement forms.

Values are frozen and hash-consed by structure, so CSE is dictionary lookup.
Every value has a *kind* (where it lives and how often it is computed) and a
*type* (number or boolean), both inferred, never written by a spec author."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterator


class Kind(enum.IntEnum):
    """An operation's kind is the join of its operands' kinds (`join`): the max, except that the
    axis kinds are a diamond (a row value and a column value make an elementwise one)."""
    CONST = 0          # literals
    HOST = 1           # hypers, flags and math on them: once per group, on the host, float64
    TENSOR_SCALAR = 2  # one value per parameter tensor (step, scalar state), computed on the host
    REDUCED = 3        # one value per parameter tensor computed on the device: a reduction over the
                       # tensor (or over the group) and math on it; a 0-d tensor in eager code
    CHANNEL = 4        # one value per output channel (dim 0), broadcast along the other dims
    # The axis kinds: a reduction along the last dim (`row`) or the second-to-last (`column`), the
    # dim kept with size 1, a state kept so, and math on them; broadcast back along the reduced dims.
    MATRIX = 5         # one value per matrix (both last dims reduced: Adafactor's mean of its row state)
    ROW = 6            # one value per row: the last dim reduced
    COLUMN = 7         # one value per column: the second-to-last dim reduced
    # One accumulator per dim (SM3's cover): for each dim i, one value per index along i, the other
    # dims reduced (shape [1]*i + [n_i] + [1]*...). Read elementwise as the min over its accumulators.
    COVER = 8
    TENSOR = 9         # elementwise, shape of the parameter

    @property
    def on_host(self) -> bool:
        """Computed on the host (Python floats, float64): constants, hypers, step math."""
        return self <= Kind.TENSOR_SCALAR

    @property
    def on_device(self) -> bool:
        """A tensor at run time: a reduction's result (0-d or per channel) or an elementwise value."""
        return self >= Kind.REDUCED

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def is_axis(self) -> bool:
        return self in AXIS_KINDS

    def varies_along(self, scope: str) -> bool:
        """Whether a value of this kind varies along the dim an axis scope (`row`, `column`) reduces:
        an elementwise value does; a channel value is taken to (a 1-d tensor's channels are its elements)."""
        if self in (Kind.TENSOR, Kind.CHANNEL):
            return True
        return self is (Kind.COLUMN if scope == "row" else Kind.ROW)


AXIS_KINDS = frozenset({Kind.MATRIX, Kind.ROW, Kind.COLUMN})
# a reduced-shape state's annotation (`state v : row`) -> the kind of its reads
SHAPED_STATE_KIND = {"row": Kind.ROW, "column": Kind.COLUMN, "cover": Kind.COVER}


def join(*kinds: Kind) -> Kind:
    """The kind of math on values of these kinds: the max, but a row value and a column value (or a
    channel value and an axis one) give an elementwise value, and so does a cover beside anything
    that varies along a dim (it is read as its min there: cover_min)."""
    out = Kind.CONST
    for k in kinds:
        lo, hi = min(out, k), max(out, k)
        if hi is Kind.COVER and Kind.CHANNEL <= lo < Kind.COVER:
            out = Kind.TENSOR
        elif hi.is_axis and (lo is Kind.CHANNEL or {lo, hi} == {Kind.ROW, Kind.COLUMN}):
            out = Kind.TENSOR
        else:
            out = hi
    return out


def reduced_as_is(scope: str, operand: Kind) -> bool:
    """Whether a reduction along `scope` takes an operand of this kind as it is (elementwise, or a row
    or column value that varies along the scope's dim), not broadcast to the param's shape first."""
    return operand is Kind.TENSOR or scope in AXIS_SCOPES and operand.varies_along(scope)


def axis_result(scope: str, operand: Kind) -> Kind:
    """The kind of a reduction along `scope`'s dim of an operand of this kind."""
    if operand in (Kind.TENSOR, Kind.CHANNEL):
        return Kind.ROW if scope == "row" else Kind.COLUMN
    if operand.is_axis:
        return Kind.MATRIX if operand.varies_along(scope) or operand is Kind.MATRIX else operand
    return Kind.ROW if scope == "row" else Kind.COLUMN   # a number broadcast first, then reduced: per row

class Type(enum.Enum):
    NUM = "number"
    BOOL = "boolean"


class Op(enum.Enum):
    # leaves
    CONST = enum.auto()     # arg: float | bool
    HYPER = enum.auto()     # arg: (name, index | None)
    FLAG = enum.auto()      # arg: name
    STEP = enum.auto()
    PARAM = enum.auto()
    GRAD = enum.auto()
    STATE = enum.auto()     # arg: name
    VAR = enum.auto()       # arg: name of a Let
    IS_EMPTY = enum.auto()  # arg: state name; true until the state is first stored
    IS_SET = enum.auto()    # arg: name of an optional hyper; false where it is None
    CHOICE = enum.auto()    # arg: (name of a choice hyper, one of its values): true where it holds that value
    NUMEL = enum.auto()     # the parameter's element count
    NDIM = enum.auto()      # the parameter's number of dimensions
    CHANNEL_NUMEL = enum.auto()  # elements per output channel: numel / size(0) (numel for a 0-d param)
    SIZE = enum.auto()      # arg: a dim d; the parameter's size along d (1 past its last dim; d < 0 from the end)
    DTYPE_EPS = enum.auto()  # the machine epsilon of the parameter's dtype (torch.finfo(dtype).eps)
    # unary
    NEG = enum.auto()
    NOT = enum.auto()
    SQRT = enum.auto()
    RSQRT = enum.auto()
    ABS = enum.auto()
    SIGN = enum.auto()
    EXP = enum.auto()
    LOG = enum.auto()
    SIGMOID = enum.auto()   # 1 / (1 + exp(-x))
    TANH = enum.auto()
    SOFTPLUS = enum.auto()  # log(1 + exp(x))
    LOG1P = enum.auto()     # log(1 + x), accurate near 0
    EXPM1 = enum.auto()     # exp(x) - 1, accurate near 0
    CBRT = enum.auto()      # the real cube root (sign kept)
    FLOOR = enum.auto()
    ITEM = enum.auto()      # a per-tensor device value read back to the host (torch's `.item()`): host math after
    COPY = enum.auto()      # a fresh copy: breaks aliasing before an in-place store
    COVER_MIN = enum.auto()  # a cover read elementwise: the min over its accumulators, broadcast (SM3's estimate)
    ON_DEVICE = enum.auto()  # a host value as a per-tensor device value (where a local joins both)
    # reductions (arg: the scope, one of SCOPES), unary ...
    SUM = enum.auto()
    MEAN = enum.auto()
    NORM = enum.auto()      # L2
    RMS = enum.auto()       # sqrt(mean(x * x))
    AMAX = enum.auto()      # max |x|
    # binary
    ADD = enum.auto()
    SUB = enum.auto()
    MUL = enum.auto()
    DIV = enum.auto()
    POW = enum.auto()
    MIN = enum.auto()
    MAX = enum.auto()
    LT = enum.auto()
    LE = enum.auto()
    GT = enum.auto()
    GE = enum.auto()
    EQ = enum.auto()
    NE = enum.auto()
    AND = enum.auto()
    OR = enum.auto()
    DOT = enum.auto()       # a reduction: sum(x * y)
    MOD = enum.auto()       # floor-mod: x - y * floor(x / y), the divisor's sign (torch.remainder)
    # ternary
    WHERE = enum.auto()     # (cond, then, other)
    LERP = enum.auto()      # (start, end, weight)
    CLAMP = enum.auto()     # (x, lo, hi)
    # a whole-matrix op: its operand read as one 2-D matrix, not element by element
    NEWTON_SCHULZ = enum.auto()  # (x, a, b, c, steps, eps): Muon's orthogonalization of x (torch.optim.Muon's)


LEAF = frozenset({Op.CONST, Op.HYPER, Op.FLAG, Op.STEP, Op.PARAM, Op.GRAD, Op.STATE, Op.VAR, Op.IS_EMPTY,
                  Op.IS_SET, Op.CHOICE, Op.NUMEL, Op.NDIM, Op.CHANNEL_NUMEL, Op.SIZE, Op.DTYPE_EPS})
UNARY = frozenset({Op.NEG, Op.NOT, Op.SQRT, Op.RSQRT, Op.ABS, Op.SIGN, Op.EXP, Op.LOG, Op.COPY, Op.COVER_MIN, Op.ON_DEVICE,
                   Op.SIGMOID, Op.TANH, Op.SOFTPLUS, Op.LOG1P, Op.EXPM1, Op.CBRT, Op.FLOOR, Op.ITEM,
                   Op.SUM, Op.MEAN, Op.NORM, Op.RMS, Op.AMAX})
BINARY = frozenset({Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW, Op.MIN, Op.MAX,
                    Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE, Op.AND, Op.OR, Op.DOT, Op.MOD})
TERNARY = frozenset({Op.WHERE, Op.LERP, Op.CLAMP})
# Ops that read their operand as a whole matrix (the param's last two dims): on the eager paths a torch
# function per tensor; on a fused path a barrier (optdsl.plan.fused_refusal)
MATRIX_OPS = frozenset({Op.NEWTON_SCHULZ})
COMPARE = frozenset({Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE})
LOGIC = frozenset({Op.AND, Op.OR, Op.NOT})
REDUCE = frozenset({Op.SUM, Op.MEAN, Op.NORM, Op.RMS, Op.AMAX, Op.DOT})
# Where a reduction runs: over one tensor, over each output channel (dim 0) of it, over every
# tensor of the param group, or along one axis: the last dim (one value per `row`) or the
# second-to-last (one value per `column`), keeping the dim; or over all dims but one, for each dim
# (`cover`: one accumulator per dim). The scope is the reduction node's `arg`.
SCOPES = ("tensor", "channel", "group", "row", "column", "cover")
AXIS_SCOPES = ("row", "column")


def axis_dim(scope: str) -> int:
    """The dim an axis scope reduces: -1 for `row`, -2 for `column`."""
    return -1 if scope == "row" else -2
# `on train` / `on eval`: what optimizer.train() and optimizer.eval() run on each stepped tensor
MODES = ("train", "eval")
# an axis scope's kind depends on its operand's (axis_result)
SCOPE_KIND = {"tensor": Kind.REDUCED, "channel": Kind.CHANNEL, "group": Kind.REDUCED, "cover": Kind.COVER}


def scope_kind(scope: str, operands) -> Kind:
    """The kind of a reduction of `scope` over operands of these kinds."""
    return axis_result(scope, join(*operands)) if scope in AXIS_SCOPES else SCOPE_KIND[scope]
# per-tensor inputs known on the host (step is one too, but counts steps)
SHAPE_INPUTS = frozenset({Op.NUMEL, Op.NDIM, Op.CHANNEL_NUMEL, Op.SIZE, Op.DTYPE_EPS})


def shape_input_name(v: "Value") -> str:
    """The generated name of a shape input: `numel`, `ndim`, `channel_numel`, `dtype_eps`, `_size1`,
    `_size_m1` (size(-1))."""
    if v.op is Op.SIZE:
        d = int(v.arg)
        return f"_size{d}" if d >= 0 else f"_size_m{-d}"
    return v.op.name.lower()


def size_dim(name: str) -> int:
    """The dim of a size input's generated name: `_size1` -> 1, `_size_m1` -> -1."""
    tail = name[len("_size"):]
    return -int(tail[2:]) if tail.startswith("_m") else int(tail)


def dim_size(shape: tuple, d: int) -> int:
    """size(d) of a tensor of `shape`: 1 past its last dim (d >= 0) or before its first (d < 0)."""
    return shape[d] if (d < len(shape) if d >= 0 else -d <= len(shape)) else 1


ARITY = {**{op: 0 for op in LEAF}, **{op: 1 for op in UNARY}, **{op: 2 for op in BINARY}, **{op: 3 for op in TERNARY},
         Op.NEWTON_SCHULZ: 6}
assert set(ARITY) == set(Op), "every Op belongs to exactly one group"


@dataclass(frozen=True)
class Value:
    op: Op
    args: tuple["Value", ...] = ()
    arg: object = None
    kind: Kind = Kind.CONST
    type: Type = Type.NUM

    def __repr__(self) -> str:
        return format_value(self)


def const(x: float | bool) -> Value:
    return Value(Op.CONST, (), x, Kind.CONST, Type.BOOL if isinstance(x, bool) else Type.NUM)


def reduce(op: Op, scope: str, *args: Value) -> Value:
    """A reduction node: its kind is its scope's (per tensor, per channel), whatever its operands'; along
    an axis, what is left of its operands' kind (axis_result)."""
    assert op in REDUCE and scope in SCOPES, (op, scope)
    args = tuple(read_cover(a) for a in args)
    return Value(op, args, scope, scope_kind(scope, [a.kind for a in args]), Type.NUM)


def read_cover(a: Value) -> Value:
    """`a` where an elementwise value is wanted: a cover as the min over its accumulators."""
    return Value(Op.COVER_MIN, (a,), None, Kind.TENSOR, a.type) if a.kind is Kind.COVER else a


def with_args(node: Value, args: tuple[Value, ...]) -> Value:
    """`node` over new operands (a reduction keeps its scope)."""
    if node.op in REDUCE:
        return reduce(node.op, node.arg, *args)
    return apply(node.op, *args)


def apply(op: Op, *args: Value) -> Value:
    """Build an operation node, inferring its kind and type. A cover operand of an op whose value is
    not a cover (beside an elementwise value, in newton_schulz()) is read as its min (read_cover)."""
    kind = join(*(a.kind for a in args))
    if op is Op.COVER_MIN:
        return Value(op, tuple(args), None, Kind.TENSOR, args[0].type)
    if kind is not Kind.COVER or op in MATRIX_OPS:
        args = tuple(read_cover(a) for a in args)
    if op is Op.ON_DEVICE:
        kind = max(kind, Kind.REDUCED)
    if op is Op.ITEM:
        kind = Kind.TENSOR_SCALAR
    if op in MATRIX_OPS:
        kind = Kind.TENSOR
    if op in COMPARE or op in LOGIC:
        typ = Type.BOOL
    elif op in (Op.WHERE, Op.ON_DEVICE):
        typ = args[1].type if op is Op.WHERE else args[0].type
    else:
        typ = Type.NUM
    return Value(op, tuple(args), None, kind, typ)


# ---- statements --------------------------------------------------------------
@dataclass(frozen=True)
class Let:
    """Bind a local name. Host-kind lets are computed on the host, never per element."""
    name: str
    value: Value


@dataclass(frozen=True)
class Store:
    """Write a state (or the parameter): `target` is 'param' or a state name."""
    target: str
    value: Value


@dataclass(frozen=True)
class If:
    cond: Value
    then: tuple["Stmt", ...]
    other: tuple["Stmt", ...] = ()


Stmt = Let | Store | If


@dataclass(frozen=True)
class HyperInfo:
    name: str
    default: float | tuple[float, ...]
    arity: int                  # 0 for a scalar, n for an n-tuple
    checks: tuple[tuple[str, str], ...] = ()   # (python condition source, message f-string source)
    optional: bool = False      # `= none` / `= 1.0 or none`: None from Python means absent (`h != none`)
    # `state x : group = 0`: a number per param group (a param_group key), read as a hyper and
    # stored by Program.group_update once per step() call; not a constructor argument
    group_state: bool = False
    optional_entries: frozenset[int] = frozenset()   # tuple entries `none` by default: absent unless given
    choices: tuple[str | None, ...] = ()   # a choice hyper's values (None for `none`), the default first
    choice_message: str | None = None      # its message for another value (None: optdsl's own)

    def entry_optional(self, index: int | None) -> bool:
        """Whether reading this hyper (index None) or this entry of it may find None."""
        return self.optional if index is None else self.optional or index in self.optional_entries


@dataclass(frozen=True)
class FlagInfo:
    name: str
    default: bool


@dataclass(frozen=True)
class StateInfo:
    name: str
    kind: Kind                  # TENSOR; TENSOR_SCALAR (host scalar state); REDUCED (a scalar state stored
                                # from a reduction: a 0-d float32 tensor on the parameter's device)
    init: float | str           # number, 'zeros', 'empty', or a hyper name
    cond: Value | None          # the state exists only where this condition holds: host math, or per
                                # tensor on its shape (`if ndim >= 2`), decided when the state is made
    key: str | None = None      # the state_dict key where it is not `name` (Adagrad's "sum")
    list_name: str | None = None  # the per-group list in generated code; None: the plural of `name`
    # "": the parameter's shape; "row": its last dim reduced to 1 (one value per row); "column": its
    # second-to-last reduced to 1 (one value per column). Read broadcast back to the parameter's shape.
    # "cover": one accumulator per dim (state_dict keys name_0, name_1, ...), read as their min.
    shape: str = ""

    @property
    def read_kind(self) -> Kind:
        """The kind of a read of this state: a row or column state reads as one value per row or column."""
        return SHAPED_STATE_KIND.get(self.shape, self.kind)

    @property
    def per_tensor_cond(self) -> bool:
        """The condition depends on the tensor (its shape), not only on hypers and flags."""
        return self.cond is not None and self.cond.kind is Kind.TENSOR_SCALAR

    @property
    def storage_key(self) -> str:
        return self.key if self.key is not None else self.name

    @property
    def list(self) -> str:
        return self.list_name if self.list_name is not None else self.name + "s"


@dataclass(frozen=True)
class Program:
    name: str
    doc: str
    hypers: tuple[HyperInfo, ...]
    flags: tuple[FlagInfo, ...]
    states: tuple[StateInfo, ...]
    requires: tuple[tuple[str, str], ...]   # (python condition source, message)
    body: tuple[Stmt, ...]
    uses_step: bool = True
    # the constructor's arguments (hypers and flags) in the spec's order, which is the reference's
    # (torch.optim.Muon's `nesterov` comes before its `ns_coefficients`); () : hypers, then flags
    argument_order: tuple[str, ...] = ()
    step_per_group: bool = False    # `keep step per group`: one step count per param group (group["step"])
    reads_initial_lr: bool = False  # the update reads `initial_lr`: group["initial_lr"], the lr at construction
    # the update's leading host statements that store group states (`state x : group`), run once
    # per param group and step() call before its tensors' update; `body` keeps their Lets, not the stores
    group_update: tuple[Stmt, ...] = ()
    source_file: str = field(default="<spec>", compare=False)
    # (mode, body) per `on` block, in MODES order: run by optimizer.train() / .eval() where the group's
    # mode changes, on its tensors that have state; they read no grad and no step
    modes: tuple[tuple[str, tuple[Stmt, ...]], ...] = ()
    # (name, estimator, the hypers and flags it reads) per `input`: a tensor state of that name the
    # runtime fills before each step (optdsl/inputs.py); the update only reads it
    inputs: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    # `sparse rows` ("rows"): a sparse gradient updates only its touched rows (optdsl/sparse_rows.py);
    # `sparse rows only` ("rows only"): and a dense one is refused; "": a sparse gradient is refused
    sparse: str = ""
    step_as_int: bool = False   # `keep step as int`: the state_dict saves each tensor's step as a Python int

    def mode_program(self, mode: str) -> "Program":
        """The `on mode` block as a program of its own, for the passes, the plan and the emitters:
        the same hypers, flags and states, no step, no group update, and no gradient, so no sparse one."""
        from dataclasses import replace
        body = next(b for m, b in self.modes if m == mode)
        return replace(self, body=body, group_update=(), uses_step=False, step_per_group=False, modes=(), sparse="")

    @property
    def group_value_names(self) -> list[str]:
        """The names read from the param group and passed to the functional API: hypers, `initial_lr`
        where the update reads it, flags."""
        return [h.name for h in self.hypers] + (["initial_lr"] if self.reads_initial_lr else []) \
            + [f.name for f in self.flags]

    def state(self, name: str) -> StateInfo:
        return next(s for s in self.states if s.name == name)

    def list_name(self, name: str) -> str:
        """The name of state `name`'s per-group list in generated code."""
        return self.state(name).list


# ---- traversal -----------------------------------------------------------------
def walk_values(v: Value) -> Iterator[Value]:
    """Every node of a value DAG once, children before parents."""
    seen: set[int] = set()
    stack: list[tuple[Value, bool]] = [(v, False)]
    while stack:
        node, expanded = stack.pop()
        if id(node) in seen:
            continue
        if expanded or not node.args:
            seen.add(id(node))
            yield node
            continue
        stack.append((node, True))
        stack.extend((a, False) for a in reversed(node.args))


def walk_stmts(stmts: tuple[Stmt, ...]) -> Iterator[Stmt]:
    for s in stmts:
        yield s
        if isinstance(s, If):
            yield from walk_stmts(s.then)
            yield from walk_stmts(s.other)


def stmt_values(s: Stmt) -> tuple[Value, ...]:
    return (s.cond,) if isinstance(s, If) else (s.value,)


def map_values(stmts: tuple[Stmt, ...], fn) -> tuple[Stmt, ...]:
    """Rebuild statements with fn applied to every top-level value."""
    out: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Let):
            out.append(Let(s.name, fn(s.value)))
        elif isinstance(s, Store):
            out.append(Store(s.target, fn(s.value)))
        else:
            out.append(If(fn(s.cond), map_values(s.then, fn), map_values(s.other, fn)))
    return tuple(out)


def rebuild(v: Value, fn) -> Value:
    """Bottom-up rewrite: fn(node_with_rewritten_children) -> node. Iterative, memoised."""
    memo: dict[int, Value] = {}
    for node in walk_values(v):
        if node.args:
            new_args = tuple(memo[id(a)] for a in node.args)
            if any(n is not o for n, o in zip(new_args, node.args)):
                node2 = Value(node.op, new_args, node.arg, node.kind, node.type) if node.op in LEAF else with_args(node, new_args)
            else:
                node2 = node
        else:
            node2 = node
        memo[id(node)] = fn(node2)
    return memo[id(v)]


def entries_read(v: Value, hyper: str) -> set[int]:
    """The entries of tuple hyper `hyper` that `v` reads (`eps[0]` -> {0})."""
    return {int(n.arg[1]) for n in walk_values(v) if n.op is Op.HYPER and n.arg[0] == hyper and n.arg[1] is not None}


# ---- printing and verification ----------------------------------------------------
_SYMBOL = {Op.ADD: "+", Op.SUB: "-", Op.MUL: "*", Op.DIV: "/", Op.POW: "^", Op.LT: "<", Op.LE: "<=",
           Op.GT: ">", Op.GE: ">=", Op.EQ: "==", Op.NE: "!=", Op.AND: "and", Op.OR: "or"}


def format_value(v: Value) -> str:
    if v.op is Op.CONST:
        return repr(v.arg)
    if v.op is Op.HYPER:
        name, index = v.arg  # type: ignore[misc]
        return name if index is None else f"{name}[{index}]"
    if v.op in (Op.FLAG, Op.STATE, Op.VAR):
        return str(v.arg)
    if v.op is Op.IS_EMPTY:
        return f"is_empty({v.arg})"
    if v.op is Op.IS_SET:
        return f"({v.arg} != none)"
    if v.op in (Op.STEP, Op.PARAM, Op.GRAD, Op.NUMEL, Op.NDIM, Op.CHANNEL_NUMEL, Op.DTYPE_EPS):
        return v.op.name.lower()
    if v.op is Op.SIZE:
        return f"size({v.arg})"
    if v.op in REDUCE:
        scope = "" if v.arg == "tensor" else f", {v.arg}"
        return f"{v.op.name.lower()}({', '.join(format_value(a) for a in v.args)}{scope})"
    if v.op in _SYMBOL:
        return f"({format_value(v.args[0])} {_SYMBOL[v.op]} {format_value(v.args[1])})"
    if v.op is Op.NEG:
        return f"-{format_value(v.args[0])}"
    return f"{v.op.name.lower()}({', '.join(format_value(a) for a in v.args)})"


def format_program(p: Program) -> str:
    lines: list[str] = []

    def emit(stmts, indent):
        for s in stmts:
            pad = "  " * indent
            if isinstance(s, Let):
                lines.append(f"{pad}let {s.name}: {s.value.kind.label} = {format_value(s.value)}")
            elif isinstance(s, Store):
                lines.append(f"{pad}store {s.target} = {format_value(s.value)}")
            else:
                lines.append(f"{pad}if {format_value(s.cond)}:")
                emit(s.then, indent + 1)
                if s.other:
                    lines.append(f"{pad}else:")
                    emit(s.other, indent + 1)
    emit(p.body, 0)
    return "\n".join(lines)


class IRError(AssertionError):
    pass


def verify(p: Program) -> Program:
    """Structural invariants every pass must keep. Tests switch this on after each pass."""
    states = {s.name: s for s in p.states}
    defined: set[str] = set()

    def check_value(v: Value) -> None:
        for node in walk_values(v):
            if len(node.args) != ARITY[node.op]:
                raise IRError(f"{node.op.name} has {len(node.args)} operands, expected {ARITY[node.op]}")
            if node.op is Op.VAR and node.arg not in defined:
                raise IRError(f"use of undefined local {node.arg!r}")
            if node.op in (Op.STATE, Op.IS_EMPTY) and node.arg not in states:
                raise IRError(f"unknown state {node.arg!r}")
            if node.op in REDUCE:
                if node.arg not in SCOPES or node.kind is not scope_kind(node.arg, [a.kind for a in node.args]):
                    raise IRError(f"{node.op.name} over {node.arg!r} has kind {node.kind.label}")
            elif node.args:
                want = join(*(a.kind for a in node.args))
                if node.op is Op.ON_DEVICE:
                    want = max(want, Kind.REDUCED)
                if node.op is Op.ITEM:
                    want = Kind.TENSOR_SCALAR
                if node.op is Op.COVER_MIN:
                    want = Kind.TENSOR
                elif node.kind is not Kind.COVER and any(a.kind is Kind.COVER for a in node.args):
                    raise IRError(f"{node.op.name} reads a cover without cover_min")
                if node.kind != want:
                    raise IRError(f"{node.op.name} has kind {node.kind.label}, operands say {want.label}")

    def check_block(stmts, scope: set[str]):
        for s in stmts:
            for v in stmt_values(s):
                check_value(v)
            if isinstance(s, Let):
                defined.add(s.name)
            elif isinstance(s, Store):
                if s.target != "param" and s.target not in states:
                    raise IRError(f"store to unknown target {s.target!r}")
                if s.target in states and states[s.target].kind is not Kind.TENSOR and s.value.kind >= Kind.CHANNEL:
                    raise IRError(f"scalar state {s.target!r} stored from a tensor value")
                if s.target in states and states[s.target].shape and \
                        join(s.value.kind, states[s.target].read_kind) is not states[s.target].read_kind:
                    raise IRError(f"{states[s.target].shape} state {s.target!r} stored from a {s.value.kind.label} value")
                if s.target in states and states[s.target].kind is Kind.TENSOR_SCALAR and s.value.kind.on_device:
                    raise IRError(f"host scalar state {s.target!r} stored from a device value")
            else:
                if s.cond.type is not Type.BOOL or s.cond.kind >= Kind.CHANNEL:
                    raise IRError("if-condition must be one boolean per tensor")
                check_block(s.then, scope)
                check_block(s.other, scope)

    check_block(p.body, set())
    for mode, body in p.modes:
        if mode not in MODES:
            raise IRError(f"unknown mode {mode!r}")
        for s in walk_stmts(body):
            if any(n.op in (Op.GRAD, Op.STEP) for v in stmt_values(s) for n in walk_values(v)):
                raise IRError(f"`on {mode}` reads the gradient or the step")
        defined.clear()
        check_block(body, set())
    return p
