"""IR -> the per-tensor loop (`_single_tensor_<name>`): torch ops on each tensor, host math
inline, as in torch/optim/adam.py. Group-wide reductions split it into phases (optdsl.plan):
a loop over the tensors per phase, their parts combined between loops."""
from __future__ import annotations

from ..builtins import OPS, REDUCTIONS
from ..ir import AXIS_SCOPES, LEAF, REDUCE, Kind, axis_dim, Let, Op, Program, Stmt, Store, Type, Value, const, reduced_as_is
from ..names import ident, parts_name
from ..plan import Phase
from .common import Writer
from .forms import (INPLACE_UNARY, BINARY_METHOD, alpha_scaled, holds_reduction, is_target, neg, number_args, reads,
                    rest_forms, split_accumulate)
from .host import INPLACE_SCALAR, host_expr, may_be_tensor, scalar_store, tensor_capable
from ..selects import Selector, bound_after, is_select


class LoopEmitter:
    """`_single_tensor_<name>`: one tensor at a time, host math inline."""

    def __init__(self, p: Program, phase: Phase | None = None):
        self.p = p
        self.phase = phase          # which phase of the plan (group reductions) this loop runs
        self.empty = {s.name for s in p.states if s.init == "empty"}
        self.scalar = {s.name for s in p.states if s.kind is Kind.TENSOR_SCALAR}
        self.tensor_locals = tensor_capable(p)
        self.selector: Selector | None = None

    def host(self, v: Value) -> str:
        return host_expr(v)

    def device_scale(self, v: Value) -> bool:
        """An `alpha=` / `value=` that may be a device tensor when capturable (a step-dependent value,
        a Tensor lr): the capturable branch passes it through a runtime helper that keeps it on the
        device (optdsl.runtime.addcdiv_, ...); the other branch is torch.optim's own call."""
        return may_be_tensor(v, self.tensor_locals)

    def tensor(self, v: Value) -> tuple[str, bool]:
        """(source, fresh): fresh results are new tensors the caller may modify in place."""
        if v.kind.on_host:
            return self.host(v), False
        if v.kind is Kind.COVER:   # one accumulator per dim: a list
            return self.cover(v), False
        if v.kind is not Kind.TENSOR:   # one value per tensor or per channel: a small tensor
            return self.small(v), False
        if v.op in LEAF:
            return (ident(str(v.arg)) if v.op in (Op.STATE, Op.VAR) else v.op.name.lower()), False
        if is_select(v):   # if-conversion (optdsl.selects): the condition may be a tensor
            return f"_rt.where({ident(str(v.args[0].arg))}, {self.operand(v.args[1])}, {self.operand(v.args[2])})", True
        if v.op is Op.WHERE and v.args[0].kind.on_host:
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
                method = BINARY_METHOD[v.op]
                sc = alpha_scaled(y) if v.op in (Op.ADD, Op.SUB) else None
                if sc:
                    alpha = self.host(sc[0] if v.op is Op.ADD else neg(sc[0]))
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
        if v.op in INPLACE_UNARY:
            xs, xfresh = self.tensor(v.args[0])
            if xfresh:
                return f"{xs}.{INPLACE_UNARY[v.op]}()", True
        if v.op is Op.LERP and any(holds_reduction(a, self.p) for a in v.args[:2]):
            return f"_rt.lerp_small({', '.join(self.operand(a) for a in v.args[:2])}, {self.tensor(v.args[2])[0]})", True
        # one torch op over its operands; a host operand keeps its host form (`sqrt(bc2) / t`
        # is Python's `float / tensor`, as torch.optim writes it, not torch.sqrt of a float)
        numbers = number_args(v)
        return OPS[v.op].torch.format(*(self.tensor(a)[0] if i in numbers else self.operand(a)
                                        for i, a in enumerate(v.args))), True

    def operand(self, a: Value) -> str:
        """`a` where torch needs a tensor: a host number is filled into the parameter's shape
        (`torch.minimum(0.5, t)`, `t.lerp_(0.9, w)` take no Python number there)."""
        if a.kind.on_device:
            return self.tensor(a)[0]
        return f"torch.full_like(param, {self.host(a)}{', dtype=torch.bool' if a.type is Type.BOOL else ''})"

    # ---- per-tensor and per-channel device values ---------------------------------
    def small(self, v: Value) -> str:
        """A reduction's value or math on it: 0-d (per channel: (size(0), 1, ...)) tensors, in torch
        ops, with host numbers as Python numbers where torch takes one (`w_norm / g_norm`,
        `torch.where(w_norm > 0, trust, 1.0)`)."""
        if v.kind.on_host:
            return self.host(v)
        if v.kind is Kind.COVER:
            return self.cover(v)
        if v.op in LEAF:
            return ident(str(v.arg))
        if v.op in REDUCE:
            return self.reduction(v)
        if is_select(v):
            return f"_rt.where({ident(str(v.args[0].arg))}, {self.small(v.args[1])}, {self.small(v.args[2])})"
        if v.op is Op.WHERE and v.args[0].kind.on_host:
            return f"({self.small_operand(v.args[1], v)} if {self.host(v.args[0])} else {self.small_operand(v.args[2], v)})"
        sc = alpha_scaled(v.args[1]) if v.op in (Op.ADD, Op.SUB) and v.args[0].kind.on_device else None
        if sc:   # `s * beta + (1 - beta) * n`: torch.add(x, y, alpha=), one rounding, as torch.optim writes it
            alpha = self.host(sc[0] if v.op is Op.ADD else neg(sc[0]))
            return f"torch.add({self.small(v.args[0])}, {self.small(sc[1])}, alpha={alpha})"
        if v.op is Op.LERP:   # torch.lerp wants one dtype; a reduction of a bf16 tensor beside float32 state
            return f"_rt.lerp_small({', '.join(self.small(a) for a in v.args)})"
        numbers = number_args(v)
        return OPS[v.op].torch.format(*(self.small(a) if a.kind.on_device or i in numbers else self.small_operand(a, v)
                                        for i, a in enumerate(v.args)))

    def cover(self, v: Value) -> str:
        """A cover value (one accumulator per dim): a list of tensors. A cover state or local, a
        reduction per dim (`amax(x, cover)`), or math on covers, per accumulator:
        `[torch.maximum(_a0, _a1) for _a0, _a1 in zip(accumulator, nu)]`, host and per-tensor
        operands as they are."""
        if v.op in LEAF:
            return ident(str(v.arg))
        if v.op in REDUCE:
            return self.reduction(v)
        if v.op is Op.WHERE and v.args[0].kind.on_host:
            return f"({self.cover(v.args[1])} if {self.host(v.args[0])} else {self.cover(v.args[2])})"
        lists: list[str] = []

        def one_accumulator(n: Value) -> Value:   # n with each cover it reads as a whole as one of its accumulators
            if n.kind is not Kind.COVER:
                return n
            if n.op in LEAF or n.op in REDUCE or n.op is Op.WHERE and n.args[0].kind.on_host:
                lists.append(self.cover(n))
                return Value(Op.VAR, (), f"_a{len(lists) - 1}", Kind.REDUCED, n.type)
            return Value(n.op, tuple(one_accumulator(a) for a in n.args), n.arg, Kind.REDUCED, n.type)
        body = self.small(one_accumulator(v))
        names = ", ".join(f"_a{j}" for j in range(len(lists)))
        source = lists[0] if len(lists) == 1 else f"zip({', '.join(lists)})"
        return f"[{body} for {names} in {source}]"

    def small_operand(self, a: Value, parent: Value) -> str:
        """`a` as a tensor beside the other operands of `parent`: a host number becomes a 0-d tensor of
        a device operand's dtype and device (the parameter's, where no operand is a plain name)."""
        if a.kind.on_device:
            return self.small(a)
        like = next((ident(str(x.arg)) for x in parent.args if x.kind.on_device and x.op in (Op.VAR, Op.STATE)), "param")
        return f"_rt.small({self.host(a)}, {like})"

    def reduction_operands(self, v: Value) -> list[str]:
        """A reduction's operands, each as a tensor of the parameter's shape (`sum(1)` counts elements);
        along an axis, an operand that varies along it as it is (a row state reduced per column)."""
        return [self.tensor(a)[0] if reduced_as_is(v.arg, a.kind)
                else f"_rt.expand({self.small(a)}, param)" for a in v.args]

    def reduction(self, v: Value) -> str:
        """A per-tensor, per-channel or per-row/column reduction on the tensor at hand (group ones are
        phases: see body)."""
        form = REDUCTIONS[v.op]
        assert v.arg != "group", "group reductions are computed between the loop's phases"
        if v.arg in AXIS_SCOPES:
            return form.axis.format(*self.reduction_operands(v), d=axis_dim(v.arg))
        if v.arg == "cover":
            return form.cover.format(*self.reduction_operands(v))
        return (form.torch if v.arg == "tensor" else form.channel).format(*self.reduction_operands(v))

    def group_part(self, name: str, v: Value) -> str:
        """This tensor's part of group reduction `name`, kept for the combine after the loop."""
        return f"{parts_list(name)}[_i] = {REDUCTIONS[v.op].part.format(*self.reduction_operands(v))}"

    # ---- statements ------------------------------------------------------------
    def body(self, stmts: tuple[Stmt, ...], w: Writer, bound: set[str] | None = None) -> None:
        if self.selector is None:
            self.selector = Selector(self.p, stmts)
        bound = set() if bound is None else bound
        for s in stmts:
            if isinstance(s, Let):
                bound.add(s.name)
            if isinstance(s, Let) and s.value.op in REDUCE and s.value.arg == "group":
                role = self.phase.role(s.name) if self.phase is not None else "inline"
                if role == "sink":
                    w.line(self.group_part(s.name, s.value))
                elif role == "inline":
                    raise AssertionError("a group reduction in the loop path is a phase barrier")
                # ready: combined after an earlier phase's loop, read by name
            elif isinstance(s, Let) and s.value.op is Op.ITEM:   # a reduction's value read back to the host
                w.line(f"{ident(s.name)} = {OPS[Op.ITEM].torch.format(self.small(s.value.args[0]))}")
            elif isinstance(s, Let):
                code = self.host(s.value) if s.value.kind.on_host else self.tensor(s.value)[0]
                w.line(f"{ident(s.name)} = {code}")
            elif isinstance(s, Store):
                self.store(s.target, s.value, w)
            elif self.selector.applies(s):
                # the condition is a tensor with capturable=True or under torch.compile: both branches,
                # then selects (optdsl.selects); in eager mode the `if` as torch.optim writes it
                w.line("if capturable or _rt.compiling():")
                with w.indent():
                    selected = self.selector.convert(s, bound)
                    for x in selected:
                        if isinstance(x, Let) and x.value.kind.on_host and may_be_tensor(x.value, self.tensor_locals):
                            self.tensor_locals.add(x.name)
                    self.body(selected, w, set(bound))
                w.line("else:")
                with w.indent():
                    self.branch(s, w, bound)
                bound |= bound_after(s)
            else:
                self.branch(s, w, bound)
                bound |= bound_after(s)

    def branch(self, s, w: Writer, bound: set[str]) -> None:
        w.line(f"if {self.host(s.cond) if s.cond.kind.on_host else self.small(s.cond)}:")
        with w.indent():
            self.body(s.then, w, set(bound)) if s.then else w.line("pass")
        if s.other:
            w.line("else:")
            with w.indent():
                self.body(s.other, w, set(bound))

    def store(self, target: str, v: Value, w: Writer) -> None:
        d = ident(target)
        if target in self.empty:
            first = specialize_value(v, Op.IS_EMPTY, target, True)
            later = specialize_value(v, Op.IS_EMPTY, target, False)
            w.line(f"if {d} is None:")
            with w.indent():
                src, fresh = self.tensor(first)
                if first.kind.on_host:   # first stored from a host number: the parameter's shape
                    src, fresh = self.operand(first), True
                elif first.kind is not Kind.TENSOR:   # from a per-tensor or per-channel value: broadcast
                    src, fresh = f"_rt.expand({src}, param)", False
                # the list keeps it as the parameter is (complex where it is); `d` stays the real view
                w.line(f"{d} = _rt.new_state({src}, param{', fresh=True' if fresh else ''})")
                w.line(f"{ident(self.p.list_name(target))}[_i] = _rt.like_param({d}, params[_i])")
            w.line("else:")
            with w.indent():
                self.store_into(d, target, later, w)
            return
        self.store_into(d, target, v, w)

    def store_into(self, d: str, target: str, v: Value, w: Writer) -> None:
        if is_target(v, target):
            w.line("pass")
            return
        if v.op is Op.WHERE and v.args[0].kind.on_host:
            w.line(f"if {self.host(v.args[0])}:")
            with w.indent():
                self.store_into(d, target, v.args[1], w)
            w.line("else:")
            with w.indent():
                self.store_into(d, target, v.args[2], w)
            return
        if target != "param" and self.p.state(target).shape == "cover":   # into each accumulator
            if v.kind is Kind.COVER:
                w.line(f"for _accumulator, _value in zip({d}, {self.cover(v)}):")
                with w.indent():
                    w.line("_accumulator.copy_(_value)")
            else:
                w.line(f"for _accumulator in {d}:")
                with w.indent():
                    w.line(f"_accumulator.{'fill_' if v.kind.on_host else 'copy_'}({self.tensor(v)[0]})")
            return
        if target in self.scalar:
            form = scalar_store(target, v)
            if form is not None:   # the 0-d tensor's own in-place op, as torch.optim writes it
                w.line(f"{d}.{INPLACE_SCALAR[form[0]]}({self.host(form[1])})")
            else:
                w.line(f"{d}.fill_({self.host(v)})")
            return
        if v.op is Op.LERP and is_target(v.args[0], target) and not any(reads(a, target) for a in v.args[1:]):
            if target != "param" and self.p.state(target).kind is not Kind.TENSOR \
                    or holds_reduction(v.args[1], self.p):
                # torch.lerp wants one dtype: a float32 scalar state towards a reduction of a bf16 tensor,
                # a bf16 tensor towards a group value (float32, over tensors of several dtypes)
                end = self.small_operand(v.args[1], v) if v.args[1].kind.on_host else self.tensor(v.args[1])[0]
                w.line(f"_rt.lerp_({d}, {end}, {self.tensor(v.args[2])[0]})")
                return
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
                if is_target(a, target) and not reads(b, target):
                    w.line(f"{d}.mul_({self.tensor(b)[0]})")
                    return
        if v.op is Op.DIV and is_target(v.args[0], target) and not reads(v.args[1], target):
            w.line(f"{d}.div_({self.tensor(v.args[1])[0]})")
            return
        if v.op in (Op.MAX, Op.MIN):
            for a, b in (v.args, v.args[::-1]):
                if is_target(a, target) and not reads(b, target) and b.kind.on_device:
                    fn = "maximum" if v.op is Op.MAX else "minimum"
                    w.line(f"torch.{fn}({d}, {self.tensor(b)[0]}, out={d})")
                    return
            # max(f(d), b): update d in place to f(d), then take the maximum into it, as Adamax's
            # `torch.maximum(exp_inf.mul_(beta2), grad.abs().add_(eps), out=exp_inf)`
            for a, b in (v.args, v.args[::-1]):
                if reads(a, target) and not reads(b, target) and a.kind.on_device and b.kind.on_device:
                    self.store_into(d, target, a, w)
                    fn = "maximum" if v.op is Op.MAX else "minimum"
                    w.line(f"torch.{fn}({d}, {self.tensor(b)[0]}, out={d})")
                    return
        if v.op is Op.CLAMP and reads(v.args[0], target) and not any(reads(a, target) for a in v.args[1:]):
            # clamp(f(d), lo, hi): d = f(d) in place, then clamp_ (Rprop's `step_size.mul_(sign).clamp_(lo, hi)`)
            if not is_target(v.args[0], target):
                self.store_into(d, target, v.args[0], w)
            w.line(f"{d}.clamp_({self.tensor(v.args[1])[0]}, {self.tensor(v.args[2])[0]})")
            return
        src, _ = self.tensor(v)
        if v.kind.on_host:
            w.line(f"{d}.fill_({src})")
        else:
            w.line(f"{d}.copy_({src})")


def parts_list(name: str) -> str:
    """The loop path's list of per-tensor parts of group reduction `name`."""
    return parts_name(name)


def specialize_value(v: Value, op: Op, arg, value) -> Value:
    from ..ir import rebuild
    from ..passes import _simplify

    def sub(n: Value) -> Value:
        if n.op is op and n.arg == arg and not n.args:
            return const(value)
        return _simplify(n)
    return rebuild(v, sub)
