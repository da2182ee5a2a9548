"""`optdsl bench --sparse`: SparseAdam on an embedding table's sparse gradients, ours (loop,
foreach, the fused C++ `cpu` path) against torch.optim.SparseAdam, and dense Adam on the same
table as what stepping every row would cost. Measured side by side in one run: alternating
rounds, medians, ratios. Never a timed assertion.

Each step's gradient is a fresh uncoalesced COO tensor (`batch` lookups, rows drawn with
repeats, as an nn.Embedding(sparse=True) backward leaves it), so both sides coalesce it."""
from __future__ import annotations

import contextlib
import statistics
import time

import torch

from .runtime import cpu_fused

TABLES = ((100_000, 64, 1_024), (100_000, 64, 16_384))   # rows, dim, lookups per step
SMOKE_TABLES = ((1_000, 8, 64),)


def _gradients(rows: int, dim: int, batch: int, count: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.sparse_coo_tensor(torch.randint(0, rows, (1, batch), generator=g),
                                    torch.randn(batch, dim, generator=g), (rows, dim), check_invariants=True)
            for _ in range(count)]


def _contenders(rows: int, dim: int):
    from .optim import SparseAdam
    def table():
        return torch.zeros(rows, dim, requires_grad=True)
    return {
        "torch.optim.SparseAdam": (lambda: torch.optim.SparseAdam([table()], lr=1e-3), False, None),
        "optdsl loop": (lambda: SparseAdam([table()], lr=1e-3, foreach=False), False, None),
        "optdsl foreach": (lambda: SparseAdam([table()], lr=1e-3, foreach=True), False, None),
        "optdsl cpu (fused C++)": (lambda: SparseAdam([table()], lr=1e-3, fused=True), False, "cpp"),
        "torch.optim.Adam, dense": (lambda: torch.optim.Adam([table()], lr=1e-3, foreach=True), True, None),
    }


def _time(opt, grads, dense: bool, backend) -> float:
    (p,) = opt.param_groups[0]["params"]
    ready = [g.to_dense() for g in grads] if dense else grads   # densified outside the timing
    with cpu_fused(backend) if backend else contextlib.nullcontext():
        start = time.perf_counter()
        for g in ready:
            p.grad = g
            opt.step()
        return (time.perf_counter() - start) / len(ready)


def main(args) -> int:
    tables = SMOKE_TABLES if args.smoke else TABLES
    repeat, rounds = (2, 2) if args.smoke else (args.repeat, args.rounds)
    print(f"optdsl bench --sparse: SparseAdam on an embedding table (float32, CPU, {torch.get_num_threads()} threads), "
          f"torch {torch.__version__}; median of {rounds} alternating rounds of {repeat} steps; ratio: against "
          "torch.optim.SparseAdam")
    print(f"\n{'table':<22} {'contender':<26} {'ms/step':>10} {'ratio':>7}")
    for rows, dim, batch in tables:
        grads = _gradients(rows, dim, batch, repeat)
        contenders = _contenders(rows, dim)
        opts = {}
        for name, (make, dense, backend) in contenders.items():
            opts[name] = make()
            _time(opts[name], grads[:1], dense, backend)   # warm: states made, the C++ kernel built
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for r in range(rounds):   # alternate the order, so drift in machine load hits every side
            order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
            for name in order:
                _, dense, backend = contenders[name]
                times[name].append(_time(opts[name], grads, dense, backend))
        base = statistics.median(times["torch.optim.SparseAdam"])
        label = f"{rows}x{dim}, {batch} lookups"
        for name in contenders:
            t = statistics.median(times[name])
            print(f"{label:<22} {name:<26} {t * 1e3:>10.3f} {t / base:>7.3f}")
    return 0
