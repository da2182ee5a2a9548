"""The interpreter's reductions along an axis and per dim, and the states they feed.

`row` and `column` (`state v : row`, `mean(x, row)`): folded along dim -1 or -2, the dim kept;
a state holds the param's shape with that dim reduced to 1 (reduce_to).

Covers (`state v : cover`, `amax(x, cover)`: one accumulator per dim, SM3's): the interpreter
holds a cover as one float64 array with a leading axis, one entry per accumulator, each broadcast
back to the param's shape, so math on covers is numpy's elementwise math and a cover read
elementwise (cover_min) is the min over that axis. The backends keep accumulator i in shape
[1]*i + [n_i] + [1]*...; cover_stack and cover_split convert."""
from __future__ import annotations

import numpy as np


def _norm(x):
    return x[()] if isinstance(x, np.ndarray) and x.ndim == 0 else x


def _axis(scope: str, shape: tuple) -> int | None:
    """The dim a `row` (-1) or `column` (-2) reduction folds, or None where the tensor has none (one
    element per row or column: a size-1 dim, as broadcasting reads it)."""
    d = -1 if scope == "row" else -2
    return d if len(shape) >= -d else None


def axis_fold(fold, v, shape: tuple, scope: str):
    """fold(values, axis) along a `row` or `column` scope's dim of v (broadcast to `shape`), the dim kept."""
    v = np.broadcast_to(np.asarray(v), shape)
    d = _axis(scope, shape)
    if d is None:
        return _norm(np.asarray(fold(np.expand_dims(v, -1), -1)))
    return _norm(np.expand_dims(fold(v, d), d))


def reduce_to(v, shape: tuple, axis: str):
    """v (broadcast to the param's `shape`, constant along `axis`'s dim: the checker's rule) as a
    `row` or `column` state of that param holds it."""
    v = np.broadcast_to(np.asarray(v), shape)
    d = _axis(axis, shape)
    return v if d is None else np.take(v, [0], axis=d)


def cover_counts(shape: tuple):
    """Elements each accumulator of a cover of a param of `shape` folds (those of the other dims), as
    an array broadcast against the stacked cover."""
    numel = int(np.prod(shape, dtype=np.int64))
    return np.array([numel // n if n else 0 for n in shape] or [1], dtype=np.int64).reshape((-1,) + (1,) * len(shape))


def cover_fold(fold, v, shape: tuple):
    """fold(values, axes) over all dims but i, for each dim i of v (broadcast to `shape`): each
    accumulator broadcast back to `shape`, stacked on a leading axis, as the interpreter holds a
    cover (a 0-d tensor: one accumulator, its one element folded)."""
    v = np.broadcast_to(np.asarray(v), shape)
    r = len(shape)
    if r == 0:
        return np.asarray(fold(v.reshape(1), 0)).reshape(1)
    out = []
    for i in range(r):
        dims = tuple(d for d in range(r) if d != i)
        x = fold(np.expand_dims(v, -1), -1) if not dims else fold(v, dims)
        out.append(np.broadcast_to(np.reshape(x, (1,) * i + (shape[i],) + (1,) * (r - 1 - i)), shape))
    return _norm(np.stack(out))


def stacked_shape(shape: tuple) -> tuple:
    """The shape the interpreter holds a cover of a param of `shape` in: one entry per accumulator."""
    return (max(len(shape), 1), *shape)


def cover_stack(accumulators, shape: tuple):
    """A cover state's accumulators (a backend's, shape [1]*i + [n_i] + [1]*...) as the interpreter holds it."""
    return np.stack([np.broadcast_to(np.asarray(a, dtype=np.float64), shape) for a in accumulators])


def cover_split(stacked, shape: tuple) -> list:
    """The interpreter's cover as a backend keeps it: accumulator i of shape [1]*i + [n_i] + [1]*...."""
    stacked = np.asarray(stacked)
    if not shape:
        return [stacked.reshape(())]
    r = len(shape)
    return [stacked[i][tuple(slice(None) if d == i else slice(0, 1) for d in range(r))] for i in range(r)]
