"""What a fused launch reads off every tensor of a group each step (address, element count, dtype,
contiguity, device), in one C++ pass over all streams instead of a Python pass per attribute and
per stream; and, in the same way, a fused group's grads for `_init_group` and its step advance.

With thousands of tensors those passes are most of a fused step's host time: one C-level Python
pass reading `data_ptr()` of 2,000 tensors costs about as much as the C++ pass reading every fact
of 8,000 (optdsl bench --host prints both). The helper is templates/optdsl_host.cpp, built once
like the fused CPU kernels (optdsl.cpp_runtime: torch.utils.cpp_extension, cached on disk by
content hash) and called through ctypes with the GIL held.

OPTDSL_HOST_FACTS chooses: `cpp` (build it if needed; an error where it cannot be built),
`python` (never), or unset: `cpp` for CUDA tensors and the fused C++ backend's CPU tensors where a
C++ compiler and ninja are found, the Python passes otherwise (under TRITON_INTERPRET=1 the
interpreter's kernels dominate a step, and a test process should not pay a build for them). The
two give the same facts (tests/test_host_facts.py); only the host time differs."""
from __future__ import annotations

import ctypes
import os
import shutil
import threading
import warnings
from typing import NamedTuple

import torch

SOURCE = "optdsl_host.cpp"
ALIGN_BYTES = 16   # what a 128-bit access needs; the kernel's _ALIGNED hint
_NOT_ONE_DTYPE = -2
_LOCK = threading.Lock()
_LIBRARY: list = []   # the loaded helper, once per process ([None]: unavailable)


class Facts(NamedTuple):
    addresses: torch.Tensor   # int64 [streams, n], CPU: stream s's data pointers
    numels: torch.Tensor      # int64 [n], CPU: the params' element counts
    dtypes: tuple[int, ...]   # per stream its one dtype code (kernel_runtime.DTYPE_CODES), or -2
    contiguous: bool          # every tensor of every stream
    aligned: bool             # every address a multiple of ALIGN_BYTES
    one_device: bool          # every tensor on the first param's device

    def uniform(self) -> bool:
        """The usual case: one launch over every tensor, with nothing to copy."""
        return self.contiguous and self.one_device and _NOT_ONE_DTYPE not in self.dtypes


def choice(device_type: str, backend: str) -> str:
    """'cpp' or 'python' for a launch of `backend` ('triton' or 'cpp', the fused CPU backend) on
    tensors of `device_type` (see the module docstring)."""
    chosen = os.environ.get("OPTDSL_HOST_FACTS", "")
    if chosen in ("cpp", "python"):
        return chosen
    if chosen:
        raise ValueError(f"OPTDSL_HOST_FACTS must be 'cpp' or 'python', not {chosen!r}")
    if backend == "cpp" or device_type == "cuda":
        return "cpp" if shutil.which(os.environ.get("CXX", "c++")) else "python"
    return "python"   # the Triton kernel in the interpreter


def _library(required: bool):
    if _LIBRARY:
        return _LIBRARY[0]
    with _LOCK:
        if not _LIBRARY:
            from .cpp_runtime import build
            from .resources import data_dir
            try:
                library = ctypes.PyDLL(str(build(data_dir("templates") / SOURCE)))
            except Exception as e:   # chosen by default: the Python passes do the same, slower
                if required:
                    raise RuntimeError(f"OPTDSL_HOST_FACTS=cpp: the launch helper {SOURCE} could not be built: {e}") from e
                warnings.warn(f"optdsl: the fused launch helper {SOURCE} could not be built ({e}); fused launches "
                              "read their tensors' facts in Python, with more host time per step "
                              "(OPTDSL_HOST_FACTS=python says so and skips the build)", RuntimeWarning, stacklevel=3)
                _LIBRARY.append(None)
                return None
            p, i64 = ctypes.c_void_p, ctypes.c_int64
            library.optdsl_tensor_facts.argtypes = [ctypes.py_object, i64, i64, p, p, p]
            library.optdsl_tensor_facts.restype = i64
            library.optdsl_advance_steps.argtypes = [ctypes.py_object, ctypes.c_double, p]
            library.optdsl_advance_steps.restype = i64
            library.optdsl_group_grads.argtypes = [ctypes.py_object] * 4
            library.optdsl_group_grads.restype = i64
            _LIBRARY.append(library)
    return _LIBRARY[0]


def available(device_type: str, backend: str) -> bool:
    """Whether a `backend` launch on `device_type` tensors reads its facts in C++ (building the
    helper on the first call where it is chosen)."""
    return choice(device_type, backend) == "cpp" and _library(
        required=os.environ.get("OPTDSL_HOST_FACTS") == "cpp") is not None


def read(streams: list[list[torch.Tensor]]) -> Facts | None:
    """The facts of `streams` (stream 0: the params; every list as long), or None where an item is
    not a tensor (the caller's Python path then handles it). Call where available() said yes."""
    n = len(streams[0])
    if n == 0:
        return None
    addresses = torch.empty((len(streams), n), dtype=torch.int64)
    numels = torch.empty(n, dtype=torch.int64)
    dtypes = torch.empty(len(streams), dtype=torch.int64)
    bits = _LIBRARY[0].optdsl_tensor_facts(streams, n, ALIGN_BYTES, addresses.data_ptr(), numels.data_ptr(), dtypes.data_ptr())
    if bits < 0:
        return None
    return Facts(addresses, numels, tuple(dtypes.tolist()), bool(bits & 1), bool(bits & 2), bool(bits & 4))


def read_in_python(streams: list[list[torch.Tensor]]) -> Facts:
    """The same facts read with Python passes: the oracle of the C++ helper, and its stand-in."""
    from .kernel_runtime import DTYPE_CODES
    params = streams[0]
    addresses = torch.tensor([list(map(torch.Tensor.data_ptr, s)) for s in streams], dtype=torch.int64).reshape(
        len(streams), len(params))
    numels = torch.tensor(list(map(torch.Tensor.numel, params)), dtype=torch.int64)
    dtypes = []
    for s in streams:
        kinds = set(t.dtype for t in s)
        dtypes.append(DTYPE_CODES[next(iter(kinds))] if len(kinds) == 1 and next(iter(kinds)) in DTYPE_CODES
                      else _NOT_ONE_DTYPE)
    device = params[0].device if params else None
    return Facts(addresses, numels, tuple(dtypes), all(t.is_contiguous() for s in streams for t in s),
                 bool((addresses % ALIGN_BYTES == 0).all()), all(t.device == device for s in streams for t in s))


def advance_steps(steps: list[torch.Tensor], delta: float = 1.0) -> list[float] | None:
    """`torch._foreach_add_(steps, delta)` and the new values as Python numbers, in one C++ pass,
    where every step is a one-element float32/float64 CPU tensor; None (nothing changed) else.
    Call where available() said yes."""
    values = torch.empty(len(steps), dtype=torch.float64)
    if not steps or _LIBRARY[0].optdsl_advance_steps(steps, delta, values.data_ptr()) != 0:
        return None
    return values.tolist()


def group_grads(params: list[torch.Tensor]) -> tuple[list[torch.Tensor], bool] | None:
    """(every param's `.grad`, whether a param is complex) in one C++ pass, where every param is a
    plain Tensor or Parameter with a dense grad; None else (the caller's per-parameter loop then
    looks at each). Call where available() said yes."""
    grads: list[torch.Tensor] = []
    bits = _LIBRARY[0].optdsl_group_grads(params, grads, torch.Tensor, torch.nn.Parameter)
    return None if bits < 0 else (grads, bool(bits & 1))
