"""`optdsl bench --cpu-fused`: the fused C++ backend against torch on CPU, side by side in one run
(alternating rounds, medians), on the issue's tensor mixes, with effective GB/s and two memory
ceilings: `copy_` and a 4-read/3-write stream compiled through the same C++ backend.

Contenders per spec (default Adam, AdamW, SGD with momentum 0.9, Lion, RAdam, Adagrad): torch
foreach; torch's CPU `fused=True` where torch has one (Adam, AdamW, SGD, Adagrad); DeepSpeedCPUAdam
(Adam, AdamW) where `deepspeed` is importable, an optional bench-only extra; a `torch.compile`d
`opt.step` (inductor, tensor lr), its compile time on a line of its own, never in the step time;
optdsl foreach and optdsl fused (C++). Lion has no torch class: its baseline is lion_pytorch's
for-loop Lion where installed, else optdsl foreach. The ratio column is always against the first
contender of the spec, named in its header.

Effective GB/s = the spec's bytes per element (optdsl.plan.cost, fp32 streams) x elements / time.
Never a timed assertion: numbers for people to read (on a shared machine they are noisy)."""
from __future__ import annotations

import importlib.util
import inspect
import statistics
import sys
import time

import torch

from .registry import REGISTRY
from .runtime import cpu_fused

MIXES = {
    "1 x 2^24": lambda g: [1 << 24],
    "50 x 20K": lambda g: [20_000] * 50,
    "2000 x 1-4K": lambda g: [int(n) for n in torch.randint(1024, 4097, (2000,), generator=g)],
}
LARGE_MIX = {"1 x 2^26": lambda g: [1 << 26]}
# --smoke: the same harness at sizes that run in seconds (the test of this module)
SMOKE_MIXES = {
    "1 x 2^12": lambda g: [1 << 12],
    "5 x 200": lambda g: [200] * 5,
    "20 x 16-64": lambda g: [int(n) for n in torch.randint(16, 65, (20,), generator=g)],
}

SPECS = ("Adam", "AdamW", "SGD", "Lion", "RAdam", "Adagrad")
# On top of the registry's `base` hypers (lr only): SGD is benchmarked as SGD with momentum, the
# variant people train with and the one torch's fused SGD and the table are about.
EXTRA_HYPERS = {"SGD": {"momentum": 0.9}}
OPTIONAL_IN_USE = {"SGD": {"momentum_buffer"}}   # optional state streams those hypers switch on
DEEPSPEED = {"Adam": False, "AdamW": True}       # specs DeepSpeedCPUAdam runs: name -> its adamw_mode

# Reads param, grad, exp_avg, exp_avg_sq and writes param, exp_avg, exp_avg_sq: AdamW's traffic
# with almost no math, through the same pipeline and C++ backend as every spec.
STREAM_SPEC = """optimizer StreamCeiling "4-read/3-write stream: the memory ceiling of an AdamW-shaped step"

hyper lr = 1e-3 where lr > 0

state exp_avg = zeros
state exp_avg_sq = zeros

update {
  exp_avg = exp_avg + grad
  exp_avg_sq = exp_avg_sq + grad
  param = param - lr * (exp_avg + exp_avg_sq)
}
"""


def bytes_per_element(source: str, in_use: frozenset[str] = frozenset()) -> int:
    """fp32 bytes per element of the fused step, counting the optional streams in `in_use` only."""
    from .compiler import compile_spec
    from .plan import make_plan
    from .plan.cost import optional_streams, phase_bytes, phase_costs
    plan = make_plan(compile_spec(source).program, "fused")
    unused = optional_streams(plan.program) - in_use
    return sum(phase_bytes(c, unused).total for c in phase_costs(plan))


def _tensors(sizes: list[int], seed: int):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(n, generator=g).requires_grad_() for n in sizes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    return params



class Contender:
    """An optimizer on its own tensors, stepped `repeat` times per measurement."""
    skipped = ""

    def __init__(self, label: str, make, sizes: list[int], backend: str | None = None):
        self.label, self.backend = label, backend
        self.opt = make(_tensors(sizes, 1))
        self.step = self.opt.step
        for _ in range(2):   # state allocation and (first use only) the C++ build happen here
            self.run(1)

    def run(self, repeat: int) -> float:
        start = time.perf_counter()
        if self.backend is not None:
            with cpu_fused(self.backend):
                for _ in range(repeat):
                    self.step()
        else:
            for _ in range(repeat):
                self.step()
        return (time.perf_counter() - start) / repeat


class Compiled(Contender):
    """torch.compile(opt.step), compiled and warmed up here, outside the timed rounds. The first
    call's wall time (dynamo's trace plus inductor's C++ build) and the second's (a recompile where
    a state changed type, SGD's momentum buffer from None to a tensor) are kept for their own line."""

    def __init__(self, label: str, make, sizes: list[int]):
        self.label, self.backend = label, None
        # dynamo caches compiled code by code object and guards on the optimizer: reset, so each
        # mix compiles afresh (its compile time is this mix's) and the last mix's graphs are let go
        torch._dynamo.reset()
        self.opt = make(_tensors(sizes, 1))
        self.step = torch.compile(self.opt.step, fullgraph=False)
        self.first_s, self.second_s = self.run(1), self.run(1)
        self.run(1)


class CopyCeiling:
    """dst.copy_(src) over the mix's tensors, 8 bytes per element (fp32)."""
    label = "copy_ (ceiling)"
    skipped = ""

    def __init__(self, sizes: list[int]):
        self.src = [torch.randn(n) for n in sizes]
        self.dst = [torch.empty(n) for n in sizes]

    def run(self, repeat: int) -> float:
        start = time.perf_counter()
        for _ in range(repeat):
            for d, s in zip(self.dst, self.src):
                d.copy_(s)
        return (time.perf_counter() - start) / repeat


class Skipped:
    """A contender this run leaves out, with why: printed as a row of its own, never timed."""

    def __init__(self, label: str, reason: str):
        self.label, self.skipped = label, reason


def guarded(label: str, build):
    """build(), or, where a third-party optimizer refuses these tensors or hypers, a Skipped row
    that says why (one failure is not the end of a long run)."""
    try:
        return build()
    except Exception as e:   # noqa: BLE001 - whatever a third-party optimizer raises is reported
        first = str(e).splitlines()[0][:160] if str(e) else ""
        print(f"  {label}: failed: {type(e).__name__}: {first}", file=sys.stderr)
        return Skipped(label, f"failed: {type(e).__name__}: {first}")


def hypers(name: str) -> dict:
    return {**REGISTRY[name].base, **EXTRA_HYPERS.get(name, {})}


def _accepts(cls, keyword: str) -> bool:
    return keyword in inspect.signature(cls.__init__).parameters


def _lion_pytorch():
    if importlib.util.find_spec("lion_pytorch") is None:
        return None
    import lion_pytorch
    return lion_pytorch.Lion


def _deepspeed(name: str, combo: dict, sizes: list[int]):
    label = "DeepSpeedCPUAdam"
    if importlib.util.find_spec("deepspeed") is None:
        return Skipped(label, "skipped: deepspeed not installed (optional bench extra)")

    def build():
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        # torch's defaults for the rest (DeepSpeedCPUAdam's weight_decay default is 0, AdamW's 0.01)
        wd = combo.get("weight_decay", 0.01 if DEEPSPEED[name] else 0.0)
        return Contender(label, lambda ps: DeepSpeedCPUAdam(ps, lr=combo["lr"], betas=(0.9, 0.999), eps=1e-8,
                                                            weight_decay=wd, adamw_mode=DEEPSPEED[name]), sizes)
    return guarded(label, build)


def _compiled(cls, combo: dict, sizes: list[int], enabled: bool, limit: int):
    tensor_lr = _tensor_lr_ok(cls, combo)
    label = f"torch.compile (inductor, {'tensor' if tensor_lr else 'float'} lr)"
    if not enabled:
        return Skipped(label, "skipped (--no-compile)")
    if len(sizes) > limit:
        return Skipped(label, f"skipped ({len(sizes)} tensors > limit {limit}; --compile-max-tensors)")
    # torch's recipe for a compiled optimizer: lr a tensor, so a scheduler's change is no recompile
    lr = torch.tensor(combo["lr"]) if tensor_lr else combo["lr"]
    return guarded(label, lambda: Compiled(label, lambda ps: cls(ps, **{**combo, "lr": lr}), sizes))


def _tensor_lr_ok(cls, combo: dict) -> bool:
    """Whether the class takes lr=torch.tensor(...) (every torch.optim class of the default list does)."""
    try:
        cls([torch.zeros(1, requires_grad=True)], **{**combo, "lr": torch.tensor(combo["lr"])})
        return True
    except (TypeError, ValueError, RuntimeError):
        return False


def contenders(name: str, sizes: list[int], compile_: bool = True, compile_max_tensors: int = 100) -> list:
    """Every contender of `name` on `sizes`, the ratios' baseline first; then the two ceilings,
    the stream second to last and copy_ last (main relies on that order)."""
    from . import optim
    from .loader import load
    entry = REGISTRY[name]
    ours = getattr(optim, name)
    combo = hypers(name)
    out = []
    cls = entry.torch_class
    if cls is not None:
        out.append(Contender("torch foreach", lambda ps: cls(ps, **combo, foreach=True), sizes))
        if _accepts(cls, "fused"):
            out.append(guarded("torch fused=True", lambda: Contender(
                "torch fused=True", lambda ps: cls(ps, **combo, fused=True), sizes)))
        else:
            out.append(Skipped("torch fused=True", f"none: torch has no fused {name}"))
    elif name == "Lion":
        cls = _lion_pytorch()
        if cls is not None:
            out.append(Contender("lion_pytorch (loop)", lambda ps: cls(ps, **combo), sizes))
        else:
            out.append(Skipped("lion_pytorch (loop)", "skipped: lion_pytorch not installed"))
    if name in DEEPSPEED:
        out.append(_deepspeed(name, combo, sizes))
    if cls is not None:
        out.append(_compiled(cls, combo, sizes, compile_, compile_max_tensors))
    out.append(Contender("optdsl foreach", lambda ps: ours(ps, **combo, foreach=True), sizes))
    out.append(Contender("optdsl fused (C++)", lambda ps: ours(ps, **combo, fused=True), sizes, "cpp"))
    stream = load(STREAM_SPEC)
    out.append(Contender("4R/3W stream (C++, ceiling)", lambda ps: stream(ps, fused=True), sizes, "cpp"))
    out.append(CopyCeiling(sizes))
    return out


def baseline_label(name: str) -> str:
    """The label of the contender the ratios of `name` are against (the first timed one)."""
    if REGISTRY[name].torch_class is not None:
        return "torch foreach"
    if name == "Lion" and _lion_pytorch() is not None:
        return "lion_pytorch (loop)"
    return "optdsl foreach"


def main(names: list[str], repeat: int, rounds: int, large: bool, compile_: bool = True,
         compile_max_tensors: int | None = None, smoke: bool = False) -> int:
    from .build import spec_files
    torch.set_num_threads(max(1, torch.get_num_threads()))
    names = names or list(SPECS)
    limit = 100 if compile_max_tensors is None else compile_max_tensors
    sources = {p.read_text(encoding="utf-8").split()[1]: p.read_text(encoding="utf-8") for p in spec_files()}
    mixes = SMOKE_MIXES if smoke else {**MIXES, **(LARGE_MIX if large else {})}
    print(f"optdsl bench --cpu-fused{' --smoke' if smoke else ''}: fp32, CPU, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; median of {rounds} alternating rounds of {repeat} steps (a shared machine: noisy)")
    if compile_:
        print("torch.compile's compile time: the first call's wall time (dynamo's trace, inductor's C++ build); "
              "the run starts with an empty inductor cache, so only its first compile is fully cold (later "
              "ones may reuse kernels built earlier in the run)")
    # a fresh, empty inductor cache for the run: the compile times printed are cold compiles, not
    # whatever an earlier run left on disk
    from .bench_gpu import cold_caches
    with cold_caches():
        for name in names:
            _spec(name, sources[name], mixes, repeat, rounds, compile_, limit)
    from .cpp_runtime import COMPILE_SECONDS
    if COMPILE_SECONDS:
        print("\none-time C++ builds in this run: " + ", ".join(f"{k} {v:.1f} s" for k, v in COMPILE_SECONDS.items()))
    return 0


def _spec(name: str, source: str, mixes: dict, repeat: int, rounds: int, compile_: bool, limit: int) -> None:
    spec_bytes = bytes_per_element(source, frozenset(OPTIONAL_IN_USE.get(name, ())))
    base_label = baseline_label(name)
    shown = ", ".join(f"{k}={v}" for k, v in hypers(name).items())
    print(f"\n{name} ({shown}): {spec_bytes} B per element (fp32 streams); ratio = {base_label} time / this "
          f"time; GB/s = {spec_bytes} B x elements / time (copy_: 8 B, the stream: 28 B x elements / time)")
    print(f"{'mix':<13} {'contender':<36} {'ms/step':>10} {'ratio':>7} {'GB/s':>8} {'% of 4R/3W':>11}")
    for mix, sizes_of in mixes.items():
        sizes = sizes_of(torch.Generator().manual_seed(0))
        print(f"  building {mix} ...", file=sys.stderr)
        cs = contenders(name, sizes, compile_, limit)
        _measure(mix, cs, sum(sizes), spec_bytes, repeat, rounds)
        del cs
        torch._dynamo.reset()   # compiled graphs hold their optimizer's tensors: let them go


def _measure(mix: str, cs: list, elements: int, spec_bytes: int, repeat: int, rounds: int) -> None:
    timed = [c for c in cs if not c.skipped]
    times: list[list[float]] = [[] for _ in timed]
    for r in range(rounds):   # alternate the order, so drift in machine load hits every contender
        order = range(len(timed)) if r % 2 == 0 else reversed(range(len(timed)))
        for i in order:
            times[i].append(timed[i].run(repeat))
    median = {id(c): statistics.median(t) for c, t in zip(timed, times)}
    base = median[id(timed[0])]
    stream = cs[-2]
    stream_gbs = 28 * elements / median[id(stream)] / 1e9
    for c in cs:
        if c.skipped:
            print(f"{mix:<13} {c.label:<36} {c.skipped}")
            continue
        t = median[id(c)]
        per = 8 if isinstance(c, CopyCeiling) else (28 if c is stream else spec_bytes)
        gbs = per * elements / t / 1e9
        print(f"{mix:<13} {c.label:<36} {t * 1e3:>10.3f} {base / t:>7.2f} {gbs:>8.1f} {gbs / stream_gbs * 100:>10.0f}%")
    for c in cs:
        if isinstance(c, Compiled):
            print(f"{mix:<13}   {c.label}: compile (first call) {c.first_s:.1f} s, second call {c.second_s:.2f} s; "
                  "not in ms/step")
