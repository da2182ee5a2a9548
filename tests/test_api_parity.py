"""torch.optim API parity for every shipped optimizer (driven by optdsl.registry.REGISTRY,
so a new spec is covered the day it is registered).

Each test runs a generated class beside its reference (`entry.make_reference`, a
torch.optim class for most) through what a training script does -- param groups,
LR schedulers, closures, hooks, zero_grad, torch.compile, odd dtypes and shapes,
capturable, state_dict save/load/cross-load, invalid arguments -- and fails where
the behaviour differs: results beyond torch.testing.assert_close's defaults, a
different exception or message, a different param-group or state layout.

Deliberate differences from torch.optim are asserted as such, with the reason,
in the tests that meet them (search for "differs from torch")."""
from __future__ import annotations

import copy
import inspect
import io
import math

import pytest
import torch
from torch import nn
from torch.optim import optimizer as _optimizer_module

from optdsl import optim
from optdsl import runtime as _rt
from optdsl.registry import REGISTRY, with_set_gradients

NAMES = with_set_gradients()   # Adahessian needs graph gradients: tests/test_adahessian.py
TORCH_NAMES = [n for n in NAMES if REGISTRY[n].torch_class is not None]
SHAPES = ((4, 3), (5,), (2, 1, 3))

# Differs from torch: keys torch.optim keeps in param groups that a generated class does not.
# torch.optim.AdamW is Adam with `decoupled_weight_decay` forced True (and kept in its groups);
# the AdamW spec is decoupled by construction and has no such flag. Cross-loading is unaffected.
TORCH_ONLY_GROUP_KEYS = {"AdamW": {"decoupled_weight_decay"}}
# Differs from torch: hypers whose per-group value torch.optim ignores. torch.optim.Adagrad fills
# `sum` from the constructor's initial_accumulator_value (self.defaults) for every group, a group's
# own value notwithstanding; a generated class starts each state from its group's hypers
# (test_group_hypers_start_their_states_where_torch_reads_defaults).
# pytorch_optimizer.Amos reads c_coef, d_coef and maximize from the constructor only (attributes
# of the optimizer, not group keys).
# pytorch_optimizer.Lookahead takes k and alpha in its constructor, for every group.
TORCH_IGNORES_GROUP_VALUE = {"Adagrad": {"initial_accumulator_value"}, "Amos": {"c_coef", "d_coef", "maximize"},
                             "SM3": {"maximize"},   # pytorch_optimizer.SM3 keeps maximize on the optimizer
                             "LookaheadAdam": {"lookahead_k", "lookahead_alpha"},
                             "LookaheadSGD": {"lookahead_k", "lookahead_alpha"}}
# Differs from the (non-torch) reference: it counts steps per param group, also on a step where no
# parameter has a gradient; torch.optim (and a generated class) counts them per parameter, on the
# steps it has a gradient. The tests give such a reference gradients on every step it takes.
GROUP_STEP_COUNT = {"Amos": "pytorch_optimizer.Amos keeps `step` in its param group",
                    "Lamb": "timm's Lamb keeps `step` in its param group",
                    "EmaAdamW": "AveragedModel averages every parameter on every update, with a gradient or not",
                    "SwaSGD": "as EmaAdamW"}
# Differs from the reference: it modifies p.grad in place (pytorch_optimizer.Amos negates it under
# maximize=True), so a step re-using the same gradients differs; a generated class leaves p.grad as
# it is, as torch.optim does. The tests that re-use gradients run such a reference without the flag.
MUTATES_GRAD = {"Amos": {"maximize": False}}
# Differs from the reference on bf16 params: torch.optim.Muon's `grad.bfloat16()` is the momentum
# buffer itself where nesterov=False, and its iteration divides that in place by its norm (the buffer
# is scaled every step); ours keeps the buffer, and the low-precision test takes nesterov=True there
LOW_PRECISION_COMBO = {"Muon": {"nesterov": True}}
# Differs from the reference: timm's Lamb clips every group by one gradient norm over all groups
# (with the constructor's max_grad_norm); a group-wide reduction covers one param group. With
# several groups the tests turn the clipping off.
ACROSS_GROUPS = {"Lamb": {"max_grad_norm": None}}
# Differs from the reference: pytorch_optimizer.Lookahead is an optimizer around another, and the
# global step hooks fire for both (the same for optdsl.references.Averaged, AveragedModel after a
# torch optimizer); a generated class is one optimizer and fires them once, as
# torch.optim does (the test checks that order for every class).
OWN_HOOK_ORDER = {"LookaheadAdam": "Lookahead steps an optimizer of its own", "LookaheadSGD": "as LookaheadAdam",
                  "EmaAdamW": "optdsl.references.Averaged steps an optimizer of its own", "SwaSGD": "as EmaAdamW"}


# ---- helpers ---------------------------------------------------------------------------------


def entry(name):
    return REGISTRY[name]


def our_class(name):
    return getattr(optim, name)


def kwargs_of(e, combo) -> dict:
    return {**e.base, **combo}


def combo_of(name, which=-1) -> dict:
    combos = entry(name).combos()
    return dict(combos[which])


def shapes_for(name, shapes=SHAPES) -> tuple:
    return entry(name).shapes_for(shapes)


def accepted(name, module: nn.Module) -> list[nn.Parameter]:
    """The module's params the spec's reference takes (Muon: the weights, not the biases)."""
    ranks = entry(name).ranks
    return [p for p in module.parameters() if ranks is None or p.ndim in ranks]


def make_params(name, seed=0, shapes=SHAPES, dtype=torch.float32) -> list[nn.Parameter]:
    shapes = shapes_for(name, shapes)
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(s, generator=g, dtype=torch.float32).to(dtype)) for s in shapes]


def twin(params) -> list[nn.Parameter]:
    return [nn.Parameter(p.detach().clone()) for p in params]


def set_grads(step: int, *param_lists, skip=()):
    """The same gradients on every list (index i of each list is the same tensor's twin);
    indices in `skip` get no gradient this step (a parameter that lags behind)."""
    g = torch.Generator().manual_seed(1000 + step)
    for i, p in enumerate(param_lists[0]):
        grad = None if i in skip else torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype)
        for ps in param_lists:
            ps[i].grad = None if grad is None else grad.clone()


def reference(name, params, combo, foreach=False, **extra):
    e = entry(name)
    kw = {**kwargs_of(e, combo), **extra}
    if e.reference_foreach:
        kw.setdefault("foreach", foreach)
    return e.reference(params, **kw)


def paths_of(name) -> list[str]:
    """Our paths of `name`: loop, foreach, and fused where the spec has one (Entry.supports)."""
    return [path for path in ("loop", "foreach", "fused") if entry(name).supports(path)]


def skip_refused(name, path) -> None:
    if not entry(name).supports(path):
        pytest.skip(f"{name} refuses {path}=True (tests/test_factored.py and tests/test_muon.py check the refusal)")


def ours(name, params, combo, path="loop", **extra):
    kw = {**kwargs_of(entry(name), combo), **extra}
    if path == "foreach":
        kw["foreach"] = True
    elif path == "fused":
        kw["fused"] = True
    else:
        kw.setdefault("foreach", False)
    return our_class(name)(params, **kw)


def assert_params_close(xs, ys, **tol):
    for x, y in zip(xs, ys):
        torch.testing.assert_close(x.detach(), y.detach(), **tol)


def outcome(fn):
    """('ok', None) or (exception type name, message): what a call did, to compare with torch's."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the point is to compare whatever happened
        return type(exc).__name__, str(exc)
    return "ok", None


def torch_accepts(cls, name: str) -> bool:
    return name in inspect.signature(cls.__init__).parameters


def per_tensor_branches(name) -> bool:
    """Whether the spec branches on a per-tensor host value (RAdam's rho_t > 5, ASGD's mu != 1)."""
    from optdsl.build import spec_files
    from optdsl.compiler import compile_ir
    from optdsl.ir import If, Kind, walk_stmts
    for path in spec_files():
        p = compile_ir(path.read_text(encoding="utf-8"), path.name)
        if p.name == name:
            return any(isinstance(s, If) and s.cond.kind is Kind.TENSOR_SCALAR for s in walk_stmts(p.body))
    raise LookupError(name)


# ---- param groups ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_per_group_hypers_flags_and_add_param_group(name):
    """Two groups with different hypers and flags (one foreach, one not); a parameter whose grad
    is None on some steps (its own step count lags); then add_param_group with a third setting."""
    e = entry(name)
    combos = e.combos()
    c0, c1, c2 = dict(combos[0]), dict(combos[-1]), dict(combos[len(combos) // 2])
    for c in (c0, c1, c2):
        c.update(ACROSS_GROUPS.get(name, {}))
    for key in TORCH_IGNORES_GROUP_VALUE.get(name, ()):
        c1.pop(key, None)
        c2.pop(key, None)
    base = make_params(name, 0)
    extra = make_params(name, 1, shapes=((3, 2),))
    a, b = twin(base), twin(base)
    ea, eb = twin(extra), twin(extra)
    g1 = dict(c1)
    lr = kwargs_of(e, c1).get("lr", inspect.signature(our_class(name).__init__).parameters["lr"].default)
    g1["lr"] = lr * 0.5
    groups_a = [{"params": a[:2], "foreach": False}, {"params": a[2:], "foreach": True, **g1}]
    groups_b = [{"params": b[:2]}, {"params": b[2:], **g1}]
    if e.reference_foreach:
        groups_b[0]["foreach"], groups_b[1]["foreach"] = False, True
    opt_a = our_class(name)(groups_a, **kwargs_of(e, c0))
    opt_b = e.reference(groups_b, **kwargs_of(e, c0))
    for step in range(4):
        set_grads(step, a, b, skip=(1,) if step == 1 and name not in GROUP_STEP_COUNT else ())
        opt_a.step()
        opt_b.step()
    assert_params_close(a, b)
    opt_a.add_param_group({"params": ea, **c2})
    opt_b.add_param_group({"params": eb, **c2})
    for step in range(4, 7):
        set_grads(step, a + ea, b + eb)
        opt_a.step()
        opt_b.step()
    assert_params_close(a + ea, b + eb)
    if e.torch_class is not None:
        # same group layout as torch: every key torch keeps, with the same value
        for ga, gb in zip(opt_a.param_groups, opt_b.param_groups):
            for key, value in gb.items():
                if key != "params" and key not in TORCH_ONLY_GROUP_KEYS.get(name, ()):
                    assert key in ga, f"group key {key!r} missing"
                    assert ga[key] == value, (key, ga[key], value)
        assert set(opt_b.defaults) - TORCH_ONLY_GROUP_KEYS.get(name, set()) <= set(opt_a.defaults)
        for pa, pb in zip(a + ea, b + eb):   # per-parameter step counts (the lagging one included)
            if "step" in opt_b.state[pb]:
                assert float(opt_a.state[pa]["step"]) == float(opt_b.state[pb]["step"])


def test_group_hypers_start_their_states_where_torch_reads_defaults():
    """The Adagrad difference above, pinned: each group's `sum` starts at its own value."""
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = optim.Adagrad([{"params": [a]}, {"params": [b], "initial_accumulator_value": 0.5}],
                        lr=0.1, initial_accumulator_value=0.1)
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    opt.step()
    assert torch.allclose(opt.state[a]["sum"], torch.full((2,), 1.1))
    assert torch.allclose(opt.state[b]["sum"], torch.full((2,), 1.5))


# ---- LR schedulers ---------------------------------------------------------------------------


SCHEDULERS = {
    "StepLR": lambda opt, lr: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
    "CosineAnnealingLR": lambda opt, lr: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5, eta_min=lr * 0.1),
    "OneCycleLR": lambda opt, lr: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr * 4, total_steps=8,
                                                                      cycle_momentum=True),
}


@pytest.mark.parametrize("sched", list(SCHEDULERS))
@pytest.mark.parametrize("name", NAMES)
def test_lr_schedulers_change_the_next_step_as_with_torch(name, sched):
    """The scheduler rewrites group['lr'] (OneCycleLR also `betas[0]` or `momentum`) between
    steps; the next step must use the new values exactly as the reference does."""
    e = entry(name)
    combo = combo_of(name)
    a = make_params(name, 0)
    b = twin(a)
    opt_a, opt_b = ours(name, a, combo), reference(name, b, combo)
    lr = opt_a.param_groups[0]["lr"]
    made_a, made_b = outcome(lambda: SCHEDULERS[sched](opt_a, lr)), outcome(lambda: SCHEDULERS[sched](opt_b, lr))
    assert made_a == made_b
    if made_a[0] != "ok":   # OneCycleLR(cycle_momentum=True) on an optimizer without momentum or betas
        assert "momentum" not in opt_a.defaults and "betas" not in opt_a.defaults
        return
    s_a, s_b = SCHEDULERS[sched](opt_a, lr), SCHEDULERS[sched](opt_b, lr)
    for step in range(6):
        set_grads(step, a, b)
        opt_a.step()
        opt_b.step()
        s_a.step()
        s_b.step()
        for ga, gb in zip(opt_a.param_groups, opt_b.param_groups):
            for key in ("lr", "betas", "momentum"):
                if key in gb:
                    assert ga[key] == gb[key], (key, ga[key], gb[key])
    assert_params_close(a, b)
    assert s_a.get_last_lr() == s_b.get_last_lr()


# ---- zero_grad, closures, hooks ----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_zero_grad_and_steps_without_grads(name):
    combo = combo_of(name)
    a = make_params(name, 0)
    b = twin(a)
    opt_a, opt_b = ours(name, a, combo), reference(name, b, combo)
    set_grads(0, a, b)
    opt_a.step()
    opt_b.step()
    opt_a.zero_grad(set_to_none=False)
    opt_b.zero_grad(set_to_none=False)
    for pa, pb in zip(a, b):
        assert pa.grad is not None and pb.grad is not None
        assert torch.equal(pa.grad, pb.grad) and not pa.grad.any()
    opt_a.zero_grad()   # set_to_none=True is the default, as in torch
    opt_b.zero_grad()
    assert all(p.grad is None for p in a) and all(p.grad is None for p in b)
    before = copy.deepcopy(opt_a.state_dict())
    snapshot = [p.detach().clone() for p in a]
    opt_a.step()   # no grads anywhere: nothing moves, no step is counted
    if name not in GROUP_STEP_COUNT:
        opt_b.step()
    assert all(torch.equal(x, y) for x, y in zip(a, snapshot))
    after = opt_a.state_dict()
    for k, st in before["state"].items():
        for key, value in st.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(after["state"][k][key]))
    set_grads(1, a, b)
    opt_a.step()
    opt_b.step()
    assert_params_close(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_closure_returns_loss_and_step_hooks_fire(name):
    combo = {**combo_of(name), **MUTATES_GRAD.get(name, {})}   # the last step re-uses the gradients
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    logs = {}
    results = []
    for side in ("ours", "ref"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
        opt = ours(name, accepted(name, model), combo) if side == "ours" else reference(name, accepted(name, model), combo)
        log = logs.setdefault(side, [])
        opt.register_step_pre_hook(lambda o, args, kw, log=log, opt=opt: log.append(("pre", o is opt, len(args), sorted(kw))))
        opt.register_step_post_hook(lambda o, args, kw, log=log, opt=opt: log.append(("post", o is opt, len(args), sorted(kw))))
        global_pre = _optimizer_module.register_optimizer_step_pre_hook(
            lambda o, args, kw, log=log: log.append(("global-pre",)))

        def closure(model=model, opt=opt, log=log):
            log.append(("closure", torch.is_grad_enabled()))
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            return loss
        try:
            losses = [opt.step(closure) for _ in range(3)]
        finally:
            global_pre.remove()
        assert all(isinstance(loss, torch.Tensor) for loss in losses)
        assert opt.step() is None   # no closure: no loss
        results.append(([p.detach().clone() for p in model.parameters()], [float(v) for v in losses]))
    if name not in OWN_HOOK_ORDER:
        assert logs["ours"] == logs["ref"]
    assert logs["ours"][:4] == [("global-pre",), ("pre", True, 2, []), ("closure", True), ("post", True, 2, [])]
    assert_params_close(results[0][0], results[1][0])
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-5, abs=1e-7)


# ---- torch.compile: tests/test_compile.py (fullgraph for every spec, one inductor compile) ----


def _supports_complex(name) -> bool:
    return getattr(our_class(name), "_supports_complex", True)


@pytest.mark.parametrize("name", NAMES)
def test_complex_params_are_their_real_view(name):
    """A complex parameter is optimized as its real view (torch.optim's rule): the same result as
    the real-view parameter optimized on its own, on every path; and torch's result where the
    reference is a torch.optim class."""
    if not _supports_complex(name):
        pytest.skip(f"{name} refuses complex parameters")
    e = entry(name)
    combo = combo_of(name)
    g = torch.Generator().manual_seed(5)
    z = torch.randn(3, 2, dtype=torch.complex64, generator=g)
    r = torch.randn(4, generator=g)
    runs = {}
    for path in paths_of(name):
        params = [nn.Parameter(z.clone()), nn.Parameter(r.clone())]
        views = [nn.Parameter(torch.view_as_real(z).clone()), nn.Parameter(r.clone())]
        opt, opt_v = ours(name, params, combo, path), ours(name, views, combo, path)
        for step in range(3):
            gg = torch.Generator().manual_seed(50 + step)
            gz, gr = torch.randn(3, 2, dtype=torch.complex64, generator=gg), torch.randn(4, generator=gg)
            params[0].grad, params[1].grad = gz.clone(), gr.clone()
            views[0].grad, views[1].grad = torch.view_as_real(gz).clone(), gr.clone()
            opt.step()
            opt_v.step()
        assert params[0].dtype == torch.complex64
        for key, value in opt.state[params[0]].items():   # states of a complex param are complex, as torch keeps them
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                assert value.dtype == torch.complex64 and value.shape == params[0].shape, key
        torch.testing.assert_close(torch.view_as_real(params[0].detach()), views[0].detach())
        torch.testing.assert_close(params[1].detach(), views[1].detach())
        runs[path] = params
    if e.torch_class is not None:
        for path in ("loop", "foreach"):
            ref = [nn.Parameter(z.clone()), nn.Parameter(r.clone())]
            opt_r = reference(name, ref, combo, foreach=path == "foreach")
            for step in range(3):
                gg = torch.Generator().manual_seed(50 + step)
                ref[0].grad = torch.randn(3, 2, dtype=torch.complex64, generator=gg)
                ref[1].grad = torch.randn(4, generator=gg)
                opt_r.step()
            assert_params_close(runs[path], ref)


def _low_precision_tolerance(dtype, path):
    if path == "fused":   # fp32 math inside the kernel: states round once per step instead of once per op
        return dict(rtol=4e-2, atol=4e-3) if dtype == torch.bfloat16 else dict(rtol=4e-3, atol=5e-4)
    # loop and foreach do torch's ops in torch's order; two ulps of the dtype cover the odd
    # rounding-order difference (a foreach scalar list read as float64 rather than float32)
    return dict(rtol=2 * torch.finfo(dtype).eps, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", NAMES)
def test_low_precision_params(name, dtype):
    """bf16/fp16 params (and states, as torch keeps them): loop and foreach match the reference
    op for op; the fused kernel computes in fp32 and rounds each stored value once."""
    combo = {**combo_of(name), **LOW_PRECISION_COMBO.get(name, {})}
    base = make_params(name, 0, shapes=((6, 5), (7,)), dtype=dtype)
    refs = {path: twin(base) for path in ("loop", "foreach")}   # torch's foreach rounds otherwise than its loop
    ref_opts = {path: reference(name, ps, combo, foreach=path == "foreach") for path, ps in refs.items()}
    runs = {path: twin(base) for path in paths_of(name)}
    opts = {path: ours(name, ps, combo, path) for path, ps in runs.items()}
    for step in range(3):
        set_grads(step, *refs.values(), *runs.values())
        for o in (*ref_opts.values(), *opts.values()):
            o.step()
    for path, ps in runs.items():
        # (an entry whose foreach path follows the reference's loop says why: Entry.foreach_against_loop)
        ref = refs["foreach" if entry(name).reference_path(path) else "loop"]
        assert all(p.dtype == dtype for p in ps)
        for p in ps:
            for key, value in opts[path].state[p].items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    assert value.dtype == dtype, (path, key, value.dtype)
        assert_params_close(ps, ref, **_low_precision_tolerance(dtype, path))


@pytest.mark.parametrize("name", NAMES)
def test_zero_dim_single_element_and_non_contiguous_params(name):
    """0-d and single-element params; a transposed (non-contiguous, dense) param with a grad of
    other strides; a strided slice (non-dense) param: right results on every path, fused included."""
    if entry(name).ranks is not None:
        pytest.skip(f"{name} takes params of rank {entry(name).ranks} only: tests/test_muon.py steps its "
                    "non-contiguous and single-element matrices")
    combo = combo_of(name)
    g = torch.Generator().manual_seed(7)
    tensors = [torch.randn((), generator=g), torch.randn(1, generator=g), torch.randn(1, 1, generator=g),
               torch.randn(5, 4, generator=g).t(), torch.randn(12, generator=g)[::3]]
    assert not tensors[3].is_contiguous() and not tensors[4].is_contiguous()

    def fresh():
        return [nn.Parameter(tensors[0].clone()), nn.Parameter(tensors[1].clone()), nn.Parameter(tensors[2].clone()),
                nn.Parameter(torch.zeros(5, 4).t().copy_(tensors[3])),    # transposed: non-contiguous, dense
                nn.Parameter(torch.zeros(12)[::3].copy_(tensors[4]))]     # a strided view: not dense
    ref = fresh()
    assert not ref[3].is_contiguous() and not ref[4].is_contiguous()
    opt_r = reference(name, ref, combo)
    runs = {path: fresh() for path in paths_of(name)}
    opts = {path: ours(name, ps, combo, path) for path, ps in runs.items()}
    for step in range(3):
        gg = torch.Generator().manual_seed(70 + step)
        grads = [torch.randn(t.shape, generator=gg) for t in tensors]
        grads[3] = torch.randn(5, 4, generator=gg).t().contiguous()   # other strides than the param's
        for ps in (ref, *runs.values()):
            for p, gr in zip(ps, grads):
                p.grad = gr.clone()
        opt_r.step()
        for o in opts.values():
            o.step()
    for path, ps in runs.items():
        assert [p.shape for p in ps] == [p.shape for p in ref]
        assert_params_close(ps, ref)
        if path != "fused":   # strides of the param are kept
            assert ps[3].stride() == ref[3].stride()


# ---- capturable and Tensor lr ---------------------------------------------------------------------


@pytest.fixture
def cpu_capturable(monkeypatch):
    """Let capturable=True run on CPU, for torch.optim and optdsl alike: both read the device list
    from torch.optim.optimizer._get_capturable_supported_devices (torch's modules import it by name)."""
    import sys
    original = _optimizer_module._get_capturable_supported_devices

    def with_cpu(supports_xla: bool = True):
        return original(supports_xla) + ["cpu"]
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("torch.optim") and \
                getattr(module, "_get_capturable_supported_devices", None) is original:
            monkeypatch.setattr(module, "_get_capturable_supported_devices", with_cpu)


def _uses_step(name) -> bool:
    return our_class(name)._uses_step


@pytest.mark.parametrize("path", ["loop", "foreach"])
@pytest.mark.parametrize("name", TORCH_NAMES)
def test_capturable_on_cpu_is_refused_as_torch_refuses_it(name, path):
    """torch.optim refuses capturable=True on CPU params at the first step (an AssertionError
    naming the supported devices); optdsl says the same, on the same call."""
    torch_cls = entry(name).torch_class
    if not torch_accepts(torch_cls, "capturable"):
        # differs from torch: torch's class has no `capturable` argument (TypeError); every
        # generated class takes it, so that a Tensor lr can stay on the device
        assert outcome(lambda: torch_cls(make_params(name), capturable=True))[0] == "TypeError"
        return
    combo = combo_of(name)
    a = make_params(name, 0)
    b = twin(a)
    made = outcome(lambda: ours(name, a, combo, path, capturable=True))
    assert made == outcome(lambda: reference(name, b, combo, foreach=path == "foreach", capturable=True))
    opt_a = ours(name, a, combo, path, capturable=True)
    opt_b = reference(name, b, combo, foreach=path == "foreach", capturable=True)
    set_grads(0, a, b)
    got, want = outcome(opt_a.step), outcome(opt_b.step)
    assert got[0] == want[0] == "AssertionError"
    # torch's wording; the lists it names (NAdam's mu_products, ASGD's mus and etas) and whether
    # its device list has 'xla' vary from class to class and path to path in torch itself
    assert got[1].startswith("If capturable=True, params") and "must be on supported devices: [" in got[1]
    assert want[1].startswith("If capturable=True, params") and "must be on supported devices: [" in want[1]
    assert sorted(got[1].replace(",", " ").split()) == sorted(want[1].replace(",", " ").split()) or \
        set(got[1].split(": ")[1].strip(".[]").replace("'", "").split(", ")) - {"xla"} == \
        set(want[1].split(": ")[1].strip(".[]").replace("'", "").split(", ")) - {"xla"}


@pytest.mark.parametrize("fold", [False, True], ids=["cpu-scalars", "device-scalars"])
@pytest.mark.parametrize("path", ["loop", "foreach", "fused"])
@pytest.mark.parametrize("name", NAMES)
def test_capturable_matches_torch_capturable(name, path, fold, cpu_capturable, monkeypatch):
    """capturable=True with a Tensor lr, run on CPU (see cpu_capturable): `step` and scalar states
    are 0-d float32 tensors on the param's device, the host math stays in tensors (nothing is read
    with .item()), and results match torch's capturable path. `device-scalars` treats CPU tensors
    as device tensors, so the helpers that keep a device scale off `alpha=` run too."""
    skip_refused(name, path)
    if getattr(our_class(name), "_capturable_refused", False):
        pytest.skip(f"{name} refuses capturable=True (its update reads reductions back with item())")
    e = entry(name)
    if fold:
        monkeypatch.setattr(_rt, "device_scalar", lambda s: isinstance(s, torch.Tensor) and not _rt.compiling())
    combo = combo_of(name)
    lr = kwargs_of(e, combo).get("lr", inspect.signature(our_class(name).__init__).parameters["lr"].default)
    combo["lr"] = torch.tensor(lr)
    a = make_params(name, 0)
    opt_a = ours(name, a, combo, path, capturable=True)
    torch_capturable = e.torch_class is not None and torch_accepts(e.torch_class, "capturable")
    if torch_capturable:
        b = twin(a)
        opt_b = reference(name, b, combo, foreach=path == "foreach", capturable=True)
    else:   # no capturable reference: the non-capturable path with a float lr is the oracle
        b = twin(a)
        combo_b = {**combo, "lr": lr}
        opt_b = ours(name, b, combo_b, "loop")
    reads = []
    real_item, real_tolist = torch.Tensor.item, torch.Tensor.tolist
    steps = 8 if per_tensor_branches(name) else 3
    for step in range(steps):
        set_grads(step, a, b)
        monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append("item") or real_item(t))
        monkeypatch.setattr(torch.Tensor, "tolist", lambda t: reads.append("tolist") or real_tolist(t))
        opt_a.step()
        monkeypatch.setattr(torch.Tensor, "item", real_item)
        monkeypatch.setattr(torch.Tensor, "tolist", real_tolist)
        opt_b.step()
    assert reads == [], f"capturable step read device values back with {sorted(set(reads))}"
    assert_params_close(a, b)
    for p, q in zip(a, b):
        st = opt_a.state[p]
        if "step" in st:
            assert st["step"].device == p.device and st["step"].dtype == torch.float32 and st["step"].dim() == 0
        if torch_capturable:
            ref_state = opt_b.state[q]
            for key, value in ref_state.items():
                torch.testing.assert_close(torch.as_tensor(st[key]).float(), torch.as_tensor(value).float())


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_tensor_lr_validation_and_results_match_torch(name):
    """A Tensor lr: torch's __init__ checks (1-element; for Adam-like optimizers, not with
    foreach=True unless capturable) give the same errors; where accepted, the same results."""
    e = entry(name)
    combo = combo_of(name)
    lr = kwargs_of(e, combo).get("lr", 1e-3)
    for foreach in (False, True):
        for lr_value in (torch.tensor(lr), torch.tensor([lr]), torch.tensor([lr, lr])):
            c = {**combo, "lr": lr_value}
            a, b = make_params(name, 0), make_params(name, 0)
            made_a = outcome(lambda: ours(name, a, c, "foreach" if foreach else "loop"))
            made_b = outcome(lambda: reference(name, b, c, foreach=foreach))
            if made_a != made_b and foreach and made_a[1] != "Tensor lr must be 1-element":
                # differs from torch: where the foreach path folds lr into per-tensor host values
                # (a step size lr / bias_correction), a generated class refuses a Tensor lr
                # without capturable=True, as torch.optim.Adam and AdamW do; torch's Adagrad,
                # Adamax and NAdam accept it there (and check 1-element first). Same error, same words,
                # in the same order as torch.optim.Adam.
                assert our_class(name)._foreach_lr_per_tensor
                assert made_a == ("ValueError", "lr as a Tensor is not supported for capturable=False and foreach=True")
                continue
            assert made_a == made_b, (foreach, lr_value)
            if made_a[0] != "ok":
                continue
            opt_a, opt_b = ours(name, a, c, "foreach" if foreach else "loop"), reference(name, b, c, foreach=foreach)
            for step in range(3):
                set_grads(step, a, b)
                ra, rb = outcome(opt_a.step), outcome(opt_b.step)
                if rb[0] != "ok":
                    # differs from torch: torch.optim crashes mid-step here (its foreach path cannot
                    # take a list of tensors as scalars); optdsl runs
                    assert ra[0] == "ok"
                    break
                assert ra == rb
            else:
                assert_params_close(a, b)


# ---- sparse gradients --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_sparse_gradient_error_names_optimizer_and_parameter(name):
    bias = entry(name).ranks is None   # Muon takes the matrices only
    model = nn.ModuleDict({"dense": nn.Linear(3, 2, bias=bias), "emb": nn.Embedding(10, 3, sparse=True)})
    opt = ours(name, model.named_parameters(), combo_of(name))
    model["emb"](torch.tensor([1, 2])).sum().backward()
    model["dense"](torch.randn(2, 3)).sum().backward()
    with pytest.raises(RuntimeError) as info:
        opt.step()
    message = str(info.value)
    assert name in message and "sparse" in message
    assert "'emb.weight'" in message and f"param_groups[0]['params'][{1 + bias}]" in message and "(10, 3)" in message
    if name == "SGD":
        # differs from torch: torch.optim.SGD steps sparse gradients; generated optimizers are
        # elementwise over dense tensors and refuse them
        opt_t = torch.optim.SGD(model.parameters(), lr=0.1)
        opt_t.step()


# ---- state_dict --------------------------------------------------------------------------------


def _same_state(sd_a, sd_b):
    assert sd_a["param_groups"] == sd_b["param_groups"]
    assert sd_a["state"].keys() == sd_b["state"].keys()
    for k in sd_a["state"]:
        assert sd_a["state"][k].keys() == sd_b["state"][k].keys()
        for key, value in sd_a["state"][k].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(sd_b["state"][k][key])), (k, key)


@pytest.mark.parametrize("path", ["loop", "foreach", "fused"])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_continues_identically(name, path):
    """Save mid-training (through torch.save / torch.load(weights_only=True), as a checkpoint
    is), load into a fresh instance built with other hypers, continue: bit-identical to the
    uninterrupted run."""
    skip_refused(name, path)
    combo = combo_of(name)
    a = make_params(name, 0)
    opt_a = ours(name, a, combo, path)
    for step in range(3):
        set_grads(step, a)
        opt_a.step()
    buffer = io.BytesIO()
    torch.save(opt_a.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    b = twin(a)
    opt_b = ours(name, b, combo_of(name, 0), path)   # other hypers: the loaded groups replace them
    opt_b.load_state_dict(saved)
    _same_state(opt_a.state_dict(), opt_b.state_dict())
    opt_c = copy.deepcopy(opt_a)   # a deep copy (params and state with it) steps like the original
    c = [p for group in opt_c.param_groups for p in group["params"]]
    assert c[0] is not a[0] and torch.equal(c[0], a[0])
    for step in range(3, 6):
        set_grads(step, a, b, c)
        opt_a.step()
        opt_b.step()
        opt_c.step()
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y) and torch.equal(x, z)
    _same_state(opt_a.state_dict(), opt_b.state_dict())


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
@pytest.mark.parametrize("path", ["loop", "foreach"])
@pytest.mark.parametrize("name", TORCH_NAMES)
def test_state_dict_cross_loads_with_torch_mid_training(name, path, direction):
    e = entry(name)
    combo = combo_of(name)
    foreach = path == "foreach"
    a = make_params(name, 0)
    first = e.torch_class(a, **kwargs_of(e, combo), **({"foreach": foreach} if e.reference_foreach else {})) \
        if direction == "torch_to_ours" \
        else ours(name, a, combo, path)
    for step in range(3):
        set_grads(step, a)
        first.step()
    sd = copy.deepcopy(first.state_dict())
    b = twin(a)
    second = ours(name, b, combo_of(name, 0), path) if direction == "torch_to_ours" \
        else e.torch_class(b, **kwargs_of(e, combo_of(name, 0)), **({"foreach": foreach} if e.reference_foreach else {}))
    second.load_state_dict(sd)
    for step in range(3, 7):
        set_grads(step, a, b)
        first.step()
        second.step()
    assert_params_close(a, b)
    sa, sb = first.state_dict(), second.state_dict()
    for k in sa["state"]:
        if sa["state"][k] or sb["state"].get(k):
            assert sa["state"][k].keys() == sb["state"][k].keys()
            for key in sa["state"][k]:
                torch.testing.assert_close(torch.as_tensor(sa["state"][k][key]), torch.as_tensor(sb["state"][k][key]))


def _trained(name, shapes=SHAPES, steps=2, groups=1):
    params = make_params(name, 0, shapes)
    if groups == 2:
        opt = our_class(name)([{"params": params[:1]}, {"params": params[1:]}], **kwargs_of(entry(name), combo_of(name)))
    else:
        opt = ours(name, params, combo_of(name))
    for step in range(steps):
        set_grads(step, params)
        opt.step()
    return opt, params


def _refused(opt, sd, match):
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(sd)
    _same_state(before, opt.state_dict())   # unchanged


@pytest.mark.parametrize("name", NAMES)
def test_load_state_dict_refuses_other_layouts_and_leaves_the_optimizer_unchanged(name):
    opt, params = _trained(name)
    # torch's wording for the checks torch.optim makes
    other_groups, _ = _trained(name, groups=2)
    _refused(opt, other_groups.state_dict(), "^loaded state dict has a different number of parameter groups$")
    fewer, _ = _trained(name, shapes=SHAPES[:2])
    _refused(opt, fewer.state_dict(),
             "^loaded state dict contains a parameter group that doesn't match the size of optimizer's group$")
    # wrong shapes (torch.optim would load them and fail later, or worse, broadcast)
    if any(isinstance(v, torch.Tensor) and v.dim() > 0 for st in opt.state_dict()["state"].values() for v in st.values()):
        shaped, _ = _trained(name, shapes=((3, 4), (6,), (2, 3, 1)))
        _refused(opt, shaped.state_dict(), "has shape .* expected .*other parameters")
    # not a state_dict at all
    _refused(opt, {"params": []}, "expected a dict with 'state' and 'param_groups'")
    # the same class still continues as an untouched twin would
    twin_opt, twin_params = _trained(name)
    for step in range(2, 4):
        set_grads(step, params, twin_params)
        opt.step()
        twin_opt.step()
    assert_params_close(params, twin_params)


@pytest.mark.parametrize("name", NAMES)
def test_load_state_dict_of_another_optimizer_is_refused(name):
    """Every other registered optimizer's state_dict, and torch.optim's, is refused with a message
    that says so, unless it keeps exactly the same state (Adam and AdamW do: torch loads one into
    the other as well), or the same less states that start `empty` (a wrapper's: Adam's state_dict
    loads into LookaheadAdam, whose slow weights then start at the next step)."""
    opt, _ = _trained(name)
    own = {k for st in opt.state_dict()["state"].values() for k in st}
    may_lack = {key for key, kind in opt._active_states(opt.defaults).items() if kind == "empty"}
    sources = {n: _trained(n)[0].state_dict() for n in NAMES if n != name}
    for n in TORCH_NAMES:
        t_params = make_params(n, 0)
        t_opt = entry(n).torch_class(t_params, **kwargs_of(entry(n), combo_of(n)))
        for step in range(2):
            set_grads(step, t_params)
            t_opt.step()
        sources[f"torch.optim.{n}"] = t_opt.state_dict()
    for source, sd in sources.items():
        theirs = {k for st in sd["state"].values() for k in st}
        if theirs == own or (theirs < own and own - theirs <= may_lack):
            continue
        before = copy.deepcopy(opt.state_dict())
        with pytest.raises(ValueError, match="another optimizer's state_dict") as info:
            opt.load_state_dict(sd)
        assert name in str(info.value), source
        _same_state(before, opt.state_dict())


# ---- __init__ validation -----------------------------------------------------------------------


def _invalid_values(default):
    if isinstance(default, tuple):
        out = []
        for i in range(len(default)):
            for bad in (-1.0, 2.0, 1.0):
                v = list(default)
                v[i] = bad
                out.append(tuple(v))
        return out
    if isinstance(default, bool):
        return []
    if isinstance(default, (int, float)):
        return [-1.0, -1e-12, 0.0, 1.0, 2.0]
    return []


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_init_validation_matches_torch(name):
    """For every hyper torch.optim's class also takes: the same values are refused, with the same
    exception and message (`Invalid learning rate: -1.0`); fused+foreach and friends as torch."""
    e = entry(name)
    torch_cls = e.torch_class
    ours_sig = inspect.signature(our_class(name).__init__).parameters
    torch_sig = inspect.signature(torch_cls.__init__).parameters
    shared = [k for k in ours_sig if k in torch_sig and k not in ("self", "params")]
    checked = 0
    for key in shared:
        for bad in _invalid_values(ours_sig[key].default):
            got = outcome(lambda: our_class(name)(make_params(name), **{**e.base, key: bad}))
            want = outcome(lambda: torch_cls(make_params(name), **{**e.base, key: bad}))
            assert got == want, (key, bad)
            checked += got[0] != "ok"
    assert checked > 0
    if torch_accepts(torch_cls, "fused"):
        assert outcome(lambda: our_class(name)(make_params(name), fused=True, foreach=True)) == \
            outcome(lambda: torch_cls(make_params(name), fused=True, foreach=True))
    # defaults: the same keys and values as torch keeps (LR schedulers and checkpoints read them)
    ours_defaults = our_class(name)(make_params(name)).defaults
    for key, value in torch_cls(make_params(name)).defaults.items():
        if key not in TORCH_ONLY_GROUP_KEYS.get(name, ()):
            assert key in ours_defaults and ours_defaults[key] == value, key
