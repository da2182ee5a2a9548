"""Group states (`state x : group = 0`): one number per param group, stored once per step()
call before the tensors' update (Program.group_update), read as a hyper by every path."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import optdsl
from optdsl.compiler import compile_ir, compile_spec
from optdsl.diagnostics import CompileError
from optdsl.interp import run

COUNTED = """optimizer Counted "the lr warms up over the step() calls of its group"
hyper lr = 0.1 where lr >= 0
hyper warmup = 4 where warmup >= 1
state calls : group = 0
state lr_max : group = -1
update {
  calls = calls + 1
  lr_now = lr * min(calls / warmup, 1)
  lr_max = max(lr_now, lr_max)
  param = param - lr_max * sign(grad)
}
"""


def _run(cls, grads_at, **kw):
    params = [torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)]
    opt = cls(params, **kw)
    for step, present in enumerate(grads_at):
        for p, has in zip(params, present):
            p.grad = torch.ones_like(p) if has else None
        opt.step()
    return params, opt


@pytest.mark.parametrize("path", [{"foreach": False}, {"foreach": True}, {"fused": True}])
def test_a_group_state_counts_every_step_call_on_every_path(path):
    cls = optdsl.load(COUNTED)
    # step 2: no tensor has a grad; the group still counts it (as group["step"] with `keep step per group`)
    params, opt = _run(cls, [(True, True), (False, False), (True, False), (True, True)], **path)
    assert opt.param_groups[0]["calls"] == 4.0 and opt.param_groups[0]["lr_max"] == 0.1
    # lr_max after each call: 0.025, 0.05, 0.075, 0.1; the first tensor steps on calls 1, 3, 4
    assert params[0].tolist() == pytest.approx([1 - 0.025 - 0.075 - 0.1] * 3)
    assert params[1].tolist() == pytest.approx([1 - 0.025 - 0.1] * 2)


def test_group_states_are_group_keys_not_arguments_and_round_trip():
    cls = optdsl.load(COUNTED)
    with pytest.raises(TypeError):
        cls([torch.ones(1, requires_grad=True)], calls=3)
    params, opt = _run(cls, [(True, True)] * 3)
    saved = copy.deepcopy(opt.state_dict())
    assert saved["param_groups"][0]["calls"] == 3.0
    again = [p.detach().clone().requires_grad_() for p in params]
    fresh = cls(again)
    fresh.load_state_dict(saved)
    opt.add_param_group({"params": [torch.ones(1, requires_grad=True)]})
    assert opt.param_groups[1]["calls"] == 0.0 and opt.param_groups[1]["lr_max"] == -1.0
    for o, ps in ((opt, params), (fresh, again)):
        for p in ps:
            p.grad = torch.ones_like(p)
        o.step()
    assert all(torch.equal(p, q) for p, q in zip(params, again))
    assert fresh.param_groups[0]["calls"] == 4.0


def test_the_interpreter_runs_the_group_update():
    program = compile_ir(COUNTED)
    assert [s.target for s in program.group_update if hasattr(s, "target")] == ["calls", "lr_max"]
    out, interp = run(program, [np.ones(3)], lambda k, i, p: np.ones(3), 5, hypers={"warmup": 2.0})
    assert interp.hypers["calls"] == 5.0
    np.testing.assert_allclose(out[0], 1 - 0.05 - 4 * 0.1)


REFUSED = [
    ("state c : group = 0\nupdate {\n  param = param - grad\n  c = c + 1\n}",
     "only host math", "5:3"),
    ("state c : group = 0\nupdate {\n  if numel > 2 {\n    c = c + 1\n  }\n  param = param - grad\n}",
     "not inside an `if`", "6:5"),
    ("state c : group = 0\nupdate {\n  c = step\n  param = param - grad\n}", "not a value of each tensor", "5:7"),
    ("state c : group = 0\nupdate {\n  x = c * 2\n  c = c + 1\n  param = param - x * grad\n}",
     "reads group state 'c' before its store", "5:7"),
    ("hyper lr = 0.1\nstate c : group = lr\nupdate {\n  param = param - grad\n}", "starts as a number", "4:7"),
    ("state foreach : group = 0\nupdate {\n  param = param - grad\n}", "foreach", "3:7"),
]


@pytest.mark.parametrize("body,message,where", REFUSED, ids=[r[1] for r in REFUSED])
def test_misplaced_group_state_stores_are_refused_where_they_are(body, message, where):
    with pytest.raises(CompileError) as info:
        compile_spec('optimizer G "g"\nflag f = false\n' + body + "\n", "g.opt")
    d = info.value.diagnostics[0]
    assert message in info.value.render() and f"{d.span.line}:{d.span.col}" == where, info.value.render()
