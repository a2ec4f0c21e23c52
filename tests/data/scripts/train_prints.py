"""A small custom training script: real gloo DDP when launched by torchrun, prints its progress.

    python train_prints.py [--steps N] [--sleep S] [--no-report]
Prints "step N loss X" lines (for [metrics] regexes) and, unless --no-report, also reports
through training.report.
"""

import argparse
import os
import time

import torch
import torch.distributed as dist

from training import report

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--sleep", type=float, default=0.02)
parser.add_argument("--no-report", action="store_true")
args = parser.parse_args()

distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
if distributed:
    dist.init_process_group("gloo")
rank = dist.get_rank() if distributed else 0
torch.manual_seed(rank)
w = torch.zeros(4, requires_grad=True)
x, y = torch.randn(64, 4), torch.randn(64)
opt = torch.optim.SGD([w], lr=0.1)
try:
    for step in range(1, args.steps + 1):
        loss = ((x @ w - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        if distributed:
            dist.all_reduce(w.grad)
            w.grad /= dist.get_world_size()
        opt.step()
        if rank == 0:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
            if not args.no_report:
                report.log(step, epoch=1, loss=loss.item())
        time.sleep(args.sleep)
    print(f"rank {rank} done", flush=True)
finally:
    if distributed:
        dist.destroy_process_group()
