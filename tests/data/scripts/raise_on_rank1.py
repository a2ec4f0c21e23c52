"""A custom script where rank 1 raises after a few steps; the other ranks are mid-collective."""

import os
import time

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
t = torch.ones(8)
for step in range(1, 1000):
    if rank == 1 and step == 5:
        raise ValueError(f"planted failure on rank {rank} at step {step}")
    dist.all_reduce(t)
    t.fill_(1.0)
    print(f"rank {rank} step {step}", flush=True)
    time.sleep(0.05)
