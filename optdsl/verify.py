"""`optdsl verify`: every path of every shipped spec against its reference and
against the loop path, over the spec's flag grid, printed as one table."""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass

import torch

from .registry import REGISTRY, Entry
from .runtime import cpu_fused

# torch.testing.assert_close defaults
TOLERANCE = {torch.float32: (1.3e-6, 1e-5), torch.float64: (1e-7, 1e-7)}
SHAPES = ((17, 9), (64,), (1,), (3, 5, 2))


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


def _params(seed: int, dtype=torch.float32, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


def run_pair(entry: Entry, combo: dict, path: str, steps: int, seed: int = 0, against: str = "reference",
             dtype=torch.float32, shapes=SHAPES):
    """Run the generated optimizer (path) and the reference side by side on the same gradients."""
    base = _params(seed, dtype, shapes)
    ours = [p.clone().requires_grad_() for p in base]
    theirs = [p.clone().requires_grad_() for p in base]
    opt_a = entry.make(ours, combo, path)
    backend = cpu_fused("cpp") if path == "cpu" else contextlib.nullcontext()
    if against == "reference":
        opt_b = entry.make_reference(theirs, combo, foreach=entry.reference_path(path))
    else:
        opt_b = entry.make(theirs, combo, "loop")
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        for a, b in zip(ours, theirs):
            grad = torch.randn(a.shape, generator=g, dtype=dtype)
            a.grad = grad.clone()
            b.grad = grad.clone()
        with backend:
            opt_a.step()
        opt_b.step()
    return ours, theirs, opt_a, opt_b


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


def with_state(ours, theirs, opt_a, opt_b, check_keys: bool):
    """The parameters, then every state tensor both optimizers keep under the same key (ASGD's
    average `ax`, NAdam's `mu_product`, the `step` counts, ...), as two aligned lists. With
    check_keys (a torch.optim reference, whose state_dict ours must load), differing key sets
    or a differently shaped or typed state raise."""
    xs, ys = list(ours), list(theirs)
    for a, b in zip(ours, theirs):
        sa, sb = opt_a.state.get(a, {}), opt_b.state.get(b, {})
        if check_keys and set(sa) != set(sb):
            raise AssertionError(f"state keys differ: ours {sorted(sa)}, the reference's {sorted(sb)}")
        for key in sorted(set(sa) & set(sb)):
            x, y = sa[key], sb[key]
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
                continue
            if check_keys and (x.shape != y.shape or x.dtype != y.dtype):
                raise AssertionError(f"state '{key}': ours is {x.dtype} {tuple(x.shape)}, "
                                     f"the reference's {y.dtype} {tuple(y.shape)}")
            xs.append(x)
            ys.append(y)
    return xs, ys


def flags_text(combo: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in combo.items()) or "-"


def verify_entry(entry: Entry, steps: int, paths=("loop", "foreach", "fused", "cpu")) -> list[Row]:
    """Rows of every path in `paths`: "fused" is the Triton kernel (a GPU, or the interpreter),
    "cpu" the fused C++ backend on CPU tensors (fused=True inside runtime.cpu_fused("cpp")), for
    the specs it covers (cpp_runtime.covered)."""
    from .cpp_runtime import covered
    rows = []
    if "cpu" in paths and not covered(entry.name):
        paths = tuple(p for p in paths if p != "cpu")
    for combo in entry.combos():
        for path in paths:
            for against in (("reference",) if path == "loop" else ("reference", "loop")):
                try:
                    ours, theirs, opt_a, opt_b = run_pair(entry, combo, path, steps, against=against)
                    xs, ys = with_state(ours, theirs, opt_a, opt_b,
                                        check_keys=entry.torch_class is not None or against == "loop")
                    max_abs, max_rel, same, total, ok = compare(xs, ys)
                    rows.append(Row(entry.name, path, flags_text(combo),
                                    entry.reference_label(path) if against == "reference" else "loop path",
                                    steps, max_abs, max_rel, same, total, ok))
                except Exception as exc:  # a crash is a FAIL row, with its reason, not a lost table
                    rows.append(Row(entry.name, path, flags_text(combo), against, steps, float("nan"),
                                    float("nan"), 0, 0, False, f"{type(exc).__name__}: {exc}"))
    return rows


def fused_paths() -> tuple[str, ...]:
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        return ("loop", "foreach", "fused", "cpu")
    return ("loop", "foreach", "cpu")


def print_table(rows: list[Row], out=sys.stdout) -> None:
    header = f"{'spec':<8} {'path':<8} {'against':<22} {'flags':<70} {'steps':>5} {'max abs err':>12} {'max rel err':>12} {'identical':>12}  result"
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        ident = f"{r.identical}/{r.total}"
        print(f"{r.spec:<8} {r.path:<8} {r.against:<22} {r.flags:<70} {r.steps:>5} {r.max_abs:>12.3e} {r.max_rel:>12.3e} "
              f"{ident:>12}  {'PASS' if r.ok else 'FAIL'}{'  ' + r.error if r.error else ''}", file=out)


def main(names: list[str], steps: int) -> int:
    if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
        os.environ["TRITON_INTERPRET"] = "1"   # CPU tensors run the fused kernels in the interpreter
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        print(f"unknown spec(s): {', '.join(unknown)}; known: {', '.join(REGISTRY)}", file=sys.stderr)
        return 2
    entries = [REGISTRY[n] for n in names] if names else list(REGISTRY.values())
    rows: list[Row] = []
    start = time.perf_counter()
    for e in entries:
        rows += verify_entry(e, steps, fused_paths())
    print_table(rows)
    failed = sum(not r.ok for r in rows)
    from .cpp_runtime import covered
    uncovered = [e.name for e in entries if not covered(e.name)]
    if uncovered:
        print(f"\ncpu (the fused C++ backend) does not cover specs with reductions yet: {', '.join(uncovered)}")
    print(f"\n{len(rows) - failed} passed, {failed} failed ({len(entries)} specs, {steps} steps each, "
          f"{time.perf_counter() - start:.1f} s)")
    return 1 if failed else 0
