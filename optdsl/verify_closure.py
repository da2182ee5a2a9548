"""`optdsl verify`'s rows for the closure optimizer, optdsl.lbfgs.LBFGS, against torch.optim.LBFGS.

A closure optimizer chooses where the loss is evaluated, so both optimizers minimize the same
deterministic problem rather than step on shared random gradients. Each problem is a function of
the concatenated parameters, and the parameters are split into tensors of several ranks, so a
flat vector crosses tensor boundaries: a convex quadratic with a coupling across all elements,
the chained Rosenbrock function, and logistic regression on scikit-learn's breast-cancer data.
"""
from __future__ import annotations

import itertools
from typing import Callable

import torch

from .verify_rows import Row, compare, covering_combos, flags_text

NAME = "LBFGS"
REFERENCE = "torch.optim.LBFGS"
PATHS = ("loop", "foreach")
SHAPES = ((4, 3), (5,), (1,), (2, 3, 2))
# history_size=3 fills and shifts the history; max_eval=3 below max_iter cuts an inner loop, and a
# line search, short by the evaluation budget
GRID = {"line_search_fn": (None, "strong_wolfe"), "history_size": (100, 3), "max_eval": (None, 3),
        "problem": ("quadratic", "rosenbrock", "logistic")}
STEPS = 4
# torch's lr=1, except a fixed step on Rosenbrock: without a line search, L-BFGS's unit step
# overshoots its curved valley. With one, lr=1's trial steps overshoot, so the search brackets
# and zooms from both sides.
FIXED_STEP_LR = {"quadratic": 1.0, "rosenbrock": 0.1, "logistic": 1.0}
STATE_TENSORS = ("d", "prev_flat_grad", "t", "H_diag", "prev_loss")
STATE_LISTS = ("old_dirs", "old_stps", "ro", "al")
STATE_COUNTS = ("n_iter", "func_evals")


def flat(params) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params])


def quadratic(n: int, dtype) -> Callable:
    """½ Σ aᵢxᵢ² + ½ (u·x)² − b·x: positive definite, every element coupled to every other."""
    g = torch.Generator().manual_seed(11)
    a = torch.rand(n, generator=g, dtype=dtype) * 4.5 + 0.5
    u = torch.randn(n, generator=g, dtype=dtype) / n ** 0.5
    b = torch.randn(n, generator=g, dtype=dtype)
    return lambda x: 0.5 * (a * x * x).sum() + 0.5 * (u @ x) ** 2 - b @ x


def rosenbrock(n: int, dtype) -> Callable:
    """Σ 100 (xᵢ₊₁ − xᵢ²)² + (1 − xᵢ)², its minimum at all ones."""
    return lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def logistic(n: int, dtype) -> Callable:
    """Logistic regression on load_breast_cancer (569 × 30, standardized), with an L2 term so the
    minimum is finite: the parameters' first 30 elements are the weights, the next one the bias,
    the rest only feel the L2 term."""
    from sklearn.datasets import load_breast_cancer
    X, y = load_breast_cancer(return_X_y=True)
    X = torch.as_tensor((X - X.mean(0)) / X.std(0), dtype=dtype)
    y = torch.as_tensor(y, dtype=dtype)

    def loss(x):
        z = X @ x[:30] + x[30]
        return torch.nn.functional.binary_cross_entropy_with_logits(z, y) + 1e-3 * (x * x).sum()
    return loss


PROBLEMS = {"quadratic": quadratic, "rosenbrock": rosenbrock, "logistic": logistic}
LOGISTIC_SHAPES = ((5, 6), (1,), (3,), (2, 2))   # 30 weights, a bias and 7 more


def start(problem: str, dtype, seed: int = 0) -> list[torch.Tensor]:
    shapes = LOGISTIC_SHAPES if problem == "logistic" else SHAPES
    g = torch.Generator().manual_seed(seed)
    if problem == "rosenbrock":   # Rosenbrock's classic start (−1.2, 1), jittered
        n = sum(torch.Size(s).numel() for s in shapes)
        x = torch.tensor([-1.2, 1.0], dtype=dtype).repeat(n // 2 + 1)[:n] + 0.1 * torch.randn(n, generator=g, dtype=dtype)
        return list(x.split([torch.Size(s).numel() for s in shapes]))
    return [torch.randn(s, generator=g, dtype=dtype) * 0.5 for s in shapes]


def run(problem: str, combo: dict, make: Callable, steps: int = STEPS, dtype=torch.float32):
    """`steps` calls of step(closure) from the problem's start: (params, optimizer, losses)."""
    base = start(problem, dtype)
    params = [p.clone().requires_grad_() for p in base]
    objective = PROBLEMS[problem](sum(p.numel() for p in params), dtype)
    lr = 1.0 if combo.get("line_search_fn") else FIXED_STEP_LR[problem]
    opt = make(params, lr=lr, **combo)

    def closure():
        opt.zero_grad()
        loss = objective(flat(params))
        loss.backward()
        return loss
    losses = [float(opt.step(closure).detach()) for _ in range(steps)]
    return params, opt, losses


def make_ours(path: str) -> Callable:
    from .lbfgs import LBFGS
    return lambda params, **kw: LBFGS(params, foreach=path == "foreach", **kw)


def state_pairs(ours, opt_a, theirs, opt_b) -> tuple[list, list]:
    """The params, then every tensor of the state (lists element by element, numbers as 0-d
    tensors), aligned; differing keys, list lengths or counts raise."""
    sa, sb = opt_a.state[ours[0]], opt_b.state[theirs[0]]
    if set(sa) != set(sb):
        raise AssertionError(f"state keys differ: ours {sorted(sa)}, torch's {sorted(sb)}")
    for key in STATE_COUNTS:
        if sa[key] != sb[key]:
            raise AssertionError(f"{key}: ours {sa[key]}, torch's {sb[key]}")
    xs, ys = [p.detach() for p in ours], [p.detach() for p in theirs]

    def add(x, y, key):
        if (x is None) != (y is None):
            raise AssertionError(f"{key}: ours {x!r}, torch's {y!r}")
        if x is not None:
            xs.append(torch.as_tensor(x, dtype=torch.float64).reshape(-1))
            ys.append(torch.as_tensor(y, dtype=torch.float64).reshape(-1))
    for key in STATE_TENSORS:
        add(sa.get(key), sb.get(key), key)
    for key in STATE_LISTS:
        a, b = sa.get(key) or [], sb.get(key) or []
        if len(a) != len(b):
            raise AssertionError(f"{key}: ours holds {len(a)}, torch's {len(b)}")
        for x, y in zip(a, b):
            add(x, y, key)
    return xs, ys


def combos() -> list[dict]:
    keys = list(GRID)
    return [dict(zip(keys, values)) for values in itertools.product(*GRID.values())]


def plan(full: bool) -> list[dict]:
    """The whole grid (`full`), or few combinations with every level of every factor, as
    `optdsl verify` chooses for a spec."""
    from types import SimpleNamespace
    return combos() if full else covering_combos(SimpleNamespace(grid=GRID, combos=combos))


def steps_of(full: bool) -> int:
    """Calls of step() per run: each runs up to max_iter inner iterations."""
    return STEPS * (4 if full else 1)


def rows(paths=PATHS, full: bool = False) -> list[Row]:
    """Both paths against torch and, for foreach, against the loop path: the grid's covering
    combinations over STEPS calls of step(), or (`full`) the whole grid over 4x as many."""
    steps = steps_of(full)
    out = []
    for combo in plan(full):
        problem = combo["problem"]
        kwargs = {k: v for k, v in combo.items() if k != "problem"}
        theirs, opt_b, _ = run(problem, kwargs, torch.optim.LBFGS, steps)
        runs = {path: run(problem, kwargs, make_ours(path), steps)[:2] for path in dict.fromkeys(("loop", *paths))}
        for path in paths:
            ours, opt_a = runs[path]
            againsts = [(REFERENCE, theirs, opt_b)] + ([("loop path", *runs["loop"])] if path != "loop" else [])
            for label, ps, opt in againsts:
                try:
                    max_abs, max_rel, same, total, ok = compare(*state_pairs(ours, opt_a, ps, opt))
                    out.append(Row(NAME, path, flags_text(combo), label, steps, max_abs, max_rel, same, total, ok))
                except Exception as exc:   # a FAIL row with its reason, not a lost table
                    out.append(Row(NAME, path, flags_text(combo), label, steps, float("nan"), float("nan"), 0, 0,
                                   False, f"{type(exc).__name__}: {exc}"))
    return out
