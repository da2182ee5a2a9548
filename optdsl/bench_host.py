"""`optdsl bench --host`: the host time of one fused step, the kernel itself excluded.

Measured on CPU tensors with the Triton kernel launch replaced by a no-op (the label says so): what
is left is the Python a fused step runs per step -- the per-tensor host function, buckets, views,
work list, pointer and value tables, the launch's arguments. Three nested spans per step:

* `launcher`: the kernel module's `launch` (tables, work list, pointers, the no-op launch; for a
  spec with reductions also the combines between phases, torch ops that run on the CPU here and
  are device work on a GPU);
* `fused fn`: the functional `_fused_<name>` (adds the step increment and reading the steps to
  the host: `torch._foreach_add_` over the step tensors then a read, or one pass of the launch
  helper doing both);
* `opt.step`: the whole optimizer step (adds `_init_group`'s per-parameter state lookups).

Each case is measured twice, side by side: the launch reading its tensors' facts in Python passes
and in one C++ pass (optdsl.host_facts). Cases: every tensor at the same step with the same grad
tensors each step (`kept grads`), fresh grad tensors each step (zero_grad(set_to_none=True): the
grad pointer table is rebuilt), and one tensor a step behind (`mixed steps`: a row per tensor in
the value table). Medians over rounds.
Never a timed assertion: numbers for people to read."""
from __future__ import annotations

import os
import statistics
import sys
import time

import torch

TENSORS = 2000


class _NoLaunch:
    """Stands in for a @triton.jit kernel: `kernel[grid](*args, **kwargs)` does nothing."""
    calls = 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            _NoLaunch.calls += 1
        return launch


class _Span:
    """Wraps a function and accumulates its wall time."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def _sizes(n: int) -> list[int]:
    g = torch.Generator().manual_seed(0)
    return [int(x) for x in torch.randint(16, 4096, (n,), generator=g)]


FACTS = ("python", "cpp")   # OPTDSL_HOST_FACTS: the launch reads its tensors' facts in Python passes, or in C++


def measure(name: str = "Adam", tensors: int = TENSORS, steps: int = 20, rounds: int = 5,
            facts: str = "python") -> dict[str, dict]:
    from . import optim, runtime
    cls = getattr(optim, name)
    module = sys.modules[cls.__module__]
    fused_fn = next(k for k in vars(module) if k.startswith("_fused_"))
    kernels = runtime.import_sibling(module.__file__, "_triton")
    originals = {k: v for k, v in vars(kernels).items() if k.endswith("_kernel")}
    original_launch, original_fused = kernels.launch, getattr(module, fused_fn)
    phases = getattr(kernels, "PHASES", None)
    old_env = {k: os.environ.get(k) for k in ("TRITON_INTERPRET", "OPTDSL_HOST_FACTS")}
    results = {}
    try:
        os.environ["TRITON_INTERPRET"] = "1"   # lets the Triton kernel module serve CPU tensors; no kernel runs
        os.environ["OPTDSL_HOST_FACTS"] = facts
        for k in originals:
            setattr(kernels, k, _NoLaunch())
        if hasattr(kernels, "PHASES"):   # a phased spec: its phase kernels, with what combine joins after each
            kernels.PHASES = tuple((_NoLaunch(), sinks) for _, sinks in phases)
        for case in ("kept grads", "fresh grads", "mixed steps"):
            params = [torch.randn(n, requires_grad=True) for n in _sizes(tensors)]
            grads = [torch.randn_like(p) for p in params]
            opt = cls(params, fused=True)
            spans = {"opt.step": [], "fused fn": [], "launcher": []}
            with runtime.cpu_fused("triton"):
                for p, g in zip(params, grads):
                    p.grad = g
                if case == "mixed steps":   # tensor 0 skips the first step: one step behind from then on
                    params[0].grad = None
                    opt.step()
                    params[0].grad = grads[0]
                for r in range(rounds + 1):
                    launcher, fused = _Span(original_launch), _Span(original_fused)
                    kernels.launch = launcher
                    setattr(module, fused_fn, fused)
                    total = 0.0
                    for _ in range(steps):
                        if case == "fresh grads":
                            for p in params:
                                p.grad = torch.empty_like(p)
                        start = time.perf_counter()
                        opt.step()
                        total += time.perf_counter() - start
                    if r:   # round 0 warms the caches up
                        spans["opt.step"].append(total / steps)
                        spans["fused fn"].append(fused.seconds / steps)
                        spans["launcher"].append(launcher.seconds / steps)
            results[case] = {k: statistics.median(v) * 1e6 for k, v in spans.items()}
    finally:
        kernels.launch = original_launch
        setattr(module, fused_fn, original_fused)
        for k, v in originals.items():
            setattr(kernels, k, v)
        if phases is not None:
            kernels.PHASES = phases
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return results


def reference_pass(tensors: int = TENSORS) -> float:
    """Microseconds of one C-level pass over the tensors reading an attribute
    (`tuple(map(Tensor.data_ptr, ts))`): the unit the launcher's per-tensor work is made of, to
    compare machines (and a loaded machine with itself)."""
    ts = [torch.empty(1) for _ in range(tensors)]
    data_ptr = torch.Tensor.data_ptr
    times = []
    for _ in range(50):
        start = time.perf_counter()
        tuple(map(data_ptr, ts))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main(specs: list[str], tensors: int = TENSORS) -> int:
    from . import host_facts
    specs = specs or ["Adam"]
    print(f"host time of one fused step, {tensors} tensors, CPU tensors, kernel launch replaced by a no-op "
          "(the kernel itself and Triton's launch are not counted); median us per step")
    print(f"(this machine: one pass reading data_ptr() of {tensors} tensors takes {reference_pass(tensors):.0f} us)")
    print("facts: how the launch reads its tensors' addresses, sizes, dtypes and layout each step -- `python`, "
          "a C-level pass per attribute and stream; `cpp`, one pass of the launch helper (optdsl.host_facts, "
          "what a CUDA launch uses where a C++ compiler is found)")
    readers = [f for f in FACTS if f == "python" or host_facts.available("cuda", "triton")]
    print(f"{'spec':<10} {'case':<12} {'facts':<7} {'launcher':>10} {'fused fn':>10} {'opt.step':>10}")
    for name in specs:
        by_reader = {f: measure(name, tensors, facts=f) for f in readers}
        for case in by_reader[readers[0]]:
            for f in readers:
                r = by_reader[f][case]
                print(f"{name:<10} {case:<12} {f:<7} {r['launcher']:>10.0f} {r['fused fn']:>10.0f} {r['opt.step']:>10.0f}")
    return 0
