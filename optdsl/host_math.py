"""IEEE-safe host math (float64 Python numbers, or 0-d tensors when capturable or under
torch.compile): the `host` column of optdsl.builtins.OPS. optdsl.runtime re-exports every name,
which is how generated code reaches them (`_rt.sqrt`)."""
from __future__ import annotations

import math
import struct
from typing import Any

import torch
from torch import Tensor

# ---- host math: float64, IEEE results instead of Python exceptions or complex numbers ----
#
# Host values are Python floats in eager mode. They are 0-d tensors in two cases, and every
# helper below then stays in torch ops (no .item(), no Python branch on a tensor):
#   * capturable=True: `step` (and a Tensor `lr`) live on the parameter's device, so the
#     host math runs there too and the step can be captured in a CUDA graph;
#   * under torch.compile: `value()` hands back the traced tensor, as torch.optim's
#     `_get_value` does, so reading `step` is no graph break.
# With floats the helpers are what they always were, so eager numerics do not change.


def compiling() -> bool:
    return torch.compiler.is_compiling()


def _any_tensor(*xs) -> bool:
    return any(isinstance(x, Tensor) for x in xs)


def value(x: Any) -> Any:
    """A host number from a 0-d tensor (a step, a scalar state): .item() in eager mode, the
    tensor itself while torch.compile traces (torch.optim's `_get_value`)."""
    if isinstance(x, Tensor) and not compiling():
        return x.item()
    return x


def _like(x, t: Tensor) -> Tensor:
    """x as a 0-d tensor on t's device (a fill, never a host-to-device copy: capturable-safe)."""
    if isinstance(x, Tensor):
        return x
    return torch.full((), x, dtype=t.dtype if t.is_floating_point() else torch.float32, device=t.device)


def sqrt(x: float) -> float:
    # `x ** 0.5` is what torch.optim writes for bias_correction2_sqrt; keep its rounding
    if isinstance(x, Tensor):
        return x ** 0.5   # NaN below zero, as the float branch
    return x ** 0.5 if x >= 0 else math.nan


def rsqrt(x: float) -> float:
    return div(1.0, sqrt(x))


def div(a: float, b: float) -> float:
    if _any_tensor(a, b):
        return a / b   # tensors divide by zero the IEEE way already
    try:
        return a / b
    except ZeroDivisionError:
        if a == 0 or a != a:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def pow(a: float, b: float) -> float:  # noqa: A001 - mirrors the builtin's name on purpose
    if _any_tensor(a, b):
        return a ** b
    try:
        out = a ** b
    except ZeroDivisionError:
        return math.inf
    except OverflowError:
        return math.inf
    return math.nan if isinstance(out, complex) else out


def exp(x: float) -> float:
    if isinstance(x, Tensor):
        return torch.exp(x)
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def log(x: float) -> float:
    if isinstance(x, Tensor):
        return torch.log(x)
    if x > 0:
        return math.log(x)
    return -math.inf if x == 0 else math.nan


def sign(x: float) -> float:
    if isinstance(x, Tensor):
        return torch.sign(x)
    return 0.0 if x == 0 or x != x else math.copysign(1.0, x)   # torch.sign: 0 for NaN


def sigmoid(x: float) -> float:
    if isinstance(x, Tensor):
        return torch.sigmoid(x)
    z = math.exp(-abs(x)) if x == x else x   # never overflows; NaN stays NaN
    return 1.0 / (1.0 + z) if x >= 0 else z / (1.0 + z)


def tanh(x: float) -> float:
    if isinstance(x, Tensor):
        return torch.tanh(x)
    return math.tanh(x)


def softplus(x):
    """log(1 + exp(x)) as max(x, 0) + log1p(exp(-|x|)): no overflow, and accurate where
    torch.nn.functional.softplus switches to x (its threshold, 20). Floats and tensors."""
    if isinstance(x, Tensor):
        return torch.clamp_min(x, 0).add_(torch.log1p(torch.exp(-torch.abs(x))))
    if x != x:
        return x
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def log1p(x: float) -> float:
    if isinstance(x, Tensor):
        return torch.log1p(x)
    if x > -1:
        return math.log1p(x)
    return -math.inf if x == -1 else math.nan


def expm1(x: float) -> float:
    if isinstance(x, Tensor):
        return torch.expm1(x)
    try:
        return math.expm1(x)
    except OverflowError:
        return math.inf


def cbrt(x):
    """The real cube root, x's sign kept (cbrt(-8) = -2). torch has none: |x|^(1/3), whose exponent
    rounds to the tensor's dtype (an error growing with |log x|), refined by one Newton step."""
    if not isinstance(x, Tensor):
        return math.cbrt(x)
    a = torch.abs(x)
    y = torch.pow(a, 1.0 / 3.0)
    refined = y - (y - a / (y * y)) / 3.0
    return torch.copysign(torch.where((y == 0) | torch.isinf(y), y, refined), x)


def floor(x: float) -> float:
    if isinstance(x, Tensor):
        return torch.floor(x)
    return float(math.floor(x)) if math.isfinite(x) else x


def mod(a: float, b: float) -> float:
    """Floor-mod, as Python's % and torch.remainder: the result has the divisor's sign. A zero divisor,
    an infinite dividend or a NaN gives NaN (torch's value; Python's % raises); mod(a, +-inf) is a
    where a has the divisor's sign (or is 0), else the divisor itself (torch.remainder's fmod rule)."""
    if _any_tensor(a, b):
        return torch.remainder(a, b)
    if b == 0 or a != a or b != b or math.isinf(a):
        return math.nan
    r = math.fmod(a, b)
    if r != 0 and (r < 0) != (b < 0):
        r += b
    return r


def minimum(a: float, b: float) -> float:
    if _any_tensor(a, b):
        t = a if isinstance(a, Tensor) else b
        return torch.minimum(_like(a, t), _like(b, t))   # NaN from either side, as below
    return a if a != a else b if b != b else min(a, b)


def maximum(a: float, b: float) -> float:
    if _any_tensor(a, b):
        t = a if isinstance(a, Tensor) else b
        return torch.maximum(_like(a, t), _like(b, t))
    return a if a != a else b if b != b else max(a, b)


def clamp(x: float, lo: float, hi: float) -> float:
    return minimum(maximum(x, lo), hi)


def lerp(a: float, b: float, w: float) -> float:
    # torch's formula, exact at both ends
    if isinstance(w, Tensor):
        return torch.where(abs(w) < 0.5, a + w * (b - a), b - (b - a) * (1 - w))
    return a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (1 - w)


_F32 = struct.Struct("f")


def f32(x: float) -> float:
    """x rounded to float32 (to nearest even), as a float: what a scalar state's 0-d float32
    tensor holds after `fill_(x)`. Overflow gives inf, as the tensor would."""
    if isinstance(x, Tensor):
        return x.to(torch.float32)
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def both(a, b):
    """`a and b` of conditions, either of which may be a 0-d bool tensor (never read back)."""
    return a & b if _any_tensor(a, b) else (a and b)


def either(a, b):
    return a | b if _any_tensor(a, b) else (a or b)


def negate(a):
    return torch.logical_not(a) if isinstance(a, Tensor) else (not a)


def where(cond, a, b):
    """A host select; a per-tensor condition that is a tensor (capturable, torch.compile) selects with torch.where."""
    if isinstance(cond, Tensor):
        return torch.where(cond, a, b)
    return a if cond else b
