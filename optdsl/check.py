"""Stage 2: the checker. Name resolution, kinds, types, scoping, flag and state
guards. It collects every error and raises once (CompileError)."""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from . import ast
from .builtins import (CONSTANTS, ESTIMATORS, FUNCTION_GROUPS, FUNCTIONS, INITIAL_LR, INPUTS, REDUCTION_FUNCTIONS,
                       SHAPE_FUNCTIONS, STATE_PREDICATES)
from .check_group import check_group_update
from .check_sparse import check_sparse
from .definite import stored_on_every_path, unguarded_empty_reads
from .ir import MODES, SCOPES, join, scope_kind

from .check_choices import check_choice, choice_test, is_choice_test, misread
from .check_shapes import (MATRIX_FUNCTIONS, PARAM_FACTS, complement, dim_literal, item, matrix_op, reads_shape,
                           shape_condition)
from .diagnostics import Reporter, Span
from .ir import SHAPED_STATE_KIND, Kind, Type
from .names import message_parts, problem_with_class_name, problem_with_name

# a state's annotation (`state v : row = zeros`)
STATE_SHAPES = ("tensor", "scalar", "group", *SHAPED_STATE_KIND)
MAX_TUPLE = 8
PER_TENSOR = (Kind.TENSOR_SCALAR, Kind.REDUCED)   # conditions that may differ from tensor to tensor


@dataclass(frozen=True)
class Sym:
    kind: Kind
    type: Type


@dataclass
class Local:
    kind: Kind
    type: Type


def _did_you_mean(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _conjuncts(e: ast.Expr) -> list[ast.Expr]:
    out, stack = [], [e]
    while stack:
        x = stack.pop()
        if isinstance(x, ast.Binary) and x.op == "and":
            stack.extend((x.right, x.left))
        else:
            out.append(x)
    return out


class Checker:
    def __init__(self, spec: ast.Spec):
        self.spec = spec
        self.r = Reporter(spec.source)
        self.hypers = {h.name: h for h in spec.hypers}
        self.flags = {f.name: f for f in spec.flags}
        self.states = {s.name: s for s in (*spec.states, *spec.input_states)}   # an input reads as a state
        self.inputs = {i.name: i for i in spec.inputs}
        self.param_stored = False
        # scalar states stored from a reduction: they live on the device, and reading them is a
        # device value too (a fixed point: see infer_device_scalars)
        self.device_scalars: set[str] = set()
        self.stored_from_device: set[str] = set()
        self.in_mode: str | None = None   # the `on` block being checked
        # the conditions of the `if`s around the statement at hand (not those of `and` or `?:` inside it)
        self.statement_guards: list[ast.Expr] = []
        self.reduction_at: tuple[str, list] | None = None   # (reduction, the guards outside it) in its operand
        self.mode_known: set[str] = set()   # `empty` states holding a value after every path of the update
        self.in_update = False   # declarations are checked first: `initial_lr` is not known there
        # the per-tensor conditions (`if`, or the side a `?:` takes) around the expression at hand:
        # a group-wide reduction there would be computed by the tensors taking the branch only
        self.per_tensor_control: list[ast.Expr] = []
        self.assigned_kind: dict[int, Kind | None] = {}   # id of an assignment -> its value's kind

    # ---- declarations ---------------------------------------------------------
    def check(self) -> None:
        spec = self.spec
        if (why := problem_with_class_name(spec.name)):
            self.r.error(spec.span, why)
        if not spec.doc.isprintable():
            self.r.error(spec.span, "the doc string must be printable text on one line")
        seen: dict[str, Span] = {}
        for decl in (*spec.hypers, *spec.flags, *spec.states, *spec.inputs):
            if decl.name in seen:
                self.r.error(decl.span, f"'{decl.name}' is declared twice (first at line {seen[decl.name].line})")
                continue
            seen[decl.name] = decl.span
            if (why := problem_with_name(decl.name, api=not isinstance(decl, ast.State))):
                self.r.error(decl.span, why)
        keys: dict[str, ast.State] = {}
        for s in spec.states:
            key = s.key if s.key is not None else s.name
            if s.key is not None and (not s.key or not s.key.isprintable()):
                self.r.error(s.span, "a state's key must be non-empty printable text on one line")
            elif key == "step":
                self.r.error(s.span, "the key 'step' is the parameter's step count; give this state another key")
            elif key in keys:
                self.r.error(s.span, f"state '{s.name}' is stored under the key '{key}', as is state '{keys[key].name}'")
            keys.setdefault(key, s)
        for h in spec.hypers:
            if h.choices:
                check_choice(self, h)
            if h.is_tuple and len(h.default) > MAX_TUPLE:
                self.r.error(h.span, f"a hyper tuple has at most {MAX_TUPLE} entries")
            if h.where is not None:   # an optional hyper's check runs where it is given
                given = [ast.Compare(h.span, (ast.Name(h.span, h.name), ast.NoneLit(h.span)), ("!=",))] \
                    if h.optional else []
                given += [ast.Compare(h.span, (ast.Index(h.span, ast.Name(h.span, h.name), i), ast.NoneLit(h.span)),
                                      ("!=",)) for i in sorted(h.optional_entries)]
                self.expect(h.where, Type.BOOL, max_kind=Kind.HOST, what="a `where` condition", locals_={}, guards=given)
        for s in spec.states:
            self.check_state(s)
        for i in spec.inputs:
            self.check_input(i)
        for keep in spec.keeps:
            if keep.name != "step":
                self.r.error(keep.span, f"only the step count can be kept (`keep step`), not '{keep.name}'")
            elif keep.per not in (None, "tensor", "group"):
                self.r.error(keep.per_span, f"the step is counted `per tensor` (torch.optim's way, the default) or "
                                            f"`per group`, not per '{keep.per}'{_did_you_mean(keep.per, ('tensor', 'group'))}")
        check_sparse(spec, self.r, _did_you_mean)
        for keep in spec.keeps:
            if keep.name == "step" and keep.as_ is not None and keep.as_ != "int":
                self.r.error(keep.as_span, f"the step is saved `as int` (torch.optim.SparseAdam's way) or, without "
                                           f"`as`, as a tensor; not as '{keep.as_}'{_did_you_mean(keep.as_, ('int',))}")
            elif keep.name == "step" and keep.as_ is not None and keep.per == "group":
                self.r.error(keep.as_span, "`as int` is for the per-tensor count; a group's count is a number already")
        pers = {k.per or "tensor" for k in spec.keeps if k.name == "step"}
        if len(pers) > 1:
            self.r.error(spec.keeps[-1].span, "the step is counted either per tensor or per group, not both")
        for req in spec.requires:
            per_tensor = reads_shape(self, req.cond) and shape_condition(self, req.cond, "a `require` condition")
            if not per_tensor:
                self.expect(req.cond, Type.BOOL, max_kind=Kind.HOST, what="a `require` condition", locals_={})
            if not req.message.isprintable():
                self.r.error(req.span, "a `require` message must be printable text on one line")
            else:
                self.check_message(req, per_tensor=per_tensor)
        self.in_update = True
        self.infer_device_scalars()
        self.block(spec.body, {}, guards=[])
        for read in unguarded_empty_reads(spec):
            self.r.error(read.span, f"state '{read.id}' starts `empty`, and this read can come before its first store "
                                    f"(on the first step it has no value): guard it with `is_empty({read.id})`, "
                                    f"e.g. `is_empty({read.id}) ? grad : {read.id}`, or store '{read.id}' before reading it")
        check_group_update(self, spec)
        self.check_modes(spec)
        if not self.param_stored and spec.kind != "wrapper":   # a wrapper's `inner` assigns it
            self.r.error(spec.span, "the update block never assigns 'param'")
        self.r.raise_if_any()

    def infer_device_scalars(self) -> None:
        """A scalar state some store gives a reduction's value is kept on the device; its reads are
        then device values, which may make other scalar states device ones: iterate to a fixed point
        (quietly: the real pass reports)."""
        real, stored = self.r, self.param_stored
        try:
            while True:
                self.r = Reporter(self.spec.source)
                self.stored_from_device = set()
                self.block(self.spec.body, {}, guards=[])
                grown = self.stored_from_device - self.device_scalars
                if not grown:
                    return
                self.device_scalars |= grown
        finally:
            self.r, self.param_stored = real, stored

    def check_message(self, req: ast.Require, what: str = "`require`", per_tensor: bool = False) -> None:
        """`{name}` / `{name[0]}` in a message show a hyper's or flag's value, as torch's messages do; a
        per-tensor `require`'s message may show the param's `{shape}`, `{ndim}` and `{numel}` too."""
        try:
            parts = message_parts(req.message)
        except ValueError as err:
            self.r.error(req.span, f"in the {what} message: {err}")
            return
        for part in parts:
            if isinstance(part, str):
                continue
            name, index = part
            h = self.hypers.get(name)
            if per_tensor and name in PARAM_FACTS and index is None:
                continue
            if h is None and name not in self.flags:
                self.r.error(req.span, f"the {what} message shows '{{{name}}}', which is not a hyper or flag"
                                       + (" (a `require` on the param's shape may show {shape}, {ndim}, {numel})"
                                          if name in PARAM_FACTS else "")
                                       + f"{_did_you_mean(name, {*self.hypers, *self.flags})}")
            elif index is not None and (h is None or not h.is_tuple or index >= len(h.default)):
                self.r.error(req.span, f"the {what} message shows '{name}[{index}]', which is not an entry of a tuple hyper")

    def check_state(self, s: ast.State) -> None:
        if s.shape not in STATE_SHAPES:
            self.r.error(s.span, f"unknown state shape '{s.shape}' (expected 'scalar', 'group', 'row', 'column' or "
                                 f"'cover'; tensor state needs no annotation){_did_you_mean(s.shape, STATE_SHAPES[1:])}")
        if s.shape in SHAPED_STATE_KIND and s.init == "empty":
            self.r.error(s.span, f"a {s.shape} state starts as `zeros`, a number or a hyper's value, not `empty`")
        if s.shape == "group":
            # one number per param group: a param_group key and a keyword of the functional form
            if (why := problem_with_name(s.name, api=True)):
                self.r.error(s.span, why)
            if isinstance(s.init, str) or s.cond is not None or s.key is not None:
                self.r.error(s.span, f"a group state starts as a number, always exists and is the param_group key "
                                     f"'{s.name}': `state {s.name} : group = 0`")
            return
        if isinstance(s.init, str):
            if s.init in ("zeros", "empty"):
                if s.init == "empty" and s.shape == "scalar":
                    self.r.error(s.span, "scalar state cannot start `empty`; give it a number")
            elif s.init in self.hypers:
                if self.hypers[s.init].optional:
                    self.r.error(s.span, f"state '{s.name}' cannot start from optional hyper '{s.init}'")
                elif self.hypers[s.init].is_tuple:
                    self.r.error(s.span, f"state '{s.name}' cannot start from tuple hyper '{s.init}'")
            else:
                options = {"zeros", "empty", *self.hypers}
                hint = _did_you_mean(s.init, options) or (
                    f"; a state starts as `zeros`, `empty`, a number or a hyper's value. To start from a value of the "
                    f"first step, declare it `empty` and store it there: `{s.name} = is_empty({s.name}) ? "
                    f"{s.init if s.init in INPUTS else 'grad'} : ...`")
                self.r.error(s.span, f"unknown initial value '{s.init}' for state '{s.name}'{hint}")
        if s.cond is not None:
            shape_condition(self, s.cond, "a state's `if` condition")

    def check_input(self, i: ast.Input) -> None:
        """`input name = estimator(args)`: a known estimator, given the hypers and flags it takes."""
        roles = ESTIMATORS.get(i.estimator)
        if roles is None:
            self.r.error(i.estimator_span, f"unknown estimator '{i.estimator}' for input '{i.name}'"
                                           f"{_did_you_mean(i.estimator, ESTIMATORS)}; the estimators are "
                                           + ", ".join(f"{e}({', '.join(r for r, _ in rs)})" for e, rs in ESTIMATORS.items()))
            return
        shape = f"{i.estimator}({', '.join(r for r, _ in roles)})"
        if len(i.args) != len(roles):
            self.r.error(i.span, f"{i.estimator} takes {len(roles)} arguments, {shape}, not {len(i.args)}")
            return
        for arg, span, (role, what) in zip(i.args, i.arg_spans, roles):
            h = self.hypers.get(arg)
            ok = arg in self.flags if what == "flag" else h is not None and not h.is_tuple and not h.optional
            if not ok:
                self.r.error(span, f"the `{role}` of {i.estimator} is a {'flag' if what == 'flag' else 'hyper (one number, not optional)'}"
                                   f" of this spec; '{arg}' is not one")

    def check_modes(self, spec: ast.Spec) -> None:
        """`on train` / `on eval`: each once, both or neither, in an optimizer (a wrapper's wrapped
        spec brings its own). A block runs outside step(): no `grad`, no `step`, and it stores only
        `param` and tensor states: not `scalar` or `group` ones, and an `empty` one only where every
        path of the update leaves it holding a value."""
        if spec.modes and spec.kind == "wrapper":
            self.r.error(spec.modes[0].span, "a wrapper has no `on` blocks: the wrapped spec's run as they are")
            return
        names = [m.name for m in spec.modes]
        for k, m in enumerate(spec.modes):
            if m.name not in MODES:
                self.r.error(m.name_span, f"`on {m.name}`: the modes are `on train` and `on eval` (what "
                                          f"optimizer.train() and optimizer.eval() do){_did_you_mean(m.name, MODES)}")
            elif m.name in names[:k]:
                self.r.error(m.name_span, f"`on {m.name}` is given twice")
        if spec.modes and set(names) <= set(MODES) and not set(MODES) <= set(names):
            missing = next(n for n in MODES if n not in names)
            self.r.error(spec.modes[0].span, f"a spec with modes says what both switches do: add `on {missing} {{ ... }}` "
                                             "(an empty block leaves the tensors as they are)")
        stored = self.param_stored
        self.mode_known = set(stored_on_every_path(spec))
        for m in spec.modes:
            self.in_mode = m.name
            self.block(m.body, {}, guards=[])
        self.in_mode, self.param_stored = None, stored

    # ---- statements -------------------------------------------------------------
    def block(self, stmts, locals_: dict[str, Local], guards: list[ast.Expr]) -> dict[str, Local]:
        for st in stmts:
            self.statement_guards = guards
            if isinstance(st, ast.Assign):
                self.assign(st, locals_, guards)
            else:
                cond = self.expect(st.cond, Type.BOOL, max_kind=Kind.REDUCED, what="the condition of `if`",
                                   locals_=locals_, guards=guards)
                if cond is not None and cond.kind is Kind.TENSOR:
                    self.r.error(st.cond.span, "the condition of `if` varies per element; use `c ? a : b` for an elementwise select")
                elif cond is not None and (cond.kind.is_axis or cond.kind is Kind.COVER):
                    per = "accumulator" if cond.kind is Kind.COVER else "row or column"
                    self.r.error(st.cond.span, f"the condition of `if` varies per {per}; use `c ? a : b` for a "
                                               "select, or reduce it to one value per tensor (`amax(c)`)")
                elif cond is not None and cond.kind is Kind.CHANNEL:
                    self.r.error(st.cond.span, "the condition of `if` varies per channel; use `c ? a : b` for a select, "
                                               "or reduce it to one value per tensor (e.g. `amax(x) < d`)")
                per_tensor = cond is not None and cond.kind in PER_TENSOR
                self.per_tensor_control += [st.cond] if per_tensor else []
                then = self.block(st.then, dict(locals_), guards + _conjuncts(st.cond))
                other = self.block(st.other, dict(locals_), guards + [complement(st.cond)])
                del self.per_tensor_control[len(self.per_tensor_control) - per_tensor:]
                for name in sorted(set(then) | set(other)):
                    a, b = then.get(name), other.get(name)
                    before = locals_.get(name)
                    changed = [x for x in (a, b) if x is not None and x is not before] \
                        if name in _assigned(st.then + st.other) else []
                    if cond is not None and cond.kind is Kind.REDUCED and (a and b or before) and changed \
                            and any(x.kind.on_host and x.type is not None for x in changed):
                        self.r.error(st.cond.span, f"'{name}' is set from host math under an `if` on a reduction, so after "
                                                   f"the `if` it is known only on the device: set it with a select "
                                                   f"instead (`{name} = c ? a : b`)")
                    if a and b:
                        locals_[name] = Local(join(a.kind, b.kind), a.type if a.type is b.type else None)
                    elif before and (a or b):
                        locals_[name] = Local(join(before.kind, (a or b).kind), before.type)
        return locals_

    def assign(self, st: ast.Assign, locals_: dict[str, Local], guards) -> None:
        t = st.target
        value = self.infer(st.value, locals_, guards)
        if t in self.hypers or t in self.flags:
            what = "hyper" if t in self.hypers else "flag"
            self.r.error(st.target_span, f"cannot assign to {what} '{t}': hypers and flags are read-only in `update`")
            return
        if t in ("grad", "step") or t in self.inputs:
            self.r.error(st.target_span, f"cannot assign to input '{t}'; bind a new name, e.g. `g = ...`")
            return
        if self.in_mode and t in self.states and self.states[t].shape != "tensor":
            self.r.error(st.target_span, f"`on {self.in_mode}` stores param and tensor states; '{t}' is a "
                                         f"{self.states[t].shape} state: store it in `update`")
            return
        if self.in_mode and t in self.states and self.states[t].init == "empty" and t not in self.mode_known:
            self.r.error(st.target_span, f"state '{t}' starts `empty`, and some path of the update leaves it so: "
                                         f"`on {self.in_mode}` would create it; store it in `update` on every path first")
            return
        if t == "param" or t in self.states:
            self.param_stored |= t == "param"
            if value is not None and value.type is Type.BOOL:
                self.r.error(st.value.span, f"cannot store a boolean in '{t}'")
            if t in self.states:
                s = self.states[t]
                self.require_guard(s, st.target_span, guards)
                if s.shape == "group" and value is not None and value.kind > Kind.HOST:
                    self.r.error(st.value.span, f"group state '{t}' is one number per param group, stored once per "
                                                f"step: store host math in it (hypers, flags, numbers, group states), "
                                                f"not a value of each tensor (`step` is one: count the steps in a "
                                                f"group state, `{t} = {t} + 1`)")
                self.assigned_kind[id(st)] = None if value is None else value.kind
                if s.shape == "cover" and value is not None and join(value.kind, Kind.COVER) is not Kind.COVER:
                    self.r.error(st.value.span, f"state '{t}' keeps one accumulator per dim (a cover), but this "
                                                f"expression varies per {'element' if value.kind is Kind.TENSOR else value.kind.label}: "
                                                f"reduce it to a cover first, e.g. amax(x, cover), or combine covers "
                                                f"(max({t}, amax(x, cover)))")
                own = {"row": Kind.ROW, "column": Kind.COLUMN}.get(s.shape)
                if own is not None and value is not None and join(value.kind, own) is not own:
                    dim = "last dim" if s.shape == "row" else "second-to-last dim"
                    varies = "per element" if value.kind in (Kind.TENSOR, Kind.CHANNEL) else \
                        f"per {value.kind.label}, along the {dim}"
                    self.r.error(st.value.span, f"state '{t}' keeps one value per {s.shape} (the param's {dim} reduced "
                                                f"to 1), but this expression varies {varies}: reduce it along the "
                                                f"{dim} first, e.g. mean(x, {s.shape})")
                if s.shape == "scalar" and value is not None and value.kind >= Kind.CHANNEL:
                    per = "element" if value.kind is Kind.TENSOR else "row or column" if value.kind.is_axis \
                        else "accumulator of a cover" if value.kind is Kind.COVER else "channel"
                    self.r.error(st.value.span, f"scalar state '{t}' needs a per-tensor value, but this expression varies per {per}")
                elif s.shape == "scalar" and value is not None and value.kind is Kind.REDUCED:
                    self.stored_from_device.add(t)
            return
        if (why := problem_with_name(t)):
            self.r.error(st.target_span, why)
            locals_[t] = Local(Kind.TENSOR, None)   # poisoned: its uses stay quiet, this error said it all
            return
        if value is None:
            locals_[t] = Local(Kind.TENSOR, None)  # poisoned: later uses stay quiet, the first error said it all
            return
        self.assigned_kind[id(st)] = value.kind
        prev = locals_.get(t)
        if prev is not None and prev.type is None:
            prev = None
        if prev is not None and prev.type is not value.type:
            self.r.error(st.target_span, f"'{t}' was a {prev.type.value}, and is assigned a {value.type.value} here")
        locals_[t] = Local(value.kind, value.type)

    def require_guard(self, s: ast.State, span: Span, guards) -> None:
        if s.cond is None:
            return
        needed = _conjuncts(s.cond)
        if not all(any(n == g for g in guards) for n in needed):
            cond = _source(self.spec.source, s.cond.span)
            why = self.hoisted(lambda outer: all(any(n == g for g in outer) for n in needed), f"`if {cond} {{ ... }}`")
            self.r.error(span, f"state '{s.name}' exists only if {cond}; "
                               f"use it inside `if {cond} {{ ... }}` or `... ? {s.name} : ...`{why}")

    # ---- expressions --------------------------------------------------------------
    def expect(self, e, typ: Type, max_kind: Kind, what: str, locals_, guards=()) -> Sym | None:
        sym = self.infer(e, locals_, list(guards))
        if sym is None:
            return None
        if sym.type is not typ:
            self.r.error(e.span, f"{what} must be a {typ.value}, not a {sym.type.value}")
        elif sym.kind > max_kind and max_kind < Kind.TENSOR_SCALAR:
            depends = {Kind.TENSOR: "per-element values", Kind.CHANNEL: "a per-channel reduction",
                       Kind.REDUCED: "a reduction"}.get(sym.kind, "the step or per-tensor state")
            self.r.error(e.span, f"{what} may use only hypers, flags and numbers, but this depends on {depends}")
        return sym

    def infer(self, e: ast.Expr, locals_: dict[str, Local], guards) -> Sym | None:
        """Kind and type of an expression, or None after reporting an error in it."""
        if isinstance(e, ast.Num):
            return Sym(Kind.CONST, Type.NUM)
        if isinstance(e, ast.Bool):
            return Sym(Kind.CONST, Type.BOOL)
        if isinstance(e, ast.NoneLit):
            self.r.error(e.span, "`none` stands only beside an optional hyper: `h != none` or `h == none`")
            return None
        if isinstance(e, ast.Name):
            return self.name(e, locals_, guards)
        if isinstance(e, ast.Index):
            h = self.hypers.get(e.target.id)
            if h is None or not h.is_tuple:
                what = "is not a tuple hyper" if (h or e.target.id in locals_ or e.target.id in self.states
                                                  or e.target.id in INPUTS or e.target.id in self.flags) else "is unknown"
                self.r.error(e.span, f"only tuple hypers can be indexed; '{e.target.id}' {what}"
                             + ("" if h or what != "is unknown" else _did_you_mean(e.target.id, self.hypers)))
                return None
            if e.index >= len(h.default):
                self.r.error(e.span, f"index {e.index} is out of range: '{h.name}' has {len(h.default)} entries")
                return None
            if e.index in h.optional_entries and not self.none_guarded(e, guards):
                ref = f"{h.name}[{e.index}]"
                why = self.hoisted(lambda outer: self.none_guarded(e, outer), f"`if {ref} != none {{ ... }}`")
                self.r.error(e.span, f"'{ref}' may be none; use it inside `if {ref} != none {{ ... }}` or "
                                     f"`{ref} != none ? ... : ...`{why}")
                return None
            return Sym(Kind.HOST, Type.NUM)
        if isinstance(e, ast.Call):
            return self.call(e, locals_, guards)
        if isinstance(e, ast.Unary):
            inner = self.infer(e.operand, locals_, guards)
            if inner is None:
                return None
            want = Type.BOOL if e.op == "not" else Type.NUM
            if inner.type is not want:
                self.r.error(e.operand.span, f"operand of `{e.op}` must be a {want.value}")
                return None
            return inner
        if isinstance(e, ast.Binary):
            logic = e.op in ("and", "or")
            left = self.infer(e.left, locals_, guards)
            right_guards = guards + _conjuncts(e.left) if e.op == "and" else guards
            right = self.infer(e.right, locals_, right_guards)
            if left is None or right is None:
                return None
            want = Type.BOOL if logic else Type.NUM
            for side, sym in ((e.left, left), (e.right, right)):
                if sym.type is not want:
                    self.r.error(side.span, f"operands of `{e.op}` must be {'booleans' if logic else 'numbers'}")
                    return None
            return Sym(join(left.kind, right.kind), want)
        if isinstance(e, ast.Compare) and is_choice_test(self, e, locals_):
            return Sym(Kind.HOST, Type.BOOL) if choice_test(self, e, locals_) else None
        if isinstance(e, ast.Compare) and any(isinstance(x, ast.NoneLit) for x in e.operands):
            return self.none_test(e, locals_)
        if isinstance(e, ast.StrLit):
            self.r.error(e.span, "a quoted string stands only beside a choice hyper: `adjust_lr_fn == \"original\"`")
            return None
        if isinstance(e, ast.Compare):
            syms = [self.infer(x, locals_, guards) for x in e.operands]
            if any(s is None for s in syms):
                return None
            for x, s in zip(e.operands, syms):
                if s.type is not Type.NUM:
                    self.r.error(x.span, "comparisons take numbers; combine booleans with `and`, `or`, `not`")
                    return None
            return Sym(join(*(s.kind for s in syms)), Type.BOOL)
        if isinstance(e, ast.Ternary):
            return self.select(e.cond, e.then, e.other, e.span, locals_, guards)
        raise AssertionError(f"unhandled node {type(e).__name__}")

    def select(self, cond, then, other, span, locals_, guards) -> Sym | None:
        c = self.infer(cond, locals_, guards)
        per_tensor = c is not None and c.kind in PER_TENSOR   # only the side taken is evaluated
        self.per_tensor_control += [cond] if per_tensor else []
        a = self.infer(then, locals_, guards + _conjuncts(cond))
        b = self.infer(other, locals_, guards)
        del self.per_tensor_control[len(self.per_tensor_control) - per_tensor:]
        if c is None or a is None or b is None:
            return None
        if c.type is not Type.BOOL:
            self.r.error(cond.span, "the condition of `?:` must be a boolean")
            return None
        if a.type is not b.type:
            self.r.error(span, f"both branches of `?:` must have one type, not {a.type.value} and {b.type.value}")
            return None
        return Sym(join(c.kind, a.kind, b.kind), a.type)

    def none_test(self, e: ast.Compare, locals_) -> Sym | None:
        """`h != none` / `h == none` on an optional hyper (or a tuple entry `none` by default): a host boolean."""
        names = [x for x in e.operands if not isinstance(x, ast.NoneLit)]
        if len(names) == 1 and isinstance(names[0], ast.Index) and len(e.operands) == 2 and e.ops[0] in ("==", "!="):
            h = self.hypers.get(names[0].target.id)
            if h is not None and names[0].index in h.optional_entries:
                return Sym(Kind.HOST, Type.BOOL)
            ref = f"{names[0].target.id}[{names[0].index}]"
            self.r.error(e.span, f"'{ref}' is never none: only a tuple entry written `none` in the hyper's default "
                                 "is optional")
            return None
        h = self.hypers.get(names[0].id) if len(names) == 1 and isinstance(names[0], ast.Name) else None
        if len(e.operands) != 2 or e.ops[0] not in ("==", "!=") or h is None or names[0].id in locals_:
            self.r.error(e.span, "`none` stands only beside an optional hyper: `h != none` or `h == none`")
            return None
        if not h.optional:
            self.r.error(e.span, f"'{h.name}' is never none: only a hyper declared `= none` or `= <default> or none` "
                                 "is optional")
            return None
        return Sym(Kind.HOST, Type.BOOL)

    def name(self, e: ast.Name, locals_, guards) -> Sym | None:
        n = e.id
        if n in locals_:
            if locals_[n].type is None:
                return None
            return Sym(locals_[n].kind, locals_[n].type)
        if n in CONSTANTS:
            return Sym(Kind.CONST, Type.NUM)
        if n == INITIAL_LR and not self.in_update:
            self.r.error(e.span, f"'{INITIAL_LR}' can be read only in `update`; a declaration's condition runs "
                                 "when the group is made, where it is 'lr' itself")
            return None
        if n == INITIAL_LR:
            lr = self.hypers.get("lr")
            if lr is None or lr.optional or lr.is_tuple:
                self.r.error(e.span, f"'{INITIAL_LR}' is the param group's lr at construction; it needs a hyper "
                                     f"'lr' that is one number, not optional"
                             + ("" if lr is None else f" ('lr' here is {'optional' if lr.optional else 'a tuple'})"))
                return None
            return Sym(Kind.HOST, Type.NUM)
        if (n in ("grad", "step") or n in self.inputs) and self.in_mode:
            self.r.error(e.span, f"`on {self.in_mode}` runs in optimizer.{self.in_mode}(), outside step(): it has "
                                 f"no '{n}' (read param, states, hypers and flags)")
            return None
        if n in INPUTS:
            if n in ("param", "grad"):
                return Sym(Kind.TENSOR, Type.NUM)
            return Sym(Kind.TENSOR_SCALAR, Type.NUM)   # step, numel, ndim, channel_numel: per tensor, on the host
        if n in self.states:
            s = self.states[n]
            self.require_guard(s, e.span, guards)
            if s.shape == "scalar":
                return Sym(Kind.REDUCED if n in self.device_scalars else Kind.TENSOR_SCALAR, Type.NUM)
            if s.shape == "group":
                return Sym(Kind.HOST, Type.NUM)
            return Sym(SHAPED_STATE_KIND.get(s.shape, Kind.TENSOR), Type.NUM)
        if n in self.hypers and self.hypers[n].choices:
            misread(self, e)
            return None
        if n in self.hypers:
            if self.hypers[n].is_tuple:
                self.r.error(e.span, f"'{n}' is a tuple; use one entry, e.g. {n}[0]")
                return None
            if self.hypers[n].optional and not self.none_guarded(n, guards):
                why = self.hoisted(lambda outer: self.none_guarded(n, outer), f"`if {n} != none {{ ... }}`")
                self.r.error(e.span, f"'{n}' may be none; use it inside `if {n} != none {{ ... }}` or `{n} != none ? ... : ...`{why}")
                return None
            return Sym(Kind.HOST, Type.NUM)
        if n in self.flags:
            return Sym(Kind.HOST, Type.BOOL)
        if n in SCOPES:
            self.r.error(e.span, f"'{n}' is a reduction scope: the last argument of a reduction, e.g. norm(x, {n})")
            return None
        if n in FUNCTIONS or n in STATE_PREDICATES or n in REDUCTION_FUNCTIONS:
            self.r.error(e.span, f"'{n}' is a function; call it, e.g. {n}(...)")
            return None
        options = {*locals_, *INPUTS, *self.states, *self.hypers, *self.flags, *CONSTANTS, INITIAL_LR}
        self.r.error(e.span, f"unknown name '{n}'{_did_you_mean(n, options)}")
        return None

    def none_guarded(self, name: "str | ast.Index", guards) -> bool:
        """Whether a guard says optional hyper `name` (or tuple entry `h[i]`) is given: `name != none`."""
        leaf = ast.Name if isinstance(name, str) else ast.Index
        return any(isinstance(g, ast.Compare) and g.ops == ("!=",) and len(g.operands) == 2
                   and {type(x) for x in g.operands} == {leaf, ast.NoneLit}
                   and any((x.id == name) if isinstance(name, str) else x == name
                           for x in g.operands if isinstance(x, leaf)) for g in guards)

    def reduction(self, e: ast.Call, locals_, guards) -> Sym | None:
        """sum/mean/norm/rms/amax(x[, scope]), dot(x, y[, scope]): one value per tensor (the default
        scope), per output channel, or per param group."""
        _, arity = REDUCTION_FUNCTIONS[e.func]
        args = list(e.args)
        scope = "tensor"
        if len(args) == arity + 1 and isinstance(args[-1], ast.Name) and args[-1].id in SCOPES:
            scope = args.pop().id
        elif len(args) == arity + 1:
            self.r.error(e.args[-1].span, f"the last argument of {e.func}() is its scope: one of {', '.join(SCOPES)}")
            return None
        if len(args) != arity:
            self.r.error(e.span, f"{e.func}() takes {arity} argument{'s' if arity != 1 else ''} and an optional scope "
                                 f"({', '.join(SCOPES)}), got {len(e.args)} argument{'s' if len(e.args) != 1 else ''}")
            return None
        # Every path computes a reduction before the expression around it (a value of its own, a
        # barrier on the fused path): only the `if`s around the statement, and the operand's own
        # `and`s and `?:`s, guard what its operand reads
        outer, self.reduction_at = self.reduction_at, (e.func, guards)
        try:
            syms = [self.infer(a, locals_, list(self.statement_guards)) for a in args]
        finally:
            self.reduction_at = outer
        if any(s is None for s in syms):
            return None
        for a, s in zip(args, syms):
            if s.type is not Type.NUM:
                self.r.error(a.span, f"arguments of {e.func}() must be numbers")
                return None
        if scope == "group" and self.per_tensor_control:
            at = self.per_tensor_control[-1].span
            self.r.error(e.span, f"{e.func}(…, group) is one value for the whole group, but under the per-tensor "
                                 f"condition at line {at.line}, column {at.col} only the tensors taking that "
                                 f"branch would compute it: compute it before the condition and use the value there")
            return None
        return Sym(scope_kind(scope, [s.kind for s in syms]), Type.NUM)

    def hoisted(self, satisfied, fix: str) -> str:
        """Inside a reduction's operand, where the guards outside the reduction would have done:
        why they do not, and what does."""
        if self.reduction_at is None or not satisfied(self.reduction_at[1]):
            return ""
        return (f" ({self.reduction_at[0]}() is computed before the expression around it, so an `and` or `?:` "
                f"outside it does not guard its operand: {fix})")

    def call(self, e: ast.Call, locals_, guards) -> Sym | None:
        if e.func in SHAPE_FUNCTIONS:
            d = dim_literal(e.args[0]) if len(e.args) == 1 else None
            if d is None or not -64 <= d <= 64:
                self.r.error(e.span, f"{e.func}() takes one dim, a whole number from -64 to 64: `{e.func}(1)`, "
                                     f"`{e.func}(-1)` (the last dim)")
                return None
            return Sym(Kind.TENSOR_SCALAR, Type.NUM)
        if e.func in REDUCTION_FUNCTIONS:
            return self.reduction(e, locals_, guards)
        if e.func in STATE_PREDICATES:
            if len(e.args) != 1 or not isinstance(e.args[0], ast.Name) or e.args[0].id not in self.states:
                self.r.error(e.span, f"{e.func}() takes the name of a state")
                return None
            s = self.states[e.args[0].id]
            if s.init != "empty":
                self.r.error(e.args[0].span, f"{e.func}({s.name}) is always false: '{s.name}' does not start `empty`")
            self.require_guard(s, e.args[0].span, guards)
            return Sym(Kind.TENSOR_SCALAR, Type.BOOL)
        if e.func not in FUNCTIONS:
            known = {name for table in FUNCTION_GROUPS.values() for name in table}
            listing = "; ".join(f"{group}: {', '.join(sorted(table))}" for group, table in FUNCTION_GROUPS.items())
            self.r.error(e.span, f"unknown function '{e.func}'{_did_you_mean(e.func, known)}; the functions are {listing}")
            for a in e.args:
                self.infer(a, locals_, guards)
            return None
        _, arity = FUNCTIONS[e.func]
        if len(e.args) != arity:
            self.r.error(e.span, f"{e.func}() takes {arity} argument{'s' if arity != 1 else ''}, got {len(e.args)}")
            return None
        if e.func == "where":
            return self.select(e.args[0], e.args[1], e.args[2], e.span, locals_, guards)
        syms = [self.infer(a, locals_, guards) for a in e.args]
        if any(s is None for s in syms):
            return None
        for a, s in zip(e.args, syms):
            if s.type is not Type.NUM:
                self.r.error(a.span, f"arguments of {e.func}() must be numbers")
                return None
        if e.func == "item":
            return item(self, e, syms[0])
        if e.func in MATRIX_FUNCTIONS:
            return matrix_op(self, e, syms, guards)
        return Sym(join(*(s.kind for s in syms)), Type.NUM)



def _assigned(stmts) -> set[str]:
    """Names assigned anywhere in `stmts` (nested blocks included)."""
    out: set[str] = set()
    stack = list(stmts)
    while stack:
        st = stack.pop()
        if isinstance(st, ast.Assign):
            out.add(st.target)
        else:
            stack.extend(st.then + st.other)
    return out


def _source(source: str, span: Span) -> str:
    lines = source.split("\n")
    if span.line != span.end_line or span.line > len(lines):
        return "its condition"
    return lines[span.line - 1][span.col - 1:span.end_col - 1]


def check(spec: ast.Spec) -> ast.Spec:
    Checker(spec).check()
    return spec
