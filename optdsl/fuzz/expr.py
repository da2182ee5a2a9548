"""The expressions the program generator writes: text with as few parentheses as the grammar
allows beside a fully parenthesised twin (both must lower to the same IR), each carrying its kind,
type and a bound on its magnitude, so generated values stay finite by construction; and what a
program declares (hypers, states) with the scope its statements read."""
from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

# kinds, ordered as ir.Kind: a value's kind is the max of its operands'; RED is one value per tensor
# computed on the device (a tensor- or group-scope reduction), CHAN one per output channel
CONST, HOST, TS, RED, CHAN, TENSOR = 0, 1, 2, 3, 4, 5
NUM, BOOL = "num", "bool"

# precedence levels of the grammar: ternary < or < and < not < compare < sum < product < unary < power < atom
P_TERN, P_OR, P_AND, P_NOT, P_CMP, P_SUM, P_PROD, P_UNARY, P_POW, P_ATOM = range(10)

LIMIT = 1e3          # magnitudes above this get clamped
N_MAX = 1100.0       # the most elements one reduction folds (a group of 4 tensors of <= 257)
STATE_MAG = 50.0     # nominal bound of a tensor state
PARAM_MAG = 30.0

# numbers and the spellings of each (every form NUMBER_LIT accepts)
NUMBERS: dict[float, tuple[str, ...]] = {
    0.0: ("0", "0.0", "0.", ".0", "0e0"),
    0.5: ("0.5", ".5", "5e-1", "5E-1", "0.50"),
    1.0: ("1", "1.", "1.0", "1e0", "10e-1"),
    2.0: ("2", "2.0", "2.", "2e0", "0.2e1"),
    3.0: ("3", "3.0", "3e+0"),
    0.1: ("0.1", ".1", "1e-1", "1E-1"),
    0.25: ("0.25", ".25", "25e-2"),
    0.9: ("0.9", ".9", "9e-1", "0.90"),
    0.99: ("0.99", ".99", "99e-2"),
    0.999: ("0.999", ".999", "999e-3"),
    1e-3: ("1e-3", "0.001", "1E-03", ".001", "1e-03"),
    1e-8: ("1e-8", "1E-8", "0.00000001", "1e-08"),
    10.0: ("10", "10.0", "1e1", "1E+1"),
    100.0: ("100", "1e2", "100.0"),
    1.5: ("1.5", "15e-1"),
    0.01: ("0.01", "1e-2", ".01"),
}


def spell(draw, x: float) -> str:
    forms = NUMBERS.get(x)
    if forms:
        return draw(st.sampled_from(forms))
    return repr(float(x))


@dataclass
class E:
    """A generated expression: text with as few parentheses as the grammar allows, its fully
    parenthesised twin, its precedence level, kind, type and a bound on its magnitude."""
    text: str
    full: str
    prec: int
    kind: int
    type: str = NUM
    mag: float = 1.0
    dirty: bool = False     # reads what a phase slice cannot (see ProgramGen.dirty): no reduction over it


def per_tensor(cond: E) -> bool:
    """A condition that may differ from tensor to tensor: a select on it evaluates the side taken only."""
    return cond.kind in (TS, RED)


def has_group_reduction(e: E) -> bool:
    return ", group)" in e.text


def _p(e: E, need: int) -> str:
    return e.text if e.prec >= need else f"({e.text})"


def atom(text: str, kind: int, typ: str = NUM, mag: float = 1.0, dirty: bool = False) -> E:
    return E(text, text, P_ATOM, kind, typ, mag, dirty)


def binary(a: E, op: str, b: E, mag: float, typ: str = NUM) -> E:
    if op in ("+", "-"):
        prec, ln, rn = P_SUM, P_SUM, P_PROD
    elif op in ("*", "/"):
        prec, ln, rn = P_PROD, P_PROD, P_UNARY
    elif op == "^":
        prec, ln, rn = P_POW, P_ATOM, P_UNARY
    elif op == "and":
        prec, ln, rn = P_AND, P_AND, P_NOT
    elif op == "or":
        prec, ln, rn = P_OR, P_OR, P_AND
    else:
        raise ValueError(op)
    return E(f"{_p(a, ln)} {op} {_p(b, rn)}", f"({a.full} {op} {b.full})", prec, max(a.kind, b.kind), typ, mag,
             a.dirty or b.dirty)


def call(name: str, args: list[E], mag: float, typ: str = NUM, kind: int | None = None) -> E:
    return E(f"{name}({', '.join(a.text for a in args)})", f"{name}({', '.join(a.full for a in args)})", P_ATOM,
             max([a.kind for a in args]) if kind is None else kind, typ, mag, any(a.dirty for a in args))


def reduction(name: str, args: list[E], scope: str | None, mag: float) -> E:
    """`name(args[, scope])`: its kind is the scope's (RED for tensor and group, CHAN for channel)."""
    extra = [] if scope is None else [scope]
    texts = [a.text for a in args] + extra
    fulls = [a.full for a in args] + extra
    return E(f"{name}({', '.join(texts)})", f"{name}({', '.join(fulls)})", P_ATOM,
             CHAN if scope == "channel" else RED, NUM, mag, any(a.dirty for a in args))


def neg(a: E) -> E:
    return E(f"-{_p(a, P_UNARY)}", f"(-{a.full})", P_UNARY, a.kind, NUM, a.mag, a.dirty)


def not_(a: E) -> E:
    return E(f"not {_p(a, P_NOT)}", f"(not {a.full})", P_NOT, a.kind, BOOL, 1.0, a.dirty)


def compare(operands: list[E], ops: list[str]) -> E:
    text = _p(operands[0], P_SUM)
    full = operands[0].full
    for op, e in zip(ops, operands[1:]):
        text += f" {op} {_p(e, P_SUM)}"
        full += f" {op} {e.full}"
    return E(text, f"({full})", P_CMP, max(e.kind for e in operands), BOOL, 1.0, any(e.dirty for e in operands))


def ternary(c: E, a: E, b: E) -> E:
    return E(f"{_p(c, P_OR)} ? {a.text} : {b.text}", f"({c.full} ? {a.full} : {b.full})", P_TERN,
             max(c.kind, a.kind, b.kind), a.type, max(a.mag, b.mag), c.dirty or a.dirty or b.dirty)


def paren(e: E) -> E:
    return E(f"({e.text})", e.full, P_ATOM, e.kind, e.type, e.mag, e.dirty)


# ---- declarations ---------------------------------------------------------------------------


@dataclass
class Hyper:
    name: str
    default: tuple[float, ...]      # one entry for a scalar hyper
    ranges: tuple[tuple[float, float], ...]
    is_tuple: bool
    optional: bool = False          # declared `= none`: read only under `name != none`

    def entries(self) -> list[tuple[str, float, float]]:
        """(source, lo, hi) of each readable entry."""
        if not self.is_tuple:
            return [(self.name, *self.ranges[0])]
        return [(f"{self.name}[{i}]", *r) for i, r in enumerate(self.ranges)]


@dataclass
class State:
    name: str
    scalar: bool
    init: str                       # 'zeros', 'empty', a number's text, or a hyper's name
    cond: list[str] | None          # conjuncts of the condition, None: unconditional
    key: str | None = None

    @property
    def device(self) -> bool:
        """A scalar state the program may store a reduction's value into, so read as a device value
        everywhere: the checker decides a scalar state's kind from all its stores at once, also for
        the reads written before them (those starting at zeros; the others stay host values)."""
        return self.scalar and self.init == "zeros"


@dataclass
class Scope:
    locals: dict[str, tuple[int, str, float]] = field(default_factory=dict)   # name -> (kind, type, mag)
    guards: list[str] = field(default_factory=list)       # conjunct texts in force
    nonempty: set[str] = field(default_factory=set)       # `empty` states stored (or known stored) by now
    # the guards that only an `and` or a `?:` in the expression at hand puts in force: a
    # reduction is computed before that expression, so its operands see only the others
    expr_guards: list[str] = field(default_factory=list)

    def copy(self) -> "Scope":
        return Scope(dict(self.locals), list(self.guards), set(self.nonempty), list(self.expr_guards))

    def guard_expression(self, conds: list[str]) -> "Scope":
        """A copy in which `conds` hold for the rest of this expression (not for a reduction in it)."""
        inner = self.copy()
        inner.guards += conds
        inner.expr_guards += conds
        return inner

    def statement(self) -> "Scope":
        """A copy with only the guards of the `if`s around the statement (a reduction's operands)."""
        inner = self.copy()
        for g in self.expr_guards:
            inner.guards.remove(g)
        inner.expr_guards = []
        return inner


def conjunct_texts(cond: E) -> list[str]:
    """The conjuncts (as texts) a condition guards with: its parts joined by top-level `and`."""
    parts, depth, start, text = [], 0, 0, cond.text
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "?" and depth == 0:
            return [text]
        elif depth == 0 and text.startswith(" and ", i):
            parts.append(text[start:i])
            start = i + 5
            i += 5
            continue
        i += 1
    parts.append(text[start:])
    if any(" or " in p and not p.startswith("(") for p in parts):
        return [text]
    return [p.strip() for p in parts]
