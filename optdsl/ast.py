"""The syntax tree: frozen dataclasses, each with its Span."""
from __future__ import annotations

from dataclasses import dataclass, field

from .diagnostics import Span


@dataclass(frozen=True)
class Node:
    span: Span = field(compare=False, repr=False)


# ---- expressions -------------------------------------------------------------
@dataclass(frozen=True)
class Num(Node):
    value: float
    text: str


@dataclass(frozen=True)
class Bool(Node):
    value: bool


@dataclass(frozen=True)
class NoneLit(Node):
    """`none`: an optional hyper's absence; only in `h == none`, `h != none` and as a default."""


@dataclass(frozen=True)
class StrLit(Node):
    """A quoted string in an expression: only beside a choice hyper, `adjust_lr_fn == "original"`."""
    value: str


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class Index(Node):
    target: Name
    index: int


@dataclass(frozen=True)
class Call(Node):
    func: str
    args: tuple["Expr", ...]


@dataclass(frozen=True)
class Unary(Node):
    op: str  # '-' or 'not'
    operand: "Expr"


@dataclass(frozen=True)
class Binary(Node):
    op: str  # + - * / ^ and or
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True)
class Compare(Node):
    """A comparison chain, ``0 <= x < 1``, evaluated as in Python."""
    operands: tuple["Expr", ...]
    ops: tuple[str, ...]


@dataclass(frozen=True)
class Ternary(Node):
    cond: "Expr"
    then: "Expr"
    other: "Expr"


Expr = Num | Bool | NoneLit | Name | Index | Call | Unary | Binary | Compare | Ternary


# ---- statements --------------------------------------------------------------
@dataclass(frozen=True)
class Assign(Node):
    target: str
    target_span: Span = field(compare=False, repr=False)
    value: Expr = None  # type: ignore[assignment]


@dataclass(frozen=True)
class If(Node):
    cond: Expr
    then: tuple["Stmt", ...]
    other: tuple["Stmt", ...]


Stmt = Assign | If


# ---- declarations ------------------------------------------------------------
@dataclass(frozen=True)
class Hyper(Node):
    name: str
    default: tuple[float, ...] | float | None   # None: `= none`
    is_tuple: bool
    where: Expr | None
    optional: bool = False      # `= none` or `= 1.0 or none`: None from Python means absent
    default_span: Span | None = field(default=None, compare=False, repr=False)   # where the default is written
    # `hyper f = none | "original" | "match_rms_adamw"`: one of these values (None for `none`), the
    # first the default; `choice_message` replaces the default message for any other value
    choices: tuple[str | None, ...] = ()
    choice_message: str | None = None

    @property
    def optional_entries(self) -> frozenset[int]:
        """The tuple entries written `none`: absent unless given (`eps[0] != none`)."""
        return frozenset(i for i, x in enumerate(self.default) if x is None) if self.is_tuple else frozenset()


@dataclass(frozen=True)
class Flag(Node):
    name: str
    default: bool


@dataclass(frozen=True)
class State(Node):
    name: str
    shape: str            # 'tensor' or 'scalar'
    init: float | str     # a number, 'zeros', 'empty' or a hyper's name
    cond: Expr | None
    key: str | None = None  # the state_dict key, when it is not the name (`key "sum"`)


@dataclass(frozen=True)
class Input(Node):
    """`input hessian = hutchinson(n_samples, update_each, avg_conv_kernel)`: a tensor of the
    param's shape that the runtime estimates before each step (builtins.ESTIMATORS), read-only
    in the update; `args` name the hypers and flags that set the estimator."""
    name: str
    estimator: str
    args: tuple[str, ...] = ()
    estimator_span: Span | None = field(default=None, compare=False, repr=False)
    arg_spans: tuple[Span, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Require(Node):
    cond: Expr
    message: str


@dataclass(frozen=True)
class Keep(Node):
    """`keep step`: the step count is kept in the state even where the update never reads it.
    `keep step per group`: one count per param group; `per` is "tensor" (the default) or "group".
    `keep step as int`: the state_dict saves each tensor's count as a Python int."""
    name: str
    per: str | None = None
    per_span: Span | None = field(default=None, compare=False, repr=False)
    as_: str | None = None     # `keep step as int`: the state_dict's count is a Python int
    as_span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Sparse(Node):
    """`sparse rows` / `sparse rows only`: what a sparse gradient does (see docs/language.md)."""
    how: str
    how_span: Span = field(compare=False, repr=False)
    only: str | None = None        # the word after `rows` ("only"), kept to be checked
    only_span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Mode(Node):
    """`on train { ... }` / `on eval { ... }`: what optimizer.train() / .eval() do to each tensor
    that has state, when the group's mode changes (no gradient, no step)."""
    name: str
    name_span: Span = field(compare=False, repr=False)
    body: tuple[Stmt, ...] = ()


@dataclass(frozen=True)
class Regions:
    """Offsets into the source of what a composition splices: the declarations (from the end of
    the header to `update`), the update block's inside (between its braces), and in a wrapper the
    `inner` statement. Half-open [start, end) pairs."""
    decls: tuple[int, int]
    body: tuple[int, int]
    inner: tuple[int, int] | None = None
    modes: tuple[int, int] | None = None   # the `on` blocks, from the first to the end of the last


@dataclass(frozen=True)
class Spec(Node):
    name: str
    doc: str
    hypers: tuple[Hyper, ...]
    flags: tuple[Flag, ...]
    states: tuple[State, ...]
    requires: tuple[Require, ...]
    body: tuple[Stmt, ...]
    source: str = field(compare=False, repr=False, default="")
    keeps: tuple[Keep, ...] = ()
    # `wrapper Name`: a spec whose update runs another's at its `inner` statement (see compose.py);
    # `inner_at` is that statement's place among the top-level statements of `body`, which omits it
    kind: str = "optimizer"
    inner_at: int | None = None
    inner_span: Span | None = field(default=None, compare=False, repr=False)
    regions: Regions | None = field(default=None, compare=False, repr=False)
    modes: tuple[Mode, ...] = ()
    inputs: tuple[Input, ...] = ()
    sparse: tuple[Sparse, ...] = ()   # at most one (the checker says so)

    @property
    def input_states(self) -> tuple["State", ...]:
        """Each input as the tensor state that holds it (under its name) for the backends."""
        return tuple(State(i.span, i.name, "tensor", "zeros", None) for i in self.inputs)


# ---- compositions: `optimizer Name "doc" = wrapper(inner)` ---------------------------------------
@dataclass(frozen=True)
class SpecRef(Node):
    """A spec named in a composition: a file stem (`adam`) or a quoted path (`"rules/mine.opt"`)."""
    name: str
    quoted: bool


@dataclass(frozen=True)
class Wrapped(Node):
    wrapper: SpecRef
    inner: "SpecRef | Wrapped"


@dataclass(frozen=True)
class Composed(Node):
    name: str
    doc: str
    of: SpecRef | Wrapped
    source: str = field(compare=False, repr=False, default="")


def walk(expr: Expr):
    """Every sub-expression, pre-order, without recursion (deep input must not blow the stack)."""
    stack = [expr]
    while stack:
        e = stack.pop()
        yield e
        if isinstance(e, Index):
            stack.append(e.target)
        elif isinstance(e, Call):
            stack.extend(reversed(e.args))
        elif isinstance(e, Unary):
            stack.append(e.operand)
        elif isinstance(e, Binary):
            stack.extend((e.right, e.left))
        elif isinstance(e, Compare):
            stack.extend(reversed(e.operands))
        elif isinstance(e, Ternary):
            stack.extend((e.other, e.then, e.cond))


def assigned_names(body) -> set[str]:
    """Every name a block assigns, at any depth (without recursion)."""
    out: set[str] = set()
    stack = list(body)
    while stack:
        s = stack.pop()
        if isinstance(s, Assign):
            out.add(s.target)
        elif isinstance(s, If):
            stack.extend(s.then)
            stack.extend(s.other)
    return out
