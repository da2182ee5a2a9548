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
  float16 tensors round to nearest. With it, every path steps on float32 working copies and
  rounds them at the end of the step (the fused path too: its kernel rounds to nearest).

Without either option nothing changes: low-precision params and their states compute as
torch.optim's do."""
from __future__ import annotations

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
        self.lists = {name: [None if t is None else _fp32(t) for t in ts] for name, ts in lists.items()}
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
                if dst is None:   # created by this step
                    new = torch.empty_like(src, dtype=self.state_dtypes[name][i])
                    self._round_into(new, src, k, i)
                    originals[i] = new
                else:
                    self._round_into(dst, src, k, i)


def working_copies(group, params, grads, lists: dict[str, list]) -> WorkingCopies | None:
    """Float32 working copies where this step must do its math in fp32 on low-precision tensors:
    low-precision states from state_dtype on the eager paths (the fused kernel upcasts itself),
    or stochastic rounding of a bfloat16 tensor on any path. None where nothing changes."""
    sr = bool(group.get("stochastic_rounding"))
    low_state = group.get("state_dtype") in LOW
    if not sr and not (low_state and not group.get("fused")):
        return None
    tensors = list(params) + [t for ts in lists.values() for t in ts if t is not None]
    if sr and any(t.dtype == torch.bfloat16 for t in tensors) or low_state and any(t.dtype in LOW for t in tensors):
        group.setdefault(ROUNDING_STEP, 0)
        return WorkingCopies(group, params, grads, lists)
    return None
