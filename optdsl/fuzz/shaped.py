"""The fuzzer's reduced-shape states and axis reductions (optdsl.fuzz.programs.cases(shaped=p)): a
drawn program gains `: row`, `: column` and `: cover` states, some kept only where the param's
rank allows (`if ndim >= 2`), stored from reductions along an axis or per dim and read back
broadcast, at the top of its update; its params are redrawn with ranks 0 to 4. The statements
read only grad, param and the new states, so every program stays well-typed and its values
finite: the states stay nonnegative (means of squares, norms, largest magnitudes), every
division and rsqrt is of such a value plus a constant."""
from __future__ import annotations

from hypothesis import strategies as st

# params of rank 0 to 4 (a size-1 dim where broadcasting and a reduction meet)
SHAPES = ((3, 5), (2, 3, 4), (2, 3, 2, 2), (7,), (1, 1), (4, 1, 3), (), (1, 6), (33,), (5, 1))
SCOPES = ("row", "column", "cover")
STEP = ("0.01", "0.05", "0.1")


def declare_shaped(draw, case, gen) -> None:
    """Reduced-shape states and their statements added to `case` (its text and twin), its
    groups' shapes redrawn."""
    decls, body = [], []
    for i in range(draw(st.integers(1, 3))):
        scope = draw(st.sampled_from(SCOPES))
        name = gen.name_for(f"{scope[:3]}{i}")
        init = draw(st.sampled_from(("zeros", "zeros", "0.5", "1")))
        # a row or column state kept on matrices only, as Adafactor's; a cover on tensors with a dim
        cond = draw(st.sampled_from((None, "ndim >= 2" if scope != "cover" else "ndim >= 1")))
        decls.append(f"state {name} : {scope} = {init}" + (f" if {cond}" if cond else ""))
        stmts = [f"{name} = {_store(draw, name, scope)}", f"param = {_use(draw, name, scope)}"]
        if cond:
            other = [f"param = (param - ({draw(st.sampled_from(STEP))} * sign(grad)))"] if draw(st.booleans()) else []
            body += [f"if {cond} {{"] + [f"  {s}" for s in stmts] + (["} else {"] + [f"  {s}" for s in other] if other else []) + ["}"]
        else:
            body += stmts
    if draw(st.booleans()):   # an axis reduction read where it is made, into a local
        scope, local = draw(st.sampled_from(SCOPES)), gen.name_for("ax")
        body += [f"{local} = {draw(st.sampled_from(('amax', 'rms', 'mean')))}(grad, {scope})",
                 f"param = (param - ((0.01 * grad) / (abs({local}) + 1)))"]
    case.text = _insert(case.text, decls, body)
    case.twin = _insert(case.twin, decls, body)   # type: ignore[attr-defined]
    for group in case.groups:
        group.shapes = [draw(st.sampled_from(SHAPES)) for _ in group.shapes]
    # the fused backends refuse these programs (optdsl.plan.fused_refusal; tests/test_factored.py)
    case.paths = tuple(path for path in case.paths if path != "fused")


def _store(draw, name: str, scope: str) -> str:
    """A new value for state `name` (nonnegative, as the state is)."""
    forms = [f"lerp({name}, mean((grad * grad), {scope}), 0.1)",
             f"max(({name} * 0.9), amax(grad, {scope}))",
             f"((0.5 * {name}) + (0.5 * rms(grad, {scope})))",
             f"(norm(grad, {scope}) ^ 2)"]
    if scope == "cover":   # read elementwise (the min over its accumulators), then reduced again: SM3's
        forms.append(f"max({name}, amax(({name} + (grad * grad)), cover))")
    if scope == "row":
        forms.append(f"lerp({name}, (sum((grad * grad), row) / size(-1)), 0.2)")
    return draw(st.sampled_from(forms))


def _use(draw, name: str, scope: str) -> str:
    step = draw(st.sampled_from(STEP))
    forms = [f"(param - (({step} * grad) * rsqrt(({name} + 0.01))))",
             f"(param - ({step} * clamp({name}, -1, 1)))",
             f"(param - (({step} * grad) / (sqrt({name}) + 0.1)))"]
    if scope == "row":   # a matrix's mean of its row state, as Adafactor's denominator
        forms.append(f"(param - (({step} * grad) / (sqrt(max(mean({name}, column), 0.001)) + 0.1)))")
    return draw(st.sampled_from(forms))


def _insert(text: str, decls: list[str], body: list[str]) -> str:
    """`decls` before the update block, `body` at its top (the text's own line ending)."""
    nl = "\r\n" if "\r\n" in text else "\n"
    at = text.index("update {")
    head, rest = text[:at], text[at + len("update {"):]
    return head + "".join(d + nl for d in decls) + "update {" + nl + "".join("  " + b + nl for b in body) + rest.lstrip("\r\n")
