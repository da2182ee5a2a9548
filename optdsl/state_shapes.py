"""Per-tensor facts of a parameter's shape (numel, ndim, size(d), dtype_eps), and the states that
depend on it: those kept only where the shape allows (`state v = zeros if ndim < 2`) and those
kept per row or per column (`state row_var : row = zeros`)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .axis_ops import cover_shapes, reduced_shape
from .ir import dim_size, size_dim


def shape_input(params: list[Tensor], what: str, real_view: bool = True) -> list[int]:
    """numel, ndim or channel_numel of each parameter as the update sees it (a complex parameter
    as its real view, as every path computes on it; `real_view=False`: as torch.optim's argument
    checks see it, the complex shape itself)."""
    out = []
    for p in params:
        shape = tuple(p.shape) + ((2,) if torch.is_complex(p) and real_view else ())
        numel = math.prod(shape)
        if what == "numel":
            out.append(numel)
        elif what == "ndim":
            out.append(len(shape))
        elif what.startswith("_size"):
            out.append(dim_size(shape, size_dim(what)))
        elif what == "dtype_eps":
            out.append(dtype_eps(p))
        else:
            out.append(numel // shape[0] if shape and shape[0] else (numel if not shape else 0))
    return out


def size(x: Tensor, d: int) -> int:
    """x's size along dim d; 1 past its last dim (d >= 0) or before its first (d < 0)."""
    return dim_size(tuple(x.shape), d)


def dtype_eps(x: Tensor) -> float:
    """The machine epsilon of x's (real) dtype: torch.finfo(dtype).eps."""
    return torch.finfo(x.dtype).eps


def channel_numel(x: Tensor) -> int:
    return x.numel() // x.shape[0] if x.dim() and x.shape[0] else (x.numel() if not x.dim() else 0)



class PerTensor:
    """A state kept only on the tensors whose shape satisfies its condition: `init` is how it starts
    there; `holds(*inputs)` decides from the shape inputs named in `inputs` (numel, ndim, _size1, ...)."""
    __slots__ = ("init", "holds", "inputs")

    def __init__(self, init, holds, inputs: tuple[str, ...]):
        self.init, self.holds, self.inputs = init, holds, inputs

    def kept_by(self, p: Tensor) -> bool:
        return bool(self.holds(*(shape_input([p], name)[0] for name in self.inputs)))


def new_shaped_state(kind, p: Tensor, axis: str, dtype: torch.dtype) -> Tensor | list[Tensor]:
    """A `row` or `column` state of p: its last (second-to-last) dim reduced to 1, starting at zeros
    or at a number (`kind`: "zeros" or ("fill", value)); a `cover` state: new_cover_state."""
    if axis == "cover":
        return new_cover_state(kind, p, dtype)
    shape = reduced_shape(tuple(p.shape), axis)
    if kind == "zeros":
        return p.new_zeros(shape, dtype=dtype)
    return p.new_full(shape, float(kind[1]), dtype=dtype)


def cover_keys(name: str, p: Tensor) -> list[str]:
    """The state_dict keys of cover state `name` of p: one per dim, `name_0`, `name_1`, ... (one for a 0-d p)."""
    return [f"{name}_{i}" for i in range(max(p.dim(), 1))]


def new_cover_state(kind, p: Tensor, dtype: torch.dtype) -> list[Tensor]:
    """A `cover` state of p: for each dim i, one value per index along i (shape [1]*i + [n_i] + [1]*...),
    starting at zeros or at a number (`kind`: "zeros" or ("fill", value))."""
    fill = 0.0 if kind == "zeros" else float(kind[1])
    return [p.new_full(shape, fill, dtype=dtype) for shape in cover_shapes(tuple(p.shape))]


def kept_state(state: dict, key: str, shape: str, p: Tensor):
    """What a param's state dict keeps of a spec state (storage key `key`, annotation `shape`): its
    tensor, or a cover's list of accumulators (`key_0`, `key_1`, ...); None where it has none."""
    if shape != "cover":
        return state.get(key)
    keys = cover_keys(key, p)
    return [state[k] for k in keys] if keys[0] in state else None


def make_cover(state: dict, name: str, p: Tensor, new) -> bool | None:
    """_init_group's part for cover state `name` of p: its accumulators made where `new()` (None: the
    state is off for p) makes them and p has none yet. True where p keeps it (step() then reads the
    list, cover_lists), None where not: under torch.compile, dynamo runs _init_group eagerly and
    cannot take lists of new tensors back out of it."""
    if new is None:
        return None
    keys = cover_keys(name, p)
    if keys[0] not in state:
        for key, accumulator in zip(keys, new()):
            state[key] = accumulator
    return True


def cover_lists(states, name: str, params: list[Tensor], kept: list) -> list:
    """Each param's list of accumulators of cover state `name` (None where it keeps none)."""
    return [None if k is None else kept_state(states[p], name, "cover", p) for p, k in zip(params, kept)]
