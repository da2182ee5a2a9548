"""Host side of the fused path: the flat work list, the per-tensor table, stream
pointer tables, and one launch per parameter group (per dtype combination)."""
from __future__ import annotations

import functools
import itertools
import operator
import os
from collections import OrderedDict

import torch

from . import host_facts, precision
from .distributed import per_tensor_across_shards, raw_across_ranks

LAUNCHES = [0]   # kernel launches since import; tests read it
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
BF16_SR = 3      # bf16 stored with stochastic rounding (optdsl.triton_lib)

_CACHE: "OrderedDict[tuple, tuple]" = OrderedDict()
_CACHE_SIZE = 256
_EXACT: "OrderedDict[tuple, tuple]" = OrderedDict()   # _cached_exact's

# per-tensor attribute reads as C-level calls (map), not Python loops: with thousands of tensors
# they are most of a step's host time
_data_ptr = torch.Tensor.data_ptr
_numel = torch.Tensor.numel
_is_contiguous = torch.Tensor.is_contiguous
_get_device = torch.Tensor.get_device
_dtype = operator.attrgetter("dtype")
COMPLEX_DTYPES = frozenset({torch.complex32, torch.complex64, torch.complex128})
ALIGN_BYTES = host_facts.ALIGN_BYTES


def _cached(key, make):
    # first in, first out: a hit costs one hash of the key (a tuple of thousands of addresses)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    out = _CACHE[key] = make()
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return out


def block_size(device: torch.device, channel_tensors: list[torch.Tensor] | None = None) -> int:
    """The elements per program. The interpreter pays ~1 ms per program: few, large blocks; a GPU
    wants many small ones. Where programs are cut at output channels (`channel_tensors`), no
    program spans two channels, so a block larger than the largest channel only adds masked-off
    lanes: the block is the largest channel's size, rounded up to a power of two (at least 16)."""
    full = _full_block(device)
    if channel_tensors:
        largest = max((t.numel() // t.shape[0] if t.dim() and t.shape[0] else t.numel()) for t in channel_tensors)
        return max(16, min(full, 1 << max(0, int(largest) - 1).bit_length()))
    return full


def _full_block(device: torch.device) -> int:
    return 1024 if device.type == "cuda" else 16384


def dtype_code(t: torch.Tensor, rounding: torch.Tensor | None = None) -> int:
    """The kernel's constexpr for a stream of t's dtype; bf16 rounds stochastically where the
    launch has `rounding` seeds (a kernel specialisation of its own: without them, nothing changes)."""
    if t.dtype not in DTYPE_CODES:
        raise TypeError(f"fused=True supports float32, float16 and bfloat16 tensors, not {t.dtype}")
    code = DTYPE_CODES[t.dtype]
    return BF16_SR if rounding is not None and code == DTYPE_CODES[torch.bfloat16] else code


def rounding_seeds(index: list[int], device) -> torch.Tensor | None:
    """The bucket's per-tensor Philox seeds (int64, on the device) where this step rounds bf16
    stochastically in the kernel (optdsl.precision.KernelRounding), else None. A fresh copy per
    step, like the value table: the seeds change with the group's rounding step."""
    seeds = precision.kernel_seeds(index)
    return None if seeds is None else torch.tensor(seeds, dtype=torch.int64).to(device)


def work_list(tensors: list[torch.Tensor], block: int, device):
    """(numels, program -> tensor index, program -> first element): cached while the tensors are the same.

    A tensor's programs start at multiples of `block` within it (the kernel's full-block hint
    `multiple_of(_offs, BLOCK)`), and the last one is the only partial one."""
    key = (tuple(map(_data_ptr, tensors)), tuple(map(_numel, tensors)), block, str(device))
    return _cached(key, lambda: _work_list(key[1], block, device))


def _work_list(numel_list, block, device):
    numels = torch.tensor(numel_list, dtype=torch.int64)
    blocks = (numels + block - 1) // block
    tensor_of = torch.repeat_interleave(torch.arange(len(numel_list), dtype=torch.int32), blocks)
    first_block = torch.cumsum(blocks, 0) - blocks
    start = (torch.arange(int(blocks.sum()), dtype=torch.int64) - first_block[tensor_of.long()]) * block
    return numels.to(device), tensor_of.to(device), start.to(device)


def pointer_table(tensors: list[torch.Tensor], device) -> torch.Tensor:
    """Addresses of the tensors, on the device: cached while they are the same (so a step
    replayed from a CUDA graph copies nothing from the host)."""
    return pointer_tables({"": tensors}, device)[0][""]


def pointer_tables(view: dict[str, list[torch.Tensor]], device) -> tuple[dict[str, torch.Tensor], bool]:
    """Per stream, its pointer table on the device (cached while the addresses are the same), and
    whether every address is a multiple of ALIGN_BYTES (the kernel's _ALIGNED: 128-bit accesses;
    fresh torch allocations are, views at an odd offset may not be)."""
    ptrs, aligned = {}, True
    for name, ts in view.items():
        addresses = tuple(map(_data_ptr, ts))
        table, ok = _cached(("ptrs", addresses, str(device)), lambda: (
            torch.tensor(addresses, dtype=torch.int64).to(device), all(a % ALIGN_BYTES == 0 for a in addresses)))
        ptrs[name] = table
        aligned = aligned and ok
    return ptrs, aligned


def bucket_rows(rows: list[tuple], index: list[int]) -> list[tuple]:
    return rows if len(index) == len(rows) else [rows[i] for i in index]


def value_table(rows: list[tuple], columns: list[int], device, group: tuple = ()) -> torch.Tensor:
    """The kernel's fp32 host-value table, flat: the group-level values, then per tensor a row of
    its per-tensor columns of `rows` (at least one, so a row is never empty).

    Numbers are rounded to fp32 on the host and copied over once. Where any value is a tensor
    (capturable: computed on the device from the step tensors, or a Tensor lr) the table is
    stacked on the device instead: fills and copies between device tensors, never .item(), so
    a CUDA graph can capture it."""
    cells = list(group)
    if not columns:
        cells += [0.0] * len(rows)
    elif len(columns) == 1:
        cells += map(operator.itemgetter(columns[0]), rows)
    else:   # C-level: a row per tensor, thousands of them
        cells += itertools.chain.from_iterable(map(operator.itemgetter(*columns), rows))
    return _table(cells, device)


def _table(cells: list, device) -> torch.Tensor:
    if None in cells:   # a conditional scalar state the group does not keep
        cells = [0.0 if x is None else x for x in cells]
    capturing = torch.device(device).type == "cuda" and torch.cuda.is_current_stream_capturing()
    if not capturing and not any(issubclass(t, torch.Tensor) for t in set(map(type, cells))):
        return torch.tensor(list(map(float, cells)), dtype=torch.float32).to(device)
    # (in a CUDA graph capture a host-to-device copy is refused: numbers are filled on the device)

    def cell(x) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.to(device=device, dtype=torch.float32).reshape(())
        return torch.full((), float(x), dtype=torch.float32, device=device)
    return torch.stack([cell(x) for x in cells])


class SameRows(list):
    """runtime.per_tensor's rows where every tensor shares one row object (one step for all): the
    value table is then one row, known without a pass over the rows."""


_TABLES: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()   # one-row tables by their numbers


def compact_value_table(rows: list[tuple], columns: list[int], device, group: tuple = ()) -> tuple[torch.Tensor, bool]:
    """value_table for the Triton kernel, and whether it holds one row for every tensor (the
    kernel's _ONE_ROW): where every tensor's row is the same object (one step for all:
    runtime.per_tensor then returns one row object n times) the table is the group's values and
    that row once, and it stays on the device while its numbers are the same (a step that changes
    nothing copies nothing). Rows of different steps (a tensor that skipped a step) keep a row per
    tensor."""
    head = rows[0] if rows else ()
    # the same row object (runtime.SameRows says so; else a C-level identity pass: rows equal in
    # value but for the sign of a zero stay apart)
    one_row = bool(rows) and not any(isinstance(x, torch.Tensor) for x in head) and (
        isinstance(rows, SameRows) or all(map(operator.is_, rows, itertools.repeat(head))))
    if not one_row:
        return value_table(rows, columns, device, group), False
    cells = list(group) + ([head[j] for j in columns] or [0.0])
    if any(isinstance(x, torch.Tensor) for x in cells) or (
            torch.device(device).type == "cuda" and torch.cuda.is_current_stream_capturing()):
        return _table(cells, device), True
    key = (str(device), tuple(0.0 if x is None else float(x) for x in cells))
    hit = _TABLES.get(key)
    if hit is None:
        hit = _TABLES[key] = torch.tensor(key[1], dtype=torch.float32).to(device)
        if len(_TABLES) > 64:
            _TABLES.popitem(last=False)
    return hit, True


def real_contiguous(t: torch.Tensor) -> torch.Tensor:
    """The fused kernel walks flat contiguous memory; complex values as interleaved reals."""
    if torch.is_complex(t):
        t = torch.view_as_real(t)
    return t


def buckets(params: list[torch.Tensor], streams: list[list[torch.Tensor]]) -> list[list[int]]:
    """Indices of tensors grouped by (device, stream dtypes): each bucket is one launch."""
    # the usual case, one device and one real dtype per stream: one bucket, found with a set per
    # stream (thousands of small tensors make the per-tensor path below a cost per step)
    kinds = [set(map(_dtype, s)) for s in streams]
    if all(len(k) == 1 and next(iter(k)) in DTYPE_CODES for k in kinds) and len(set(map(_get_device, params))) == 1:
        # (get_device: the index, -1 on the CPU; a group's tensors share a device type, backends.fused_target)
        return [list(range(len(params)))]
    out: "OrderedDict[tuple, list[int]]" = OrderedDict()
    for i, p in enumerate(params):
        key = (str(p.device),) + tuple(dtype_code(real_contiguous(s[i])) for s in streams)
        out.setdefault(key, []).append(i)
    return list(out.values())


class Bucket:
    """One launch: the indices of its tensors in the group, per stream their flat contiguous real
    views, the copies to write back after, and the facts the C++ helper read off them
    (optdsl.host_facts) where it did: the work list and pointer tables then come from those facts
    with no further pass over the tensors, and stay on the device while they are the same."""

    def __init__(self, index: list[int], view: dict[str, list[torch.Tensor]], copies: list, facts=None):
        self.index, self.view, self.copies, self.facts = index, view, copies, facts

    def work_list(self, block: int, device):
        """(numels, program -> tensor index, program -> first element), as `work_list`."""
        if self.facts is None:
            return work_list(self.view["param"], block, device)
        numels = self.facts.numels
        return _cached_exact(("work", block, str(device)), numels, lambda: _work_list(numels.tolist(), block, device))

    def work(self, block: int, device, channels: bool) -> "Work":
        """The phased work list, as `work`: from the facts' element counts where programs are not
        cut at channels (a tensor's channels are not among the facts)."""
        if self.facts is None or channels:
            return work(self.view["param"], block, device, channels)
        tensors = self.view["param"]
        return _cached_exact(("phased work", block, str(device)), self.facts.numels,
                             lambda: Work(tensors, block, device, channels))

    def pointer_tables(self, device) -> tuple[dict[str, torch.Tensor], bool]:
        """Per stream its pointer table on the device, and _ALIGNED, as `pointer_tables`."""
        if self.facts is None:
            return pointer_tables(self.view, device)
        where = str(device)
        ptrs = {name: _cached_exact(("ptrs", where), row, lambda row=row: row.to(device))
                for name, row in zip(self.view, self.facts.addresses)}
        return ptrs, self.facts.aligned


def _cached_exact(kind: tuple, array: torch.Tensor, make):
    """`make()` cached under the exact contents of `array` (a CPU int64 vector): found by its length
    and ends, confirmed by comparing every element (one vectorised compare, no Python pass)."""
    key = kind + (array.numel(), int(array[0]), int(array[-1]))
    hit = _EXACT.get(key)
    if hit is not None and torch.equal(hit[0], array):
        return hit[1]
    out = make()
    _EXACT[key] = (array, out)
    if len(_EXACT) > _CACHE_SIZE:
        _EXACT.popitem(last=False)
    return out


def bucket_views(params: list[torch.Tensor], streams: dict[str, list[torch.Tensor]], stored: tuple[str, ...],
                 backend: str = "triton") -> list[Bucket]:
    """The launches of a step: buckets() and flat_views() in one. The usual case (one device, one
    real dtype per stream, every tensor contiguous) is one bucket that copies nothing, found in one
    C++ pass over every tensor where the launch helper is available (optdsl.host_facts), else in a
    C-level Python pass per stream and check."""
    lists = list(streams.values())
    if params and host_facts.available(params[0].device.type, backend):
        facts = host_facts.read(lists)
        if facts is not None and facts.uniform():
            return [Bucket(list(range(len(params))), dict(streams), [], facts)]
    elif len(set(map(_get_device, params))) == 1 and all(
            len(k) == 1 and next(iter(k)) in DTYPE_CODES for k in (set(map(_dtype, s)) for s in lists)) and all(
            all(map(_is_contiguous, s)) for s in lists):
        return [Bucket(list(range(len(params))), dict(streams), [])]
    return [Bucket(index, *flat_views(streams, index, stored)) for index in buckets(params, lists)]


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def quiet_interpreter(launch):
    """`launch` with NumPy's floating-point warnings off under TRITON_INTERPRET=1. The interpreter
    runs a kernel as NumPy arrays, and NumPy warns where a GPU computes the IEEE value silently:
    `0 ^ y` takes log2(0) = -inf on its way to the right result, an fp32 overflow gives inf. The
    values are the same either way; the warnings would only reach the user as noise (or, under
    warnings-as-errors, as an InterpreterError)."""
    @functools.wraps(launch)
    def run(*args, **kwargs):
        if not interpreting():
            return launch(*args, **kwargs)
        import numpy as np
        with np.errstate(all="ignore"):
            return launch(*args, **kwargs)
    return run


def flat_views(streams: dict[str, list[torch.Tensor]], index: list[int], stored: tuple[str, ...]):
    """Per stream, the bucket's tensors as flat contiguous real memory; copies to write back after."""
    view: dict[str, list[torch.Tensor]] = {}
    copies: list[tuple[torch.Tensor, torch.Tensor]] = []
    for name, tensors in streams.items():
        chosen = tensors if len(index) == len(tensors) else [tensors[i] for i in index]
        if all(map(_is_contiguous, chosen)) and COMPLEX_DTYPES.isdisjoint(map(_dtype, chosen)):   # nothing to copy
            view[name] = chosen
            continue
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


# ---- phases: reductions in the fused path ------------------------------------------------------
#
# A spec with reductions runs as several kernels per step (optdsl.plan): phase k writes one partial
# result per program and per reduction to `partials`; `combine` joins them, in a fixed order, into a
# per-tensor table (`reduced`, tensor and group scope) and a per-channel table (channel scope) that
# later phases read. Counters, per group step: LAUNCHES grows by (phases x buckets), one per kernel
# launch, and COMBINES by (phases - 1), one per `combine` call (a call covers every bucket of the
# group, as a group-scope value needs them all). Neither depends on the number of tensors.

COMBINES = [0]   # combine steps since import; tests read it


class Work:
    """A bucket's flat work list for a phased spec, and what `combine` needs to join its partials.

    Every tensor gets at least one program (a zero-element tensor one fully masked program), so
    per-tensor scalar work (a device scalar state's store) always happens. With `channels`
    (the spec has a channel-scope reduction) a program never straddles an output channel:
    chunks are (tensor, start, end, channel), so a program's partial belongs to one channel and
    it reads one per-channel value. The cost: a channel smaller than the block leaves the rest of
    the block masked off, so a tensor of many small channels (a bias-like (4096, 3) weight) runs
    one mostly idle program per channel, up to block/channel_numel times the programs of the
    plain work list. Programs of one tensor (and of one channel) are consecutive."""

    def __init__(self, tensors: list[torch.Tensor], block: int, device, channels: bool):
        numels = [t.numel() for t in tensors]
        n_ch = [max(1, t.shape[0]) if t.dim() else 1 for t in tensors] if channels else [1] * len(tensors)
        tensor_of, starts, ends, channel_of = [], [], [], []
        ch_first = 0
        ch_programs: list[int] = []       # programs per (global) channel
        for i, (t, n) in enumerate(zip(tensors, numels)):
            cn = n // n_ch[i]
            if n == 0:   # one fully masked program, on the tensor's first channel
                per_channel = [1] + [0] * (n_ch[i] - 1)
            else:
                per_channel = [-(-cn // block)] * n_ch[i]
            for c, k in enumerate(per_channel):
                for j in range(k):
                    s = c * cn + j * block
                    tensor_of.append(i)
                    starts.append(s)
                    ends.append(min(s + block, (c + 1) * cn))
                    channel_of.append(ch_first + c)
                ch_programs.append(k)
            ch_first += n_ch[i]
        self.programs = len(tensor_of)
        self.n_tensors = len(tensors)
        self.n_channels = ch_first
        self.total_numel = float(sum(numels))
        tensor_of_t = torch.tensor(tensor_of, dtype=torch.int32)
        self.numels = torch.tensor(numels, dtype=torch.int64).to(device)
        self.tensor = tensor_of_t.to(device)
        self.start = torch.tensor(starts, dtype=torch.int64).to(device)
        self.end = torch.tensor(ends, dtype=torch.int64).to(device)
        self.channel = torch.tensor(channel_of, dtype=torch.int32).to(device)
        # the element counts `finish` divides by, per tensor and per channel
        self.count = torch.tensor(numels, dtype=torch.float32).to(device)
        channel_count = [float(n // n_ch[i]) for i, n in enumerate(numels) for _ in range(n_ch[i])]
        self.channel_count = torch.tensor(channel_count, dtype=torch.float32).to(device)
        # gather indices for the combine: row s lists segment s's programs, padded with
        # `programs` (the identity column of the partials buffer)
        per_tensor = torch.bincount(tensor_of_t.long(), minlength=len(tensors))
        self.tensor_index = _segments(per_tensor, self.programs).to(device)
        self.channel_index = _segments(torch.tensor(ch_programs, dtype=torch.int64), self.programs).to(device) \
            if channels else None


def _segments(counts: torch.Tensor, programs: int) -> torch.Tensor:
    """[segments, max count] program ids of consecutive segments, padded with `programs`.
    (Memory: segments x the largest segment's programs; a tree combine would bound it for very
    skewed sizes.)"""
    width = max(1, int(counts.max())) if counts.numel() else 1
    first = torch.cumsum(counts, 0) - counts
    j = torch.arange(width, dtype=torch.int64)
    index = first[:, None] + j[None, :]
    return torch.where(j[None, :] < counts[:, None], index, torch.full_like(index, programs))


def work(tensors: list[torch.Tensor], block: int, device, channels: bool) -> Work:
    """The phased work list: cached while the tensors are the same (so a replayed step copies nothing)."""
    key = ("work", tuple((t.data_ptr(), tuple(t.shape)) for t in tensors), block, str(device), channels)
    return _cached(key, lambda: Work(tensors, block, device, channels))


class Run:
    """One bucket of a phased step: its views, work list, pointer tables and value tables."""

    def __init__(self, index, device, block, view, copies, work_: Work, ptrs, table, n_tensor_values,
                 n_channel_values, n_scalar_states, one_row=False, aligned=False):
        self.index, self.device, self.block, self.view, self.copies = index, device, block, view, copies
        self.work, self.ptrs, self.table = work_, ptrs, table
        self.one_row, self.aligned = one_row, aligned   # the kernels' _ONE_ROW and _ALIGNED
        f32 = dict(dtype=torch.float32, device=device)
        # combined reductions the phases read: one row per reduction, one column per tensor / channel
        self.reduced = torch.zeros((max(1, n_tensor_values), work_.n_tensors), **f32)
        self.reduced_channel = torch.zeros((max(1, n_channel_values), work_.n_channels), **f32)
        # the final phase's new device scalar states, written by each tensor's first program
        self.scalar_out = torch.zeros((max(1, n_scalar_states), work_.n_tensors), **f32)
        self.partials = self.scalar_out   # replaced per phase by new_partials
        self.rounding_seeds = rounding_seeds(index, device)   # the same for every phase of the step

    def new_partials(self, n_sinks: int) -> torch.Tensor:
        """[sinks, programs + 1]: one partial per program, then the fold's identity (0: sums, and
        maxima of |x|, the only max folds) that padded gathers read."""
        self.partials = torch.zeros((max(1, n_sinks), self.work.programs + 1), dtype=torch.float32, device=self.device)
        return self.partials


def _fold(x: torch.Tensor, fold: str, dim: int) -> torch.Tensor:
    return x.sum(dim) if fold == "sum" else x.amax(dim)


def combine(runs: list[Run], sinks) -> None:
    """Join a phase's partials into the values later phases read: THE one place where partials
    are combined. `sinks`: per reduction of the phase, (row in `partials`, slot in its value
    table, scope, fold, finish), finish(raw, count) -> value (optdsl.builtins.REDUCTIONS).

    Fixed-order torch ops only (no float atomics, no index_add_): each tensor's (channel's)
    partials are gathered into a padded [segments, max programs] layout, padded with the fold's
    identity, and folded along dim 1; a group-scope value folds the per-tensor raw values of every
    bucket of the group, in bucket order, and is finished with the group's total element count.
    Bit-identical run to run; nothing is read back to the host.

    A param group partitioned across ranks (`partitioned=True`, ZeRO) joins the group's raw value
    and count over the ranks before `finish`; DTensor shards (FSDP2) join the per-tensor and the
    group's raw values and counts over the mesh (optdsl.distributed). Per-channel values need no
    join: a Shard(0) placement keeps every output channel on one rank."""
    COMBINES[0] += 1
    for row, slot, scope, fold, finish in sinks:
        if scope == "channel":
            for run in runs:
                raw = _fold(run.partials[row][run.work.channel_index], fold, 1)
                run.reduced_channel[slot].copy_(finish(raw, run.work.channel_count))
            continue
        raws = [_fold(run.partials[row][run.work.tensor_index], fold, 1) for run in runs]
        if scope == "tensor":
            for run, raw in zip(runs, raws):
                raw, count = per_tensor_across_shards(raw, fold, run.work.count)
                run.reduced[slot].copy_(finish(raw, count))
        else:   # group: one value for every tensor of the group
            raw = _fold(torch.cat([r.to(runs[0].device) for r in raws]), fold, 0)
            raw, count = raw_across_ranks(raw, fold, sum(run.work.total_numel for run in runs))
            value = finish(raw, count)
            for run in runs:
                run.reduced[slot].copy_(value.to(run.device).expand(run.work.n_tensors))


def write_scalar_states(run: Run, states: list[list]) -> None:
    """After the final launch: the new device scalar states (row k of scalar_out: the k-th state's
    list) copied into their 0-d tensors with one foreach copy each; no .item()."""
    for k, tensors in enumerate(states):
        chosen = [tensors[i] for i in run.index]
        if not chosen or chosen[0] is None:
            continue
        torch._foreach_copy_(chosen, list(run.scalar_out[k].unbind(0)))
