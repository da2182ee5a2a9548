"""Convergence on three small real problems, with fixed seeds: the loss curves of real runs of any
optimizer class (a generated one, a user's compiled spec, or a torch.optim class).

The problems (each built afresh, from its own seed, for every run: same seed, same losses, bit for bit):

* digits: a 64-32-10 tanh MLP on scikit-learn's bundled `load_digits` (1797 8x8 images, no
  download), inputs standardized, full-batch cross-entropy; 200 steps.
* rosenbrock: the 2-D Rosenbrock function (1 - x)^2 + 100 (y - x^2)^2 from the classic start
  (-1.2, 1); minimum 0 at (1, 1); 500 steps (two parameters: cheap).
* lstsq: least squares 0.5 ||A x - b||^2 with A (64 x 16) = U diag(s) V^T, U and V random
  orthonormal, singular values s spaced geometrically from 1 to 1/100 (condition number of A:
  100; of A^T A: 10^4), and b = A x* (minimum 0); 300 steps.

Learning rates: every optimizer runs at its own default lr (torch's or the spec's) times the
problem's LR_SCALE: digits x10, rosenbrock x1, lstsq x10. One factor per problem keeps the
comparison about the rules, not a per-optimizer tuning; the factors keep plain SGD (default
1e-3) stable and moving on all three (Rosenbrock's curvature near the start is ~1.3e3, so lr 1e-3
is close to SGD's limit there; A^T A's largest eigenvalue is 1). A caller may pass lr= to
override it. Some optimizers diverge at that lr on a problem (their loss turns inf or nan: the
curve stops, its legend says "diverged"); that too is what the defaults do. Training uses the
optimizers' default paths (the fused kernel is not run here). An optimizer that takes sparse
gradients only (SparseAdam) gets the same gradients as sparse rows."""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

LR_SCALE = {"digits": 10.0, "rosenbrock": 1.0, "lstsq": 10.0}
STEPS = {"digits": 200, "rosenbrock": 500, "lstsq": 300}
TARGETS = {"digits": 0.5, "rosenbrock": 1e-2, "lstsq": 1e-3}   # default `--target` of `optdsl compare`
TITLES = {"digits": "MLP on load_digits (cross-entropy)", "rosenbrock": "Rosenbrock 2-D",
          "lstsq": "least squares, cond(A) = 100"}
PROBLEMS = tuple(LR_SCALE)
SEED = 0
CONDITION = 100.0


@dataclass
class Curve:
    """One optimizer on one problem: losses[k] is the loss after k steps (losses[0]: at the start)."""
    label: str
    problem: str
    lr: float
    losses: list[float]

    @property
    def final(self) -> float:
        return self.losses[-1]

    def steps_to(self, target: float) -> int | None:
        """The first step count after which the loss is at most `target` (None: never reached)."""
        for k, loss in enumerate(self.losses):
            if loss <= target:
                return k
        return None


# ---- the problems: (parameters, loss closure) --------------------------------------------------

@functools.lru_cache(maxsize=1)
def _digits_data() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    return x, torch.tensor(data.target, dtype=torch.int64)   # read only: shared by every run


def _digits(seed: int):
    x, y = _digits_data()
    g = torch.Generator().manual_seed(seed)
    w1 = (torch.randn(64, 32, generator=g) / math.sqrt(64)).requires_grad_()
    b1 = torch.zeros(32, requires_grad=True)
    w2 = (torch.randn(32, 10, generator=g) / math.sqrt(32)).requires_grad_()
    b2 = torch.zeros(10, requires_grad=True)

    def loss():
        return torch.nn.functional.cross_entropy(torch.tanh(x @ w1 + b1) @ w2 + b2, y)
    return [w1, b1, w2, b2], loss


def _rosenbrock(seed: int):
    del seed   # the classic start point: nothing random
    xy = torch.tensor([-1.2, 1.0], requires_grad=True)

    def loss():
        return (1 - xy[0]) ** 2 + 100 * (xy[1] - xy[0] ** 2) ** 2
    return [xy], loss


def _lstsq(seed: int):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(64, 16, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -math.log10(CONDITION), 16, dtype=torch.float64)
    a = ((u * s) @ v.T).float()
    x_star = torch.randn(16, generator=g)
    b = a @ x_star
    x = torch.zeros(16, requires_grad=True)

    def loss():
        return 0.5 * ((a @ x - b) ** 2).sum()
    return [x], loss


_BUILD = {"digits": _digits, "rosenbrock": _rosenbrock, "lstsq": _lstsq}


def default_lr(cls: type) -> float:
    """The lr an optimizer class uses when none is given (its constructor's default)."""
    probe = next(p for p in (torch.zeros(1, requires_grad=True), torch.zeros(1, 1, requires_grad=True))
                 if takes(cls, p))   # a matrix optimizer (Muon) refuses the vector
    return float(cls([probe]).defaults["lr"])


def takes(cls: type, p: torch.Tensor) -> bool:
    """Whether `cls` takes `p` (torch.optim.Muon and a spec with `require ndim == 2` refuse a vector)."""
    try:
        cls([torch.zeros_like(p, requires_grad=True)])
    except ValueError:
        return False
    return True


def taken(cls: type, problem: str) -> list[bool]:
    """For each param of `problem`, whether `cls` takes it."""
    return [takes(cls, p) for p in _BUILD[problem](SEED)[0]]


def train(cls: type, problem: str, steps: int | None = None, lr: float | None = None, label: str | None = None,
          seed: int = SEED) -> Curve:
    """Train a fresh copy of `problem` with `cls` (default path) and record the loss at every step."""
    if problem not in _BUILD:
        raise ValueError(f"unknown problem {problem!r}; known: {', '.join(PROBLEMS)}")
    steps = STEPS[problem] if steps is None else steps
    lr = default_lr(cls) * LR_SCALE[problem] if lr is None else lr
    threads = torch.get_num_threads()
    # one thread: these tensors are too small to gain from more, a loaded machine's thread pool
    # makes each op wait (10x slower on 2 busy cores), and the sums keep one order
    torch.set_num_threads(1)
    try:
        params, loss_fn = _BUILD[problem](seed)
        mine = [p for p in params if takes(cls, p)]
        opt = cls(mine, lr=lr)
        # the params it refuses (Muon's biases) go to AdamW at its own default lr, as torch's Muon documents
        rest = [p for p in params if all(p is not q for q in mine)]
        others = torch.optim.AdamW(rest, lr=1e-3 * LR_SCALE[problem]) if rest else None
        losses = []
        for _ in range(steps):
            opt.zero_grad()
            if others is not None:
                others.zero_grad()
            loss = loss_fn()
            losses.append(float(loss.detach()))
            # a spec with an `input` (Adahessian's Hessian estimate) reads the gradients' graph
            loss.backward(create_graph=bool(getattr(opt, "_inputs", None)))
            if _sparse_only(opt):   # SparseAdam: the same gradients, as sparse rows (every nonzero row)
                for p in params:
                    if p.grad is not None:
                        p.grad = p.grad.to_sparse(1)
            opt.step()
            if others is not None:
                others.step()
        with torch.no_grad():
            losses.append(float(loss_fn()))
    finally:
        torch.set_num_threads(threads)
    return Curve(label or cls.__name__, problem, lr, losses)


def _sparse_only(opt) -> bool:
    """An optimizer that steps on sparse gradients only (`sparse rows only`, torch.optim.SparseAdam)."""
    return bool(getattr(opt, "_dense_refused", False)) or isinstance(opt, torch.optim.SparseAdam)


# ---- resolving a name to an optimizer class ------------------------------------------------------

def resolve(name: str) -> tuple[str, type]:
    """(label, class) for a .opt file (compiled on the fly), a shipped spec (class or file name, any
    case: 'Adam', 'adam', 'funnelled_sgdm') or a torch.optim class ('AdamW', 'torch.optim.SGD')."""
    from .loader import load, shipped
    if name.endswith(".opt") or os.path.sep in name:
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"no such spec file: {name}")
        cls = load(path)
        return f"{cls.__name__} ({path.name})", cls
    torch_name = name[len("torch.optim."):] if name.startswith("torch.optim.") else None
    if torch_name is None:
        spec = _shipped_class(name, shipped())
        if spec is not None:
            from . import optim
            return f"{spec} (optdsl)", getattr(optim, spec)
        torch_name = name
    cls = getattr(torch.optim, torch_name, None)
    if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer:
        return f"{torch_name} (torch)", cls
    raise ValueError(f"unknown optimizer {name!r}: not a .opt file, a shipped spec "
                     f"({', '.join(sorted(shipped()))}) or a torch.optim class")


def _shipped_class(name: str, modules: dict[str, str]) -> str | None:
    key = name.lower().replace("_", "")   # module names drop the underscores of the file names
    return next((c for c, m in modules.items() if key in (c.lower(), m.lower())), None)


# ---- the plot --------------------------------------------------------------------------------------

def plot(curves_by_problem: dict[str, list[Curve]], png_path: Path, title: str) -> None:
    """One subplot per problem, loss (log scale) against step; a reproducible PNG (Agg, no pyplot
    state, matplotlib's default style, no metadata: the same curves give the same bytes)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    problems = list(curves_by_problem)
    with matplotlib.rc_context(rc=matplotlib.rcParamsDefault):
        fig = Figure(figsize=(4.2 * len(problems), 3.6), dpi=100)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(problems), squeeze=False)[0]
        for ax, problem in zip(axes, problems):
            for curve in curves_by_problem[problem]:
                ys = [max(v, 1e-12) if math.isfinite(v) else float("nan") for v in curve.losses]
                diverged = "" if all(math.isfinite(v) for v in curve.losses) else " (diverged)"
                ax.plot(range(len(ys)), ys, label=f"{curve.label}, lr {curve.lr:g}{diverged}", linewidth=1.4)
            ax.set_yscale("log")
            # a diverging run would stretch the axis to 1e38: keep it to the starting losses' decade
            starts = [c.losses[0] for c in curves_by_problem[problem] if math.isfinite(c.losses[0])]
            if starts:
                ax.set_ylim(top=10 * max(starts))
            ax.set_title(TITLES[problem], fontsize=10)
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        png_path = Path(png_path)
        png_path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png_path, format="png", metadata={"Software": None})


BASELINES = ("AdamW", "SGD")
_BASELINE_CURVES: dict[tuple[str, str], Curve] = {}


def _baseline(name: str, problem: str) -> Curve:
    """torch's AdamW or SGD on a problem: the runs are deterministic, so one per process serves
    every spec's plot."""
    if (name, problem) not in _BASELINE_CURVES:
        _BASELINE_CURVES[name, problem] = train(getattr(torch.optim, name), problem, label=f"{name} (torch)")
    return _BASELINE_CURVES[name, problem]


def write_convergence_plot(spec_name: str, png_path: Path) -> dict:
    """Train the shipped spec `spec_name` against torch.optim.AdamW and torch.optim.SGD on the three
    problems (each at its default lr times the problem's LR_SCALE, see the module docstring) and
    write the 3-subplot PNG. Returns {problem: {label: final loss}} (labels 'Adam (optdsl)',
    'AdamW (torch)', 'SGD (torch)'; nan or inf where a run diverged). A few seconds per spec (the
    baselines train once per process)."""
    label, cls = resolve(spec_name)
    # a problem with no param the class takes (a vector for a matrix optimizer) shows the baselines only
    curves = {}
    for p in PROBLEMS:
        which = taken(cls, p)
        mine = [train(cls, p, label=label if all(which) else f"{label} + AdamW for the rest")] if any(which) else []
        curves[p] = mine + [_baseline(name, p) for name in BASELINES]
    plot(curves, png_path, f"{label} against AdamW and SGD (seed {SEED})")
    return {p: {c.label: c.final for c in cs} for p, cs in curves.items()}


# ---- `optdsl compare` ----------------------------------------------------------------------------------

def compare_table(curves: list[Curve], target: float) -> list[str]:
    width = max([len("optimizer")] + [len(c.label) for c in curves])
    head = f"{'optimizer':<{width}}  {'lr':>9}  {'final loss':>12}  {'steps to ' + format(target, 'g'):>16}"
    lines = [head, "-" * len(head)]
    for c in curves:
        reached = c.steps_to(target)
        lines.append(f"{c.label:<{width}}  {c.lr:>9.3g}  {c.final:>12.4e}  "
                     f"{('-' if reached is None else str(reached)):>16}")
    return lines


def compare_main(args) -> int:
    import sys
    try:
        contenders = [resolve(name) for name in args.optimizers]
    except Exception as exc:   # a bad spec's diagnostic, an unknown name
        print(str(exc), file=sys.stderr)
        return 2
    problem = args.problem
    target = TARGETS[problem] if args.target is None else args.target
    curves = [train(cls, problem, steps=args.steps, lr=args.lr, label=label) for label, cls in contenders]
    for line in compare_table(curves, target):
        print(line)
    out = Path(args.out) if args.out else Path(f"compare-{problem}.png")
    plot({problem: curves}, out, f"{problem}: {', '.join(c.label for c in curves)}")
    print(f"\nwrote {out}", file=sys.stderr)
    return 0


def add_compare_parser(sub) -> None:
    c = sub.add_parser("compare", help="train optimizers on a small real problem; table of final loss and "
                                       "steps to a target, and a PNG of the loss curves")
    c.add_argument("optimizers", nargs="+", metavar="FILE|NAME",
                   help="a .opt file, a shipped spec (Adam, lion, ...) or a torch.optim class (AdamW, SGD, ...)")
    c.add_argument("--problem", choices=PROBLEMS, default="digits")
    c.add_argument("--steps", type=int, default=None, help="default: " +
                   ", ".join(f"{p} {n}" for p, n in STEPS.items()))
    c.add_argument("--lr", type=float, default=None,
                   help="one lr for every optimizer (default: each one's own default lr times the problem's "
                        "factor: " + ", ".join(f"{p} x{s:g}" for p, s in LR_SCALE.items()) + ")")
    c.add_argument("--target", type=float, default=None, help="target loss (default: " +
                   ", ".join(f"{p} {t:g}" for p, t in TARGETS.items()) + ")")
    c.add_argument("--out", default=None, help="PNG path (default: compare-PROBLEM.png)")
    c.set_defaults(func=compare_main)
