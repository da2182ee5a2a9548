"""The IR interpreter (optdsl.interp) is the semantic oracle: every shipped spec, on every path
(loop, foreach, fused -- the Triton kernel in the interpreter on CPU), must agree with it
over many steps, to float32 tolerance. The interpreter runs each spec straight from its IR,
in float64, sharing nothing with the backends but the IR and the table of ops."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")   # before anything imports a kernel

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from optdsl.compiler import compile_ir  # noqa: E402
from optdsl.interp import Bounded, Interpreter, InterpError, Precision, run  # noqa: E402
from optdsl.registry import REGISTRY  # noqa: E402
from optdsl.resources import data_dir  # noqa: E402

STEPS = 25
FUSED_STEPS = 12     # the Triton interpreter costs ~5 ms per kernel program
SHAPES = [(7,), (3, 5), (1,), (33,)]
# float32 math over STEPS steps against float64: torch.testing's float32 rtol, an atol for values near 0
RTOL, ATOL = 2e-5, 2e-6


def _programs():
    out = {}
    for path in sorted(data_dir("specs").glob("*.opt")):
        program = compile_ir(path.read_text(encoding="utf-8"), path.name)
        out[program.name] = program
    return out


PROGRAMS = _programs()


def _combos(entry):
    """The first, a middle and the last combination of the entry's flag/hyper grid."""
    combos = entry.combos()
    return [combos[i] for i in sorted({0, len(combos) // 2, len(combos) - 1})]


CASES = [(name, i, combo) for name, entry in REGISTRY.items() if name in PROGRAMS
         for i, combo in enumerate(_combos(entry))]


def _split(program, values: dict):
    hyper_names = {h.name for h in program.hypers}
    flag_names = {f.name for f in program.flags}
    hypers = {k: v for k, v in values.items() if k in hyper_names}
    flags = {k: v for k, v in values.items() if k in flag_names}
    return hypers, flags


def _data(seed: int):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(np.float32).astype(np.float64) for s in SHAPES]
    grads = []
    for k in range(STEPS):
        row = [rng.standard_normal(s).astype(np.float32).astype(np.float64) for s in SHAPES]
        if k % 3 == 1:
            row[2] = None          # this tensor has no grad now and then: its step lags behind
        grads.append(row)
    return init, grads


def test_every_shipped_spec_has_a_registry_entry_to_check_it():
    assert set(PROGRAMS) <= set(REGISTRY), f"specs without a registry entry: {set(PROGRAMS) - set(REGISTRY)}"


@pytest.mark.parametrize("path", ["loop", "foreach", "fused"])
@pytest.mark.parametrize("name,index,combo", CASES, ids=[f"{n}-{i}" for n, i, _ in CASES])
def test_shipped_spec_matches_interpreter(name, index, combo, path):
    entry, program = REGISTRY[name], PROGRAMS[name]
    values = {**entry.base, **combo}
    hypers, flags = _split(program, values)
    init, grads = _data(hash((name, index)) % 2 ** 32)

    params = [torch.tensor(a, dtype=torch.float32) for a in init]
    opt = entry.make(params, combo, path)
    interp = Interpreter(program, hypers, flags)
    expected = [a.copy() for a in init]
    for k in range(FUSED_STEPS if path == "fused" else STEPS):
        for p, g in zip(params, grads[k]):
            p.grad = None if g is None else torch.tensor(g, dtype=torch.float32)
        opt.step()
        expected = interp.step(expected, grads[k])

    keys = {s.name: getattr(s, "storage_key", s.name) for s in program.states}
    for i, (p, want) in enumerate(zip(params, expected)):
        np.testing.assert_allclose(p.detach().double().numpy(), want, rtol=RTOL, atol=ATOL,
                                   err_msg=f"{name} {combo} {path}: param {i}")
        state = opt.state[p]
        mine = interp.state.get(i, {})
        if program.uses_step:
            assert float(state["step"]) == mine["step"], f"{name} {path}: step of tensor {i}"
        for s in program.states:
            got, want_state = state.get(keys[s.name]), mine.get(s.name)
            assert (got is None) == (want_state is None), f"{name} {path}: state {s.name} of tensor {i} exists in one only"
            if got is not None:
                np.testing.assert_allclose(got.detach().double().cpu().numpy(), want_state, rtol=RTOL, atol=ATOL,
                                           err_msg=f"{name} {combo} {path}: state {s.name} of tensor {i}")


# ---- the interpreter itself ----------------------------------------------------------------------

ADAM = (data_dir("specs") / "adam.opt").read_text()


def test_interpreter_matches_torch_adam_in_float64():
    program = compile_ir(ADAM, "adam.opt")
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s) for s in SHAPES]
    params = [torch.tensor(a, requires_grad=True) for a in init]
    opt = torch.optim.Adam(params, lr=0.01, amsgrad=True, weight_decay=0.1)
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]
    for k in range(STEPS):
        for p, g in zip(params, grads[k]):
            p.grad = torch.tensor(g)
        opt.step()
    out, _ = run(program, init, lambda k, i, p: grads[k][i], STEPS, hypers={"lr": 0.01, "weight_decay": 0.1},
                 flags={"amsgrad": True})
    for p, want in zip(params, out):
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-12, atol=1e-14)


def test_states_start_as_declared_and_empty_means_absent():
    program = compile_ir('''optimizer S "s"
hyper c = 0.25
flag on = false
state z = zeros
state n = -1.5
state h = c
state e = empty
state k : scalar = c
state off = zeros if on
update {
  k = k * 2
  z = z + 1
  param = param - 0.1 * (z + n + h + k)
}''', "s.opt")
    interp = Interpreter(program, hypers={"c": 0.5})
    out = interp.step([np.zeros(3)], [np.ones(3)])
    st = interp.state[0]
    assert "step" not in st          # the program never reads `step`: none is kept, as in generated code
    np.testing.assert_array_equal(st["z"], np.ones(3))
    np.testing.assert_array_equal(st["n"], np.full(3, -1.5))
    np.testing.assert_array_equal(st["h"], np.full(3, 0.5))
    assert st["k"] == 1.0 and np.ndim(st["k"]) == 0
    assert "e" not in st and "off" not in st
    np.testing.assert_allclose(out[0], -0.1 * (1 - 1.5 + 0.5 + 1.0))


def test_is_empty_and_lazy_selects():
    program = compile_ir('''optimizer E "e"
state m = empty
update {
  m = is_empty(m) ? grad : 0.5 * m + grad
  param = param - m
}''', "e.opt")
    interp = Interpreter(program)
    p = interp.step([np.zeros(2)], [np.ones(2)])
    np.testing.assert_array_equal(interp.state[0]["m"], np.ones(2))
    p = interp.step(p, [np.ones(2)])
    np.testing.assert_array_equal(interp.state[0]["m"], np.full(2, 1.5))
    np.testing.assert_array_equal(p[0], np.full(2, -2.5))


def test_reading_an_empty_state_is_an_interpreter_error():
    program = compile_ir('''optimizer R "r"
state m = empty
update { param = param - m }''', "r.opt")
    with pytest.raises(InterpError, match="absent"):
        Interpreter(program).step([np.zeros(2)], [np.ones(2)])


def test_requires_and_where_clauses_are_checked():
    program = compile_ir(ADAM, "adam.opt")
    with pytest.raises(ValueError, match="learning rate"):
        Interpreter(program, hypers={"lr": -1.0})


def test_grad_none_skips_the_tensor_and_its_step():
    program = compile_ir(ADAM, "adam.opt")
    interp = Interpreter(program)
    a, b = np.ones(2), np.ones(3)
    a2, b2 = interp.step([a, b], [np.ones(2), None])
    np.testing.assert_array_equal(b2, b)
    assert interp.state[0]["step"] == 1.0 and 1 not in interp.state
    interp.step([a2, b2], [np.ones(2), np.ones(3)])
    assert interp.state[0]["step"] == 2.0 and interp.state[1]["step"] == 1.0


def test_lerp_uses_torchs_two_branch_formula():
    from optdsl.interp import numpy_form
    from optdsl.ir import Op
    a, b = np.float64(1.0), np.float64(1e8)
    for w in (0.0, 0.3, 0.5, 0.7, 1.0):
        want = torch.lerp(torch.tensor(a), torch.tensor(b), w).item()
        assert numpy_form(Op.LERP)(a, b, w) == want


def test_bounds_hold_the_float32_result():
    """With bounds=True the interval around each value holds what a float32 backend computes."""
    program = compile_ir(ADAM, "adam.opt")
    interp = Interpreter(program, bounds=True)
    rng = np.random.default_rng(1)
    p32 = rng.standard_normal(100).astype(np.float32)
    g32 = rng.standard_normal(100).astype(np.float32)
    out = interp.step([p32.astype(np.float64)], [g32.astype(np.float64)], [Precision()])[0]
    assert isinstance(out, Bounded)
    t = torch.tensor(p32, requires_grad=True)
    t.grad = torch.tensor(g32)
    torch.optim.Adam([t], lr=1e-3).step()
    got = t.detach().double().numpy()
    assert np.all((out.lo <= got) & (got <= out.hi))
    assert np.all(out.hi - out.lo < 1e-5 * (1 + np.abs(out.x)))   # and it is tight


def test_bounds_mark_a_sign_on_its_boundary_as_unsettled():
    """x is exactly 0 in float64 but float32 rounding may leave it either side of 0: sign(x) is
    unsettled there, and a backend's -1, 0 or 1 is an allowed boundary mismatch, counted."""
    program = compile_ir('optimizer B "b"\nupdate {\n  x = grad * 0.1 * 3 - grad * 0.3\n'
                         '  param = param - 0.1 * sign(x)\n}\n', "b.opt")
    interp = Interpreter(program, bounds=True)
    grad = np.random.default_rng(2).standard_normal(50).astype(np.float32).astype(np.float64)
    out = interp.step([np.zeros(50)], [grad], [Precision()])[0]
    assert np.all(out.unc[np.abs(grad * 0.1 * 3 - grad * 0.3) < 1e-6])
    away = Interpreter(compile_ir('optimizer C "c"\nupdate { param = param - 0.1 * sign(grad + 10) }\n', "c.opt"),
                       bounds=True).step([np.zeros(50)], [grad], [Precision()])[0]
    assert not np.any(away.unc)
