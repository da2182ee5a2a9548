"""`optdsl fuzz --mode lbfgs`: random problems and hypers through optdsl.lbfgs.LBFGS (loop and
foreach) and torch.optim.LBFGS side by side, bit for bit.

A case draws parameters of rank 0 to 4 (sometimes one complex), an objective over their
concatenation (quadratic, Rosenbrock chain, cosine ripples, quartic), every hyper of LBFGS, a
NaN injected into the loss at one closure call, and a checkpoint taken from torch's optimizer
and loaded into ours mid-run. Every closure call must see the same point, and the params and
the state must end equal. A failure prints the seed, the case number and the command that
replays it:

    python -m optdsl.fuzz.lbfgs --seed S --case I
"""
from __future__ import annotations

import argparse
import io
import random
from dataclasses import dataclass, field

import torch

PATHS = ("loop", "foreach")


@dataclass
class Case:
    seed: int
    index: int
    dtype: torch.dtype
    shapes: list[tuple]
    complex_at: int | None                   # which parameter is complex, if one is
    terms: list[str]
    hypers: dict
    steps: int
    nan_at_call: int | None                  # the closure call whose loss gets a NaN
    resume_after: int | None                 # ours continues from torch's state_dict after this step
    data_seed: int = 0

    def describe(self) -> str:
        return (f"case {self.index} (seed {self.seed}): {self.dtype} shapes {self.shapes} complex_at "
                f"{self.complex_at} terms {self.terms} hypers {self.hypers} steps {self.steps} nan_at_call "
                f"{self.nan_at_call} resume_after {self.resume_after}")


def draw(seed: int, index: int) -> Case:
    rng = random.Random(f"lbfgs:{seed}:{index}")
    shapes = [tuple(rng.randint(1, 3) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(1, 4))]
    hypers = {
        "lr": rng.choice((1.0, 1.0, 0.5, 0.1, 2.0)),
        "max_iter": rng.randint(1, 25),
        "max_eval": rng.choice((None, None, rng.randint(1, 30))),
        "history_size": rng.choice((1, 2, 3, 5, 100)),
        "line_search_fn": rng.choice((None, "strong_wolfe")),
        "tolerance_grad": rng.choice((1e-7, 1e-7, 0.0, 1e-3)),
        "tolerance_change": rng.choice((1e-9, 1e-9, 0.0, 1e-4)),
    }
    if rng.random() < 0.1:
        hypers["lr"] = ("tensor", hypers["lr"])
    steps = rng.randint(1, 4)
    return Case(seed, index, rng.choice((torch.float32, torch.float32, torch.float64)), shapes,
                rng.randrange(len(shapes)) if rng.random() < 0.15 else None,
                rng.sample(("quadratic", "rosenbrock", "ripples", "quartic"), rng.randint(1, 2)), hypers, steps,
                rng.randint(1, 30) if rng.random() < 0.1 else None,
                rng.randint(1, steps - 1) if steps > 1 and rng.random() < 0.3 else None,
                rng.randrange(2 ** 31))


def _params(case: Case) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(case.data_seed)
    complex_dtype = torch.complex64 if case.dtype == torch.float32 else torch.complex128
    return [torch.randn(s, generator=g, dtype=complex_dtype if i == case.complex_at else case.dtype)
            for i, s in enumerate(case.shapes)]


def _objective(case: Case, n: int):
    g = torch.Generator().manual_seed(case.data_seed + 1)
    a = torch.rand(n, generator=g, dtype=case.dtype) * 4 + 0.1
    u = torch.randn(n, generator=g, dtype=case.dtype) / n ** 0.5
    w = torch.rand(n, generator=g, dtype=case.dtype) * 3 + 0.5

    def term(name, x):
        if name == "quadratic":
            return 0.5 * (a * x * x).sum() + 0.5 * (u @ x) ** 2 - x.sum()
        if name == "rosenbrock":
            return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()
        if name == "ripples":
            return (0.5 * x * x + torch.cos(w * x)).sum()
        return (x ** 4).sum() - (x * x).sum()
    return lambda x: sum(term(name, x) for name in case.terms)


def _flat_real(params) -> torch.Tensor:
    # real and imaginary parts side by side, as LBFGS lays them out; not view_as_real, whose
    # backward refuses some views of a complex parameter
    return torch.cat([(torch.stack((p.real, p.imag), -1) if p.is_complex() else p).reshape(-1) for p in params])


def _make(cls, params, case: Case, **extra):
    kw = dict(case.hypers)
    if isinstance(kw["lr"], tuple):
        kw["lr"] = torch.tensor(kw["lr"][1], dtype=torch.float64)
    return cls(params, **kw, **extra)


def run(case: Case, path: str | None):
    """One run (path None: torch's LBFGS): (points and losses of every closure call, params, optimizer)."""
    from ..lbfgs import LBFGS
    params = [p.clone().requires_grad_() for p in _params(case)]
    objective = _objective(case, _flat_real(params).numel())
    opt = _make(torch.optim.LBFGS, params, case) if path is None else \
        _make(LBFGS, params, case, foreach=path == "foreach")
    calls = []

    def closure():
        opt.zero_grad()
        loss = objective(_flat_real(params))
        if len(calls) + 1 == case.nan_at_call:
            loss = loss + float("nan") * _flat_real(params)[0]
        loss.backward()
        calls.append((_flat_real(params).detach().clone(), loss.detach().clone()))
        return loss
    for step in range(case.steps):
        opt.step(closure)
        if path is not None and step + 1 == case.resume_after:   # continue from torch's checkpoint
            reference = run_prefix(case, step + 1)
            buffer = io.BytesIO()
            torch.save(reference.state_dict(), buffer)
            buffer.seek(0)
            opt.load_state_dict(torch.load(buffer, weights_only=True))
    return calls, params, opt


def run_prefix(case: Case, steps: int):
    """torch's optimizer after `steps` steps of the case."""
    short = Case(**{**case.__dict__, "steps": steps, "resume_after": None})
    return run(short, None)[2]


@dataclass
class Outcome:
    cases: int = 0
    calls: int = 0
    compared: int = 0
    failures: list = field(default_factory=list)   # (case, path, what differed)

    def summary(self) -> str:
        return (f"lbfgs: {self.cases} cases, {self.calls} closure calls, {self.compared} values compared, "
                f"{len(self.failures)} mismatches")


def check(case: Case, outcome: Outcome) -> None:
    from ..verify_closure import state_pairs
    theirs, t_params, t_opt = run(case, None)
    for path in PATHS:
        try:
            ours, o_params, o_opt = run(case, path)
            if len(ours) != len(theirs):
                raise AssertionError(f"{len(ours)} closure calls, torch made {len(theirs)}")
            for k, ((x, fx), (y, fy)) in enumerate(zip(ours, theirs)):
                if not (torch.equal(x.nan_to_num(7.5), y.nan_to_num(7.5)) and x.isnan().equal(y.isnan())
                        and (fx.isnan().item() == fy.isnan().item()) and (fx.isnan() or fx.equal(fy))):
                    raise AssertionError(f"closure call {k + 1} at another point or loss")
                outcome.compared += x.numel() + 1
            if o_params[0] in o_opt.state or t_params[0] in t_opt.state:
                xs, ys = state_pairs(o_params, o_opt, t_params, t_opt)
                for x, y in zip(xs, ys):
                    if not (x.shape == y.shape and torch.equal(x.nan_to_num(7.5), y.nan_to_num(7.5))
                            and x.isnan().equal(y.isnan())):
                        raise AssertionError("the params or the state differ at the end")
                    outcome.compared += x.numel()
            outcome.calls += len(ours)
        except Exception as exc:
            outcome.failures.append((case, path, f"{type(exc).__name__}: {exc}"))
    outcome.cases += 1


def fuzz(seed: int, count: int, deadline: float | None = None, on_case=None) -> Outcome:
    import time
    outcome = Outcome()
    for index in range(count):
        if deadline is not None and time.perf_counter() > deadline:
            break
        check(draw(seed, index), outcome)
        if on_case:
            on_case(outcome)
    for case, path, what in outcome.failures:
        print(f"\nFAILURE lbfgs {path} path, {case.describe()}: {what}\n"
              f"reproduce: python -m optdsl.fuzz.lbfgs --seed {case.seed} --case {case.index}")
    return outcome


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="replay one case of `optdsl fuzz --mode lbfgs`")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--case", type=int, required=True)
    args = parser.parse_args(argv)
    case = draw(args.seed, args.case)
    print(case.describe())
    outcome = Outcome()
    check(case, outcome)
    for _, path, what in outcome.failures:
        print(f"{path}: {what}")
    print(outcome.summary())
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
