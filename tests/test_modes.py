"""`on train` / `on eval` (optdsl.modes): optimizer.train() and .eval() switch the params between
the sequences a spec keeps. Schedule-Free AdamW against schedulefree.AdamWScheduleFree across
switches mid-run, checkpoints in either mode and across libraries, a user spec with modes on
every path against the interpreter, and the checker's rules for the blocks."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import optdsl
from optdsl import optim
from optdsl.compiler import compile_ir, compile_spec
from optdsl.diagnostics import CompileError
from optdsl.interp import Interpreter
from optdsl.loader import read_spec
from optdsl.modes import NOT_IN_TRAIN_MODE
from optdsl.references import schedule_free_adamw
from optdsl.registry import REGISTRY
from optdsl.verify import compare, run_against, with_state

PATHS = [{"foreach": False}, {"foreach": True}, {"fused": True}]
COMBO = {"lr": 0.01, "warmup_steps": 4, "weight_decay": 0.1, "r": 0.5}


def _grads(step: int, params) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g) for p in params]


def _params(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 4, generator=g), torch.randn(5, generator=g), torch.randn((), generator=g)]


def _twins(base, n: int):
    return [[p.clone().requires_grad_() for p in base] for _ in range(n)]


def _run(opts_and_params, steps: range, switch_at=()):
    """Step every optimizer on the same gradients; at the steps in `switch_at`, eval() then train()
    before stepping."""
    for k in steps:
        if k in switch_at:
            for opt, _ in opts_and_params:
                opt.eval()
            for opt, _ in opts_and_params:
                opt.train()
        grads = _grads(k, opts_and_params[0][1])
        for opt, ps in opts_and_params:
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            opt.step()


@pytest.mark.parametrize("path", ["loop", "foreach", "fused"])
def test_schedule_free_matches_the_reference_across_switches_mid_run(path):
    """Bit for bit on the eager paths (params in eval mode, z and exp_avg_sq), within float32
    rounding on the fused one; the run warms up and switches to eval and back every 7 steps."""
    entry = REGISTRY["ScheduleFreeAdamW"]
    assert entry.modes
    combo = {"warmup_steps": 5, "weight_decay": 0.1, "r": 0.5, "weight_lr_power": 2.0, "betas": (0.9, 0.999)}
    ours, opt_a, [(theirs, opt_b)] = run_against(entry, combo, path, ("reference",), steps=16)
    assert not opt_a.param_groups[0]["train_mode"] and not opt_b.param_groups[0]["train_mode"]
    xs, ys = with_state(ours, theirs, opt_a, opt_b, check_keys=True)
    assert len(xs) == 3 * len(ours)   # the params, z and exp_avg_sq
    if path == "fused":
        assert compare(xs, ys)[-1]
    else:
        assert all(torch.equal(x, y) for x, y in zip(xs, ys))
    for key in ("k", "weight_sum", "lr_max", "scheduled_lr"):
        assert opt_a.param_groups[0][key] == opt_b.param_groups[0][key]


def test_step_in_eval_mode_raises_the_reference_error():
    ours = optim.ScheduleFreeAdamW([torch.zeros(2, requires_grad=True)])
    theirs = schedule_free_adamw([torch.zeros(2, requires_grad=True)])
    for opt in (ours, theirs):
        opt.param_groups[0]["params"][0].grad = torch.ones(2)
        opt.eval()
    with pytest.raises(Exception) as ref_error:
        theirs.step()
    with pytest.raises(RuntimeError) as our_error:
        ours.step()
    assert str(our_error.value) == str(ref_error.value) == NOT_IN_TRAIN_MODE
    assert ours.train() is ours
    ours.step()


def test_a_new_optimizer_is_in_train_mode_and_a_switch_to_the_same_mode_does_nothing():
    params = _twins(_params(), 1)[0]
    opt = optim.ScheduleFreeAdamW(params, lr=0.1)
    assert opt.param_groups[0]["train_mode"] is True
    before = [p.detach().clone() for p in params]
    assert opt.eval() is opt and opt.param_groups[0]["train_mode"] is False
    assert all(torch.equal(p, b) for p, b in zip(params, before))   # nothing stepped: no state, no switch
    _run([(opt.train(), params)], range(3))
    stepped = [p.detach().clone() for p in params]
    opt.train()
    assert all(torch.equal(p, s) for p, s in zip(params, stepped))
    opt.eval()
    evaluated = [p.detach().clone() for p in params]
    opt.eval()
    assert all(torch.equal(p, e) for p, e in zip(params, evaluated))
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):
        opt.train("yes")
    opt.train(True)
    # y -> x -> y: lerp there and back, within rounding
    assert all(torch.allclose(p, s, atol=1e-6) for p, s in zip(params, stepped))


def test_a_tensor_never_stepped_is_not_switched():
    a, b = torch.ones(3, requires_grad=True), torch.full((2,), 2.0, requires_grad=True)
    opt = optim.ScheduleFreeAdamW([a, b], lr=0.1)
    for _ in range(3):
        a.grad = torch.ones(3)
        opt.step()
    opt.eval()
    assert torch.equal(b, torch.full((2,), 2.0)) and not torch.equal(a, torch.ones(3))
    assert set(opt.state[a]) == {"z", "exp_avg_sq"} and b not in opt.state


@pytest.mark.parametrize("path", PATHS, ids=["loop", "foreach", "fused"])
def test_a_checkpoint_saved_in_eval_mode_round_trips_and_training_continues_identically(path):
    base = _params(1)
    first, second = _twins(base, 2)
    opt = optim.ScheduleFreeAdamW(first, **COMBO, **path)
    _run([(opt, first)], range(6))
    opt.eval()   # as schedulefree's docs save: the params hold x
    saved = copy.deepcopy(opt.state_dict())
    assert saved["param_groups"][0]["train_mode"] is False and saved["param_groups"][0]["k"] == 6
    with torch.no_grad():
        for p, q in zip(second, first):
            p.copy_(q)
    fresh = optim.ScheduleFreeAdamW(second, **COMBO, **path)
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["train_mode"] is False
    with pytest.raises(RuntimeError, match="not in train mode"):
        fresh.step()
    for o in (opt, fresh):
        o.train()
    _run([(opt, first), (fresh, second)], range(6, 12), switch_at=(9,))
    assert all(torch.equal(p, q) for p, q in zip(first, second))
    for p, q in zip(first, second):
        for key in ("z", "exp_avg_sq"):
            assert torch.equal(opt.state[p][key], fresh.state[q][key])


def test_a_schedulefree_checkpoint_loads_into_ours_and_back():
    """The state_dict keys are the reference's (z, exp_avg_sq; k, weight_sum, lr_max, scheduled_lr,
    train_mode in the groups): a checkpoint crosses both ways mid-run and both go on bit for bit."""
    base = _params(2)
    theirs, ours = _twins(base, 2)
    ref = schedule_free_adamw(theirs, **COMBO, foreach=False)
    _run([(ref, theirs)], range(5))
    ref.eval()
    with torch.no_grad():
        for p, q in zip(ours, theirs):
            p.copy_(q)
    opt = optim.ScheduleFreeAdamW(ours, **COMBO, foreach=False)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))
    for o in (opt, ref):
        o.train()
    _run([(opt, ours), (ref, theirs)], range(5, 10), switch_at=(7,))
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs))
    back = schedule_free_adamw([p.detach().clone().requires_grad_() for p in ours], **COMBO, foreach=False)
    back.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert back.param_groups[0]["k"] == 10 and set(back.state[back.param_groups[0]["params"][0]]) == {"z", "exp_avg_sq"}


def test_the_interpreter_switches_as_the_generated_optimizer_does():
    text, file, _ = read_spec("schedule_free_adamw")
    program = compile_ir(text, file)
    hypers = {"lr": 0.01, "warmup_steps": 4.0, "weight_decay": 0.1, "r": 0.5}
    interp = Interpreter(program, hypers)
    base = _params(3)
    (ps,) = _twins(base, 1)
    opt = optim.ScheduleFreeAdamW(ps, **COMBO, foreach=False)
    xs = [p.detach().double().numpy().copy() for p in base]
    for k in range(10):
        if k in (4, 8):
            opt.eval()
            xs = interp.switch("eval", xs)
            np.testing.assert_allclose([float(v) for x in xs for v in np.ravel(x)],
                                       [float(v) for p in ps for v in p.detach().reshape(-1)], rtol=1e-5, atol=1e-6)
            opt.train()
            xs = interp.switch("train", xs)
        grads = _grads(k, ps)
        for p, g in zip(ps, grads):
            p.grad = g
        opt.step()
        xs = interp.step(xs, [g.double().numpy() for g in grads])
    for x, p in zip(xs, ps):
        np.testing.assert_allclose(x, p.detach().double().numpy(), rtol=1e-5, atol=1e-6)


# A user's spec with modes: it evaluates at an EMA of its weights, swapped in by eval() and out by
# train() (a local holds one side of the swap), the EMA rescaled to the weights' norm on the way
# in (a reduction inside a block).
SWAPPED = """optimizer SwappedEma "SGD whose eval() swaps in an EMA of the weights"
hyper lr = 0.1 where lr >= 0
hyper decay = 0.5 where 0 <= decay <= 1
state avg = empty
update {
  param = param - lr * grad
  avg = is_empty(avg) ? param : lerp(avg, param, 1 - decay)
}
on eval {
  t = param
  param = avg * (norm(t) / max(norm(avg), 1e-12))
  avg = t
}
on train {
  t = avg
  avg = param
  param = t
}
"""


@pytest.mark.parametrize("path", PATHS, ids=["loop", "foreach", "fused"])
def test_a_user_spec_with_modes_agrees_with_the_interpreter_on_every_path(path):
    cls = optdsl.load(SWAPPED)
    interp = Interpreter(compile_ir(SWAPPED), {"lr": 0.1, "decay": 0.5})
    base = _params(4)
    (ps,) = _twins(base, 1)
    opt = cls(ps, **path)
    xs = [p.detach().double().numpy().copy() for p in base]

    def agree():
        for x, p in zip(xs, ps):
            np.testing.assert_allclose(x, p.detach().double().numpy(), rtol=1e-5, atol=1e-6)
    for k in range(8):
        if k in (3, 6):
            opt.eval()
            xs = interp.switch("eval", xs)
            agree()
            opt.train()
            xs = interp.switch("train", xs)
            agree()
        grads = _grads(k, ps)
        for p, g in zip(ps, grads):
            p.grad = g
        opt.step()
        xs = interp.step(xs, [g.double().numpy() for g in grads])
    agree()


def test_low_precision_states_are_switched_in_float32():
    base = _params(5)
    full, low = _twins(base, 2)
    a = optim.ScheduleFreeAdamW(full, lr=0.05)
    b = optim.ScheduleFreeAdamW(low, lr=0.05, state_dtype=torch.bfloat16)
    _run([(a, full), (b, low)], range(5))
    for o in (a, b):
        o.eval()
    assert b.state[low[0]]["z"].dtype == torch.bfloat16
    assert all(torch.allclose(p, q, atol=2e-2) for p, q in zip(full, low))


def test_a_composition_keeps_the_wrapped_spec_modes():
    cls = optdsl.compose("lookahead", "schedule_free_adamw")
    assert hasattr(cls, "train") and hasattr(cls, "eval")
    (ps,) = _twins(_params(6), 1)
    opt = cls(ps, lr=0.05, lookahead_k=2)
    _run([(opt, ps)], range(4), switch_at=(3,))
    opt.eval()
    assert set(opt.state[ps[0]]) == {"z", "exp_avg_sq", "slow_params"}
    with pytest.raises(RuntimeError, match="not in train mode"):
        opt.step()


HEAD = 'optimizer M "m"\nstate z = zeros\nstate e = empty\nstate s : scalar = 1\nstate c : group = 0\n' \
       'update {\n  e = is_empty(e) ? param : e\n  param = param - grad\n}\n'
REFUSED = [
    ("on train { param = param - grad }\non eval { }", "outside step(): it has no 'grad'", "10:28"),
    ("on train { param = param * step }\non eval { }", "no 'step'", "10:28"),
    ("on train { }\non eval { }\non train { }", "`on train` is given twice", "12:4"),
    ("on train { }", "add `on eval", "10:1"),
    ("on tran { }\non eval { }", "did you mean 'train'", "10:4"),
    ("on train { s = 2 }\non eval { }", "'s' is a scalar state", "10:12"),
    ("on train { c = 2 }\non eval { }", "'c' is a group state", "10:12"),
    ("on train { z = param }\non eval { }\non train { }", "given twice", "12:4"),
]


@pytest.mark.parametrize("modes,message,where", REFUSED, ids=[r[1] for r in REFUSED])
def test_misused_on_blocks_are_refused_where_they_are(modes, message, where):
    with pytest.raises(CompileError) as info:
        compile_spec(HEAD + modes + "\n", "m.opt")
    d = info.value.diagnostics[0]
    assert message in info.value.render() and f"{d.span.line}:{d.span.col}" == where, info.value.render()


def test_an_empty_state_in_an_on_block_needs_a_value_after_every_path_of_the_update():
    maybe = 'optimizer M "m"\nflag f = false\nstate e = empty\nupdate {\n  if f {\n    e = param\n  }\n' \
            '  param = param - grad\n}\non train { param = e }\non eval { }\n'
    with pytest.raises(CompileError) as info:
        compile_spec(maybe, "m.opt")
    assert "state 'e' starts `empty`" in info.value.render() and info.value.diagnostics[0].span.line == 10
    compile_spec(maybe.replace("on train { param = e }", "on train { param = is_empty(e) ? param : e }"), "m.opt")
    compile_spec(HEAD + "on train { param = e }\non eval { }\n", "m.opt")   # stored on every path
    compile_spec(HEAD + "on train { e = param }\non eval { }\n", "m.opt")
    with pytest.raises(CompileError, match="would create it"):
        compile_spec(maybe.replace("on train { param = e }", "on train { e = param }"), "m.opt")


def test_a_wrapper_has_no_on_blocks():
    with pytest.raises(CompileError, match="a wrapper has no `on` blocks"):
        compile_spec('wrapper W "w"\nupdate {\n  inner\n}\non train { }\non eval { }\n', "w.opt")
