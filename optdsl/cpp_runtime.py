"""Host side of the fused CPU backend (optdsl.emit.cpp): build, cache and call a spec's C++ step.

A kernel is compiled on first use with torch.utils.cpp_extension (ninja, the C++ compiler torch
uses: $CXX or `c++`), into a folder of the optdsl cache (optdsl.loader.cache_dir) named by the hash
of everything the binary depends on: the C++ source, the flags, the compiler's version, the CPU
(the code is built for this machine's instruction set, `-march=native`) and torch's version. A
later process with the same key loads the library from disk without compiling. The source has no
torch headers (a plain C function called through ctypes), which keeps a build to a second or two.

A spec with reductions has one step function per phase (PhaseKernel): it walks the phased work
list of optdsl.kernel_runtime (Work: chunks that never straddle a tensor or, with a channel
reduction, an output channel) and writes its partials into the Run's buffer, which
kernel_runtime.combine joins.

The one-time compile is reported on stderr and kept in COMPILE_SECONDS."""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from .kernel_runtime import DTYPE_CODES

# No -ffast-math: results must be IEEE like the other paths'; no FMA contraction either (torch's
# own elementwise ops round every multiply and add).
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-std=c++17")
LDFLAGS = ("-fopenmp",)
COMPILE_SECONDS: dict[str, float] = {}   # library name -> seconds its build took in this process

_KERNELS: dict[tuple[str, str], "Kernel"] = {}
_LOCK = threading.Lock()
_TOOLCHAIN: list[str] = []


def _compiler() -> str:
    cxx = os.environ.get("CXX", "c++")
    found = shutil.which(cxx)
    if found is None:
        raise RuntimeError(
            f"fused=True on CPU tensors compiles a C++ kernel, but no C++ compiler was found: "
            f"'{cxx}' (from $CXX, default 'c++') is not on PATH. Install one (e.g. g++), set CXX, "
            f"or use foreach=True; TRITON_INTERPRET=1 runs the Triton kernel in the interpreter instead.")
    return found


def _ensure_ninja() -> None:
    from torch.utils.cpp_extension import is_ninja_available
    if is_ninja_available():
        return
    here = os.path.dirname(sys.executable)   # a virtual environment's ninja, not on PATH when not activated
    if os.path.exists(os.path.join(here, "ninja")):
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")
        if is_ninja_available():
            return
    raise RuntimeError("fused=True on CPU tensors builds a C++ kernel with ninja, which was not found: "
                       "`pip install ninja` (or use foreach=True)")


def _cpu_identity() -> str:
    """The CPU model and instruction-set flags: `-march=native` code runs on this CPU only."""
    model, flags = platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":", 1)[0].strip()
            if key == "model name" and model == platform.machine():
                model += " " + line.split(":", 1)[1].strip()
            elif key in ("flags", "Features") and not flags:
                flags = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{model} | {flags}"


def toolchain() -> str:
    """What besides the source a binary depends on (compiler version, CPU, torch); one probe per process."""
    if not _TOOLCHAIN:
        cxx = _compiler()
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()
        _TOOLCHAIN.append("\n".join([cxx, version[0] if version else "", _cpu_identity(), torch.__version__,
                                     " ".join(CFLAGS), " ".join(LDFLAGS)]))
    return _TOOLCHAIN[0]


HEADER = "optdsl_cpu.h"   # templates/optdsl_cpu.h: the helpers every generated source includes


def shared_header() -> str:
    from .resources import data_dir
    return (data_dir("templates") / HEADER).read_text(encoding="utf-8")


def build(source: Path) -> Path:
    """The shared library of a generated C++ source: from the cache, or compiled now."""
    from .loader import cache_dir
    text = source.read_text(encoding="utf-8")
    header = shared_header()
    key = hashlib.sha256((toolchain() + "\n" + header + "\n" + text).encode()).hexdigest()
    name = f"optdsl_{source.stem}_{key[:12]}"
    folder = cache_dir() / "cpu" / key[:32]
    library = folder / f"{name}.so"
    if library.exists():
        return library
    _ensure_ninja()
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / f"{source.stem}.cpp"
    for path, content in ((copy, text), (folder / HEADER, header)):   # the #include resolves beside the source
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
    from torch.utils.cpp_extension import load
    start = time.perf_counter()
    built = load(name, [str(copy)], extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),
                 build_directory=str(folder), is_python_module=False, verbose=False)
    seconds = time.perf_counter() - start
    COMPILE_SECONDS[name] = seconds
    print(f"optdsl: compiled the fused CPU kernel {source.name} in {seconds:.1f} s (cached in {folder})",
          file=sys.stderr)
    return Path(built) if built else library


class Kernel:
    """A compiled step: call(view, ptrs, streams, numels, work_tensor, work_start, table, flags), with
    `ptrs` the bucket's pointer tables (kernel_runtime.Bucket.pointer_tables)."""

    def __init__(self, library: Path, symbol: str):
        self.library = library
        fn = getattr(ctypes.CDLL(str(library)), symbol)
        i64p = ctypes.POINTER(ctypes.c_int64)
        fn.argtypes = [i64p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                       i64p, i64p, ctypes.c_int64]
        fn.restype = None
        self.fn = fn

    def __call__(self, view, ptrs, streams, numels, work_tensor, work_start, table, flags) -> None:
        n = len(streams)
        tables = [ptrs[s] if s in view else None for s in streams]
        addresses = (ctypes.c_int64 * n)(*[t.data_ptr() if t is not None else 0 for t in tables])
        dtypes = (ctypes.c_int64 * n)(*[DTYPE_CODES[view[s][0].dtype] if s in view else -1 for s in streams])
        flag_array = (ctypes.c_int64 * max(1, len(flags)))(*[int(bool(f)) for f in flags])
        self.fn(addresses, numels.data_ptr(), work_tensor.data_ptr(), work_start.data_ptr(), work_tensor.numel(),
                table.data_ptr(), dtypes, flag_array, torch.get_num_threads())


class PhaseKernel:
    """One phase of a phased spec: call(run, streams, flags) over one bucket (a kernel_runtime.Run,
    with `scalar_in` set by scalar_inputs). It reads the Run's combined tables, writes its partials
    (one per chunk and per reduction of the phase) and, in the last phase, the new device scalar
    states."""

    def __init__(self, library: Path, symbol: str):
        self.library = library
        fn = getattr(ctypes.CDLL(str(library)), symbol)
        i64p = ctypes.POINTER(ctypes.c_int64)
        p = ctypes.c_void_p
        fn.argtypes = [i64p, p, p, p, p, ctypes.c_int64, p, p, p, ctypes.c_int64, ctypes.c_int64, p, p, p,
                       i64p, i64p, ctypes.c_int64]
        fn.restype = None
        self.fn = fn

    def __call__(self, run, streams, flags) -> None:
        from .kernel_runtime import LAUNCHES
        view, work = run.view, run.work
        n = max(1, len(streams))
        tables = [run.ptrs[s] if s in view else None for s in streams]
        addresses = (ctypes.c_int64 * n)(*[t.data_ptr() if t is not None else 0 for t in tables])
        dtypes = (ctypes.c_int64 * n)(*[DTYPE_CODES[view[s][0].dtype] if s in view else -1 for s in streams])
        flag_array = (ctypes.c_int64 * max(1, len(flags)))(*[int(bool(f)) for f in flags])
        self.fn(addresses, work.tensor.data_ptr(), work.start.data_ptr(), work.end.data_ptr(), work.channel.data_ptr(),
                work.programs, run.table.data_ptr(), run.reduced.data_ptr(), run.reduced_channel.data_ptr(),
                work.n_tensors, work.n_channels, run.partials.data_ptr(), run.scalar_in.data_ptr(),
                run.scalar_out.data_ptr(), dtypes, flag_array, torch.get_num_threads())
        LAUNCHES[0] += 1


def scalar_inputs(states: list, index: list[int]) -> torch.Tensor:
    """[device scalar states, tensors of the bucket] fp32: each tensor's current 0-d state values
    (0 where the group does not keep a conditional state, which the update then never reads).
    Stacked with torch ops: nothing is read back into Python."""
    zero = torch.zeros((), dtype=torch.float32)
    out = [torch.stack([zero if ts is None or ts[i] is None else ts[i].reshape(()).to(torch.float32)
                        for i in index]) if index else torch.zeros(0) for ts in states]
    return torch.stack(out) if out else torch.zeros((1, max(1, len(index))), dtype=torch.float32)


def sibling(module_file: str, name: str) -> Path:
    """The generated C++ source beside a generated launcher module."""
    return Path(module_file).with_name(name)


def kernel(source: Path, symbol: str, cls=None) -> "Kernel":
    """The step function of a generated C++ source, built (or loaded from the cache) once per process."""
    key = (str(source), symbol)
    hit = _KERNELS.get(key)
    if hit is not None:
        return hit
    with _LOCK:
        if key not in _KERNELS:
            _KERNELS[key] = (cls or Kernel)(build(source), symbol)   # a phase's finds its sibling's build
        return _KERNELS[key]


def phase_kernel(source: Path, symbol: str) -> "PhaseKernel":
    return kernel(source, symbol, PhaseKernel)
