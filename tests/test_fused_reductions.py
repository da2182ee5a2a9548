"""The fused path with reductions: one kernel per phase, one launch per phase per bucket, and a
fixed-order combine between phases (optdsl.emit.triton_phases, kernel_runtime.combine).

Every case runs the fused step (the Triton interpreter on CPU) against the loop path from the
same inputs, and twice from identical inputs to check it is bit-identical run to run. Shapes
are small and blocks large: the interpreter costs ~1 ms per program."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import optdsl
from optdsl import kernel_runtime
from optdsl.compiler import compile_ir, spec_hash
from optdsl.emit.triton import emit_triton_module
from optdsl.ir import Kind
from optdsl.passes import hoist_host
from optdsl.plan import ALL_SCOPES, plan_phases

pytestmark = [
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                       reason="the fused path needs TRITON_INTERPRET=1 or a GPU"),
    # the interpreter evaluates masked-off lanes too (0 / 0 there is never stored nor folded)
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
]

ROOT = Path(__file__).resolve().parent.parent
# a 0-d tensor, a zero-element tensor, a vector, and tensors with several channels
SHAPES = [(3, 5), (7,), (), (2, 3, 4), (0, 4), (4, 1)]


def _phases(text: str) -> int:
    return len(plan_phases(hoist_host(compile_ir(text), Kind.HOST), ALL_SCOPES).phases)


def _params(shapes, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype).requires_grad_() for s in shapes]


def _run(cls, shapes, steps=2, dtype=torch.float32, **options):
    params = _params(shapes, dtype)
    opt = cls(params, **options)
    for step in range(steps):
        g = torch.Generator().manual_seed(100 + step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(dtype)
        opt.step()
    return params, opt


def _states(opt, params):
    return [{k: v for k, v in opt.state[p].items() if k != "step"} for p in params]


def _assert_paths_agree(text, shapes=SHAPES, steps=2, rtol=1e-5, atol=1e-6, **hypers):
    cls = optdsl.load(text)
    fused, fo = _run(cls, shapes, steps, fused=True, **hypers)
    loop, lo = _run(cls, shapes, steps, foreach=False, **hypers)
    for a, b in zip(fused, loop):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=rtol, atol=atol, equal_nan=True)
    for sa, sb in zip(_states(fo, fused), _states(lo, loop)):
        assert sa.keys() == sb.keys()
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], rtol=rtol, atol=atol, equal_nan=True)
    again, ao = _run(cls, shapes, steps, fused=True, **hypers)
    for a, b in zip(fused, again):   # bit-identical run to run
        assert torch.equal(a.detach().view(-1).view(torch.int32 if a.dtype == torch.float32 else torch.int16),
                           b.detach().view(-1).view(torch.int32 if b.dtype == torch.float32 else torch.int16))
    return cls


def _reduction(op: str, scope: str) -> str:
    operand = "grad, param" if op == "dot" else "grad * 0.5 + param"
    suffix = "" if scope == "tensor" else f", {scope}"
    return f"{op}({operand}{suffix})"


@pytest.mark.parametrize("scope", ["tensor", "channel", "group"])
@pytest.mark.parametrize("op", ["sum", "mean", "norm", "rms", "amax", "dot"])
def test_each_reduction_in_each_scope_matches_the_loop_path(op, scope):
    text = f"""
optimizer Red "r"
hyper lr = 0.1
state m = zeros
update {{
  r = {_reduction(op, scope)}
  m = 0.5 * m + grad
  param = param - lr * (m + r * grad)
}}
"""
    _assert_paths_agree(text)


CHAINED = """
optimizer Chained "reductions of values computed from reductions, under `if`s, into device scalar state"
hyper lr = 1e-2
hyper max_grad_norm = none where max_grad_norm >= 0
state m = zeros
state s: scalar = 0
update {
  g = grad
  if max_grad_norm != none {
    g = grad / max(norm(grad, group) / max_grad_norm, 1)
  }
  m = 0.9 * m + g
  s = s * 0.5 + sum(g * g)
  u = m / (sqrt(s) + 1e-8)
  wn = norm(param)
  un = norm(u)
  trust = wn > 0 ? (un > 0 ? wn / un : 1) : 1
  c = mean(param, channel)
  v = u
  if trust > 0.5 {
    v = u / (1 + rms(u - c, channel))
  }
  param = param - lr * trust * v - 0.01 * c
}
"""


@pytest.mark.parametrize("max_grad_norm", [None, 0.5])
def test_chained_reductions_if_on_a_reduction_and_device_scalar_state(max_grad_norm):
    cls = _assert_paths_agree(CHAINED, steps=3, max_grad_norm=max_grad_norm)
    params, opt = _run(cls, SHAPES, 1, fused=True, max_grad_norm=max_grad_norm)
    s = opt.state[params[0]]["s"]
    assert s.dim() == 0 and s.dtype == torch.float32 and float(s) > 0   # written back from the kernel


def test_reduction_under_an_if_on_a_reduction():
    text = """
optimizer UnderIf "a reduction computed only where a reduction says so"
hyper lr = 0.1
update {
  n = norm(grad)
  g = grad
  if n > 2.5 {
    g = grad / norm(grad + param)
  }
  param = param - lr * (g + sum(g, group))
}
"""
    _assert_paths_agree(text, shapes=[(3, 5), (2,), (6, 6), ()])


def test_zero_element_tensor_gets_torch_values_and_its_scalar_state_is_written():
    text = """
optimizer Empty "reductions over no elements: sum 0, mean NaN, norm 0, amax 0"
hyper lr = 0.1
state total: scalar = 1
state average: scalar = 1
state big: scalar = 1
update {
  total = sum(grad)
  average = mean(grad)
  big = amax(grad) + norm(grad)
  param = param - lr * grad
}
"""
    cls = _assert_paths_agree(text, shapes=[(0,), (0, 3), (4,)])
    params, opt = _run(cls, [(0,), (0, 3), (4,)], 1, fused=True)
    for p in params[:2]:
        assert float(opt.state[p]["total"]) == 0.0 and float(opt.state[p]["big"]) == 0.0
        assert torch.isnan(opt.state[p]["average"])


def test_multi_block_tensors_and_channels_larger_than_a_block():
    n = kernel_runtime.block_size(torch.device("cpu"))
    tensor_scope = """
optimizer BigT "blocks"
hyper lr = 0.1
update {
  param = param - lr * (norm(grad) * grad + amax(param, group))
}
"""
    _assert_paths_agree(tensor_scope, shapes=[(2 * n + 5,), (3, 4)], steps=1)
    # with a channel reduction no program straddles a channel (each element of a 1-d tensor is a
    # channel of its own: one program each, so this test keeps 1-d tensors short)
    channel_scope = """
optimizer BigC "blocks and channels"
hyper lr = 0.1
update {
  param = param - lr * (norm(grad) * grad + mean(grad, channel) + amax(param, group))
}
"""
    _assert_paths_agree(channel_scope, shapes=[(2, n + 3), (3, 4), (5,)], steps=1)


def test_bf16_params_match_fp32_math_rounded_once():
    text = """
optimizer Lowp "bf16"
hyper lr = 0.1
update {
  param = param - lr * grad / (norm(grad) + 1e-3) - lr * mean(param, channel)
}
"""
    cls = optdsl.load(text)
    shapes = [(3, 5), (7,), (4, 4)]
    fused, _ = _run(cls, shapes, 1, dtype=torch.bfloat16, fused=True)
    # the same math in fp32 from the same bf16 inputs, rounded to bf16 once
    params = [p.detach().float().requires_grad_() for p in _params(shapes, torch.bfloat16)]
    opt = cls(params, foreach=False)
    g = torch.Generator().manual_seed(100)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(torch.bfloat16).float()
    opt.step()
    for a, b in zip(fused, params):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.detach().float(), b.detach().to(torch.bfloat16).float(), rtol=8e-3, atol=1e-6)


def test_group_scope_combines_across_dtype_buckets():
    text = """
optimizer Mixed "one group, two dtypes: one group-wide value"
hyper lr = 0.1
state g2: scalar = 0
update {
  g2 = norm(grad, group)
  param = param - lr * grad / (norm(grad, group) + 1)
}
"""
    cls = optdsl.load(text)
    dtypes = [torch.float32, torch.bfloat16, torch.float32]
    g = torch.Generator().manual_seed(3)
    base = [torch.randn(5, generator=g) for _ in dtypes]
    grads = [torch.randn(5, generator=g) for _ in dtypes]
    fused = [b.to(d).requires_grad_() for b, d in zip(base, dtypes)]
    loop = [b.to(d).requires_grad_() for b, d in zip(base, dtypes)]
    for p, q, gr, d in zip(fused, loop, grads, dtypes):
        p.grad, q.grad = gr.to(d), gr.to(d)
    fo, lo = cls(fused, fused=True), cls(loop, foreach=False)
    before = kernel_runtime.LAUNCHES[0], kernel_runtime.COMBINES[0]
    fo.step()
    lo.step()
    phases = _phases(text)
    assert kernel_runtime.LAUNCHES[0] - before[0] == 2 * phases      # two buckets
    assert kernel_runtime.COMBINES[0] - before[1] == phases - 1      # one combine covers both
    values = {float(fo.state[p]["g2"]) for p in fused}
    assert len(values) == 1   # the same group value for every tensor
    # fp32 math from the bf16 inputs (the loop path reduces the bf16 tensors in bf16: checked loosely)
    exact = torch.linalg.vector_norm(torch.cat([p.grad.double() for p in fused]))
    assert abs(values.pop() - float(exact)) <= 1e-5 * float(exact)
    for p, q in zip(fused, loop):
        torch.testing.assert_close(fo.state[p]["g2"], lo.state[q]["g2"], rtol=8e-3, atol=0)
        torch.testing.assert_close(p.detach().float(), q.detach().float(), rtol=8e-3, atol=1e-6)


@pytest.mark.parametrize("count", [3, 30])
def test_launches_per_step_are_phases_and_combines_whatever_the_tensor_count(count):
    phases = _phases(CHAINED)
    assert phases == 5   # group norm, then sum(g * g), then norm(u), then the rms under `if trust > 0.5`, then the update
    cls = optdsl.load(CHAINED)
    shapes = [(3, 2), (5,), ()] * (count // 3)
    params, opt = _run(cls, shapes, 1, fused=True, max_grad_norm=1.0)
    before = kernel_runtime.LAUNCHES[0], kernel_runtime.COMBINES[0]
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    # per step and group (one dtype bucket): one launch per phase, one combine per phase but the last
    assert kernel_runtime.LAUNCHES[0] - before[0] == phases
    assert kernel_runtime.COMBINES[0] - before[1] == phases - 1


def test_elementwise_specs_keep_one_launch_and_no_combine():
    from optdsl.optim import Adam
    params = _params([(3, 4), (5,)])
    for p in params:
        p.grad = torch.ones_like(p)
    opt = Adam(params, fused=True)
    before = kernel_runtime.LAUNCHES[0], kernel_runtime.COMBINES[0]
    opt.step()
    assert (kernel_runtime.LAUNCHES[0] - before[0], kernel_runtime.COMBINES[0] - before[1]) == (1, 0)


def test_docstring_states_bytes_per_phase():
    source = emit_triton_module(compile_ir(CHAINED), "chained.opt", spec_hash(CHAINED))
    assert "phase 0:" in source and "last phase:" in source and "total " in source
    # one kernel per phase (each calls its block function, a jit function of its own)
    assert len(re.findall(r"^def _\w+_kernel\(", source, re.M)) == _phases(CHAINED)
    assert len(re.findall(r"^def _\w+_block\(", source, re.M)) == _phases(CHAINED)


# Compiles every phase kernel for sm_90 without a GPU (TRITON_INTERPRET off, in a subprocess),
# as tests/test_kernel_compile.py does for the shipped specs.
COMPILE = r'''
import sys, importlib.util
import triton
from triton.compiler import ASTSource
from triton.backends.compiler import GPUTarget
spec = importlib.util.spec_from_file_location("kernel_module", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
I64, I32 = {"numels", "work_start", "work_end", "rounding_seeds"}, {"work_tensor", "work_channel"}
F32 = {"table", "reduced", "_reduced_channel", "partials", "_scalar_out"}
kernels = [v for k, v in vars(module).items() if k.endswith("_kernel")]
for kernel in kernels:
    sig, consts = {}, {}
    for i, p in enumerate(kernel.params):
        n = p.name
        if p.is_constexpr:
            sig[n] = "constexpr"
            consts[(i,)] = 1024 if n == "BLOCK" else 4 if n == "N_COLUMNS" else 2 if n.endswith("_DTYPE") else True
        else:
            sig[n] = ("*i64" if n.endswith("_ptrs") or n in I64 else "*i32" if n in I32 else "*fp32" if n in F32
                      else "i32" if n in ("_n_tensors", "_n_channels") else None)
            assert sig[n] is not None, n
    assert triton.compile(ASTSource(kernel, sig, consts), target=GPUTarget("cuda", 90, 32)).asm["cubin"]
print("ok", len(kernels))
'''


def test_phase_kernels_compile_for_sm90(tmp_path):
    path = tmp_path / "chained_triton.py"
    path.write_text(emit_triton_module(compile_ir(CHAINED), "chained.opt", spec_hash(CHAINED)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", COMPILE, str(path)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.strip().endswith(f"ok {_phases(CHAINED)}")
