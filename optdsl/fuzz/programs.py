"""Random well-typed `.opt` programs: a hypothesis strategy that writes spec TEXT, which
then goes through the real parser, checker and every backend.

`cases()` draws a whole fuzz case (optdsl.fuzz.execute.Case): a program and how to run
it (parameter groups of mixed sizes -- 0-d, 1, odd, spanning several kernel blocks --
fp32 and bf16, per-group hypers and flags, steps, data seed). The program uses every
construct of the language: hypers (scalar and tuple, negative defaults, `where`
clauses), flags, states (zeros, a number, a hyper's value, `empty` with `is_empty`,
`: scalar`, `key "..."`, conditional `if ...`), `require` with `{placeholders}`, `keep step` (per tensor
and per group), EMAs, bias corrections `1 - b ^ step`, `inf`, `initial_lr` (beside a hyper `lr`),
`mod(step, n) == 0` (every n steps), every builtin of builtins.FUNCTIONS and
STATE_PREDICATES, `?:`/where on per-element, per-tensor and host conditions,
`if`/`else if`/`else` on flags, hypers, the step and scalar state, comparison chains,
`and`/`or`/`not`, powers, aliases that need a copy, comments, CRLF.

Values stay finite by construction: sqrt/log/rsqrt of `abs(x) + c`, exp of a clamped
argument, divisions by `abs(x) + c` or by a bias correction, magnitudes tracked and
clamped. Each program also comes with a fully parenthesised twin: both must lower to
the same IR (a precedence check on the parser).

The expressions and their recipes are in optdsl/fuzz/expr.py and optdsl/fuzz/recipes.py;
optdsl/fuzz/coverage.py records what a stream of programs exercised.
"""
from __future__ import annotations

import math

from hypothesis import strategies as st

from .execute import Case, Group
from .expr import (BOOL, CHAN, CONST, HOST, NUM, NUMBERS, P_AND, P_NOT, PARAM_MAG, RED, STATE_MAG,
                   TENSOR, TS, E, Hyper, Scope, State, atom, binary, call, compare, has_group_reduction, neg,
                   conjunct_texts, not_, paren, per_tensor, reduction, spell, ternary)
from .modes import mode_blocks, switch_steps
from .shaped import declare_shaped
from .sparse import declare_sparse_rows
from .recipes import Recipes
from .vocabulary import BETA_DEFAULTS, HYPER_FAMILIES, NAME_POOL

REDUCTION_NAMES = ("sum", "mean", "norm", "rms", "amax", "dot")


class ProgramGen(Recipes):
    """Draws one program. `draw` is hypothesis's."""

    def __init__(self, draw, prefix: str = "", taken: frozenset[str] = frozenset(), wrapper: bool = False):
        self.draw = draw
        # a wrapper (`wrapper()`): its names start with `prefix` and avoid `taken` (the wrapped
        # program's: composition refuses shared names), and it keeps no step count of its own
        self.prefix, self.taken, self.is_wrapper = prefix, taken, wrapper
        self.group_states: list[str] = []   # `state x : group` (a wrapper's, see `wrapper`): host leaves
        self.hypers: list[Hyper] = []
        self.flags: list[tuple[str, bool]] = []
        self.states: list[State] = []
        self.n_local = 0
        self.n_bool = 0
        self.used: set[str] = set()
        self.pool = self.chance(0.35)    # this program takes some names from NAME_POOL
        # A reduction is a barrier: the phase plan (optdsl.plan) recomputes what it reads in a
        # store-free slice, which cannot read an `empty` state or a host scalar state that the
        # update stores (a PlanError: not supported yet). `dirty` holds the names whose value may
        # depend on one (locals, tensor states and `param` stored from such a value or under a
        # condition that reads one, `is_empty(x)` included); a reduction's operand reads none of them
        # (`clean_only`), and no reduction is written under a dirty condition (`control_dirty`).
        self.dirty: set[str] = set()
        self.control_dirty = False
        self.clean_only = False
        # inside an `if` on a reduction: a local that outlives the `if` must not be set from host
        # math there (the checker's rule: after the `if` it is known only on the device)
        self.device_control = False
        # under a per-tensor condition (an `if`, or the side a `?:` takes): the checker refuses a
        # group reduction there (only the tensors taking the branch would compute it), so one drawn
        # there is written per tensor -- after the same draws, which keeps every other program as it was
        self.tensor_control = False
        self.red_rate = self.pick((0.0, 0.1, 0.25, 0.4))   # how often a numeric recipe is a reduction

    def name_for(self, default: str, api: bool = False) -> str:
        """A fresh name: `default`, or now and then one that generated code uses itself or derives
        from another name (generated code renames its own). `api`: a hyper's or a flag's."""
        from ..names import problem_with_name
        name = default = self.prefix + default
        if self.pool and self.chance(0.4):
            candidate = self.pick(NAME_POOL)
            if candidate not in self.used | self.taken and not problem_with_name(candidate, api=api):
                name = candidate
        if name in self.used:
            name = default
        while name in self.used | self.taken:   # an earlier name took the default from the pool (`h1`)
            name += "_"
        self.used.add(name)
        return name

    def d(self, strategy):
        return self.draw(strategy)

    def chance(self, p: float) -> bool:
        return self.d(st.floats(0, 1, exclude_max=True)) < p

    def pick(self, items):
        return self.d(st.sampled_from(list(items)))

    def num_lit(self, choices=(0.5, 1.0, 2.0, 0.1, 0.25, 0.9, 3.0, 1e-3, 10.0, 0.01)) -> E:
        x = self.pick(choices)
        return atom(spell(self.draw, x), CONST, NUM, abs(x))

    # ---- declarations ---------------------------------------------------------------------
    def declare(self) -> list[str]:
        lines: list[str] = []
        for i in range(self.d(st.integers(0, 3))):
            name, value = self.name_for(f"f{i}", api=True), self.chance(0.5)
            self.flags.append((name, value))
            lines.append(f"flag {name} = {'true' if value else 'false'}")
        n_hypers = self.d(st.integers(0, 4))
        for i in range(n_hypers):
            fam = self.pick(HYPER_FAMILIES)
            default, lo, hi = HYPER_FAMILIES[fam]
            if fam == "beta":
                default = self.pick(BETA_DEFAULTS)
            if self.chance(0.25):     # a tuple hyper: betas-like
                n = self.d(st.integers(2, 3))
                vals = tuple(self.pick(BETA_DEFAULTS) for _ in range(n))
                h = Hyper(self.name_for(f"hb{i}", api=True), vals, tuple((0.5, 0.999) for _ in range(n)), True)
                body = ", ".join(spell(self.draw, v) for v in vals)
                text = f"hyper {h.name} = ({body}{',' if self.chance(0.3) else ''})"
                conds = [f"0 <= {h.name}[{j}] < 1" if self.chance(0.5) else f"{h.name}[{j}] >= 0" for j in range(n)
                         if self.chance(0.7)]
                if conds:
                    text += " where " + " and ".join(conds)
            elif fam in ("rate", "coef", "decay") and self.chance(0.35):   # optional: `= none`, `= x or none`
                h = Hyper(self.name_for(f"h{i}", api=True), (default,), ((max(lo, 0.001), hi),), False, optional=True)
                text = f"hyper {h.name} = " + (f"{spell(self.draw, default) if default in NUMBERS else repr(default)} or none"
                                              if self.chance(0.5) else "none")
                if self.chance(0.35):
                    text += f" where {h.name} {self.pick(('>', '>='))} 0"
            else:
                h = Hyper(self.name_for(f"h{i}", api=True), (default,), ((lo, hi),), False)
                dtext = ("-" + spell(self.draw, -default)) if default < 0 and -default in NUMBERS else \
                    (spell(self.draw, default) if default in NUMBERS else repr(default))
                text = f"hyper {h.name} = {dtext}"
                where = self.where_clause(h.name, lo, hi)
                if where:
                    text += f" where {where}"
            self.hypers.append(h)
            lines.append(text)
        if "lr" not in self.used | self.taken and self.chance(0.2):   # `lr`, whose value at construction is `initial_lr`
            self.used.add("lr")
            h = Hyper("lr", (0.01,), ((0.001, 0.1),), False)
            self.hypers.append(h)
            lines.append("hyper lr = 0.01" + self.pick(("", " where lr > 0", " where 0 <= lr < inf")))
        for i in range(self.d(st.integers(0, 4))):
            lines.append(self.declare_state(i))
        for _ in range(self.d(st.integers(0, 2))):
            lines.append(self.require())
        if self.chance(0.15) and not self.is_wrapper:
            # the step count is kept even if the update never reads it; `per group`: one count per param
            # group, whatever its tensors' grads (a tensor without one then sees a jump in its step)
            lines.append(self.pick(("keep step", "keep step", "keep step per group", "keep step per tensor")))
        return self.d(st.permutations(lines)) if lines else lines

    def where_clause(self, name: str, lo: float, hi: float) -> str | None:
        options = [None]
        if lo >= 0:
            options += [f"{name} >= 0", f"0 <= {name}", f"not {name} < 0", f"{name} >= 0 and {name} <= {hi:g}"]
            if hi < 1:
                options += [f"0 <= {name} < 1", f"{name} >= 0 and {name} < 1"]
        if lo > 0:
            options += [f"{name} > 0", f"0 < {name} <= {hi:g}"]
        if hi < 0:
            options += [f"{name} < 0", f"-2 < {name} < 0"]
        if self.flags:
            f = self.pick([f for f, _ in self.flags])
            options += [f"{name} <= {hi:g} or {f}"]
        return self.pick(options)

    def declare_state(self, i: int) -> str:
        scalar = self.chance(0.25)
        scalar_hypers = [h for h in self.given_hypers() if not h.is_tuple]
        inits = ["zeros", "number"] + (["hyper"] if scalar_hypers else []) + ([] if scalar else ["empty", "empty"])
        how = self.pick(inits)
        if how == "number":
            x = self.pick((0.0, 0.5, 1.0, 0.1, 1e-3, 2.0, -0.5, -1.0))
            init = ("-" + spell(self.draw, -x)) if x < 0 else spell(self.draw, x)
        elif how == "hyper":
            init = self.pick([h.name for h in scalar_hypers])
        else:
            init = how
        cond = None
        if self.chance(0.3):
            cond = self.state_condition()
        key = None
        if self.chance(0.15):
            key = self.pick(["sum", "exp avg", "buffer-%d", "m%d", "état", "s%d.value", "{braces}", "it's"])
            key = self.prefix + (key % i if "%d" in key else f"{key} {i}")
        s = State(self.name_for(f"s{i}"), scalar, init, cond, key)
        self.states.append(s)
        shape = " : scalar" if scalar else (" : tensor" if self.chance(0.05) else "")
        text = f"state {s.name}{shape} = {init}"
        if key is not None:
            text += f' key "{key}"'
        if cond is not None:
            text += " if " + " and ".join(cond)
        return text

    def state_condition(self) -> list[str]:
        options = []
        for f, _ in self.flags:
            options += [[f], [f"not {f}"]]
        for h in self.given_hypers():
            if not h.is_tuple:
                lo, hi = h.ranges[0]
                options += [[f"{h.name} != 0"], [f"{h.name} > {(lo + hi) / 2:g}"]]
        if len(self.flags) >= 2:
            options.append([self.flags[0][0], self.flags[1][0]])
        return self.pick(options) if options else ["true"]

    def require(self) -> str:
        parts = []
        for h in self.given_hypers():
            for src, lo, hi in h.entries():
                parts.append((f"{src} <= {hi:g}", f"{{{src}}}"))
                parts.append((f"{src} >= {lo:g}", f"{{{src}}}"))
        for f, _ in self.flags:
            parts.append((f"{f} or not {f}", f"{{{f}}}"))
        if not parts:
            return 'require true else "always"'
        cond, shown = self.pick(parts)
        if self.flags and self.chance(0.3):
            cond = f"{cond} or {self.pick([f for f, _ in self.flags])}"
        msg = self.pick([f"value out of range: {shown}", f"need {{{{bounded}}}} values, got {shown}",
                         "invalid configuration", f"{shown} is not allowed"])
        return f'require {cond} else "{msg}"'

    def state_dirty(self, s: State) -> bool:
        return s.scalar or s.init == "empty" or s.name in self.dirty

    def new_local(self, typ: str) -> str:
        if typ == NUM:
            self.n_local += 1
            return self.name_for(f"v{self.n_local}")
        self.n_bool += 1
        return self.name_for(f"c{self.n_bool}")

    def block(self, scope: Scope, depth: int, n: int) -> list:
        """Statements: ('line', text, full) or ('if', [(cond E | None, block)])."""
        out: list = []
        for _ in range(n):
            kind = self.pick(("local", "local", "state", "state", "param", "if", "alias", "join"))
            if kind == "local":
                out.append(self.s_local(scope))
            elif kind == "state":
                stmt = self.s_state(scope, depth)
                if stmt is not None:
                    out.append(stmt)
            elif kind == "param":
                out.append(self.s_param(scope))
            elif kind == "alias":
                out += self.s_alias(scope)
            elif kind == "join":
                out += self.s_join(scope)
            elif depth < 2:
                out.append(self.s_if(scope, depth))
        return out

    def assign(self, name: str, e: E) -> tuple:
        if e.dirty or self.control_dirty:
            self.dirty.add(name)
        return ("line", f"{name} = {e.text}", f"{name} = {e.full}")

    def s_local(self, scope: Scope) -> tuple:
        typ = BOOL if self.chance(0.25) else NUM
        existing = [n for n, (k, t, m) in scope.locals.items() if t == typ]
        name = self.pick(existing) if existing and self.chance(0.3) else self.new_local(typ)
        max_kind = self.pick((HOST, TS, RED, CHAN, TENSOR, TENSOR, TENSOR))
        e = self.num(scope, max_kind, 3) if typ == NUM else self.boolean(scope, max_kind, 2)
        if self.device_control and e.kind < RED and name in scope.locals:
            name = self.new_local(typ)     # host math under an `if` on a reduction: a name of its own
        scope.locals[name] = (e.kind, typ, e.mag)
        return self.assign(name, e)

    def s_param(self, scope: Scope) -> tuple:
        lr = self.rate(scope)
        form = self.d(st.integers(0, 4))
        if form == 1:
            wd = self.pick([e for e in self.leaves(scope, HOST, NUM) if e.kind == HOST and e.mag <= 2] or [self.num_lit((0.1, 0.01))])
            factor = binary(self.num_lit((1.0,)), "-", binary(lr, "*", wd, 0.2), 1.0)
            return self.assign("param", binary(self.param_atom(), "*", paren(factor), PARAM_MAG))
        e = self.bounded(self.num(scope, TENSOR, 3), 10.0)
        if form == 2:
            den, lo = self.positive(scope, TENSOR, 1)
            e = binary(e, "/", paren(binary(call("sqrt", [den], 1.0), "+", self.num_lit((1e-8, 1e-3, 0.1)), 1.0)),
                       e.mag / math.sqrt(lo))
            e = self.bounded(e, 10.0)
        if form == 3:
            return self.assign("param", call("lerp", [self.param_atom(), e, self.num_lit((0.1, 0.01, 0.5))], PARAM_MAG))
        if form == 4:
            upd = binary(self.param_atom(), self.pick("-+"), binary(lr, "*", e, 1.0), PARAM_MAG)
            return self.assign("param", call("clamp", [upd, neg(self.num_lit((100.0,))), self.num_lit((100.0,))], 100.0))
        return self.assign("param", binary(self.param_atom(), self.pick("-+"), binary(lr, "*", e, 1.0), PARAM_MAG))

    def rate(self, scope) -> E:
        rates = [atom(src, HOST, NUM, hi) for h in self.readable_hypers(scope) for src, lo, hi in h.entries()
                 if hi <= 0.2 and lo >= 0]
        if rates and self.chance(0.7):
            return self.pick(rates)
        return self.num_lit((0.01, 0.1, 1e-3))

    def writable(self, scope: Scope) -> list[State]:
        return [s for s in self.states if s.cond is None or all(c in scope.guards for c in s.cond)]

    def s_state(self, scope: Scope, depth: int):
        options = self.writable(scope)
        if not options:
            return None
        s = self.pick(options)
        if s.scalar and not s.device and self.device_control:   # host math there: refused (see s_scalar)
            return None
        if s.scalar:
            return self.s_scalar(scope, s)
        if s.init == "empty" and s.name not in scope.nonempty:
            form = self.d(st.integers(0, 2))
            saved = self.tensor_control
            self.tensor_control = saved or form == 0 or form == 1 and depth < 2   # under `is_empty(s)`
            first = self.bounded(self.num(scope, TENSOR, 2), STATE_MAG)
            if form == 0:
                later_scope = scope.copy()
                later_scope.nonempty.add(s.name)
                later = self.update_form(later_scope, s)
                self.tensor_control = saved
                test = call("is_empty", [atom(s.name, TS, dirty=True)], 0.0, BOOL, kind=TS)
                e = ternary(test, first, later) if self.chance(0.7) else call("where", [test, first, later], STATE_MAG)
                scope.nonempty.add(s.name)
                return self.assign(s.name, e)
            if form == 1 and depth < 2:
                test = call("is_empty", [atom(s.name, TS, dirty=True)], 0.0, BOOL, kind=TS)
                later_scope = scope.copy()
                later_scope.nonempty.add(s.name)
                then = [self.assign(s.name, first)]
                other = [self.assign(s.name, self.update_form(later_scope, s))]
                self.tensor_control = saved
                scope.nonempty.add(s.name)
                return ("if", [(test, then), (None, other)])
            self.tensor_control = saved
            scope.nonempty.add(s.name)
            return self.assign(s.name, first)
        return self.assign(s.name, self.update_form(scope, s))

    def update_form(self, scope: Scope, s: State) -> E:
        """A store to tensor state s that keeps it bounded; may read s."""
        me = atom(s.name, TENSOR, NUM, STATE_MAG, self.state_dirty(s))
        e = self.bounded(self.num(scope, TENSOR, 2), STATE_MAG)
        form = self.d(st.integers(0, 7))
        if form == 0:     # EMA
            b = self.beta(scope)
            one_minus = paren(binary(self.num_lit((1.0,)), "-", b, 1.0))
            return binary(binary(b, "*", me, STATE_MAG), "+", binary(one_minus, "*", e, STATE_MAG), STATE_MAG)
        if form == 1:
            return call("lerp", [me, e, self.weight(scope, TENSOR, 1)], STATE_MAG)
        if form == 2:
            return call(self.pick(("max", "min")), [me, e], STATE_MAG)
        if form == 3:
            c = self.num_lit((1.0, 10.0))
            return call("clamp", [e, neg(c), c], c.mag)
        if form == 4:
            return binary(me, "*", self.beta(scope), STATE_MAG)
        if form == 5:
            small = self.bounded(e, 5.0)
            return self.bounded(binary(me, self.pick("+-"), small, STATE_MAG), STATE_MAG)
        if form == 6:
            c = self.boolean(scope, TENSOR, 1)
            if per_tensor(c) and has_group_reduction(e):   # drawn before its condition: no select, then
                return e
            return ternary(c, e, me)
        return e

    def s_scalar(self, scope: Scope, s: State) -> tuple:
        me = atom(s.name, RED if s.device else TS, NUM, STATE_MAG, True)
        kind = self.pick((TS, RED))   # RED: a reduction may go in, into a device one
        e = self.bounded(self.num(scope, kind if s.device else TS, 2), 10.0)
        form = self.d(st.integers(0, 5))
        if form == 0:
            v = binary(me, "*", self.beta(scope), STATE_MAG)
        elif form == 1:
            v = self.bounded(binary(me, self.pick("+-"), e, STATE_MAG), STATE_MAG)
        elif form == 2:
            b = self.beta(scope)
            v = binary(binary(b, "*", me, STATE_MAG), "+", binary(paren(binary(self.num_lit((1.0,)), "-", b, 1.0)), "*", e, 10.0),
                       STATE_MAG)
        elif form == 3:
            v = binary(me, "/", paren(binary(self.num_lit((1.0, 2.0)), "+", call("abs", [e], e.mag), 1.0)), STATE_MAG)
        elif form == 4:
            v = binary(e, "*", me, STATE_MAG)
            v = self.bounded(v, STATE_MAG)
        else:
            v = e
        if s.device and not any(f"{r}(" in v.text for r in REDUCTION_NAMES):
            # a device scalar state is stored from a reduction's value on every store, so the checker
            # (which decides its kind from its stores) reads it on the device as the generator does,
            # also under an `if` on a reduction, where the planner refuses host math: times a
            # reduction that is 1 on every tensor, with no draw
            one = atom("1", CONST, NUM, 1.0)
            v = binary(paren(v), "*", call("max", [reduction("amax", [one], None, 1.0), one], 1.0), v.mag)
        return self.assign(s.name, v)

    def s_join(self, scope: Scope) -> list:
        """`v = <host math>` then `if c { v = <a reduction> }`: after the `if` v is a device value
        (the lowering moves the host value onto the device where the two join: Op.ON_DEVICE)."""
        v = self.new_local(NUM)
        first = self.num(scope, self.pick((HOST, TS)), 2)
        out = [self.assign(v, first)]
        cond = self.condition(scope)
        if cond.kind >= RED:    # the checker rejects `v = host; if <on a reduction> { v = ... }`: a host condition
            cond = self.boolean(scope, TS, 1)
        saved = self.control_dirty, self.device_control, self.tensor_control
        self.control_dirty = self.control_dirty or cond.dirty
        self.device_control = self.device_control or cond.kind >= RED
        self.tensor_control = self.tensor_control or per_tensor(cond)
        later = self.r_reduce(scope, self.pick((RED, CHAN)), 1)
        inner = scope.copy()
        inner.guards += conjunct_texts(cond)
        body = [self.assign(v, later)]
        self.control_dirty, self.device_control, self.tensor_control = saved
        if later.kind < RED:      # no reduction allowed here: v stays host math
            scope.locals[v] = (first.kind, NUM, first.mag)
            return out
        scope.locals[v] = (max(first.kind, later.kind), NUM, max(first.mag, later.mag))
        out.append(("if", [(cond, body)]))
        return out

    def s_alias(self, scope: Scope) -> list:
        """`v = s` (or `v = param`), then s stored, then v read: the lowering must copy v."""
        targets = [s for s in self.writable(scope) if not s.scalar and self.accessible(s, scope)]
        names = [s.name for s in targets] + ["param"]
        target = self.pick(names)
        v = self.new_local(NUM)
        mag = PARAM_MAG if target == "param" else STATE_MAG
        dirty = "param" in self.dirty if target == "param" else self.state_dirty(next(s for s in self.states if s.name == target))
        out = [self.assign(v, atom(target, TENSOR, NUM, mag, dirty))]
        scope.locals[v] = (TENSOR, NUM, mag)
        if target == "param":
            out.append(self.s_param(scope))
        else:
            out.append(self.assign(target, self.update_form(scope, next(s for s in self.states if s.name == target))))
        lr = self.rate(scope)
        out.append(self.assign("param", binary(self.param_atom(), "-",
                                               binary(lr, "*", call("clamp", [atom(v, TENSOR, NUM, mag), neg(self.num_lit((1.0,))),
                                                                              self.num_lit((1.0,))], 1.0), 1.0), PARAM_MAG)))
        return out

    def s_if(self, scope: Scope, depth: int) -> tuple:
        arms = []
        n_arms = self.pick((1, 1, 2, 2, 3))
        scopes = []
        outer = self.control_dirty, self.device_control, self.tensor_control
        for i in range(n_arms):
            cond = self.condition(scope)
            self.control_dirty = self.control_dirty or cond.dirty   # every later arm hangs on it too
            self.device_control = self.device_control or cond.kind >= RED
            self.tensor_control = self.tensor_control or per_tensor(cond)
            inner = scope.copy()
            inner.guards += conjunct_texts(cond)
            body = self.block(inner, depth + 1, self.d(st.integers(0 if self.chance(0.1) else 1, 3)))
            arms.append((cond, body))
            scopes.append(inner)
        if self.chance(0.5):
            inner = scope.copy()
            arms.append((None, self.block(inner, depth + 1, self.d(st.integers(1, 3)))))
            scopes.append(inner)
            exhaustive = True
        else:
            exhaustive = False
        self.control_dirty, self.device_control, self.tensor_control = outer
        # after the `if`: locals bound on every path (with one type), states stored on every path
        names = set(scope.locals)
        if exhaustive:
            common = set.intersection(*(set(s.locals) for s in scopes))
            for n in common - names:
                types = {s.locals[n][1] for s in scopes}
                if len(types) == 1:
                    scope.locals[n] = (max(s.locals[n][0] for s in scopes), types.pop(), max(s.locals[n][2] for s in scopes))
            scope.nonempty |= set.intersection(*(s.nonempty for s in scopes))
        for n in names:
            scope.locals[n] = (max([scope.locals[n][0]] + [s.locals[n][0] for s in scopes]), scope.locals[n][1],
                               max([scope.locals[n][2]] + [s.locals[n][2] for s in scopes]))
        return ("if", arms)

    def condition(self, scope: Scope) -> E:
        form = self.d(st.integers(0, 6))
        optional = [h for h in self.hypers if h.optional]
        if form == 6 and optional:   # `h != none` (reads h inside), `h == none`
            h = self.pick(optional)
            return compare([atom(h.name, HOST), atom("none", CONST)], [self.pick(("!=", "!=", "=="))])
        guarded = [s for s in self.states if s.cond is not None and not all(c in scope.guards for c in s.cond)]
        if form == 0 and guarded:
            s = self.pick(guarded)
            text = " and ".join(s.cond)
            full = " and ".join(f"({c})" for c in s.cond)
            e = E(text, f"({full})", P_AND if len(s.cond) > 1 else P_NOT, HOST, BOOL)
            if self.chance(0.3):
                e = binary(e, "and", self.boolean(scope, TS, 1), 0.0, BOOL)
            return e
        if form == 1:     # the step
            n = self.pick((1.0, 2.0, 3.0))
            return compare([atom("step", TS, NUM, 10.0), atom(spell(self.draw, n), CONST)], [self.pick((">", ">=", "<", "==", "!=", "<="))])
        if form == 2:
            empties = [s for s in self.states if s.init == "empty" and (s.cond is None or all(c in scope.guards for c in s.cond))]
            if empties:
                s = self.pick(empties)
                test = call("is_empty", [atom(s.name, TS, dirty=True)], 0.0, BOOL, kind=TS)
                return not_(test) if self.chance(0.3) else test
        # one boolean per tensor: host, step and scalar-state math, or reductions (`norm(g) > c`)
        return self.boolean(scope, self.pick((TS, TS, RED)), 2)

    # ---- the program ---------------------------------------------------------------------------
    def program(self, name: str) -> tuple[str, str]:
        """(text, parenthesised twin)."""
        decls = self.declare() if self.chance(0.92) else []
        scope = Scope()
        body = self.block(scope, 0, self.d(st.integers(1, 7)))
        body.append(self.s_param(scope))
        nl = "\r\n" if self.chance(0.1) else "\n"
        header = f"optimizer {name}"
        if self.chance(0.8):
            header += ' "' + self.pick(("A fuzzed optimizer", "Fuzz: random program", "étude № 7 — fuzz",
                                         "doc with {braces} and 'quotes'", "")) + '"'
        lines = []
        if self.chance(0.3):
            lines.append("# generated by optdsl.fuzz.programs")
        lines.append(header)
        for dline in decls:
            lines.append(dline + ("   # a declaration" if self.chance(0.05) else ""))
        twin_lines = list(lines)
        text_body, full_body = self.render(body, 1)
        lines += ["update {"] + text_body + ["}"]
        twin_lines += ["update {"] + full_body + ["}"]
        return nl.join(lines) + nl, "\n".join(twin_lines) + "\n"

    def wrapper(self, name: str, inner_dirty: set[str]) -> tuple[str, str]:
        """(text, parenthesised twin) of a wrapper: a program whose update runs the wrapped one's
        at an `inner` statement drawn among its own. `inner_dirty`: what the wrapped update
        leaves dirty (see __init__), which the statements after `inner` see."""
        decls = self.declare() if self.chance(0.9) else []
        # group states, stored first (once per step() call): a count of the calls, or the largest
        # of a host value; the statements after read them as host values
        prefix = []
        for i in range(self.d(st.integers(0, 2))):
            state = self.name_for(f"g{i}", api=True)   # a param_group key
            if self.chance(0.5) or not self.given_hypers():
                decls.append(f"state {state} : group = 0")
                prefix.append(("line", f"{state} = {state} + 1", f"{state} = ({state} + 1)"))
            else:
                h = self.pick([h for h in self.given_hypers() if not h.is_tuple] or [None])
                if h is None:
                    continue
                decls.append(f"state {state} : group = -1")
                prefix.append(("line", f"{state} = max({h.name}, {state})", f"{state} = max({h.name}, {state})"))
            self.group_states.append(state)
        scope = Scope()
        body = prefix + self.block(scope, 0, self.d(st.integers(0, 4)))
        at = self.d(st.integers(len(prefix), len(body)))
        if "param" in inner_dirty:
            self.dirty.add("param")
        body.insert(at, ("line", "inner", "inner"))
        if self.chance(0.6):
            body.append(self.s_param(scope))
        header = f"wrapper {name}" + (' "' + self.pick(("a fuzzed wrapper", "")) + '"' if self.chance(0.7) else "")
        lines = [header] + decls
        text_body, full_body = self.render(body, 1)
        return ("\n".join(lines + ["update {"] + text_body + ["}"]) + "\n",
                "\n".join(lines + ["update {"] + full_body + ["}"]) + "\n")

    def render(self, stmts, indent: int) -> tuple[list[str], list[str]]:
        pad = "  " * indent
        out, full = [], []
        for s in stmts:
            if s[0] == "line":
                comment = "  # note" if self.chance(0.03) else ""
                out.append(pad + s[1] + comment)
                full.append(pad + s[2])
                continue
            arms = s[1]
            for i, (cond, body) in enumerate(arms):
                b_text, b_full = self.render(body, indent + 1)
                if i == 0:
                    head, fhead = f"if {cond.text} {{", f"if {cond.full} {{"
                elif cond is not None:
                    head, fhead = f"}} else if {cond.text} {{", f"}} else if {cond.full} {{"
                else:
                    head, fhead = "} else {", "} else {"
                out.append(pad + head)
                full.append(pad + fhead)
                out += b_text
                full += b_full
            out.append(pad + "}")
            full.append(pad + "}")
        return out, full


# ---- whole cases ----------------------------------------------------------------------------------

SHAPES = [(1,), (7,), (3, 5), (33,), (2, 3, 4), (1, 1), (), (130,), (257,), (0,), (4, 0)]
SHAPE_WEIGHTS = [8, 8, 8, 6, 4, 2, 2, 3, 2, 1, 1]
DTYPES = ["float32", "bfloat16"]


@st.composite
def cases(draw, fused: bool = True, steps: int = 6, fused_steps: int = 2, wrapped: float = 0.0,
          moded: float = 0.0, sparse: float = 0.0, shaped: float = 0.0) -> Case:
    """A fuzz case: a random program and a random way to run it; with chance `moded`, the program
    has `on train` / `on eval` blocks and the run switches modes (optdsl.fuzz.modes); with chance
    `wrapped`, it runs inside a wrapper (see `_wrap`); with chance `sparse`, a program that is not
    wrapped and that `sparse rows` allows declares it, and its gradients are sparse (see
    optdsl.fuzz.sparse); with chance `shaped`, one neither wrapped nor sparse gains reduced-shape states
    and axis reductions, on params of rank 0 to 4 (optdsl.fuzz.shaped). With all 0 nothing more is drawn, so the cases are those drawn before
    any existed (the CI slice's)."""
    serial = draw(st.integers(0, 10 ** 6))
    gen = ProgramGen(draw)
    text, twin = gen.program(f"Fz{serial}")
    groups = []
    for _ in range(draw(st.integers(1, 2))):
        n = draw(st.integers(1, 4))
        shapes = [draw(st.sampled_from([s for s, w in zip(SHAPES, SHAPE_WEIGHTS) for _ in range(w)])) for _ in range(n)]
        dtypes = [draw(st.sampled_from(DTYPES + ["float32"])) for _ in range(n)]
        hypers = {}
        for h in gen.hypers:
            if draw(st.booleans()):
                continue
            if h.optional and draw(st.booleans()):
                hypers[h.name] = None     # given as None: absent, as by default
                continue
            vals = tuple(round(draw(st.floats(lo, hi)), 6) for lo, hi in h.ranges)
            vals = tuple(min(max(v, lo), hi) for v, (lo, hi) in zip(vals, h.ranges))
            hypers[h.name] = vals if h.is_tuple else vals[0]
        flags = {f: draw(st.booleans()) for f, _ in gen.flags if draw(st.booleans())}
        groups.append(Group(shapes, dtypes, hypers, flags))
    case = Case(text=text, groups=groups, steps=steps, fused_steps=fused_steps,
                seed=draw(st.integers(0, 2 ** 31 - 1)), block=draw(st.sampled_from([None, 16, 64, 128])),
                skip=draw(st.sampled_from([0.0, 0.1, 0.25])),
                paths=("loop", "foreach", "fused") if fused else ("loop", "foreach"))
    case.twin = twin   # type: ignore[attr-defined]
    case.parts = ()    # type: ignore[attr-defined]
    # drawn after everything else: the program and its groups are those of a plain case
    if moded and (moded >= 1 or draw(st.integers(0, 99)) >= 100 - moded * 100):
        blocks = mode_blocks(draw, gen)
        case.text += blocks
        case.twin += blocks   # type: ignore[attr-defined]
        case.switches = switch_steps(draw, steps)
    if wrapped and (wrapped >= 1 or draw(st.integers(0, 99)) >= 100 - wrapped * 100):   # (small ones come oftener)
        _wrap(draw, case, gen, f"Fz{serial}")
    elif sparse and (sparse >= 1 or draw(st.integers(0, 99)) < sparse * 100):   # (here small ones say yes)
        declare_sparse_rows(draw, case)
    elif shaped and (shaped >= 1 or draw(st.integers(0, 99)) < shaped * 100):
        declare_shaped(draw, case, gen)
    return case


WRAPPED = 0.25                         # of the cases `optdsl fuzz` runs inside a wrapper (optdsl.compose)
SPARSE = 0.3                           # of the others, `sparse rows` where the program allows it
SHAPED = 0.3                           # of the rest, reduced-shape states and axis reductions
MODED = 0.2                            # of the cases `optdsl fuzz` draws with `on train` / `on eval`
SHIPPED_WRAPPER_SHARE = 0.3            # of those, inside a shipped wrapper (specs/wrappers/)


def _wrap(draw, case: Case, gen: "ProgramGen", name: str) -> None:
    """Case's program wrapped: in a shipped wrapper, or in a drawn one whose own hypers get
    per-group values as the program's do; the case runs the composed text."""
    from ..compose import Source, compose, shipped_dirs
    if draw(st.integers(0, 99)) >= 100 - SHIPPED_WRAPPER_SHARE * 100:
        path = draw(st.sampled_from(sorted(p for d in shipped_dirs()[1:] for p in d.glob("*.opt"))))
        w_text = w_twin = path.read_text(encoding="utf-8")
        hypers = []
    else:
        wgen = ProgramGen(draw, prefix="w", taken=frozenset(gen.used) | {"lr"}, wrapper=True)
        w_text, w_twin = wgen.wrapper("Wz", gen.dirty)
        hypers = wgen.hypers
    for group in case.groups:
        for h in hypers:
            if draw(st.booleans()):
                vals = tuple(min(max(round(draw(st.floats(lo, hi)), 6), lo), hi) for lo, hi in h.ranges)
                group.hypers[h.name] = None if h.optional and draw(st.booleans()) else (vals if h.is_tuple else vals[0])
    inner = case.text
    case.text = compose(Source(w_text, "<wrapper>"), Source(inner, "<fuzz>"), name)
    case.twin = compose(Source(w_twin, "<wrapper>"), Source(case.twin, "<fuzz>"), name)   # type: ignore[attr-defined]
    case.parts = (w_text, inner)   # type: ignore[attr-defined]
