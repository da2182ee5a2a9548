"""Triton helpers every generated kernel imports: stream loads/stores with
fp32 math, and the elementwise builtins that need more than one tl call.

bf16 is converted with bit operations (round to nearest even, NaN kept): the
Triton interpreter's own bf16 conversion is wrong, and on a GPU the bit form
costs a few integer ops in a memory-bound kernel. BF16_SR is bf16 stored with
stochastic rounding (`stochastic_rounding=True`, optdsl.precision): a dtype code
of its own, so a kernel without it compiles exactly as before."""
import triton
import triton.language as tl

FP32: tl.constexpr = tl.constexpr(0)
FP16: tl.constexpr = tl.constexpr(1)
BF16: tl.constexpr = tl.constexpr(2)
BF16_SR: tl.constexpr = tl.constexpr(3)


@triton.jit
def _stream_ptr(ptrs, t, TYPE: tl.constexpr, ALIGNED: tl.constexpr):
    # tensor t's first element; ALIGNED: the launcher checked that every tensor of the launch starts
    # on 16 bytes (the hint goes on the op that makes the pointer, so it is made here)
    p = tl.load(ptrs + t).to(tl.pointer_type(TYPE))
    if ALIGNED:
        p = tl.multiple_of(p, 16)
    return p


@triton.jit
def _load(p, mask, other):
    # mask None: a full block, loaded without a mask (what lets the compiler use 128-bit loads)
    if mask is None:
        x = tl.load(p)
    else:
        x = tl.load(p, mask=mask, other=other)
    return x


@triton.jit
def load_stream(ptrs, t, offs, mask, DTYPE: tl.constexpr, ALIGNED: tl.constexpr):
    if DTYPE >= 2:   # bf16, rounded either way when stored
        bits = _load(_stream_ptr(ptrs, t, tl.uint16, ALIGNED) + offs, mask, 0).to(tl.uint32)
        x = (bits << 16).to(tl.float32, bitcast=True)
    elif DTYPE == 1:
        x = _load(_stream_ptr(ptrs, t, tl.float16, ALIGNED) + offs, mask, 0.0).to(tl.float32)
    else:
        x = _load(_stream_ptr(ptrs, t, tl.float32, ALIGNED) + offs, mask, 0.0)
    return x


@triton.jit
def store_stream(ptrs, t, offs, x, mask, DTYPE: tl.constexpr, ALIGNED: tl.constexpr, seeds, STREAM: tl.constexpr):
    # mask None: a full block. seeds, STREAM: only BF16_SR reads them (seeds is None, a constexpr,
    # in a kernel without it)
    if DTYPE == 3:
        rounded = _stochastic_bf16(x, tl.load(seeds + t), offs, STREAM)
        tl.store(_stream_ptr(ptrs, t, tl.uint16, ALIGNED) + offs, rounded.to(tl.uint16), mask=mask)
    elif DTYPE == 2:
        bits = x.to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        rounded = tl.where(x != x, 0x7FC0, rounded)
        tl.store(_stream_ptr(ptrs, t, tl.uint16, ALIGNED) + offs, rounded.to(tl.uint16), mask=mask)
    elif DTYPE == 1:
        tl.store(_stream_ptr(ptrs, t, tl.float16, ALIGNED) + offs, x.to(tl.float16), mask=mask)
    else:
        tl.store(_stream_ptr(ptrs, t, tl.float32, ALIGNED) + offs, x, mask=mask)


@triton.jit
def _stochastic_bf16(x, seed, offs, STREAM: tl.constexpr):
    # The bf16 bits of fp32 x rounded stochastically, as optdsl.precision.stochastic_round: a
    # uniform 16-bit integer added to the low half of the bit pattern, then truncated, so the
    # magnitude rounds up with probability (|x| - |lower neighbour|) / ulp. A bf16 value stays
    # exact (low half 0: no carry), +-inf stays +-inf, NaN is the quiet NaN (its payload plus the
    # noise could carry into the sign). A finite x above the largest bf16 number rounds to inf
    # with that same probability, inf taking the place of the next number up (as rounding to
    # nearest overflows from half an ulp above), so eager and fused paths share one rule.
    # The noise is Philox keyed by the tensor's seed (host: rounding_seed, rounding_step, the
    # tensor's place in the group) and counted by (element offset in the tensor, stream): an
    # element's bits depend on neither the block size nor the work list.
    lo = (offs & 0xFFFFFFFF).to(tl.uint32)
    hi = (offs >> 32).to(tl.uint32)
    r, _, _, _ = tl.philox(seed, lo, hi, tl.full(lo.shape, STREAM, tl.uint32), tl.zeros(lo.shape, tl.uint32))
    bits = x.to(tl.uint32, bitcast=True)
    rounded = (bits + (r & 0xFFFF)) >> 16
    return tl.where(x != x, 0x7FC0, rounded)


@triton.jit
def _as_block(x, offs):
    # x (a number or a 0-d value) at every offset, bit for bit (x + 0.0 would turn -0.0 into +0.0)
    return tl.where(offs >= 0, x, x)


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
def fold_sum(x, mask, offs):
    # this program's partial sum: masked-off lanes add 0 (whatever x computed there); a fixed tree.
    # mask None: a full block (a per-tensor x counts once per element, as under a mask)
    if mask is None:
        x = tl.broadcast_to(x, offs.shape)
    else:
        x = tl.where(mask, x, 0.0)
    return tl.sum(x, axis=0)


@triton.jit
def fold_max(x, mask, offs):
    # this program's partial maximum of |x| (the only max fold): 0 for no element, NaN kept as torch.amax
    # (tl.max alone drops NaN on a GPU; a tl.reduce with a NaN-aware combine runs element by element
    # in the interpreter)
    if mask is None:
        x = tl.broadcast_to(x, offs.shape)
    else:
        x = tl.where(mask, x, 0.0)
    has_nan = tl.sum(tl.where(x != x, 1, 0), axis=0) > 0
    return tl.where(has_nan, float("nan"), tl.max(x, axis=0))


# ---- exp/log relatives: tl has only exp and log (fast approximations on a GPU, whose relative error
# near 1, or for log1p/expm1 near 0, is far from the few ulps the fuzz tolerance grants). Near 0 these
# use polynomials in +, * and div_rn only, which round the same in the interpreter and on a GPU;
# elsewhere exp/log, where the result is not small relative to their error (optdsl/interp_math.py
# bounds what is left, the GPU exp's error growing with |x|, included). Each branch computes on
# arguments it can take (the other branch's lanes get a harmless 0 or 1), so that the Triton
# interpreter's NumPy never warns about a value tl.where then drops.

@triton.jit
def _expm1(x):
    # |x| <= 0.5: Taylor to x^11 (the rest is below 2^-31 relative); else exp(x) - 1, whose subtraction
    # loses at most a factor e^0.5 / (e^0.5 - 1) = 2.54
    near = tl.abs(x) <= 0.5
    xs = tl.where(near, x, 0.0)
    p = 1.0 / 39916800.0
    p = p * xs + 1.0 / 3628800.0
    p = p * xs + 1.0 / 362880.0
    p = p * xs + 1.0 / 40320.0
    p = p * xs + 1.0 / 5040.0
    p = p * xs + 1.0 / 720.0
    p = p * xs + 1.0 / 120.0
    p = p * xs + 1.0 / 24.0
    p = p * xs + 1.0 / 6.0
    p = p * xs + 0.5
    small = xs + xs * (xs * p)
    over = x > 88.72283   # log(FLT_MAX): inf
    big = tl.exp(tl.where(near | over | (x != x), 0.0, x)) - 1.0
    return tl.where(near, small, tl.where(over, float("inf"), tl.where(x != x, x, big)))


@triton.jit
def _log1p(x):
    # |x| <= 0.5: 2 atanh(s), s = x / (2 + x), |s| <= 1/3, the series to s^17; else log(1 + x), where
    # |log(1 + x)| >= log(1.5) keeps the rounding of 1 + x and log's error small relative to it;
    # -inf at -1, NaN below
    near = tl.abs(x) <= 0.5
    xs = tl.where(near, x, 0.0)
    s = tl.div_rn(xs, 2.0 + xs)
    s2 = s * s
    p = 1.0 / 17.0
    p = p * s2 + 1.0 / 15.0
    p = p * s2 + 1.0 / 13.0
    p = p * s2 + 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    small = 2.0 * s + 2.0 * s * (s2 * p)
    big = tl.log(tl.where(near | (x <= -1.0), 1.0, 1.0 + x))
    big = tl.where(x < -1.0, float("nan"), tl.where(x == -1.0, float("-inf"), big))
    return tl.where(near, small, big)


@triton.jit
def _sigmoid(x):
    # z = exp(-|x|) never overflows: 1 / (1 + z) for x >= 0, z / (1 + z) below (NaN stays NaN)
    z = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, tl.div_rn(1.0, 1.0 + z), tl.div_rn(z, 1.0 + z))


@triton.jit
def _tanh(x):
    # tanh|x| = -t / (2 + t), t = expm1(-2|x|) in [-1, 0]: no cancellation anywhere; x's sign
    t = _expm1(-2.0 * tl.abs(x))
    r = tl.div_rn(-t, 2.0 + t)
    return tl.where(x < 0, -r, r)


@triton.jit
def _softplus(x):
    # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), as optdsl.runtime.softplus (NaN stays NaN)
    return tl.where(x > 0, x, 0.0) + _log1p(tl.exp(-tl.abs(x)))


@triton.jit
def _cbrt(x):
    # 2^(log2|x| / 3), then a Newton step (it squares the first guess's relative error); 0, inf and
    # NaN as they are, with x's sign
    a = tl.abs(x)
    special = (a == 0.0) | (a == float("inf")) | (a != a)
    a_s = tl.where(special, 1.0, a)
    y = tl.exp2(tl.log2(a_s) / 3.0)
    y = y - (y - tl.div_rn(a_s, y * y)) / 3.0
    y = tl.where(special, a, y)
    return tl.where(x < 0, -y, y)


@triton.jit
def _mod(a, b):
    # floor-mod, as torch.remainder: fmod (sign of a, |r| < |b|, exact), then `+ b` where the signs differ.
    # fmod in steps r -= trunc(r / b) * b, each exact in one fma (the remainder of a correctly rounded
    # quotient is a float), each dividing r / b by 2^23 or more: three steps reach |r| < |b| from a
    # quotient below 2^69. Beyond: NaN, as for b = 0, a = +-inf or NaN;
    # b = +-inf: a where a has b's sign (or is 0), else b
    b = tl.where(a == a, b, b)   # both blocks, where one is a number
    a = tl.where(b == b, a, a)
    inf_b = tl.abs(b) == float("inf")
    finite_a = tl.abs(a) < float("inf")
    usable = finite_a & (b != 0.0) & ~inf_b & (b == b) & (tl.abs(a) * 1.6940658945086007e-21 < tl.abs(b))  # 2^-69
    b_s = tl.where(usable, b, 1.0)
    r = tl.where(usable, a, 0.0)
    for _ in tl.static_range(3):
        t = tl.div_rn(r, b_s)
        r = tl.fma(-tl.where(t < 0.0, tl.ceil(t), tl.floor(t)), b_s, r)
    reduced = tl.abs(r) < tl.abs(b_s)
    r = tl.where((r != 0.0) & ((r < 0.0) != (b_s < 0.0)), r + b_s, r)
    same_sign = (a == 0.0) | ((a < 0.0) == (b < 0.0))
    special = tl.where(inf_b & finite_a, tl.where(same_sign, a, b), float("nan"))
    return tl.where(usable & reduced, r, special)
