"""The tensor mixes and sizes of `optdsl bench --gpu` (optdsl/bench_gpu.py), at the GPU run's scale
and at the smoke run's: the same generators, smaller numbers."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Llama:
    """The parameter shapes of a Llama-architecture model (nn.Linear weights are (out, in))."""
    label: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int

    def shapes(self) -> list[tuple[int, ...]]:
        head_dim = self.hidden // self.heads
        kv = self.kv_heads * head_dim   # grouped-query attention: k and v have kv_heads heads
        out = [(self.vocab, self.hidden)]                                  # token embeddings
        for _ in range(self.layers):
            out += [(self.hidden, self.hidden), (kv, self.hidden), (kv, self.hidden), (self.hidden, self.hidden)]  # q k v o
            out += [(self.intermediate, self.hidden), (self.intermediate, self.hidden), (self.hidden, self.intermediate)]  # gate up down
            out += [(self.hidden,), (self.hidden,)]                         # input and post-attention RMSNorm
        out += [(self.hidden,), (self.vocab, self.hidden)]                  # final norm, lm_head (not tied)
        return out


# TinyLlama-1.1B: 22 layers x 9 tensors + embeddings, final norm, lm_head = 201 tensors, 1.1e9 elements
TINYLLAMA = Llama("TinyLlama-1.1B", hidden=2048, intermediate=5632, layers=22, heads=32, kv_heads=4, vocab=32000)


@dataclass(frozen=True)
class Scale:
    name: str
    single_exponents: tuple[int, ...]   # one tensor of 2^k elements per mix
    llama: Llama
    many: tuple[int, int, int]          # (count, smallest, largest): uniform sizes
    odd: tuple[int, int, int]           # (count, smallest, largest): log-uniform odd sizes
    flush_bytes: int                    # written before every timed step (more than L2)
    copy_bytes: int                     # the copy_ ceiling's tensor
    stream_elements: int                # the stream ceiling's buffers (4 of them, fp32)
    iters: int                          # timed steps per contender (median)
    rounds: int                         # alternating rounds they are split into
    error_steps: int                    # steps before the error against the reference
    compile_max_tensors: int | None     # mixes with more tensors skip the torch.compile contender


SCALES = {
    "gpu": Scale("gpu", single_exponents=(12, 14, 16, 18, 20, 22, 24, 26, 28), llama=TINYLLAMA,
                 many=(2000, 1, 1 << 16), odd=(500, 16, 1 << 22), flush_bytes=256 << 20,
                 copy_bytes=2 << 30, stream_elements=1 << 28, iters=50, rounds=5, error_steps=20,
                 compile_max_tensors=None),
    # in the interpreter a Triton program costs ~1 ms whatever its size: few tensors, few blocks
    # CI runs this on 2 shared cores. In the interpreter a Triton program costs 10-30 ms whatever its
    # size: few tensors, few blocks, few steps. Dynamo's trace of a torch.optim step costs 1-3 s a
    # graph there (2-3 graphs per optimizer), about 90 s for all 32 cells: the smoke run compiles
    # on the one-tensor mix only (all specs, both dtypes), and marks the other rows skipped.
    "smoke": Scale("smoke", single_exponents=(12,), llama=Llama("tiny Llama", hidden=64, intermediate=176, layers=1,
                                                         heads=4, kv_heads=1, vocab=128),
                   many=(4, 1, 1 << 12), odd=(3, 16, 1 << 12), flush_bytes=1 << 20,
                   copy_bytes=4 << 20, stream_elements=1 << 16, iters=1, rounds=1, error_steps=2,
                   compile_max_tensors=1),
}


def _uniform(count: int, lo: int, hi: int, seed: int) -> list[tuple[int, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [(int(n),) for n in torch.randint(lo, hi + 1, (count,), generator=g)]


def _log_uniform_odd(count: int, lo: int, hi: int, seed: int) -> list[tuple[int, ...]]:
    g = torch.Generator().manual_seed(seed)
    logs = torch.rand(count, generator=g, dtype=torch.float64) * (torch.log(torch.tensor(hi / lo, dtype=torch.float64)))
    sizes = (torch.exp(logs) * lo).long()
    return [(int(n) | 1,) for n in sizes]   # odd: no size a multiple of any vector width


def mixes(scale: Scale) -> dict[str, list[tuple[int, ...]]]:
    """mix name -> its tensor shapes (seeded: the same every run)."""
    out = {f"1 x 2^{k}": [(1 << k,)] for k in scale.single_exponents}
    out[f"{scale.llama.label} ({len(scale.llama.shapes())} tensors)"] = scale.llama.shapes()
    count, lo, hi = scale.many
    out[f"{count} x {lo}-{hi >> 10}K"] = _uniform(count, lo, hi, seed=1)
    count, lo, hi = scale.odd
    out[f"{count} x log-uniform odd {lo}-{hi >> 10}K"] = _log_uniform_odd(count, lo, hi, seed=2)
    return out


def mix_names(scale: Scale) -> list[str]:
    return list(mixes(scale))


def mix_shapes(mix: str, scale: Scale) -> list[tuple[int, ...]]:
    return mixes(scale)[mix]
