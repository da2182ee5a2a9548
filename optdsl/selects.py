"""If-conversion: a per-tensor `if` whose condition may be a tensor at run time, rewritten as
straight-line code whose results are picked with selects (`torch.where`).

A condition on `step`, a scalar state or a reduction is a Python value in eager mode, but a 0-d
tensor with `capturable=True` (the step lives on the device) or while torch.compile traces (the
step is a traced tensor). A Python `if` on it then reads the device back (a host sync, which a
CUDA graph cannot capture) or is a data-dependent branch (a torch.compile graph break). As
torch.optim's capturable paths do (RAdam's `torch.where(rho_t > 5, ...)`), the converted code
computes both branches and selects:

* every local a branch binds is renamed (`_if2_perturb`), so neither branch clobbers what the
  other reads, unless it is bound once in the whole program and not before the `if`;
* a store under the branch becomes a local of the value it would store, and reads of the
  target later in that branch read that local; after both branches, the target is stored
  once, `target = where(c, new, old)`: the branch not taken may compute NaN or inf (the
  sqrt of a negative), which the select discards, and never reaches a state;
* a local bound before the `if` or in both branches is merged the same way, under its own name;
* an `if` inside a converted branch on a host condition (a flag, a hyper, `ndim`) stays an
  `if`; each side binds the merged locals (a phi) so the code after it reads one name.

The select conditions are locals named `_if<k>`; emitters render a WHERE on one as
`_rt.where(c, a, b)` (torch.where for a tensor condition, the Python choice for a bool), see
`is_select`. The eager, non-capturable paths keep the `if` as it is (bit-identical to
torch.optim); emitters use these statements where the condition may be a tensor."""
from __future__ import annotations

from collections import Counter
from typing import Callable

from .ir import REDUCE, If, Kind, Let, Op, Program, Stmt, Store, Type, Value, apply, rebuild, join, walk_stmts, walk_values

SELECT_PREFIX = "_if"


def is_select(v: Value) -> bool:
    """A WHERE made by if-conversion: its condition is a `_if<k>` local."""
    c = v.args[0] if v.op is Op.WHERE else None
    return c is not None and c.op is Op.VAR and str(c.arg).startswith(SELECT_PREFIX) and str(c.arg)[3:].isdigit()


def condition_may_be_tensor(p: Program) -> Callable[[Value], bool]:
    """Whether an `if` condition may be a 0-d tensor at run time: one on a reduction, or per-tensor
    host math reading `step` or a scalar state (a shape or `is_empty` condition never is)."""
    from .emit.host import may_be_tensor, tensor_capable
    names = tensor_capable(p)

    def test(c: Value) -> bool:
        if c.kind in (Kind.REDUCED, Kind.CHANNEL):
            return True
        return c.kind is Kind.TENSOR_SCALAR and may_be_tensor(c, names)
    return test


def convertible(s: If, p: Program) -> bool:
    """What the conversion does not cover, left a Python `if`: under the branch, a store to an
    `empty` state (its old value may be None), a read or store of a conditional state (`state s
    = zeros if f`: None where f is false, which the condition may be what guards), or a group
    reduction (its parts would count tensors that did not take the branch)."""
    conditional = {st.name for st in p.states if st.cond is not None}
    stored = stored_before(p.body, s)
    for x in walk_stmts((s,)):
        if isinstance(x, Store) and x.target != "param" and p.state(x.target).init == "empty" \
                and x.target not in stored:
            return False
        if isinstance(x, Store) and x.target in conditional:
            return False
        if not isinstance(x, If) and any(n.op is Op.STATE and n.arg in conditional for n in walk_values(x.value)):
            return False
        if isinstance(x, If) and any(n.op is Op.STATE and n.arg in conditional for n in walk_values(x.cond)):
            return False
        if isinstance(x, Let) and any(n.op in REDUCE and n.arg == "group" for n in walk_values(x.value)):
            return False
    return True


def stored_before(body: tuple[Stmt, ...], at: If) -> frozenset[str]:
    """The `empty` states surely stored (so not None) when `at` runs: stored on every path
    before it, or by an `if is_empty(x) { ... }` that stores x (wanting a value only when empty)."""
    bound_once = Counter(x.name for x in walk_stmts(body) if isinstance(x, Let))
    lets = {x.name: x.value for x in walk_stmts(body) if isinstance(x, Let) and bound_once[x.name] == 1}

    def tested(cond: Value) -> str | None:
        while cond.op is Op.VAR and cond.arg in lets:   # hoisted: `_h1 = is_empty(x)`, `if _h1`
            cond = lets[cond.arg]
        return cond.arg if cond.op is Op.IS_EMPTY else None

    def surely(stmts, known: frozenset[str]) -> tuple[frozenset[str], bool]:
        for x in stmts:
            if x is at:
                return known, True
            if isinstance(x, Store):
                known |= {x.target}
            elif isinstance(x, If):
                then, found = surely(x.then, known)
                if found:
                    return then, True
                other, found = surely(x.other, known)
                if found:
                    return other, True
                known = then & other
                if (emptied := tested(x.cond)) is not None and emptied in then:
                    known |= {emptied}
        return known, False
    known, found = surely(body, frozenset())
    return known if found else frozenset()


def _key_of(node: Value) -> tuple | None:
    if node.op is Op.VAR:
        return ("var", node.arg)
    if node.op is Op.STATE:
        return ("store", node.arg)
    if node.op is Op.PARAM:
        return ("store", "param")
    return None


def _original(key: tuple, like: Value | None, p: Program) -> Value:
    what, name = key
    if what == "var":
        return Value(Op.VAR, (), name, like.kind if like is not None else Kind.TENSOR, like.type if like is not None else Type.NUM)
    if name == "param":
        return Value(Op.PARAM, (), None, Kind.TENSOR, Type.NUM)
    return Value(Op.STATE, (), name, p.state(name).read_kind, Type.NUM)


def _bound_in(stmts) -> set[str]:
    """Locals a statement list binds that outlive it (both sides of an `if`)."""
    out: set[str] = set()
    for s in stmts:
        if isinstance(s, Let):
            out.add(s.name)
        elif isinstance(s, If):
            out |= _bound_in(s.then) & _bound_in(s.other)
    return out


class Selector:
    """Converts the `if`s of one statement list (see the module docstring)."""

    def __init__(self, p: Program, stmts: tuple[Stmt, ...], selectable: Callable[[Value], bool] | None = None,
                 scalar_stores: bool = True, host_only: bool = False):
        self.p = p
        self.scalar_stores = scalar_stores
        # host_only: the statements feed the per-tensor host function alone (optdsl/emit/host.py),
        # which computes the host math under a condition on a reduction either way (pure math; the
        # device code picks what it reads): such an `if` inside a converted branch is flattened
        # rather than given phis, which would be host values picked by a device condition
        self.host_only = host_only
        self.selectable = selectable or condition_may_be_tensor(p)
        self.counts = Counter(s.name for s in walk_stmts(p.body) if isinstance(s, Let)) \
            | Counter(s.name for s in walk_stmts(stmts) if isinstance(s, Let))
        self.k = 0

    def applies(self, s: If) -> bool:
        if not (self.selectable(s.cond) and convertible(s, self.p)):
            return False
        return self.scalar_stores or not _scalar_state_stores(s, self.p)

    def _flattens(self, s: If) -> bool:
        return unflattenable_host(s, self.p) is None

    def fresh(self, base: str = "") -> str:
        self.k += 1
        return f"{SELECT_PREFIX}{self.k}" + (f"_{base}" if base else "")

    # ---- the outer `if`: merges bind the original names and store into the real targets ----
    def convert(self, s: If, bound: set[str]) -> tuple[Stmt, ...]:
        env: dict[tuple, Value] = {}
        out = self._convert(s, env, set(bound), merge_names=True)
        stores = []
        for key, value in env.items():
            if key[0] == "store":
                stores.append(Store(key[1], value))
        return tuple(out + stores)

    def convert_all(self, stmts: tuple[Stmt, ...], bound: set[str] | None = None) -> tuple[Stmt, ...]:
        """Every convertible `if` in stmts replaced by its straight-line form."""
        bound = set(bound or ())
        out: list[Stmt] = []
        for s in stmts:
            if isinstance(s, If) and self.applies(s):
                out.extend(self.convert(s, bound))
                bound |= _bound_in(s.then) & _bound_in(s.other)
            elif isinstance(s, If):
                out.append(If(s.cond, self.convert_all(s.then, bound), self.convert_all(s.other, bound)))
                bound |= _bound_in(s.then) & _bound_in(s.other)
            else:
                out.append(s)
                if isinstance(s, Let):
                    bound.add(s.name)
        return tuple(out)

    # ---- inside a converted region -------------------------------------------------------
    def _sub(self, v: Value, env: dict) -> Value:
        def fn(node: Value) -> Value:
            key = _key_of(node)
            return env.get(key, node) if key is not None else node
        return rebuild(v, fn)

    def _merges(self, env: dict, sides: list[dict], bound: set[str]) -> list[tuple]:
        """(key, value per side) for each local or target a side changed that outlives the `if`."""
        keys: list[tuple] = []
        for side in sides:
            keys += [k for k in side if side[k] is not env.get(k) and k not in keys]
        out = []
        for key in keys:
            in_all = all(key in side for side in sides)
            if key[0] == "var" and key not in env and key[1] not in bound and not in_all:
                continue   # a local of one branch only
            like = next(side[key] for side in sides if key in side)
            base = env.get(key) or _original(key, like, self.p)
            values = [side.get(key, base) for side in sides]
            if all(x == values[0] for x in values):
                env[key] = values[0]
                continue
            out.append((key, values))
        return out

    def _convert(self, s: If, env: dict, bound: set[str], merge_names: bool) -> list[Stmt]:
        cond = self._sub(s.cond, env)
        c_name = self.fresh()
        c = Value(Op.VAR, (), c_name, cond.kind, Type.BOOL)
        out: list[Stmt] = [Let(c_name, cond)]
        then_env, other_env = dict(env), dict(env)
        out += self._block(s.then, then_env, bound)
        out += self._block(s.other, other_env, bound)
        for key, (t, o) in self._merges(env, [then_env, other_env], bound):
            merged = apply(Op.WHERE, c, t, o)
            name = key[1] if merge_names and key[0] == "var" else self.fresh(key[1])
            out.append(Let(name, merged))
            env[key] = Value(Op.VAR, (), name, merged.kind, merged.type)
        return out

    def _block(self, stmts, env: dict, bound: set[str]) -> list[Stmt]:
        out: list[Stmt] = []
        for s in stmts:
            if isinstance(s, Let):
                value = self._sub(s.value, env)
                keep = self.counts[s.name] == 1 and s.name not in bound and ("var", s.name) not in env
                name = s.name if keep else self.fresh(s.name)
                out.append(Let(name, value))
                env[("var", s.name)] = Value(Op.VAR, (), name, value.kind, value.type)
            elif isinstance(s, Store):
                value = self._sub(s.value, env)
                name = self.fresh(s.target)
                out.append(Let(name, value))
                env[("store", s.target)] = Value(Op.VAR, (), name, value.kind, value.type)
            elif self.selectable(s.cond):
                out += self._convert(s, env, bound | {k[1] for k in env if k[0] == "var"}, merge_names=False)
            elif self.host_only and s.cond.kind.on_device and self._flattens(s):
                out += self._block(s.then, env, bound)
                out += self._block(s.other, env, bound)
            else:   # a host condition: stays an `if`; each side binds the merged names
                cond = self._sub(s.cond, env)
                inner = bound | {k[1] for k in env if k[0] == "var"}
                then_env, other_env = dict(env), dict(env)
                then = self._block(s.then, then_env, inner)
                other = self._block(s.other, other_env, inner)
                for key, (t, o) in self._merges(env, [then_env, other_env], inner):
                    name = self.fresh(key[1])
                    then.append(Let(name, t))
                    other.append(Let(name, o))
                    env[key] = Value(Op.VAR, (), name, join(t.kind, o.kind), t.type)
                out.append(If(cond, tuple(then), tuple(other)))
        return out


def _scalar_state_stores(s: If, p: Program) -> list[str]:
    return [x.target for x in walk_stmts(s.then + s.other)
            if isinstance(x, Store) and x.target != "param" and p.state(x.target).kind is Kind.TENSOR_SCALAR]


def unflattenable_host(s: If, p: Program) -> str | None:
    """Why the host math under `s`, an `if` on a device condition (a reduction), cannot be computed
    on both sides regardless of the side the device takes, or None where it can: no host local is
    bound on both sides (which one the code after reads depends on the device) and no scalar
    state is stored under it (the host would store it whichever side is taken)."""
    def host_lets(stmts) -> set[str]:
        return {x.name for x in walk_stmts(stmts) if isinstance(x, Let) and x.value.kind.on_host}
    both = host_lets(s.then) & host_lets(s.other)
    if both:
        return (f"'{sorted(both)[0]}' is host math bound on both sides of an `if` on a reduction: "
                "not supported yet; use a select (`c ? a : b`)")
    stored = _scalar_state_stores(s, p)
    if stored:
        return (f"scalar state '{stored[0]}' is stored from host math under an `if` on a reduction: "
                "not supported yet; store a select (`c ? a : b`) instead")
    return None


def bound_after(s: If) -> set[str]:
    """Locals an `if` binds that are read after it: those both of its sides bind."""
    return _bound_in(s.then) & _bound_in(s.other)
