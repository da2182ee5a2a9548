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


def _all_reduce(x: torch.Tensor, fold: str) -> torch.Tensor:
    import torch.distributed as dist
    op = dist.ReduceOp.SUM if fold == "sum" else dist.ReduceOp.MAX
    dist.all_reduce(x, op=op)
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
    """The fused path's group fold `raw` (over `count` elements) and count, joined over the
    partition (kernel_runtime.combine calls it before `finish`)."""
    if not _PARTITION[0]:
        return raw, count
    joined_raw = _all_reduce(raw.clone(), fold)
    total = _all_reduce(torch.tensor(float(count), dtype=torch.float64, device=raw.device), "sum")
    return joined_raw, float(total)


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
