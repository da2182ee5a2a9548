"""Run one fuzz case: a spec text through every backend, each compared with the IR interpreter.

A case is the spec text plus how to run it (parameter groups with shapes, dtypes,
hypers and flags; steps; a data seed; the fused kernel's block size). It is
stored as the spec text with one `# fuzz-case: {json}` comment line on top, so a
case file is a valid spec (`optdsl check` reads it) and a ready-to-run reproducer:

    python -m optdsl.fuzz.replay tests/fuzz_corpus/<case>.opt

Each step of each path is compared with the interpreter started from the path's
own state before the step (so an error cannot compound over steps, and every
step checks the whole one-step map: the parameter, every state, the step count,
which states exist), using the interval bounds of optdsl/fuzz/tolerance.py.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..interp import Bounded, Interpreter, InterpError, SparseGrad
from .tolerance import precision

HEADER = "# fuzz-case: "
PATHS = ("loop", "foreach", "fused")


@dataclass
class Group:
    shapes: list[tuple[int, ...]]
    dtypes: list[str]
    hypers: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, bool] = field(default_factory=dict)


@dataclass
class Case:
    text: str
    groups: list[Group]
    steps: int = 6                 # loop and foreach steps
    fused_steps: int = 2           # fused steps (the Triton interpreter costs ~5 ms per program)
    seed: int = 0                  # parameter and gradient data
    block: int | None = None       # the fused kernel's block size (None: the runtime's own)
    skip: float = 0.1              # chance that a tensor has no grad on a step (its step lags)
    paths: tuple[str, ...] = PATHS
    # a program with `on train` / `on eval`: before each of these steps, eval() then train(), each
    # compared with the interpreter's switch
    switches: tuple[int, ...] = ()
    # the program says `sparse rows`: each gradient of a tensor of rank 1 or more is sparse (COO
    # over dim 0's rows, some repeated, some untouched)
    sparse: bool = False

    # ---- the reproducer file ----------------------------------------------------------------
    def config(self) -> dict:
        d = asdict(self)
        del d["text"]
        d["paths"] = list(self.paths)
        return d

    def dumps(self) -> str:
        body = self.text if not self.text.startswith(HEADER) else self.text.split("\n", 1)[1]
        return HEADER + json.dumps(self.config(), sort_keys=True) + "\n" + body

    @classmethod
    def loads(cls, text: str) -> "Case":
        first, _, rest = text.partition("\n")
        if not first.startswith(HEADER):
            raise ValueError(f"a fuzz case starts with a `{HEADER.strip()} {{...}}` line")
        cfg = json.loads(first[len(HEADER):])
        groups = [Group([tuple(s) for s in g["shapes"]], list(g["dtypes"]),
                        {k: tuple(v) if isinstance(v, list) else v for k, v in g["hypers"].items()},
                        dict(g["flags"])) for g in cfg.pop("groups")]
        cfg["paths"] = tuple(cfg.get("paths", PATHS))
        cfg["switches"] = tuple(cfg.get("switches", ()))
        return cls(text=text, groups=groups, **cfg)


@dataclass
class Mismatch:
    path: str
    step: int
    group: int
    tensor: int
    target: str
    index: tuple
    got: float
    expected: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return (f"{self.path} step {self.step} group {self.group} tensor {self.tensor} {self.target}{list(self.index)}: "
                f"got {self.got!r}, interpreter {self.expected!r}, allowed [{self.lo!r}, {self.hi!r}]")


@dataclass
class Outcome:
    steps: int = 0              # optimizer steps run (over all paths)
    compared: int = 0           # elements compared
    failures: list[Mismatch] = field(default_factory=list)
    n_failures: int = 0
    boundary: int = 0           # allowed mismatches: at an unsettled sign/compare/select
    unsettled: int = 0          # elements whose value hung on an unsettled decision
    unbounded: int = 0          # elements the bounds could not constrain (e.g. a division by ~0)
    error: str | None = None    # a path raised: its traceback
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.n_failures == 0

    def summary(self) -> str:
        head = (f"{self.steps} steps, {self.compared} values compared, {self.n_failures} mismatches, "
                f"{self.boundary} boundary mismatches allowed (of {self.unsettled} values at an unsettled "
                f"sign/compare), {self.unbounded} unbounded")
        if self.error:
            head += "\n" + self.error
        for m in self.failures[:8]:
            head += "\n  " + str(m)
        return head


# ---- data -----------------------------------------------------------------------------------


def _torch_dtype(name: str):
    import torch
    return getattr(torch, name)


def _round(a: np.ndarray, dtype: str) -> np.ndarray:
    """a rounded to dtype (through torch, to nearest even), back in float64."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)).to(_torch_dtype(dtype)).double().numpy()


def make_data(case: Case):
    """Initial parameters and every step's gradients (None: no grad), rounded to each tensor's dtype."""
    rng = np.random.default_rng(case.seed)
    init, grads = [], []
    for g in case.groups:
        init.append([_round(rng.standard_normal(s) * rng.choice([0.1, 1.0, 3.0]), d) for s, d in zip(g.shapes, g.dtypes)])
    n = max(case.steps, case.fused_steps)
    for _ in range(n):
        step = []
        for g in case.groups:
            row = []
            for s, d in zip(g.shapes, g.dtypes):
                if rng.random() < case.skip:
                    row.append(None)
                elif case.sparse and len(s) >= 1 and s[0] > 0:
                    row.append(_sparse_grad(rng, s, d))
                else:
                    row.append(_round(rng.standard_normal(s) * rng.choice([0.01, 1.0, 10.0]), d))
            step.append(row)
        grads.append(step)
    return init, grads


@dataclass(frozen=True)
class SparseRows:
    """A sparse gradient as the backends get it (`index`, `values`: uncoalesced, a row maybe twice)
    and as the interpreter gets it (`coalesced`: torch's coalesce of it, rows summed in the dtype)."""
    index: np.ndarray
    values: np.ndarray
    shape: tuple
    dtype: str

    def tensor(self):
        import torch
        return torch.sparse_coo_tensor(torch.from_numpy(self.index.copy()),
                                       torch.from_numpy(self.values.copy()).to(_torch_dtype(self.dtype)), self.shape,
                                       check_invariants=True)

    def coalesced(self) -> SparseGrad:
        return SparseGrad.from_torch(self.tensor().coalesce())


def _sparse_grad(rng, shape: tuple, dtype: str) -> SparseRows:
    rows = shape[0]
    nnz = int(rng.integers(0, rows + 2))
    values = _round(rng.standard_normal((nnz, *shape[1:])) * rng.choice([0.01, 1.0, 10.0]), dtype)
    return SparseRows(rng.integers(0, rows, (1, nnz)), values, tuple(shape), dtype)


@contextlib.contextmanager
def block_size(block: int | None):
    """Run the fused kernel with this block size (small blocks make small tensors span several programs)."""
    if block is None:
        yield
        return
    from .. import kernel_runtime
    saved = kernel_runtime.block_size
    kernel_runtime.block_size = lambda *args, **kwargs: block
    try:
        yield
    finally:
        kernel_runtime.block_size = saved


@contextlib.contextmanager
def cache_dir(path: str | None):
    if path is None:
        yield
        return
    saved = os.environ.get("OPTDSL_CACHE")
    os.environ["OPTDSL_CACHE"] = path
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("OPTDSL_CACHE", None)
        else:
            os.environ["OPTDSL_CACHE"] = saved


def fused_available() -> bool:
    import torch
    return os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()


# ---- comparison -------------------------------------------------------------------------------


def _as_array(t) -> np.ndarray | float | None:
    if t is None:
        return None
    import torch
    if isinstance(t, torch.Tensor):
        t = t.detach()
        if t.dim() == 0:
            return float(t.double().item())
        return t.double().cpu().numpy().copy()
    return float(t)


def compare(out: Outcome, got, b: Bounded, where: dict, keep: int = 8) -> None:
    x = np.asarray(b.x, dtype=np.float64)
    shape = x.shape
    got = np.broadcast_to(np.asarray(got, dtype=np.float64), shape)
    lo = np.broadcast_to(np.asarray(b.lo, dtype=np.float64), shape)
    hi = np.broadcast_to(np.asarray(b.hi, dtype=np.float64), shape)
    unc = np.broadcast_to(np.asarray(b.unc, dtype=bool), shape)
    with np.errstate(all="ignore"):
        ok = ((got >= lo) & (got <= hi)) | (np.isnan(got) & np.isnan(x)) | (got == x)
        unbounded = np.isinf(lo) & np.isinf(hi) & (lo < 0) & (hi > 0) & np.isfinite(x)
    bad = ~ok
    out.compared += x.size
    out.unsettled += int(unc.sum())
    out.unbounded += int(unbounded.sum())
    out.boundary += int((bad & unc).sum())
    fail = bad & ~unc
    n = int(fail.sum())
    if n:
        out.n_failures += n
        for idx in list(zip(*np.nonzero(np.atleast_1d(fail))))[:max(0, keep - len(out.failures))]:
            idx = idx if fail.ndim else ()
            out.failures.append(Mismatch(index=tuple(int(i) for i in idx), got=float(got[idx]), expected=float(x[idx]),
                                         lo=float(lo[idx]), hi=float(hi[idx]), **where))


def _missing(out: Outcome, where: dict, what: str) -> None:
    out.n_failures += 1
    if len(out.failures) < 8:
        out.failures.append(Mismatch(index=(), got=float("nan"), expected=float("nan"), lo=float("nan"), hi=float("nan"),
                                     **{**where, "target": f"{where['target']} ({what})"}))


# ---- running ------------------------------------------------------------------------------------


def run_path(cls, program, case: Case, path: str, data, out: Outcome) -> None:
    import torch
    init, grads = data
    tensors = [[torch.from_numpy(a.copy()).to(_torch_dtype(d)) for a, d in zip(ig, g.dtypes)]
               for ig, g in zip(init, case.groups)]
    groups = [{"params": ts, **g.hypers, **g.flags} for ts, g in zip(tensors, case.groups)]
    kwargs = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[path]
    opt = cls(groups, **kwargs)
    interps = [Interpreter(program, g.hypers, g.flags, bounds=True) for g in case.groups]
    precs = [[precision(path, d) for d in g.dtypes] for g in case.groups]
    keys = {s.name: getattr(s, "storage_key", s.name) for s in program.states}
    nsteps = case.fused_steps if path == "fused" else case.steps
    group_step = program.uses_step and getattr(program, "step_per_group", False)
    for k in range(nsteps):
        if k in case.switches:
            for mode in ("eval", "train"):
                before = _load(opt, tensors, interps, keys, program, group_step)
                getattr(opt, mode)()
                for gi, ts in enumerate(tensors):
                    new = interps[gi].switch(mode, before[gi], precs[gi])
                    _compare_group(out, opt, ts, new, interps[gi], program, keys, dict(path=path, step=k, group=gi),
                                   target=f" after {mode}()")
        for gi, ts in enumerate(tensors):
            for ti, t in enumerate(ts):
                gr = grads[k][gi][ti]
                t.grad = None if gr is None else gr.tensor() if isinstance(gr, SparseRows) else \
                    torch.from_numpy(gr.copy()).to(t.dtype)
        before = _load(opt, tensors, interps, keys, program, group_step)
        opt.step()
        out.steps += 1
        for gi, ts in enumerate(tensors):
            g_f64 = [g.coalesced() if isinstance(g, SparseRows) else g for g in grads[k][gi]]
            new = interps[gi].step(before[gi], g_f64, precs[gi])
            if group_step:
                got_step, want = _as_array(opt.param_groups[gi].get("step")), interps[gi].group_step
                if got_step is None or got_step != want:
                    _missing(out, dict(path=path, step=k, group=gi, tensor=-1, target="step"),
                             f"group step {got_step} != {want}")
            _compare_group(out, opt, ts, new, interps[gi], program, keys, dict(path=path, step=k, group=gi))


def _load(opt, tensors, interps, keys, program, group_step) -> list[list]:
    """Each interpreter given the backend's own steps and states; the params as they are now."""
    before = []
    for gi, ts in enumerate(tensors):
        if group_step:   # `keep step per group`: the count is the group's (none before the first step)
            interps[gi].group_step = float(_as_array(opt.param_groups[gi].get("step", 0.0)))
        row = []
        for ti, t in enumerate(ts):
            st = opt.state.get(t, {})
            states = {name: _backend_state(st, key, program.state(name).shape, t) for name, key in keys.items()}
            interps[gi].load(ti, _as_array(st.get("step")), states)
            row.append(_as_array(t))
        before.append(row)
    return before


def _backend_state(st: dict, key: str, shape: str, t):
    """A param's state as the interpreter holds it: a tensor as an array, a cover's accumulators
    stacked (optdsl.interp_axes); None where the param has none."""
    from ..interp_axes import cover_stack
    from ..state_shapes import kept_state
    got = kept_state(st, key, shape, t)
    if shape == "cover" and got is not None:
        return cover_stack([_as_array(a) for a in got], tuple(t.shape))
    return _as_array(got)


def _compare_group(out: Outcome, opt, ts, new, interp, program, keys, at: dict, target: str = "") -> None:
    """A group's params, steps and states against the interpreter's (`new`: its params)."""
    for ti, t in enumerate(ts):
        where = {**at, "tensor": ti}
        compare(out, _as_array(t), new[ti], {**where, "target": "param" + target})
        st = opt.state.get(t, {})
        mine = interp.state.get(ti, {})
        if program.uses_step:   # per group: no per-tensor step, in either
            got_step, want = _as_array(st.get("step")), mine.get("step")
            if (got_step is None) != (want is None) or (want is not None and got_step != want):
                _missing(out, {**where, "target": "step" + target}, f"step {got_step} != {want}")
        for s in program.states:
            got_state, want_state = _backend_state(st, keys[s.name], s.shape, t), mine.get(s.name)
            if (got_state is None) != (want_state is None):
                _missing(out, {**where, "target": s.name + target},
                         "exists in the backend only" if got_state is not None else "missing in the backend")
            elif want_state is not None:
                compare(out, got_state, want_state, {**where, "target": s.name + target})


def run_case(case: Case, cls=None, program=None, cache: str | None = None) -> Outcome:
    """Every path of `case.paths` (fused only where it can run), compared with the interpreter."""
    from .. import load
    from ..compiler import compile_ir
    out = Outcome()
    with cache_dir(cache):
        try:
            program = program or compile_ir(case.text, "<fuzz>")
            cls = cls or load(case.text)
        except Exception:
            out.error = "compile: " + traceback.format_exc(limit=-6)
            return out
        data = make_data(case)
        for path in case.paths:
            if path == "fused" and not fused_available():
                continue
            start = time.perf_counter()
            try:
                with block_size(case.block if path == "fused" else None), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)   # NumPy's, for log2(0) in the interpreter
                    run_path(cls, program, case, path, data, out)
            except InterpError:
                out.error = f"interpreter ({path} run): " + traceback.format_exc(limit=-4)
            except Exception:
                out.error = f"{path}: " + traceback.format_exc(limit=-3)
            out.seconds[path] = time.perf_counter() - start
            if out.error:
                break
    return out


def check_case(case: Case, cache: str | None = None, coverage=None) -> Outcome:
    """run_case, plus the parser check of a generated case: its fully parenthesised twin must lower
    to the same IR (a precedence or associativity slip in the parser shows here). A program the
    checker rejects is a failure too: the generator writes only well-typed programs."""
    from ..compiler import compile_ir
    from ..diagnostics import CompileError
    from ..ir import format_program
    try:
        program = compile_ir(case.text, "<fuzz>")
    except CompileError as err:
        out = Outcome()
        out.error = "the checker rejects a generated program:\n" + err.render()
        return out
    twin = getattr(case, "twin", None)
    if twin is not None:
        try:
            twin_program = compile_ir(twin, "<twin>")
        except CompileError as err:
            out = Outcome()
            out.error = "the parenthesised twin does not compile:\n" + err.render()
            return out
        if format_program(twin_program) != format_program(program):
            out = Outcome()
            out.error = ("the program and its fully parenthesised twin lower to different IR:\n"
                         + format_program(program) + "\n--- twin:\n" + format_program(twin_program))
            return out
    if coverage is not None:
        coverage.add(case.text, program)
    return run_case(case, program=program, cache=cache)
