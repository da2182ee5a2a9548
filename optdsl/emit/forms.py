"""How an expression or a store becomes torch calls, shared by the loop and foreach emitters.

Stores to state and to the parameter are matched against the in-place forms
torch.optim uses (`exp_avg.lerp_(g, w)`, `v.mul_(b).addcmul_(g, g, value=c)`,
`param.addcdiv_(m, d, value=-s)`), so the generated step does the same memory
passes, and the same roundings, as the hand-written one."""
from __future__ import annotations

from ..ir import REDUCE, Kind, Let, Op, Program, Value, apply, const, walk_stmts, walk_values

INPLACE_UNARY = {Op.SQRT: "sqrt_", Op.NEG: "neg_", Op.ABS: "abs_", Op.SIGN: "sign_", Op.EXP: "exp_",
                  Op.LOG: "log_", Op.RSQRT: "rsqrt_", Op.SIGMOID: "sigmoid_", Op.TANH: "tanh_", Op.LOG1P: "log1p_",
                  Op.EXPM1: "expm1_", Op.FLOOR: "floor_"}
BINARY_METHOD = {Op.ADD: "add", Op.SUB: "sub", Op.MUL: "mul", Op.DIV: "div"}
# operand positions where a torch form takes a Python number (elsewhere a host value is made a tensor)
TORCH_NUMBER_ARGS = {Op.WHERE: (1, 2), Op.CLAMP: (1, 2), Op.POW: (0, 1), Op.LERP: (2,), Op.MOD: (0, 1),
                      Op.LT: (0, 1), Op.LE: (0, 1), Op.GT: (0, 1), Op.GE: (0, 1), Op.EQ: (0, 1), Op.NE: (0, 1),
                      # Python operators: `number / tensor` is torch.optim's own form (RAdam's
                      # `bias_correction2**0.5 / exp_avg_sq_sqrt`, a reciprocal-multiply)
                      Op.ADD: (0, 1), Op.SUB: (0, 1), Op.MUL: (0, 1), Op.DIV: (0, 1),
                      # the iteration's coefficients, steps and eps are Python numbers, as torch.optim.Muon's
                      Op.NEWTON_SCHULZ: (1, 2, 3, 4, 5)}


def holds_reduction(v: Value, p: Program) -> bool:
    """Whether v's eager value may be a reduction's float32 where a low-precision parameter's dtype
    is wanted (torch.lerp takes one dtype): torch's promotion, followed through the locals v reads.
    A 0-d reduction beside a parameter-shaped tensor takes that tensor's dtype; a per-channel one
    (dimensioned) promotes it; `where(g > 0, rms(x), 2)` is a parameter-shaped float32."""
    lets: dict[str, list[Value]] = {}
    for s in walk_stmts(p.body):
        if isinstance(s, Let):
            lets.setdefault(s.name, []).append(s.value)
    return _eager_dtype(v, lets, set()) in (_F32_SHAPED, _F32_SCALAR)


# what torch's promotion gives an eager value, widest first
_F32_SHAPED, _PARAM, _F32_SCALAR, _NUMBER = range(4)


def _eager_dtype(v: Value, lets: dict[str, list[Value]], seen: set[str]) -> int:
    if v.kind is Kind.CHANNEL:
        return _F32_SHAPED
    if v.op is Op.VAR and v.arg in lets:
        if v.arg in seen:   # (a local read in its own binding: its other bindings decide)
            return _NUMBER
        inner = seen | {v.arg}
        return min(_eager_dtype(x, lets, inner) for x in lets[v.arg])
    if not v.args:
        return {Kind.TENSOR: _PARAM, Kind.REDUCED: _F32_SCALAR}.get(v.kind, _NUMBER)
    if v.op in REDUCE:
        return _F32_SCALAR
    values = v.args[1:] if v.op is Op.WHERE else v.args
    out = min(_eager_dtype(a, lets, seen) for a in values)
    if v.op is Op.WHERE and out == _F32_SCALAR and v.args[0].kind is Kind.TENSOR:
        return _F32_SHAPED   # a 0-d float32 broadcast to the condition's shape
    return out


def number_args(v: Value) -> tuple[int, ...]:
    """Operands of v's torch form that may stay Python numbers. torch.where between two numbers
    gives the default dtype (float32 for a bf16 parameter): one side is then made a tensor."""
    numbers = TORCH_NUMBER_ARGS.get(v.op, ())
    if v.op is Op.WHERE and v.args[1].kind.on_host and v.args[2].kind.on_host:
        return (2,)
    return numbers


def is_target(v: Value, target: str) -> bool:
    return (v.op is Op.PARAM and target == "param") or (v.op is Op.STATE and v.arg == target)


def reads(v: Value, target: str) -> bool:
    return any(is_target(n, target) for n in walk_values(v))


def scaled(v: Value):
    """v = s * x or x * s with s host-kind and x a tensor: (s, x), else None."""
    if v.op is Op.MUL:
        a, b = v.args
        if a.kind.on_host and b.kind.on_device:
            return a, b
        if b.kind.on_host and a.kind.on_device:
            return b, a
    return None


def alpha_scaled(v: Value):
    """v = s * x with the host scale written first: (s, x), else None. Added to a tensor, it is
    torch's `add(t, x, alpha=s)`, one rounding (`param - lr * g`: `param.add_(g, alpha=-lr)`);
    `t + x * s` stays a multiply, then an add (ASGD's `ax.add_(param.sub(ax).mul_(mu))`)."""
    if v.op is Op.MUL and v.args[0].kind.on_host and v.args[1].kind.on_device:
        return v.args[0], v.args[1]
    return None


def neg(s: Value) -> Value:
    return apply(Op.NEG, s) if s.op is not Op.CONST else const(-s.arg)


def split_accumulate(v: Value, target: str):
    """Match `d*s + rest`, `d + rest`, `d - rest` (and commuted sums).
    Returns (scale | None, sign, rest) or None. With a scale, `rest` never reads d (d changes
    before rest is read); `d + rest` may read d: rest is evaluated in full before d changes."""
    if v.op not in (Op.ADD, Op.SUB):
        return None
    x, y = v.args
    candidates = [(x, y, v.op is Op.SUB)]
    if v.op is Op.ADD:
        candidates.append((y, x, False))
    for head, rest, negate in candidates:
        if is_target(head, target) and not is_target(rest, target):
            return None, negate, rest
        if reads(rest, target):
            continue
        sc = scaled(head)
        if sc and is_target(sc[1], target):
            return sc[0], negate, rest
    return None


def rest_forms(rest: Value, negate: bool):
    """How `rest` joins an accumulator: ('addcmul'|'addcdiv', y, z, value) | ('add', y, alpha) | ('add_scalar', s) | ('add_tensor', y, sign)."""
    def signed(s: Value) -> Value:
        return neg(s) if negate else s
    one = const(1.0)
    if rest.kind.on_host:
        return ("add_scalar", signed(rest))
    if rest.op is Op.DIV and rest.args[1].kind.on_device:
        num, den = rest.args
        sc = scaled(num)
        if sc:
            return ("addcdiv", sc[1], den, signed(sc[0]))
        if num.kind.on_device:
            return ("addcdiv", num, den, signed(one))
    if rest.op is Op.MUL:
        a, b = rest.args
        sc = scaled(a)
        if sc and b.kind.on_device:
            return ("addcmul", sc[1], b, signed(sc[0]))
        sc = scaled(b)
        if sc and a.kind.on_device:
            return ("addcmul", a, sc[1], signed(sc[0]))
        if a.kind.on_device and b.kind.on_device:
            return ("addcmul", a, b, signed(one))
    sc = alpha_scaled(rest)
    if sc:
        return ("add", sc[1], signed(sc[0]))
    return ("add_tensor", rest, -1.0 if negate else 1.0)
