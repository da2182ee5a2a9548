"""What `optdsl verify` prints: a row per run compared, how two runs are compared, and the few
flag combinations that cover a grid. Shared by optdsl/verify.py (the specs) and
optdsl/verify_closure.py (LBFGS), which import this and not each other."""
from __future__ import annotations

from dataclasses import dataclass

import torch

# torch.testing.assert_close defaults
TOLERANCE = {torch.float32: (1.3e-6, 1e-5), torch.float64: (1e-7, 1e-7)}


@dataclass
class Row:
    spec: str
    path: str
    flags: str
    against: str
    steps: int
    max_abs: float
    max_rel: float
    identical: int
    total: int
    ok: bool
    error: str = ""


def compare(xs, ys, dtype=torch.float32):
    rtol, atol = TOLERANCE[dtype]
    max_abs = max_rel = 0.0
    identical = total = 0
    ok = True
    for x, y in zip(xs, ys):
        x, y = x.detach(), y.detach()
        diff = (x - y).abs()
        max_abs = max(max_abs, float(diff.max()) if diff.numel() else 0.0)
        rel = diff / y.abs().clamp_min(1e-30)
        max_rel = max(max_rel, float(rel.max()) if rel.numel() else 0.0)
        identical += int((x == y).sum())
        total += x.numel()
        ok &= bool(torch.isclose(x, y, rtol=rtol, atol=atol, equal_nan=True).all())
    return max_abs, max_rel, identical, total, ok


def flags_text(combo: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in combo.items()) or "-"


def covering_combos(entry) -> list[dict]:
    """Few valid combinations of the grid (`entry.grid`, `entry.combos()`: a registry Entry, or
    anything with both) in which every level of every factor appears at least once: the first
    combination (the grid's first levels), then greedily the one that adds the most levels not
    yet seen (ties: grid order). Deterministic."""
    combos = entry.combos()
    if not combos:
        return []

    def levels(combo: dict) -> set:
        return {(k, entry.grid[k].index(v)) for k, v in combo.items()}

    wanted = set().union(*(levels(c) for c in combos))
    chosen = [combos[0]]
    seen = levels(combos[0])
    while seen != wanted:
        best = max(combos, key=lambda c: len(levels(c) - seen))
        chosen.append(best)
        seen |= levels(best)
    return chosen
