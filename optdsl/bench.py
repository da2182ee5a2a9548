"""`optdsl bench`: CPU step-time ratios, generated / reference (torch.optim, or timm's Lamb
for LAMB), measured side by side in one run (alternating rounds, medians), and cold
`optdsl.load` latency.

Never a timed assertion: this prints numbers for people to read."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .build import spec_files
from .registry import REGISTRY

TOTAL = 1 << 20
TENSORS = 50


def parameter_shapes(total: int = TOTAL, count: int = TENSORS, seed: int = 0) -> list[int]:
    """`count` sizes, log-uniform, odd lengths included, summing to ~total."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.exp(torch.rand(count, generator=g) * 6)
    sizes = (weights / weights.sum() * total).long().clamp_min(1)
    sizes[-1] += total - int(sizes.sum())
    return [int(s) for s in sizes]


def _setup(entry, path: str, ours: bool):
    sizes = parameter_shapes()
    g = torch.Generator().manual_seed(1)
    params = [torch.randn(n, generator=g).requires_grad_() for n in sizes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    combo = dict(entry.base)
    if ours:
        from . import optim
        opt = getattr(optim, entry.name)(params, **combo, foreach=(path == "foreach"))
    elif entry.torch_class is not None:
        opt = entry.torch_class(params, **combo, foreach=(path == "foreach"))
    else:   # a reference that is not torch.optim's (timm's Lamb) and has a foreach path of its own
        opt = entry.reference(params, **combo, foreach=(path == "foreach"))
    for _ in range(3):
        opt.step()
    return opt


def _time(opt, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        opt.step()
    return (time.perf_counter() - start) / repeat


def step_ratios(names: list[str], repeat: int, rounds: int) -> list[tuple]:
    rows = []
    for name in names:
        entry = REGISTRY[name]
        if entry.torch_class is None and not entry.bench:
            continue
        for path in ("loop", "foreach"):
            ours, theirs = _setup(entry, path, True), _setup(entry, path, False)
            a, b = [], []
            for r in range(rounds):        # alternate, so drift in machine load hits both sides
                if r % 2:
                    b.append(_time(theirs, repeat))
                    a.append(_time(ours, repeat))
                else:
                    a.append(_time(ours, repeat))
                    b.append(_time(theirs, repeat))
            ta, tb = statistics.median(a), statistics.median(b)
            rows.append((name, path, ta * 1e3, tb * 1e3, ta / tb))
    return rows


LOAD_SCRIPT = """
import sys, time, torch, optdsl
t = time.perf_counter(); optdsl.load(sys.argv[1]); cold = time.perf_counter() - t
t = time.perf_counter(); optdsl.load(sys.argv[1]); warm = time.perf_counter() - t
print(cold, warm)
"""


def load_latency() -> list[tuple]:
    rows = []
    root = Path(__file__).resolve().parent.parent
    for path in spec_files():
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "OPTDSL_CACHE": cache}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
            out = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(path)], capture_output=True, text=True, env=env)
            if out.returncode != 0:
                rows.append((path.name, float("nan"), float("nan")))
                continue
            cold, warm = map(float, out.stdout.split())
            rows.append((path.name, cold * 1e3, warm * 1e3))
    return rows


def main(args) -> int:
    names = args.specs or [n for n, e in REGISTRY.items() if e.bench]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"optdsl bench: {TENSORS} tensors, {TOTAL:,} parameters (float32, CPU, {torch.get_num_threads()} threads), "
          f"torch {torch.__version__}; median of {args.rounds} alternating rounds of {args.repeat} steps")
    print(f"\n{'spec':<10} {'path':<8} {'against':<24} {'optdsl ms/step':>15} {'theirs ms/step':>15} {'ratio':>7}")
    for name, path, ta, tb, ratio in step_ratios(names, args.repeat, args.rounds):
        print(f"{name:<10} {path:<8} {REGISTRY[name].reference_name:<24} {ta:>15.3f} {tb:>15.3f} {ratio:>7.3f}")
    print(f"\n{'spec file':<16} {'cold load ms':>13} {'cached ms':>10}   (fresh process, empty cache; import torch/optdsl excluded)")
    for name, cold, warm in load_latency():
        print(f"{name:<16} {cold:>13.1f} {warm:>10.3f}")
    return 0
