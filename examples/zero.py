"""A generated optimizer under DDP and ZeroRedundancyOptimizer, on 2 CPU processes (gloo).

    python examples/zero.py

Each rank trains a small model on its half of every batch (DDP averages the gradients), and
the optimizer's state is sharded over the ranks (ZeRO-1). LAMB clips by the gradient norm over
the whole param group, so it is built with `partitioned=True`: that norm is all-reduced over the
ranks. At the end, rank 0 gathers the full state into a checkpoint a single process can load."""
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

from optdsl.optim import Lamb

WORLD = 2


def worker(rank: int, init: str, checkpoint: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    torch.manual_seed(0)   # the same initial model on every rank
    model = DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)))
    opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=Lamb, partitioned=True, lr=3e-2, max_grad_norm=1.0)
    data = torch.Generator().manual_seed(1)
    for step in range(100):
        x = torch.randn(64, 16, generator=data)
        y = x.sum(1, keepdim=True)
        mine = slice(rank * 32, (rank + 1) * 32)   # this rank's half of the batch
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[mine]), y[mine])
        loss.backward()
        opt.step()
        if rank == 0 and step % 20 == 0:
            print(f"step {step:2d}  loss {loss.item():.4f}")
    opt.consolidate_state_dict(to=0)
    if rank == 0:
        torch.save({"model": model.module.state_dict(), "optimizer": opt.state_dict()}, checkpoint)
    dist.destroy_process_group()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        checkpoint = os.path.join(d, "checkpoint.pt")
        mp.spawn(worker, args=(f"file://{os.path.join(d, 'init')}", checkpoint), nprocs=WORLD)
        saved = torch.load(checkpoint, weights_only=False)
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
        model.load_state_dict(saved["model"])
        single = Lamb(model.parameters(), lr=3e-2, max_grad_norm=1.0)
        single.load_state_dict(saved["optimizer"])   # continue in one process
        print("the consolidated checkpoint loads into one process:", len(single.state), "states")
