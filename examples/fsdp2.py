"""A generated optimizer on an FSDP2 (`fully_shard`) model, on 2 CPU processes (gloo).

    python examples/fsdp2.py

Each parameter is a DTensor sharded along dim 0; the optimizer is built on them as on any
parameters, and its state shards with them. LAMB's per-tensor trust ratio and its global
gradient norm are reductions over whole tensors: on the fused path they are all-reduced over
the shards, so training matches the unsharded run. The last layer's (1, 32) weight leaves rank 1
with no element of it."""
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

os.environ.setdefault("TRITON_INTERPRET", "1")   # the fused kernel on CPU tensors

from optdsl.optim import Lamb  # noqa: E402

WORLD = 2


def worker(rank: int, init: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    mesh = init_device_mesh("cpu", (WORLD,))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = Lamb(model.parameters(), lr=3e-2, max_grad_norm=1.0, fused=True)
    data = torch.Generator().manual_seed(1)
    for step in range(60):
        x = torch.randn(64, 16, generator=data)
        y = x.sum(1, keepdim=True)
        mine = slice(rank * 32, (rank + 1) * 32)   # this rank's half of the batch
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[mine]), y[mine])
        loss.backward()
        opt.step()
        if rank == 0 and step % 20 == 0:
            print(f"step {step:2d}  loss {loss.item():.4f}")
    shapes = [tuple(p.to_local().shape) for p in model.parameters()]
    print(f"rank {rank}: local shards {shapes}")
    dist.destroy_process_group()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(worker, args=(f"file://{os.path.join(d, 'init')}",), nprocs=WORLD)
