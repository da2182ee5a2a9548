"""IR -> the foreach path (`_multi_tensor_<name>`): torch._foreach_* ops over tensor lists.
Host values come from the per-tensor host function as columns; a reduction's value is a list
of 0-d (or per-channel) tensors, one per tensor of the group."""
from __future__ import annotations

import re

from ..builtins import OPS, REDUCTIONS
from ..ir import AXIS_SCOPES, LEAF, REDUCE, UNARY, Kind, Let, Op, Program, Stmt, Store, Type, Value, axis_dim, reduced_as_is
from ..names import ident, out_name
from .common import Writer, across_ranks, float_literal
from .forms import alpha_scaled, holds_reduction, is_target, neg, number_args, reads, rest_forms, split_accumulate
from .host import Column, host_expr, is_device_stmt, may_be_tensor, tensor_capable


def comprehension(names: list[str], lists: list[str]) -> str:
    """`for x in xs` / `for x, y in zip(xs, ys)`."""
    if len(names) == 1:
        return f"for {names[0]} in {lists[0]}"
    return f"for {', '.join(names)} in zip({', '.join(lists)})"


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

    # ---- per-tensor and per-channel device values: lists of small tensors -------------
    def small_list(self, v: Value) -> tuple[str, bool]:
        """Math on reductions' values (lists of 0-d or per-channel tensors): one comprehension over the
        group in torch ops, host numbers as Python numbers where torch takes one."""
        if v.op in LEAF:
            return ident(self.p.list_name(str(v.arg))) if v.op is Op.STATE else ident(str(v.arg)), False
        zipped: dict[str, str] = {}   # list source -> its comprehension variable

        def var(src: str) -> str:
            return zipped.setdefault(src, f"_x{len(zipped)}")

        def render(a: Value) -> str:
            if a.kind.on_host:
                return var(self.scalar(a)) if self.is_list(a) else self.scalar(a)
            if a.op in LEAF:
                return var(self.small_list(a)[0])
            if a.op is Op.WHERE and a.args[0].kind.on_host:
                return f"({operand(a.args[1], a)} if {self.scalar(a.args[0])} else {operand(a.args[2], a)})"
            sc = alpha_scaled(a.args[1]) if a.op in (Op.ADD, Op.SUB) and a.args[0].kind.on_device else None
            if sc and not self.is_list(sc[0]):   # the loop path's torch.add(x, y, alpha=)
                alpha = self.scalar(sc[0] if a.op is Op.ADD else neg(sc[0]))
                return f"torch.add({render(a.args[0])}, {render(sc[1])}, alpha={alpha})"
            if a.op is Op.LERP:
                return f"_rt.lerp_small({', '.join(render(x) for x in a.args)})"
            numbers = number_args(a)
            return OPS[a.op].torch.format(*(render(x) if x.kind.on_device or i in numbers else operand(x, a)
                                            for i, x in enumerate(a.args)))

        def operand(x: Value, parent: Value) -> str:
            if x.kind.on_device:
                return render(x)
            like = next((render(y) for y in parent.args if y.kind.on_device and y.op in LEAF), None) or var("params")
            return f"_rt.small({render(x)}, {like})"

        src = render(v)
        out = self.fresh_name()
        self.w.line(f"{out} = [{src} {comprehension(list(zipped.values()), list(zipped))}]")
        return out, True

    def operand_list(self, a: Value) -> str:
        """A reduction's operand as a list of tensors of the parameters' shapes (`sum(1)` counts elements)."""
        if a.kind is Kind.TENSOR:
            return self.tensor(a)[0]
        if a.kind.on_device:
            return f"[_rt.expand(_x, _p) for _x, _p in zip({self.small_list(a)[0]}, params)]"
        if self.is_list(a):
            return f"[_rt.expand(_x, _p) for _x, _p in zip({self.scalar(a)}, params)]"
        return f"[_rt.expand({self.scalar(a)}, _p) for _p in params]"

    def reduction(self, v: Value) -> str:
        """A reduction over each tensor (or channel) of the group: one foreach call where torch has
        one, else one torch call per tensor; a group reduction combines the per-tensor parts and
        gives every tensor the group's value."""
        form = REDUCTIONS[v.op]
        # along an axis, an operand that varies along it is reduced as it is (a row state per column),
        # as the loop path does
        lists = [self.small_list(a)[0] if a.kind is not Kind.TENSOR and reduced_as_is(v.arg, a.kind)
                 else self.operand_list(a) for a in v.args]
        names = [f"_x{j}" for j in range(len(lists))]
        zipped = comprehension(names, lists)
        if v.arg in AXIS_SCOPES:
            return f"[{form.axis.format(*names, d=axis_dim(v.arg))} {zipped}]"
        assert v.arg != "cover", "a cover's foreach path takes the tensors one at a time (plan.tensor_at_a_time)"
        if v.arg == "channel":
            return f"[{form.channel.format(*names)} {zipped}]"
        if v.arg == "tensor":
            if form.foreach is not None:
                return form.foreach.format(*lists)
            return f"[{form.torch.format(*names)} {zipped}]"
        part = form.foreach.format(*lists) if form.foreach is not None and form.part == form.torch \
            else f"[{form.part.format(*names)} {zipped}]"
        value = form.combine.format(parts=part, n="_rt.group_numel(params)")
        return f"[{across_ranks(value, v)}] * len(params)"

    def tensor(self, v: Value) -> tuple[str, bool]:
        w = self.w
        if v.kind.on_host:
            return self.scalar(v), False
        if v.kind is not Kind.TENSOR:
            return self.small_list(v)
        if v.op in LEAF:
            if v.op is Op.PARAM:
                return "params", False
            if v.op is Op.GRAD:
                return "grads", False
            if v.op is Op.STATE:
                return ident(self.p.list_name(str(v.arg))), False
            return ident(str(v.arg)), False
        if v.op is Op.WHERE and v.args[0].kind.on_host:
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
                elif v.op is Op.POW and x.kind.on_device:
                    return self.per_tensor(v), True
                elif v.op is Op.SUB:   # s - t = (-t) + s
                    t = self.own(self.tensor(y))
                    w.line(f"torch._foreach_neg_({t})")
                    w.line(f"torch._foreach_add_({t}, {self.tensor(x)[0]})")
                    return t, True
                elif v.op is Op.DIV:   # s / t = s * (1 / t)
                    t = self.own(self.tensor(y))
                    w.line(f"torch._foreach_reciprocal_({t})")
                    w.line(f"torch._foreach_mul_({t}, {self.tensor(x)[0]})")
                    return t, True
                else:
                    ys, _ = self.tensor(y)
                    out = self.fresh_name()
                    w.line(f"{out} = torch._foreach_pow({self.scalar(x)}, {ys})")
                    return out, True
            op_name = {Op.ADD: "add", Op.SUB: "sub", Op.MUL: "mul", Op.DIV: "div", Op.MAX: "maximum",
                       Op.MIN: "minimum", Op.POW: "pow"}[v.op]
            xs, xfresh = self.tensor(x)
            sc = alpha_scaled(y) if v.op in (Op.ADD, Op.SUB) else None
            if sc and self.is_list(sc[0]):   # one number per tensor: the loop path's add(alpha=), per tensor
                ys, _ = self.tensor(sc[1])
                alpha = self.scalar(sc[0] if v.op is Op.ADD else neg(sc[0]))
                return self.in_place_or_new("_rt.foreach_add_scaled", xs, xfresh, f"{ys}, {alpha}")
            if sc and not self.is_list(sc[0]):
                ys, _ = self.tensor(sc[1])
                alpha = self.scalar(sc[0] if v.op is Op.ADD else neg(sc[0]))
                if self.device_scale(sc[0]):
                    return self.in_place_or_new("_rt.foreach_add", xs, xfresh, f"{ys}, {alpha}")
                args = f"{ys}, alpha={alpha}"
                op_name = "add"
            else:
                args, _ = self.tensor(y)
            return self.in_place_or_new(f"torch._foreach_{op_name}", xs, xfresh and v.op is not Op.POW, args)
        if v.op in UNARY and v.op not in REDUCE and v.op is not Op.COPY and OPS[v.op].foreach is not None:
            xs, xfresh = self.tensor(v.args[0])
            return self.in_place_or_new(f"torch.{OPS[v.op].foreach}", xs, xfresh)
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
        if v.kind.on_device:
            return self.tensor(v)[0]
        src = self.scalar(v)
        dtype = ", dtype=torch.bool" if v.type is Type.BOOL else ""
        if self.is_list(v):
            return f"[torch.full_like(_p, _x{dtype}) for _p, _x in zip(params, {src})]"
        return f"[torch.full_like(_p, {src}{dtype}) for _p in params]"

    def full_list(self, v: Value, target: str) -> str:
        """`v` as a list of tensors to store into `target`: a per-tensor or per-channel value stored into
        an elementwise state (or the parameter) broadcast to each parameter's shape."""
        src = self.as_list(v)
        elementwise = target == "param" or self.p.state(target).kind is Kind.TENSOR
        if elementwise and v.kind in (Kind.REDUCED, Kind.CHANNEL):
            return f"[_rt.expand(_x, _p) for _x, _p in zip({src}, params)]"
        return src

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
        if v.kind.on_host:
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
            args.append((src, a.kind.on_device or self.is_list(a)))
        names = [f"_x{i}" for i in range(len(args))]
        listed = [(n, src) for n, (src, is_list) in zip(names, args) if is_list]
        numbers = number_args(v)
        # a host number becomes a tensor like a numeric tensor operand, or like the parameter
        like = next((n for n, a in zip(names, v.args) if a.kind.on_device and a.type is Type.NUM), None)
        if like is None and any(a.kind.on_host and i not in numbers for i, a in enumerate(v.args)):
            like = "_p"
            listed.append(("_p", "params"))
        dtype = lambda a: ", dtype=torch.bool" if a.type is Type.BOOL else ""  # noqa: E731
        forms = [n if a.kind.on_device or i in numbers else f"torch.full_like({like}, {n}{dtype(a)})"
                 for i, (n, a) in enumerate(zip(names, v.args))]   # torch takes no number there
        # torch.lerp wants one dtype: a per-tensor value of another (a group value) goes through the helper
        form = "_rt.lerp_small({0}, {1}, {2})" if v.op is Op.LERP and any(
            holds_reduction(a, self.p) for a in v.args[:2]) else OPS[v.op].torch
        inner = form.format(*forms)
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
            if isinstance(s, Let) and s.value.op in REDUCE:
                w.line(f"{ident(s.name)} = {self.reduction(s.value)}")
            elif isinstance(s, Let):
                mark = len(w.lines)
                src, fresh = self.tensor(s.value)
                if not self.rename_temp(mark, src, ident(s.name)):
                    w.line(f"{ident(s.name)} = {src}")
            elif isinstance(s, Store):
                self.store(s.target, s.value)
            else:
                assert s.cond.kind.on_host, "an `if` on a reduction runs the loop path (see pymodule)"
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
        if is_target(v, target):
            return
        special = (v.op is Op.WHERE and v.args[0].kind.on_host and v.args[0].op is Op.VAR
                   and self.is_empty_vars.get(str(v.args[0].arg)) == target)
        if target in self.empty and may_be_empty and not special and not (
                v.op is Op.WHERE and v.args[0].kind.on_host):
            # an `empty` state some of whose tensors may not exist yet: create those, update the rest
            w.line(f"if any(t is None for t in {d}):")
            with w.indent():
                src = self.full_list(v, target)
                w.line(f"for _j, _t in enumerate({src}):")
                with w.indent():
                    w.line(f"if {d}[_j] is None:")
                    with w.indent():
                        w.line(f"{d}[_j] = _rt.new_state(_t, params[_j])")
                        w.line(f"{out_name(d)}[_j] = _rt.like_param({d}[_j], original_params[_j])")
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
        if v.op is Op.WHERE and v.args[0].kind.on_host:
            cond = v.args[0]
            if target in self.empty and cond.op is Op.VAR and self.is_empty_vars.get(str(cond.arg)) == target:
                w.line(f"if {self.scalar(cond)}:")
                with w.indent():
                    src = self.full_list(v.args[1], target)
                    w.line(f"{d} = [_rt.new_state(_t, _p) for _t, _p in zip({src}, params)]")
                    w.line(f"{out_name(d)}[:] = [_rt.like_param(_t, _p) for _t, _p in zip({d}, original_params)]")
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
        if v.op is Op.LERP and is_target(v.args[0], target) and not any(reads(a, target) for a in v.args[1:]):
            y = self.as_list(v.args[1])
            if target != "param" and self.p.state(target).kind is not Kind.TENSOR \
                    or holds_reduction(v.args[1], self.p):
                y = f"[_rt.as_dtype(_y, _d) for _y, _d in zip({y}, {d})]"
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
                if is_target(a, target) and not reads(b, target):
                    src, _ = self.tensor(b)
                    w.line(f"torch._foreach_mul_({d}, {src})")
                    return
        if v.op is Op.DIV and is_target(v.args[0], target) and not reads(v.args[1], target):
            src, _ = self.tensor(v.args[1])
            w.line(f"torch._foreach_div_({d}, {src})")
            return
        if v.op in (Op.MAX, Op.MIN):
            for a, b in (v.args, v.args[::-1]):
                if is_target(a, target) and not reads(b, target):
                    src, _ = self.tensor(b)
                    w.line(f"torch._foreach_{'maximum' if v.op is Op.MAX else 'minimum'}_({d}, {src})")
                    return
        if target != "param" and self.p.state(target).kind is not Kind.TENSOR and v.kind.on_host:
            src = self.scalar(v)   # a number into each 0-d state tensor
            items = f"[_rt.small(_x, _d) for _x, _d in zip({src}, {d})]" if self.is_list(v) else \
                f"[_rt.small({src}, _d) for _d in {d}]"
            w.line(f"torch._foreach_copy_({d}, {items})")
            return
        w.line(f"_rt.foreach_copy_({d}, {self.full_list(v, target)})")
