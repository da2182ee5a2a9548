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
from optdsl.interp import Bounded, Interpreter, InterpError, Precision, SparseGrad, run  # noqa: E402
from optdsl.plan import reads_whole_matrix  # noqa: E402
from optdsl.registry import REGISTRY, sparse_gradient  # noqa: E402
from optdsl.resources import data_dir  # noqa: E402
from optdsl.state_shapes import kept_state  # noqa: E402

STEPS = 25
FUSED_STEPS = 8      # the Triton interpreter costs ~5 ms per kernel program; a tensor still skips 3 of them
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
# the fused path (the Triton interpreter: seconds per step for the channel-reduction specs) on the
# last combination only, the one with most flags on; tests/test_fuzz.py and verify cover the rest
PATH_CASES = [(name, i, combo, path) for name, i, combo in CASES for path in ("loop", "foreach", "fused")
              if REGISTRY[name].supports(path) and (path != "fused" or i == len(_combos(REGISTRY[name])) - 1)]


def _split(program, values: dict):
    hyper_names = {h.name for h in program.hypers}
    flag_names = {f.name for f in program.flags}
    hypers = {k: v for k, v in values.items() if k in hyper_names}
    flags = {k: v for k, v in values.items() if k in flag_names}
    return hypers, flags


def _data(seed: int, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(np.float32).astype(np.float64) for s in shapes]
    grads = []
    for k in range(STEPS):
        row = [rng.standard_normal(s).astype(np.float32).astype(np.float64) for s in shapes]
        if k % 3 == 1:
            row[2] = None          # this tensor has no grad now and then: its step lags behind
        grads.append(row)
    return init, grads


def test_every_shipped_spec_has_a_registry_entry_to_check_it():
    assert set(PROGRAMS) <= set(REGISTRY), f"specs without a registry entry: {set(PROGRAMS) - set(REGISTRY)}"


@pytest.mark.parametrize("name,index,combo,path", PATH_CASES, ids=[f"{n}-{i}-{p}" for n, i, _, p in PATH_CASES])
def test_shipped_spec_matches_interpreter(name, index, combo, path):
    entry, program = REGISTRY[name], PROGRAMS[name]
    values = {**entry.base, **combo}
    hypers, flags = _split(program, values)
    init, grads = _data(hash((name, index)) % 2 ** 32, entry.shapes_for(SHAPES))
    # newton_schulz runs in bfloat16 on the eager paths and in float64 in the interpreter: 2^-8 of each
    # update (an lr-sized step), over the run; the states it does not reach stay at the usual tolerance
    rtol, atol = (2e-2, 2e-2) if reads_whole_matrix(program) else (RTOL, ATOL)

    params = [torch.tensor(a, dtype=torch.float32, requires_grad=entry.objective is not None) for a in init]
    opt = entry.make(params, combo, path)
    interp = Interpreter(program, hypers, flags)
    expected = [a.copy() for a in init]
    for k in range(FUSED_STEPS if path == "fused" else STEPS):
        if entry.objective is not None:   # graph gradients; the interpreter reads the runtime's estimates as given
            for p in params:
                p.grad = None
            entry.objective(params, k).backward(create_graph=True)
            grads[k] = [p.grad.detach().double().numpy() for p in params]
        if entry.sparse_grads:   # sparse rows, uncoalesced; the interpreter reads torch's coalesce of them
            gen = torch.Generator().manual_seed(hash((name, index, k)) % 2 ** 32)
            sparse = [None if g is None else sparse_gradient(g.shape, gen) for g in grads[k]]
            grads[k] = [None if g is None else SparseGrad.from_torch(g.coalesce()) for g in sparse]
        for i, (p, g) in enumerate(zip(params, grads[k] if entry.objective is None else ())):
            p.grad = None if g is None else sparse[i] if entry.sparse_grads else torch.tensor(g, dtype=torch.float32)
        opt.step()
        for name, _, _ in program.inputs:
            for i, p in enumerate(params):
                interp.state.setdefault(i, {})[name] = opt.state[p][name].detach().double().numpy()
        expected = interp.step(expected, grads[k])

    keys = {s.name: getattr(s, "storage_key", s.name) for s in program.states}
    for i, (p, want) in enumerate(zip(params, expected)):
        np.testing.assert_allclose(p.detach().double().numpy(), want, rtol=rtol, atol=atol,
                                   err_msg=f"{name} {combo} {path}: param {i}")
        state = opt.state[p]
        mine = interp.state.get(i, {})
        if program.uses_step:
            assert float(state["step"]) == mine["step"], f"{name} {path}: step of tensor {i}"
        for s in program.states:
            # a cover state: its accumulators, one by one
            got, want_state = kept_state(state, keys[s.name], s.shape, p), interp.stored(i, s.name)
            assert (got is None) == (want_state is None), f"{name} {path}: state {s.name} of tensor {i} exists in one only"
            if got is not None:
                for j, (t, w) in enumerate(zip(*((got, want_state) if s.shape == "cover" else ([got], [want_state])))):
                    np.testing.assert_allclose(t.detach().double().cpu().numpy(), w, rtol=RTOL, atol=ATOL,
                                               err_msg=f"{name} {combo} {path}: state {s.name} ({j}) of tensor {i}")


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
    from optdsl.diagnostics import CompileError
    from optdsl.lower import lower
    from optdsl.parse import parse
    source = '''optimizer R "r"
state m = empty
update { param = param - m }'''
    with pytest.raises(CompileError, match="starts `empty`"):   # the checker refuses it ...
        compile_ir(source, "r.opt")
    program = lower(parse(source, "r.opt"))                     # ... and the oracle, given it unchecked
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


# ---- reductions, shape inputs, optional hypers --------------------------------------------------

REDUCTION_NUMPY = {
    "sum": lambda x, y: np.sum(x), "mean": lambda x, y: np.mean(x), "norm": lambda x, y: np.sqrt(np.sum(x * x)),
    "rms": lambda x, y: np.sqrt(np.mean(x * x)), "amax": lambda x, y: np.max(np.abs(x), initial=0.0),
    "dot": lambda x, y: np.sum(x * y),
}
RED_SHAPES = [(3, 4), (5,), (), (2, 3, 2), (1,)]


def _reduction_program(op: str, scope: str) -> str:
    operands = "grad, param" if op == "dot" else "grad"
    scope_arg = "" if scope == "tensor" else f", {scope}"
    return f"optimizer R\nupdate {{ param = {op}({operands}{scope_arg}) }}\n"


def _channelwise(fn, x, y):
    c = x.shape[0] if x.ndim else 1
    xs, ys = x.reshape(c, -1), y.reshape(c, -1)
    out = np.array([fn(a, b) for a, b in zip(xs, ys)])
    return out.reshape((-1,) + (1,) * (x.ndim - 1)) if x.ndim else out.reshape(())


@pytest.mark.parametrize("scope", ["tensor", "channel", "group"])
@pytest.mark.parametrize("op", sorted(REDUCTION_NUMPY))
def test_reductions_match_numpy(op, scope):
    """Every reduction in every scope against a direct NumPy computation, on 3 tensors (one lacks a grad)."""
    program = compile_ir(_reduction_program(op, scope), "r.opt")
    rng = np.random.default_rng(7)
    params = [rng.standard_normal(s) for s in RED_SHAPES]
    grads = [rng.standard_normal(s) for s in RED_SHAPES]
    grads[4] = None                     # no grad: not stepped, and not part of the group
    fn = REDUCTION_NUMPY[op]
    with_grad = [(p, g) for p, g in zip(params, grads) if g is not None]
    if scope == "group":
        flat_g = np.concatenate([g.reshape(-1) for _, g in with_grad])
        flat_p = np.concatenate([p.reshape(-1) for p, _ in with_grad])
        group_value = fn(flat_g, flat_p)
    out = Interpreter(program).step(params, grads)
    for p, g, got in zip(params, grads, out):
        if g is None:
            np.testing.assert_array_equal(got, p)
            continue
        if scope == "tensor":
            want = fn(g, p)
        elif scope == "channel":
            want = _channelwise(fn, g, p)
        else:
            want = group_value
        np.testing.assert_allclose(got, np.broadcast_to(want, p.shape), rtol=1e-12, atol=1e-12)
    # the bounds hold the exact value and are tight
    bounded = Interpreter(program, bounds=True).step(params, grads, [Precision()] * len(params))
    for b, want in zip(bounded, out):
        assert np.all((b.lo <= want) & (want <= b.hi)) and not np.any(b.unc)
        assert np.all(b.hi - b.lo <= 1e-4 * (1 + np.abs(want)))


@pytest.mark.parametrize("shape", [(0,), (4, 0)])
def test_reductions_of_zero_size_tensors_are_torchs(shape):
    """sum/norm/dot/amax of no elements are 0, mean/rms NaN: torch's values."""
    for op in sorted(REDUCTION_NUMPY):
        operands = "grad, param" if op == "dot" else "grad"
        program = compile_ir(f"optimizer Z\nstate s : scalar = 1\nupdate {{\n  s = {op}({operands})\n"
                             f"  param = param + {op}({operands}, channel)\n}}\n", "z.opt")
        interp = Interpreter(program)
        out = interp.step([np.zeros(shape), np.ones(3)], [np.zeros(shape), np.ones(3)])
        assert out[0].shape == shape
        want = torch.tensor(float("nan") if op in ("mean", "rms") else 0.0)
        t = torch.zeros(shape)
        # (torch.linalg.vector_norm(t, inf) raises on no elements; amax of none is 0 in the language)
        got_torch = {"sum": torch.sum(t), "mean": torch.mean(t), "norm": torch.linalg.vector_norm(t),
                     "rms": torch.mean(t * t).sqrt(), "amax": torch.tensor(0.0), "dot": torch.sum(t * t)}[op]
        assert torch.equal(got_torch.isnan(), want.isnan()) and (want.isnan() or got_torch == want)
        s = interp.state[0]["s"]
        assert (np.isnan(s) and want.isnan()) or s == float(want), (op, s)
        # a group reduction over an empty tensor and a full one: the empty one adds nothing
        group = compile_ir(f"optimizer G\nupdate {{ param = {op}({operands}, group) }}\n", "g.opt")
        full = np.arange(3.0)
        got = Interpreter(group).step([np.zeros(shape), full], [np.zeros(shape), full])[1]
        np.testing.assert_allclose(got, np.full(3, REDUCTION_NUMPY[op](full, full)))


def test_nested_reductions_and_group_reductions_of_group_reductions():
    program = compile_ir('''optimizer N
state s : scalar = 0
update {
  c = grad - mean(grad)
  u = c / (norm(c, group) + 1)
  w = u * sum(abs(u) * amax(grad, group), group)
  v = w - rms(w, channel)
  s = dot(v, grad) / numel
  param = param - 0.1 * v + s
}
''', "n.opt")
    rng = np.random.default_rng(3)
    shapes = [(3, 4), (5,), ()]
    params = [rng.standard_normal(s) for s in shapes]
    grads = [rng.standard_normal(s) for s in shapes]
    cs = [g - g.mean() for g in grads]
    gnorm = np.sqrt(sum((c * c).sum() for c in cs))
    us = [c / (gnorm + 1) for c in cs]
    gamax = max(np.abs(g).max() for g in grads)
    total = sum((np.abs(u) * gamax).sum() for u in us)
    interp = Interpreter(program)
    out = interp.step(params, grads)
    for i, (p, g, u) in enumerate(zip(params, grads, us)):
        w = u * total
        v = w - _channelwise(lambda a, b: np.sqrt(np.mean(a * a)), w, w)
        s = np.sum(v * g) / g.size
        np.testing.assert_allclose(out[i], p - 0.1 * v + s, rtol=1e-12, atol=1e-12)
        assert interp.state[i]["s"] == pytest.approx(s, rel=1e-12, abs=1e-15)
    phases = interp.phases()
    assert len(phases.phases) == 3     # norm(c, group) and amax(grad, group); sum(.., group) after them; the update


def test_group_reduction_across_three_tensors_in_bounds_holds_float32_and_bfloat16():
    """norm(grad, group) of fp32 and bf16 tensors in torch (per-tensor norms combined, as the loop
    path does) lies in the interpreter's bounds for the loop path's precisions."""
    from optdsl.fuzz.tolerance import precision
    program = compile_ir("optimizer G\nupdate { param = param - 0.1 * grad / (norm(grad, group) + sum(grad, group) ^ 2) }\n", "g.opt")
    rng = np.random.default_rng(5)
    shapes = [(257,), (3, 5), ()]
    dtypes = [torch.float32, torch.bfloat16, torch.float32]
    ts = [torch.tensor(rng.standard_normal(s) * 3).to(d) for s, d in zip(shapes, dtypes)]
    gs = [torch.tensor(rng.standard_normal(s)).to(d) for s, d in zip(shapes, dtypes)]
    gn = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g).float() for g in gs]))
    gsum = torch.sum(torch.stack([torch.sum(g).float() for g in gs]))
    want = [(t - 0.1 * g / (gn + gsum ** 2).to(t.dtype)).double().numpy() for t, g in zip(ts, gs)]
    out = Interpreter(program, bounds=True).step([t.double().numpy() for t in ts], [g.double().numpy() for g in gs],
                                                 [precision("loop", str(d).split(".")[1]) for d in dtypes])
    for b, w in zip(out, want):
        assert np.all((b.lo <= w) & (w <= b.hi)), (b, w)


def test_reduction_bounds_hold_torchs_float32_sums_of_many_terms():
    from optdsl.fuzz.tolerance import precision
    program = compile_ir("optimizer S\nstate a : scalar = 0\nstate b : scalar = 0\nstate c : scalar = 0\n"
                         "update {\n  a = sum(grad)\n  b = norm(grad)\n  c = mean(grad * param)\n  param = param\n}\n",
                         "s.opt")
    rng = np.random.default_rng(11)
    for n in (1, 7, 1000, 100000):
        g = rng.standard_normal(n).astype(np.float32) * 100 + 1
        p = rng.standard_normal(n).astype(np.float32)
        interp = Interpreter(program, bounds=True)
        interp.step([p.astype(np.float64)], [g.astype(np.float64)], [precision("loop", "float32")])
        st = interp.state[0]
        tg, tp = torch.tensor(g), torch.tensor(p)
        for name, got in (("a", torch.sum(tg)), ("b", torch.linalg.vector_norm(tg)), ("c", torch.mean(tg * tp)),
                          ("a", tg.cumsum(0)[-1]), ("c", (tg * tp).cumsum(0)[-1] / n)):   # recursive order too
            bnd = st[name]
            assert bnd.lo <= float(got) <= bnd.hi, (n, name, float(got), bnd)


def test_a_decision_on_a_reduction_near_its_boundary_is_unsettled():
    program = compile_ir("optimizer D\nhyper th = 1.0\nupdate {\n  if norm(grad) > th { param = param - grad } "
                         "else { param = param + grad }\n}\n", "d.opt")
    g = np.full(4, 0.5)           # norm exactly 1: a float32 backend may go either way
    out = Interpreter(program, bounds=True).step([np.zeros(4)], [g], [Precision()])[0]
    assert np.all(out.unc)
    away = Interpreter(program, {"th": 0.5}, bounds=True).step([np.zeros(4)], [g], [Precision()])[0]
    assert not np.any(away.unc)
    np.testing.assert_array_equal(away.x, -g)


def test_shape_inputs():
    program = compile_ir("optimizer S\nupdate { param = param + numel * 100 + ndim * 10 + channel_numel "
                         "+ 1000 * size(1) }\n", "s.opt")
    shapes = [(3, 4), (5,), (), (2, 3, 2), (0,), (4, 0)]
    out = Interpreter(program).step([np.zeros(s) for s in shapes], [np.zeros(s) for s in shapes])
    want = [1200 + 20 + 4 + 4000, 500 + 10 + 1 + 1000, 100 + 0 + 1 + 1000, 1200 + 30 + 6 + 3000, None, None]
    for o, w, s in zip(out, want, shapes):
        assert o.shape == s
        if w is not None:
            np.testing.assert_array_equal(o, np.full(s, float(w)))


def test_optional_hyper_given_and_none():
    program = compile_ir('''optimizer C
hyper clip = none where clip > 0
update {
  g = grad
  if clip != none { g = grad * min(1, clip / (norm(grad, group) + 1e-6)) }
  param = param - (clip == none ? 0.5 : 1) * g
}
''', "c.opt")
    assert program.hypers[0].optional
    rng = np.random.default_rng(2)
    params = [rng.standard_normal(s) for s in [(4,), (2, 2)]]
    grads = [rng.standard_normal(s) * 3 for s in [(4,), (2, 2)]]
    gn = np.sqrt(sum((g * g).sum() for g in grads))
    out = Interpreter(program).step(params, grads)               # none by default
    for o, p, g in zip(out, params, grads):
        np.testing.assert_allclose(o, p - 0.5 * g)
    out = Interpreter(program, {"clip": None}).step(params, grads)
    for o, p, g in zip(out, params, grads):
        np.testing.assert_allclose(o, p - 0.5 * g)
    out = Interpreter(program, {"clip": 1.0}).step(params, grads)
    for o, p, g in zip(out, params, grads):
        np.testing.assert_allclose(o, p - g * min(1, 1.0 / (gn + 1e-6)), rtol=1e-12)
    with pytest.raises(ValueError):
        Interpreter(program, {"clip": -1.0})                      # its `where` holds where it is given


def test_scalar_state_stored_from_a_reduction_is_float32_on_the_device():
    program = compile_ir("optimizer M\nstate m : scalar = 0\nupdate {\n  m = 0.9 * m + 0.1 * norm(grad)\n"
                         "  param = param - 0.01 * grad / (m + 1e-8)\n}\n", "m.opt")
    from optdsl.ir import Kind
    assert program.state("m").kind is Kind.REDUCED
    g = np.array([3.0, 4.0])
    interp = Interpreter(program)
    interp.step([np.zeros(2)], [g])
    assert interp.state[0]["m"] == pytest.approx(0.5) and np.ndim(interp.state[0]["m"]) == 0
    b = Interpreter(program, bounds=True)
    b.step([np.zeros(2)], [g], [Precision()])
    m = b.state[0]["m"]
    assert m.lo < 0.5 < m.hi and m.hi - m.lo < 1e-5      # float32 roundings (and the stored value's)
