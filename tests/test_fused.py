"""The fused path: one launch per parameter group per step, whatever the number of
tensors; multi-block tensors; fp32/bf16/fp16 params with fp32 math."""
import pytest
import torch

from optdsl import kernel_runtime
from optdsl.optim import SGD, Adam


def _grads(params, seed):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)


def test_one_launch_per_group_per_step_whatever_the_tensor_count():
    params = [torch.randn(n, requires_grad=True) for n in (1, 7, 40000, 3, 100)]   # 40000 spans several blocks
    other = [torch.randn(5, 5, requires_grad=True) for _ in range(20)]
    opt = Adam([{"params": params}, {"params": other, "lr": 0.1}], fused=True)
    before = kernel_runtime.LAUNCHES[0]
    for step in range(3):
        _grads(params + other, step)
        opt.step()
    assert kernel_runtime.LAUNCHES[0] - before == 3 * 2


def test_multi_block_tensor_matches_loop_path():
    n = 3 * kernel_runtime.block_size(torch.device("cpu")) + 17
    a = torch.randn(n, requires_grad=True)
    b = a.detach().clone().requires_grad_()
    oa, ob = Adam([a], fused=True, amsgrad=True), Adam([b], foreach=False, amsgrad=True)
    for step in range(5):
        g = torch.randn(n)
        a.grad, b.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_params_use_fp32_math_and_round_to_nearest_even(dtype):
    """The kernel upcasts, computes in fp32 and rounds once: compare with the same math done in fp64."""
    torch.manual_seed(0)
    p32 = torch.randn(1000)
    p = p32.to(dtype).requires_grad_()
    grad = torch.randn(1000).to(dtype)
    p.grad = grad
    SGD([p], lr=0.1, momentum=0.9, fused=True).step()
    expected = (p32.to(dtype).double() - 0.1 * grad.double()).float().to(dtype)
    # one rounding of an fp32 result: at most one ulp of the low-precision type from the exact value
    assert p.dtype == dtype
    diff = (p.detach().float() - expected.float()).abs()
    ulp = torch.finfo(dtype).eps * expected.float().abs().clamp_min(torch.finfo(dtype).tiny)
    assert bool((diff <= ulp).all())


def test_bf16_rounding_is_round_to_nearest_even_and_keeps_nan():
    # 1 + 2^-8 lies halfway between bf16 1.0 and 1.0078125: the even neighbour is 1.0;
    # 1 + 3 * 2^-8 lies halfway between 1.0078125 and 1.015625: the even neighbour is 1.015625.
    p = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.bfloat16, requires_grad=True)
    p.grad = torch.tensor([-2 ** -8, -3 * 2 ** -8, float("nan"), float("-inf")], dtype=torch.bfloat16)
    SGD([p], lr=1.0, fused=True).step()
    out = p.detach()
    assert out[0].item() == 1.0
    assert out[1].item() == 1.015625
    assert torch.isnan(out[2]) and out[3].item() == float("inf")
    q = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.bfloat16, requires_grad=True)
    q.grad = p.grad.clone()
    SGD([q], lr=1.0).step()    # torch's own bf16 arithmetic rounds the same way
    assert torch.equal(q.detach()[:2], out[:2])


def test_mixed_dtype_group_launches_once_per_dtype():
    a = torch.randn(10, requires_grad=True)
    b = torch.randn(10, dtype=torch.bfloat16, requires_grad=True)
    opt = Adam([a, b], fused=True)
    _grads([a, b], 0)
    before = kernel_runtime.LAUNCHES[0]
    opt.step()
    assert kernel_runtime.LAUNCHES[0] - before == 2


def test_fused_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    # CPU tensors run the C++ backend by default; the Triton kernel on CPU is the interpreter's
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setenv("OPTDSL_CPU_FUSED", "triton")
    p = torch.randn(3, requires_grad=True)
    p.grad = torch.randn(3)
    with pytest.raises(RuntimeError, match="OPTDSL_CPU_FUSED=triton runs the Triton kernel on CPU tensors, which needs TRITON_INTERPRET=1"):
        Adam([p], fused=True).step()


def test_fused_and_foreach_together_is_refused_like_torch():
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together."):
        Adam([torch.randn(2, requires_grad=True)], fused=True, foreach=True)
