"""Composition: `optimizer Name = wrapper(spec)` and optdsl.compose (optdsl/compose.py).

A wrapper's update runs the wrapped spec's at its `inner` statement; the two are spliced into one
spec, so every backend, the interpreter and the fuzzer see one program. The references here are
pytorch_optimizer.Lookahead around torch.optim classes (also around a generated class: a user file
wrapped needs no registration) and the unwrapped spec's own launches."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_optimizer import Lookahead

import optdsl
from optdsl.registry import REGISTRY, separable_loss
from optdsl import kernel_runtime
from optdsl.compiler import compile_ir, compile_spec
from optdsl.compose import Source, compose, expand
from optdsl.diagnostics import CompileError
from optdsl.interp import run
from optdsl.optim import Adam, Lamb, LookaheadAdam, LookaheadSGD

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ((17, 9), (64,), (1,), (3, 5, 2), ())

MY_RULE = """optimizer SignMomentum "sign of a momentum, a user's own rule"
hyper lr = 0.01 where lr >= 0
hyper beta = 0.9 where 0 <= beta < 1
state m = zeros
update {
  m = lerp(m, grad, 1 - beta)
  param = param - lr * sign(m)
}
"""

# a second wrapper (an EMA of the weights), for nesting: ema(lookahead(adam))
EMA = """wrapper Ema "an exponential moving average of the weights"
hyper ema_decay = 0.9 where 0 <= ema_decay <= 1
state ema = empty
update {
  inner
  ema = is_empty(ema) ? param : lerp(ema, param, 1 - ema_decay)
}
"""


def _params(seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).requires_grad_() for s in shapes]


def _twins(seed=0, shapes=SHAPES):
    base = _params(seed, shapes)
    return [p.detach().clone().requires_grad_() for p in base], [p.detach().clone().requires_grad_() for p in base]


def _train(opts_and_params, steps, seed=1, objective=None):
    """Each step's gradients: random, the same for every optimizer; or, with `objective`
    (registry.separable_loss), from its loss.backward(create_graph=True), for a spec with an `input`."""
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        if objective is not None:
            for opt, params in opts_and_params:
                for p in params:
                    p.grad = None
                objective(params, seed + step).backward(create_graph=True)
                opt.step()
            continue
        grads = None
        for opt, params in opts_and_params:
            if grads is None:
                grads = [torch.randn(p.shape, generator=g) for p in params]
            for p, gr in zip(params, grads):
                p.grad = gr.clone()
            opt.step()


def _path_kwargs(path):
    return {"fused": True} if path == "fused" else {"foreach": path == "foreach"}


# ---- against the reference -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["loop", "foreach", "fused"])
@pytest.mark.parametrize("k,alpha", [(5, 0.5), (3, 0.8)])
def test_lookahead_adam_is_pytorch_optimizers_lookahead_around_torch_adam(path, k, alpha):
    ours, theirs = _twins()
    kw = dict(lr=0.01, weight_decay=0.1, amsgrad=True)
    a = LookaheadAdam(ours, lookahead_k=k, lookahead_alpha=alpha, **kw, **_path_kwargs(path))
    b = Lookahead(torch.optim.Adam(theirs, **kw, foreach=path == "foreach"), k=k, alpha=alpha)
    _train([(a, ours), (b, theirs)], 23)
    for p, q in zip(ours, theirs):
        if path == "fused":   # fp32 in the kernel, in its own order
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        else:                 # torch's ops in torch's order: the same bits
            assert torch.equal(p, q)
        assert torch.equal(a.state[p]["slow_params"], b.state[q]["slow_params"]) or path == "fused"


def test_lookahead_sgd_matches_on_every_path():
    for path in ("loop", "foreach", "fused"):
        ours, theirs = _twins(3)
        a = LookaheadSGD(ours, lr=0.05, momentum=0.9, nesterov=True, lookahead_k=2, **_path_kwargs(path))
        b = Lookahead(torch.optim.SGD(theirs, lr=0.05, momentum=0.9, nesterov=True), k=2, alpha=0.5)
        _train([(a, ours), (b, theirs)], 11)
        for p, q in zip(ours, theirs):
            torch.testing.assert_close(p, q, rtol=1e-5 if path == "fused" else 0, atol=1e-6 if path == "fused" else 0)


def test_a_user_file_wrapped_in_lookahead_needs_no_registration(tmp_path):
    """A user's rule in a file beside the composition; the reference is pytorch_optimizer's
    Lookahead around the same rule compiled alone."""
    (tmp_path / "sign_momentum.opt").write_text(MY_RULE)
    composed = tmp_path / "lookahead_sign.opt"
    composed.write_text('optimizer LookaheadSign "Lookahead around my rule" = lookahead("sign_momentum.opt")\n')
    cls = optdsl.load(composed)
    inner = optdsl.load(tmp_path / "sign_momentum.opt")
    assert cls.__name__ == "LookaheadSign"
    for path in ("loop", "foreach", "fused"):
        ours, theirs = _twins(5)
        a = cls(ours, lookahead_k=3, lookahead_alpha=0.25, **_path_kwargs(path))
        b = Lookahead(inner(theirs, **_path_kwargs(path)), k=3, alpha=0.25)
        _train([(a, ours), (b, theirs)], 10)
        for p, q in zip(ours, theirs):
            assert torch.equal(p, q), path
    # the same class from Python, by the shipped wrapper's name and the file's path
    api = optdsl.compose("lookahead", tmp_path / "sign_momentum.opt", name="LookaheadSign")
    assert api.__name__ == "LookaheadSign"
    ours, theirs = _twins(6)
    a, b = api(ours, lookahead_k=2), cls(theirs, lookahead_k=2)
    _train([(a, ours), (b, theirs)], 5)
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs))


def test_wrappers_nest_and_the_interpreter_runs_the_composition(tmp_path):
    (tmp_path / "ema.opt").write_text(EMA)
    text, _ = expand('optimizer EmaLookaheadAdam = ema(lookahead(adam))\n', "nested.opt", tmp_path)
    program = compile_ir(text, "nested.opt")
    assert {s.name for s in program.states} == {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "slow", "ema"}
    cls = optdsl.load(text)
    ours, theirs = _twins(2)
    a = cls(ours, lr=0.01, lookahead_k=2, ema_decay=0.5)
    b = Lookahead(torch.optim.Adam(theirs, lr=0.01, foreach=False), k=2, alpha=0.5)
    ema = [p.detach().clone() for p in theirs]
    g = torch.Generator().manual_seed(1)
    for step in range(6):
        for p, q in zip(ours, theirs):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        a.step()
        b.step()
        for e, q in zip(ema, theirs):   # the EMA of the weights after Lookahead's step (the first copies)
            e.copy_(q.detach()) if step == 0 else e.lerp_(q.detach(), 0.5)
    for p, q, e in zip(ours, theirs, ema):
        assert torch.equal(p, q)
        assert torch.equal(a.state[p]["ema"], e)
    # the interpreter (float64, the oracle) runs the composed program to the same values
    start = [q.detach().double().numpy() for q in _params(2)]
    g = torch.Generator().manual_seed(1)
    grads = [[torch.randn(p.shape, generator=g).double().numpy() for p in ours] for _ in range(6)]
    out, interp = run(program, start, lambda k, i, p: grads[k][i], 6,
                      hypers={"lr": 0.01, "lookahead_k": 2.0, "ema_decay": 0.5})
    for i, (p, want) in enumerate(zip(ours, out)):
        np.testing.assert_allclose(p.detach().double().numpy(), want, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(a.state[p]["ema"].double().numpy(), interp.state[i]["ema"], rtol=2e-5, atol=2e-6)


# ---- one program: one launch per phase ---------------------------------------------------------------

def _launches(opt, params):
    for p in params:
        p.grad = torch.ones_like(p)
    before = kernel_runtime.LAUNCHES[0], kernel_runtime.COMBINES[0]
    opt.step()
    return kernel_runtime.LAUNCHES[0] - before[0], kernel_runtime.COMBINES[0] - before[1]


def test_a_wrapped_spec_keeps_the_wrapped_specs_launches():
    params, adam_params = _params(shapes=((3, 4), (5,))), _params(shapes=((3, 4), (5,)))
    assert _launches(LookaheadAdam(params, fused=True), params) == _launches(Adam(adam_params, fused=True), adam_params) == (1, 0)
    lookahead_lamb = optdsl.compose("lookahead", "lamb")
    params = _params(shapes=((3, 4), (5,)))
    lamb_params = _params(shapes=((3, 4), (5,)))
    # Lamb: 3 phases (group grad norm and ||w||, then ||update||, then the update), 2 combines
    assert _launches(lookahead_lamb(params, fused=True), params) == _launches(Lamb(lamb_params, fused=True), lamb_params) == (3, 2)


# ---- state -------------------------------------------------------------------------------------------

def test_checkpoint_round_trips_mid_run_and_an_adam_checkpoint_starts_lookahead():
    ours, again = _twins(4)
    a = LookaheadAdam(ours, lookahead_k=3)
    _train([(a, ours)], 4)
    saved = copy.deepcopy(a.state_dict())
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "slow_params"}
    with torch.no_grad():
        for p, q in zip(again, ours):
            p.copy_(q)
    b = LookaheadAdam(again, lookahead_k=3)
    b.load_state_dict(saved)
    _train([(a, ours)], 5, seed=9)
    _train([(b, again)], 5, seed=9)
    assert all(torch.equal(p, q) for p, q in zip(ours, again))
    # Adam's own checkpoint (no slow weights yet): loads, and the slow weights start at the next step
    plain, wrapped = _twins(7)
    adam = torch.optim.Adam(plain, lr=0.01)
    _train([(adam, plain)], 3)
    with torch.no_grad():
        for p, q in zip(wrapped, plain):
            p.copy_(q)
    la = LookaheadAdam(wrapped, lr=0.01)
    la.load_state_dict(adam.state_dict())
    _train([(la, wrapped)], 1)
    assert all(int(la.state[p]["step"]) == 4 and "slow_params" in la.state[p] for p in wrapped)
    # LookaheadAdam's checkpoint is not Adam's: Adam's generated class refuses it, naming the key
    with pytest.raises(ValueError, match="slow_params"):
        Adam(_params(7)).load_state_dict(la.state_dict())


def _resumed(first, second, steps=6, switch_after=3):
    """Lookahead(Adam) k=2 from `first` ("ours" or "theirs"), switched to `second` after
    `switch_after` steps through a state_dict in the other's layout (saved and loaded as bytes)."""
    import io
    from optdsl.layouts import to_lookahead

    def make(kind, params):
        if kind == "ours":
            return LookaheadAdam(params, lr=0.01, lookahead_k=2, lookahead_alpha=0.3, foreach=False)
        return Lookahead(torch.optim.Adam(params, lr=0.01, foreach=False), k=2, alpha=0.3)
    params, _ = _twins(5)
    opt = make(first, params)
    _train([(opt, params)], switch_after, seed=4)
    saved = to_lookahead(opt) if first == "ours" and second == "theirs" else opt.state_dict()
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    opt = make(second, params)
    opt.load_state_dict(torch.load(buffer, weights_only=True))
    _train([(opt, params)], steps - switch_after, seed=40)
    return [p.detach() for p in params]


@pytest.mark.parametrize("first,second", [("ours", "theirs"), ("theirs", "ours")])
def test_a_lookahead_checkpoint_cross_loads_with_pytorch_optimizers_mid_run(first, second):
    straight = _resumed("theirs", "theirs")
    assert all(torch.equal(a, b) for a, b in zip(_resumed("ours", "ours"), straight))
    assert all(torch.equal(a, b) for a, b in zip(_resumed(first, second), straight))


def test_a_lookahead_layout_is_refused_by_an_optimizer_that_is_not_one():
    theirs = Lookahead(torch.optim.Adam(_params(2), lr=0.01), k=2)
    with pytest.raises(ValueError, match=r"pytorch_optimizer.Lookahead's state_dict .*Adam is not a Lookahead"):
        Adam(_params(2)).load_state_dict(theirs.state_dict())


# ---- what is refused, and where ------------------------------------------------------------------

REFUSED = [
    # (composition or wrapper text, files beside it, message, line:col of the caret in the text)
    ('optimizer B = lookahead(nothere)\n', {}, "no spec 'nothere'", "1:25"),
    ('optimizer B = adam(sgd)\n', {}, "'adam' is an optimizer, not a wrapper", "1:15"),
    ('optimizer B = lookahead(lookahead)\n', {}, "'lookahead' is a wrapper: it needs a spec to wrap", "1:25"),
    ('optimizer B = lookahead("rule.txt")\n', {}, "a spec file ends in .opt", "1:25"),
    ('optimizer B = lookahead("self.opt")\n', {"self.opt": 'optimizer S = lookahead("self.opt")\n'},
     "composes itself", "1:25"),
    ('optimizer B = clash(adam)\n', {"clash.opt": "wrapper Clash\nhyper lr = 0.1\nupdate {\n  inner\n}\n"},
     "'lr' is a hyper of the wrapper Clash and a hyper of the spec it wraps (adam.opt:3:7)", "2:7"),
    ('optimizer B = clash(adam)\n',
     {"clash.opt": "wrapper Clash\nstate m = zeros key \"exp_avg\"\nupdate {\n  inner\n  m = param\n}\n"},
     'the state_dict key "exp_avg"', "2:7"),
    ('optimizer B = clash(adam)\n', {"clash.opt": "wrapper Clash\nupdate {\n  inner\n  denom = param\n}\n"},
     "'denom' is a local of the wrapper Clash and a local of the spec it wraps", "4:3"),
    ('optimizer b = lookahead(adam)\n', {}, "CamelCase", "1:11"),
]


@pytest.mark.parametrize("text,files,message,where", REFUSED, ids=[r[2][:40] for r in REFUSED])
def test_refused_compositions_name_the_problem_and_where(tmp_path, text, files, message, where):
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    with pytest.raises(CompileError) as info:
        compile_spec(text, "composed.opt", base=tmp_path)
    rendered = info.value.render()
    assert message in rendered, rendered
    line, col = where.split(":")
    d = info.value.diagnostics[0]
    assert (d.span.line, d.span.col) == (int(line), int(col)), rendered


WRAPPER_SYNTAX = [
    ("wrapper W\nupdate {\n  param = param\n}\n", "exactly once", "1:9"),
    ("wrapper W\nupdate {\n  inner\n  inner\n}\n", "exactly once", "4:3"),
    ("wrapper W\nflag f = true\nupdate {\n  if f {\n    inner\n  }\n}\n", "top level", "5:5"),
    ("optimizer A\nupdate {\n  inner\n  param = param\n}\n", "only a `wrapper` has it", "3:3"),
]


@pytest.mark.parametrize("text,message,where", WRAPPER_SYNTAX, ids=[w[1] for w in WRAPPER_SYNTAX])
def test_inner_stands_once_at_a_wrappers_top_level(text, message, where):
    with pytest.raises(CompileError) as info:
        compile_spec(text, "w.opt")
    assert message in info.value.render()
    d = info.value.diagnostics[0]
    assert f"{d.span.line}:{d.span.col}" == where, info.value.render()


def test_a_wrapper_alone_is_checked_but_is_not_an_optimizer(tmp_path):
    lookahead = ROOT / "specs" / "wrappers" / "lookahead.opt"
    with pytest.raises(CompileError, match="is a wrapper, not an optimizer by itself"):
        compile_spec(lookahead.read_text(), "lookahead.opt")
    bad = tmp_path / "bad.opt"
    bad.write_text("wrapper Bad\nupdate {\n  inner\n  x = nothing\n}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "optdsl", "check", str(lookahead), str(bad)], capture_output=True,
                         text=True, env=env, cwd=tmp_path)
    assert run.returncode == 1
    assert "lookahead.opt: ok (wrapper Lookahead" in run.stdout
    assert "bad.opt:4:7: error" in run.stderr and "nothing" in run.stderr


def test_the_composed_text_is_a_spec_and_optdsl_compose_prints_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "la.opt"
    run = subprocess.run([sys.executable, "-m", "optdsl", "compose", "lookahead", "adam", "--name", "LookaheadAdam",
                          "-o", str(out)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert text.startswith("optimizer LookaheadAdam") and "inner" not in text.split("update {", 1)[1]
    shipped = (ROOT / "specs" / "lookahead_adam.opt").read_text()
    composed, _ = expand(shipped, "lookahead_adam.opt", ROOT / "specs")
    # the same program as the shipped composition (only the header's doc differs)
    assert compile_ir(text).body == compile_ir(composed).body
    assert compose(Source(*_read("lookahead")), Source(*_read("adam")), "LookaheadAdam") == text


def _read(name):
    from optdsl.loader import read_spec
    return read_spec(name)


SHIPPED_SPECS = sorted(p.stem for p in (ROOT / "specs").glob("*.opt")
                       if "=" not in p.read_text().split("\n", 1)[0] and "\nsparse rows" not in p.read_text())
# a spec with `sparse rows` runs at a sparse gradient's rows: a wrapper's `empty` state (the slow
# weights, the average) would hold those rows only, where the reference keeps whole tensors
SPARSE_SPECS = sorted(p.stem for p in (ROOT / "specs").glob("*.opt") if "\nsparse rows" in p.read_text())


@pytest.mark.parametrize("stem", SHIPPED_SPECS)
def test_every_shipped_spec_can_be_wrapped(stem):
    """Each shipped wrapper composes with every shipped spec; Lookahead around it, on the loop
    path, is pytorch_optimizer's Lookahead around the spec's own class, bit for bit."""
    for wrapper in ("ema", "swa"):
        compile_ir(f"optimizer Wrapped = {wrapper}({stem})\n")
    cls = optdsl.load(f"optimizer Lookahead{stem.title().replace('_', '')} = lookahead({stem})\n")
    inner = optdsl.load(ROOT / "specs" / f"{stem}.opt")
    e = REGISTRY.get(inner.__name__)   # params of the ranks the spec takes (Muon: matrices)
    ours, theirs = _twins(8, e.shapes_for(SHAPES) if e else SHAPES)
    a = cls(ours, lookahead_k=2, foreach=False)
    b = Lookahead(inner(theirs, foreach=False), k=2, alpha=0.5)
    _train([(a, ours), (b, theirs)], 5, objective=separable_loss if inner._inputs else None)
    for p, q in zip(ours, theirs):
        assert torch.equal(p, q), stem


@pytest.mark.parametrize("stem", SPARSE_SPECS)
def test_a_sparse_rows_spec_takes_a_wrapper_only_without_an_empty_state(stem):
    """The wrapped spec's `sparse rows` holds for the whole composed update: SWA (its average starts
    at zeros) averages the touched rows; EMA and Lookahead (their states start empty) are refused."""
    assert compile_ir(f"optimizer Wrapped = swa({stem})\n").sparse.startswith("rows")
    for wrapper in ("ema", "lookahead"):
        with pytest.raises(CompileError, match=r"starts empty: the update runs at a sparse gradient's touched rows"):
            compile_ir(f"optimizer Wrapped = {wrapper}({stem})\n")


def test_a_composition_of_one_spec_renames_it():
    cls = optdsl.load("optimizer MyAdam \"Adam, by another name\" = adam\n")
    assert cls.__name__ == "MyAdam" and cls.__doc__ is not None
    ours, theirs = _twins(9)
    a, b = cls(ours, lr=0.01, foreach=False), Adam(theirs, lr=0.01, foreach=False)
    _train([(a, ours), (b, theirs)], 4)
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs))
