"""`optdsl bench --cpu-fused`: the fused C++ backend against torch on CPU, side by side in one run
(alternating rounds, medians), on the issue's tensor mixes, with effective GB/s and two memory
ceilings: `copy_` and a 4-read/3-write stream compiled through the same C++ backend.

Effective GB/s = the spec's bytes per element (optdsl.plan.cost, fp32 streams) x elements / time.
Never a timed assertion: numbers for people to read (on a shared machine they are noisy)."""
from __future__ import annotations

import statistics
import sys
import time

import torch

from .registry import REGISTRY
from .runtime import cpu_fused

MIXES = {
    "1 x 2^24": lambda g: [1 << 24],
    "50 x 20K": lambda g: [20_000] * 50,
    "2000 x 1-4K": lambda g: [int(n) for n in torch.randint(1024, 4097, (2000,), generator=g)],
}
LARGE_MIX = {"1 x 2^26": lambda g: [1 << 26]}

# Reads param, grad, exp_avg, exp_avg_sq and writes param, exp_avg, exp_avg_sq: AdamW's traffic
# with almost no math, through the same pipeline and C++ backend as every spec.
STREAM_SPEC = """optimizer StreamCeiling "4-read/3-write stream: the memory ceiling of an AdamW-shaped step"

hyper lr = 1e-3 where lr > 0

state exp_avg = zeros
state exp_avg_sq = zeros

update {
  exp_avg = exp_avg + grad
  exp_avg_sq = exp_avg_sq + grad
  param = param - lr * (exp_avg + exp_avg_sq)
}
"""


def bytes_per_element(source: str) -> int:
    from .compiler import compile_spec
    from .plan import make_plan
    from .plan.cost import optional_streams, phase_bytes, phase_costs
    plan = make_plan(compile_spec(source).program, "fused")
    return sum(phase_bytes(c, optional_streams(plan.program)).total for c in phase_costs(plan))


def _tensors(sizes: list[int], seed: int):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(n, generator=g).requires_grad_() for n in sizes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    return params


class Contender:
    def __init__(self, label: str, make, sizes: list[int], backend: str | None = None):
        self.label, self.backend = label, backend
        self.opt = make(_tensors(sizes, 1))
        for _ in range(2):   # state allocation and (first use only) the C++ build happen here
            self.run(1)

    def run(self, repeat: int) -> float:
        start = time.perf_counter()
        if self.backend is not None:
            with cpu_fused(self.backend):
                for _ in range(repeat):
                    self.opt.step()
        else:
            for _ in range(repeat):
                self.opt.step()
        return (time.perf_counter() - start) / repeat


class CopyCeiling:
    """dst.copy_(src) over the mix's tensors, 8 bytes per element (fp32)."""
    label = "copy_ (ceiling)"

    def __init__(self, sizes: list[int]):
        self.src = [torch.randn(n) for n in sizes]
        self.dst = [torch.empty(n) for n in sizes]

    def run(self, repeat: int) -> float:
        start = time.perf_counter()
        for _ in range(repeat):
            for d, s in zip(self.dst, self.src):
                d.copy_(s)
        return (time.perf_counter() - start) / repeat


def contenders(name: str, sizes: list[int]) -> list:
    from . import optim
    from .loader import load
    entry = REGISTRY[name]
    ours = getattr(optim, name)
    combo = dict(entry.base)
    out = []
    if entry.torch_class is not None:
        out.append(Contender("torch foreach", lambda ps: entry.torch_class(ps, **combo, foreach=True), sizes))
        try:
            torch_fused = Contender("torch fused=True", lambda ps: entry.torch_class(ps, **combo, fused=True), sizes)
            out.append(torch_fused)
        except (RuntimeError, TypeError):   # torch has no fused CPU path for this optimizer
            pass
    out.append(Contender("optdsl foreach", lambda ps: ours(ps, **combo, foreach=True), sizes))
    out.append(Contender("optdsl fused (C++)", lambda ps: ours(ps, **combo, fused=True), sizes, "cpp"))
    stream = load(STREAM_SPEC)
    out.append(Contender("4R/3W stream (C++, ceiling)", lambda ps: stream(ps, fused=True), sizes, "cpp"))
    out.append(CopyCeiling(sizes))
    return out


def main(names: list[str], repeat: int, rounds: int, large: bool) -> int:
    from .build import spec_files
    torch.set_num_threads(max(1, torch.get_num_threads()))
    names = names or ["AdamW"]
    sources = {p.read_text(encoding="utf-8").split()[1]: p.read_text(encoding="utf-8") for p in spec_files()}
    mixes = {**MIXES, **(LARGE_MIX if large else {})}
    print(f"optdsl bench --cpu-fused: fp32, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"median of {rounds} alternating rounds of {repeat} steps (a shared machine: noisy)")
    for name in names:
        spec_bytes = bytes_per_element(sources[name])
        print(f"\n{name}: {spec_bytes} B per element (fp32 streams); ratio = torch foreach time / this time; "
              f"GB/s = {spec_bytes} B x elements / time (copy_: 8 B x elements / time)")
        print(f"{'mix':<13} {'contender':<28} {'ms/step':>10} {'ratio':>7} {'GB/s':>8} {'% of 4R/3W':>11}")
        for mix, sizes_of in mixes.items():
            sizes = sizes_of(torch.Generator().manual_seed(0))
            elements = sum(sizes)
            print(f"  building {mix} ...", file=sys.stderr)
            cs = contenders(name, sizes)
            times: list[list[float]] = [[] for _ in cs]
            for r in range(rounds):   # alternate the order, so drift in machine load hits every contender
                order = range(len(cs)) if r % 2 == 0 else reversed(range(len(cs)))
                for i in order:
                    times[i].append(cs[i].run(repeat))
            medians = [statistics.median(t) for t in times]
            base = medians[0]
            stream_gbs = 28 * elements / medians[-2] / 1e9
            for c, t in zip(cs, medians):
                per = 8 if isinstance(c, CopyCeiling) else (28 if c is cs[-2] else spec_bytes)
                gbs = per * elements / t / 1e9
                print(f"{mix:<13} {c.label:<28} {t * 1e3:>10.3f} {base / t:>7.2f} {gbs:>8.1f} {gbs / stream_gbs * 100:>10.0f}%")
            del cs
    from .cpp_runtime import COMPILE_SECONDS
    if COMPILE_SECONDS:
        print("\none-time C++ builds in this run: " + ", ".join(f"{k} {v:.1f} s" for k, v in COMPILE_SECONDS.items()))
    return 0
