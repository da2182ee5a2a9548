"""`optdsl fuzz --seed S --count N [--time T] [--mode programs|text|both|lbfgs]`.

programs: N random well-typed programs (optdsl.fuzz.programs), each through the loop,
foreach and fused paths (the fused kernel in the Triton interpreter on CPU), compared
with the IR interpreter step by step. text: N mutations of the shipped specs through the
checker (optdsl.fuzz.text). lbfgs: N random problems through optdsl.lbfgs.LBFGS and
torch.optim.LBFGS (optdsl.fuzz.lbfgs). Prints programs tried, optimizer steps, values compared,
mismatches (and boundary mismatches allowed, see optdsl/fuzz/tolerance.py), wall time.

A failure prints its seed and a minimal ready-to-run reproducer (hypothesis shrinks it)
and saves it under tests/fuzz_corpus/, which the test suite replays:

    python -m optdsl.fuzz.replay tests/fuzz_corpus/<file>.opt
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

MAX_FAILURES = 5     # distinct failures to shrink and save before giving up on a campaign


def corpus_dir() -> Path:
    env = os.environ.get("OPTDSL_FUZZ_CORPUS")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "tests"
    return (checkout if checkout.is_dir() else Path.cwd()) / "fuzz_corpus"


def save(name_hint: str, text: str, suffix: str = ".opt") -> Path:
    folder = corpus_dir()
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    path = folder / f"{name_hint}-{digest}{suffix}"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return path


class _TimeUp(BaseException):
    """Raised inside a hypothesis example when the time budget is spent (not a failure)."""


@dataclass
class ProgramStats:
    programs: int = 0
    shrink_runs: int = 0
    steps: int = 0
    compared: int = 0
    mismatches: int = 0
    boundary: int = 0
    unsettled: int = 0
    unbounded: int = 0
    errors: int = 0
    failures: list = field(default_factory=list)     # (seed, case, outcome, saved path)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"programs: {self.programs} tried ({self.shrink_runs} more while shrinking), {self.steps} optimizer "
                f"steps, {self.compared} values compared; mismatches: {self.mismatches} (+ {self.errors} programs "
                f"that raised or were rejected); boundary mismatches allowed: {self.boundary} (of {self.unsettled} "
                f"values at an unsettled sign/compare); unbounded values: {self.unbounded}; {self.seconds:.1f} s")


def fuzz_programs(seed: int, count: int, deadline: float | None, out=sys.stdout, fused: bool = True,
                  save_failures: bool = True, on_program=None) -> ProgramStats:
    """`on_program(stats)`, if given, is called after each program (the progress bar); without it
    a line every 100 programs says how far the campaign is."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from .execute import check_case
    from .programs import MODED, SHAPED, SPARSE, WRAPPED, cases

    stats = ProgramStats()
    start = time.perf_counter()
    cache = tempfile.mkdtemp(prefix="optdsl-fuzz-")
    signatures: set[str] = set()
    campaign = 0
    while stats.programs < count and len(stats.failures) < MAX_FAILURES:
        if deadline is not None and time.perf_counter() > deadline:
            break
        state = {"failing": None, "shrinking": False}
        run_seed = seed + campaign
        campaign += 1

        def body(case):
            if not state["shrinking"]:
                if stats.programs >= count or (deadline is not None and time.perf_counter() > deadline):
                    raise _TimeUp()
            outcome = check_case(case, cache=cache)
            if state["shrinking"]:
                stats.shrink_runs += 1
            else:
                stats.programs += 1
                stats.steps += outcome.steps
                stats.compared += outcome.compared
                stats.mismatches += outcome.n_failures
                stats.boundary += outcome.boundary
                stats.unsettled += outcome.unsettled
                stats.unbounded += outcome.unbounded
                stats.errors += outcome.error is not None
                if on_program is not None:
                    on_program(stats)
                elif stats.programs % 100 == 0:
                    print(f"  ... {stats.programs} programs, {stats.steps} steps, {stats.mismatches} mismatches, "
                          f"{time.perf_counter() - start:.0f} s", file=out, flush=True)
            if not outcome.ok:
                state["shrinking"] = True
                state["failing"] = (case, outcome)
                raise AssertionError(outcome.summary())

        test = settings(max_examples=max(1, count - stats.programs), database=None, deadline=None, derandomize=False,
                        suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink],
                        report_multiple_bugs=False)(given(cases(fused=fused, wrapped=WRAPPED, moded=MODED, sparse=SPARSE,
                                                                 shaped=SHAPED))(body))
        test = hseed(run_seed)(test)
        try:
            test()
        except _TimeUp:
            break
        except AssertionError:
            case, outcome = state["failing"]
            signature = (outcome.error or "").strip().split("\n")[-1][:120] or \
                ",".join(sorted({f"{m.path}:{m.target}" for m in outcome.failures}))
            path = save("program", case.dumps()) if save_failures else None
            stats.failures.append((run_seed, case, outcome, path))
            print(f"\nFAILURE (hypothesis seed {run_seed}, data seed {case.seed}); minimal reproducer"
                  + (f" saved as {path}" if path else "") + ":\n" + case.dumps() + "\n" + outcome.summary() + "\n",
                  file=out, flush=True)
            if signature in signatures:
                print("(the same failure as before: stopping)", file=out)
                break
            signatures.add(signature)
    stats.seconds = time.perf_counter() - start
    return stats


def fuzz_text(seed: int, count: int, deadline: float | None, out=sys.stdout, save_failures: bool = True,
              on_input=None):
    from .text import run
    report = run(seed, count, deadline, on_input=on_input)
    for base, desc, text, problem in report.failures[:MAX_FAILURES]:
        path = save("text", text, ".txt") if save_failures else None
        print(f"\nTEXT FAILURE (seed {seed}; {base}: {desc})" + (f", input saved as {path}" if path else "")
              + f":\n{problem}\n", file=out)
    return report


@contextmanager
def progress_bar(enabled: bool = True):
    """A live bar on stderr (stdout keeps the report): `track(name, total)` adds a row and returns
    `update(done, failures)` (failures: a short text, the running mismatch count), or None when
    the bar is disabled."""
    if not enabled:
        yield lambda name, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn
    columns = (TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[failures]}"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), redirect_stdout=False, redirect_stderr=False) as bar:
        def track(name: str, total: int):
            job = bar.add_task(name, total=total, failures="")

            def update(done: int, failures: str) -> None:
                bar.update(job, completed=done, failures=failures)
            return update
        yield track


def main(args) -> int:
    os.environ.setdefault("TRITON_INTERPRET", "1")   # before any kernel module is imported
    from .tolerance import describe
    start = time.perf_counter()
    deadline = start + args.time if args.time else None
    print(f"optdsl fuzz: seed {args.seed}, count {args.count}, mode {args.mode}"
          + (f", time limit {args.time:g} s" if args.time else ""), flush=True)
    if args.mode != "lbfgs":   # the tolerances are the programs' (lbfgs compares bit for bit)
        print(describe(), flush=True)
    status = 0
    summaries = []   # printed once the bar is closed, so that stdout and the live bar do not interleave
    with progress_bar(getattr(args, "progress", True)) as track:
        if args.mode in ("text", "both"):
            text_deadline = None if deadline is None else start + (args.time * (0.2 if args.mode == "both" else 1.0))
            shown = track("text", args.count)
            report = fuzz_text(args.seed, args.count, text_deadline, on_input=shown and (
                lambda r: shown(r.inputs, f"{len(r.failures)} failures")))
            summaries.append("text: " + report.summary())
            status |= bool(report.failures)
        if args.mode in ("programs", "both"):
            shown = track("programs", args.count)
            stats = fuzz_programs(args.seed, args.count, deadline, on_program=shown and (
                lambda s: shown(s.programs, f"{s.mismatches} mismatches, {s.errors} raised")))
            summaries.append(stats.summary())
            status |= bool(stats.failures)
        if args.mode == "lbfgs":
            from .lbfgs import fuzz as fuzz_lbfgs
            shown = track("lbfgs", args.count)
            outcome = fuzz_lbfgs(args.seed, args.count, deadline, on_case=shown and (
                lambda o: shown(o.cases, f"{len(o.failures)} mismatches")))
            summaries.append(outcome.summary())
            status |= bool(outcome.failures)
    for line in summaries:
        print(line)
    print(f"wall time {time.perf_counter() - start:.1f} s; {'FAILED' if status else 'no failures'}")
    return 1 if status else 0
