"""Reductions on the eager paths: every reduction in every scope against torch computed directly,
on the loop and foreach paths; group phases; scalar state stored from a reduction; optional
hypers; empty tensors. (The fused path: tests/test_fused_reductions.py; the interpreter:
tests/test_interp.py.)"""
import copy
import math

import pytest
import torch

import optdsl
from optdsl.diagnostics import CompileError

SHAPES = [(5, 3), (4,), (2, 3, 2), ()]
PATHS = [{"foreach": False}, {"foreach": True}]


def _channels(x):
    return x.reshape(x.shape[0], -1) if x.dim() else x.reshape(1, 1)


def _per_channel(r, x):
    return r.reshape((-1,) + (1,) * (x.dim() - 1)) if x.dim() else r.reshape(())


# reduction -> (per-tensor torch, per-channel torch) on one tensor x (and y for dot)
TORCH = {
    "sum": (lambda x: x.sum(), lambda x: _per_channel(_channels(x).sum(1), x)),
    "mean": (lambda x: x.mean(), lambda x: _per_channel(_channels(x).mean(1), x)),
    "norm": (lambda x: torch.linalg.vector_norm(x), lambda x: _per_channel(torch.linalg.vector_norm(_channels(x), dim=1), x)),
    "rms": (lambda x: x.square().mean().sqrt(), lambda x: _per_channel(_channels(x).square().mean(1).sqrt(), x)),
    "amax": (lambda x: x.abs().max(), lambda x: _per_channel(_channels(x).abs().amax(1), x)),
}


def _spec(expr: str, extra: str = "") -> str:
    return f'optimizer R "r"\nhyper lr = 0.1\n{extra}update {{\n  param = param - lr * {expr} * grad\n}}\n'


def _run(cls, kwargs, steps=1, shapes=SHAPES, seed=0, **opts):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g).requires_grad_() for s in shapes]
    start = [p.detach().clone() for p in params]
    opt = cls(params, **opts, **kwargs)
    grads = []
    for _ in range(steps):
        gs = [torch.randn(p.shape, generator=g) for p in params]
        for p, gr in zip(params, gs):
            p.grad = gr.clone()
        opt.step()
        grads.append(gs)
    return start, grads, [p.detach() for p in params], opt


@pytest.mark.parametrize("kwargs", PATHS, ids=["loop", "foreach"])
@pytest.mark.parametrize("name", sorted(TORCH))
@pytest.mark.parametrize("scope", ["tensor", "channel", "group"])
def test_each_reduction_in_each_scope(name, scope, kwargs):
    arg = "" if scope == "tensor" else f", {scope}"
    cls = optdsl.load(_spec(f"{name}(grad{arg})"))
    start, grads, out, _ = _run(cls, kwargs)
    gs = grads[0]
    if scope == "group":
        flat = torch.cat([x.reshape(-1) for x in gs])
        value = TORCH[name][0](flat)
        expected = [p - 0.1 * value * x for p, x in zip(start, gs)]
    else:
        f = TORCH[name][0 if scope == "tensor" else 1]
        expected = [p - 0.1 * f(x) * x for p, x in zip(start, gs)]
    for a, b in zip(out, expected):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kwargs", PATHS, ids=["loop", "foreach"])
@pytest.mark.parametrize("scope", ["tensor", "channel", "group"])
def test_dot_in_each_scope(scope, kwargs):
    arg = "" if scope == "tensor" else f", {scope}"
    cls = optdsl.load(_spec(f"dot(grad, param{arg})"))
    start, grads, out, _ = _run(cls, kwargs)
    for a, p, x in zip(out, start, grads[0]):
        if scope == "tensor":
            d = (x * p).sum()
        elif scope == "channel":
            d = _per_channel((_channels(x) * _channels(p)).sum(1), x)
        else:
            d = sum((y * q).sum() for y, q in zip(grads[0], start))
        torch.testing.assert_close(a, p - 0.1 * d * x)


@pytest.mark.parametrize("kwargs", PATHS, ids=["loop", "foreach"])
def test_chained_and_nested_reductions(kwargs):
    """A reduction of a value computed from another, across scopes: three group phases in the loop."""
    text = '''optimizer Chain "c"
hyper lr = 0.1
update {
  u = grad / (norm(grad, group) + 1)
  c = u - mean(u, channel)
  s = amax(c) / (rms(c, group) + 1)
  param = param - lr * s * c
}
'''
    cls = optdsl.load(text)
    start, grads, out, _ = _run(cls, kwargs)
    gs = grads[0]
    gn = torch.linalg.vector_norm(torch.cat([x.reshape(-1) for x in gs]))
    us = [x / (gn + 1) for x in gs]
    cs = [u - TORCH["mean"][1](u) for u in us]
    rms = torch.cat([c.reshape(-1) for c in cs]).square().mean().sqrt()
    for a, p, c in zip(out, start, cs):
        torch.testing.assert_close(a, p - 0.1 * (c.abs().max() / (rms + 1)) * c)


NOVOGRAD_LIKE = '''optimizer Nv "scalar state from a reduction"
hyper lr = 0.1
hyper beta = 0.5
state m = zeros
state v: scalar = 0
update {
  n = sum(grad * grad)
  v = v == 0 ? n : beta * v + (1 - beta) * n
  m = beta * m + grad / (sqrt(v) + 1e-8)
  param = param - lr * m
}
'''


def _novograd_reference(start, grads, lr=0.1, beta=0.5):
    ps = [p.clone() for p in start]
    vs = [torch.zeros(()) for _ in ps]
    ms = [torch.zeros_like(p) for p in ps]
    for gs in grads:
        for i, gr in enumerate(gs):
            n = torch.sum(gr * gr)
            vs[i] = n.clone() if vs[i] == 0 else vs[i] * beta + (1 - beta) * n
            ms[i] = beta * ms[i] + gr / (vs[i].sqrt() + 1e-8)
            ps[i] = ps[i] - lr * ms[i]
    return ps, vs


@pytest.mark.parametrize("kwargs", PATHS, ids=["loop", "foreach"])
def test_scalar_state_stored_from_a_reduction(kwargs):
    cls = optdsl.load(NOVOGRAD_LIKE)
    start, grads, out, opt = _run(cls, kwargs, steps=4)
    ref, vs = _novograd_reference(start, grads)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)
    for p, v in zip(opt.param_groups[0]["params"], vs):
        state = opt.state[p]["v"]
        assert state.shape == () and state.dtype == torch.float32
        torch.testing.assert_close(state, v)


def test_scalar_state_from_a_reduction_round_trips_a_checkpoint():
    cls = optdsl.load(NOVOGRAD_LIKE)
    _, _, _, opt = _run(cls, {"foreach": False}, steps=2)
    sd = copy.deepcopy(opt.state_dict())   # (load_state_dict keeps tensors that need no cast: copy, as torch.save would)
    params = [p.detach().clone().requires_grad_() for p in opt.param_groups[0]["params"]]
    fresh = cls(params)
    fresh.load_state_dict(sd)
    for p, q in zip(opt.param_groups[0]["params"], params):
        assert set(opt.state[p]) == set(fresh.state[q]) == {"m", "v"}
        for key in opt.state[p]:
            assert torch.equal(opt.state[p][key], fresh.state[q][key])
    for p, q in zip(opt.param_groups[0]["params"], params):   # and both continue alike
        p.grad = torch.ones_like(p)
        q.grad = torch.ones_like(q)
    opt.step()
    fresh.step()
    for p, q in zip(opt.param_groups[0]["params"], params):
        assert torch.equal(p, q)


@pytest.mark.parametrize("kwargs", PATHS, ids=["loop", "foreach"])
def test_if_on_a_reduction(kwargs):
    text = '''optimizer Proj "if on a reduction"
hyper lr = 0.1
update {
  c = abs(dot(grad, param, channel)) / (norm(grad, channel) * norm(param, channel) + 1e-8)
  g = grad
  if amax(c) < 0.9 {
    g = grad - dot(grad, param) / (dot(param, param) + 1e-8) * param
  }
  param = param - lr * g
}
'''
    cls = optdsl.load(text)
    start, grads, out, _ = _run(cls, kwargs, shapes=[(6, 4), (3,), (2, 2)], seed=3)
    taken = 0
    for a, p, x in zip(out, start, grads[0]):
        cx, cp = _channels(x), _channels(p)
        c = (cx * cp).sum(1).abs() / (cx.norm(dim=1) * cp.norm(dim=1) + 1e-8)
        g = x - (x * p).sum() / ((p * p).sum() + 1e-8) * p if c.max() < 0.9 else x
        taken += bool(c.max() < 0.9)
        torch.testing.assert_close(a, p - 0.1 * g)
    assert taken == 1   # the branch ran for one tensor of three


@pytest.mark.parametrize("kwargs", PATHS, ids=["loop", "foreach"])
def test_reductions_over_no_elements_have_torchs_values(kwargs):
    text = '''optimizer Empty "e"
state s: scalar = 0
state q: scalar = 0
update {
  s = norm(grad) + sum(grad) + amax(grad) + dot(grad, grad) + numel
  q = mean(grad)
  param = param - 0.1 * grad
}
'''
    cls = optdsl.load(text)
    _, _, out, opt = _run(cls, kwargs, shapes=[(0,), (0, 3)])
    for p in opt.param_groups[0]["params"]:
        assert float(opt.state[p]["s"]) == 0.0
        assert math.isnan(float(opt.state[p]["q"]))


OPTIONAL = '''optimizer Clip "optional hyper"
hyper lr = 0.1
hyper max_norm = 1.0 or none where max_norm > 0
update {
  g = grad
  if max_norm != none {
    g = grad / max(norm(grad, group) / max_norm, 1)
  }
  param = param - lr * g
}
'''


@pytest.mark.parametrize("kwargs", PATHS, ids=["loop", "foreach"])
@pytest.mark.parametrize("max_norm", [1.0, 0.25, None])
def test_optional_hyper(max_norm, kwargs):
    cls = optdsl.load(OPTIONAL)
    opts = {} if max_norm == 1.0 else {"max_norm": max_norm}
    start, grads, out, opt = _run(cls, kwargs, **opts)
    assert opt.param_groups[0]["max_norm"] == max_norm
    gn = torch.linalg.vector_norm(torch.cat([x.reshape(-1) for x in grads[0]]))
    clip = 1.0 if max_norm is None else torch.clamp(gn / max_norm, min=1.0)
    for a, p, x in zip(out, start, grads[0]):
        torch.testing.assert_close(a, p - 0.1 * (x / clip))


def test_optional_hyper_is_validated_only_when_given():
    cls = optdsl.load(OPTIONAL)
    with pytest.raises(ValueError, match="Invalid max_norm value: -1.0"):
        cls([torch.zeros(2, requires_grad=True)], max_norm=-1.0)
    cls([torch.zeros(2, requires_grad=True)], max_norm=None)


def test_loop_path_is_phased_for_group_reductions_only():
    """One loop over the tensors per group phase: a per-tensor reduction needs none."""
    from optdsl.compiler import compile_spec
    per_tensor = compile_spec(_spec("norm(grad)"), "a.opt").eager_source
    group = compile_spec(_spec("norm(grad, group)"), "b.opt").eager_source

    def loops(src):
        body = src[src.index("def _single_tensor_"):src.index("def _r_per_tensor")]
        return body.count("for _i, param in enumerate(params):")
    assert loops(per_tensor) == 1
    assert loops(group) == 2
    assert "torch._foreach_norm(grads)" in group   # the foreach path: one call over the group


def test_a_group_reduction_under_a_per_tensor_if_is_refused():
    """Only the tensors taking the branch would compute it (each path combined a different set):
    a compile-time error, pointing at the reduction; before the `if`, the same value is fine."""
    inside = '''optimizer Skip "s"
update {
  g = grad
  if step > 100 {
    g = grad / norm(grad, group)
  }
  param = param - 0.1 * g
}
'''
    with pytest.raises(CompileError, match=r"norm\(…, group\) is one value for the whole group, but under the "
                                           r"per-tensor condition at line 4, column 6"):
        optdsl.load(inside)
    before = inside.replace("  g = grad\n", "  g = grad\n  n = norm(grad, group)\n").replace(
        "grad / norm(grad, group)", "grad / n")
    cls = optdsl.load(before)
    start, grads, out, _ = _run(cls, {"foreach": False})
    for a, p, x in zip(out, start, grads[0]):
        torch.testing.assert_close(a, p - 0.1 * x)


def test_reduction_scope_errors_are_diagnostics():
    with pytest.raises(CompileError, match="varies per channel"):
        optdsl.load('optimizer A "x"\nupdate {\n  if mean(grad, channel) > 0 { param = param - grad }\n}\n')
