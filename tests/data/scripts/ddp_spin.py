"""Real gloo DDP for the cycle test: all-reduces a tensor every 0.05 s until stopped."""

import time

import torch
import torch.distributed as dist

from training import report

dist.init_process_group("gloo")
rank = dist.get_rank()
t = torch.ones(4)
if rank == 0:
    report.status("running", "ddp spin up")
step = 0
while True:
    step += 1
    dist.all_reduce(t)
    t.fill_(1.0)
    if rank == 0:
        report.log(step, epoch=1, loss=1.0 / step)
    time.sleep(0.05)
