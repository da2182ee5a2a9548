"""The IR interpreter's arithmetic (optdsl.interp runs the statements): the numpy column of
builtins.OPS as functions, reductions (builtins.REDUCTIONS: map, fold, finish), and the error
bounds of `Bounded` values.

Error bounds: beside each exact float64 value an interval holding every value a backend
computing in a narrower precision may produce (the numbers come from a `Precision`, built by
optdsl/fuzz/tolerance.py), and a mask of the elements whose value hangs on a decision the
interval cannot settle.

Reductions. A reduction is finish(fold(map(x)), n). The bound of a fold "sum" of n mapped
terms m_i computed in floating point (any order: recursive, pairwise, per block then a
fixed-order combine, torch's vectorised cascade) is the classical one for a summation tree of
height at most n - 1 (Higham, Accuracy and Stability, 4.2):

    |fl(sum) - sum| <= gamma(k (n - 1), u_acc) * sum |m_i|,  gamma(j, u) = j u / (1 - j u)

with u_acc the unit roundoff of the accumulator (float32: torch accumulates bf16/fp16
reductions in float32, the fused kernels compute in float32) and k the roundings per addition
(Precision.ulps[ADD], which carries the safety factor). A map that multiplies (norm's x * x,
dot's x * y) adds its own rounding per term, in the compute precision; |x| is exact. A pairwise
or blocked order has a smaller tree height (log2 n, or log2 B + n / B), but which order each
backend uses is theirs to change, so the bound assumes none. The terms' own uncertainty (the
interval of each x_i) goes through the map exactly (the fold of the lower ends, of the upper
ends). Then the finish (/ n, sqrt) and the rounding of the result to the compute dtype cost
Precision.ulps[op] roundings. amax is exact: a max of the inputs' own intervals. Group scope:
each tensor's part as above, rounded to its compute dtype (Precision.reduce_part_ulps: a part
may be a norm that is squared again), then T parts combined by the same summation bound.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .builtins import OPS, REDUCTIONS
from .interp_axes import axis_fold, cover_counts, cover_fold
from .ir import ARITY, AXIS_SCOPES, Op, dim_size
from .matrix_ops import newton_schulz_float64

# ---- the numpy column of builtins.OPS, as functions ---------------------------------------


def _lerp(a, b, w):
    """torch.lerp's formula, exact at both ends."""
    a, b, w = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), np.asarray(w, dtype=np.float64)
    return np.where(np.abs(w) < 0.5, a + w * (b - a), b - (b - a) * (1 - w))


def _sigmoid(x):
    """1 / (1 + exp(-x)) without overflow, accurate for very negative x (where 1 / (1 + e^-x) is tiny)."""
    x = np.asarray(x, dtype=np.float64)
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


_NAMESPACE = {"np": np, "_lerp": _lerp, "_sigmoid": _sigmoid, "_newton_schulz": newton_schulz_float64}
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
FLT_EPS = float(np.finfo(np.float32).eps)


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
    accumulate   unit roundoff of a reduction's additions (float32: torch accumulates bf16/fp16 in it)
    reduce_part_ulps  roundings of one tensor's part of a group reduction (rounded to its dtype, and
                 a norm squared again: relative, on the folded value)
    Reductions read ulps[op] (an op of ir.REDUCE) as the roundings of their finish and result, and
    ulps[ADD] / ulps[MUL] per addition of the fold / per term of a multiplying map.
    """
    compute: float = 2.0 ** -24
    store: float = 2.0 ** -24
    scalar_store: float = 2.0 ** -24
    host: float = 2.0 ** -52
    ulps: Mapping[Op, float] = field(default_factory=dict)
    host_ulps: Mapping[Op, float] = field(default_factory=lambda: {Op.SQRT: 1.0, Op.RSQRT: 2.0, Op.EXP: 1.0,
                                                                   Op.LOG: 1.0, Op.POW: 1.0, Op.SIGMOID: 2.0,
                                                                   Op.TANH: 1.0, Op.SOFTPLUS: 3.0, Op.LOG1P: 1.0,
                                                                   Op.EXPM1: 1.0, Op.CBRT: 1.0})
    default_ulps: float = 4.0
    store_ulps: float = 1.0
    scalar_store_ulps: float = 2.0
    tiny: float = 2.0 ** -126
    store_tiny: float = 2.0 ** -126
    scalar_tiny: float = 2.0 ** -126     # scalar states are float32: subnormals below this
    overflow: float = FLT_MAX
    store_overflow: float = FLT_MAX
    accumulate: float = 2.0 ** -24
    reduce_part_ulps: float = 4.0


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


def _rule_domain(fn, a: Bounded, x, increasing=True, start: float = 0.0):
    """sqrt/log/rsqrt: defined on [0, inf) (log1p: on [-1, inf)); an interval reaching below the start
    around a defined value may be NaN."""
    with np.errstate(all="ignore"):
        lo, hi = fn(np.maximum(a.lo, start)), fn(np.maximum(a.hi, start))
    if not increasing:
        lo, hi = hi, lo
    unc = (a.lo < start) & (a.hi >= start)
    return lo, hi, unc


def _rule_floor(a: Bounded, x):
    """floor jumps at each integer: where the interval reaches across one, the value hangs on a decision
    the bounds cannot settle (as sign's at 0), and stays the exact one; elsewhere it is one integer."""
    with np.errstate(all="ignore"):
        lo, hi = np.floor(a.lo), np.floor(a.hi)
        unc = lo != hi
    return np.where(unc, x, lo), np.where(unc, x, hi), unc


def _rule_mod(a: Bounded, b: Bounded, x):
    """mod(a, b) = a - b n, n = floor(a / b): continuous while n holds, and n is a decision, as floor's. It is
    settled where a / b over the box's corners has the exact n as its floor, even rounded up by a few fp32
    ulps (the fused kernel divides in fp32 before it floors; a correctly rounded quotient never drops below
    an integer it is at least, but may reach the next one); there the bounds are a - b n over the corners.
    Elsewhere the value hangs on the decision (a divisor reaching 0 or infinity, a quotient of 2^21 or more,
    a dividend reaching infinity included)."""
    with np.errstate(all="ignore"):
        n = np.floor(a.x / b.x)
        q_lo, q_hi = _corners(lambda p, q: p / q, a, b)
        slack = 8.0 * 2.0 ** -24 * np.maximum(np.abs(q_lo), np.abs(q_hi))
        settled = (np.floor(q_lo) == n) & (np.floor(q_hi + slack) == n) & np.isfinite(n) \
            & ((b.lo > 0) | (b.hi < 0)) & np.isfinite(b.lo) & np.isfinite(b.hi)
        lo, hi = _corners(lambda p, q: p - q * n, a, b)
    return np.where(settled, lo, x), np.where(settled, hi, x), ~settled & ~np.isnan(x)


def _monotone_rule(fn):
    return lambda a, x: (*_monotone(fn, a), None)


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
    Op.SIGMOID: _monotone_rule(_sigmoid),
    Op.TANH: _monotone_rule(np.tanh),
    Op.SOFTPLUS: _monotone_rule(lambda v: np.logaddexp(0.0, v)),
    Op.LOG1P: lambda a, x: _rule_domain(np.log1p, a, x, start=-1.0),
    Op.EXPM1: _monotone_rule(np.expm1),
    Op.CBRT: _monotone_rule(np.cbrt),
    Op.FLOOR: _rule_floor,
    Op.MOD: _rule_mod,
    # bfloat16 matmuls, iterated: no interval this table can state holds them (the fuzzer does not draw
    # newton_schulz; optdsl verify checks it against torch.optim.Muon)
    Op.NEWTON_SCHULZ: lambda m, a, b, c, steps, eps, x: (np.full(np.shape(x), -np.inf), np.full(np.shape(x), np.inf), None),
    Op.SIGN: _rule_sign,
    Op.COPY: lambda a, x: (a.lo, a.hi, None),
    # a cover stacked on a leading axis: the min of each end (monotone, exact)
    Op.COVER_MIN: lambda a, x: (np.min(a.lo, axis=0), np.min(a.hi, axis=0), None),
    Op.ITEM: lambda a, x: (a.lo, a.hi, None),   # a float32 read into a float64: exact
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


# Roundings an op built on exp may cost beyond its op class, by its argument x. A GPU's fp32 exp is
# ex2.approx(x * log2(e)): the product's rounding is an error of |x| log2(e) ulps in the result, which
# optdsl/triton_lib.py's helpers carry through (times how much they amplify it) where the result is not
# much smaller than exp's own error: sigmoid and softplus below 0 (the result is e^x), expm1 beyond its
# polynomial (|x| > 0.5, the subtraction amplifying by e^|x| / |e^x - 1| <= 2.54), tanh beyond its
# polynomial (2|x| > 0.5; t = e^-2|x| - 1, amplified by 2.54, then by at most 2).
_LOG2E = 1.4426950408889634
EXP_ARGUMENT_ULPS = {
    Op.SIGMOID: lambda x: _LOG2E * np.maximum(-x, 0.0),
    Op.SOFTPLUS: lambda x: _LOG2E * np.maximum(-x, 0.0),
    Op.EXPM1: lambda x: np.where(np.abs(x) > 0.5, 2.54 * _LOG2E * np.abs(x), 0.0),
    Op.TANH: lambda x: np.where(np.abs(x) > 0.25, 2.0 * 2.54 * _LOG2E * 2.0 * np.abs(x) * np.exp(0.5 - 2.0 * np.abs(x)), 0.0),
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
    if op is Op.COVER_MIN:   # a cover's accumulators (the leading axis) to one value per element
        unc = np.any(unc, axis=0)
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
        if op in EXP_ARGUMENT_ULPS and tensor:
            k = k + 2.0 * np.nan_to_num(EXP_ARGUMENT_ULPS[op](np.asarray(args[0].x, dtype=np.float64)),
                                        nan=0.0, posinf=1e30)
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




# ---- reductions ------------------------------------------------------------------------------
#
# Shapes: a tensor-scope (and group-scope) result is a 0-d value (a numpy scalar), a channel-scope
# result has shape (size(0), 1, ..., 1) (a 0-d tensor is one channel: shape ()), so that it
# broadcasts back along the other dims, as optdsl.runtime's channel forms do.

_RED_MAP: dict[Op, Any] = {}
_RED_FINISH: dict[Op, Any] = {}


def reduction_map(op: Op):
    """REDUCTIONS[op].numpy (the elementwise contribution) as a function of the operands."""
    fn = _RED_MAP.get(op)
    if fn is None:
        names = [f"a{i}" for i in range(ARITY[op])]
        fn = eval(f"lambda {', '.join(names)}: {REDUCTIONS[op].numpy.format(*names)}", dict(_NAMESPACE))  # noqa: S307
        _RED_MAP[op] = fn
    return fn


def reduction_finish(op: Op):
    """REDUCTIONS[op].finish_numpy as a function of the folded value r and the element count n."""
    fn = _RED_FINISH.get(op)
    if fn is None:
        fn = eval(f"lambda r, n: {REDUCTIONS[op].finish_numpy.format(r='r', n='n')}", dict(_NAMESPACE))  # noqa: S307
        _RED_FINISH[op] = fn
    return fn


def _fold_fn(op: Op, values, axis):
    """The fold of REDUCTIONS[op]: "sum", or "max" (of a nonnegative map, |x|: 0 for no elements, as torch)."""
    if REDUCTIONS[op].fold == "sum":
        return np.sum(values, axis=axis)
    assert REDUCTIONS[op].fold == "max", REDUCTIONS[op].fold
    return np.max(values, axis=axis, initial=0.0)


def channels_of(a, shape: tuple):
    """a (broadcast to `shape`) as a (channels, elements per channel) array; a 0-d tensor is one channel."""
    a = np.broadcast_to(np.asarray(a), shape)
    c = shape[0] if shape else 1
    return a.reshape(c, int(np.prod(shape[1:], dtype=np.int64)) if shape else 1)


def _per_channel(r, shape: tuple):
    return _norm(np.asarray(r).reshape((-1,) + (1,) * (len(shape) - 1)) if shape else np.asarray(r).reshape(()))


def scope_count(scope: str, shape: tuple) -> int:
    """Elements one reduction of `scope` folds in a tensor of `shape` (group: this tensor's part)."""
    numel = int(np.prod(shape, dtype=np.int64))
    if scope == "channel":
        return int(np.prod(shape[1:], dtype=np.int64)) if shape else 1
    if scope in AXIS_SCOPES:
        return dim_size(shape, -1 if scope == "row" else -2)
    if scope == "cover":
        return cover_counts(shape)
    return numel


@dataclass
class Partial:
    """A fold before its finish: one tensor's part of a group reduction, or (bounds) any fold.
    x: the exact fold; lo, hi: the fold of the inputs' interval ends (no rounding); err: the
    absolute rounding error of the fold so far; mag: sum of |m_i| over the terms' intervals;
    n: elements folded; unc: the value hangs on an unsettled decision; u: compute unit roundoff."""
    x: Any
    n: int
    lo: Any = None
    hi: Any = None
    err: Any = 0.0
    mag: Any = 0.0
    unc: Any = False
    u: float = 0.0


def exact_fold(op: Op, args, shape: tuple, scope: str) -> Partial:
    """The fold of op over `args` (broadcast to the parameter's shape), per channel or whole."""
    with np.errstate(all="ignore"):
        m = reduction_map(op)(*[np.broadcast_to(np.asarray(a, dtype=np.float64), shape) for a in args])
        m = np.broadcast_to(m, shape)
        if scope == "channel":
            return Partial(_per_channel(_fold_fn(op, channels_of(m, shape), 1), shape), scope_count(scope, shape))
        if scope in AXIS_SCOPES:
            return Partial(axis_fold(lambda v, ax: _fold_fn(op, v, ax), m, shape, scope), scope_count(scope, shape))
        if scope == "cover":
            return Partial(cover_fold(lambda v, ax: _fold_fn(op, v, ax), m, shape), scope_count(scope, shape))
        return Partial(_norm(np.asarray(_fold_fn(op, m.reshape(-1), 0))), m.size)


def exact_finish(op: Op, part: Partial):
    with np.errstate(all="ignore"):
        return _norm(np.asarray(reduction_finish(op)(part.x, np.float64(part.n)), dtype=np.float64))


def exact_combine(op: Op, parts: Sequence[Partial]) -> Partial:
    """The group's fold from each tensor's part (none: the fold of no elements)."""
    xs = np.array([p.x for p in parts], dtype=np.float64)
    with np.errstate(all="ignore"):
        return Partial(_norm(np.asarray(_fold_fn(op, xs, 0))), sum(p.n for p in parts))


def reduce_exact(op: Op, scope: str, args, shape: tuple):
    """A tensor- or channel-scope reduction in float64."""
    return exact_finish(op, exact_fold(op, args, shape, scope))


# interval rules of the maps of builtins.REDUCTIONS, by their numpy text:
# (lo, hi of the term from the operands' Bounded, whether it rounds, whether it is >= 0)
def _map_identity(a):
    return a.lo, a.hi


def _map_square(a):
    sq_lo, sq_hi = a.lo * a.lo, a.hi * a.hi
    crosses = (a.lo <= 0) & (a.hi >= 0)
    return np.where(crosses, 0.0, np.minimum(sq_lo, sq_hi)), np.maximum(sq_lo, sq_hi)


def _map_product(a, b):
    return _corners(lambda p, q: p * q, a, b)


def _map_abs(a):
    lo, hi, _ = _rule_abs(a, None)
    return lo, hi


MAP_RULES = {
    "{0}": (_map_identity, False, False),
    "({0} * {0})": (_map_square, True, True),
    "({0} * {1})": (_map_product, True, False),
    "np.abs({0})": (_map_abs, False, True),
}
assert all(r.numpy in MAP_RULES for r in REDUCTIONS.values()), "a reduction map without an interval rule"


def _gamma(j, u: float):
    """j u / (1 - j u): the relative error bound of j roundings (inf once j u reaches 1)."""
    ju = np.asarray(j, dtype=np.float64) * u
    with np.errstate(all="ignore"):
        return np.where(ju < 0.5, ju / (1 - ju), np.inf)


def _broad(b: Bounded, shape: tuple) -> Bounded:
    return Bounded(np.broadcast_to(np.asarray(b.x, dtype=np.float64), shape),
                   np.broadcast_to(np.asarray(b.lo, dtype=np.float64), shape),
                   np.broadcast_to(np.asarray(b.hi, dtype=np.float64), shape),
                   np.broadcast_to(np.asarray(b.unc, dtype=bool), shape))


def bounded_fold(op: Op, args: Sequence[Bounded], shape: tuple, scope: str, prec: Precision) -> Partial:
    """The fold of op with its error bound (see the module docstring), per channel or whole."""
    rule, rounds, _ = MAP_RULES[REDUCTIONS[op].numpy]
    args = [_broad(a, shape) for a in args]
    exact = exact_fold(op, [a.x for a in args], shape, scope)
    with np.errstate(all="ignore"):
        mlo, mhi = (np.broadcast_to(v, shape) for v in rule(*args))
        mabs = np.maximum(np.abs(mlo), np.abs(mhi))
        unc = np.broadcast_to(np.logical_or.reduce([a.unc for a in args]), shape)
        if scope == "channel":
            fold = lambda v: _per_channel(_fold_fn(op, channels_of(v, shape), 1), shape)  # noqa: E731
            total = lambda v: _per_channel(np.sum(channels_of(v, shape), axis=1), shape)  # noqa: E731
            anyof = lambda v: _per_channel(np.any(channels_of(v, shape), axis=1), shape)  # noqa: E731
        elif scope in AXIS_SCOPES:
            fold = lambda v: axis_fold(lambda x, ax: _fold_fn(op, x, ax), v, shape, scope)  # noqa: E731
            total = lambda v: axis_fold(lambda x, ax: np.sum(x, axis=ax), v, shape, scope)  # noqa: E731
            anyof = lambda v: axis_fold(lambda x, ax: np.any(x, axis=ax), v, shape, scope)  # noqa: E731
        elif scope == "cover":
            fold = lambda v: cover_fold(lambda x, ax: _fold_fn(op, x, ax), v, shape)  # noqa: E731
            total = lambda v: cover_fold(lambda x, ax: np.sum(x, axis=ax), v, shape)  # noqa: E731
            anyof = lambda v: cover_fold(lambda x, ax: np.any(x, axis=ax), v, shape)  # noqa: E731
        else:
            fold = lambda v: _norm(np.asarray(_fold_fn(op, np.reshape(v, -1), 0)))  # noqa: E731
            total = lambda v: _norm(np.asarray(np.sum(np.reshape(v, -1))))  # noqa: E731
            anyof = lambda v: np.bool_(np.any(v))  # noqa: E731
        n = exact.n
        mag = total(mabs)
        if REDUCTIONS[op].fold == "sum":
            k_add = prec.ulps.get(Op.ADD, prec.default_ulps)
            k_map = prec.ulps.get(Op.MUL, prec.default_ulps) if rounds else 0.0
            err = _gamma(k_add * np.maximum(n - 1, 0), prec.accumulate) * mag + k_map * prec.compute * mag \
                + (k_add + k_map) * n * prec.tiny
        else:
            err = 0.0
        return Partial(exact.x, n, fold(mlo), fold(mhi), err, mag, anyof(unc), prec.compute)


def bounded_combine(op: Op, parts: Sequence[Partial], precs: Sequence[Precision]) -> Partial:
    """A group's fold from its tensors' parts: each rounded to its dtype, then combined."""
    if not parts:
        return Partial(np.float64(0.0), 0, np.float64(0.0), np.float64(0.0), 0.0, 0.0, np.bool_(False), 0.0)
    exact = exact_combine(op, parts)
    with np.errstate(all="ignore"):
        lo = _norm(np.asarray(_fold_fn(op, np.array([p.lo for p in parts], dtype=np.float64), 0)))
        hi = _norm(np.asarray(_fold_fn(op, np.array([p.hi for p in parts], dtype=np.float64), 0)))
        unc = np.bool_(any(bool(p.unc) for p in parts))
        u = max(p.u for p in parts)
        if REDUCTIONS[op].fold == "sum":
            sizes = [np.maximum(np.abs(p.lo), np.abs(p.hi)) + p.err for p in parts]
            err = sum(p.err for p in parts) + sum(pr.reduce_part_ulps * p.u * s for p, pr, s in zip(parts, precs, sizes))
            k_add = max(pr.ulps.get(Op.ADD, pr.default_ulps) for pr in precs)
            err = err + _gamma(k_add * (len(parts) - 1), max(pr.accumulate for pr in precs)) * sum(sizes)
        else:
            err = 0.0
        mag = sum(p.mag for p in parts)
    return Partial(exact.x, exact.n, lo, hi, err, mag, unc, u)


def bounded_finish(op: Op, part: Partial, prec: Precision) -> Bounded:
    """The reduction's value from its fold: the fold's interval widened by its rounding error,
    through the (monotone) finish, then the finish's and the result's roundings."""
    _, _, nonneg = MAP_RULES[REDUCTIONS[op].numpy]
    finish = reduction_finish(op)
    n = np.float64(part.n)
    with np.errstate(all="ignore"):
        lo = np.asarray(part.lo, dtype=np.float64) - part.err
        hi = np.asarray(part.hi, dtype=np.float64) + part.err
        if nonneg:
            lo = np.maximum(lo, 0.0)
        x = _norm(np.asarray(finish(part.x, n), dtype=np.float64))
        flo, fhi = np.asarray(finish(lo, n), dtype=np.float64), np.asarray(finish(hi, n), dtype=np.float64)
        lo, hi = np.minimum(flo, fhi), np.maximum(flo, fhi)
        u = part.u if part.u else prec.compute
        lo, hi = _widen(lo, hi, prec.ulps.get(op, prec.default_ulps), u, prec.tiny)
        lo, hi = _overflow(lo, hi, prec.overflow)
        lo, hi = _sanitize(x, lo, hi)
    return Bounded(x, lo, hi, _norm(np.asarray(part.unc)))


def reduce_bounded(op: Op, scope: str, args: Sequence[Bounded], shape: tuple, prec: Precision) -> Bounded:
    """A tensor- or channel-scope reduction with its error bounds."""
    return bounded_finish(op, bounded_fold(op, args, shape, scope, prec), prec)
