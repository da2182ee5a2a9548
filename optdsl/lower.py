"""Stage 3: checked AST -> IR.

Resolves names to IR leaves and builtins to Ops, turns hyper `where` clauses into
checks with torch's wording, and breaks aliasing: a local that still refers to a
state (or the parameter) when that state is overwritten in place gets a COPY."""
from __future__ import annotations

from . import ast
from .builtins import (BINARY_SYMBOLS, COMPARE_SYMBOLS, CONSTANTS, FUNCTIONS, INITIAL_LR, INPUTS, REDUCTION_FUNCTIONS,
                       SHAPE_FUNCTIONS, STATE_PREDICATES)
from .names import state_list_names
from .ir import (SHAPED_STATE_KIND, MODES, SCOPES, join, Kind, Let, Op, Program, Stmt, Store, Type, Value, apply, const, reduce,
                 FlagInfo, HyperInfo, If, StateInfo, walk_stmts, walk_values)

# torch.optim's wording for invalid hypers; `{}` is the offending value's source.
TORCH_MESSAGES = {
    ("lr", None): "Invalid learning rate: {}",
    ("eps", None): "Invalid epsilon value: {}",
    ("weight_decay", None): "Invalid weight_decay value: {}",
    ("momentum", None): "Invalid momentum value: {}",
    ("betas", 0): "Invalid beta parameter at index 0: {}",
    ("betas", 1): "Invalid beta parameter at index 1: {}",
}


def hyper_message(name: str, index: int | None) -> str:
    if (name, index) in TORCH_MESSAGES:
        return TORCH_MESSAGES[(name, index)]
    if index is None:
        return f"Invalid {name} value: {{}}"
    return f"Invalid {name} parameter at index {index}: {{}}"


def _conjuncts(e: ast.Expr) -> list[ast.Expr]:
    if isinstance(e, ast.Binary) and e.op == "and":
        return _conjuncts(e.left) + _conjuncts(e.right)
    return [e]


class Lowerer:
    def __init__(self, spec: ast.Spec):
        self.spec = spec
        self.hypers = {h.name: h for h in spec.hypers}
        self.flags = {f.name for f in spec.flags}
        self.states = {s.name: s for s in (*spec.states, *spec.input_states)}
        self.uses_step = False
        self.reads_initial_lr = False
        self.device_scalars: set[str] = set()   # scalar states stored from a reduction (see lower())

    # ---- expressions ------------------------------------------------------------
    def expr(self, e: ast.Expr, env: dict[str, Value]) -> Value:
        if isinstance(e, ast.Num):
            return const(e.value)
        if isinstance(e, ast.Bool):
            return const(e.value)
        if isinstance(e, ast.Name):
            n = e.id
            if n in env:
                return env[n]
            if n in CONSTANTS:
                return const(CONSTANTS[n])
            if n == INITIAL_LR:
                self.reads_initial_lr = True
                return Value(Op.HYPER, (), (INITIAL_LR, None), Kind.HOST, Type.NUM)
            if n in INPUTS:
                self.uses_step |= n == "step"
                kind = Kind.TENSOR if n in ("param", "grad") else Kind.TENSOR_SCALAR
                return Value(INPUTS[n], (), None, kind, Type.NUM)
            if n in self.states and self.states[n].shape == "group":
                return Value(Op.HYPER, (), (n, None), Kind.HOST, Type.NUM)
            if n in self.states:
                s = self.states[n]
                kind = SHAPED_STATE_KIND.get(s.shape) or self.state_kind(s)
                return Value(Op.STATE, (), n, kind, Type.NUM)
            if n in self.hypers:
                return Value(Op.HYPER, (), (n, None), Kind.HOST, Type.NUM)
            if n in self.flags:
                return Value(Op.FLAG, (), n, Kind.HOST, Type.BOOL)
            raise AssertionError(f"unresolved name {n!r} survived the checker")
        if isinstance(e, ast.Index):
            return Value(Op.HYPER, (), (e.target.id, e.index), Kind.HOST, Type.NUM)
        if isinstance(e, ast.Unary):
            return apply(Op.NEG if e.op == "-" else Op.NOT, self.expr(e.operand, env))
        if isinstance(e, ast.Binary):
            left, right = self.expr(e.left, env), self.expr(e.right, env)
            if e.op == "and" and left.kind < Kind.TENSOR and right.kind is Kind.TENSOR and self.reads_guarded(right):
                # `flag and m > 0` with state m kept only if flag: m must not be read where flag is false,
                # so this is `flag ? m > 0 : false`, which every backend evaluates one side of
                return apply(Op.WHERE, left, right, const(False))
            return apply(BINARY_SYMBOLS[e.op], left, right)
        if isinstance(e, ast.Compare) and any(isinstance(x, ast.StrLit) for x in e.operands):
            name = next(x.id for x in e.operands if isinstance(x, ast.Name))
            holds = Value(Op.CHOICE, (), (name, next(x.value for x in e.operands if isinstance(x, ast.StrLit))),
                          Kind.HOST, Type.BOOL)
            return holds if e.ops[0] == "==" else apply(Op.NOT, holds)
        if isinstance(e, ast.Compare) and any(isinstance(x, ast.NoneLit) for x in e.operands):
            ref = next(x for x in e.operands if not isinstance(x, ast.NoneLit))
            # IS_SET's arg: an optional hyper's name, or (name, index) for a tuple entry `none` by default
            given = Value(Op.IS_SET, (), ref.id if isinstance(ref, ast.Name) else (ref.target.id, ref.index),
                          Kind.HOST, Type.BOOL)
            return given if e.ops[0] == "!=" else apply(Op.NOT, given)
        if isinstance(e, ast.Compare):
            operands = [self.expr(x, env) for x in e.operands]
            out = None
            for (a, b), op in zip(zip(operands, operands[1:]), e.ops):
                c = apply(COMPARE_SYMBOLS[op], a, b)
                out = c if out is None else apply(Op.AND, out, c)
            return out  # type: ignore[return-value]
        if isinstance(e, ast.Ternary):
            return apply(Op.WHERE, self.expr(e.cond, env), self.expr(e.then, env), self.expr(e.other, env))
        if isinstance(e, ast.Call):
            if e.func in STATE_PREDICATES:
                return Value(STATE_PREDICATES[e.func], (), e.args[0].id, Kind.TENSOR_SCALAR, Type.BOOL)
            if e.func in SHAPE_FUNCTIONS:
                from .check_shapes import dim_literal
                return Value(SHAPE_FUNCTIONS[e.func], (), dim_literal(e.args[0]), Kind.TENSOR_SCALAR, Type.NUM)
            if e.func in REDUCTION_FUNCTIONS:
                op, arity = REDUCTION_FUNCTIONS[e.func]
                args, scope = list(e.args), "tensor"
                if len(args) == arity + 1:
                    scope = args.pop().id
                assert scope in SCOPES
                return reduce(op, scope, *(self.expr(a, env) for a in args))
            op, _ = FUNCTIONS[e.func]
            return apply(op, *(self.expr(a, env) for a in e.args))
        raise AssertionError(f"unhandled node {type(e).__name__}")

    def state_kind(self, s: ast.State) -> Kind:
        if s.shape != "scalar":
            return Kind.TENSOR
        return Kind.REDUCED if s.name in self.device_scalars else Kind.TENSOR_SCALAR

    def reads_guarded(self, v: Value) -> bool:
        """v reads a tensor state that exists only where its condition holds."""
        return any(n.op is Op.STATE and self.states[n.arg].cond is not None for n in walk_values(v))

    # ---- statements ---------------------------------------------------------------
    def block(self, stmts, env: dict[str, Value], names: dict[str, Value]) -> list[Stmt]:
        """`env` maps a local to the VAR that reads it; `names` maps it to its defining value (for alias tracking)."""
        out: list[Stmt] = []
        for st in stmts:
            if isinstance(st, ast.Assign):
                value = self.expr(st.value, env)
                t = st.target
                if t == "param" or t in self.states:
                    out.extend(self.break_aliases(t, names))
                    out.append(Store(t, value))
                else:
                    out.append(Let(t, value))
                    names[t] = value
                    env[t] = Value(Op.VAR, (), t, value.kind, value.type)
            else:
                cond = self.expr(st.cond, env)
                env_a, names_a = dict(env), dict(names)
                env_b, names_b = dict(env), dict(names)
                then = self.block(st.then, env_a, names_a)
                other = self.block(st.other, env_b, names_b)
                out.append(If(cond, tuple(then), tuple(other)))
                for n in set(env_a) | set(env_b):
                    a, b = env_a.get(n), env_b.get(n)
                    if a is not None and b is not None:
                        kind = join(a.kind, b.kind)
                        env[n] = Value(Op.VAR, (), n, kind, a.type)
                        # after the join a local may alias whatever either branch left in it
                        names[n] = apply(Op.WHERE, cond, names_a[n], names_b[n])
        return out

    def break_aliases(self, target: str, names: dict[str, Value]) -> list[Stmt]:
        copies = []
        for local, value in names.items():
            if target in _aliases(value):
                copies.append(Let(local, apply(Op.COPY, Value(Op.VAR, (), local, value.kind, value.type))))
                names[local] = Value(Op.COPY, (), None, value.kind, value.type)
        return copies

    # ---- declarations ---------------------------------------------------------------
    def hyper_info(self, h: ast.Hyper) -> HyperInfo:
        checks = []
        if h.where is not None:
            for c in _conjuncts(h.where):
                nodes = list(ast.walk(c))
                indexed = {id(x.target) for x in nodes if isinstance(x, ast.Index)}
                refs = sorted({(x.target.id, x.index) if isinstance(x, ast.Index) else (x.id, None)
                               for x in nodes if isinstance(x, ast.Index)
                               or (isinstance(x, ast.Name) and id(x) not in indexed)},
                              key=lambda r: (r[0] != h.name, r[0], -1 if r[1] is None else r[1]))
                name, index = refs[0] if refs else (h.name, None)
                checks.append((self.expr(c, {}), hyper_message(name, index), (name, index)))
        arity = len(h.default) if h.is_tuple else 0
        return HyperInfo(h.name, h.default, arity, tuple(checks), optional=h.optional,
                         optional_entries=h.optional_entries, choices=h.choices, choice_message=h.choice_message)

    def lower(self) -> Program:
        spec = self.spec
        all_states = (*spec.states, *spec.input_states)
        declared = {d.name for d in (*spec.hypers, *spec.flags, *all_states)}
        lists = state_list_names([s.name for s in all_states], declared | ast.assigned_names(spec.body))
        # a scalar state stored from a reduction lives on the device (a fixed point: reading it is a
        # device value, which may make other scalar states device ones)
        while True:
            self.uses_step = False
            stored = {st.target for st in walk_stmts(tuple(self.block(spec.body, {}, {})))
                      if isinstance(st, Store) and st.target in self.states
                      and self.states[st.target].shape == "scalar" and st.value.kind is Kind.REDUCED}
            if stored <= self.device_scalars:
                break
            self.device_scalars |= stored
        states = tuple(
            StateInfo(s.name, self.state_kind(s), s.init,
                      self.expr(s.cond, {}) if s.cond is not None else None,
                      key=s.key, list_name=lists[s.name], shape=s.shape if s.shape in SHAPED_STATE_KIND else "")
            for s in all_states if s.shape != "group")
        group_states = tuple(HyperInfo(s.name, float(s.init), 0, group_state=True)
                             for s in spec.states if s.shape == "group")
        requires = tuple((self.expr(r.cond, {}), r.message) for r in spec.requires)
        body = tuple(_drop_dead_copies(self.block(spec.body, {}, {})))
        group_update, body = _split_group_update(body, {h.name for h in group_states})
        by_name = {m.name: m for m in spec.modes}
        modes = tuple((name, tuple(_drop_dead_copies(self.block(by_name[name].body, {}, {}))))
                      for name in MODES if name in by_name)
        return Program(
            name=spec.name, doc=spec.doc,
            hypers=tuple(self.hyper_info(h) for h in spec.hypers) + group_states,
            group_update=group_update,
            flags=tuple(FlagInfo(f.name, f.default) for f in spec.flags),
            states=states, requires=requires, body=body,
            argument_order=_argument_order(spec),
            uses_step=self.uses_step or any(k.name == "step" for k in spec.keeps), source_file=spec.span.file,
            step_per_group=any(k.name == "step" and k.per == "group" for k in spec.keeps),
            reads_initial_lr=self.reads_initial_lr, modes=modes,
            inputs=tuple((i.name, i.estimator, i.args) for i in spec.inputs),
            sparse=" ".join(filter(None, (spec.sparse[0].how, spec.sparse[0].only))) if spec.sparse else "",
            step_as_int=any(k.name == "step" and k.as_ == "int" for k in spec.keeps),
        )


def _aliases(v: Value) -> set[str]:
    """Targets a local may share storage with (state names, 'param'): a bare reference, or either side of a host select."""
    if v.op is Op.STATE:
        return {str(v.arg)}
    if v.op is Op.PARAM:
        return {"param"}
    if v.op is Op.WHERE and v.args[0].kind < Kind.TENSOR:
        return _aliases(v.args[1]) | _aliases(v.args[2])
    return set()


def _split_group_update(body: tuple[Stmt, ...], group_states: set[str]) -> tuple[tuple[Stmt, ...], tuple[Stmt, ...]]:
    """(the group update, the body without its stores): the statements up to the last store to a
    group state, which the checker keeps to top-level host Lets and such stores."""
    last = max((i for i, s in enumerate(body) if isinstance(s, Store) and s.target in group_states), default=-1)
    prelude = body[:last + 1]
    rest = tuple(s for s in prelude if not isinstance(s, Store)) + body[last + 1:]
    return prelude, rest


def _drop_dead_copies(stmts: list[Stmt]) -> list[Stmt]:
    """A COPY is needed only if its local is read after the copy."""
    from .ir import walk_stmts, stmt_values
    flat = list(walk_stmts(tuple(stmts)))

    def read_after(local: str, position: int) -> bool:
        for s in flat[position + 1:]:
            if any(n.op is Op.VAR and n.arg == local for v in stmt_values(s) for n in walk_values(v)):
                return True
        return False

    def keep(s: Stmt) -> bool:
        if isinstance(s, Let) and s.value.op is Op.COPY and s.value.args[0].op is Op.VAR:
            return read_after(s.name, next(i for i, f in enumerate(flat) if f is s))
        return True

    def filt(block) -> list[Stmt]:
        out = []
        for s in block:
            if isinstance(s, If):
                out.append(If(s.cond, tuple(filt(s.then)), tuple(filt(s.other))))
            elif keep(s):
                out.append(s)
        return out
    return filt(stmts)


def lower(spec: ast.Spec) -> Program:
    return Lowerer(spec).lower()


def _argument_order(spec: ast.Spec) -> tuple[str, ...]:
    """The hypers and flags in the order the spec's text declares them (a composition's: the text it
    expands to, the wrapped spec's declarations first)."""
    return tuple(d.name for d in sorted((*spec.hypers, *spec.flags), key=lambda d: (d.span.line, d.span.col)))
