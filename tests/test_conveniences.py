"""Language conveniences (issue 11): sigmoid tanh softplus log1p expm1 cbrt floor mod, `inf`,
`initial_lr` and `keep step per group`, each on the loop, foreach and fused paths and in the
interpreter."""
import copy
import math

import numpy as np
import pytest
import torch

from optdsl import load, runtime as rt
from optdsl.builtins import FUNCTIONS, OPS
from optdsl.compiler import compile_ir
from optdsl.fuzz.execute import Case, Group, run_case
from optdsl.interp import Interpreter
from optdsl.interp_math import numpy_form

PATHS = ("loop", "foreach", "fused")
NEW = ("sigmoid", "tanh", "softplus", "log1p", "expm1", "cbrt", "floor", "mod")
SPECIALS = [0.0, -0.0, 1e-30, -1e-30, 1e-7, -0.5, 0.5, -1.0, -0.999, 1.0, 3.7, -3.7, 20.5, -20.5, 88.0, -100.0,
            1e30, -1e30, math.inf, -math.inf, math.nan]


def same(a: float, b: float, rel: float = 0.0) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rel * abs(b) + 1e-300


@pytest.mark.parametrize("name", [n for n in NEW if FUNCTIONS[n][1] == 1])
def test_host_torch_and_numpy_forms_agree_on_special_values(name):
    op = FUNCTIONS[name][0]
    host = getattr(rt, OPS[op].host.split("(")[0].split(".")[1])
    with np.errstate(all="ignore"):
        for x in SPECIALS:
            want = float(numpy_form(op)(np.float64(x)))
            got_host = host(x)
            got_torch = float(eval(OPS[op].torch.format("t"), {"torch": torch, "_rt": rt},  # noqa: S307
                                   {"t": torch.tensor(x, dtype=torch.float64)}))
            assert same(got_host, want, 4e-16), (name, x, got_host, want)
            assert same(got_torch, want, 4e-15), (name, x, got_torch, want)


def test_mod_is_floor_mod_and_nan_for_a_zero_divisor_on_the_host():
    cases = [(-1, 3, 2), (5, -3, -1), (-5, -3, -2), (7.5, 2, 1.5), (-7.5, 2, 0.5), (6, 3, 0),
             (5, math.inf, 5), (-5, math.inf, math.inf), (5, -math.inf, -math.inf)]
    for a, b, want in cases:
        assert rt.mod(float(a), float(b)) == want, (a, b)
        assert float(np.remainder(a, b)) == want
        assert float(torch.remainder(torch.tensor(float(a), dtype=torch.float64), b)) == want
    for a, b in ((3.0, 0.0), (-3.0, 0.0), (0.0, 0.0), (math.inf, 2.0), (math.nan, 2.0), (2.0, math.nan)):
        assert math.isnan(rt.mod(a, b)), (a, b)
        with np.errstate(all="ignore"):
            assert math.isnan(np.remainder(a, b))
        assert math.isnan(float(torch.remainder(torch.tensor(a), b)))


SPEC = """optimizer Uses "one builtin"
hyper lr = 0.1
update {{
  param = param - lr * {expr}
}}
"""
EXPRESSIONS = {
    "sigmoid": "sigmoid(grad * 10)", "tanh": "tanh(grad * 3)", "softplus": "softplus(grad * 30)",
    "log1p": "log1p(clamp(grad, -0.99, 100))", "expm1": "expm1(clamp(grad * 2, -5, 5))", "cbrt": "cbrt(grad * 1000)",
    "floor": "floor(grad * 4)", "mod": "mod(grad * 9, param)",
}


@pytest.mark.parametrize("name", NEW)
def test_each_builtin_agrees_with_the_interpreter_on_every_path(name, tmp_path):
    """fp32 and bf16 tensors, through the fuzzer's comparison: every element within the interpreter's
    error bounds (or at a decision they cannot settle, e.g. floor at an integer)."""
    case = Case(SPEC.format(expr=EXPRESSIONS[name]), [Group([(300,), (7, 5), ()], ["float32", "bfloat16", "float32"])],
                steps=3, fused_steps=2, seed=3, skip=0.0)
    out = run_case(case, cache=str(tmp_path))
    assert out.ok, out.summary()
    assert out.compared > 0 and out.boundary <= out.unsettled


def _run(cls, path, params, grads_per_step, **kwargs):
    ps = [p.clone().requires_grad_(True) for p in params]
    opt = cls(ps, foreach=path == "foreach", fused=path == "fused", **kwargs)
    for grads in grads_per_step:
        for p, g in zip(ps, grads):
            p.grad = None if g is None else g.clone()
        opt.step()
    return opt, [p.detach() for p in ps]


def test_mod_by_zero_is_nan_and_floor_mod_on_every_path():
    cls = load('optimizer ModZero "x"\nupdate { param = mod(param, grad) }\n')
    params = [torch.tensor([-1.0, 5.0, -5.0, 3.0, 7.5, 2.0])]
    grads = [[torch.tensor([3.0, -3.0, -3.0, 0.0, 2.0, math.inf])]]
    want = [2.0, -1.0, -2.0, math.nan, 1.5, 2.0]
    for path in PATHS:
        _, (out,) = _run(cls, path, params, grads)
        assert all(same(float(g), w) for g, w in zip(out, want)), (path, out)


def test_mod_of_a_huge_quotient_is_exact_on_the_eager_paths_and_nan_fused():
    """The fused kernel's fmod takes three exact fp32 steps: |x / y| < 2^69 (docs/language.md)."""
    cls = load('optimizer ModHuge "x"\nupdate { param = mod(param, grad) }\n')
    params = [torch.tensor([2.0 ** 60 + 2.0 ** 40, 2.0 ** 80, 2.0 ** 60 * 3])]
    grads = [[torch.tensor([3.0, 3.0, -7.0])]]
    want = [float(np.remainder(float(x), float(y))) for x, y in zip(params[0].double(), grads[0][0].double())]
    for path in ("loop", "foreach"):
        _, (out,) = _run(cls, path, params, grads)
        assert out.tolist() == want, path
    _, (out,) = _run(cls, "fused", params, grads)
    assert out[0].item() == want[0] and math.isnan(out[1].item()) and out[2].item() == want[2]


def test_inf_is_a_number_on_every_path():
    cls = load('optimizer Inf "x"\nhyper lr = 0.5 where 0 < lr < inf\n'
               'update { param = clamp(param - lr * grad, -inf, 1) + min(grad, inf) * 0 + (max(grad, -inf) > -inf ? 0 : 1) }\n')
    params = [torch.tensor([0.0, 3.0, -2.0 ** 90])]
    grads = [[torch.tensor([1.0, -10.0, 2.0])]]
    for path in PATHS:
        _, (out,) = _run(cls, path, params, grads)
        assert out.tolist() == [-0.5, 1.0, -2.0 ** 90], path
    with pytest.raises(ValueError, match="Invalid learning rate"):
        cls([torch.zeros(1, requires_grad=True)], lr=math.inf)


def test_every_k_steps_with_mod_of_the_step():
    cls = load('optimizer Every "x"\nhyper lr = 1.0\nhyper k = 3\n'
               'update { param = mod(step, k) == 0 ? param - lr * grad : param }\n')
    for path in PATHS:
        _, (out,) = _run(cls, path, [torch.zeros(2)], [[torch.ones(2)]] * 7)
        assert out.tolist() == [-2.0, -2.0], path    # steps 3 and 6


# ---- initial_lr --------------------------------------------------------------------------------

WARMUP = """optimizer Warm "lr warmup to the lr at construction, whatever a scheduler does to lr"
hyper lr = 0.1 where lr > 0
update {
  param = param - min(step / 4, 1) * initial_lr * grad - 0 * lr
}
"""


@pytest.mark.parametrize("path", PATHS)
def test_initial_lr_is_the_lr_at_construction_and_what_schedulers_record(path):
    cls = load(WARMUP)
    p = torch.zeros(3, requires_grad=True)
    q = torch.zeros(2, requires_grad=True)
    opt = cls([{"params": [p]}, {"params": [q], "lr": 0.5}], lr=0.1, foreach=path == "foreach", fused=path == "fused")
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.5]
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.5]   # the scheduler keeps what is there
    moved = []
    for k in range(1, 7):
        p.grad, q.grad = torch.ones(3), torch.ones(2)
        before = (p.detach().clone(), q.detach().clone())
        opt.step()
        sched.step()
        moved.append((float(before[0][0] - p[0]), float(before[1][0] - q[0])))
    for k, (dp, dq) in enumerate(moved, start=1):
        assert dp == pytest.approx(min(k / 4, 1) * 0.1, rel=1e-6) and dq == pytest.approx(min(k / 4, 1) * 0.5, rel=1e-6)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1 ** 6)
    # the interpreter: initial_lr is lr unless given
    program = compile_ir(WARMUP)
    assert Interpreter(program, {"lr": 0.3}).hypers["initial_lr"] == 0.3
    assert Interpreter(program, {"lr": 0.3, "initial_lr": 0.7}).hypers["initial_lr"] == 0.7


def test_initial_lr_round_trips_through_state_dict_and_a_resumed_scheduler():
    cls = load(WARMUP)
    p = torch.zeros(2, requires_grad=True)
    opt = cls([p], lr=0.2)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    p.grad = torch.ones(2)
    opt.step()
    sched.step()
    saved = copy.deepcopy(opt.state_dict())
    assert saved["param_groups"][0]["initial_lr"] == 0.2
    p2 = torch.zeros(2, requires_grad=True)
    opt2 = cls([p2], lr=0.9)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["initial_lr"] == 0.2 and opt2.param_groups[0]["lr"] == 0.1
    torch.optim.lr_scheduler.ExponentialLR(opt2, gamma=0.5, last_epoch=0)   # resuming needs initial_lr: it is there
    # a state_dict saved without it (an older checkpoint) keeps the loading optimizer's own
    del saved["param_groups"][0]["initial_lr"]
    opt3 = cls([torch.zeros(2, requires_grad=True)], lr=0.9)
    opt3.load_state_dict(saved)
    assert opt3.param_groups[0]["initial_lr"] == 0.9


def test_a_spec_without_initial_lr_adds_no_group_key():
    cls = load('optimizer Plain "x"\nhyper lr = 0.1\nupdate { param = param - lr * grad }\n')
    opt = cls([torch.zeros(1, requires_grad=True)])
    assert "initial_lr" not in opt.param_groups[0]


# ---- keep step per group ------------------------------------------------------------------------

STEPPED = """optimizer {name} "moves each param by step * grad"
hyper lr = 1.0
{keep}
update {{
  param = param - lr * step * grad
}}
"""
ADAMISH = """optimizer {name} "Adam's bias corrections, step counted {how}"
hyper lr = 0.1
hyper betas = (0.9, 0.999)
state m = zeros
state v = zeros
{keep}
update {{
  m = lerp(m, grad, 1 - betas[0])
  v = betas[1] * v + (1 - betas[1]) * grad * grad
  param = param - lr / (1 - betas[0] ^ step) * m / (sqrt(v / (1 - betas[1] ^ step)) + 1e-8)
}}
"""
# the second param has no grad on steps 2 and 3: per tensor its step lags, per group it does not
GRADS = [[torch.ones(2), torch.ones(3)], [torch.ones(2), None], [torch.ones(2), None], [torch.ones(2), torch.ones(3)]]


@pytest.mark.parametrize("path", PATHS)
def test_step_per_group_counts_every_call_and_per_tensor_lags(path):
    per_group = load(STEPPED.format(name="PerGroup", keep="keep step per group"))
    per_tensor = load(STEPPED.format(name="PerTensor", keep=""))
    params = [torch.zeros(2), torch.zeros(3)]
    opt, (a, b) = _run(per_group, path, params, GRADS)
    assert a.tolist() == [-10.0] * 2                  # 1 + 2 + 3 + 4
    assert b.tolist() == [-5.0] * 3                   # steps 1 and 4 of the group
    assert float(opt.param_groups[0]["step"]) == 4.0
    assert all("step" not in s for s in opt.state.values())
    opt, (a, b) = _run(per_tensor, path, params, GRADS)
    assert a.tolist() == [-10.0] * 2 and b.tolist() == [-3.0] * 3   # its own steps 1 and 2
    assert "step" not in opt.param_groups[0] and [float(s["step"]) for s in opt.state.values()] == [4.0, 2.0]


def test_step_per_group_matches_the_interpreter_and_a_hand_written_reference():
    text = ADAMISH.format(name="AdamPerGroup", how="per group", keep="keep step per group")
    cls, program = load(text), compile_ir(text)
    torch.manual_seed(0)
    params = [torch.randn(4), torch.randn(3)]
    grads = [[torch.randn(4), torch.randn(3) if k % 3 == 0 else None] for k in range(6)]
    # the reference: Adam whose bias corrections read one count per group (as timm's Lamb)
    ref = [p.double().clone() for p in params]
    m = [torch.zeros_like(p) for p in ref]
    v = [torch.zeros_like(p) for p in ref]
    for k, row in enumerate(grads, start=1):
        for i, g in enumerate(row):
            if g is None:
                continue
            g = g.double()
            m[i] = m[i] + 0.1 * (g - m[i])
            v[i] = 0.999 * v[i] + 0.001 * g * g
            ref[i] = ref[i] - 0.1 / (1 - 0.9 ** k) * m[i] / ((v[i] / (1 - 0.999 ** k)).sqrt() + 1e-8)
    interp = Interpreter(program)
    xs = [p.double().numpy() for p in params]
    for row in grads:
        xs = interp.step(xs, [None if g is None else g.double().numpy() for g in row])
    assert interp.group_step == 6.0
    for x, r in zip(xs, ref):
        np.testing.assert_allclose(x, r.numpy(), rtol=1e-12, atol=1e-12)
    for path in PATHS:
        _, outs = _run(cls, path, params, grads)
        for o, r in zip(outs, ref):
            torch.testing.assert_close(o.double(), r, rtol=1e-5, atol=1e-6, msg=path)


@pytest.mark.parametrize("path", PATHS)
def test_step_per_group_round_trips_through_state_dict(path):
    cls = load(ADAMISH.format(name="AdamGroupSd", how="per group", keep="keep step per group"))
    torch.manual_seed(1)
    params = [torch.randn(4), torch.randn(3)]
    grads = [[torch.randn(4), None if k in (1, 2) else torch.randn(3)] for k in range(5)]
    _, straight = _run(cls, path, params, grads)
    opt, first = _run(cls, path, params, grads[:3])
    saved = copy.deepcopy(opt.state_dict())
    assert float(saved["param_groups"][0]["step"]) == 3.0
    assert all("step" not in s for s in saved["state"].values())
    ps = [p.clone().requires_grad_(True) for p in first]
    resumed = cls(ps, foreach=path == "foreach", fused=path == "fused")
    resumed.load_state_dict(saved)
    for row in grads[3:]:
        for p, g in zip(ps, row):
            p.grad = None if g is None else g.clone()
        resumed.step()
    for a, b in zip(ps, straight):
        assert torch.equal(a.detach(), b)
    # a per-tensor optimizer's state_dict is another optimizer's: refused before anything changes
    other = load(ADAMISH.format(name="AdamTensorSd", how="per tensor", keep=""))
    opt_t, _ = _run(other, path, params, grads[:2])
    with pytest.raises(ValueError, match=r"has \['step'\], which AdamGroupSd does not keep"):
        cls([p.clone().requires_grad_(True) for p in params]).load_state_dict(opt_t.state_dict())


def test_step_per_group_keeps_a_library_int_count():
    """A checkpoint of a library counting steps per group in an int (timm's Lamb) loads and continues."""
    cls = load(STEPPED.format(name="IntStep", keep="keep step per group"))
    p = torch.zeros(1, requires_grad=True)
    opt = cls([p])
    opt.param_groups[0]["step"] = 5
    p.grad = torch.ones(1)
    opt.step()
    assert p.item() == -6.0 and torch.is_tensor(opt.param_groups[0]["step"]) and opt.param_groups[0]["step"] == 6


def test_step_per_group_is_fuzzed_on_every_path(tmp_path):
    text = ADAMISH.format(name="AdamGroupFuzz", how="per group", keep="keep step per group")
    case = Case(text, [Group([(5,), (3, 2), ()], ["float32", "bfloat16", "float32"])], steps=5, fused_steps=3,
                seed=2, skip=0.4)
    out = run_case(case, cache=str(tmp_path))
    assert out.ok, out.summary()
