"""`input hessian = hutchinson(...)` (optdsl.inputs) and the Adahessian spec against
timm.optim.Adahessian: on the separable loss of the registry (the diagonal exact), and on a small
network, where the probes are timm's own (one generator, same seed, same order), so the loop and
foreach paths agree bit for bit there too."""
from __future__ import annotations

import copy

import pytest
import torch

import optdsl
from optdsl import optim
from optdsl.compiler import compile_spec
from optdsl.diagnostics import CompileError
from optdsl.registry import REGISTRY, separable_loss, timm_class
from optdsl.verify import compare, run_against, with_state

Timm = timm_class("adahessian", "Adahessian")


@pytest.mark.parametrize("path", ["loop", "foreach", "fused"])
def test_adahessian_matches_timm_on_the_separable_loss(path):
    entry = REGISTRY["Adahessian"]
    combo = {"hessian_power": 0.5, "weight_decay": 0.01, "n_samples": 2, "update_each": 2, "avg_conv_kernel": True}
    ours, opt_a, [(theirs, opt_b)] = run_against(entry, combo, path, ("reference",), steps=9)
    xs, ys = with_state(ours, theirs, opt_a, opt_b, check_keys=False)
    assert len(xs) == 3 * len(ours)   # params, exp_avg, exp_hessian_diag_sq
    if path == "fused":
        assert compare(xs, ys)[-1]
    else:
        assert all(torch.equal(x, y) for x, y in zip(xs, ys))
    for a, b in zip(ours, theirs):   # the estimates timm keeps on the tensor, ours in the state
        assert torch.equal(opt_a.state[a]["hessian"], b.hess) if path != "fused" else True
        assert opt_a.state[a]["hessian step"] == opt_b.state[b]["hessian step"] == 9


def _net(seed: int = 0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))


def _train(opt, model, steps: int, create_graph: bool = True):
    g = torch.Generator().manual_seed(11)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=g)
        opt.zero_grad()
        loss = (model(x) ** 2).mean()
        loss.backward(create_graph=create_graph)
        opt.step()


@pytest.mark.parametrize("foreach", [False, True])
def test_on_a_network_the_probes_are_timms_own(foreach):
    """A full Hessian (off-diagonal terms): z ⊙ Hz depends on z, so bit-identical params mean
    the probes are the same numbers as timm's."""
    a, b = _net(), _net()
    ours = optim.Adahessian(a.parameters(), lr=0.05, n_samples=2, foreach=foreach)
    theirs = Timm(b.parameters(), lr=0.05, n_samples=2)
    _train(ours, a, 6)
    _train(theirs, b, 6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_a_gradient_without_a_graph_is_a_clear_error():
    p = torch.nn.Parameter(torch.ones(3))
    opt = optim.Adahessian([p])
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match=r"backward\(create_graph=True\).*param_groups\[0\]\['params'\]\[0\]"):
        opt.step()


def test_the_estimate_is_renewed_every_update_each_steps_and_round_trips():
    model = _net(1)
    opt = optim.Adahessian(model.parameters(), lr=0.05, update_each=3)
    seen = []
    g = torch.Generator().manual_seed(3)
    first = next(model.parameters())
    for _ in range(7):
        x = torch.randn(8, 4, generator=g)
        opt.zero_grad()
        (model(x) ** 2).mean().backward(create_graph=True)
        opt.step()
        seen.append(opt.state[first]["hessian"].clone())
    renewed = [k for k in range(1, 7) if not torch.equal(seen[k], seen[k - 1])]
    assert renewed == [3, 6] and opt.state[first]["hessian step"] == 7
    saved = copy.deepcopy(opt.state_dict())
    twin = _net(1)
    twin.load_state_dict(model.state_dict())
    again = optim.Adahessian(twin.parameters(), lr=0.05, update_each=3)
    again.load_state_dict(saved)
    opt._hutchinson_generator = None   # both draw their next probes from a fresh generator
    _train(opt, model, 4)
    _train(again, twin, 4)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))


HEAD = 'optimizer H "h"\nhyper n = 1\nhyper every = 1\nflag avg = false\nhyper betas = (0.9, 0.99)\n'
REFUSED = [
    ("input h = hutchinsen(n, every, avg)\nupdate {\n  param = param - h * grad\n}", "did you mean 'hutchinson'", "6:11"),
    ("input h = hutchinson(n, every)\nupdate {\n  param = param - h * grad\n}", "takes 3 arguments", "6:7"),
    ("input h = hutchinson(avg, every, avg)\nupdate {\n  param = param - h * grad\n}", "'avg' is not one", "6:22"),
    ("input h = hutchinson(betas, every, avg)\nupdate {\n  param = param - h * grad\n}", "'betas' is not one", "6:22"),
    ("input h = hutchinson(n, every, n)\nupdate {\n  param = param - h * grad\n}", "is a flag", "6:32"),
    ("input h = hutchinson(n, every, avg)\nupdate {\n  h = grad\n  param = param - h * grad\n}",
     "cannot assign to input 'h'", "8:3"),
    ("input h = hutchinson(n, every, avg)\nupdate {\n  param = param - h * grad\n}\non train { param = h }\non eval { }",
     "it has no 'h'", "10:20"),
    ("input n = hutchinson(n, every, avg)\nupdate {\n  param = param - grad\n}", "declared twice", "6:7"),
]


@pytest.mark.parametrize("body,message,where", REFUSED, ids=[r[1] for r in REFUSED])
def test_misdeclared_inputs_are_refused_where_they_are(body, message, where):
    with pytest.raises(CompileError) as info:
        compile_spec(HEAD + body + "\n", "h.opt")
    d = info.value.diagnostics[0]
    assert message in info.value.render() and f"{d.span.line}:{d.span.col}" == where, info.value.render()


def test_a_user_spec_reads_the_hessian_input_on_every_path():
    """A Newton-like step of the user's own: θ ← θ - lr·g / (|h| + δ), exactly -lr·g/(d + θ² + δ)
    on the separable loss."""
    cls = optdsl.load('optimizer Newtonish "diagonal Newton"\nhyper lr = 0.5\nhyper delta = 0.1\nhyper k = 1\n'
                      'flag avg = false\ninput h = hutchinson(k, k, avg)\n'
                      'update {\n  param = param - lr * grad / (abs(h) + delta)\n}\n')
    base = [torch.randn(5, generator=torch.Generator().manual_seed(0)), torch.randn(2, 3)]
    results = []
    for path in ({"foreach": False}, {"foreach": True}, {"fused": True}):
        ps = [b.clone().requires_grad_() for b in base]
        opt = cls(ps, **path)
        for step in range(3):
            for p in ps:
                p.grad = None
            separable_loss(ps, step).backward(create_graph=True)
            g = torch.Generator().manual_seed(step)
            expect = []
            for p in ps:
                torch.randn(p.shape, generator=g)   # c: drawn first, as separable_loss draws it
                d = 0.5 + torch.rand(p.shape, generator=g)
                expect.append(p.detach() - 0.5 * p.grad.detach() / ((d + p.detach() ** 2).abs() + 0.1))
            opt.step()
            assert all(torch.allclose(p, e, atol=1e-6) for p, e in zip(ps, expect))
        results.append([p.detach().clone() for p in ps])
    assert all(torch.equal(x, y) for x, y in zip(results[0], results[1]))
