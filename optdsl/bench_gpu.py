"""`optdsl bench --gpu`: the generated fused kernels against torch on a CUDA device, and
`--gpu --smoke`, the same harness at tiny sizes on CPU under the Triton interpreter (CI runs it).

For Adam, AdamW, SGD with momentum and Lion, on each tensor mix, in fp32 and in bf16 params with
fp32 state, every contender is built on the same seeded tensors and measured side by side in one
run, in alternating rounds:

* torch foreach, torch `fused=True` (Adam, AdamW, SGD), a `torch.compile`d step with a tensor lr
  (torch's recipe), and the generated class with `fused=True` (Triton). torch has no Lion: its
  baseline is lion_pytorch's for-loop, with the generated foreach path beside it.
* Ceilings, measured once: `copy_` of 2 GiB and a 4-read/3-write Triton stream kernel (AdamW's
  traffic with almost no math). "% of ceiling" is against the stream kernel.

Metrics per row: median device time of one step (CUDA events around the step, a 256 MiB buffer
written before each step so L2 holds nothing of the mix), median host time (the step call on
the CPU, no sync), kernel launches and copies per step (torch.profiler), effective GB/s (the
spec's bytes per element from optdsl.plan.cost, with each contender's dtypes, x elements / time),
the first and second step's wall time (the Triton JIT, torch.compile's compile and recompile),
and the max abs error of the params after STEPS steps against the reference (torch's for-loop;
lion_pytorch for Lion), run on the same tensors.

The smoke run differs in sizes, the device (CPU), the timer (wall clock around a synchronised
step, labelled as such), the launch count (no device kernels on CPU: the first-level aten ops,
plus the Triton kernel runtime's counter) and torch.compile: backend aot_eager (dynamo and
AOTAutograd trace the same graphs; inductor's C++ build would add 1-10 s a graph), and only on
the one-tensor mix, since dynamo's trace alone costs 1-3 s a graph on 2 shared cores, ~90 s for
all 32 cells (the other rows say "skipped"). Every function the GPU run calls runs in it.

A contender torch refuses (construction or a step raising) is recorded as a failed row, and the
run goes on and exits 1: a GPU run's device time is scarce. The smoke test fails on such a row.

Never a timed assertion: numbers for people to read; the test checks only that every row exists
with finite numbers and the errors are within bounds."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .bench_gpu_mixes import SCALES, Scale, mix_names, mix_shapes
from .build import atomic_write
from .kernel_runtime import LAUNCHES, block_size, interpreting

BF16 = "bf16 params, fp32 state"
DTYPES = {"fp32": torch.float32, BF16: torch.bfloat16}
SPECS = ("Adam", "AdamW", "SGD", "Lion")
# hypers of every contender (torch's defaults otherwise); SGD is the momentum variant
HYPERS = {"Adam": {"lr": 0.01}, "AdamW": {"lr": 0.01}, "SGD": {"lr": 0.01, "momentum": 0.9}, "Lion": {"lr": 1e-3}}
OPTIONAL_IN_USE = {"SGD": {"momentum_buffer"}}   # optional streams these hypers switch on


# ---- devices and timers ---------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class CudaTimer:
    """Device time of the enqueued work between start and stop, from CUDA events."""
    label = "CUDA events"

    def __init__(self, device):
        self.device, self.pairs = device, []

    def start(self):
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def stop(self, begin) -> None:
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        self.pairs.append((begin, e))

    def seconds(self) -> list[float]:
        torch.cuda.synchronize(self.device)
        out = [b.elapsed_time(e) / 1e3 for b, e in self.pairs]
        self.pairs = []
        return out


class WallTimer:
    """The smoke run's stand-in: wall clock around the step, synchronised (CPU work is synchronous)."""
    label = "wall clock (smoke: CPU, no CUDA events)"

    def __init__(self, device):
        self.device, self.times = device, []

    def start(self):
        sync(self.device)
        return time.perf_counter()

    def stop(self, begin) -> None:
        sync(self.device)
        self.times.append(time.perf_counter() - begin)

    def seconds(self) -> list[float]:
        out, self.times = self.times, []
        return out


@dataclass
class Env:
    device: torch.device
    scale: Scale
    timer_class: type
    compile_backend: str
    flush: torch.Tensor = field(init=False)

    def __post_init__(self):
        # written before every timed step so that no mix starts in L2 (H100 and H200: 50 MiB of L2)
        self.flush = torch.empty(self.scale.flush_bytes // 4, dtype=torch.float32, device=self.device)


def time_steps(env: Env, step: Callable[[], object], iters: int) -> tuple[list[float], list[float]]:
    """(device seconds, host seconds) of `iters` steps, L2 flushed before each."""
    timer = env.timer_class(env.device)
    host = []
    for _ in range(iters):
        env.flush.fill_(1.0)
        begin = timer.start()
        t = time.perf_counter()
        step()
        host.append(time.perf_counter() - t)
        timer.stop(begin)
    return timer.seconds(), host


def count_launches(env: Env, step: Callable[[], object]) -> tuple[int, int, int]:
    """(kernels, copies, optdsl kernel launches) of one step. On CUDA the profiler's device
    kernels and memcpy/memset; on CPU (smoke) no device kernels exist, so the count is the aten ops
    called from outside any aten op, and copies 0. The optdsl counter (kernel_runtime.LAUNCHES)
    counts the generated kernel's launches on either device (the interpreter's too)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if env.device.type == "cuda" else [])
    before = LAUNCHES[0]
    with profile(activities=activities) as prof:
        step()
        sync(env.device)
    ours = LAUNCHES[0] - before
    events = prof.events()
    if env.device.type == "cuda":
        device_events = [e for e in events if e.device_type == DeviceType.CUDA]
        copies = sum(1 for e in device_events if e.name.startswith(("Memcpy", "Memset")))
        if device_events:
            return len(device_events) - copies, copies, ours
        # no device activity recorded (CUPTI unavailable): the host-side launch calls instead
        launches = sum(1 for e in events if e.name.startswith(("cudaLaunchKernel", "cuLaunchKernel")))
        return launches, sum(1 for e in events if e.name.startswith(("cudaMemcpy", "cudaMemset"))), ours
    first_level = [e for e in events if e.name.startswith("aten::")
                   and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]
    return len(first_level), 0, ours


# ---- ceilings -------------------------------------------------------------------------------

_KERNEL = []


def stream_kernel():
    """The 4-read/3-write stream: p, g, m, v in; m, v, p out; 3 adds and a multiply per element.
    Built at first use, so that the smoke run's TRITON_INTERPRET=1 is in force when it is jitted."""
    if not _KERNEL:
        import triton
        import triton.language as tl

        @triton.jit
        def _stream(p_ptr, g_ptr, m_ptr, v_ptr, n, BLOCK: tl.constexpr):
            offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
            mask = offs < n
            p = tl.load(p_ptr + offs, mask=mask)
            g = tl.load(g_ptr + offs, mask=mask)
            m = tl.load(m_ptr + offs, mask=mask) + g
            v = tl.load(v_ptr + offs, mask=mask) + g
            tl.store(m_ptr + offs, m, mask=mask)
            tl.store(v_ptr + offs, v, mask=mask)
            tl.store(p_ptr + offs, p - 1e-3 * (m + v), mask=mask)
        _KERNEL.append(_stream)
    return _KERNEL[0]


def median_seconds(env: Env, step, iters: int) -> float:
    step()   # JIT / first touch outside the timing
    return statistics.median(time_steps(env, step, iters)[0])


def ceilings(env: Env) -> dict:
    """GB/s of `copy_` over copy_bytes and of the stream kernel over 4 buffers of stream_elements."""
    n = env.scale.copy_bytes // 4
    src = torch.ones(n, device=env.device)
    dst = torch.empty_like(src)
    t_copy = median_seconds(env, lambda: dst.copy_(src), env.scale.iters)
    del src, dst
    n = env.scale.stream_elements
    p, g, m, v = (torch.ones(n, device=env.device) for _ in range(4))
    block = block_size(env.device)   # the fused kernels' block: the ceiling has their launch geometry
    kernel = stream_kernel()
    grid = (-(-n // block),)
    t_stream = median_seconds(env, lambda: kernel[grid](p, g, m, v, n, BLOCK=block), env.scale.iters)
    return {"copy_bytes": env.scale.copy_bytes, "copy_ms": t_copy * 1e3, "copy_gbs": 2 * env.scale.copy_bytes / t_copy / 1e9,
            "stream_elements": n, "stream_ms": t_stream * 1e3, "stream_gbs": 28 * n / t_stream / 1e9}


# ---- contenders -----------------------------------------------------------------------------

@dataclass
class Contender:
    label: str
    params: list[torch.Tensor]
    step: Callable[[], object]
    state_itemsize: int            # bytes per element of its elementwise states
    skipped: str = ""              # why this run leaves it out (the smoke run's torch.compile on large mixes)
    samples: list[float] = field(default_factory=list)
    host: list[float] = field(default_factory=list)


@functools.lru_cache(maxsize=None)
def spec_bytes(name: str, param_itemsize: int, state_itemsize: int) -> int:
    """Bytes per element one step of `name` moves at least (optdsl.plan.cost, as
    bench_cpu.bytes_per_element), param and grad at param_itemsize, states at state_itemsize."""
    from .compiler import compile_spec
    from .plan import make_plan
    from .plan.cost import optional_streams, phase_bytes, phase_costs
    from .build import spec_files
    source = next(p.read_text(encoding="utf-8") for p in spec_files() if p.read_text(encoding="utf-8").split()[1] == name)
    plan = make_plan(compile_spec(source).program, "fused")
    unused = optional_streams(plan.program) - OPTIONAL_IN_USE.get(name, set())
    sizes = {s: (param_itemsize if s in ("param", "grad") else state_itemsize) for s in plan.streams}
    return sum(phase_bytes(c, frozenset(unused), sizes).total for c in phase_costs(plan))


def _lion_class():
    import lion_pytorch
    return lion_pytorch.Lion


def torch_class(name: str):
    return _lion_class() if name == "Lion" else getattr(torch.optim, name)


def contenders(env: Env, name: str, dtype: torch.dtype, master: list[torch.Tensor], grads: list[torch.Tensor]) -> list[Contender]:
    """Every contender of `name`, each on its own copy of `master` (grads shared: no step writes them).
    The first is the baseline of the ratios."""
    from . import optim
    hypers = HYPERS[name]
    cls = torch_class(name)
    low = dtype == torch.bfloat16
    item = torch.finfo(dtype).bits // 8

    def fresh():
        ps = [m.detach().clone().requires_grad_() for m in master]
        for p, g in zip(ps, grads):
            p.grad = g
        return ps

    def eager(label, make, state_itemsize):
        return guarded(label, state_itemsize, lambda: (lambda ps: (ps, make(ps).step))(fresh()))

    state = {"state_dtype": torch.float32} if low else {}
    ours_item = 4 if low else item
    out = []
    if name == "Lion":
        out.append(eager("lion_pytorch (loop)", lambda ps: cls(ps, **hypers), item))
        out.append(eager("optdsl foreach", lambda ps: optim.Lion(ps, **hypers, foreach=True, **state), ours_item))
    else:
        out.append(eager("torch foreach", lambda ps: cls(ps, **hypers, foreach=True), item))
        out.append(eager("torch fused=True", lambda ps: cls(ps, **hypers, fused=True), item))
    label = f"torch.compile ({env.compile_backend}, tensor lr)"
    limit = env.scale.compile_max_tensors
    if limit is not None and len(master) > limit:
        out.append(Contender(label, [], lambda: None, item, skipped=f"{env.scale.name}: torch.compile only on mixes of "
                             f"<= {limit} tensors (dynamo's trace time)"))
    else:
        def compiled():
            # torch's recipe for a compiled step: a tensor lr (no recompile when a scheduler changes
            # it). Dynamo caches by code object and guards on the optimizer: reset, so this compiles afresh.
            torch._dynamo.reset()
            ps = fresh()
            opt = cls(ps, **{**hypers, "lr": torch.tensor(hypers["lr"])})
            return ps, torch.compile(opt.step, backend=env.compile_backend)
        out.append(guarded(label, item, compiled))
    out.append(eager("optdsl fused (Triton)", lambda ps: getattr(optim, name)(ps, **hypers, fused=True, **state), ours_item))
    return out


def guarded(label: str, state_itemsize: int, build) -> Contender:
    """A contender from build() -> (params, step), or, where torch refuses it, one marked failed.
    A GPU run is long and its device time scarce: one contender's failure is recorded in its rows
    (and on stderr), not the end of the run. The smoke test fails on any such row."""
    try:
        params, step = build()
    except Exception as e:   # noqa: BLE001 - any failure of a third-party optimizer is reported, whatever it is
        return _failed(label, state_itemsize, e)
    return Contender(label, params, step, state_itemsize)


def _failed(label: str, state_itemsize: int, e: Exception) -> Contender:
    reason = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    print(f"  {label}: {reason}", file=sys.stderr)
    return Contender(label, [], lambda: None, state_itemsize, skipped=reason)


def reference(env: Env, name: str, dtype: torch.dtype, master, grads, steps: int) -> list[torch.Tensor]:
    """The params after `steps` steps of torch's for-loop (lion_pytorch for Lion) in fp32. For bf16
    params with fp32 state, the params are rounded to bf16 after every step: exactly the
    semantics the fused kernel implements (fp32 math and state, one rounding of the param)."""
    ps = [m.detach().float().clone().requires_grad_() for m in master]   # never master itself
    for p, g in zip(ps, grads):
        p.grad = g.float()
    cls = torch_class(name)
    opt = cls(ps, **HYPERS[name]) if name == "Lion" else cls(ps, **HYPERS[name], foreach=False)
    with torch.no_grad():
        for _ in range(steps):
            opt.step()
            if dtype != torch.float32:
                for p in ps:
                    p.copy_(p.to(dtype))
    return [p.detach() for p in ps]


def max_error(params: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    return max(float((p.detach().float() - r).abs().max()) for p, r in zip(params, ref) if p.numel())


def _wall(env: Env, step) -> float:
    sync(env.device)
    t = time.perf_counter()
    step()
    sync(env.device)
    return time.perf_counter() - t


def measure_cell(env: Env, name: str, mix: str, dtype_label: str, ceiling_gbs: float) -> list[dict]:
    """Every contender of `name` on `mix` in one dtype: the rows of the results."""
    dtype = DTYPES[dtype_label]
    shapes = mix_shapes(mix, env.scale)
    gen = torch.Generator(device=env.device).manual_seed(0)
    master = [torch.randn(s, generator=gen, device=env.device).to(dtype) for s in shapes]
    grads = [torch.randn(s, generator=gen, device=env.device).to(dtype) for s in shapes]
    elements = sum(m.numel() for m in master)
    steps = env.scale.error_steps
    ref = reference(env, name, dtype, master, grads, steps)
    cs = contenders(env, name, dtype, master, grads)
    del master
    warm = {}
    for i, c in enumerate(cs):
        if c.skipped:
            continue
        try:
            first = _wall(env, c.step)      # state allocation, Triton JIT, torch.compile's compile
            second = _wall(env, c.step)     # a recompile where the state changed type (SGD's empty buffer)
            for _ in range(steps - 2):
                c.step()
            sync(env.device)
            warm[id(c)] = (first, second, max_error(c.params, ref))
        except Exception as e:   # noqa: BLE001 - see guarded()
            cs[i] = _failed(c.label, c.state_itemsize, e)
    del ref
    measured = [c for c in cs if not c.skipped]
    rounds, per = env.scale.rounds, max(1, env.scale.iters // env.scale.rounds)
    for r in range(rounds):   # alternate the order, so drift (clocks, other load) hits every contender
        order = measured if r % 2 == 0 else measured[::-1]
        for c in order:
            dev, host = time_steps(env, c.step, per)
            c.samples += dev
            c.host += host
    item = torch.finfo(dtype).bits // 8
    baseline = measured[0] if measured else None   # cs[0], unless torch refused it
    rows = []
    for c in cs:
        row = {"spec": name, "mix": mix, "dtype": dtype_label, "contender": c.label,
               "tensors": len(shapes), "elements": elements}
        if c.skipped:
            rows.append({**row, "skipped": c.skipped})
            continue
        first, second, err = warm[id(c)]
        kernels, copies, ours = count_launches(env, c.step)
        t = statistics.median(c.samples)
        per_element = spec_bytes(name, item, c.state_itemsize)
        gbs = per_element * elements / t / 1e9
        rows.append({
            **row, "iterations": len(c.samples),
            "device_ms": t * 1e3, "host_ms": statistics.median(c.host) * 1e3,
            "ratio": statistics.median(baseline.samples) / t, "baseline": baseline.label,
            "launches": kernels, "copies": copies, "optdsl_launches": ours,
            "bytes_per_element": per_element, "gbs": gbs, "pct_of_ceiling": 100 * gbs / ceiling_gbs,
            "first_step_s": first, "second_step_s": second, "max_abs_error": err, "error_steps": steps,
        })
    del cs, measured
    torch._dynamo.reset()   # compiled graphs may hold the optimizer's tensors: let them go
    if env.device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


# ---- the run and its files ------------------------------------------------------------------

def _git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not reachable)"
    if out.returncode != 0:
        return "unknown (not a git checkout)"
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def _clocks() -> dict:
    if shutil.which("nvidia-smi") is None:
        return {"note": "nvidia-smi not reachable: clocks omitted"}
    q = "name,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,power.limit,driver_version"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return {"note": f"nvidia-smi failed ({e}): clocks omitted"}
    if out.returncode != 0 or not out.stdout.strip():
        return {"note": f"nvidia-smi failed ({out.stderr.strip()[:200]}): clocks omitted"}
    return dict(zip(q.split(","), (x.strip() for x in out.stdout.splitlines()[0].split(","))))


def metadata(env: Env, smoke: bool) -> dict:
    import triton
    clocks = _clocks()   # in the smoke run too, so that it runs somewhere without a GPU
    if env.device.type == "cuda":
        name = torch.cuda.get_device_name(env.device)
    else:
        name = f"CPU {platform.processor() or platform.machine()}"
        clocks = {**clocks, "smoke": "a CPU run (clocks listed, if any, are of a GPU it did not use)"}
    return {"device": name, "smoke": smoke, "timer": env.timer_class.label,
            "compile_backend": env.compile_backend, "triton_interpreter": interpreting(), "clocks": clocks,
            "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
            "commit": _git_commit(), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "flush_bytes": env.scale.flush_bytes, "error_steps": env.scale.error_steps,
            "error_reference": "torch.optim for-loop (lion_pytorch for Lion), fp32; for bf16 params, "
                               "fp32 state and params rounded to bf16 after every step"}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def markdown(results: dict) -> str:
    m, c = results["meta"], results["ceilings"]
    lines = [f"# optdsl bench --gpu{' --smoke' if m['smoke'] else ''}: {m['device']}", "",
             f"torch {m['torch']}, triton {m['triton']}, Python {m['python']}, commit {m['commit']}, {m['date_utc']}.",
             f"Timer: {m['timer']}; torch.compile backend: {m['compile_backend']}; L2 flushed with a "
             f"{m['flush_bytes'] >> 20} MiB write before every timed step.",
             "Clocks: " + "; ".join(f"{k}: {v}" for k, v in m["clocks"].items()), "",
             f"Ceilings: copy_ of {c['copy_bytes'] >> 20} MiB {c['copy_gbs']:.4g} GB/s (read + write); 4-read/3-write Triton stream over "
             f"{c['stream_elements']:,} fp32 elements {c['stream_gbs']:.4g} GB/s (the \"% ceil\" column).", "",
             f"Ratio: the first contender's time / this one's (> 1: faster). Error: max |param - reference| after "
             f"{m['error_steps']} steps, reference: {m['error_reference']}.",
             "ms: the median time between events around the step (on a GPU it includes any idle time while the host "
             "enqueues); host ms: the step call on the CPU; launches: device kernels per step (smoke: first-level aten ops).",
             "First step: state allocation plus the Triton JIT (optdsl fused) or torch.compile's compile, from empty "
             "on-disk caches (the process reuses a kernel it has built: the JIT shows in a spec and dtype's first "
             "mix); second step: a recompile where the state changed (SGD's buffer).", ""]
    for spec in dict.fromkeys(r["spec"] for r in results["rows"]):
        for dtype in DTYPES:
            rows = [r for r in results["rows"] if r["spec"] == spec and r["dtype"] == dtype]
            if not rows:
                continue
            lines += [f"## {spec}, {dtype}", "",
                      "| mix | contender | ms | ratio | host ms | launches | copies | B/elem | GB/s | % ceil | first step s | second step s | max err |",
                      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in rows:
                if r.get("skipped"):
                    lines.append(f"| {r['mix']} | {r['contender']} | skipped: {r['skipped']} |" + " |" * 11)
                    continue
                lines.append(f"| {r['mix']} | {r['contender']} | {r['device_ms']:.4g} | {r['ratio']:.2f} | {r['host_ms']:.3g} | "
                             f"{r['launches']} | {r['copies']} | {r['bytes_per_element']} | {r['gbs']:.4g} | "
                             f"{r['pct_of_ceiling']:.1f} | {r['first_step_s']:.3g} | {r['second_step_s']:.3g} | {r['max_abs_error']:.2e} |")
            lines.append("")
    return "\n".join(lines)


def write_results(results: dict, out_dir: Path) -> tuple[Path, Path]:
    stem = slug(results["meta"]["device"]) + ("-smoke" if results["meta"]["smoke"] else "")
    js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    atomic_write(js, json.dumps(results, indent=1) + "\n")
    atomic_write(md, markdown(results) + "\n")
    return js, md


def make_env(smoke: bool, compile_max_tensors: int | None = None) -> Env:
    if smoke:
        if not interpreting():
            raise SystemExit("optdsl bench --gpu --smoke runs the Triton kernels in the interpreter: set TRITON_INTERPRET=1 "
                             "before anything imports triton (the optdsl command does so itself)")
        return Env(torch.device("cpu"), SCALES["smoke"], WallTimer, "aot_eager")
    if interpreting() or not torch.cuda.is_available():
        raise SystemExit("optdsl bench --gpu needs a CUDA device and TRITON_INTERPRET unset; "
                         "`optdsl bench --gpu --smoke` runs the harness on CPU")
    scale = SCALES["gpu"]
    if compile_max_tensors is not None:
        scale = dataclasses.replace(scale, compile_max_tensors=compile_max_tensors)
    return Env(torch.device("cuda"), scale, CudaTimer, "inductor")


CACHE_VARIABLES = ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")


@contextlib.contextmanager
def cold_caches():
    """Fresh, empty Triton and inductor on-disk caches for the run, put back after: the first step's
    time is then a cold JIT or compile on every run, not whatever an earlier run left on disk."""
    saved = {k: os.environ.get(k) for k in CACHE_VARIABLES}
    with tempfile.TemporaryDirectory(prefix="optdsl-bench-gpu-") as tmp:
        try:
            for k in CACHE_VARIABLES:
                os.environ[k] = os.path.join(tmp, k.lower())
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def run(specs: list[str], env: Env, out_dir: Path, mixes: list[str]) -> dict:
    torch.manual_seed(0)
    with cold_caches():
        ceiling = ceilings(env)
        results = {"meta": metadata(env, env.scale.name == "smoke"), "ceilings": ceiling, "rows": []}
        results["meta"]["mixes"] = mixes
        start = time.perf_counter()
        for mix in mixes:
            for name in specs:
                for dtype_label in DTYPES:
                    print(f"  [{time.perf_counter() - start:7.1f} s] {name:<6} {mix:<30} {dtype_label}",
                          file=sys.stderr, flush=True)
                    results["rows"] += measure_cell(env, name, mix, dtype_label, ceiling["stream_gbs"])
    write_results(results, out_dir)
    return results


def main(args) -> int:
    specs = args.specs or list(SPECS)
    unknown = [s for s in specs if s not in SPECS]
    if unknown:
        raise SystemExit(f"optdsl bench --gpu covers {', '.join(SPECS)}; not {', '.join(unknown)}")
    env = make_env(args.smoke, args.compile_max_tensors)
    mixes = mix_names(env.scale)
    if args.mix:   # substrings of mix names, to fit a run into the device time at hand
        mixes = [m for m in mixes if any(sub.lower() in m.lower() for sub in args.mix)]
        if not mixes:
            raise SystemExit(f"no mix matches {args.mix}; the mixes: {', '.join(mix_names(env.scale))}")
    t = time.perf_counter()
    results = run(specs, env, Path(args.out), mixes)
    print(markdown(results))
    stem = slug(results["meta"]["device"]) + ("-smoke" if args.smoke else "")
    print(f"wrote {Path(args.out) / stem}.json and .md in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    failed = [r for r in results["rows"] if r.get("skipped", "").startswith("failed")]
    nonfinite = [r for r in results["rows"] if not r.get("skipped") and not math.isfinite(r["max_abs_error"])]
    for r in failed + nonfinite:
        print(f"{r['spec']} {r['mix']} {r['dtype']} {r['contender']}: {r.get('skipped') or 'params not finite'}", file=sys.stderr)
    return 1 if failed or nonfinite else 0
