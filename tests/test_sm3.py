"""Covers (`state v : cover`, reductions with the `cover` scope: one accumulator per dim) and SM3:
bit-identical to pytorch_optimizer.SM3 on loop and foreach for params of rank 0 to 4, SM3.SM3's
agreement, checkpoints, the state's shapes and bytes, the interpreter's agreement, and the errors a
spec or a user gets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from optdsl import load
from optdsl.axis_ops import cover_amax, cover_mean, cover_min, cover_shapes, cover_sum
from optdsl.compiler import compile_spec
from optdsl.diagnostics import CompileError
from optdsl.interp import Interpreter
from optdsl.optim import SM3
from optdsl.registry import REGISTRY
from optdsl.show.report import state_bytes
from stepping import assert_same_state, dtensor_like, make_params, run as _run, set_grads as _grads

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")

SHAPES = ((5, 7), (3, 4, 6), (9,), (), (2, 3, 2, 4), (1, 6))
COMBOS = REGISTRY["SM3"].combos()


def _params(seed=1, shapes=SHAPES):
    return make_params(shapes, seed=seed)


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("combo", COMBOS, ids=[str(i) for i in range(len(COMBOS))])
def test_bit_identical_to_pytorch_optimizer_sm3(combo, foreach):
    a, b = _params(), _params()
    ref = pytorch_optimizer.SM3(a, foreach=False, **combo)
    ours = SM3(b, foreach=foreach, **combo)
    for k in range(6):   # the reference negates p.grad in place for maximize: fresh gradients each step
        _grads(a, k)
        _grads(b, k)
        ref.step()
        ours.step()
    assert_same_state(ref, ours, a, b)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sm3_sm3_agrees(momentum):
    """torch-sm3's SM3.SM3: bit for bit without momentum; with it, it mixes the buffer in as
    `u * (1 - m) + m * buf` where pytorch_optimizer lerps, so to rounding."""
    SM3_ = pytest.importorskip("SM3").SM3
    shapes = tuple(s for s in SHAPES if s)   # a 0-d param with beta > 0: SM3.SM3 takes a max where the others copy
    a, b = _params(shapes=shapes), _params(shapes=shapes)
    ref, ours = SM3_(a, momentum=momentum, beta=0.5), SM3(b, momentum=momentum, beta=0.5)
    _run(ref, a, 8)
    _run(ours, b, 8)
    for x, y in zip(a, b):
        if momentum == 0:
            assert torch.equal(x, y)
        else:
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
        for i in range(x.dim()):
            torch.testing.assert_close(ref.state[x][f"accumulator_{i}"], ours.state[y][f"accumulator_{i}"],
                                       rtol=1e-5 if momentum else 0, atol=1e-6 if momentum else 0)


def test_a_cover_is_one_accumulator_per_dim_and_its_bytes_are_the_dims_sizes():
    p = [torch.zeros(4, 3, 5, requires_grad=True), torch.zeros(7, requires_grad=True), torch.zeros((), requires_grad=True)]
    opt = SM3(p)
    _run(opt, p, 1)
    assert {k: tuple(v.shape) for k, v in opt.state[p[0]].items() if k.startswith("acc")} == \
        {"accumulator_0": (4, 1, 1), "accumulator_1": (1, 3, 1), "accumulator_2": (1, 1, 5)}
    assert opt.state[p[1]]["accumulator_0"].shape == (7,) and "accumulator_1" not in opt.state[p[1]]
    assert opt.state[p[2]]["accumulator_0"].shape == () and opt.state[p[2]].keys() == {"momentum_buffer", "accumulator_0"}
    program = compile_spec(open("specs/sm3.opt").read(), "sm3.opt").program
    assert state_bytes(program, (4096, 4096)) == {"momentum_buffer": 4096 * 4096 * 4, "accumulator": 2 * 4096 * 4}


def test_checkpoints_round_trip_and_cross_load_with_pytorch_optimizer_mid_training():
    combo = {"momentum": 0.9, "beta": 0.5}
    a, b, c = _params(), _params(), _params()
    whole = pytorch_optimizer.SM3(a, foreach=False, **combo)
    _run(whole, a, 8)
    first = SM3(b, **combo)
    _run(first, b, 4)
    saved = first.state_dict()
    resumed = pytorch_optimizer.SM3(b, foreach=False, **combo)
    resumed.load_state_dict(saved)
    resumed.param_groups[0]["step"] = 4
    _run(resumed, b, 4, start=4)
    theirs = pytorch_optimizer.SM3(c, foreach=False, **combo)
    _run(theirs, c, 4)
    back = SM3(c, **combo)
    back.load_state_dict(theirs.state_dict())
    _run(back, c, 4, start=4)
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y) and torch.equal(x, z)
    again = SM3(_params(), **combo)
    again.load_state_dict(back.state_dict())
    assert all(torch.equal(again.state[p][k], back.state[q][k])
               for p, q in zip(again.param_groups[0]["params"], c) for k in back.state[q])


def test_the_interpreter_agrees_with_the_loop_path_on_every_rank():
    program = compile_spec(open("specs/sm3.opt").read(), "sm3.opt").program
    params = _params()
    oracle = Interpreter(program, {"beta": 0.5, "momentum": 0.5})
    xs = [p.detach().double().numpy() for p in params]
    opt = SM3(params, beta=0.5, momentum=0.5)
    for k in range(5):
        _grads(params, k)
        xs = oracle.step(xs, [p.grad.double().numpy() for p in params])
        opt.step()
    for i, (x, p) in enumerate(zip(xs, params)):
        np.testing.assert_allclose(x, p.detach().double().numpy(), rtol=1e-5, atol=1e-6)
        for j, acc in enumerate(oracle.stored(i, "accumulator")):
            np.testing.assert_allclose(acc, opt.state[p][f"accumulator_{j}"].double().numpy(), rtol=1e-5, atol=1e-7)


def test_cover_reductions_per_dim():
    x = torch.arange(24.0).reshape(2, 3, 4) - 10
    assert [tuple(t.shape) for t in cover_sum(x)] == cover_shapes((2, 3, 4)) == [(2, 1, 1), (1, 3, 1), (1, 1, 4)]
    assert torch.equal(cover_sum(x)[1], x.sum(dim=(0, 2), keepdim=True))
    assert torch.equal(cover_mean(x)[2], x.mean(dim=(0, 1), keepdim=True))
    assert torch.equal(cover_amax(x)[0], x.abs().amax(dim=(1, 2), keepdim=True))
    v = torch.tensor([-2.0, 3.0])
    assert torch.equal(cover_amax(v)[0], v.abs()) and cover_amax(v)[0] is not v
    s = torch.tensor(-4.0)
    assert [t.shape for t in cover_sum(s)] == [()] and cover_amax(s)[0].item() == 4.0
    assert cover_amax(torch.zeros(0, 3))[1].shape == (1, 3)   # no elements over the other dims: 0
    assert torch.equal(cover_min([torch.tensor([[1.0], [5.0]]), torch.tensor([[2.0, 3.0]])]),
                       torch.tensor([[1.0, 1.0], [2.0, 3.0]]))


HEAD = 'optimizer T "t"\nhyper lr = 0.1\n'
COVER_SPEC = HEAD + """state acc : cover = 1
update {
  total = acc * 2 + sum(grad, cover)
  acc = max(acc, amax(grad, cover))
  param = param - lr * (total + mean(grad * grad, cover))
}"""


def test_a_cover_spec_of_other_reductions_matches_numpy():
    """A spec of its own (not SM3): math on covers per accumulator, a cover beside an elementwise value
    read as its min, sum and mean over the other dims."""
    cls = load(COVER_SPEC)
    p = _params(seed=3, shapes=((2, 3), (4,)))
    opt = cls(p, lr=0.5)
    before = [x.detach().clone() for x in p]
    _run(opt, p, 1)
    for x0, x in zip(before, p):
        g = x.grad
        dims = [tuple(d for d in range(g.dim()) if d != i) or None for i in range(g.dim())]
        sums = [g.sum(dim=d, keepdim=True) if d else g for d in dims]
        means = [(g * g).mean(dim=d, keepdim=True) if d else g * g for d in dims]
        # total + mean(...) is a sum of covers, so a cover: accumulator by accumulator, then its min
        per = [0.5 * ((2.0 + s) + m) for s, m in zip(sums, means)]
        torch.testing.assert_close(x.detach(), x0 - torch.stack(torch.broadcast_tensors(*per)).amin(0))
        for i in range(g.dim()):
            want = torch.maximum(torch.ones(()), g.abs().amax(dim=dims[i], keepdim=True) if dims[i] else g.abs())
            assert torch.equal(opt.state[x][f"acc_{i}"], want)


def test_what_the_paths_refuse():
    p = [torch.randn(3, 4, requires_grad=True)]
    with pytest.raises(RuntimeError, match="fused=True is not supported: its cover states"):
        SM3(p, fused=True)
    with pytest.raises(ValueError, match=r"^learning rate must be positive. \(-1.0 > 0\)$"):
        SM3(p, lr=-1.0)
    with pytest.raises(ValueError, match=r"^beta must be in the range \[0.0, 1.0\]$"):
        SM3(p, beta=1.5)
    z = torch.randn(3, 4, dtype=torch.complex64, requires_grad=True)
    z.grad = torch.randn_like(z)
    with pytest.raises(RuntimeError, match="does not support complex parameters"):
        SM3([z]).step()
    e = torch.zeros(5, 3, requires_grad=True)
    e.grad = torch.zeros(5, 3).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        SM3([e]).step()
    with pytest.raises(RuntimeError, match="over all dims but one would cross shards"):
        SM3([dtensor_like(3, 4)]).step()


def test_state_dicts_from_elsewhere_are_refused_by_key():
    other = torch.optim.Adam([torch.randn(3, 4, requires_grad=True)])
    _run(other, other.param_groups[0]["params"], 1)
    opt = SM3([torch.randn(3, 4, requires_grad=True)])
    with pytest.raises(ValueError, match="another optimizer's state_dict"):
        opt.load_state_dict(other.state_dict())
    mine = SM3([torch.randn(3, 4, requires_grad=True)])
    _run(mine, mine.param_groups[0]["params"], 1)
    bad = mine.state_dict()
    bad["state"][0]["accumulator_1"] = torch.zeros(1, 5)
    with pytest.raises(ValueError, match=r"state 'accumulator_1' of parameter 0 has shape \(1, 5\), expected \(1, 4\)"):
        SM3([torch.randn(3, 4, requires_grad=True)]).load_state_dict(bad)
    partial = mine.state_dict()
    del partial["state"][0]["accumulator_1"]
    with pytest.raises(ValueError, match=r"lacks \['accumulator_1'\]"):
        SM3([torch.randn(3, 4, requires_grad=True)]).load_state_dict(partial)


SPEC_ERRORS = [
    ("state c : cover = zeros\nupdate { c = grad * grad }", "state 'c' keeps one accumulator per dim (a cover)"),
    ("state c : cover = zeros\nupdate { c = mean(grad, row) }", "varies per row"),
    ("state c : cover = empty\nupdate { param = param }", "a cover state starts as `zeros`"),
    ("state c : cover = zeros\nupdate { if amax(grad, cover) > 0 { param = param } }", "the condition of `if`"),
    ("state c : cover = zeros\nupdate { x = item(c) param = param - x }", "varies per accumulator of a cover"),
    ("state c : cover = zeros\nstate s : scalar = 0\nupdate { s = c }", "varies per accumulator of a cover"),
    ("state c : covers = zeros\nupdate { param = param }", "unknown state shape 'covers'"),
    ("sparse rows\nstate c : cover = zeros\nupdate { param = param - lr * c * grad }", "depends on the parameter's shape"),
]


@pytest.mark.parametrize("body, message", SPEC_ERRORS, ids=[m[:30] for _, m in SPEC_ERRORS])
def test_spec_errors_name_the_problem(body, message):
    with pytest.raises(CompileError) as info:
        compile_spec(HEAD + body, "t.opt")
    assert message in str(info.value)
