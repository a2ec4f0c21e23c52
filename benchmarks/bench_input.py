"""Input pipeline (issue 15, item 5): the share of step time a rank spends waiting for its next
batch, before (num_workers = 0: every synthetic clip made in Python on the training thread) and
after ([train] num_workers: persistent DataLoader workers make them while the step computes).

The worker's own pieces: the task's dataset (3xb200-video's action clips, generated item by item
because the split is too big to hold), training.worker's EpochIndices sampler and the DataLoader
options it builds. Two figures per setting, each the median of several rounds:

    data share   time blocked in next(batches) / time of the whole step (data + forward + backward
                 + optimizer), with the model training on this CPU
    batches/s    what the pipeline alone delivers (no model): the ceiling it puts on a GPU, whose
                 step is milliseconds

    python -m benchmarks.bench_input [--workers 2] [--steps 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.data import DataLoader

from benchmarks._common import Result, load_note, median

# 3xb200-video's clip shape at a third of its side (CPU time per clip ~ the full size on a B200's
# host); 4096 clips do not fit MATERIALIZE_BYTES, so every clip is made in __getitem__ as there.
VIDEO = {"clips": 4096, "frames": 16, "size": 64, "classes": 8, "width": 4}
BATCH = 16


def _setup(workers: int):
    from training.engine.data import EpochIndices
    from training.tasks import TASKS, load_task_module

    task = load_task_module("video-action").build({**TASKS["video-action"].options, **VIDEO}, 0)
    train_set, _ = task.datasets()
    indices = EpochIndices()
    indices.indices = list(range(len(train_set)))
    loader = DataLoader(train_set, batch_size=BATCH, sampler=indices, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0)
    return task, loader


def measure(workers: int, steps: int) -> tuple[float, float]:
    """(data share of step time with the model training here, pipeline-only batches/s)."""
    task, loader = _setup(workers)
    model = task.model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = iter(loader)
    next(batches)  # worker start-up and the first batch are not a step
    data_s = step_s = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        loss, _ = task.loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        data_s += t1 - t0
        step_s += t2 - t0
    # The pipeline alone, as a GPU that never waits would consume it.
    t0 = time.perf_counter()
    for _ in range(steps):
        next(batches)
    rate = steps / (time.perf_counter() - t0)
    del batches, loader
    return data_s / step_s, rate


def run(quick: bool = False, workers: int = 2, steps: int = 30, rounds: int = 3) -> list[Result]:
    torch.set_num_threads(1)
    if quick:
        steps, rounds = 4, 1
    shares: dict[int, list[float]] = {0: [], workers: []}
    rates: dict[int, list[float]] = {0: [], workers: []}
    for _ in range(rounds):  # alternating, so load drifts hit both settings alike
        for w in (0, workers):
            share, rate = measure(w, steps)
            shares[w].append(share)
            rates[w].append(rate)
    before, after = median(shares[0]), median(shares[workers])
    note = f"video clips {VIDEO['frames']}x{VIDEO['size']}x{VIDEO['size']}, batch {BATCH}; {load_note()}"
    return [
        Result("input: data share of step time, num_workers 0", 100 * before, "%", note=note),
        Result(f"input: data share of step time, num_workers {workers}", 100 * after, "%",
               target="< before", ok=after < before, note=note),
        Result("input: pipeline batches/s, num_workers 0", median(rates[0]), "batch/s"),
        Result(f"input: pipeline batches/s, num_workers {workers}", median(rates[workers]), "batch/s",
               target="> before", ok=median(rates[workers]) > median(rates[0])),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_input")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for result in run(quick=args.quick, workers=args.workers, steps=args.steps, rounds=args.rounds):
        print(result.line())


if __name__ == "__main__":
    main()
