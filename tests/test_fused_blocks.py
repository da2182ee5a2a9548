"""The fused Triton kernel's two block paths and its host tables, run by the interpreter: full
blocks (no mask, alignment hints) and the masked tail give the loop path's values, for aligned
and unaligned tensors; the value table collapses to one row when every tensor has the same step
and keeps a row per tensor when steps differ (a tensor whose grad was None skipped a step); a
one-row table is reused on the device while its numbers are unchanged; `optdsl bench --host`
times a step with every launch a no-op."""
import sys

import pytest
import torch

from optdsl import bench_host, kernel_runtime, optim, runtime
from optdsl.optim import SGDP, Adam, Lamb

SIZES = (64, 64 * 3, 64 * 2 + 5, 7, 1, 130)   # whole blocks, blocks and a tail, tails only


@pytest.fixture
def small_blocks(monkeypatch):
    """64-element blocks, so that small tensors take both paths (the interpreter's block is 16384)."""
    monkeypatch.setattr(kernel_runtime, "_full_block", lambda device: 64)


def _pair(sizes, dtype=torch.float32, offset=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        buf = torch.randn(n + offset, generator=g).to(dtype)
        a = buf[offset:].clone() if offset == 0 else buf[offset:]   # offset: a view off the 16-byte grid
        out.append((a.requires_grad_(), a.detach().clone().requires_grad_()))
    return [a for a, _ in out], [b for _, b in out]


def _run(make, fused, loop, steps=4, skip=None, seed=1):
    of, ol = make(fused, fused=True), make(loop, foreach=False)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for i, (a, b) in enumerate(zip(fused, loop)):
            if skip is not None and skip(step, i):
                a.grad = b.grad = None
                continue
            grad = torch.randn(a.shape, generator=g).to(a.dtype)
            a.grad, b.grad = grad.clone(), grad.clone()
        of.step()
        ol.step()
    return of, ol


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_full_blocks_and_tails_match(monkeypatch, dtype):
    """64-element blocks (full blocks and tails) give bit for bit what one masked block per tensor
    gives, and (fp32) the loop path's values."""
    def make(ps, **kw):
        return Adam(ps, lr=0.01, weight_decay=0.1, amsgrad=True, **kw)
    fused, loop = _pair(SIZES, dtype)
    masked, _ = _pair(SIZES, dtype)
    _run(make, masked, loop)   # the interpreter's 16384-element blocks: every tensor a single tail
    monkeypatch.setattr(kernel_runtime, "_full_block", lambda device: 64)
    _, loop = _pair(SIZES, dtype)
    _run(make, fused, loop)
    for a, b, c in zip(fused, masked, loop):
        assert torch.equal(a, b)
        if dtype == torch.float32:
            # torch's vectorized CPU kernels (AVX2, AVX512) fuse some multiply-adds, the interpreter
            # does not: a few ulps of the operands' scale (~1e-2 here), which is more than 1e-6
            # relative where a result cancels towards 0 (with ATEN_CPU_CAPABILITY=default, 1e-6 holds)
            torch.testing.assert_close(a, c, atol=1e-8, rtol=1e-6)


def test_unaligned_tensors_are_not_hinted_aligned_and_match(small_blocks):
    fused, loop = _pair(SIZES, offset=1)    # fp32 views one element (4 bytes) into their buffers
    assert any(a.data_ptr() % 16 for a in fused)
    _, aligned = kernel_runtime.pointer_tables({"param": fused}, torch.device("cpu"))
    assert aligned is False
    _, aligned = kernel_runtime.pointer_tables({"param": loop}, torch.device("cpu"))
    assert aligned is True   # fresh allocations
    _run(lambda ps, **kw: Adam(ps, lr=0.01, **kw), fused, loop)
    for a, b in zip(fused, loop):
        torch.testing.assert_close(a, b, atol=0, rtol=1e-6)


@pytest.mark.parametrize("cls", [Lamb, SGDP])   # phased; SGDP cuts programs at output channels
def test_phased_kernels_full_blocks_match_the_loop_path(small_blocks, cls):
    g = torch.Generator().manual_seed(0)
    # SGDP runs 11 phases a step, in the interpreter a few programs each: one tensor, two channels of
    # a full block and a tail
    shapes = [(3, 64), (2, 70), (130,), (5,)] if cls is Lamb else [(2, 70)]
    fused = [torch.randn(s, generator=g).requires_grad_() for s in shapes]
    loop = [p.detach().clone().requires_grad_() for p in fused]
    _run(lambda ps, **kw: cls(ps, lr=0.01, **kw), fused, loop, steps=4 if cls is Lamb else 2)
    for a, b in zip(fused, loop):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_one_row_when_steps_agree_a_row_per_tensor_when_not(small_blocks, monkeypatch):
    seen = []
    real = kernel_runtime.compact_value_table

    def spy(rows, columns, device, group=()):
        table, one_row = real(rows, columns, device, group)
        seen.append((one_row, table.numel(), len(rows)))
        return table, one_row
    monkeypatch.setattr(kernel_runtime, "compact_value_table", spy)
    fused, loop = _pair(SIZES)
    # tensor 2 has no grad at step 1: from then on its step is one behind, with its own bias corrections
    _run(lambda ps, **kw: Adam(ps, lr=0.01, **kw), fused, loop, steps=4, skip=lambda step, i: step == 1 and i == 2)
    for a, b in zip(fused, loop):
        torch.testing.assert_close(a, b, atol=0, rtol=1e-6)
    # step 0: every tensor at step 1, one row; step 1: tensor 2 skipped, the other 5 agree; then 6 tensors, 2 steps
    assert [s[0] for s in seen] == [True, True, False, False]
    assert seen[2][1] > seen[0][1] and seen[2][2] == len(SIZES)


def test_one_row_table_stays_on_the_device_while_unchanged():
    rows = [(0.9, 0.5)] * 2000
    first, one_row = kernel_runtime.compact_value_table(rows, (0, 1), torch.device("cpu"), (1e-3,))
    again, _ = kernel_runtime.compact_value_table([(0.9, 0.5)] * 2000, (0, 1), torch.device("cpu"), (1e-3,))
    other, _ = kernel_runtime.compact_value_table(rows, (0, 1), torch.device("cpu"), (2e-3,))
    assert one_row and first.tolist() == pytest.approx([1e-3, 0.9, 0.5])
    assert again is first and other is not first
    many, one_row = kernel_runtime.compact_value_table([(0.9, 0.5), (0.8, 0.5)], (0, 1), torch.device("cpu"), (1e-3,))
    assert not one_row and many.numel() == 5


@pytest.mark.parametrize("name", ["Adam", "Lamb"])
def test_bench_host_times_the_step_with_no_kernel_and_restores_it(name):
    module = sys.modules[getattr(optim, name).__module__]
    kernels = runtime.import_sibling(module.__file__, "_triton")
    before = {k: v for k, v in vars(kernels).items() if k.endswith("_kernel") or k in ("launch", "PHASES")}
    calls, launches = bench_host._NoLaunch.calls, kernel_runtime.LAUNCHES[0]
    out = bench_host.measure(name, tensors=20, steps=2, rounds=1)
    assert set(out) == {"kept grads", "fresh grads", "mixed steps"}
    for r in out.values():
        assert 0 < r["launcher"] <= r["fused fn"] <= r["opt.step"]
    assert bench_host._NoLaunch.calls - calls == kernel_runtime.LAUNCHES[0] - launches > 0   # no kernel ran
    assert {k: v for k, v in vars(kernels).items() if k in before} == before
