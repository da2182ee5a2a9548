"""Whole-matrix ops: a value read as one 2-D matrix, not element by element.

`newton_schulz(x, a, b, c, steps, eps)` is Muon's orthogonalization as torch.optim.Muon computes it:
in bfloat16, on the wide orientation (a tall matrix is transposed first and back after), scaled to a
Frobenius norm of at most 1 (the norm clamped below at eps), then `steps` quintic iterations
X <- a X + (b A + c A A) X with A = X X^T. The result is returned in x's dtype; bfloat16 widens to
float32 and float64 exactly, so what follows reads torch's values. The eager paths call it per
tensor; the interpreter's float64 form, `newton_schulz_float64`, is its oracle."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

MAX_STEPS = 100   # torch.optim.Muon's bound


def check_steps(steps) -> int:
    if steps != int(steps) or steps < 0:
        raise ValueError(f"newton_schulz() takes a whole, non-negative number of steps, not {steps}")
    if steps >= MAX_STEPS:   # torch.optim.Muon's message
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    return int(steps)


def _check_matrix(shape) -> None:
    if len(shape) != 2:
        raise ValueError(f"newton_schulz() orthogonalizes a 2-D matrix, not a tensor of shape {tuple(shape)}")


def newton_schulz(x: Tensor, a: float, b: float, c: float, steps, eps: float) -> Tensor:
    _check_matrix(x.shape)
    steps = check_steps(steps)
    tall = x.size(0) > x.size(1)
    m = x.bfloat16()
    if tall:
        m = m.T
    m = m / m.norm().clamp(min=eps)
    for _ in range(steps):
        gram = m @ m.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        m = torch.addmm(m, poly, m, beta=a)
    if tall:
        m = m.T
    return m.to(x.dtype)


def newton_schulz_float64(x, a, b, c, steps, eps):
    """The same iteration in float64 (NumPy): what the bfloat16 one approximates."""
    x = np.asarray(x, dtype=np.float64)
    _check_matrix(x.shape)
    steps = check_steps(steps)
    tall = x.shape[0] > x.shape[1]
    m = x.T if tall else x
    m = m / max(float(np.sqrt(np.sum(m * m))), float(eps))
    for _ in range(steps):
        gram = m @ m.T
        m = a * m + (b * gram + c * (gram @ gram)) @ m
    return m.T if tall else m


def no_host_matrix_op():
    raise AssertionError("a whole-matrix op has no host form: the checker keeps it elementwise")
