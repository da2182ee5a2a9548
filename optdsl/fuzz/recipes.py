"""The numeric and boolean recipes of the program generator: each draws one expression of a
kind no wider than asked, from the leaves a scope can read, keeping it finite (sqrt/log of
`abs(x) + c`, exp of a clamped argument, divisions by `abs(x) + c` or a bias correction).
A mixin of ProgramGen (optdsl/fuzz/programs.py), which holds the declarations they read."""
from __future__ import annotations

import math

from hypothesis import strategies as st

from ..builtins import FUNCTIONS, REDUCTION_FUNCTIONS
from .expr import (BOOL, CHAN, CONST, HOST, LIMIT, N_MAX, NUM, P_AND, P_NOT, PARAM_MAG, RED,
                   STATE_MAG, TENSOR, TS, E, Hyper, Scope, State, atom, binary, call, compare, neg, not_,
                   paren, per_tensor, reduction, spell, ternary)


class Recipes:
    """Expression recipes; `self` is a ProgramGen."""

    def param_atom(self) -> E:
        return atom("param", TENSOR, NUM, PARAM_MAG, "param" in self.dirty)

    def given_hypers(self) -> list[Hyper]:
        """The hypers that always have a value (not `= none`)."""
        return [h for h in self.hypers if not h.optional]

    def readable_hypers(self, scope: Scope) -> list[Hyper]:
        """Given hypers, and optional ones where `h != none` guards the read."""
        return [h for h in self.hypers if not h.optional or f"{h.name} != none" in scope.guards]

    # ---- readable leaves -------------------------------------------------------------------
    def accessible(self, s: State, scope: Scope) -> bool:
        if s.cond is not None and not all(c in scope.guards for c in s.cond):
            return False
        return s.init != "empty" or s.name in scope.nonempty

    def leaves(self, scope: Scope, max_kind: int, typ: str) -> list[E]:
        out: list[E] = []
        if typ == NUM:
            for h in self.readable_hypers(scope):
                for src, lo, hi in h.entries():
                    out.append(atom(src, HOST, NUM, max(abs(lo), abs(hi))))
                if h.name == "lr" and not h.optional and not h.is_tuple:
                    out.append(atom("initial_lr", HOST, NUM, max(abs(lo), abs(hi))))
            out += [atom(g, HOST, NUM, 20.0) for g in self.group_states]   # counts, or a hyper's max
            if max_kind >= TS:
                out.append(atom("step", TS, NUM, 10.0))
                if self.chance(0.3):
                    out += [atom("numel", TS, NUM, 260.0), atom("ndim", TS, NUM, 3.0),
                            atom("channel_numel", TS, NUM, 260.0), atom(f"size({self.pick((0, 1, 2, 3))})", TS, NUM, 260.0)]
            if max_kind >= TENSOR:
                out += [atom("param", TENSOR, NUM, PARAM_MAG, "param" in self.dirty), atom("grad", TENSOR, NUM, 40.0)]
            for s in self.states:
                kind = (RED if s.device else TS) if s.scalar else TENSOR
                if kind <= max_kind and self.accessible(s, scope):
                    out.append(atom(s.name, kind, NUM, STATE_MAG, self.state_dirty(s)))
        else:
            out += [atom(f, HOST, BOOL) for f, _ in self.flags]
            if max_kind >= TS:
                for s in self.states:
                    if s.init == "empty" and (s.cond is None or all(c in scope.guards for c in s.cond)):
                        out.append(call("is_empty", [atom(s.name, TS, dirty=True)], 0.0, BOOL, kind=TS))
        for name, (kind, t, mag) in scope.locals.items():
            if t == typ and kind <= max_kind:
                out.append(atom(name, kind, typ, mag, name in self.dirty))
        if self.clean_only:
            out = [e for e in out if not e.dirty]
        return out

    # ---- numeric expressions -----------------------------------------------------------------
    def num(self, scope: Scope, max_kind: int, depth: int) -> E:
        leaves = self.leaves(scope, max_kind, NUM)
        if depth <= 0 or self.chance(0.25):
            if not leaves or self.chance(0.2):
                return self.num_lit()
            return self.pick(leaves)
        recipe = self.num_recipe()
        e = getattr(self, "r_" + recipe)(scope, max_kind, depth - 1)
        return self.bounded(e)

    def bounded(self, e: E, limit: float = LIMIT) -> E:
        if e.mag <= limit and math.isfinite(e.mag):
            return e
        c = self.pick((1.0, 10.0, 100.0))
        lit = atom(spell(self.draw, c), CONST, NUM, c)
        return call("clamp", [e, neg(lit), lit], c)

    RECIPES = ("add", "add", "mul", "mul", "div", "neg", "sqrt", "rsqrt", "abs", "sign", "exp", "log",
               "minmax", "pow", "powop", "clamp", "lerp", "where", "select", "bias", "paren", "other", "optional",
               "squash", "softplus", "log1p", "expm1", "cbrt", "floor", "mod", "inf")

    def num_recipe(self) -> str:
        if self.chance(self.red_rate):
            return "reduce"
        return self.pick(self.RECIPES)

    def r_reduce(self, scope, k, dd):
        """sum/mean/norm/rms/amax/dot over the tensor, each channel (where k allows per-channel
        values) or the group; the operand may be anything clean, a nested reduction or a number."""
        if k < RED or self.control_dirty:
            return self.r_add(scope, k, dd)
        scopes = ["tensor", "tensor", "group"] + (["channel", "channel"] if k >= CHAN else [])
        where = self.pick(scopes)
        name = self.pick(sorted(REDUCTION_FUNCTIONS))
        _, arity = REDUCTION_FUNCTIONS[name]
        saved, self.clean_only = self.clean_only, True
        try:
            args = [self.bounded(self.num(scope.statement(), TENSOR, dd), 100.0) for _ in range(arity)]
        finally:
            self.clean_only = saved
        m = max(a.mag for a in args)
        mag = {"sum": N_MAX * m, "dot": N_MAX * args[0].mag * args[-1].mag, "norm": math.sqrt(N_MAX) * m}.get(name, m)
        written = None if where == "tensor" and self.chance(0.8) else where
        if written == "group" and self.tensor_control:
            written = "tensor"
        return reduction(name, args, written, mag)

    def r_optional(self, scope, k, dd):
        """`h != none ? h * x : y` on an optional hyper h (a host condition: one side is evaluated)."""
        unread = [h for h in self.hypers if h.optional and f"{h.name} != none" not in scope.guards]
        if not unread:
            return self.r_mul(scope, k, dd)
        h = self.pick(unread)
        inner = scope.guard_expression([f"{h.name} != none"])
        lo, hi = h.ranges[0]
        a = binary(atom(h.name, HOST, NUM, hi), "*", self.num(inner, k, dd), 1.0)
        a.mag = hi * max(1.0, a.mag)
        b = self.num(scope, k, dd)
        test = compare([atom(h.name, HOST), atom("none", CONST)], ["!="])
        return ternary(test, a, b)

    def r_add(self, scope, k, dd):
        a, b = self.num(scope, k, dd), self.num(scope, k, dd)
        return binary(a, self.pick("+-"), b, a.mag + b.mag)

    def r_mul(self, scope, k, dd):
        a, b = self.num(scope, k, dd), self.num(scope, k, dd)
        return binary(a, "*", b, a.mag * b.mag)

    def positive(self, scope, k, dd) -> E:
        """abs(x) + c, or x * x + c: a value >= c > 0."""
        x = self.num(scope, k, dd)
        c = self.num_lit((1.0, 0.5, 0.1, 1e-3, 2.0))
        if self.chance(0.7):
            base = call("abs", [x], x.mag)
        else:
            x = self.bounded(x, 30.0)
            base = binary(x, "*", x, x.mag * x.mag)
        return binary(base, "+", c, base.mag + c.mag), c.mag

    def r_div(self, scope, k, dd):
        a = self.num(scope, k, dd)
        if self.chance(0.3) and self.hypers:
            h = self.pick([e for e in self.leaves(scope, HOST, NUM) if e.kind == HOST] or [self.num_lit()])
            den = binary(paren(binary(call("abs", [h], h.mag), "+", self.num_lit((1.0, 0.5)), h.mag + 1)), "*",
                         self.num_lit((1.0, 2.0)), 1.0)
            return binary(a, "/", den, a.mag / 0.5)
        den, lo = self.positive(scope, k, dd)
        return binary(a, "/", den, a.mag / lo)

    def r_neg(self, scope, k, dd):
        return neg(self.num(scope, k, dd))

    def r_sqrt(self, scope, k, dd):
        x, lo = self.positive(scope, k, dd)
        return call("sqrt", [x], math.sqrt(x.mag))

    def r_rsqrt(self, scope, k, dd):
        x, lo = self.positive(scope, k, dd)
        return call("rsqrt", [x], 1 / math.sqrt(lo))

    def r_abs(self, scope, k, dd):
        x = self.num(scope, k, dd)
        return call("abs", [x], x.mag)

    def r_sign(self, scope, k, dd):
        return call("sign", [self.num(scope, k, dd)], 1.0)

    def r_exp(self, scope, k, dd):
        x = self.num(scope, k, dd)
        form = self.d(st.integers(0, 2))
        if form == 0:
            c = self.pick((1.0, 2.0, 3.0))
            lit = atom(spell(self.draw, c), CONST, NUM, c)
            return call("exp", [call("clamp", [x, neg(lit), lit], c)], math.exp(c))
        if form == 1:
            return call("exp", [neg(call("abs", [x], x.mag))], 1.0)
        x = self.bounded(x, 30.0)
        return call("exp", [neg(binary(x, "*", x, x.mag ** 2))], 1.0)

    def r_log(self, scope, k, dd):
        x, lo = self.positive(scope, k, dd)
        return call("log", [x], max(abs(math.log(lo)), math.log(x.mag + 1) + 1))

    def r_minmax(self, scope, k, dd):
        a, b = self.num(scope, k, dd), self.num(scope, k, dd)
        return call(self.pick(("min", "max")), [a, b], max(a.mag, b.mag))

    def r_pow(self, scope, k, dd):
        base, lo = self.positive(scope, k, dd)
        base = self.bounded(base, 100.0)
        y = self.pick((0.5, 2.0, 1.5, -0.5, 3.0, 0.25))
        ye = atom(spell(self.draw, abs(y)), CONST, NUM, abs(y)) if y > 0 else neg(atom(spell(self.draw, -y), CONST))
        mag = max(base.mag ** y, lo ** y) if y > 0 else lo ** y
        return call("pow", [base, ye], mag)

    def r_powop(self, scope, k, dd):
        form = self.d(st.integers(0, 3))
        if form == 0:     # x ^ 2 and x ^ 3: any sign
            x = self.bounded(self.num(scope, k, dd), 10.0)
            n = self.pick((2.0, 3.0))
            return binary(x, "^", atom(spell(self.draw, n), CONST), x.mag ** n)
        if form == 1:     # a hyper in (0, 1) to a power of the step
            return self.beta_pow(scope, k)
        base, lo = self.positive(scope, k, dd)
        base = self.bounded(base, 100.0)
        y = self.pick((0.5, 1.5, 0.25))
        return binary(paren(base), "^", atom(spell(self.draw, y), CONST), base.mag ** y + 1)

    def beta(self, scope) -> E:
        betas = [atom(src, HOST, NUM, hi) for h in self.readable_hypers(scope) for src, lo, hi in h.entries()
                 if 0 < lo and hi < 1]
        return self.pick(betas) if betas else self.num_lit((0.9, 0.99, 0.5))

    def beta_pow(self, scope, k, negative: bool = True) -> E:
        b = self.beta(scope)
        exponent = atom("step", TS, NUM, 10.0) if k >= TS else self.num_lit((2.0, 3.0))
        if negative and self.chance(0.3):
            exponent = neg(exponent)
            return call("min", [binary(b, "^", exponent, 1e9), self.num_lit((10.0, 100.0))], 100.0)
        return binary(b, "^", exponent, 1.0)

    def r_bias(self, scope, k, dd):
        """x / (1 - b ^ step): a bias correction, >= 1 - b >= 0.001."""
        x = self.num(scope, k, dd)
        bc = binary(self.num_lit((1.0,)), "-", self.beta_pow(scope, k, negative=False), 1.0)
        if self.chance(0.5):
            return binary(x, "/", paren(bc), x.mag * 1000)
        return binary(x, "/", call("sqrt", [bc], 1.0), x.mag * 32)

    def r_clamp(self, scope, k, dd):
        x = self.num(scope, k, dd)
        lo = self.num_lit((0.0, 0.5, 1.0, 0.1))
        hi_e = self.num_lit((1.0, 2.0, 10.0))
        lo_e = neg(lo) if self.chance(0.7) else lo
        if self.chance(0.2) and self.hypers:   # a host bound
            h = self.pick([e for e in self.leaves(scope, HOST, NUM) if e.kind == HOST] or [hi_e])
            hi_e = call("abs", [h], h.mag)
            return call("clamp", [x, lo_e, hi_e], max(lo.mag, h.mag))
        return call("clamp", [x, lo_e, hi_e], max(lo.mag, hi_e.mag))

    def weight(self, scope, k, dd) -> E:
        """A weight in [0, 1]."""
        form = self.d(st.integers(0, 3))
        if form == 0:
            return self.num_lit((0.1, 0.5, 0.9, 0.0, 1.0, 0.25))
        if form == 1:
            b = self.beta(scope)
            return binary(self.num_lit((1.0,)), "-", b, 1.0)
        if form == 2:
            return self.beta(scope)
        x = self.num(scope, k, dd)
        return binary(self.num_lit((1.0,)), "/", paren(binary(call("abs", [x], x.mag), "+", self.num_lit((1.0,)), 1.0)), 1.0)

    def r_lerp(self, scope, k, dd):
        a, b = self.num(scope, k, dd), self.num(scope, k, dd)
        return call("lerp", [a, b, self.weight(scope, k, dd)], max(a.mag, b.mag))

    def r_where(self, scope, k, dd):
        c = self.boolean(scope, k, dd)
        a, b = self.taken_sides(c, lambda: self.num(scope, k, dd))
        return call("where", [c, a, b], max(a.mag, b.mag))

    def r_select(self, scope, k, dd):
        c = self.boolean(scope, k, dd)
        a, b = self.taken_sides(c, lambda: self.num(scope, k, dd))
        return ternary(c, a, b)

    def taken_sides(self, c: E, side) -> tuple[E, E]:
        """The two sides of a select on c, drawn by side(); under c when only the side taken is evaluated."""
        saved, self.tensor_control = self.tensor_control, self.tensor_control or per_tensor(c)
        try:
            return side(), side()
        finally:
            self.tensor_control = saved

    def r_paren(self, scope, k, dd):
        return paren(self.num(scope, k, dd))

    def r_squash(self, scope, k, dd):
        """sigmoid(x), tanh(x): any x (saturating at both ends)."""
        x = self.num(scope, k, dd)
        return call(self.pick(("sigmoid", "tanh")), [x], 1.0)

    def r_softplus(self, scope, k, dd):
        x = self.num(scope, k, dd)
        return call("softplus", [x], x.mag + 1.0)

    def r_log1p(self, scope, k, dd):
        """log1p(|x|), or of x clamped to [-0.9, c]: near -1, near 0 and large arguments."""
        x = self.num(scope, k, dd)
        if self.chance(0.5):
            return call("log1p", [call("abs", [x], x.mag)], math.log1p(x.mag) + 1.0)
        c = self.pick((1.0, 10.0))
        lit = atom(spell(self.draw, c), CONST, NUM, c)
        return call("log1p", [call("clamp", [x, neg(self.num_lit((0.9, 0.5, 0.1))), lit], c)], math.log1p(c) + 3.0)

    def r_expm1(self, scope, k, dd):
        x = self.num(scope, k, dd)
        c = self.pick((0.5, 1.0, 3.0))
        lit = atom(spell(self.draw, c), CONST, NUM, c)
        return call("expm1", [call("clamp", [x, neg(lit), lit], c)], math.expm1(c))

    def r_cbrt(self, scope, k, dd):
        x = self.num(scope, k, dd)
        return call("cbrt", [x], x.mag ** (1 / 3) + 1.0)

    def r_floor(self, scope, k, dd):
        x = self.num(scope, k, dd)
        return call("floor", [x], x.mag + 1.0)

    def r_mod(self, scope, k, dd):
        """mod(x, d) with a divisor of either sign, or `mod(step, n) == 0 ? a : b` (every n steps)."""
        if k >= TS and self.chance(0.35):
            n = self.num_lit((2.0, 3.0, 10.0))
            every = compare([call("mod", [atom("step", TS, NUM, 10.0), n], n.mag, kind=TS), self.num_lit((0.0, 1.0))],
                            [self.pick(("==", "!="))])
            a, b = self.taken_sides(every, lambda: self.num(scope, k, dd))
            return ternary(every, a, b)
        x = self.num(scope, k, dd)
        d, lo = self.positive(scope, k, dd)
        d = self.bounded(d, 10.0)
        if self.chance(0.4):
            d = neg(d)
        return call("mod", [x, d], d.mag)

    def r_inf(self, scope, k, dd):
        """The `inf` constant: min(x, inf), max(x, -inf), clamp(x, -inf, c)."""
        x = self.num(scope, k, dd)
        inf = atom("inf", CONST, NUM, 0.0)
        form = self.d(st.integers(0, 2))
        if form == 0:
            return call("min", [x, inf], x.mag)
        if form == 1:
            return call("max", [neg(inf), x], x.mag)
        c = self.num_lit((1.0, 10.0))
        return call("clamp", [x, neg(inf), c], x.mag)

    def r_other(self, scope, k, dd):
        """Builtins without a recipe above (added to builtins.FUNCTIONS later): arguments >= 0.5."""
        known = {"sqrt", "rsqrt", "abs", "sign", "exp", "log", "min", "max", "pow", "clamp", "lerp", "where",
                 "sigmoid", "tanh", "softplus", "log1p", "expm1", "cbrt", "floor", "mod"}
        # item() reads a reduction back to the host, newton_schulz() needs a 2-D param and runs in bfloat16:
        # not drawn yet (NOT_DRAWN_YET in optdsl/fuzz/coverage.py)
        others = sorted(set(FUNCTIONS) - known - {"item", "newton_schulz"})
        if not others:
            return self.r_add(scope, k, dd)
        name = self.pick(others)
        _, arity = FUNCTIONS[name]
        args = []
        for _ in range(arity):
            x, lo = self.positive(scope, k, dd)
            args.append(self.bounded(x, 10.0))
        return self.bounded(call(name, args, 1e4))

    # ---- boolean expressions ---------------------------------------------------------------
    def boolean(self, scope: Scope, max_kind: int, depth: int) -> E:
        leaves = self.leaves(scope, max_kind, BOOL)
        if depth <= 0 or self.chance(0.2):
            if leaves and self.chance(0.8):
                return self.pick(leaves)
            if self.chance(0.1):
                return atom(self.pick(("true", "false")), CONST, BOOL)
            return self.comparison(scope, max_kind, 0)
        form = self.pick(("cmp", "cmp", "cmp", "chain", "not", "and", "or", "guarded", "select", "paren"))
        if form == "cmp":
            return self.comparison(scope, max_kind, depth - 1)
        if form == "chain":
            x = self.num(scope, max_kind, depth - 1)
            lo, hi = self.num_lit((0.0, 0.1, 0.5)), self.num_lit((1.0, 2.0, 10.0))
            ops = [self.pick(("<", "<=")), self.pick(("<", "<="))]
            if self.chance(0.3):
                return compare([hi, x, lo], [self.pick((">", ">=")), self.pick((">", ">="))])
            return compare([neg(lo) if self.chance(0.5) else lo, x, hi], ops)
        if form == "not":
            return not_(self.boolean(scope, max_kind, depth - 1))
        if form in ("and", "or"):
            n = self.d(st.integers(2, 3))
            parts = [self.boolean(scope, max_kind, depth - 1) for _ in range(n)]
            out = parts[0]
            for p in parts[1:]:
                out = binary(out, form, p, 0.0, BOOL)
            return out
        if form == "guarded":
            guarded = [s for s in self.states if s.cond is not None and not all(c in scope.guards for c in s.cond)]
            if not guarded:
                return self.comparison(scope, max_kind, depth - 1)
            s = self.pick(guarded)
            inner = scope.guard_expression(s.cond)
            conds = " and ".join(s.cond)
            left = E(conds, "(" + " and ".join(f"({c})" for c in s.cond) + ")", P_AND if len(s.cond) > 1 else P_NOT,
                     HOST, BOOL)
            right = self.comparison(inner, max_kind, depth - 1)
            return binary(left, "and", right, 0.0, BOOL)
        if form == "select":
            c = self.boolean(scope, max_kind, depth - 1)
            return ternary(c, *self.taken_sides(c, lambda: self.boolean(scope, max_kind, depth - 1)))
        return paren(self.boolean(scope, max_kind, depth - 1))

    def comparison(self, scope: Scope, max_kind: int, depth: int) -> E:
        a = self.num(scope, max_kind, depth)
        b = self.num(scope, max_kind, depth) if self.chance(0.6) else self.num_lit((0.0, 0.5, 1.0, 2.0))
        return compare([a, b], [self.pick(("<", "<=", ">", ">=", "==", "!="))])

    # ---- statements ----------------------------------------------------------------------------
