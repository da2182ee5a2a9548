"""The eager paths' reductions along one axis (the `row` and `column` scopes): along dim -1 or -2,
the dim kept with size 1, as torch.optim.Adafactor writes `torch.norm(grad, dim=-1, keepdim=True)`.

A tensor with fewer dims than the axis needs (a 0-d tensor for `row`, a 0-d or 1-d one for
`column`) has a size-1 dim there, as broadcasting reads it: the reduction folds one element, so
its value is that element's (|x| for norm, rms and amax). It is always a new tensor, never the
operand itself, so a later in-place store cannot change it."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _dim(x: Tensor, d: int) -> int | None:
    """The dim `d` (-1 or -2) of x, or None where x has no such dim."""
    return d if x.dim() >= -d else None


def _empty_fold(x: Tensor, dim: int, value: float) -> Tensor | None:
    if x.shape[dim] != 0:
        return None
    shape = list(x.shape)
    shape[dim] = 1
    return x.new_full(shape, value)


def axis_sum(x: Tensor, d: int) -> Tensor:
    dim = _dim(x, d)
    return torch.clone(x) if dim is None else torch.sum(x, dim=dim, keepdim=True)


def axis_mean(x: Tensor, d: int) -> Tensor:
    dim = _dim(x, d)
    return torch.clone(x) if dim is None else torch.mean(x, dim=dim, keepdim=True)


def axis_norm(x: Tensor, d: int) -> Tensor:
    dim = _dim(x, d)
    return torch.abs(x) if dim is None else torch.linalg.vector_norm(x, 2, dim=dim, keepdim=True)


def axis_rms(x: Tensor, d: int) -> Tensor:
    dim = _dim(x, d)
    if dim is None:
        return torch.abs(x)
    return torch.linalg.vector_norm(x, 2, dim=dim, keepdim=True) / math.sqrt(x.shape[dim])


def axis_amax(x: Tensor, d: int) -> Tensor:
    """max |x| along the axis: 0 where the axis has no elements (torch raises there)."""
    dim = _dim(x, d)
    if dim is None:
        return torch.abs(x)
    empty = _empty_fold(x, dim, 0.0)
    return empty if empty is not None else torch.linalg.vector_norm(x, math.inf, dim=dim, keepdim=True)


def reduced_shape(shape: tuple[int, ...], axis: str) -> tuple[int, ...]:
    """The shape of a `row` (last dim 1) or `column` (second-to-last dim 1) state of a param of `shape`:
    the param's own where it has no such dim."""
    d = -1 if axis == "row" else -2
    if len(shape) < -d:
        return tuple(shape)
    out = list(shape)
    out[d] = 1
    return tuple(out)


# ---- the `cover` scope: one accumulator per dim (SM3's) ------------------------------------------
# For each dim i, the fold over every other dim, the dims kept: shape [1]*i + [n_i] + [1]*(r-1-i). A
# 0-d tensor has one accumulator, itself folded (0-d); a 1-d one's only accumulator folds one element
# per entry. Each is a new tensor, never the operand itself.

def cover_shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The shapes of a cover state of a param of `shape`, one per dim (one 0-d for a 0-d param)."""
    r = len(shape)
    return [()] if r == 0 else [(1,) * i + (shape[i],) + (1,) * (r - 1 - i) for i in range(r)]


def _others(x: Tensor) -> list[tuple[int, ...]]:
    r = x.dim()
    return [()] if r == 0 else [tuple(d for d in range(r) if d != i) for i in range(r)]


def cover_sum(x: Tensor) -> list[Tensor]:
    return [torch.sum(x, dim=dims, keepdim=True) if dims else torch.clone(x) for dims in _others(x)]


def cover_mean(x: Tensor) -> list[Tensor]:
    return [torch.mean(x, dim=dims, keepdim=True) if dims else torch.clone(x) for dims in _others(x)]


def cover_norm(x: Tensor) -> list[Tensor]:
    return [torch.linalg.vector_norm(x, 2, dim=dims, keepdim=True) if dims else torch.abs(x) for dims in _others(x)]


def cover_rms(x: Tensor) -> list[Tensor]:
    return [torch.linalg.vector_norm(x, 2, dim=dims, keepdim=True) / math.sqrt(math.prod(x.shape[d] for d in dims))
            if dims else torch.abs(x) for dims in _others(x)]


def cover_amax(x: Tensor) -> list[Tensor]:
    """max |x| over every other dim, per dim: 0 where those dims hold no elements."""
    out = []
    for i, dims in enumerate(_others(x)):
        if not dims:
            out.append(torch.abs(x))
        elif x.numel() == 0:
            out.append(x.new_zeros(cover_shapes(tuple(x.shape))[i]))
        else:
            out.append(torch.linalg.vector_norm(x, math.inf, dim=dims, keepdim=True))
    return out


def cover_min(accumulators: list[Tensor]) -> Tensor:
    """A cover read elementwise: the min over its accumulators, broadcast to the param's shape (SM3's
    estimate, in its order: the first accumulator copied, then each next one's minimum)."""
    out = torch.clone(accumulators[0])
    for a in accumulators[1:]:
        out = torch.minimum(out, a)
    return out


def stored_shapes(shape: tuple[int, ...], state_shape: str) -> list[tuple[int, ...]]:
    """The shapes of the tensors a state of a param of `shape` keeps: its own ("": elementwise), the
    reduced one of a `row` or `column` state, or one per dim of a `cover` state."""
    if state_shape == "cover":
        return cover_shapes(tuple(shape))
    return [reduced_shape(tuple(shape), state_shape) if state_shape else tuple(shape)]
