"""Reduced-shape (`row` / `column`) states, reductions along an axis, item(), and Adafactor:
bit-identical to torch.optim.Adafactor's loop on params of rank 0 to 4, checkpoints that cross-load
both ways mid-training, the interpreter's agreement, and the errors a spec or a user gets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from optdsl import load
from optdsl.compiler import compile_spec
from optdsl.diagnostics import CompileError
from optdsl.interp import Interpreter
from optdsl.optim import Adafactor
from optdsl.show.report import state_bytes
from stepping import dtensor_like, make_params, run as _run, set_grads as _grads

SHAPES = ((5, 7), (3, 4, 6), (9,), (), (2, 3, 2, 4), (1, 6))
COMBOS = [{}, {"weight_decay": 0.1, "lr": 0.1}, {"maximize": True, "eps": (1e-20, 1e-2), "d": 1.5, "beta2_decay": -0.5}]


def _params(seed=1):
    return make_params(SHAPES, seed=seed)


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("combo", COMBOS, ids=["defaults", "decay", "maximize-eps-d"])
def test_bit_identical_to_torch_adafactor_loop(combo, foreach):
    a, b = _params(), _params()
    ref, ours = torch.optim.Adafactor(a, foreach=False, **combo), Adafactor(b, foreach=foreach, **combo)
    _run(ref, a, 6)
    _run(ours, b, 6)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
        assert ref.state[x].keys() == ours.state[y].keys()
        for k, v in ref.state[x].items():
            assert v.shape == ours.state[y][k].shape and torch.equal(v, ours.state[y][k]), k


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_checkpoint_cross_loads_mid_training_both_ways(direction):
    first, second = (torch.optim.Adafactor, Adafactor) if direction == "torch_to_ours" else (Adafactor, torch.optim.Adafactor)
    a, b = _params(), _params()
    whole = torch.optim.Adafactor(a, weight_decay=0.1)
    _run(whole, a, 8)
    half = first(b, weight_decay=0.1)
    _run(half, b, 4)
    resumed = second(b, weight_decay=0.1)
    resumed.load_state_dict(half.state_dict())
    _run(resumed, b, 4, start=4)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_factored_state_is_a_row_and_a_column():
    p = [torch.zeros(4, 3, 5, requires_grad=True), torch.zeros(7, requires_grad=True)]
    opt = Adafactor(p)
    _run(opt, p, 1)
    assert opt.state[p[0]]["row_var"].shape == (4, 3, 1) and opt.state[p[0]]["col_var"].shape == (4, 1, 5)
    assert "variance" not in opt.state[p[0]] and opt.state[p[1]]["variance"].shape == (7,)
    program = compile_spec(open("specs/adafactor.opt").read(), "adafactor.opt").program
    assert state_bytes(program, (4096, 4096)) == {"row_var": 16384, "col_var": 16384}   # against 64 MiB


def test_interpreter_agrees_with_the_loop_path():
    program = compile_spec(open("specs/adafactor.opt").read(), "adafactor.opt").program
    params = _params()
    oracle = Interpreter(program, {"weight_decay": 0.1})
    xs = [p.detach().double().numpy() for p in params]
    opt = Adafactor(params, weight_decay=0.1)
    for k in range(4):
        _grads(params, k)
        xs = oracle.step(xs, [p.grad.double().numpy() for p in params])
        opt.step()
    for x, p in zip(xs, params):
        np.testing.assert_allclose(x, p.detach().double().numpy(), rtol=1e-4, atol=1e-6)


def test_what_the_paths_refuse():
    p = [torch.randn(3, 4, requires_grad=True)]
    with pytest.raises(RuntimeError, match="fused=True is not supported: its row or column values"):
        Adafactor(p, fused=True)
    with pytest.raises(ValueError, match="capturable=True is not supported"):
        Adafactor(p, capturable=True)
    with pytest.raises(ValueError, match="^Learning rate should be >= 0 but is: -1.0$"):
        Adafactor(p, lr=-1.0)
    with pytest.raises(ValueError, match="^epsilon1 should be >= 0 but is: -1.0$"):
        Adafactor(p, eps=(-1.0, 1e-3))
    z = torch.randn(3, 4, dtype=torch.complex64, requires_grad=True)
    z.grad = torch.randn_like(z)
    with pytest.raises(RuntimeError, match="does not support complex parameters"):
        Adafactor([z]).step()
    e = torch.zeros(5, 3, requires_grad=True)
    e.grad = torch.zeros(5, 3).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        Adafactor([e]).step()
    other = torch.optim.Adam([torch.randn(3, 4, requires_grad=True)])
    _run(other, other.param_groups[0]["params"], 1)
    opt = Adafactor([torch.randn(3, 4, requires_grad=True)])
    with pytest.raises(ValueError, match="another optimizer's state_dict"):
        opt.load_state_dict(other.state_dict())


HEAD = 'optimizer T "t"\nhyper lr = 0.1\nhyper eps = (none, 0.001)\n'
SPEC_ERRORS = [
    ("state r : row = zeros\nupdate { r = grad * grad }", "state 'r' keeps one value per row"),
    ("state r : row = zeros\nupdate { r = mean(grad, column) }", "varies per column, along the last dim"),
    ("state c : column = empty\nupdate { param = param }", "a column state starts as `zeros`"),
    ("state v = zeros if step > 2\nupdate { param = param }", "a state's `if` is decided once"),
    ("update { x = item(grad) param = param - x }", "item() reads one number per tensor back"),
    ("update { x = item(lr) param = param - x }", "this value is on the host already"),
    ("update { param = param - eps[0] * grad }", "'eps[0]' may be none"),
    ("update { if mean(grad, row) > 0 { param = param } }", "varies per row or column"),
    ("update { param = param - size(99) }", "takes one dim, a whole number from -64 to 64"),
]


@pytest.mark.parametrize("body, message", SPEC_ERRORS)
def test_spec_errors_name_the_problem(body, message):
    with pytest.raises(CompileError, match=None) as info:
        compile_spec(HEAD + body, "t.opt")
    assert message in str(info.value)


def test_axis_reductions_of_small_operands_broadcast_first_and_else_knows_the_complement():
    # sum(1, row) is the row's length; `else` of `ndim >= 2` guards a state kept `if ndim < 2`
    cls = load(HEAD + "state v = zeros if ndim < 2\nstate r : row = zeros if ndim >= 2\n"
               "update { if ndim >= 2 { r = sum(1, row) param = param - lr * r * grad } "
               "else { v = grad param = param - lr * v } }")
    p = [torch.ones(2, 3, requires_grad=True), torch.ones(4, requires_grad=True)]
    opt = cls(p)
    _run(opt, p, 1)
    assert torch.equal(opt.state[p[0]]["r"], torch.full((2, 1), 3.0)) and "v" not in opt.state[p[0]]
    assert "r" not in opt.state[p[1]]


def test_a_dtensor_param_is_refused_with_the_reason():
    with pytest.raises(RuntimeError, match="does not support DTensor"):
        Adafactor([dtensor_like(3, 4)]).step()


def test_foreach_reduces_along_the_axis_of_each_tensor():
    """Without item() the foreach path runs over the whole group: a reduction along a row or a column
    is still one per row or column of each tensor (the fuzzer found it summed over the group), equal
    to the loop's, a row state read per column too."""
    spec = (HEAD + "state r : row = zeros if ndim >= 2\nstate c : column = zeros\n"
            "update { c = lerp(c, mean(grad * grad, column), 0.1)\n"
            "  if ndim >= 2 { r = lerp(r, mean(grad * grad, row), 0.1)\n"
            "    param = param - lr * grad * rsqrt(r * c / max(mean(r, column), 0.001) + 0.01) }\n"
            "  else { param = param - lr * grad * rsqrt(c + 0.01) } }")
    cls = load(spec)
    a, b = _params(), _params()
    loop, foreach = cls(a, foreach=False), cls(b, foreach=True)
    _run(loop, a, 3)
    _run(foreach, b, 3)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
        for k, v in loop.state[x].items():
            assert torch.equal(v, foreach.state[y][k]), k
    assert not torch.equal(loop.state[a[0]]["r"][0], loop.state[a[0]]["r"][1])   # one value per row


def test_bounded_interpreter_keeps_a_shape_conditioned_state_where_the_shape_says():
    program = compile_spec(HEAD + "state r : row = zeros if ndim >= 2\nupdate { if ndim >= 2 { r = mean(grad, row) } "
                           "param = param - lr * grad }", "t.opt").program
    for bounds in (False, True):
        oracle = Interpreter(program, bounds=bounds)
        oracle.step([np.ones((2, 3)), np.ones(4), np.float64(1.0)], [np.ones((2, 3)), np.ones(4), np.float64(1.0)])
        assert ["r" in oracle.state[i] for i in range(3)] == [True, False, False], bounds


def test_an_axis_or_cover_reduction_without_its_state_is_refused_on_a_shard_too():
    """A reduction along an axis, or over all dims but one, crosses shards whether or not a state keeps
    it: the DTensor refusal reads the values, not only the states."""
    for scope, reason in (("row", "along the last two dims"), ("cover", "over all dims but one")):
        cls = load(HEAD + f"update {{ param = param - lr * grad / (abs(amax(grad, {scope})) + 1) }}")
        assert reason in cls._dtensor_refused
        with pytest.raises(RuntimeError, match="does not support DTensor"):
            cls([dtensor_like(3, 4)]).step()
