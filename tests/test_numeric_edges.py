"""Numeric edge cases, every path against torch.optim: NaN and Inf gradients propagate as torch
propagates them; zero-size and 0-d parameters; a parameter group mixing float32 and bfloat16
parameters on the fused path."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")   # before anything imports a kernel

import pytest  # noqa: E402
import torch  # noqa: E402

from optdsl import optim  # noqa: E402
from optdsl.fuzz.execute import Case, Group, run_case  # noqa: E402
from optdsl.resources import data_dir  # noqa: E402

PATHS = ["loop", "foreach", "fused"]
REFERENCES = {
    "Adam": (torch.optim.Adam, [{}, {"amsgrad": True, "weight_decay": 0.1}, {"maximize": True}]),
    "AdamW": (torch.optim.AdamW, [{}, {"amsgrad": True}]),
    "SGD": (torch.optim.SGD, [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
                              {"momentum": 0.9, "dampening": 0.5}]),
}
CASES = [(name, kw) for name, (_, kws) in REFERENCES.items() for kw in kws]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}" for n, kw in CASES]

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")   # NumPy inside the Triton interpreter


def _kwargs(path):
    return {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[path]


def _pair(name, kw, path, shapes, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = [torch.randn(s, generator=g, dtype=torch.float32).to(dtype) for s in shapes]
    ours = [b.clone().requires_grad_() for b in base]
    theirs = [b.clone().requires_grad_() for b in base]
    ref_cls, _ = REFERENCES[name]
    a = getattr(optim, name)(ours, lr=0.01, **kw, **_kwargs(path))
    b = ref_cls(theirs, lr=0.01, **kw, foreach=False)
    return ours, theirs, a, b


def _same(ours, theirs, opt_a, opt_b, what):
    for x, y in zip(ours, theirs):
        torch.testing.assert_close(x.detach(), y.detach(), equal_nan=True, msg=lambda m: f"{what}: param: {m}")
        # NaN and Inf where torch has them, exactly
        assert torch.equal(torch.isnan(x), torch.isnan(y)), f"{what}: NaN positions differ"
        assert torch.equal(torch.isinf(x) & (x > 0), torch.isinf(y) & (y > 0)), f"{what}: +Inf positions differ"
        assert torch.equal(torch.isinf(x) & (x < 0), torch.isinf(y) & (y < 0)), f"{what}: -Inf positions differ"
        sa, sb = opt_a.state[x], opt_b.state[y]
        for key, ref in sb.items():
            if key == "step":
                assert float(sa["step"]) == float(ref), f"{what}: step"
                continue
            assert key in sa, f"{what}: state {key!r} missing"
            torch.testing.assert_close(sa[key], ref, equal_nan=True, msg=lambda m: f"{what}: state {key}: {m}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_nan_and_inf_gradients_propagate_as_in_torch(name, kw, path):
    shapes = [(9,), (4, 3), (1,)]
    ours, theirs, a, b = _pair(name, kw, path, shapes)
    specials = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e38, -1e38]
    g = torch.Generator().manual_seed(1)
    for step in range(4):
        for i, (x, y) in enumerate(zip(ours, theirs)):
            grad = torch.randn(x.shape, generator=g)
            flat = grad.view(-1)
            for j in range(min(flat.numel(), 3)):
                if (i + j + step) % 2 == 0:
                    flat[(j * 3 + step) % flat.numel()] = specials[(i + j + step) % len(specials)]
            x.grad, y.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
        _same(ours, theirs, a, b, f"{name} {kw} {path} step {step}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_zero_size_and_0d_params(name, kw, path):
    shapes = [(0,), (), (3, 0), (5,), (1,)]
    ours, theirs, a, b = _pair(name, kw, path, shapes)
    g = torch.Generator().manual_seed(2)
    for step in range(3):
        for x, y in zip(ours, theirs):
            grad = torch.randn(x.shape, generator=g)
            x.grad, y.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
        _same(ours, theirs, a, b, f"{name} {kw} {path} step {step}")
    assert ours[1].dim() == 0 and ours[0].numel() == 0


@pytest.mark.parametrize("path", PATHS)
def test_only_zero_size_params(path):
    ps = [torch.zeros(0, requires_grad=True), torch.zeros(2, 0, requires_grad=True)]
    opt = optim.Adam(ps, **_kwargs(path))
    for p in ps:
        p.grad = torch.zeros_like(p)
    opt.step()
    assert all(float(opt.state[p]["step"]) == 1.0 for p in ps)


@pytest.mark.parametrize("spec,flags", [("adam.opt", {}), ("adam.opt", {"amsgrad": True}), ("adamw.opt", {}),
                                        ("sgd.opt", {}), ("lion.opt", {})])
def test_group_mixing_fp32_and_bf16_on_the_fused_path(spec, flags):
    """Each step of the fused kernel on a mixed group, against the IR interpreter's error bounds
    (fp32 math, one rounding to bf16 at each store; see optdsl/fuzz/tolerance.py)."""
    text = (data_dir("specs") / spec).read_text(encoding="utf-8")
    hypers = {"momentum": 0.9} if spec == "sgd.opt" else {}
    group = Group([(7,), (3, 5), (1,), (), (40,), (0,)],
                  ["float32", "bfloat16", "bfloat16", "float32", "bfloat16", "bfloat16"], hypers, flags)
    case = Case(text, [group, Group([(6,)], ["bfloat16"])], steps=5, fused_steps=5, seed=3, block=16,
                paths=("fused", "loop"))
    out = run_case(case)
    assert out.ok, out.summary()
    print(f"{spec} {flags}: {out.summary()}")


def test_mixed_group_keeps_each_states_dtype():
    a = torch.randn(10, requires_grad=True)
    b = torch.randn(10, dtype=torch.bfloat16, requires_grad=True)
    opt = optim.Adam([a, b], fused=True, amsgrad=True)
    for _ in range(2):
        a.grad, b.grad = torch.randn(10), torch.randn(10).to(torch.bfloat16)
        opt.step()
    for p in (a, b):
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert opt.state[p][key].dtype == p.dtype
    assert opt.state[b]["step"].dtype == torch.float32
