"""A custom training script for the rehearsal test: what a user's own DDP script looks like.

Trains a linear model with gloo all-reduce when torchrun starts it and reports its loss through
training.report (a no-op outside traindeck).
"""

import os

import torch
import torch.distributed as dist

from training import report

distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
if distributed:
    dist.init_process_group("gloo")
rank = dist.get_rank() if distributed else 0
torch.manual_seed(rank)
w = torch.zeros(4, requires_grad=True)
x, y = torch.randn(64, 4), torch.randn(64)
opt = torch.optim.SGD([w], lr=0.1)
try:
    for step in range(1, 6):
        loss = ((x @ w - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        if distributed:
            dist.all_reduce(w.grad)
            w.grad /= dist.get_world_size()
        opt.step()
        if rank == 0:
            report.log(step, epoch=1, loss=loss.item())
    print(f"rank {rank} done", flush=True)
finally:
    report.flush()
    if distributed:
        dist.destroy_process_group()
