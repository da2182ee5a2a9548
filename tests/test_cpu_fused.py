"""The fused C++ backend (fused=True on CPU tensors, optdsl.emit.cpp): every shipped spec it covers
against the loop path and the reference over the spec's flag grid, low-precision streams against
the Triton kernel (same fp32 math, same rounding), the work list's edge cases, specs with
reductions (phases: every scope, chained, scalar state, bf16, an empty tensor; partials that do not
depend on the thread count), the backend choice, the cache, and the error without a compiler.

The suite runs with TRITON_INTERPRET=1, so CPU tensors would run the Triton kernel: every C++ step
here is selected explicitly with runtime.cpu_fused("cpp"). Each spec compiles once (cached on disk)."""
from __future__ import annotations

import copy
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
SPECS = [name for name, entry in REGISTRY.items() if entry.supports("cpu")]   # the specs with a fused path


def test_every_spec_has_one_cpp_function_per_phase():
    # the C++ source has a step function per phase of the fused plan: the shipped file, fresh
    from optdsl.compiler import compile_spec
    from optdsl.names import module_name
    from optdsl.plan import fused_refusal, make_plan
    phased = []
    for path in sorted((ROOT / "specs").glob("*.opt")):
        compiled = compile_spec(path.read_text(encoding="utf-8"), path.name)
        fn = module_name(compiled.program.name)
        if fused_refusal(compiled.program):   # no fused path: no C++ file
            assert not compiled.cpp_source and not (ROOT / "generated" / f"{fn}_cpu.cpp").exists(), path.name
            continue
        assert (ROOT / "generated" / f"{fn}_cpu.cpp").read_text(encoding="utf-8") == compiled.cpp_source
        n = len(make_plan(compiled.program, "fused").phases.phases)
        symbols = [f"optdsl_{fn}_phase{j}(" for j in range(n - 1)] + [f"optdsl_{fn}_step("]
        assert all(f'extern "C" void {s}' in compiled.cpp_source for s in symbols), path.name
        assert compiled.cpp_source.count('extern "C"') == n, path.name
        phased += [compiled.program.name] if n > 1 else []
    assert set(phased) == {"AdamP", "Amos", "FunnelledSGDM", "Lamb", "Lars", "NvNovoGrad", "SGDP"}


@pytest.mark.parametrize("name", SPECS)
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


def test_spec_with_reductions_runs_its_phases_and_one_combine_each():
    # Lamb: 3 phases (the group grad norm and ||w|| first, then ||update||, then the update), so per
    # step 3 calls per bucket and 2 combines, whatever the number of tensors; the Triton kernel's values
    torch.manual_seed(2)
    ps = [torch.randn(s, requires_grad=True) for s in ((40, 30), (2049,), (3,))]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    a, b = Lamb(ps, fused=True, weight_decay=0.1), Lamb(qs, fused=True, weight_decay=0.1)
    for _ in range(3):
        for p, q in zip(ps, qs):
            p.grad = torch.randn(p.shape)
            q.grad = p.grad.clone()
        launches, combines = kernel_runtime.LAUNCHES[0], kernel_runtime.COMBINES[0]
        with runtime.cpu_fused("cpp"):
            a.step()
        assert (kernel_runtime.LAUNCHES[0] - launches, kernel_runtime.COMBINES[0] - combines) == (3, 2)
        with runtime.cpu_fused("triton"):
            b.step()
    for p, q in zip(ps, qs):   # fp32 math in both; only the in-chunk fold order of the norms differs
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


# Every reduction scope in one update, chained (a channel cosine of a channel-normalised value, its
# amax per tensor, a group sum under a per-tensor `if`), host math, and a scalar state stored from
# a reduction: on a multi-tensor group with bf16 and fp32 params (two buckets: the group-wide
# values join across them) and an empty tensor.
MIXED_SCOPES = """
optimizer MixedScopes "every reduction scope in one update: group, tensor and channel, chained"

hyper lr       = 1e-2   where lr >= 0
hyper beta     = 0.9    where 0 <= beta < 1
hyper eps      = 1e-8   where eps >= 0
flag  clip     = true

state exp_avg = zeros
state gsq: scalar = 0

update {
  g = grad
  if clip {
    g = grad / max(norm(grad, group), 1.0)
  }
  exp_avg = lerp(exp_avg, g, 1 - beta)
  gsq = beta * gsq + (1 - beta) * sum(g * g)
  d = exp_avg / (rms(exp_avg, channel) + eps)
  cos = dot(d, param, channel) / (norm(d, channel) * norm(param, channel) + eps)
  scale = amax(cos) > 0.5 ? 0.5 : 1.0
  dd = sum(d * d, group)   # a group value: before the per-tensor `if`, which reads it
  if step > 1 {
    scale = scale * (1 + mean(abs(d)) / (1 + dd))
  }
  param = param - lr / sqrt(step) * scale * d / (sqrt(gsq) + 1)
}
"""
MIXED_SHAPES = ((8, 300), (3000,), (0,), (5, 4, 3), (1,))


MIXED = [torch.bfloat16, torch.float32, torch.bfloat16, torch.bfloat16, torch.float32]


def _mixed_params(dtypes):
    g = torch.Generator().manual_seed(5)
    return [torch.randn(s, generator=g).to(d).requires_grad_() for s, d in zip(MIXED_SHAPES, dtypes)]


def _mixed_grads(params, g):
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)


def _mixed_run(dtypes, steps: int = 3):
    import optdsl
    ps = _mixed_params(dtypes)
    opt = optdsl.load(MIXED_SCOPES)(ps, fused=True)
    g = torch.Generator().manual_seed(6)
    for _ in range(steps):
        _mixed_grads(ps, g)
        with runtime.cpu_fused("cpp"):
            opt.step()
    return ps, [opt.state[p]["gsq"] for p in ps], [opt.state[p]["exp_avg"] for p in ps]


@pytest.mark.parametrize("clip", [True, False])
def test_every_scope_on_a_mixed_group_with_bf16_and_an_empty_tensor(clip):
    """Step by step against the loop path (torch's reductions) in fp32 from the same bf16 values:
    the C++ loads bf16 into fp32, computes in fp32 and rounds the stores to nearest even, so each
    stored value is the fp32 result's rounding, to one ulp (the fold orders differ)."""
    import optdsl
    cls = optdsl.load(MIXED_SCOPES)
    ours = _mixed_params(MIXED)
    opt = cls(ours, fused=True, clip=clip)
    g = torch.Generator().manual_seed(6)
    for step in range(3):
        _mixed_grads(ours, g)
        ref = [p.detach().float().requires_grad_() for p in ours]
        loop = cls(ref, foreach=False, clip=clip)
        if step:   # the state as the C++ stored it (a copy, upcast), under the loop path's own group options
            state = copy.deepcopy(opt.state_dict())
            state["param_groups"] = loop.state_dict()["param_groups"]
            loop.load_state_dict(state)
        for p, q in zip(ours, ref):
            q.grad = p.grad.float()
        with runtime.cpu_fused("cpp"):
            opt.step()
        loop.step()
        for p, q in zip(ours, ref):
            for x, y in ((p, q), (opt.state[p]["exp_avg"], loop.state[q]["exp_avg"])):
                assert x.dtype == p.dtype and x.shape == y.shape
                ulp = torch.finfo(x.dtype).eps * y.abs().clamp_min(torch.finfo(x.dtype).tiny)
                assert bool(((x.float() - y).abs() <= ulp + 1e-7).all()), (step, tuple(p.shape))
            # a device scalar state: fp32 in both, stored from a tensor reduction (the empty tensor's: 0)
            torch.testing.assert_close(opt.state[p]["gsq"], loop.state[q]["gsq"], rtol=1e-5, atol=1e-9)
    # and the whole group in fp32 over the same steps
    theirs = [p.detach().clone().requires_grad_() for p in _mixed_params([torch.float32] * 5)]
    mine = _mixed_params([torch.float32] * 5)
    a, b = cls(mine, fused=True, clip=clip), cls(theirs, foreach=False, clip=clip)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(3):
        _mixed_grads(mine, g1)
        _mixed_grads(theirs, g2)
        with runtime.cpu_fused("cpp"):
            a.step()
        b.step()
    rtol, atol = TOLERANCE[torch.float32]
    for p, q in zip(mine, theirs):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol)
        torch.testing.assert_close(a.state[p]["gsq"], b.state[q]["gsq"], rtol=rtol, atol=atol)


def test_phased_results_do_not_depend_on_the_thread_count():
    # partials per chunk, folded in a fixed order, combined in chunk order: bit-identical runs
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _mixed_run(MIXED)
        torch.set_num_threads(max(2, threads))
        many = _mixed_run(MIXED)
        again = _mixed_run(MIXED)
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(sum(one, []), sum(many, []), sum(again, [])):
        assert torch.equal(a, b) and torch.equal(b, c)


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


# More booleans than template bits (optdsl.emit.cpp.MAX_TEMPLATE_BITS): the chunk function takes
# them as run-time arguments instead, group flags and a per-tensor boolean column alike.
MANY_FLAGS = """
optimizer ManyFlags "more booleans than template bits (a test spec)"

hyper lr = 1e-2 where lr >= 0
flag a = true
flag b = false
flag c = true
flag d = false
flag e = true
flag f = false
flag h = true

state m = zeros

update {
  x = a ? grad : -grad
  x = b ? x * 2 : x
  x = c ? x + 0.5 * param : x
  x = d ? x * x : x
  m = e ? 0.9 * m + x : m + x
  late = step > 2
  y = late ? m / (1 + norm(m)) : m
  y = f ? y * 3 : y
  param = h ? param - lr * y : param + lr * y
}
"""


@pytest.mark.parametrize("flags", [{}, dict(a=False, b=True, d=True, e=False, f=True, h=False)])
def test_more_booleans_than_template_bits_are_run_time_arguments(flags):
    import optdsl
    cls = optdsl.load(MANY_FLAGS)
    torch.manual_seed(4)
    ps = [torch.randn(s, requires_grad=True) for s in ((30, 7), (2100,))]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    a, b = cls(ps, fused=True, **flags), cls(qs, foreach=False, **flags)
    for _ in range(4):
        for p, q in zip(ps, qs):
            p.grad = torch.randn(p.shape)
            q.grad = p.grad.clone()
        with runtime.cpu_fused("cpp"):
            a.step()
        b.step()
    rtol, atol = TOLERANCE[torch.float32]
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol)
