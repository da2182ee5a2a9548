"""IR -> eager torch code: the per-tensor loop (`_single_tensor_<name>`, torch
ops on each tensor, host math inline as in torch/optim/adam.py) and the foreach
path (`_multi_tensor_<name>`, torch._foreach_* ops over tensor lists).

Stores to state and to the parameter are matched against the in-place forms
torch.optim uses (`exp_avg.lerp_(g, w)`, `v.mul_(b).addcmul_(g, g, value=c)`,
`param.addcdiv_(m, d, value=-s)`), so the generated step does the same memory
passes, and the same roundings, as the hand-written one."""
from __future__ import annotations

from ..ir import LEAF, Kind, Let, Op, Program, Stmt, Store, Type, Value, If, apply, const, walk_values
from ..names import ident, plural
from ..passes import specialize
from .common import Writer, float_literal, render
from .host import Column, columns, host_expr, is_device_stmt, per_tensor_inputs, scalar_states  # noqa: F401

_INPLACE_UNARY = {Op.SQRT: "sqrt_", Op.NEG: "neg_", Op.ABS: "abs_", Op.SIGN: "sign_", Op.EXP: "exp_",
                  Op.LOG: "log_", Op.RSQRT: "rsqrt_"}
_BINARY_METHOD = {Op.ADD: "add", Op.SUB: "sub", Op.MUL: "mul", Op.DIV: "div"}


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


def _neg(s: Value) -> Value:
    return apply(Op.NEG, s) if s.op is not Op.CONST else const(-s.arg)


def split_accumulate(v: Value, target: str):
    """Match `d*s + rest`, `d + rest`, `d - rest` (and commuted sums).
    Returns (scale | None, sign, rest) or None. `rest` never reads d."""
    if v.op not in (Op.ADD, Op.SUB):
        return None
    x, y = v.args
    candidates = [(x, y, v.op is Op.SUB)]
    if v.op is Op.ADD:
        candidates.append((y, x, False))
    for head, rest, negate in candidates:
        if _reads(rest, target):
            continue
        if _is_target(head, target):
            return None, negate, rest
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
    sc = _scaled(rest)
    if sc:
        return ("add", sc[1], signed(sc[0]))
    return ("add_tensor", rest, -1.0 if negate else 1.0)


class LoopEmitter:
    """`_single_tensor_<name>`: one tensor at a time, host math inline."""

    def __init__(self, p: Program):
        self.p = p
        self.empty = {s.name for s in p.states if s.init == "empty"}
        self.scalar = {s.name for s in p.states if s.kind is Kind.TENSOR_SCALAR}

    def host(self, v: Value) -> str:
        return host_expr(v)

    def tensor(self, v: Value) -> tuple[str, bool]:
        """(source, fresh): fresh results are new tensors the caller may modify in place."""
        if v.kind is not Kind.TENSOR:
            return self.host(v), False
        if v.op in LEAF:
            return (ident(str(v.arg)) if v.op in (Op.STATE, Op.VAR) else v.op.name.lower()), False
        if v.op is Op.WHERE and v.args[0].kind is not Kind.TENSOR:
            a, _ = self.tensor(v.args[1])
            b, _ = self.tensor(v.args[2])
            return f"({a} if {self.host(v.args[0])} else {b})", False
        if v.op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV):
            x, y = v.args
            if x.kind is not Kind.TENSOR and v.op in (Op.ADD, Op.MUL):
                x, y = y, x
            if x.kind is Kind.TENSOR:
                xs, xfresh = self.tensor(x)
                method = _BINARY_METHOD[v.op]
                sc = _scaled(y) if v.op in (Op.ADD, Op.SUB) else None
                if sc:
                    alpha = self.host(sc[0] if v.op is Op.ADD else _neg(sc[0]))
                    zs, _ = self.tensor(sc[1])
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
        return render(v, "torch", lambda leaf: self.tensor(leaf)[0]), True

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
                w.line(f"{d} = {plural(d)}[i] = _rt.like_param({src if fresh else f'torch.clone({src}).detach()'}, params[i])")
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
        if target in self.scalar and v.kind < Kind.TENSOR:
            w.line(f"{d}.fill_({self.host(v)})")
            return
        if v.op is Op.LERP and _is_target(v.args[0], target) and not any(_reads(a, target) for a in v.args[1:]):
            w.line(f"{d}.lerp_({self.tensor(v.args[1])[0]}, {self.tensor(v.args[2])[0]})")
            return
        acc = split_accumulate(v, target)
        if acc is not None:
            scale, negate, rest = acc
            chain = d + (f".mul_({self.host(scale)})" if scale is not None else "")
            form = rest_forms(rest, negate)
            if form[0] in ("addcmul", "addcdiv"):
                _, y, z, value = form
                value_src = self.host(value)
                tail = "" if value_src == "1.0" else f", value={value_src}"
                chain += f".{form[0]}_({self.tensor(y)[0]}, {self.tensor(z)[0]}{tail})"
            elif form[0] == "add":
                chain += f".add_({self.tensor(form[1])[0]}, alpha={self.host(form[2])})"
            elif form[0] == "add_scalar":
                chain += f".add_({self.host(form[1])})"
            else:
                chain += f".{'sub' if form[2] < 0 else 'add'}_({self.tensor(form[1])[0]})"
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
        self.w = Writer()
        self.tmp = 0

    def fresh_name(self) -> str:
        self.tmp += 1
        return f"_t{self.tmp}"

    def scalar(self, v: Value) -> str:
        """A host value usable as a foreach scalar argument (float or list of floats)."""
        if v.kind is Kind.HOST or v.op is Op.CONST:
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
        return v.op is Op.VAR and str(v.arg) in self.cols and self.cols[str(v.arg)].kind is Kind.TENSOR_SCALAR

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
                return plural(ident(str(v.arg))), False
            return ident(str(v.arg)), False
        if v.op is Op.WHERE and v.args[0].kind is not Kind.TENSOR:
            a = self.as_expression(v.args[1])
            b = self.as_expression(v.args[2])
            if a is not None and b is not None:   # both sides are one call: a conditional expression
                return f"({a} if {self.scalar(v.args[0])} else {b})", False
            out = self.fresh_name()
            w.line(f"if {self.scalar(v.args[0])}:")
            with w.indent():
                a, _ = self.tensor(v.args[1])
                w.line(f"{out} = {a}")
            w.line("else:")
            with w.indent():
                b, _ = self.tensor(v.args[2])
                w.line(f"{out} = {b}")
            return out, False
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
            sc = _scaled(y) if v.op in (Op.ADD, Op.SUB) else None
            if sc and not self.is_list(sc[0]):
                ys, _ = self.tensor(sc[1])
                alpha = self.scalar(sc[0] if v.op is Op.ADD else _neg(sc[0]))
                args = f"{ys}, alpha={alpha}"
                op_name = "add"
            else:
                args, _ = self.tensor(y)
            if xfresh and v.op is not Op.POW:
                w.line(f"torch._foreach_{op_name}_({xs}, {args})")
                return xs, True
            out = self.fresh_name()
            w.line(f"{out} = torch._foreach_{op_name}({xs}, {args})")
            return out, True
        if v.op in _INPLACE_UNARY:
            xs, xfresh = self.tensor(v.args[0])
            name = _INPLACE_UNARY[v.op][:-1]
            if xfresh:
                w.line(f"torch._foreach_{name}_({xs})")
                return xs, True
            out = self.fresh_name()
            w.line(f"{out} = torch._foreach_{name}({xs})")
            return out, True
        if v.op is Op.LERP and v.args[0].kind is Kind.TENSOR and v.args[1].kind is Kind.TENSOR:
            a, _ = self.tensor(v.args[0])
            b, _ = self.tensor(v.args[1])
            wt, _ = self.tensor(v.args[2])
            out = self.fresh_name()
            w.line(f"{out} = torch._foreach_lerp({a}, {b}, {wt})")
            return out, True
        # No foreach form: one torch op per tensor.
        return self.per_tensor(v), True

    def as_expression(self, v: Value) -> str | None:
        """`v` as one expression if it needs at most one out-of-place call, else None (nothing emitted)."""
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
        inner = render(apply(v.op, *(Value(Op.VAR, (), n, Kind.TENSOR) for n in names)), "torch", lambda x: str(x.arg))
        for n, (src, is_list) in zip(names, args):
            if not is_list:
                inner = inner.replace(n, src)
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

    def store(self, target: str, v: Value) -> None:
        w = self.w
        d = "params" if target == "param" else plural(ident(target))
        if _is_target(v, target):
            return
        if v.op is Op.WHERE and v.args[0].kind is not Kind.TENSOR:
            cond = v.args[0]
            if target in self.empty and cond.op is Op.VAR and self.is_empty_vars.get(str(cond.arg)) == target:
                w.line(f"if {self.scalar(cond)}:")
                with w.indent():
                    src, fresh = self.tensor(v.args[1])
                    w.line(f"{d} = [torch.clone(t).detach() for t in {src}]")
                    w.line(f"{d}_out[:] = [_rt.like_param(t, p) for t, p in zip({d}, original_params)]")
                w.line("else:")
                with w.indent():
                    self.store(target, v.args[2])
                return
            w.line(f"if {self.scalar(cond)}:")
            with w.indent():
                self.store(target, v.args[1])
            w.line("else:")
            with w.indent():
                self.store(target, v.args[2])
            return
        if v.op is Op.LERP and _is_target(v.args[0], target) and not any(_reads(a, target) for a in v.args[1:]):
            y, _ = self.tensor(v.args[1])
            wt, _ = self.tensor(v.args[2])
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
                if self.is_list(value):
                    w.line(f"torch._foreach_{form[0]}_({d}, {ys}, {zs}, {self.scalar(value)})")
                else:
                    src = self.scalar(value)
                    tail = "" if src == "1.0" else f", value={src}"
                    w.line(f"torch._foreach_{form[0]}_({d}, {ys}, {zs}{tail})")
            elif form[0] == "add":
                if self.is_list(form[2]):
                    t = self.fresh_name()
                    w.line(f"{t} = torch._foreach_mul({ys}, {self.scalar(form[2])})")
                    w.line(f"torch._foreach_add_({d}, {t})")
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
        src, _ = self.tensor(v)
        w.line(f"torch._foreach_copy_({d}, {src})")
