"""IR -> eager torch code: the per-tensor loop (`_single_tensor_<name>`, torch
ops on each tensor, host math inline as in torch/optim/adam.py) and the foreach
path (`_multi_tensor_<name>`, torch._foreach_* ops over tensor lists).

Stores to state and to the parameter are matched against the in-place forms
torch.optim uses (`exp_avg.lerp_(g, w)`, `v.mul_(b).addcmul_(g, g, value=c)`,
`param.addcdiv_(m, d, value=-s)`), so the generated step does the same memory
passes, and the same roundings, as the hand-written one."""
from __future__ import annotations

import re

from ..builtins import OPS
from ..ir import LEAF, Kind, Let, Op, Program, Stmt, Store, Type, Value, If, apply, const, walk_values
from ..names import ident
from ..passes import specialize
from .common import Writer, float_literal, render
from .host import (INPLACE_SCALAR, Column, columns, host_expr, is_device_stmt, per_tensor_inputs,  # noqa: F401
                   may_be_tensor, scalar_states, scalar_store, tensor_capable)

_INPLACE_UNARY = {Op.SQRT: "sqrt_", Op.NEG: "neg_", Op.ABS: "abs_", Op.SIGN: "sign_", Op.EXP: "exp_",
                  Op.LOG: "log_", Op.RSQRT: "rsqrt_"}
_BINARY_METHOD = {Op.ADD: "add", Op.SUB: "sub", Op.MUL: "mul", Op.DIV: "div"}
# operand positions where a torch form takes a Python number (elsewhere a host value is made a tensor)
_TORCH_NUMBER_ARGS = {Op.WHERE: (1, 2), Op.CLAMP: (1, 2), Op.POW: (0, 1), Op.LERP: (2,),
                      Op.LT: (0, 1), Op.LE: (0, 1), Op.GT: (0, 1), Op.GE: (0, 1), Op.EQ: (0, 1), Op.NE: (0, 1),
                      # Python operators: `number / tensor` is torch.optim's own form (RAdam's
                      # `bias_correction2**0.5 / exp_avg_sq_sqrt`, a reciprocal-multiply)
                      Op.ADD: (0, 1), Op.SUB: (0, 1), Op.MUL: (0, 1), Op.DIV: (0, 1)}


def _number_args(v: Value) -> tuple[int, ...]:
    """Operands of v's torch form that may stay Python numbers. torch.where between two numbers
    gives the default dtype (float32 for a bf16 parameter): one side is then made a tensor."""
    numbers = _TORCH_NUMBER_ARGS.get(v.op, ())
    if v.op is Op.WHERE and v.args[1].kind is not Kind.TENSOR and v.args[2].kind is not Kind.TENSOR:
        return (2,)
    return numbers


def _is_target(v: Value, target: str) -> bool:
    return (v.op is Op.PARAM and target == "param") or (v.op is Op.STATE and v.arg == target)


def _reads(v: Value, target: str) -> bool:
    return any(_is_target(n, target) for n in walk_values(v))


def _scaled(v: Value):
    """v = s * x or x * s with s host-kind and x a tensor: (s, x), else None."""
    if v.op is Op.MUL:
        a, b = v.args
        if a.kind < Kind.TENSOR and b.kind is Kind.TENSOR:
            return a, b
        if b.kind < Kind.TENSOR and a.kind is Kind.TENSOR:
            return b, a
    return None


def _alpha_scaled(v: Value):
    """v = s * x with the host scale written first: (s, x), else None. Added to a tensor, it is
    torch's `add(t, x, alpha=s)`, one rounding (`param - lr * g`: `param.add_(g, alpha=-lr)`);
    `t + x * s` stays a multiply, then an add (ASGD's `ax.add_(param.sub(ax).mul_(mu))`)."""
    if v.op is Op.MUL and v.args[0].kind < Kind.TENSOR and v.args[1].kind is Kind.TENSOR:
        return v.args[0], v.args[1]
    return None


def _neg(s: Value) -> Value:
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
        if _is_target(head, target) and not _is_target(rest, target):
            return None, negate, rest
        if _reads(rest, target):
            continue
        sc = _scaled(head)
        if sc and _is_target(sc[1], target):
            return sc[0], negate, rest
    return None


def rest_forms(rest: Value, negate: bool):
    """How `rest` joins an accumulator: ('addcmul'|'addcdiv', y, z, value) | ('add', y, alpha) | ('add_scalar', s) | ('add_tensor', y, sign)."""
    def signed(s: Value) -> Value:
        return _neg(s) if negate else s
    one = const(1.0)
    if rest.kind < Kind.TENSOR:
        return ("add_scalar", signed(rest))
    if rest.op is Op.DIV and rest.args[1].kind is Kind.TENSOR:
        num, den = rest.args
        sc = _scaled(num)
        if sc:
            return ("addcdiv", sc[1], den, signed(sc[0]))
        if num.kind is Kind.TENSOR:
            return ("addcdiv", num, den, signed(one))
    if rest.op is Op.MUL:
        a, b = rest.args
        sc = _scaled(a)
        if sc and b.kind is Kind.TENSOR:
            return ("addcmul", sc[1], b, signed(sc[0]))
        sc = _scaled(b)
        if sc and a.kind is Kind.TENSOR:
            return ("addcmul", a, sc[1], signed(sc[0]))
        if a.kind is Kind.TENSOR and b.kind is Kind.TENSOR:
            return ("addcmul", a, b, signed(one))
    sc = _alpha_scaled(rest)
    if sc:
        return ("add", sc[1], signed(sc[0]))
    return ("add_tensor", rest, -1.0 if negate else 1.0)


class LoopEmitter:
    """`_single_tensor_<name>`: one tensor at a time, host math inline."""

    def __init__(self, p: Program):
        self.p = p
        self.empty = {s.name for s in p.states if s.init == "empty"}
        self.scalar = {s.name for s in p.states if s.kind is Kind.TENSOR_SCALAR}
        self.tensor_locals = tensor_capable(p)

    def host(self, v: Value) -> str:
        return host_expr(v)

    def device_scale(self, v: Value) -> bool:
        """An `alpha=` / `value=` that may be a device tensor when capturable (a step-dependent value,
        a Tensor lr): the capturable branch passes it through a runtime helper that keeps it on the
        device (optdsl.runtime.addcdiv_, ...); the other branch is torch.optim's own call."""
        return may_be_tensor(v, self.tensor_locals)

    def tensor(self, v: Value) -> tuple[str, bool]:
        """(source, fresh): fresh results are new tensors the caller may modify in place."""
        if v.kind is not Kind.TENSOR:
            return self.host(v), False
        if v.op in LEAF:
            return (ident(str(v.arg)) if v.op in (Op.STATE, Op.VAR) else v.op.name.lower()), False
        if v.op is Op.WHERE and v.args[0].kind is not Kind.TENSOR:
            # both sides tensors: a side that is a host number is filled into the parameter's shape
            return f"({self.operand(v.args[1])} if {self.host(v.args[0])} else {self.operand(v.args[2])})", False
        if v.op in (Op.ADD, Op.SUB) and v.args[0].kind is Kind.TENSOR and v.args[1].kind is Kind.TENSOR:
            # `x - y * z` -> torch.addcmul(x, y, z, value=-1), as torch.optim writes it (one rounding
            # order: RMSprop's centered `square_avg.addcmul(grad_avg, grad_avg, value=-1)`)
            form = rest_forms(v.args[1], v.op is Op.SUB)
            if form[0] in ("addcmul", "addcdiv"):
                xs, xfresh = self.tensor(v.args[0])
                value_src = self.host(form[3])
                tail = "" if value_src == "1.0" else f", value={value_src}"
                args = f"{self.tensor(form[1])[0]}, {self.tensor(form[2])[0]}{tail}"
                plain = f"{xs}.{form[0]}_({args})" if xfresh else f"torch.{form[0]}({xs}, {args})"
                if self.device_scale(form[3]):
                    x_src = xs if xfresh else f"torch.clone({xs})"
                    helper = f"_rt.{form[0]}_({x_src}, {self.tensor(form[1])[0]}, {self.tensor(form[2])[0]}, {value_src})"
                    return f"({helper} if capturable else {plain})", True
                return plain, True
        if v.op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV):
            x, y = v.args
            if x.kind is not Kind.TENSOR and v.op in (Op.ADD, Op.MUL):
                x, y = y, x
            if x.kind is Kind.TENSOR:
                xs, xfresh = self.tensor(x)
                method = _BINARY_METHOD[v.op]
                sc = _alpha_scaled(y) if v.op in (Op.ADD, Op.SUB) else None
                if sc:
                    alpha = self.host(sc[0] if v.op is Op.ADD else _neg(sc[0]))
                    zs, _ = self.tensor(sc[1])
                    if self.device_scale(sc[0]):
                        helper = f"_rt.{'add_' if xfresh else 'add'}({xs}, {zs}, {alpha})"
                        plain = f"{xs}.add_({zs}, alpha={alpha})" if xfresh else f"torch.add({xs}, {zs}, alpha={alpha})"
                        return f"({helper} if capturable else {plain})", True
                    args = f"{zs}, alpha={alpha}"
                    method = "add"
                else:
                    args, _ = self.tensor(y)
                if xfresh:
                    return f"{xs}.{method}_({args})", True
                return f"torch.{method}({xs}, {args})", True
        if v.op in _INPLACE_UNARY:
            xs, xfresh = self.tensor(v.args[0])
            if xfresh:
                return f"{xs}.{_INPLACE_UNARY[v.op]}()", True
        # one torch op over its operands; a host operand keeps its host form (`sqrt(bc2) / t`
        # is Python's `float / tensor`, as torch.optim writes it, not torch.sqrt of a float)
        from ..builtins import OPS
        numbers = _number_args(v)
        return OPS[v.op].torch.format(*(self.tensor(a)[0] if i in numbers else self.operand(a)
                                        for i, a in enumerate(v.args))), True

    def operand(self, a: Value) -> str:
        """`a` where torch needs a tensor: a host number is filled into the parameter's shape
        (`torch.minimum(0.5, t)`, `t.lerp_(0.9, w)` take no Python number there)."""
        if a.kind is Kind.TENSOR:
            return self.tensor(a)[0]
        return f"torch.full_like(param, {self.host(a)}{', dtype=torch.bool' if a.type is Type.BOOL else ''})"

    # ---- statements ------------------------------------------------------------
    def body(self, stmts: tuple[Stmt, ...], w: Writer) -> None:
        for s in stmts:
            if isinstance(s, Let):
                code = self.host(s.value) if s.value.kind < Kind.TENSOR else self.tensor(s.value)[0]
                w.line(f"{ident(s.name)} = {code}")
            elif isinstance(s, Store):
                self.store(s.target, s.value, w)
            else:
                w.line(f"if {self.host(s.cond)}:")
                with w.indent():
                    self.body(s.then, w) if s.then else w.line("pass")
                if s.other:
                    w.line("else:")
                    with w.indent():
                        self.body(s.other, w)

    def store(self, target: str, v: Value, w: Writer) -> None:
        d = ident(target)
        if target in self.empty:
            first = specialize_value(v, Op.IS_EMPTY, target, True)
            later = specialize_value(v, Op.IS_EMPTY, target, False)
            w.line(f"if {d} is None:")
            with w.indent():
                src, fresh = self.tensor(first)
                if first.kind < Kind.TENSOR:   # first stored from a host number: the parameter's shape
                    src, fresh = self.operand(first), True
                # the list keeps it as the parameter is (complex where it is); `d` stays the real view
                w.line(f"{d} = {src if fresh else f'torch.clone({src}).detach()'}")
                w.line(f"{ident(self.p.list_name(target))}[i] = _rt.like_param({d}, params[i])")
            w.line("else:")
            with w.indent():
                self.store_into(d, target, later, w)
            return
        self.store_into(d, target, v, w)

    def store_into(self, d: str, target: str, v: Value, w: Writer) -> None:
        if _is_target(v, target):
            w.line("pass")
            return
        if v.op is Op.WHERE and v.args[0].kind is not Kind.TENSOR:
            w.line(f"if {self.host(v.args[0])}:")
            with w.indent():
                self.store_into(d, target, v.args[1], w)
            w.line("else:")
            with w.indent():
                self.store_into(d, target, v.args[2], w)
            return
        if target in self.scalar:
            form = scalar_store(target, v)
            if form is not None:   # the 0-d tensor's own in-place op, as torch.optim writes it
                w.line(f"{d}.{INPLACE_SCALAR[form[0]]}({self.host(form[1])})")
            else:
                w.line(f"{d}.fill_({self.host(v)})")
            return
        if v.op is Op.LERP and _is_target(v.args[0], target) and not any(_reads(a, target) for a in v.args[1:]):
            w.line(f"{d}.lerp_({self.operand(v.args[1])}, {self.tensor(v.args[2])[0]})")
            return
        acc = split_accumulate(v, target)
        if acc is not None:
            scale, negate, rest = acc
            chain = d + (f".mul_({self.host(scale)})" if scale is not None else "")
            form = rest_forms(rest, negate)
            helper = None
            if form[0] in ("addcmul", "addcdiv"):
                _, y, z, value = form
                value_src = self.host(value)
                tail = "" if value_src == "1.0" else f", value={value_src}"
                if self.device_scale(value):
                    helper = f"_rt.{form[0]}_({chain}, {self.tensor(y)[0]}, {self.tensor(z)[0]}, {value_src})"
                chain += f".{form[0]}_({self.tensor(y)[0]}, {self.tensor(z)[0]}{tail})"
            elif form[0] == "add":
                if self.device_scale(form[2]):
                    helper = f"_rt.add_({chain}, {self.tensor(form[1])[0]}, {self.host(form[2])})"
                chain += f".add_({self.tensor(form[1])[0]}, alpha={self.host(form[2])})"
            elif form[0] == "add_scalar":
                chain += f".add_({self.host(form[1])})"
            else:
                chain += f".{'sub' if form[2] < 0 else 'add'}_({self.tensor(form[1])[0]})"
            if helper is not None:   # a device scale (capturable) stays on the device
                w.line("if capturable:")
                with w.indent():
                    w.line(helper)
                w.line("else:")
                with w.indent():
                    w.line(chain)
            else:
                w.line(chain)
            return
        if v.op is Op.MUL:
            for a, b in (v.args, v.args[::-1]):
                if _is_target(a, target) and not _reads(b, target):
                    w.line(f"{d}.mul_({self.tensor(b)[0]})")
                    return
        if v.op is Op.DIV and _is_target(v.args[0], target) and not _reads(v.args[1], target):
            w.line(f"{d}.div_({self.tensor(v.args[1])[0]})")
            return
        if v.op in (Op.MAX, Op.MIN):
            for a, b in (v.args, v.args[::-1]):
                if _is_target(a, target) and not _reads(b, target) and b.kind is Kind.TENSOR:
                    fn = "maximum" if v.op is Op.MAX else "minimum"
                    w.line(f"torch.{fn}({d}, {self.tensor(b)[0]}, out={d})")
                    return
            # max(f(d), b): update d in place to f(d), then take the maximum into it, as Adamax's
            # `torch.maximum(exp_inf.mul_(beta2), grad.abs().add_(eps), out=exp_inf)`
            for a, b in (v.args, v.args[::-1]):
                if _reads(a, target) and not _reads(b, target) and a.kind is Kind.TENSOR and b.kind is Kind.TENSOR:
                    self.store_into(d, target, a, w)
                    fn = "maximum" if v.op is Op.MAX else "minimum"
                    w.line(f"torch.{fn}({d}, {self.tensor(b)[0]}, out={d})")
                    return
        if v.op is Op.CLAMP and _reads(v.args[0], target) and not any(_reads(a, target) for a in v.args[1:]):
            # clamp(f(d), lo, hi): d = f(d) in place, then clamp_ (Rprop's `step_size.mul_(sign).clamp_(lo, hi)`)
            if not _is_target(v.args[0], target):
                self.store_into(d, target, v.args[0], w)
            w.line(f"{d}.clamp_({self.tensor(v.args[1])[0]}, {self.tensor(v.args[2])[0]})")
            return
        src, _ = self.tensor(v)
        if v.kind < Kind.TENSOR:
            w.line(f"{d}.fill_({src})")
        else:
            w.line(f"{d}.copy_({src})")


def specialize_value(v: Value, op: Op, arg, value) -> Value:
    from ..ir import rebuild
    from ..passes import _simplify

    def sub(n: Value) -> Value:
        if n.op is op and n.arg == arg and not n.args:
            return const(value)
        return _simplify(n)
    return rebuild(v, sub)


class ForeachEmitter:
    """`_multi_tensor_<name>`: hoisted IR over tensor lists; host values come from
    the per-tensor host function as columns (a float for group-level values, a
    list for per-tensor ones)."""

    def __init__(self, p: Program, cols: list[Column]):
        self.p = p
        self.cols = {c.name: c for c in cols}
        self.empty = {s.name for s in p.states if s.init == "empty"}
        self.is_empty_vars: dict[str, str] = {}   # hoisted local -> state it tests
        self.tensor_locals = tensor_capable(p)
        self.w = Writer()
        self.tmp = 0

    def device_scale(self, v: Value) -> bool:
        """A scale that may hold tensors (a per-tensor list: tensors when capturable or compiled;
        a Tensor lr): passed through a runtime helper (optdsl.runtime.foreach_addcdiv_, ...)."""
        return self.is_list(v) or may_be_tensor(v, self.tensor_locals)

    def fresh_name(self) -> str:
        self.tmp += 1
        return f"_t{self.tmp}"

    def scalar(self, v: Value) -> str:
        """A host value usable as a foreach scalar argument (float or list of floats)."""
        if v.kind <= Kind.HOST or v.op is Op.CONST:   # CONST kind too: math on numbers left unfolded
            if v.op is Op.VAR and str(v.arg) in self.cols and self.cols[str(v.arg)].type is Type.NUM:
                return ident(str(v.arg))
            return host_expr(v)
        if v.op is Op.CONST:
            return float_literal(v.arg)
        if v.op is Op.VAR:
            return ident(str(v.arg))
        if v.op is Op.NEG and v.args[0].op is Op.VAR:
            name = ident(str(v.args[0].arg))
            col = self.cols.get(str(v.args[0].arg))
            if col is not None and col.kind is Kind.TENSOR_SCALAR:
                return f"[-x for x in {name}]"
            return f"-{name}"
        if v.op is Op.NEG and v.args[0].op is Op.CONST:
            return float_literal(-v.args[0].arg)
        raise AssertionError(f"host value {v!r} was not hoisted")

    def is_list(self, v: Value) -> bool:
        if v.op is Op.NEG:
            return self.is_list(v.args[0])
        # per-tensor numbers are lists; per-tensor booleans are one value (uniform, or the loop path runs)
        return v.op is Op.VAR and str(v.arg) in self.cols and self.cols[str(v.arg)].kind is Kind.TENSOR_SCALAR \
            and self.cols[str(v.arg)].type is Type.NUM

    def tensor(self, v: Value) -> tuple[str, bool]:
        w = self.w
        if v.kind is not Kind.TENSOR:
            return self.scalar(v), False
        if v.op in LEAF:
            if v.op is Op.PARAM:
                return "params", False
            if v.op is Op.GRAD:
                return "grads", False
            if v.op is Op.STATE:
                return ident(self.p.list_name(str(v.arg))), False
            return ident(str(v.arg)), False
        if v.op is Op.WHERE and v.args[0].kind is not Kind.TENSOR:
            a = self.as_expression(v.args[1])
            b = self.as_expression(v.args[2])
            if a is not None and b is not None:   # both sides are one call: a conditional expression
                return f"({a} if {self.scalar(v.args[0])} else {b})", False
            out = self.fresh_name()
            w.line(f"if {self.scalar(v.args[0])}:")
            with w.indent():
                w.line(f"{out} = {self.as_list(v.args[1])}")
            w.line("else:")
            with w.indent():
                w.line(f"{out} = {self.as_list(v.args[2])}")
            return out, False
        if v.op in (Op.ADD, Op.SUB) and v.args[0].kind is Kind.TENSOR and v.args[1].kind is Kind.TENSOR:
            # `x - y * z` -> _foreach_addcmul(x, y, z, value=-1): the loop path's torch.addcmul, one rounding order
            form = rest_forms(v.args[1], v.op is Op.SUB)
            if form[0] in ("addcmul", "addcdiv") and not self.device_scale(form[3]):
                xs, xfresh = self.tensor(v.args[0])
                ys, _ = self.tensor(form[1])
                zs, _ = self.tensor(form[2])
                src = self.scalar(form[3])
                tail = "" if src == "1.0" else f", value={src}"
                return self.in_place_or_new(f"torch._foreach_{form[0]}", xs, xfresh, f"{ys}, {zs}{tail}")
        if v.op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MAX, Op.MIN, Op.POW):
            x, y = v.args
            if x.kind is not Kind.TENSOR:
                if v.op in (Op.ADD, Op.MUL, Op.MAX, Op.MIN):
                    x, y = y, x
                elif v.op is Op.SUB:   # s - t = (-t) + s
                    t = self.own(self.tensor(y))
                    w.line(f"torch._foreach_neg_({t})")
                    w.line(f"torch._foreach_add_({t}, {self.scalar(x)})")
                    return t, True
                elif v.op is Op.DIV:   # s / t = s * (1 / t)
                    t = self.own(self.tensor(y))
                    w.line(f"torch._foreach_reciprocal_({t})")
                    w.line(f"torch._foreach_mul_({t}, {self.scalar(x)})")
                    return t, True
                else:
                    ys, _ = self.tensor(y)
                    out = self.fresh_name()
                    w.line(f"{out} = torch._foreach_pow({self.scalar(x)}, {ys})")
                    return out, True
            op_name = {Op.ADD: "add", Op.SUB: "sub", Op.MUL: "mul", Op.DIV: "div", Op.MAX: "maximum",
                       Op.MIN: "minimum", Op.POW: "pow"}[v.op]
            xs, xfresh = self.tensor(x)
            sc = _alpha_scaled(y) if v.op in (Op.ADD, Op.SUB) else None
            if sc and self.is_list(sc[0]):   # one number per tensor: the loop path's add(alpha=), per tensor
                ys, _ = self.tensor(sc[1])
                alpha = self.scalar(sc[0] if v.op is Op.ADD else _neg(sc[0]))
                return self.in_place_or_new("_rt.foreach_add_scaled", xs, xfresh, f"{ys}, {alpha}")
            if sc and not self.is_list(sc[0]):
                ys, _ = self.tensor(sc[1])
                alpha = self.scalar(sc[0] if v.op is Op.ADD else _neg(sc[0]))
                if self.device_scale(sc[0]):
                    return self.in_place_or_new("_rt.foreach_add", xs, xfresh, f"{ys}, {alpha}")
                args = f"{ys}, alpha={alpha}"
                op_name = "add"
            else:
                args, _ = self.tensor(y)
            return self.in_place_or_new(f"torch._foreach_{op_name}", xs, xfresh and v.op is not Op.POW, args)
        if v.op in _INPLACE_UNARY:
            xs, xfresh = self.tensor(v.args[0])
            name = _INPLACE_UNARY[v.op][:-1]
            return self.in_place_or_new(f"torch._foreach_{name}", xs, xfresh)
        if v.op is Op.LERP and v.args[0].kind is Kind.TENSOR and v.args[1].kind is Kind.TENSOR:
            a, _ = self.tensor(v.args[0])
            b, _ = self.tensor(v.args[1])
            wt = self.as_list(v.args[2]) if self.is_list(v.args[2]) else self.tensor(v.args[2])[0]
            out = self.fresh_name()
            w.line(f"{out} = torch._foreach_lerp({a}, {b}, {wt})")
            return out, True
        # No foreach form: one torch op per tensor.
        return self.per_tensor(v), True

    def as_list(self, v: Value) -> str:
        """`v` as a list of tensors, where a foreach op takes no number: a host value (a float, or a
        per-tensor list of floats) filled into each parameter's shape."""
        if v.kind is Kind.TENSOR:
            return self.tensor(v)[0]
        src = self.scalar(v)
        dtype = ", dtype=torch.bool" if v.type is Type.BOOL else ""
        if self.is_list(v):
            return f"[torch.full_like(_p, _x{dtype}) for _p, _x in zip(params, {src})]"
        return f"[torch.full_like(_p, {src}{dtype}) for _p in params]"

    def in_place_or_new(self, fn: str, xs: str, xfresh: bool, args: str = "") -> tuple[str, bool]:
        """`fn_(xs, args)` on a fresh temporary the caller owns, else `out = fn(xs, args)`."""
        tail = f", {args}" if args else ""
        if xfresh:
            self.w.line(f"{fn}_({xs}{tail})")
            return xs, True
        out = self.fresh_name()
        self.w.line(f"{out} = {fn}({xs}{tail})")
        return out, True

    def as_expression(self, v: Value) -> str | None:
        """`v` as one expression if it needs at most one out-of-place call, else None (nothing emitted)."""
        if v.kind is not Kind.TENSOR:
            return self.as_list(v)
        mark, tmp = len(self.w.lines), self.tmp
        src, _ = self.tensor(v)
        lines = self.w.lines[mark:]
        if not lines:
            return src
        if len(lines) == 1 and lines[0].strip().startswith(f"{src} = "):
            del self.w.lines[mark:]
            return lines[0].strip()[len(src) + 3:]
        del self.w.lines[mark:]
        self.tmp = tmp
        return None

    def per_tensor(self, v: Value) -> str:
        args = []
        for a in v.args:
            src, _ = self.tensor(a)
            args.append((src, a.kind is Kind.TENSOR or self.is_list(a)))
        names = [f"_x{i}" for i in range(len(args))]
        listed = [(n, src) for n, (src, is_list) in zip(names, args) if is_list]
        numbers = _number_args(v)
        # a host number becomes a tensor like a numeric tensor operand, or like the parameter
        like = next((n for n, a in zip(names, v.args) if a.kind is Kind.TENSOR and a.type is Type.NUM), None)
        if like is None and any(a.kind is not Kind.TENSOR and i not in numbers for i, a in enumerate(v.args)):
            like = "_p"
            listed.append(("_p", "params"))
        dtype = lambda a: ", dtype=torch.bool" if a.type is Type.BOOL else ""  # noqa: E731
        forms = [n if a.kind is Kind.TENSOR or i in numbers else f"torch.full_like({like}, {n}{dtype(a)})"
                 for i, (n, a) in enumerate(zip(names, v.args))]   # torch takes no number there
        inner = OPS[v.op].torch.format(*forms)
        for n, (src, is_list) in zip(names, args):
            if not is_list:
                inner = re.sub(rf"\b{n}\b", lambda m: src, inner)
        out = self.fresh_name()
        loop = ", ".join(n for n, _ in listed)
        sources = ", ".join(src for _, src in listed)
        self.w.line(f"{out} = [{inner} for {loop}{',' if len(listed) == 1 else ''} in zip({sources})]")
        return out

    def own(self, result: tuple[str, bool]) -> str:
        src, fresh = result
        if fresh:
            return src
        out = self.fresh_name()
        self.w.line(f"{out} = torch._foreach_mul({src}, 1.0)")
        return out

    # ---- statements ------------------------------------------------------------
    def body(self, stmts: tuple[Stmt, ...]) -> None:
        w = self.w
        for s in stmts:
            if not is_device_stmt(s, self.p):
                if isinstance(s, Let) and s.value.op is Op.IS_EMPTY:
                    self.is_empty_vars[s.name] = str(s.value.arg)
                continue
            if isinstance(s, Let):
                mark = len(w.lines)
                src, fresh = self.tensor(s.value)
                if not self.rename_temp(mark, src, ident(s.name)):
                    w.line(f"{ident(s.name)} = {src}")
            elif isinstance(s, Store):
                self.store(s.target, s.value)
            else:
                mark = len(w.lines)
                w.line(f"if {self.scalar(s.cond)}:")
                with w.indent():
                    before = len(w.lines)
                    self.body(s.then)
                    then_empty = len(w.lines) == before
                    if then_empty:
                        w.line("pass")
                if s.other:
                    w.line("else:")
                    with w.indent():
                        before = len(w.lines)
                        self.body(s.other)
                        else_empty = len(w.lines) == before
                        if else_empty:
                            w.lines.pop()
                else:
                    else_empty = True
                if then_empty and else_empty:
                    del w.lines[mark:]

    def rename_temp(self, mark: int, temp: str, name: str) -> bool:
        """Let the local name the temporary its value was built in, where that reads the same."""
        import re
        lines = self.w.lines[mark:]
        if not re.fullmatch(r"_t\d+", temp) or not lines or not lines[0].lstrip().startswith(f"{temp} = "):
            return False
        word = re.compile(rf"\b{re.escape(name)}\b")
        if any(word.search(line) for line in lines[1:]):
            return False
        temp_word = re.compile(rf"\b{re.escape(temp)}\b")
        self.w.lines[mark:] = [temp_word.sub(name, line) for line in lines]
        return True

    def store(self, target: str, v: Value, may_be_empty: bool = True) -> None:
        w = self.w
        d = "params" if target == "param" else ident(self.p.list_name(target))
        if _is_target(v, target):
            return
        special = (v.op is Op.WHERE and v.args[0].kind is not Kind.TENSOR and v.args[0].op is Op.VAR
                   and self.is_empty_vars.get(str(v.args[0].arg)) == target)
        if target in self.empty and may_be_empty and not special and not (
                v.op is Op.WHERE and v.args[0].kind is not Kind.TENSOR):
            # an `empty` state some of whose tensors may not exist yet: create those, update the rest
            w.line(f"if any(t is None for t in {d}):")
            with w.indent():
                src = self.as_list(v)
                w.line(f"for _j, _t in enumerate({src}):")
                with w.indent():
                    w.line(f"if {d}[_j] is None:")
                    with w.indent():
                        w.line(f"{d}[_j] = torch.clone(_t).detach()")
                        w.line(f"{d}_out[_j] = _rt.like_param({d}[_j], original_params[_j])")
                    w.line("else:")
                    with w.indent():
                        w.line(f"{d}[_j].copy_(_t)")
            w.line("else:")
            with w.indent():
                mark = len(w.lines)
                self.store(target, v, may_be_empty=False)
                if len(w.lines) == mark:
                    w.line("pass")
            return
        if v.op is Op.WHERE and v.args[0].kind is not Kind.TENSOR:
            cond = v.args[0]
            if target in self.empty and cond.op is Op.VAR and self.is_empty_vars.get(str(cond.arg)) == target:
                w.line(f"if {self.scalar(cond)}:")
                with w.indent():
                    src = self.as_list(v.args[1])
                    w.line(f"{d} = [torch.clone(t).detach() for t in {src}]")
                    w.line(f"{d}_out[:] = [_rt.like_param(_t, _p) for _t, _p in zip({d}, original_params)]")
                w.line("else:")
                with w.indent():
                    mark = len(w.lines)
                    self.store(target, v.args[2])
                    if len(w.lines) == mark:
                        w.line("pass")
                return
            w.line(f"if {self.scalar(cond)}:")
            with w.indent():
                mark = len(w.lines)
                self.store(target, v.args[1])
                if len(w.lines) == mark:
                    w.line("pass")
            w.line("else:")
            with w.indent():
                mark = len(w.lines)
                self.store(target, v.args[2])
                if len(w.lines) == mark:
                    w.line("pass")
            return
        if v.op is Op.LERP and _is_target(v.args[0], target) and not any(_reads(a, target) for a in v.args[1:]):
            y = self.as_list(v.args[1])
            wt = self.as_list(v.args[2]) if self.is_list(v.args[2]) else self.tensor(v.args[2])[0]
            w.line(f"torch._foreach_lerp_({d}, {y}, {wt})")
            return
        acc = split_accumulate(v, target)
        if acc is not None:
            scale, negate, rest = acc
            form = rest_forms(rest, negate)
            # evaluate the operands before touching d
            if form[0] in ("addcmul", "addcdiv"):
                ys, _ = self.tensor(form[1])
                zs, _ = self.tensor(form[2])
            elif form[0] in ("add", "add_tensor"):
                ys, _ = self.tensor(form[1])
            if scale is not None:
                w.line(f"torch._foreach_mul_({d}, {self.scalar(scale)})")
            if form[0] in ("addcmul", "addcdiv"):
                value = form[3]
                if self.device_scale(value):
                    w.line(f"_rt.foreach_{form[0]}_({d}, {ys}, {zs}, {self.scalar(value)})")
                else:
                    src = self.scalar(value)
                    tail = "" if src == "1.0" else f", value={src}"
                    w.line(f"torch._foreach_{form[0]}_({d}, {ys}, {zs}{tail})")
            elif form[0] == "add":
                if self.is_list(form[2]):   # one number per tensor: the loop path's add_(alpha=), per tensor
                    w.line(f"_rt.foreach_add_scaled_({d}, {ys}, {self.scalar(form[2])})")
                elif self.device_scale(form[2]):
                    w.line(f"_rt.foreach_add_({d}, {ys}, {self.scalar(form[2])})")
                else:
                    w.line(f"torch._foreach_add_({d}, {ys}, alpha={self.scalar(form[2])})")
            elif form[0] == "add_scalar":
                w.line(f"torch._foreach_add_({d}, {self.scalar(form[1])})")
            else:
                w.line(f"torch._foreach_{'sub' if form[2] < 0 else 'add'}_({d}, {ys})")
            return
        if v.op is Op.MUL:
            for a, b in (v.args, v.args[::-1]):
                if _is_target(a, target) and not _reads(b, target):
                    src, _ = self.tensor(b)
                    w.line(f"torch._foreach_mul_({d}, {src})")
                    return
        if v.op is Op.DIV and _is_target(v.args[0], target) and not _reads(v.args[1], target):
            src, _ = self.tensor(v.args[1])
            w.line(f"torch._foreach_div_({d}, {src})")
            return
        if v.op in (Op.MAX, Op.MIN):
            for a, b in (v.args, v.args[::-1]):
                if _is_target(a, target) and not _reads(b, target):
                    src, _ = self.tensor(b)
                    w.line(f"torch._foreach_{'maximum' if v.op is Op.MAX else 'minimum'}_({d}, {src})")
                    return
        w.line(f"torch._foreach_copy_({d}, {self.as_list(v)})")
