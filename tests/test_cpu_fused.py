"""The fused C++ backend (fused=True on CPU tensors, optdsl.emit.cpp): every shipped spec it covers
against the loop path and the reference over the spec's flag grid, low-precision streams against
the Triton kernel (same fp32 math, same rounding), the work list's edge cases, the backend choice,
the cache, and the errors (no compiler; a spec with reductions).

The suite runs with TRITON_INTERPRET=1, so CPU tensors would run the Triton kernel: every C++ step
here is selected explicitly with runtime.cpu_fused("cpp"). Each spec compiles once (cached on disk)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from optdsl import cpp_runtime, kernel_runtime, runtime
from optdsl.optim import AdamW, Lamb, Lion
from optdsl.registry import REGISTRY
from optdsl.verify import TOLERANCE, compare, run_pair, with_state

ROOT = Path(__file__).resolve().parent.parent
COVERED = [name for name in REGISTRY if cpp_runtime.covered(name)]
PHASED = [name for name in REGISTRY if not cpp_runtime.covered(name)]


def test_every_elementwise_spec_is_covered():
    # the specs without a C++ source are exactly those with reductions (phases)
    from optdsl.compiler import compile_spec
    from optdsl.emit.cpp import is_phased
    from optdsl.plan import make_plan
    for path in sorted((ROOT / "specs").glob("*.opt")):
        compiled = compile_spec(path.read_text(encoding="utf-8"), path.name)
        phased = is_phased(make_plan(compiled.program, "fused").program)
        assert (compiled.cpp_source is None) == phased, path.name
        assert (compiled.program.name in COVERED) == (not phased), path.name


@pytest.mark.parametrize("name", COVERED)
def test_cpu_fused_matches_loop_and_reference(name):
    entry = REGISTRY[name]
    failures = []
    for combo in entry.combos():
        for against in ("loop", "reference"):
            ours, theirs, a, b = run_pair(entry, combo, "cpu", steps=3, against=against)
            xs, ys = with_state(ours, theirs, a, b, check_keys=entry.torch_class is not None or against == "loop")
            max_abs, max_rel, same, total, ok = compare(xs, ys)
            if not ok:
                failures.append(f"{combo} vs {against}: max abs {max_abs:.3e}, rel {max_rel:.3e}")
    assert not failures, "\n".join(failures)


def _pair_low_precision(cls, dtype, kwargs, steps=3):
    """The same steps through the C++ backend and the Triton kernel (interpreter): both load into
    fp32, compute in fp32 and round to nearest even at the store."""
    g = torch.Generator().manual_seed(3)
    base = [torch.randn(s, generator=g).to(dtype) for s in ((33, 7), (2500,), (1,))]
    ours = [p.clone().requires_grad_() for p in base]
    theirs = [p.clone().requires_grad_() for p in base]
    a, b = cls(ours, fused=True, **kwargs), cls(theirs, fused=True, **kwargs)
    for _ in range(steps):
        for x, y in zip(ours, theirs):
            grad = torch.randn(x.shape, generator=g).to(dtype)
            x.grad, y.grad = grad.clone(), grad.clone()
        with runtime.cpu_fused("cpp"):
            a.step()
        with runtime.cpu_fused("triton"):
            b.step()
    return ours, theirs


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cls,kwargs", [(AdamW, dict(lr=1e-2, weight_decay=0.1)), (Lion, dict(lr=1e-3))])
def test_low_precision_streams_round_like_the_triton_kernel(cls, kwargs, dtype):
    ours, theirs = _pair_low_precision(cls, dtype, kwargs)
    for x, y in zip(ours, theirs):
        assert x.dtype == dtype
        # fp32 math in both; at most one ulp of the stored dtype apart (sqrt/div ordering is the same)
        diff = (x.float() - y.float()).abs()
        ulp = torch.finfo(dtype).eps * y.float().abs().clamp_min(torch.finfo(dtype).tiny)
        assert bool((diff <= ulp).all()), float((diff / ulp).max())


def test_bf16_state_dtype_with_fp32_params():
    torch.manual_seed(0)
    ps = [torch.randn(3000, requires_grad=True), torch.randn(5, 4, requires_grad=True)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    a = AdamW(ps, fused=True, state_dtype=torch.bfloat16)
    b = AdamW(qs, fused=True, state_dtype=torch.bfloat16)
    for _ in range(3):
        for p, q in zip(ps, qs):
            grad = torch.randn(p.shape)
            p.grad, q.grad = grad.clone(), grad.clone()
        with runtime.cpu_fused("cpp"):
            a.step()
        with runtime.cpu_fused("triton"):
            b.step()
    assert a.state[ps[0]]["exp_avg"].dtype == torch.bfloat16
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(a.state[p]["exp_avg"].float(), b.state[q]["exp_avg"].float(), rtol=0, atol=0)


def test_work_list_edges_one_call_per_bucket():
    # chunks across tensors: a multi-chunk odd size, an empty tensor, a non-contiguous view, a complex param
    torch.manual_seed(1)
    big = torch.randn(2 * 2048 + 7, requires_grad=True)
    empty = torch.randn(0, requires_grad=True)
    strided = torch.randn(6, 8).t().detach().requires_grad_()
    cplx = torch.randn(5, dtype=torch.complex64, requires_grad=True)
    ps = [big, empty, strided, cplx]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    a, b = AdamW(ps, fused=True, amsgrad=True), torch.optim.AdamW(qs, amsgrad=True, foreach=False)
    for _ in range(3):
        for p, q in zip(ps, qs):
            grad = torch.randn_like(p)
            p.grad, q.grad = grad.clone(), grad.clone()
        before = kernel_runtime.LAUNCHES[0]
        with runtime.cpu_fused("cpp"):
            a.step()
        assert kernel_runtime.LAUNCHES[0] - before == 1   # one call: a complex param is fp32 pairs, one bucket
        b.step()
    rtol, atol = TOLERANCE[torch.float32]
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol)


def test_backend_choice(monkeypatch):
    params = [torch.zeros(2)]
    monkeypatch.delenv("OPTDSL_CPU_FUSED", raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert runtime.cpu_fused_backend() == "triton" and runtime.fused_kernel_suffix(params) == "_triton"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert runtime.cpu_fused_backend() == "cpp" and runtime.fused_kernel_suffix(params) == "_cpu"
    monkeypatch.setenv("OPTDSL_CPU_FUSED", "triton")
    assert runtime.cpu_fused_backend() == "triton"
    with runtime.cpu_fused("cpp"):
        assert runtime.fused_kernel_suffix(params) == "_cpu"
    monkeypatch.setenv("OPTDSL_CPU_FUSED", "avx")
    with pytest.raises(ValueError, match="OPTDSL_CPU_FUSED must be 'cpp' or 'triton'"):
        runtime.cpu_fused_backend()


def test_spec_with_reductions_is_a_clear_error():
    p = torch.randn(4, requires_grad=True)
    p.grad = torch.randn(4)
    opt = Lamb([p], fused=True)
    with runtime.cpu_fused("cpp"), pytest.raises(RuntimeError, match="Lamb: fused=True on CPU tensors runs the "
                                                 "fused C\\+\\+ backend, which cannot run this spec: its update "
                                                 "has reductions"):
        opt.step()


def test_no_compiler_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("OPTDSL_CACHE", str(tmp_path))   # nothing cached: it must build
    monkeypatch.setenv("CXX", "no-such-compiler-optdsl")
    monkeypatch.setattr(cpp_runtime, "_KERNELS", {})
    monkeypatch.setattr(cpp_runtime, "_TOOLCHAIN", [])
    p = torch.randn(4, requires_grad=True)
    p.grad = torch.randn(4)
    opt = AdamW([p], fused=True)
    with runtime.cpu_fused("cpp"), pytest.raises(RuntimeError, match="no C\\+\\+ compiler was found: "
                                                 "'no-such-compiler-optdsl'"):
        opt.step()


CACHED = """
import sys, torch
from optdsl import cpp_runtime, runtime
from optdsl.optim import AdamW
p = torch.randn(10, requires_grad=True); p.grad = torch.randn(10)
with runtime.cpu_fused("cpp"):
    AdamW([p], fused=True).step()
print(len(cpp_runtime.COMPILE_SECONDS))
"""


def test_a_second_process_reuses_the_cached_build():
    with runtime.cpu_fused("cpp"):   # this process builds (or finds) the library
        p = torch.randn(3, requires_grad=True)
        p.grad = torch.randn(3)
        AdamW([p], fused=True).step()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", CACHED], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0"], out.stdout   # no compile in the second process
    assert "compiled the fused CPU kernel" not in out.stderr
