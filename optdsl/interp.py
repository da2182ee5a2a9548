"""The IR interpreter: the semantic oracle for every spec and every fuzzed program.

It runs a compiled Program's update rule straight from the IR, in NumPy float64,
one parameter tensor at a time, with the bookkeeping a generated optimizer keeps:

* a step counter per tensor, incremented before the update (as in torch); a
  tensor whose grad is None is skipped and its step lags behind;
* states created lazily on a tensor's first step, where their host condition
  holds: `zeros`, a number, a hyper's value, or `empty` (absent until first
  stored; `is_empty(x)` is true until then); scalar state is one float per tensor;
* hypers and flags per group (an Interpreter is one parameter group);
* `If` on host and per-tensor conditions; `c ? a : b` with a host or per-tensor
  condition evaluates only the side it takes (as the loop path does), with a
  per-element condition both sides (as the kernels do).

Every operation takes its NumPy form from builtins.OPS (the `numpy` column): the
interpreter and the backends read one table.

    interp = Interpreter(compile_ir(text), hypers={"lr": 0.1}, flags={"amsgrad": True})
    params = interp.step(params, grads)         # lists of float64 arrays; a grad may be None

Error bounds (`bounds=`, used by the fuzzer): beside each exact value the
interpreter carries an interval holding every value a backend computing in a
narrower precision may produce (unit roundoffs and ulps per op class come from a
`Precision`, see optdsl/fuzz/tolerance.py), and a mask of the elements whose value
hangs on a decision (sign, compare, select) that the interval cannot settle. Then
`step` returns `Bounded` values; `load` resets a tensor's state to given values.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .builtins import OPS
from .ir import ARITY, LEAF, Kind, Let, Op, Program, Stmt, Store, If, Type, Value


class InterpError(RuntimeError):
    """The program did something the language leaves undefined (e.g. read an `empty` state before storing it)."""


# ---- the numpy column of builtins.OPS, as functions ---------------------------------------


def _lerp(a, b, w):
    """torch.lerp's formula, exact at both ends."""
    a, b, w = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), np.asarray(w, dtype=np.float64)
    return np.where(np.abs(w) < 0.5, a + w * (b - a), b - (b - a) * (1 - w))


_NAMESPACE = {"np": np, "_lerp": _lerp}
_NUMPY: dict[Op, Any] = {}


def numpy_form(op: Op):
    """OPS[op].numpy as a Python function of its operands (compiled once; the table is ours, not a spec's)."""
    fn = _NUMPY.get(op)
    if fn is None:
        n = ARITY[op]
        names = [f"a{i}" for i in range(n)]
        fn = eval(f"lambda {', '.join(names)}: {OPS[op].numpy.format(*names)}", dict(_NAMESPACE))  # noqa: S307
        _NUMPY[op] = fn
    return fn


def _norm(x):
    """0-d arrays become numpy scalars, so host values stay scalars."""
    if isinstance(x, np.ndarray) and x.ndim == 0:
        return x[()]
    return x


def _exact_apply(op: Op, args):
    with np.errstate(all="ignore"):
        return _norm(numpy_form(op)(*args))


def _num(x):
    if isinstance(x, (bool, np.bool_)):
        return np.bool_(x)
    return np.float64(x)


# ---- error bounds ------------------------------------------------------------------------

FLT_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Precision:
    """How a backend rounds: the error model behind `Bounded` intervals.

    compute      unit roundoff of elementwise arithmetic (fp32: 2**-24; eager bf16: 2**-8)
    store        unit roundoff of the parameter's dtype (tensor states and the parameter are stored in it)
    scalar_store unit roundoff of scalar states (0-d float32 tensors)
    host         unit roundoff of host math (float64)
    ulps         roundings per op, by Op (ops not listed: `default_ulps`)
    host_ulps    roundings per op of host math, where backends and NumPy may differ (libm vs NumPy);
                 +, -, *, / and the formulas of lerp, clamp, sign are the same everywhere: 0
    tiny         absolute slack per rounding of arithmetic (subnormals, flush-to-zero)
    store_tiny   absolute slack of a store (the storage dtype's smallest normal number)
    overflow     arithmetic results beyond this magnitude may be inf in the backend
    store_overflow  stored values beyond this magnitude may be inf
    """
    compute: float = 2.0 ** -24
    store: float = 2.0 ** -24
    scalar_store: float = 2.0 ** -24
    host: float = 2.0 ** -52
    ulps: Mapping[Op, float] = field(default_factory=dict)
    host_ulps: Mapping[Op, float] = field(default_factory=lambda: {Op.SQRT: 1.0, Op.RSQRT: 2.0, Op.EXP: 1.0,
                                                                   Op.LOG: 1.0, Op.POW: 1.0})
    default_ulps: float = 4.0
    store_ulps: float = 1.0
    scalar_store_ulps: float = 2.0
    tiny: float = 2.0 ** -126
    store_tiny: float = 2.0 ** -126
    scalar_tiny: float = 2.0 ** -126     # scalar states are float32: subnormals below this
    overflow: float = FLT_MAX
    store_overflow: float = FLT_MAX


class Bounded:
    """An exact value `x` with an interval [lo, hi] holding what a backend may compute,
    and `unc`: where the value hangs on an unsettled decision (booleans: lo/hi are None)."""
    __slots__ = ("x", "lo", "hi", "unc")

    def __init__(self, x, lo=None, hi=None, unc=None):
        self.x = x
        self.lo = lo
        self.hi = hi
        self.unc = np.zeros(np.shape(x), dtype=bool) if unc is None else unc

    @classmethod
    def point(cls, x) -> "Bounded":
        """An exactly known value (an input, a number)."""
        if isinstance(x, (bool, np.bool_)) or (isinstance(x, np.ndarray) and x.dtype == bool):
            return cls(_norm(np.asarray(x)), None, None, _false_like(x))
        x = _norm(np.asarray(x, dtype=np.float64))
        return cls(x, x, x, _false_like(x))

    @property
    def is_bool(self) -> bool:
        return self.lo is None

    def with_unc(self, extra) -> "Bounded":
        if not np.any(extra):
            return self
        return Bounded(self.x, self.lo, self.hi, self.unc | extra)

    def __repr__(self) -> str:
        return f"Bounded(x={self.x!r}, lo={self.lo!r}, hi={self.hi!r}, unc={self.unc!r})"


def _false_like(x):
    return np.zeros(np.shape(x), dtype=bool) if np.ndim(x) else np.bool_(False)


def _any(x) -> bool:
    return bool(np.any(x))


def _widen(lo, hi, k: float, u: float, tiny: float):
    """Each end moved out by k roundings of relative size u (plus an absolute floor)."""
    if np.ndim(k) == 0 and k == 0:
        return lo, hi
    with np.errstate(all="ignore"):
        return lo - k * (u * np.abs(lo) + tiny), hi + k * (u * np.abs(hi) + tiny)


def _sanitize(x, lo, hi):
    """NaN bounds around a non-NaN value mean 'anything'; a NaN value has NaN bounds."""
    with np.errstate(all="ignore"):
        xnan = np.isnan(x)
        bad = (np.isnan(lo) | np.isnan(hi)) & ~xnan
        lo = np.where(bad, -np.inf, np.where(xnan, np.nan, lo))
        hi = np.where(bad, np.inf, np.where(xnan, np.nan, hi))
    return _norm(lo), _norm(hi)


def _overflow(lo, hi, limit: float):
    with np.errstate(all="ignore"):
        lo = np.where(lo < -limit, -np.inf, lo)
        hi = np.where(hi > limit, np.inf, hi)
    return _norm(lo), _norm(hi)


def _hull(values):
    arrays = np.broadcast_arrays(*[np.asarray(v, dtype=np.float64) for v in values])
    stacked = np.stack(arrays)
    with np.errstate(all="ignore"):
        nan = np.isnan(stacked).any(axis=0)
        lo = np.where(nan, np.nan, np.nanmin(np.where(np.isnan(stacked), np.inf, stacked), axis=0))
        hi = np.where(nan, np.nan, np.nanmax(np.where(np.isnan(stacked), -np.inf, stacked), axis=0))
    return lo, hi


def _corners(fn, *bounds: Bounded):
    with np.errstate(all="ignore"):
        vals = [fn(*c) for c in itertools.product(*[(b.lo, b.hi) for b in bounds])]
    return _hull(vals)


def _monotone(fn, a: Bounded, increasing: bool = True):
    with np.errstate(all="ignore"):
        lo, hi = fn(a.lo), fn(a.hi)
    return (lo, hi) if increasing else (hi, lo)


def _rule_abs(a: Bounded, x):
    lo = np.where(a.lo >= 0, a.lo, np.where(a.hi <= 0, -a.hi, 0.0))
    hi = np.maximum(np.abs(a.lo), np.abs(a.hi))
    return lo, hi, None


def _rule_domain(fn, a: Bounded, x, increasing=True):
    """sqrt/log/rsqrt: defined on [0, inf); an interval reaching below 0 around a defined value may be NaN."""
    with np.errstate(all="ignore"):
        lo, hi = fn(np.maximum(a.lo, 0.0)), fn(np.maximum(a.hi, 0.0))
    if not increasing:
        lo, hi = hi, lo
    unc = (a.lo < 0) & (a.hi >= 0)
    return lo, hi, unc


def _rule_pow(a: Bounded, b: Bounded, x):
    with np.errstate(all="ignore"):
        lo, hi = _corners(np.power, a, b)
        positive = a.lo > 0
        point_int = (b.lo == b.hi) & (np.floor(b.lo) == b.lo) & np.isfinite(b.lo)
        # integer exponent, base reaching 0 or below: the ends, and 0 where the base crosses it
        ends = [np.power(a.lo, b.lo), np.power(a.hi, b.lo)]
        crosses = (a.lo <= 0) & (a.hi >= 0)
        zero = np.where(crosses, np.power(0.0, b.lo), ends[0])
        ilo, ihi = _hull(ends + [zero])
        pole = crosses & (b.lo < 0)
        ilo = np.where(pole, -np.inf, ilo)
        ihi = np.where(pole, np.inf, ihi)
        lo = np.where(positive, lo, np.where(point_int, ilo, lo))
        hi = np.where(positive, hi, np.where(point_int, ihi, hi))
        unc = ~positive & ~point_int     # negative base, non-integer exponent: NaN or not
    return lo, hi, unc


def _rule_lerp(a: Bounded, b: Bounded, w: Bounded, x):
    # (1 - w) a + w b is multilinear: its extremes over a box are at the corners
    return (*_corners(lambda p, q, r: p + r * (q - p), a, b, w), None)


def _rule_sign(a: Bounded, x):
    unc = (a.lo <= 0) & (a.hi >= 0) & (a.lo != a.hi)
    return x, x, unc


def _rule_div(a: Bounded, b: Bounded, x):
    lo, hi = _corners(lambda p, q: p / q, a, b)
    pole = (b.lo <= 0) & (b.hi >= 0) & (b.lo != b.hi)
    return np.where(pole, -np.inf, lo), np.where(pole, np.inf, hi), None


_NUM_RULES = {
    Op.NEG: lambda a, x: (-a.hi, -a.lo, None),
    Op.ABS: _rule_abs,
    Op.SQRT: lambda a, x: _rule_domain(np.sqrt, a, x),
    Op.RSQRT: lambda a, x: _rule_domain(lambda v: 1.0 / np.sqrt(v), a, x, increasing=False),
    Op.LOG: lambda a, x: _rule_domain(np.log, a, x),
    Op.EXP: lambda a, x: (*_monotone(np.exp, a), None),
    Op.SIGN: _rule_sign,
    Op.COPY: lambda a, x: (a.lo, a.hi, None),
    Op.ADD: lambda a, b, x: (a.lo + b.lo, a.hi + b.hi, None),
    Op.SUB: lambda a, b, x: (a.lo - b.hi, a.hi - b.lo, None),
    Op.MUL: lambda a, b, x: (*_corners(lambda p, q: p * q, a, b), None),
    Op.DIV: _rule_div,
    Op.POW: _rule_pow,
    Op.MIN: lambda a, b, x: (np.minimum(a.lo, b.lo), np.minimum(a.hi, b.hi), None),
    Op.MAX: lambda a, b, x: (np.maximum(a.lo, b.lo), np.maximum(a.hi, b.hi), None),
    Op.CLAMP: lambda a, lo, hi, x: (np.minimum(np.maximum(a.lo, lo.lo), hi.lo),
                                     np.minimum(np.maximum(a.hi, lo.hi), hi.hi), None),
    Op.LERP: _rule_lerp,
}


def _compare_certain(op: Op, a: Bounded, b: Bounded):
    """(certainly true, certainly false) of a comparison of two intervals."""
    if op is Op.LT:
        return a.hi < b.lo, a.lo >= b.hi
    if op is Op.LE:
        return a.hi <= b.lo, a.lo > b.hi
    if op is Op.GT:
        return a.lo > b.hi, a.hi <= b.lo
    if op is Op.GE:
        return a.lo >= b.hi, a.hi < b.lo
    same = (a.lo == a.hi) & (b.lo == b.hi) & (a.lo == b.lo)
    apart = (a.hi < b.lo) | (b.hi < a.lo)
    return (same, apart) if op is Op.EQ else (apart, same)


def bounded_apply(op: Op, args: Sequence[Bounded], tensor: bool, prec: Precision) -> Bounded:
    """One operation on bounded values: exact value from the numpy column, interval from the rules."""
    x = _exact_apply(op, [a.x for a in args])
    unc = args[0].unc
    for a in args[1:]:
        unc = unc | a.unc
    with np.errstate(all="ignore"):
        if op in (Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE):
            a, b = args
            certain_true, certain_false = _compare_certain(op, a, b)
            nan = np.isnan(a.x) | np.isnan(b.x)
            return Bounded(x, None, None, _norm(unc | (~(certain_true | certain_false) & ~nan)))
        if op in (Op.AND, Op.OR):
            a, b = args
            decided = (~a.x & ~a.unc) | (~b.x & ~b.unc) if op is Op.AND else (a.x & ~a.unc) | (b.x & ~b.unc)
            return Bounded(x, None, None, _norm((a.unc | b.unc) & ~decided))
        if op is Op.NOT:
            return Bounded(x, None, None, unc)
        if op is Op.WHERE:
            c, a, b = args
            if a.is_bool:
                return Bounded(x, None, None, _norm(np.where(c.x, a.unc, b.unc) | c.unc))
            lo = np.where(c.x, a.lo, b.lo)
            hi = np.where(c.x, a.hi, b.hi)
            return Bounded(x, _norm(lo), _norm(hi), _norm(np.where(c.x, a.unc, b.unc) | c.unc))
        rule = _NUM_RULES.get(op)
        if rule is None:    # an op without a bounds rule: its hull over the corners (monotone ops only)
            lo, hi = _corners(lambda *v: numpy_form(op)(*v), *args)
            extra = None
        else:
            lo, hi, extra = rule(*args, x)
        if extra is not None:
            unc = unc | extra
        u = prec.compute if tensor else prec.host
        tiny = prec.tiny if tensor else 0.0
        k = prec.ulps.get(op, prec.default_ulps) if tensor else prec.host_ulps.get(op, 0.0)
        if op is Op.POW and tensor:   # exp2(y * log2(x)): the error grows with |y log2 x|
            k = k + 2.0 * np.nan_to_num(np.abs(args[1].x * np.log2(np.abs(args[0].x))), nan=0.0, posinf=1e30)
        lo, hi = _widen(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64), k, u, tiny)
        if op is Op.LERP:   # a + w (b - a): the inner roundings scale with |a| + |b|, not with the result
            a, b, w = args
            inner = (np.maximum(np.abs(a.lo), np.abs(a.hi)) + np.maximum(np.abs(b.lo), np.abs(b.hi))) * \
                np.maximum(np.maximum(np.abs(w.lo), np.abs(w.hi)), np.maximum(np.abs(1 - w.lo), np.abs(1 - w.hi)))
            lo, hi = lo - k * u * inner, hi + k * u * inner
        if tensor:
            lo, hi = _overflow(lo, hi, prec.overflow)
        lo, hi = _sanitize(x, lo, hi)
    return Bounded(x, lo, hi, _norm(unc))


def _representable(x, u: float) -> bool:
    """x is exactly a number of the precision whose unit roundoff is u (e.g. 3.0 in bfloat16)."""
    bits = int(round(-np.log2(u)))
    with np.errstate(all="ignore"):
        m, _ = np.frexp(np.asarray(x, dtype=np.float64))
        scaled = m * 2.0 ** bits
        return bool(np.all(~np.isfinite(x) | (np.floor(scaled) == scaled)))


def _convert(b: Bounded, prec: Precision) -> Bounded:
    """A host number entering elementwise math is rounded to the compute dtype (unless it is one)."""
    if b.is_bool or (np.ndim(b.x) == 0 and b.lo == b.hi and _representable(b.x, prec.compute)):
        return b
    lo, hi = _widen(np.asarray(b.lo, dtype=np.float64), np.asarray(b.hi, dtype=np.float64), 1.0, prec.compute, 0.0)
    lo, hi = _overflow(lo, hi, prec.overflow)
    lo, hi = _sanitize(b.x, lo, hi)
    return Bounded(b.x, lo, hi, b.unc)


def _stored(b: Bounded, u: float, k: float, tiny: float, limit: float) -> Bounded:
    lo, hi = _widen(np.asarray(b.lo, dtype=np.float64), np.asarray(b.hi, dtype=np.float64), k, u, tiny)
    lo, hi = _overflow(lo, hi, limit)
    lo, hi = _sanitize(b.x, lo, hi)
    return Bounded(b.x, lo, hi, b.unc)


# ---- the interpreter -----------------------------------------------------------------------

ABSENT = None   # an `empty` state before its first store, or a state whose condition does not hold


@dataclass
class _Context:
    param: Any
    grad: Any
    step: Any
    state: dict
    shape: tuple
    env: dict = field(default_factory=dict)
    taint: bool = False   # an `if` took a side the error bounds could not settle


class Interpreter:
    """One parameter group of a compiled program, run in float64 straight from the IR.

    `state[i]` is tensor i's state: {"step": float (when the program uses it), <state name>:
    array | float}; a state that is absent (not active, or `empty` and never stored) has no key."""

    def __init__(self, program: Program, hypers: Mapping[str, Any] | None = None,
                 flags: Mapping[str, bool] | None = None, *, bounds: bool = False, validate: bool = True):
        self.program = program
        self.hypers: dict[str, Any] = {h.name: h.default for h in program.hypers}
        self.flags: dict[str, bool] = {f.name: f.default for f in program.flags}
        for name, value in (hypers or {}).items():
            if name not in self.hypers:
                raise KeyError(f"{program.name} has no hyper {name!r}")
            self.hypers[name] = tuple(value) if isinstance(value, (tuple, list)) else value
        for name, value in (flags or {}).items():
            if name not in self.flags:
                raise KeyError(f"{program.name} has no flag {name!r}")
            self.flags[name] = bool(value)
        self.bounded = bounds
        self.state: dict[int, dict[str, Any]] = {}
        if validate:
            self.validate()

    # ---- hypers, flags, requires ------------------------------------------------------------
    def host(self, v: Value):
        """A host value (hypers, flags, numbers) in float64, exactly."""
        ctx = _Context(None, None, None, {}, ())
        out = self._eval(v, ctx, {}, Precision() if self.bounded else None)
        return out.x if isinstance(out, Bounded) else out

    def validate(self) -> None:
        """The checks the generated __init__ makes: `where` clauses and `require`s. Raises ValueError."""
        for h in self.program.hypers:
            for check in h.checks:
                if not bool(self.host(check[0])):
                    raise ValueError(f"{check[1]} ({h.name}={self.hypers[h.name]!r})")
        for cond, message in self.program.requires:
            if not bool(self.host(cond)):
                raise ValueError(message)

    def active_states(self) -> dict[str, Any]:
        """name -> initial value kind of the states this group keeps (their conditions hold)."""
        return {s.name: s.init for s in self.program.states if s.cond is None or bool(self.host(s.cond))}

    def _initial(self, s, param_shape, prec: Precision | None):
        init = s.init
        if isinstance(init, str) and init not in ("zeros", "empty"):
            init = self.hypers[init]
        if s.kind is Kind.TENSOR_SCALAR:
            value = np.float64(0.0 if init == "zeros" else init)
            if self.bounded:
                return _stored(Bounded.point(value), prec.scalar_store, 1.0, prec.scalar_tiny, FLT_MAX)
            return value
        value = np.zeros(param_shape) if init == "zeros" else np.full(param_shape, float(init))
        if self.bounded:
            return _stored(Bounded.point(value), prec.store, prec.store_ulps, prec.store_tiny, prec.store_overflow)
        return value

    # ---- state access for the fuzzer -----------------------------------------------------------
    def load(self, i: int, step: float | None, states: Mapping[str, Any]) -> None:
        """Set tensor i's step and states (absent where missing or None), e.g. from a backend's own."""
        st: dict[str, Any] = {}
        if step is not None:
            st["step"] = float(step)
        for name, value in states.items():
            if value is None:
                continue
            value = np.asarray(value, dtype=np.float64).copy() if np.ndim(value) else np.float64(value)
            st[name] = Bounded.point(value) if self.bounded else value
        self.state[i] = st

    # ---- one step ----------------------------------------------------------------------------
    def step(self, params: Sequence[Any], grads: Sequence[Any], precisions: Sequence[Precision] | None = None) -> list:
        """One optimizer step over the group's tensors. Returns the new parameters (float64
        arrays; `Bounded` with bounds=True); a tensor whose grad is None is left as it was."""
        p = self.program
        active = self.active_states()
        out = []
        for i, (param, grad) in enumerate(zip(params, grads)):
            param = np.asarray(param, dtype=np.float64)
            if grad is None:
                out.append(Bounded.point(param.copy()) if self.bounded else param.copy())
                continue
            prec = (precisions[i] if precisions is not None else Precision()) if self.bounded else None
            grad = np.asarray(grad, dtype=np.float64)
            st = self.state.setdefault(i, {})
            if p.uses_step:
                st["step"] = st.get("step", 0.0) + 1.0
            for s in p.states:
                if s.name in active and s.name not in st and s.init != "empty":
                    st[s.name] = self._initial(s, param.shape, prec)
            if self.bounded:
                ctx = _Context(Bounded.point(param.copy()), Bounded.point(grad), Bounded.point(np.float64(st.get("step", 0.0))),
                               st, param.shape)
            else:
                ctx = _Context(param.copy(), grad, np.float64(st.get("step", 0.0)), st, param.shape)
            self._block(p.body, ctx, prec)
            if ctx.taint:   # an `if` went one way where a backend may go the other: every output is unsettled
                everywhere = lambda b: b.with_unc(np.ones(np.shape(b.x), dtype=bool))  # noqa: E731
                ctx.param = everywhere(ctx.param)
                for name, value in st.items():
                    if isinstance(value, Bounded):
                        st[name] = everywhere(value)
            out.append(ctx.param)
        return out

    def _block(self, stmts: Sequence[Stmt], ctx: _Context, prec) -> None:
        for s in stmts:
            if isinstance(s, Let):
                ctx.env[s.name] = self._eval(s.value, ctx, {}, prec)
            elif isinstance(s, Store):
                memo: dict = {}
                value = self._eval(s.value, ctx, memo, prec)
                if self.bounded and s.value.op in (Op.ADD, Op.SUB) and s.target != "param" and \
                        self.program.state(s.target).kind is Kind.TENSOR_SCALAR:
                    # `mu = mu + h` is mu's own in-place float32 op: h is rounded to float32 first, an
                    # error that scales with |h|, not with the sum
                    mags = sum(np.maximum(np.abs(a.lo), np.abs(a.hi)) for a in (memo.get(id(x)) for x in s.value.args)
                               if a is not None and not a.is_bool)
                    k = prec.scalar_store_ulps * prec.scalar_store * mags
                    value = Bounded(value.x, value.lo - k, value.hi + k, value.unc)
                self._store(s.target, value, ctx, prec)
            elif isinstance(s, If):
                c = self._eval(s.cond, ctx, {}, prec)
                if self.bounded:
                    if np.ndim(c.x):
                        raise InterpError("an `if` condition varies per element")
                    if bool(c.unc):
                        ctx.taint = True
                    taken = bool(c.x)
                else:
                    if np.ndim(c):
                        raise InterpError("an `if` condition varies per element")
                    taken = bool(c)
                self._block(s.then if taken else s.other, ctx, prec)
            else:
                raise InterpError(f"unknown statement {type(s).__name__}")

    def _store(self, target: str, value, ctx: _Context, prec) -> None:
        scalar = target != "param" and self.program.state(target).kind is Kind.TENSOR_SCALAR
        if self.bounded:
            if scalar:
                if np.ndim(value.x):
                    raise InterpError(f"scalar state {target!r} stored from a per-element value")
                value = _stored(value, prec.scalar_store, prec.scalar_store_ulps, prec.scalar_tiny, FLT_MAX)
            else:
                shape = ctx.shape
                value = Bounded(np.broadcast_to(value.x, shape).astype(np.float64),
                                np.broadcast_to(value.lo, shape).astype(np.float64),
                                np.broadcast_to(value.hi, shape).astype(np.float64),
                                np.broadcast_to(value.unc, shape).copy())
                value = _stored(value, prec.store, prec.store_ulps, prec.store_tiny, prec.store_overflow)
            if ctx.taint:
                value = value.with_unc(np.ones(np.shape(value.x), dtype=bool))
        else:
            if scalar:
                if np.ndim(value):
                    raise InterpError(f"scalar state {target!r} stored from a per-element value")
                value = np.float64(value)
            else:
                value = np.broadcast_to(np.asarray(value, dtype=np.float64), ctx.shape).copy()
        if target == "param":
            ctx.param = value
        else:
            ctx.state[target] = value

    # ---- values ----------------------------------------------------------------------------
    def _leaf(self, v: Value, ctx: _Context):
        op = v.op
        if op is Op.CONST:
            x = _num(v.arg)
        elif op is Op.HYPER:
            name, index = v.arg
            value = self.hypers[name]
            x = np.float64(value if index is None else value[index])
        elif op is Op.FLAG:
            x = np.bool_(self.flags[v.arg])
        elif op is Op.STEP:
            return ctx.step
        elif op is Op.PARAM:
            return ctx.param
        elif op is Op.GRAD:
            return ctx.grad
        elif op is Op.STATE:
            if v.arg not in ctx.state:
                raise InterpError(f"state {v.arg!r} is read while it is absent (`empty` before its first "
                                  "store, or its condition does not hold)")
            return ctx.state[v.arg]
        elif op is Op.VAR:
            if v.arg not in ctx.env:
                raise InterpError(f"local {v.arg!r} is read before it is bound")
            return ctx.env[v.arg]
        elif op is Op.IS_EMPTY:
            x = np.bool_(v.arg not in ctx.state)
        else:
            raise InterpError(f"the interpreter does not know leaf {op.name}")
        return Bounded.point(x) if self.bounded else x

    def _eval(self, v: Value, ctx: _Context, memo: dict, prec):
        key = id(v)
        if key in memo:
            return memo[key]
        op = v.op
        bounded = self.bounded
        if op in LEAF:
            out = self._leaf(v, ctx)
        elif op is Op.WHERE or op in (Op.AND, Op.OR):
            out = self._lazy(v, ctx, memo, prec)
        else:
            args = [self._eval(a, ctx, memo, prec) for a in v.args]
            out = self._apply(v, args, prec) if bounded else _exact_apply(op, args)
        memo[key] = out
        return out

    def _apply(self, v: Value, args, prec):
        tensor = v.kind is Kind.TENSOR
        if tensor:
            args = [_convert(a, prec) if node.kind < Kind.TENSOR else a for a, node in zip(args, v.args)]
        return bounded_apply(v.op, args, tensor, prec)

    def _lazy(self, v: Value, ctx: _Context, memo: dict, prec):
        """`c ? a : b` and `a and b` / `a or b` with a host or per-tensor left side evaluate only
        what the loop path evaluates (a guarded state may be absent on the other side)."""
        bounded = self.bounded
        first = self._eval(v.args[0], ctx, memo, prec)
        fx = first.x if bounded else first
        if np.ndim(fx) == 0:
            unsettled = bounded and bool(first.unc)
            if v.op is Op.WHERE:
                out = self._eval(v.args[1] if bool(fx) else v.args[2], ctx, memo, prec)
                return out.with_unc(np.ones(np.shape(out.x), dtype=bool)) if unsettled else out
            if (v.op is Op.AND and not bool(fx)) or (v.op is Op.OR and bool(fx)):
                return first
        args = [first] + [self._eval(a, ctx, memo, prec) for a in v.args[1:]]
        return self._apply(v, args, prec) if bounded else _exact_apply(v.op, args)


# ---- convenience ---------------------------------------------------------------------------------


def run(program: Program, params: Sequence[Any], grad_fn, steps: int, hypers=None, flags=None) -> tuple[list, Interpreter]:
    """`steps` steps from `params` with grads from grad_fn(step, i, param) -> array | None."""
    interp = Interpreter(program, hypers, flags)
    params = [np.asarray(p, dtype=np.float64).copy() for p in params]
    for k in range(steps):
        grads = [grad_fn(k, i, p) for i, p in enumerate(params)]
        params = interp.step(params, grads)
    return params, interp


def is_close(a, b, rtol: float, atol: float) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(all="ignore"):
        return bool(np.all((np.abs(a - b) <= atol + rtol * np.abs(b)) | (np.isnan(a) & np.isnan(b)) | (a == b)))


__all__ = ["Interpreter", "InterpError", "Precision", "Bounded", "bounded_apply", "numpy_form", "run", "is_close"]
