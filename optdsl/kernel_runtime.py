"""Host side of the fused path: the flat work list, the per-tensor table, stream
pointer tables, and one launch per parameter group (per dtype combination)."""
from __future__ import annotations

import os
from collections import OrderedDict

import torch

LAUNCHES = [0]   # kernel launches since import; tests read it
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

_CACHE: "OrderedDict[tuple, tuple]" = OrderedDict()
_CACHE_SIZE = 256


def block_size(device: torch.device) -> int:
    # The interpreter pays ~1 ms per program: few, large blocks. A GPU wants many small ones.
    return 1024 if device.type == "cuda" else 16384


def dtype_code(t: torch.Tensor) -> int:
    if t.dtype not in DTYPE_CODES:
        raise TypeError(f"fused=True supports float32, float16 and bfloat16 tensors, not {t.dtype}")
    return DTYPE_CODES[t.dtype]


def work_list(tensors: list[torch.Tensor], block: int, device):
    """(numels, program -> tensor index, program -> first element): cached while the tensors are the same."""
    key = (tuple((t.data_ptr(), t.numel()) for t in tensors), block, str(device))
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    numels = torch.tensor([t.numel() for t in tensors], dtype=torch.int64)
    blocks = (numels + block - 1) // block
    tensor_of = torch.repeat_interleave(torch.arange(len(tensors), dtype=torch.int32), blocks)
    first_block = torch.cumsum(blocks, 0) - blocks
    start = (torch.arange(int(blocks.sum()), dtype=torch.int64) - first_block[tensor_of.long()]) * block
    out = (numels.to(device), tensor_of.to(device), start.to(device))
    _CACHE[key] = out
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return out


def pointer_table(tensors: list[torch.Tensor], device) -> torch.Tensor:
    """Addresses of the tensors, on the device: cached while they are the same (so a step
    replayed from a CUDA graph copies nothing from the host)."""
    key = ("ptrs", tuple(t.data_ptr() for t in tensors), str(device))
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    out = torch.tensor(key[1], dtype=torch.int64).to(device)
    _CACHE[key] = out
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return out


def value_table(rows: list[tuple], columns: list[int], device, group: tuple = ()) -> torch.Tensor:
    """The kernel's fp32 host-value table, flat: the group-level values, then per tensor a row of
    its per-tensor columns of `rows` (at least one, so a row is never empty).

    Numbers are rounded to fp32 on the host and copied over once. Where any value is a tensor
    (capturable: computed on the device from the step tensors, or a Tensor lr) the table is
    stacked on the device instead: fills and copies between device tensors, never .item(), so
    a CUDA graph can capture it."""
    cells = list(group)
    for r in rows:
        cells += [r[j] for j in columns] or [0.0]
    cells = [0.0 if x is None else x for x in cells]   # a conditional scalar state the group does not keep
    if not any(isinstance(x, torch.Tensor) for x in cells):
        return torch.tensor([float(x) for x in cells], dtype=torch.float32).to(device)

    def cell(x) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.to(device=device, dtype=torch.float32).reshape(())
        return torch.full((), float(x), dtype=torch.float32, device=device)
    return torch.stack([cell(x) for x in cells])


def real_contiguous(t: torch.Tensor) -> torch.Tensor:
    """The fused kernel walks flat contiguous memory; complex values as interleaved reals."""
    if torch.is_complex(t):
        t = torch.view_as_real(t)
    return t


def buckets(params: list[torch.Tensor], streams: list[list[torch.Tensor]]) -> list[list[int]]:
    """Indices of tensors grouped by (device, stream dtypes): each bucket is one launch."""
    out: "OrderedDict[tuple, list[int]]" = OrderedDict()
    for i, p in enumerate(params):
        key = (str(p.device),) + tuple(dtype_code(real_contiguous(s[i])) for s in streams)
        out.setdefault(key, []).append(i)
    return list(out.values())


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def flat_views(streams: dict[str, list[torch.Tensor]], index: list[int], stored: tuple[str, ...]):
    """Per stream, the bucket's tensors as flat contiguous real memory; copies to write back after."""
    view: dict[str, list[torch.Tensor]] = {}
    copies: list[tuple[torch.Tensor, torch.Tensor]] = []
    for name, tensors in streams.items():
        chosen = []
        for i in index:
            x = real_contiguous(tensors[i])
            if not x.is_contiguous():
                y = x.contiguous()
                if name in stored:
                    copies.append((x, y))
                x = y
            chosen.append(x)
        view[name] = chosen
    return view, copies


def copy_back(copies) -> None:
    for original, flat in copies:
        original.copy_(flat)


def allocate_empty(states: list, params: list[torch.Tensor]) -> None:
    """An `empty` state the kernel is about to write for the first time: give it memory (stored in the caller's list)."""
    for i, t in enumerate(states):
        if t is None:
            states[i] = torch.zeros_like(params[i], memory_format=torch.contiguous_format)
