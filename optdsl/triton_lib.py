"""Triton helpers every generated kernel imports: stream loads/stores with
fp32 math, and the elementwise builtins that need more than one tl call.

bf16 is converted with bit operations (round to nearest even, NaN kept): the
Triton interpreter's own bf16 conversion is wrong, and on a GPU the bit form
costs a few integer ops in a memory-bound kernel."""
import triton
import triton.language as tl

FP32: tl.constexpr = tl.constexpr(0)
FP16: tl.constexpr = tl.constexpr(1)
BF16: tl.constexpr = tl.constexpr(2)


@triton.jit
def load_stream(ptrs, t, offs, mask, DTYPE: tl.constexpr):
    base = tl.load(ptrs + t)
    if DTYPE == 2:
        bits = tl.load(base.to(tl.pointer_type(tl.uint16)) + offs, mask=mask, other=0).to(tl.uint32)
        x = (bits << 16).to(tl.float32, bitcast=True)
    elif DTYPE == 1:
        x = tl.load(base.to(tl.pointer_type(tl.float16)) + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        x = tl.load(base.to(tl.pointer_type(tl.float32)) + offs, mask=mask, other=0.0)
    return x


@triton.jit
def store_stream(ptrs, t, offs, x, mask, DTYPE: tl.constexpr):
    base = tl.load(ptrs + t)
    if DTYPE == 2:
        bits = x.to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        rounded = tl.where(x != x, 0x7FC0, rounded)
        tl.store(base.to(tl.pointer_type(tl.uint16)) + offs, rounded.to(tl.uint16), mask=mask)
    elif DTYPE == 1:
        tl.store(base.to(tl.pointer_type(tl.float16)) + offs, x.to(tl.float16), mask=mask)
    else:
        tl.store(base.to(tl.pointer_type(tl.float32)) + offs, x, mask=mask)


@triton.jit
def _sign(x):
    # torch.sign: 0 for NaN and for -0.0
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0))


@triton.jit
def _maximum(x, y):
    # torch.maximum propagates NaN from either side
    return tl.where(x != x, x, tl.where(y != y, y, tl.maximum(x, y)))


@triton.jit
def _minimum(x, y):
    return tl.where(x != x, x, tl.where(y != y, y, tl.minimum(x, y)))


@triton.jit
def _lerp(a, b, w):
    # torch's formula: exact at w = 0 and w = 1
    return tl.where(tl.abs(w) < 0.5, a + w * (b - a), b - (b - a) * (1.0 - w))


@triton.jit
def _pow(x, y):
    # libdevice pow does not run in the interpreter: |x|^y = 2^(y*log2|x|), with torch.pow's sign
    # rules for a negative base (an integer exponent: the sign of x^y; any other: NaN)
    r = tl.exp2(y * tl.log2(tl.abs(x)))
    y_int = y == tl.floor(y)
    odd = y_int & ((y - 2.0 * tl.floor(y * 0.5)) == 1.0)
    r = tl.where(x < 0, tl.where(y_int, tl.where(odd, -r, r), float("nan")), r)
    return tl.where(y == 0.0, 1.0, tl.where(y == 1.0, x, tl.where(y == 2.0, x * x, r)))


# ---- phases: partial reductions and device scalar state ----------------------------------------

@triton.jit
def load_scalar(ptrs, t):
    # a device scalar state: tensor t's 0-d float32 tensor, through a pointer table
    return tl.load(tl.load(ptrs + t).to(tl.pointer_type(tl.float32)))


@triton.jit
def fold_sum(x, mask):
    # this program's partial sum: masked-off lanes add 0 (whatever x computed there); a fixed tree
    return tl.sum(tl.where(mask, x, 0.0), axis=0)


@triton.jit
def fold_max(x, mask):
    # this program's partial maximum of |x| (the only max fold): 0 for no element, NaN kept as torch.amax
    # (tl.max alone drops NaN on a GPU; a tl.reduce with a NaN-aware combine runs element by element
    # in the interpreter)
    y = tl.where(mask, x, 0.0)
    has_nan = tl.sum(tl.where(y != y, 1, 0), axis=0) > 0
    return tl.where(has_nan, float("nan"), tl.max(y, axis=0))
