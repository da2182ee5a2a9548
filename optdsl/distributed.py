"""Group-scope reductions over a param group that is partitioned across ranks.

Under `torch.distributed.optim.ZeroRedundancyOptimizer` each rank's optimizer holds a slice of
every param group. Elementwise and per-tensor math are exact there without any help (each tensor
lives whole on one rank), but a group reduction (`norm(grad, group)`: LAMB's global clipping) must
see every tensor of the group, on every rank. Built with `partitioned=True` (ZeRO passes it on:
`ZeroRedundancyOptimizer(params, optimizer_class=Lamb, partitioned=True, lr=...)`), the generated
optimizer all-reduces each group reduction over the default process group (ZeRO's default) at the
one point the eager paths and the fused path combine it; nothing else communicates. (A flag, not a
process group: ZeRO copies its keyword arguments into every param group, and a state_dict holding
a process group could not be saved.) The join is
torch.distributed's own all_reduce: no communication layer of ours.

A value is joined through its raw fold (a sum of squares for `norm`, a sum for `mean`, a maximum
for `amax`) and the element count, then finished again, so the result is the group's value up to
rounding (the ranks' partial sums are added in rank order, not tensor order)."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from .ir import REDUCE

# op name -> (raw(value, n): the local fold from the local value, fold, finish(raw, n))
RANK_JOIN: dict[str, tuple[Callable, str, Callable]] = {
    "sum": (lambda v, n: v, "sum", lambda r, n: r),
    "dot": (lambda v, n: v, "sum", lambda r, n: r),
    "mean": (lambda v, n: v * n, "sum", lambda r, n: r / n),
    "norm": (lambda v, n: v * v, "sum", lambda r, n: torch.sqrt(r)),
    "rms": (lambda v, n: v * v * n, "sum", lambda r, n: torch.sqrt(r / n)),
    "amax": (lambda v, n: v, "max", lambda r, n: r),
}
assert set(RANK_JOIN) == {op.name.lower() for op in REDUCE}, "every reduction joins across ranks"

_PARTITION: list = [False]   # whether the optimizer whose step is running is partitioned


@contextlib.contextmanager
def partitioned(flag: bool):
    """While an optimizer built with `partitioned=True` steps, its group reductions join across ranks."""
    outer = _PARTITION[0]
    _PARTITION[0] = flag
    try:
        yield
    finally:
        _PARTITION[0] = outer


def _all_reduce(x: torch.Tensor, fold: str, groups=(None,)) -> torch.Tensor:
    """x joined in place by `fold` over each process group in turn (None: the default group)."""
    import torch.distributed as dist
    op = dist.ReduceOp.SUM if fold == "sum" else dist.ReduceOp.MAX
    for group in groups:
        dist.all_reduce(x, op=op, group=group)
    return x


def across_ranks(value: torch.Tensor, op: str, n) -> torch.Tensor:
    """The eager paths' group value `value` (over this rank's `n` elements) joined over the
    partition; `value` itself when the optimizer is not partitioned."""
    if not _PARTITION[0]:
        return value
    raw_of, fold, finish = RANK_JOIN[op]
    # gloo all-reduces 0-d tensors; one [raw, n] vector keeps it one collective per reduction
    local = torch.stack([raw_of(value.double(), float(n)), torch.tensor(float(n), dtype=torch.float64,
                                                                         device=value.device)])
    if fold == "sum":
        joined = _all_reduce(local, "sum")
    else:
        joined = torch.stack([_all_reduce(local[0].clone(), "max"), _all_reduce(local[1].clone(), "sum")])
    return finish(joined[0], joined[1]).to(value.dtype)


def raw_across_ranks(raw: torch.Tensor, fold: str, count: float) -> tuple[torch.Tensor, float]:
    """The fused path's group fold `raw` (over `count` elements) and count, joined over the ranks
    a ZeRO partition spans, or over the shards of FSDP2's DTensors (kernel_runtime.combine calls
    it before `finish`)."""
    groups = (None,) if _PARTITION[0] else _SHARDS[0]
    if groups is None:
        return raw, count
    total = torch.tensor(float(count), dtype=torch.float64, device=raw.device)
    return _all_reduce(raw.clone(), fold, groups), float(_all_reduce(total, "sum", groups))


def check_partition(opt) -> None:
    """`partitioned=True` needs an initialised process group and a share of every param group on
    this rank: a rank with none would skip the step while the others wait in its all-reduce."""
    import torch.distributed as dist
    name = type(opt).__name__
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(f"{name}: partitioned=True needs torch.distributed to be initialised "
                           "(torch.distributed.init_process_group)")
    for k, group in enumerate(opt.param_groups):
        if not group["params"]:
            raise ValueError(f"{name}: param group {k} has no parameters on rank "
                             f"{dist.get_rank()}; with partitioned=True every rank needs a "
                             "share of every group (give ZeroRedundancyOptimizer fewer ranks or more parameters)")


# ---- FSDP2: the fused path on each rank's local shard -----------------------------------------
#
# FSDP2 (`fully_shard`) makes every parameter a DTensor sharded along dim 0 over a device mesh.
# The eager paths need nothing: torch ops and torch._foreach_* ops run on DTensors, and a
# reduction's Partial result is all-reduced by DTensor itself. The fused kernel reads raw
# pointers, so it runs on each rank's local shard (`to_local()`), and its per-tensor and group
# partial folds are all-reduced over the mesh's shard dims at the combine, with the element
# counts (a rank may hold no element of a tensor: its fold is the identity). Per-channel values
# need no join: a Shard(0) placement never splits an output channel.

_SHARDS: list = [None]   # the process groups the running fused step's tensors are sharded over


def _shard_groups(params) -> list | None:
    from torch.distributed.tensor import DTensor
    dtensors = [issubclass(k, DTensor) for k in set(map(type, params))]   # C-level: thousands of params
    if not any(dtensors):
        return None
    if not all(dtensors):
        raise RuntimeError("fused=True: a param group mixes DTensor and plain tensor parameters; "
                           "shard every parameter of the group (fully_shard) or none")
    mesh, placements = params[0].device_mesh, params[0].placements
    for p in params:
        if p.device_mesh != mesh or p.placements != placements:
            raise RuntimeError("fused=True: the parameters of a group are sharded over different meshes "
                               f"or placements ({p.placements} vs {placements}); give each its own param group")
    groups = []
    for dim, placement in enumerate(placements):
        if placement.is_shard():
            if placement.dim != 0:
                raise RuntimeError(f"fused=True runs on Shard(0) and Replicate placements (FSDP2's); got {placement}")
            groups.append(mesh.get_group(dim))
        elif not placement.is_replicate():
            raise RuntimeError(f"fused=True: parameters with a {placement} placement are not supported")
    return groups


def launch_on_shards(launch, params, grads, states: dict, inputs, hypers, capturable=False):
    """Run a fused kernel module's `launch` on the local shards of DTensor parameters (FSDP2), or
    on the tensors themselves. Shape inputs (`numel`, `size(d)`) were read off the global
    parameters by the caller; a state the kernel allocates is wrapped back into a DTensor."""
    groups = _shard_groups(params)
    if groups is None:
        return launch(params, grads, states, inputs, hypers, capturable=capturable)
    from torch.distributed.tensor import DTensor

    def local(ts):
        return [t.to_local() if isinstance(t, DTensor) else t for t in ts]
    local_states = {name: local(ts) for name, ts in states.items()}
    outer = _SHARDS[0]
    _SHARDS[0] = groups
    try:
        out = launch(local(params), local(grads), local_states, inputs, hypers, capturable=capturable)
    finally:
        _SHARDS[0] = outer
    for name, ts in states.items():
        for i, t in enumerate(ts):
            if t is None and local_states[name][i] is not None:   # an `empty` state's first store
                p = params[i]
                ts[i] = DTensor.from_local(local_states[name][i], p.device_mesh, p.placements,
                                           shape=p.shape, stride=p.stride())
    return out


def is_dtensor(x) -> bool:
    from torch.distributed.tensor import DTensor
    return isinstance(x, DTensor)


def dtensor_amax(x) -> torch.Tensor:
    """max |x| of a DTensor whose shard on this rank may hold no element (where torch's inf norm
    raises): each shard's maximum, 0 for none (|x| >= 0), joined by DTensor as a Partial max."""
    from torch.distributed.tensor import DTensor, Replicate
    from torch.distributed.tensor.placement_types import Partial
    local = x.to_local()
    part = torch.linalg.vector_norm(local, float("inf")) if local.numel() else local.new_zeros(())
    placements = [Partial("max") if pl.is_shard() else pl for pl in x.placements]
    return DTensor.from_local(part, x.device_mesh, placements).redistribute(
        x.device_mesh, [Replicate()] * x.device_mesh.ndim)


def replicated_like(scalar: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A device scalar state of a DTensor parameter: a DTensor replicated over its mesh, so that
    the eager paths' DTensor math (a reduction's value times the state) stays in DTensors."""
    from torch.distributed.tensor import DTensor, Replicate
    if not isinstance(p, DTensor):
        return scalar
    return DTensor.from_local(scalar, p.device_mesh, [Replicate()] * p.device_mesh.ndim)


def foreach_copy_(dst: list, src: list) -> None:
    """torch._foreach_copy_, which DTensor has no sharding rule for: FSDP2's states copy one by one."""
    from torch.distributed.tensor import DTensor
    if dst and isinstance(dst[0], DTensor):
        for d, s in zip(dst, src):
            d.copy_(s)
    else:
        torch._foreach_copy_(dst, src)


def per_tensor_across_shards(raw: torch.Tensor, fold: str, count: torch.Tensor):
    """The fused path's per-tensor folds (one per tensor of a bucket) and element counts, joined
    over the shards of each tensor (FSDP2); unchanged for plain tensors."""
    if _SHARDS[0] is None:
        return raw, count
    return _all_reduce(raw.clone(), fold, _SHARDS[0]), _all_reduce(count.clone(), "sum", _SHARDS[0])
