"""`on train` / `on eval` blocks for a generated program, and the steps before which a case
switches to eval() and back (optdsl.modes). The blocks read param, the program's tensor states
and its hypers, and store param and tensor states that exist from the first step (not `empty`,
scalar or conditional ones): what the checker allows, by construction."""
from __future__ import annotations

from hypothesis import strategies as st

NUMBERS = ("0.5", "0.25", "0.9", "1.5", "-0.5", "2")


def mode_blocks(draw, gen) -> str:
    """Both blocks' text (the same in a program and its parenthesised twin: written in full)."""
    states = [s.name for s in gen.states if not s.scalar and s.init != "empty" and s.cond is None]
    hypers = [h.name for h in gen.given_hypers() if not h.is_tuple]
    local = gen.name_for("t")

    def number() -> str:
        if hypers and draw(st.integers(0, 3)) == 0:
            return f"(1 - {draw(st.sampled_from(hypers))})"
        return draw(st.sampled_from(NUMBERS))

    def statement() -> list[str]:
        forms = ["scale", "shift"] + (["lerp", "lerp", "fold", "swap", "norm"] if states else [])
        form = draw(st.sampled_from(forms))
        s = draw(st.sampled_from(states)) if states else None
        if form == "scale":
            return [f"param = (param * {number()})"]
        if form == "shift":
            return [f"param = (param + ({number()} * sign(param)))"]
        if form == "lerp":
            return [f"param = lerp(param, {s}, {number()})"]
        if form == "fold":
            return [f"{s} = (({s} * {number()}) + param)"]
        if form == "swap":   # a local holds one side (the store to param must not clobber it)
            return [f"{local} = param", f"param = {s}", f"{s} = {local}"]
        return [f"param = (param * (1 + (0.5 * tanh(norm({s})))))"]   # a reduction in a block

    lines = []
    for mode in draw(st.permutations(["train", "eval"])):
        body = [line for _ in range(draw(st.integers(0, 3))) for line in statement()]
        lines += [f"on {mode} {{"] + [f"  {line}" for line in body] + ["}"]
    return "\n".join(lines) + "\n"


def switch_steps(draw, steps: int) -> tuple[int, ...]:
    """The steps (1 .. steps-1) before which the case switches to eval() and back to train()."""
    return tuple(sorted(draw(st.sets(st.integers(1, max(1, steps - 1)), min_size=1, max_size=2))))
