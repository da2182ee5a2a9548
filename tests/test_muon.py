"""Matrix updates (newton_schulz()), choice hypers, `require`s on the param's shape, and Muon:
bit-identical to torch.optim.Muon on loop and foreach, one optimizer mixing Muon for the matrices with
another rule for the rest, and the errors a spec or a user gets."""
from __future__ import annotations

import pytest
import torch

from optdsl import load
from optdsl.compiler import compile_spec
from optdsl.diagnostics import CompileError
from optdsl.optim import Muon
from stepping import assert_same_state, dtensor_like, make_params, run as _run

SHAPES = ((5, 7), (8, 3), (4, 4), (1, 6), (6, 1), (1, 1))
COMBOS = [{}, {"nesterov": False, "momentum": 0.5, "weight_decay": 0.0},
          {"adjust_lr_fn": "match_rms_adamw", "lr": 0.1, "eps": 1e-2},
          {"adjust_lr_fn": "original", "ns_steps": 2, "ns_coefficients": (2.0, -1.5, 0.5)}]


def _params(shapes=SHAPES, dtype=torch.float32, seed=1):
    return make_params(shapes, dtype, seed)


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("combo", COMBOS, ids=["defaults", "plain-momentum", "match-rms-adamw", "two-steps"])
def test_bit_identical_to_torch_muon(combo, foreach):
    a, b = _params(), _params()
    ref, ours = torch.optim.Muon(a, **combo), Muon(b, foreach=foreach, **combo)
    _run(ref, a, 6)
    _run(ours, b, 6)
    assert_same_state(ref, ours, a, b)


def test_transposed_and_low_precision_params():
    # a transposed (non-contiguous) param; bf16 and fp16 params with nesterov, as torch rounds them
    a = [torch.randn(7, 4).t().contiguous().t().requires_grad_()]
    b = [a[0].detach().clone().t().contiguous().t().requires_grad_()]
    assert not a[0].is_contiguous() and not b[0].is_contiguous()
    ref, ours = torch.optim.Muon(a), Muon(b)
    _run(ref, a, 4)
    _run(ours, b, 4)
    assert_same_state(ref, ours, a, b)
    for dtype in (torch.bfloat16, torch.float16):
        a, b = _params(dtype=dtype), _params(dtype=dtype)
        ref, ours = torch.optim.Muon(a), Muon(b, foreach=True)
        _run(ref, a, 4)
        _run(ours, b, 4)
        assert_same_state(ref, ours, a, b)


def test_torch_scales_a_bf16_buffer_in_place_without_nesterov_and_ours_keeps_it():
    # torch.optim.Muon's `grad.bfloat16()` is the buffer itself there, and its iteration divides it in
    # place by its norm; ours keeps the momentum the rule says (tests/test_api_parity.py's exception)
    a, b = _params(((4, 3),), torch.bfloat16), _params(((4, 3),), torch.bfloat16)
    ref, ours = torch.optim.Muon(a, nesterov=False), Muon(b, nesterov=False)
    _run(ref, a, 1)
    _run(ours, b, 1)
    g = torch.randn(4, 3, generator=torch.Generator().manual_seed(100)).bfloat16()
    kept = torch.zeros(4, 3, dtype=torch.bfloat16).lerp_(g, 0.05)
    assert torch.equal(ours.state[b[0]]["momentum_buffer"], kept)
    assert not torch.equal(ref.state[a[0]]["momentum_buffer"], kept)


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_checkpoint_cross_loads_mid_training_both_ways(direction):
    first, second = (torch.optim.Muon, Muon) if direction == "torch_to_ours" else (Muon, torch.optim.Muon)
    a, b = _params(), _params()
    whole = torch.optim.Muon(a, adjust_lr_fn="match_rms_adamw")
    _run(whole, a, 6)
    half = first(b, adjust_lr_fn="match_rms_adamw")
    _run(half, b, 3)
    resumed = second(b)
    resumed.load_state_dict(half.state_dict())
    assert resumed.param_groups[0]["adjust_lr_fn"] == "match_rms_adamw"
    assert resumed.param_groups[0]["ns_steps"] == 5 and isinstance(resumed.param_groups[0]["ns_steps"], int)
    _run(resumed, b, 3, start=3)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_what_muon_refuses_as_torch_does():
    ok = [torch.randn(3, 4, requires_grad=True)]
    for bad, kwargs in (([torch.randn(5, requires_grad=True)], {}), (ok, {"adjust_lr_fn": "cosine"}),
                        (ok, {"lr": -1.0}), (ok, {"momentum": -0.5}), (ok, {"weight_decay": -1.0})):
        with pytest.raises(ValueError) as want:
            torch.optim.Muon(bad, **kwargs)
        with pytest.raises(ValueError) as got:
            Muon(bad, **kwargs)
        assert str(got.value) == str(want.value)
    opt = Muon(ok)
    with pytest.raises(ValueError, match=r"size: torch.Size\(\[2, 3, 4\]\)"):
        opt.add_param_group({"params": [torch.randn(2, 3, 4, requires_grad=True)]})
    assert len(opt.param_groups) == 1   # the refused group is not kept
    with pytest.raises(ValueError, match="Number of steps must be less than 100"):
        _run(Muon(ok, ns_steps=100), ok, 1)
    with pytest.raises(RuntimeError, match="fused=True is not supported: its whole-matrix op"):
        Muon(ok, fused=True)
    z = torch.randn(3, 4, dtype=torch.complex64, requires_grad=True)
    z.grad = torch.randn_like(z)
    with pytest.raises(RuntimeError, match="Muon does not support complex parameters"):
        Muon([z]).step()
    e = torch.zeros(5, 3, requires_grad=True)
    e.grad = torch.zeros(5, 3).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        Muon([e]).step()
    with pytest.raises(RuntimeError, match="does not support DTensor .*whole matrix"):
        Muon([dtensor_like(3, 4)]).step()


MIXED = '''optimizer MuonSGD "Muon for the matrices, SGD for the rest"
hyper lr = 0.02
hyper other_lr = 0.1
hyper momentum = 0.95
state momentum_buffer = zeros if ndim == 2
update {
  if ndim == 2 {
    momentum_buffer = lerp(momentum_buffer, grad, 1 - momentum)
    m = lerp(grad, momentum_buffer, momentum)
    o = newton_schulz(m, 3.4445, -4.7750, 2.0315, 5, 1e-7)
    param = param - lr * sqrt(max(1, size(0) / size(1))) * o
  } else {
    param = param - other_lr * grad
  }
}
'''


def test_one_optimizer_takes_muon_for_the_matrices_and_another_rule_for_the_rest():
    shapes = ((5, 7), (7,), (3, 5), (), (2, 3, 4))
    a, b = _params(shapes), _params(shapes)
    cls = load(MIXED)
    matrices = [p for p in a if p.ndim == 2]
    ref_muon = torch.optim.Muon(matrices, lr=0.02, weight_decay=0.0)
    ref_sgd = torch.optim.SGD([p for p in a if p.ndim != 2], lr=0.1)
    ours = cls(b)
    for k in range(4):
        g = torch.Generator().manual_seed(100 + k)
        for x, y in zip(a, b):
            x.grad = torch.randn(x.shape, generator=g)
            y.grad = x.grad.clone()
        ref_muon.step()
        ref_sgd.step()
        ours.step()
    for x, y in zip(a, b):
        assert torch.equal(x, y), x.shape
    assert "momentum_buffer" not in ours.state[b[1]]


def test_a_choice_reaches_every_path():
    # a choice read per element: a constexpr in the Triton kernel, a template bit in the C++ one
    cls = load('optimizer Pick "p"\nhyper lr = 0.1\nhyper how = "plain" | "double" | "a-b"\n'
               'update { param = param - lr * (how == "double" ? 2 : how == "a-b" ? 3 : 1) * grad }')
    assert cls(_params(((3,),))).defaults["how"] == "plain"
    for how, factor in (("plain", 1), ("double", 2), ("a-b", 3)):
        for path in ({}, {"foreach": True}, {"fused": True}):
            p = [torch.ones(4, requires_grad=True)]
            p[0].grad = torch.ones(4)
            cls(p, how=how, **path).step()
            assert torch.allclose(p[0].detach(), torch.full((4,), 1 - 0.1 * factor)), (how, path)
    with pytest.raises(ValueError, match=r"^how must be one of 'plain', 'double', 'a-b', not 'triple'$"):
        cls(_params(((3,),)), how="triple")


def test_a_choice_decides_states_requires_and_branches():
    cls = load('optimizer C2 "c"\nhyper lr = 0.1\nhyper mode = "sgd" | "momentum"\nhyper beta = 0.9\n'
               'require mode != "momentum" or beta < 1 else "beta must be < 1 with momentum, not {beta}"\n'
               'state buf = zeros if mode == "momentum"\n'
               'update { if mode == "momentum" { buf = beta * buf + grad  param = param - lr * buf } '
               'else { param = param - lr * grad } }')
    for mode, want, states in (("sgd", 0.8, []), ("momentum", 1 - 0.1 - 0.1 * 1.9, ["buf"])):
        for foreach in (False, True):
            p = [torch.ones(3, requires_grad=True)]
            opt = cls(p, mode=mode, foreach=foreach)
            for _ in range(2):
                p[0].grad = torch.ones(3)
                opt.step()
            assert torch.allclose(p[0].detach(), torch.full((3,), want)) and list(opt.state[p[0]]) == states
    with pytest.raises(ValueError, match="^beta must be < 1 with momentum, not 1.5$"):
        cls([torch.ones(2, requires_grad=True)], mode="momentum", beta=1.5)


HEAD = 'optimizer T "t"\nhyper lr = 0.1\nhyper mode = none | "a" | "b"\n'
SPEC_ERRORS = [
    ("update { param = newton_schulz(grad, 1, 1, 1, 5, 1e-7) }", "needs a 2-D param, and nothing here says"),
    ("require ndim == 2 else \"2-D\"\nupdate { param = newton_schulz(lr, 1, 1, 1, 5, 1e-7) }",
     "give it an elementwise value"),
    ("require ndim == 2 else \"2-D\"\nupdate { param = newton_schulz(grad, norm(grad), 1, 1, 5, 1e-7) }",
     "are numbers known on the host"),
    ("update { param = param - (mode == \"c\" ? 1 : 2) * grad }", "\"c\" is not a choice of 'mode'"),
    ("update { param = param - mode * grad }", "'mode' is a choice (none, \"a\", \"b\"): compare it"),
    ("update { param = param - (lr == \"a\" ? 1 : 2) * grad }", "compared with a choice hyper only"),
    ("hyper m2 = \"x\" | \"x\"\nupdate { param = param }", "'m2' lists \"x\" twice"),
    ("require step > 1 and ndim == 2 else \"no\"\nupdate { param = param }", "a `require` condition may use only"),
    ("require lr > 0 else \"{shape}\"\nupdate { param = param }", "may show {shape}, {ndim}, {numel}"),
]


@pytest.mark.parametrize("body, message", SPEC_ERRORS)
def test_spec_errors_name_the_problem(body, message):
    with pytest.raises(CompileError) as info:
        compile_spec(HEAD + body, "t.opt")
    assert message in str(info.value)
