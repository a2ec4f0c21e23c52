"""A user's training script for the watchdog tests: 2 gloo ranks, one of which hangs inside a step.

    WD_HANG_RANK=1 WD_HANG_STEP=4 WD_HANG_S=60 TRAINDECK_RUN_DIR=RUN \
        torchrun --nproc_per_node 2 tests/data/watchdog/hang_script.py

It reports the way a user's script does, `report.log(step, loss=...)` on every rank, which also
beats the rank's heartbeat. Each step takes a bit over a second (the heartbeat interval), so every
completed step reaches the heartbeat file. The hanging rank stops after the gradient all-reduce of
step WD_HANG_STEP, before it finishes the step (like a stuck optimizer step, checkpoint write or
data fetch): the other rank completes that step and then waits for it in the next all-reduce.
WD_HANG_STEP=0 never hangs; WD_STEPS sets the number of steps.
"""

import os
import time

import torch
import torch.distributed as dist

from training import report

STEP_S = 1.05


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    hang_rank = int(os.environ.get("WD_HANG_RANK", "1"))
    hang_step = int(os.environ.get("WD_HANG_STEP", "4"))
    hang_s = float(os.environ.get("WD_HANG_S", "60"))
    steps = int(os.environ.get("WD_STEPS", "30"))
    weights = torch.zeros(8)
    report.log(0, epoch=1, loss=0.0)
    for step in range(1, steps + 1):
        grad = torch.ones(8) * (rank + 1)
        dist.all_reduce(grad)
        if rank == hang_rank and step == hang_step:
            time.sleep(hang_s)
        weights -= 0.01 * grad
        time.sleep(STEP_S)
        report.log(step, epoch=1, loss=float(weights.sum()))
    report.flush()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
