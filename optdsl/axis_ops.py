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
