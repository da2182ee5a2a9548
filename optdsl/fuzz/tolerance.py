"""The tolerance table: every number the fuzzer compares backends with, in one place.

The fuzzer does not compare with one rtol. The IR interpreter carries, beside each
exact float64 value, an interval holding what a backend may compute when every
operation rounds in the backend's precision (optdsl.interp, `bounds=True`). The
interval is built from this table:

* UNIT_ROUNDOFF, per dtype: the relative error of one rounding;
* COMPUTE, per path: which dtype elementwise math rounds to. The eager paths (loop,
  foreach) compute in the tensor's dtype, as torch.optim does; the fused kernel
  computes in fp32 and rounds once, when it stores;
* ULPS, per op class: how many roundings one IR operation may cost in some backend
  (e.g. the foreach path computes `s / t` as `s * (1 / t)`: two);
* reductions: a sum of n terms in any order errs by at most gamma((n-1) k, u_acc) sum |x_i|
  (u_acc: ACCUMULATE's unit roundoff), plus the map's products, the finish and the result
  rounding (their op classes), and for group scope each tensor's part rounded again;
* SAFETY: a factor on every rounding count.

A backend value outside its interval is a mismatch. A mismatch is allowed only
where the value hangs on a decision (a `sign`, a comparison, a select, an `if`)
whose operands lie within rounding error of the boundary, so that the backend may
have decided the other way: those are counted as *boundary mismatches* and printed,
never hidden. The budget is exactly that: no mismatch at an element whose every
decision the bounds settle.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..interp import Precision
from ..ir import Op

# relative error of one rounding to nearest
UNIT_ROUNDOFF = {
    "float64": 2.0 ** -53,
    "float32": 2.0 ** -24,
    "bfloat16": 2.0 ** -8,
    "float16": 2.0 ** -11,
}

# smallest normal number (the absolute slack of a rounding near zero: subnormals, flush-to-zero)
SMALLEST_NORMAL = {
    "float64": 2.0 ** -1022,
    "float32": 2.0 ** -126,
    "bfloat16": 2.0 ** -126,
    "float16": 2.0 ** -14,
}

# largest finite number: beyond it a result may be inf
LARGEST = {
    "float64": float(np.finfo(np.float64).max),
    "float32": float(np.finfo(np.float32).max),
    "bfloat16": 3.3895313892515355e38,
    "float16": 65504.0,
}

# the dtype elementwise math rounds to, per path: "param" is the tensor's own dtype
COMPUTE = {"loop": "param", "foreach": "param", "fused": "float32"}

# roundings one IR operation may cost in some backend, per op class
OP_CLASSES: dict[str, tuple[tuple[Op, ...], float]] = {
    # no rounding at all
    # (ON_DEVICE: a host number moved onto the device; its rounding to the compute dtype is the
    # conversion every host operand of device math gets, optdsl.interp_math._convert)
    # (FLOOR: its jumps are decisions, as SIGN's: optdsl.interp_math._rule_floor)
    "exact": ((Op.NEG, Op.ABS, Op.SIGN, Op.MIN, Op.MAX, Op.CLAMP, Op.COPY, Op.COVER_MIN, Op.ON_DEVICE, Op.WHERE, Op.NOT, Op.AND, Op.OR,
               Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE, Op.FLOOR, Op.ITEM), 0.0),
    # one correctly rounded operation
    "arithmetic": ((Op.ADD, Op.SUB, Op.MUL), 1.0),
    # mod: torch's exact fmod then `+ b`, or Triton's fma(-q, b, a) then `+ b`: one rounding where the
    # quotient's floor is settled (the jumps are decisions: optdsl.interp_math._rule_mod)
    "remainder": ((Op.MOD,), 1.0),
    # newton_schulz: bfloat16 matmuls, iterated; no ulp count bounds it, and its interval rule is open
    # (optdsl.interp_math): the fuzzer does not draw it (coverage.NOT_DRAWN_YET)
    "matrix": ((Op.NEWTON_SCHULZ,), math.inf),
    # cbrt: |x|^(1/3) and a Newton step (y^2, a / y^2, the step: about three roundings)
    "cbrt": ((Op.CBRT,), 4.0),
    # sigmoid: exp(-|x|) (4), 1 + z, the division; the GPU exp's argument error on top (interp_math)
    "sigmoid": ((Op.SIGMOID,), 6.0),
    # tanh: expm1 (amplified by up to 2), 2 + t, the division; log1p: s = x / (2 + x) and the series, or
    # 1 + x (amplified by 1 / log 1.5) and a GPU log's absolute error 2^-22 (7 ulps of a result >= log 1.5);
    # expm1: the series, or exp(x) - 1 (exp's error amplified by up to 2.54)
    "exp relatives": ((Op.TANH, Op.LOG1P, Op.EXPM1), 12.0),
    # softplus: max(x, 0) + log1p(exp(-|x|)): exp's and log1p's errors, the addition
    "softplus": ((Op.SOFTPLUS,), 16.0),
    # foreach: s / t = s * (1 / t)
    "division": ((Op.DIV,), 2.0),
    "sqrt": ((Op.SQRT,), 1.0),
    # rsqrt as 1 / sqrt(x), or an approximate reciprocal square root
    "rsqrt": ((Op.RSQRT,), 2.0),
    # libm / SLEEF / Triton exp and log: a few ulps
    "transcendental": ((Op.EXP, Op.LOG), 4.0),
    # pow: 4 ulps, plus 2 |y log2 x| (Triton computes exp2(y * log2(x)); optdsl.interp adds that term)
    "pow": ((Op.POW,), 4.0),
    # lerp: torch's two-branch formula, up to three roundings
    "lerp": ((Op.LERP,), 3.0),
    # reductions: the roundings of the finish and of the result (to the compute dtype); the fold's
    # additions and a multiplying map's products are bounded on top (ACCUMULATE below, optdsl/interp_math.py)
    "reduction max": ((Op.AMAX,), 0.0),             # a max of the operands: exact
    "reduction sum": ((Op.SUM, Op.DOT), 1.0),       # the result rounded to the compute dtype
    "reduction norm": ((Op.NORM,), 2.0),            # sqrt, then the result's rounding
    "reduction mean": ((Op.MEAN,), 3.0),            # / n (two, as foreach's division), the result
    "reduction rms": ((Op.RMS,), 4.0),              # sqrt(r / n) or norm / sqrt(n), the result
}
# ops not in any class (a builtin added later): this many roundings, until it gets a class
DEFAULT_ULPS = 8.0

SAFETY = 2.0

# a reduction's additions accumulate in this dtype (torch reduces bf16/fp16 tensors in float32; the
# fused kernels compute in float32): a sum of n terms errs by at most gamma((n - 1) k, u) * sum |x_i|,
# k = the "arithmetic" class's roundings x SAFETY per addition, any summation order
ACCUMULATE = "float32"
# one tensor's part of a group reduction is rounded to the tensor's dtype (the loop path's parts are
# per-tensor torch reductions), and a norm part is squared again: relative roundings on its fold
REDUCE_PART_ULPS = 4.0

# host math (float64): backends use Python's math / `**`, the interpreter NumPy; IEEE +, -, *, /
# and the shared formulas of lerp, clamp, sign agree exactly, so only these may differ (by an ulp)
HOST_ULPS = {Op.SQRT: 1.0, Op.RSQRT: 2.0, Op.EXP: 1.0, Op.LOG: 1.0, Op.POW: 1.0, Op.SIGMOID: 2.0, Op.TANH: 1.0,
             Op.SOFTPLUS: 3.0, Op.LOG1P: 1.0, Op.EXPM1: 1.0, Op.CBRT: 1.0}

# a stored value rounds once more (to the storage dtype); scalar states are 0-d float32 tensors
# stored either from float64 (one rounding) or by an in-place op on a float32 operand (two)
STORE_ULPS = 1.0
SCALAR_STORE_ULPS = 2.0


def op_ulps() -> dict[Op, float]:
    table: dict[Op, float] = {}
    for ops, ulps in OP_CLASSES.values():
        for op in ops:
            table[op] = ulps * SAFETY
    return table


def op_class(op: Op) -> str | None:
    return next((name for name, (ops, _) in OP_CLASSES.items() if op in ops), None)


def dtype_name(dtype) -> str:
    """'float32' from torch.float32, np.float32 or 'float32'."""
    return str(dtype).rsplit(".", 1)[-1]


@lru_cache(maxsize=None)
def precision(path: str, dtype) -> Precision:
    """The error model of `path` ('loop', 'foreach', 'fused') on a tensor of `dtype`."""
    store = dtype_name(dtype)
    compute = store if COMPUTE[path] == "param" else COMPUTE[path]
    return Precision(
        compute=UNIT_ROUNDOFF[compute], store=UNIT_ROUNDOFF[store], scalar_store=UNIT_ROUNDOFF["float32"],
        host=UNIT_ROUNDOFF["float64"] * 2, ulps=op_ulps(), host_ulps={k: v * SAFETY for k, v in HOST_ULPS.items()}, default_ulps=DEFAULT_ULPS * SAFETY,
        store_ulps=STORE_ULPS * SAFETY, scalar_store_ulps=SCALAR_STORE_ULPS * SAFETY,
        tiny=SMALLEST_NORMAL[compute], store_tiny=SMALLEST_NORMAL[store],
        overflow=LARGEST[compute], store_overflow=LARGEST[store],
        accumulate=UNIT_ROUNDOFF[ACCUMULATE], reduce_part_ulps=REDUCE_PART_ULPS * SAFETY,
    )


def describe() -> str:
    """The table as text (printed by `optdsl fuzz`)."""
    lines = ["unit roundoff: " + ", ".join(f"{k} 2^{int(np.log2(v))}" for k, v in UNIT_ROUNDOFF.items()),
             "math dtype: " + ", ".join(f"{k}: {v}" for k, v in COMPUTE.items()),
             f"roundings per op (x{SAFETY:g} safety): " + "; ".join(
                 f"{name} {ulps:g}" for name, (_, ulps) in OP_CLASSES.items()),
             f"reductions: a sum of n terms errs by <= gamma((n-1)*{OP_CLASSES['arithmetic'][1] * SAFETY:g}, "
             f"u_{ACCUMULATE}) * sum|x_i| (any order), + map, finish and result roundings",
             "mismatches allowed: only at elements whose value hangs on a sign/compare/select/if "
             "within rounding error of its boundary (counted and printed)"]
    return "\n".join(lines)
