"""What the tests of specs beyond elementwise (tests/test_factored.py, test_sm3.py, test_muon.py)
share: params of several ranks, seeded gradients, a run of steps, state compared key by key, and a
param that looks like a DTensor shard (what the runtime checks of one: its placements)."""
from __future__ import annotations

import torch


def make_params(shapes, dtype=torch.float32, seed=1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype).requires_grad_() for s in shapes]


def set_grads(params, step: int) -> None:
    """The gradients of step `step`: the same for every run, in each param's dtype."""
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)


def run(opt, params, steps: int, start: int = 0) -> None:
    for k in range(start, start + steps):
        set_grads(params, k)
        opt.step()


def assert_same_state(ref, ours, a, b) -> None:
    """Params equal, and the same state keys with equal tensors of the same shapes."""
    for x, y in zip(a, b):
        assert torch.equal(x, y)
        assert ref.state[x].keys() == ours.state[y].keys()
        for k, v in ref.state[x].items():
            assert v.shape == ours.state[y][k].shape and torch.equal(v, ours.state[y][k]), k


class Sharded(torch.Tensor):
    placements = ()


def dtensor_like(*shape: int) -> torch.Tensor:
    """A param with a gradient that the runtime takes for a DTensor shard."""
    p = torch.randn(*shape).as_subclass(Sharded).requires_grad_()
    p.grad = torch.randn(*shape)
    return p
