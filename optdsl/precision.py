"""Precision as an option of any spec: low-precision state, and stochastic rounding.

* `state_dtype=torch.bfloat16` (or float16) stores every elementwise state of a real floating
  parameter in that dtype; scalar states and `step` stay float32. The math stays in float32: the
  fused kernel loads every stream into fp32 registers and rounds once at the store; the eager
  paths run the update on float32 working copies of the low-precision tensors and round them
  back once at the end of the step (a transient fp32 copy of one group's low-precision tensors).
* `stochastic_rounding=True` rounds every bfloat16 tensor the step writes (params and states) to
  one of its two bf16 neighbours with probability proportional to nearness, so the rounding is
  unbiased: E[round(x)] = x, and updates smaller than half a bf16 ulp are not lost. Its random
  bits come from `rounding_seed`, the group's rounding step count and the tensor's place in the
  group, so a run is reproducible from the seed (and from a checkpoint, which holds the count).
  float16 tensors round to nearest. The fused Triton kernel rounds in its stores (no working
  copies, no extra pass over memory: optdsl.triton_lib.store_stream, random bits from Philox
  keyed by a per-tensor seed and counted by the element's offset in its tensor, so they do not
  depend on the block size or the work list). The eager paths and the fused C++ backend step on
  float32 working copies and round them at the end of the step, with torch.Generator bits. The
  rounding rule is the same on every path; the random bits are not (a fused run and an eager run
  from one seed agree in distribution, not in bits), but each path is reproducible from the seed.

Without either option nothing changes: low-precision params and their states compute as
torch.optim's do."""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor

LOW = (torch.bfloat16, torch.float16)
STATE_DTYPES = (None, torch.float32, torch.float64, torch.bfloat16, torch.float16)
ROUNDING_STEP = "rounding_step"   # the group key counting stochastic-rounding steps (checkpointed)


def check_options(name: str, state_dtype, stochastic_rounding, rounding_seed) -> None:
    if state_dtype not in STATE_DTYPES:
        raise ValueError(f"{name}: state_dtype must be None or one of torch.float32, torch.float64, "
                         f"torch.bfloat16, torch.float16; got {state_dtype!r}")
    if not isinstance(stochastic_rounding, bool):
        raise ValueError(f"{name}: stochastic_rounding must be a bool, got {stochastic_rounding!r}")
    if not isinstance(rounding_seed, int) or isinstance(rounding_seed, bool) or rounding_seed < 0:
        raise ValueError(f"{name}: rounding_seed must be a non-negative int, got {rounding_seed!r}")


def state_dtype_of(p: Tensor, group) -> torch.dtype:
    """The dtype of an elementwise state of `p`: the group's state_dtype for a real floating
    parameter, else the parameter's own (complex parameters keep theirs)."""
    wanted = group.get("state_dtype")
    if wanted is None or not p.is_floating_point():
        return p.dtype
    return wanted


def stochastic_round(x: Tensor, generator: torch.Generator) -> Tensor:
    """float32 `x` rounded to bfloat16 stochastically: a uniform 16-bit integer added to the low
    half of the bit pattern, then truncated. On the magnitude bits that rounds away from zero with
    probability (|x| - |lower neighbour|) / ulp, for either sign; inf stays inf, NaN stays NaN."""
    bits = x.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, x.shape, dtype=torch.int32, device=x.device, generator=generator)
    rounded = ((bits + noise) & -65536).view(torch.float32)
    return torch.where(torch.isnan(x), x, rounded).to(torch.bfloat16)


def _fp32(t: Tensor) -> Tensor:
    return t.float() if t.dtype in LOW else t


class WorkingCopies:
    """A group's low-precision tensors as float32 copies for one step, rounded back after it."""

    def __init__(self, group, params, grads, lists: dict[str, list]):
        self.group = group
        self.sr = bool(group.get("stochastic_rounding"))
        self.originals = {"param": params, **lists}
        self.params = [_fp32(p) for p in params]
        self.grads = [_fp32(g) for g in grads]
        # a cover state (one accumulator per dim) is a list of tensors per param
        self.lists = {name: [None if t is None else [_fp32(a) for a in t] if isinstance(t, list) else _fp32(t)
                             for t in ts] for name, ts in lists.items()}
        self.state_dtypes = {name: [state_dtype_of(p, group) for p in params] for name in lists}

    def _generator(self, device, k: int, i: int) -> torch.Generator:
        seed = (self.group.get("rounding_seed", 0) * 1_000_003 + self.group[ROUNDING_STEP]) * 1_000_033 + k * 65_537 + i
        return torch.Generator(device=device).manual_seed(seed % (1 << 63))

    def _round_into(self, dst: Tensor, src: Tensor, k: int, i: int) -> None:
        if src is dst:
            return
        if self.sr and dst.dtype == torch.bfloat16:
            dst.copy_(stochastic_round(src, self._generator(src.device, k, i)))
        else:
            dst.copy_(src)

    def write_back(self) -> None:
        """Round every float32 copy into its low-precision tensor; a state the step created (an
        `empty` state's first store) takes its state dtype."""
        if self.sr:
            self.group[ROUNDING_STEP] = self.group.get(ROUNDING_STEP, 0) + 1
        for k, (name, originals) in enumerate(self.originals.items()):
            copies = self.params if name == "param" else self.lists[name]
            for i, (dst, src) in enumerate(zip(originals, copies)):
                if src is None:
                    continue
                if isinstance(dst, list):   # a cover state's accumulators
                    for j, (d, c) in enumerate(zip(dst, src)):
                        self._round_into(d, c, k, i * 64 + j)
                elif dst is None:   # created by this step
                    new = torch.empty_like(src, dtype=self.state_dtypes[name][i])
                    self._round_into(new, src, k, i)
                    originals[i] = new
                else:
                    self._round_into(dst, src, k, i)


class KernelRounding:
    """A fused Triton step that rounds its bf16 stores stochastically: no copies, the tensors as
    they are. Inside `with kernel_rounding(work)` the launches read their seeds (kernel_seeds);
    write_back counts the step, as WorkingCopies does."""

    def __init__(self, group, params, grads, lists: dict[str, list]):
        self.group, self.params, self.grads, self.lists = group, params, grads, lists
        # the count this step's bits are drawn from: the one WorkingCopies rounds with
        self.step = group.get(ROUNDING_STEP, 0) + 1

    def seed(self, i: int) -> int:
        """The Philox seed of the group's i-th tensor (of those this step updates) for this step."""
        x = _mix(int(self.group.get("rounding_seed", 0)))
        x = _mix(x ^ self.step)
        return _mix(x ^ i) >> 1   # 63 bits: an int64 tensor carries it to the kernel

    def write_back(self) -> None:
        self.group[ROUNDING_STEP] = self.step


def _mix(x: int) -> int:
    # splitmix64's finaliser: nearby (seed, step, index) triples give unrelated 64-bit keys
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


_ROUNDING: list[KernelRounding] = []   # the step whose fused launches round stochastically now


@contextlib.contextmanager
def kernel_rounding(work):
    """The block a step's update runs in: where `work` is a KernelRounding, its launches round
    stochastically (the fused functions' signatures, torch.optim's, carry no such option)."""
    if not isinstance(work, KernelRounding):
        yield
        return
    _ROUNDING.append(work)
    try:
        yield
    finally:
        _ROUNDING.pop()


def kernel_seeds(index: list[int]) -> list[int] | None:
    """Per-tensor seeds of a launch over the tensors at `index`, or None outside kernel_rounding."""
    return [_ROUNDING[-1].seed(i) for i in index] if _ROUNDING else None


def working_copies(group, params, grads, lists: dict[str, list], in_kernel: bool = False, eager: bool = False):
    """How this step meets its low-precision tensors: None where nothing changes; float32
    WorkingCopies where it must do its math in fp32 on them (low-precision states from state_dtype
    on the eager paths, or stochastic rounding of a bfloat16 tensor on a path that cannot round it
    itself); a KernelRounding where the fused Triton kernel rounds stochastically in its stores
    (`in_kernel`; it upcasts low-precision states itself, as any fused path does). `eager`: an
    eager path runs even in a fused group (a train()/eval() switch, optdsl.modes)."""
    sr = bool(group.get("stochastic_rounding"))
    low_state = group.get("state_dtype") in LOW
    if not sr and not (low_state and (eager or not group.get("fused"))):
        return None
    tensors = list(params) + [a for ts in lists.values() for t in ts if t is not None
                              for a in (t if isinstance(t, list) else (t,))]
    rounds = sr and any(t.dtype == torch.bfloat16 for t in tensors)
    if rounds or low_state and any(t.dtype in LOW for t in tensors):
        group.setdefault(ROUNDING_STEP, 0)
        if in_kernel:   # without a bf16 tensor to round, the kernel's own upcast is all it takes
            return KernelRounding(group, params, grads, lists) if rounds else None
        return WorkingCopies(group, params, grads, lists)
    return None
