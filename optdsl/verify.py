"""`optdsl verify`: every path of every shipped spec against its reference and
against the loop path, over the spec's flag grid, printed as one table."""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass

import torch

from .registry import REGISTRY, Entry, sparse_gradient
from .verify_rows import TOLERANCE, Row, compare, covering_combos, flags_text  # noqa: F401  (tests import them from here)
from .runtime import cpu_fused

SHAPES = ((17, 9), (64,), (1,), (3, 5, 2))
FULL_STEPS = 200


# an optimizer with modes (Entry.modes) is switched to eval() and back to train() before every
# MODE_SWITCH_EVERY-th step
MODE_SWITCH_EVERY = 7


def _params(seed: int, dtype=torch.float32, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


def run_pair(entry: Entry, combo: dict, path: str, steps: int, seed: int = 0, against: str = "reference",
             dtype=torch.float32, shapes=SHAPES):
    """Run the generated optimizer (path) and the reference side by side on the same gradients."""
    ours, opt_a, [(theirs, opt_b)] = run_against(entry, combo, path, (against,), steps, seed, dtype, shapes)
    return ours, theirs, opt_a, opt_b


def run_against(entry: Entry, combo: dict, path: str, againsts: tuple[str, ...], steps: int, seed: int = 0,
                dtype=torch.float32, shapes=SHAPES):
    """One run of the generated optimizer (path) beside each comparator in `againsts` ("reference"
    or "loop"), all fed the same gradients: the costly run (the fused path, in the interpreter)
    happens once however many comparators it is checked against. Returns (params, optimizer,
    [(params, optimizer) per comparator])."""
    base = _params(seed, dtype, entry.shapes or shapes)
    ours = [p.clone().requires_grad_() for p in base]
    opt_a = entry.make(ours, combo, path)
    backend = cpu_fused("cpp") if path == "cpu" else contextlib.nullcontext()
    others = []
    for against in againsts:
        theirs = [p.clone().requires_grad_() for p in base]
        if against == "reference":
            opt_b = entry.make_reference(theirs, combo, foreach=entry.reference_path(path))
        else:
            opt_b = entry.make(theirs, combo, "loop")
        others.append((theirs, opt_b))
    g = torch.Generator().manual_seed(seed + 1)
    everyone = [opt_a] + [opt for _, opt in others]
    for step in range(steps):
        if entry.modes and step % MODE_SWITCH_EVERY == MODE_SWITCH_EVERY - 1:   # an evaluation mid-run
            for opt in everyone:
                opt.eval()
            for opt in everyone:
                opt.train()
        if entry.objective is not None:   # gradients with a graph, from one loss for all
            for ps in [ours] + [theirs for theirs, _ in others]:
                for p in ps:
                    p.grad = None
                entry.objective(ps, seed + 1 + step).backward(create_graph=True)
        for i, a in enumerate(ours if entry.objective is None else ()):
            grad = sparse_gradient(a.shape, g, dtype) if entry.sparse_grads else \
                torch.randn(a.shape, generator=g, dtype=dtype)
            a.grad = grad.clone()
            for theirs, _ in others:
                theirs[i].grad = grad.clone()
        with backend:
            opt_a.step()
        for _, opt_b in others:
            opt_b.step()
    if entry.modes:   # compared as they are evaluated
        for opt in everyone:
            opt.eval()
    return ours, opt_a, others


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


@dataclass(frozen=True)
class Task:
    """One run of one path of one spec under one flag combination, checked against each of
    `againsts` (the reference, and the loop path for the foreach and fused paths)."""
    entry: Entry
    combo: dict
    path: str
    steps: int
    shapes: tuple = SHAPES

    @property
    def againsts(self) -> tuple[str, ...]:
        return ("reference",) if self.path == "loop" else ("reference", "loop")


def _row(task: Task, against: str, xs, ys) -> Row:
    max_abs, max_rel, same, total, ok = compare(xs, ys)
    label = task.entry.reference_label(task.path) if against == "reference" else "loop path"
    return Row(task.entry.name, task.path, flags_text(task.combo), label, task.steps, max_abs, max_rel,
               same, total, ok)


def _crash_row(task: Task, against: str, exc: Exception) -> Row:
    # a crash is a FAIL row, with its reason, not a lost table
    return Row(task.entry.name, task.path, flags_text(task.combo), against, task.steps, float("nan"),
               float("nan"), 0, 0, False, f"{type(exc).__name__}: {exc}")


def run_task(task: Task) -> list[Row]:
    """One row per comparator. A crash in the shared run is retried per comparator, so the row
    that fails says which side crashed."""
    e = task.entry
    try:
        ours, opt_a, others = run_against(e, task.combo, task.path, task.againsts, task.steps, shapes=task.shapes)
    except Exception:
        others = None
    rows = []
    for i, against in enumerate(task.againsts):
        check_keys = e.torch_class is not None or against == "loop"
        try:
            if others is None:
                ours, theirs, opt_a, opt_b = run_pair(e, task.combo, task.path, task.steps, against=against,
                                                      shapes=task.shapes)
            else:
                theirs, opt_b = others[i]
            rows.append(_row(task, against, *with_state(ours, theirs, opt_a, opt_b, check_keys)))
        except Exception as exc:
            rows.append(_crash_row(task, against, exc))
    return rows


def verify_entry(entry: Entry, steps: int, paths=("loop", "foreach", "fused")) -> list[Row]:
    """The full grid of one spec (`optdsl verify --full`)."""
    return [row for task in full_plan([entry], paths, steps) for row in run_task(task)]


# The quick plan (`optdsl verify`, `make verify`): every spec, every path, and every level of every
# hyper and flag in the spec's grid at least once, over fewer steps and smaller tensors. The
# fused path in the Triton interpreter costs a few ms per program, and a spec with a channel
# reduction runs one program per output channel: the quick shapes keep every rank of SHAPES
# (2-D, 1-D, a single element, 3-D) with few channels.
QUICK_SHAPES = ((4, 3), (3,), (1,), (2, 3, 2))
QUICK_STEPS = 20


def quick_plan(entries: list[Entry], paths, steps: int | None = None) -> list[Task]:
    return [Task(e, combo, path, steps or e.quick_steps or QUICK_STEPS, QUICK_SHAPES)
            for e in entries for combo in covering_combos(e) for path in paths if e.supports(path)]


def full_plan(entries: list[Entry], paths, steps: int) -> list[Task]:
    return [Task(e, combo, path, steps) for e in entries for combo in e.combos() for path in paths if e.supports(path)]


def fused_paths() -> tuple[str, ...]:
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        return ("loop", "foreach", "fused", "cpu")
    return ("loop", "foreach", "cpu")


def print_table(rows: list[Row], out=None) -> None:
    out = out or sys.stdout   # read at the call: a redirected or captured stdout is the one printed to
    header = f"{'spec':<8} {'path':<8} {'against':<22} {'flags':<70} {'steps':>5} {'max abs err':>12} {'max rel err':>12} {'identical':>12}  result"
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        ident = f"{r.identical}/{r.total}"
        print(f"{r.spec:<8} {r.path:<8} {r.against:<22} {r.flags:<70} {r.steps:>5} {r.max_abs:>12.3e} {r.max_rel:>12.3e} "
              f"{ident:>12}  {'PASS' if r.ok else 'FAIL'}{'  ' + r.error if r.error else ''}", file=out)


def run_plan(tasks: list[Task], progress: bool = True) -> list[Row]:
    """Run every task, with a live progress bar on stderr (spec, path, done/total, ETA)."""
    if not progress:
        return [row for task in tasks for row in run_task(task)]
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    rows: list[Row] = []
    console = Console(stderr=True)
    start = time.perf_counter()
    with Progress(*columns, console=console, redirect_stdout=False, redirect_stderr=False) as bar:
        job = bar.add_task("verify", total=len(tasks))
        for k, task in enumerate(tasks):
            bar.update(job, description=f"{task.entry.name} {task.path}")
            rows += run_task(task)
            bar.advance(job)
            last_of_spec = k + 1 == len(tasks) or tasks[k + 1].entry is not task.entry
            if not console.is_terminal and last_of_spec:   # a log (CI, a pipe): one line per spec instead
                print(f"verify: {task.entry.name} done, {k + 1}/{len(tasks)} runs, "
                      f"{time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        bar.update(job, description="verify")
    return rows


def main(names: list[str], steps: int | None = None, full: bool = False, progress: bool = True) -> int:
    if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
        os.environ["TRITON_INTERPRET"] = "1"   # CPU tensors run the fused kernels in the interpreter
    from . import verify_closure
    unknown = [n for n in names if n not in REGISTRY and n != verify_closure.NAME]
    if unknown:
        print(f"unknown spec(s): {', '.join(unknown)}; known: {', '.join([*REGISTRY, verify_closure.NAME])}",
              file=sys.stderr)
        return 2
    entries = [REGISTRY[n] for n in names if n in REGISTRY] if names else list(REGISTRY.values())
    with_closure = not names or verify_closure.NAME in names   # the closure optimizer, not a spec
    paths = fused_paths()
    tasks = full_plan(entries, paths, steps or FULL_STEPS) if full else quick_plan(entries, paths, steps)
    start = time.perf_counter()
    rows = run_plan(tasks, progress) if tasks else []
    if with_closure:
        rows += verify_closure.rows(full=full)
    print_table(rows)
    failed = sum(not r.ok for r in rows)
    plan = "the full grid" if full else "every path and every flag level at least once (--full: the whole grid)"
    counts = sorted({t.steps for t in tasks} | ({verify_closure.steps_of(full)} if with_closure else set()))
    steps_text = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    what = " and ".join([f"{len(entries)} specs"] * bool(entries) + [verify_closure.NAME] * with_closure)
    print(f"\n{len(rows) - failed} passed, {failed} failed ({what}, {plan}, {steps_text} steps, "
          f"{time.perf_counter() - start:.1f} s)")
    return 1 if failed else 0
