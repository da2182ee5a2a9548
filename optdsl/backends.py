"""Which fused backend a step runs, and its kernel module: the Triton kernel (CUDA tensors, or CPU
tensors under TRITON_INTERPRET=1) or the fused C++ backend (CPU tensors), chosen per step from
the tensors' device and `cpu_fused_backend`; the generated kernel modules beside a spec's module,
imported once per process."""
from __future__ import annotations

import importlib.util
import operator
import os
import sys
from pathlib import Path
from typing import Any

from torch import Tensor


_SIBLINGS: dict[tuple[str, str], Any] = {}


def import_sibling(module_file: str, suffix: str):
    """Import `<stem><suffix>.py` beside a generated module (Triton needs kernels in a real file)."""
    hit = _SIBLINGS.get((module_file, suffix))   # every fused step asks
    if hit is not None:
        return hit
    _SIBLINGS[module_file, suffix] = module = _import_sibling(module_file, suffix)
    return module


def _import_sibling(module_file: str, suffix: str):
    path = Path(module_file).with_name(Path(module_file).stem + suffix + ".py")
    name = f"optdsl._kernels.{path.stem}_{abs(hash(str(path))):x}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_CPU_FUSED: list[str] = []   # the innermost `cpu_fused(...)` block's choice


class cpu_fused:
    """`with cpu_fused("cpp"):` -- the fused backend CPU tensors run inside the block, whatever
    the environment says (how tests and `optdsl verify` select the C++ backend explicitly)."""

    def __init__(self, backend: str):
        if backend not in ("cpp", "triton"):
            raise ValueError(f"the CPU fused backend is 'cpp' or 'triton', not {backend!r}")
        self.backend = backend

    def __enter__(self):
        _CPU_FUSED.append(self.backend)
        return self

    def __exit__(self, *exc):
        _CPU_FUSED.pop()


def cpu_fused_backend() -> str:
    """Which fused backend CPU tensors run: 'cpp' (the fused C++ backend, optdsl.emit.cpp) or
    'triton' (the Triton kernel under the interpreter, which is how the Triton kernels are tested
    on CPU). A `cpu_fused(...)` block chooses; else OPTDSL_CPU_FUSED=cpp|triton; unset,
    TRITON_INTERPRET=1 means 'triton' and anything else 'cpp'."""
    if _CPU_FUSED:
        return _CPU_FUSED[-1]
    choice = os.environ.get("OPTDSL_CPU_FUSED", "")
    if choice in ("cpp", "triton"):
        return choice
    if choice:
        raise ValueError(f"OPTDSL_CPU_FUSED must be 'cpp' or 'triton', not {choice!r}")
    return "triton" if os.environ.get("TRITON_INTERPRET") == "1" else "cpp"


def fused_kernel_suffix(params: list[Tensor]) -> str:
    """The generated kernel module a fused step imports: `_cpu` (C++) or `_triton`."""
    return fused_target(params)[0] or "_triton"


def fused_target(params: list[Tensor]) -> tuple[str | None, str | None]:
    """(the suffix of the kernel module a fused step imports, `_cpu` or `_triton`, or None; why the
    fused path cannot run on these tensors, or None): one pass over the tensors for both."""
    if all(map(operator.attrgetter("is_cuda"), params)):
        return "_triton", None
    if all(map(operator.attrgetter("is_cpu"), params)):
        if cpu_fused_backend() == "cpp":
            return "_cpu", None
        if os.environ.get("TRITON_INTERPRET") == "1":
            return "_triton", None
        return None, ("OPTDSL_CPU_FUSED=triton runs the Triton kernel on CPU tensors, which needs "
                      "TRITON_INTERPRET=1 set before the first fused step")
    return None, ("fused=True needs every tensor of a group on one kind of device: CUDA tensors (the Triton "
                  "kernel) or CPU tensors (the fused C++ backend, or the Triton kernel with TRITON_INTERPRET=1)")
