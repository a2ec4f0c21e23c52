"""A custom script where rank 1 raises after a few steps.

    python raise_on_rank1.py              # the other ranks are mid-collective when rank 1 dies
    python raise_on_rank1.py --hang-rank0 # rank 0 ignores SIGTERM and never returns (a rank
                                          # stuck where torchrun's SIGTERM cannot end it)
"""

import signal
import sys
import time

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
if "--hang-rank0" in sys.argv:
    dist.barrier()
    if rank == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("rank 0 hanging", flush=True)
        while True:
            time.sleep(1)
    time.sleep(0.5)
    raise ValueError("planted failure on rank 1 while rank 0 hangs")
t = torch.ones(8)
for step in range(1, 1000):
    if rank == 1 and step == 5:
        raise ValueError(f"planted failure on rank {rank} at step {step}")
    dist.all_reduce(t)
    t.fill_(1.0)
    print(f"rank {rank} step {step}", flush=True)
    time.sleep(0.05)
