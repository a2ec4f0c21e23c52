"""The step anatomy's cost: steps/s of a ~1 ms CPU training step (an MLP's forward, backward and
SGD step on one thread, batches from an iterator) with the anatomy on against the same loop with
it off, side by side in one run. "On" is what the built-in worker's loop does
(training.engine.trainer): four laps of training.engine.step_clock.StepClock a step (other, data,
compute|comm, optimizer) and, every log_every = 10 steps, a drain and one `timing` event through a
real traindeck.report Reporter into a temporary run directory. The two loops alternate in short
blocks (A/B/B/A...) and the figure is the median over blocks of the steps/s ratio, so a change in
the machine's load hits both alike. The issue's anchor: TraceML 0.5 costs ~18% of steps/s on
the same kind of loop.

Target: the anatomy costs at most 1% of steps/s.

    python -m benchmarks.bench_anatomy
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks._common import Result, median

TARGET = 0.01
LOG_EVERY = 10


def _model(width: int):
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, 10))
    return model, torch.optim.SGD(model.parameters(), lr=1e-3)


def _width_for(target_s: float, batch: int) -> int:
    """The MLP width whose step takes about target_s on this machine."""
    import torch

    width = 64
    while width < 4096:
        model, opt = _model(width)
        x, y = torch.randn(batch, width), torch.randint(0, 10, (batch,))
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
        if median(times[5:]) >= target_s:
            return width
        width = int(width * 1.15)
    return width


def run(quick: bool = False) -> list[Result]:
    import torch

    from traindeck.report import Reporter
    from training.engine.step_clock import StepClock

    torch.set_num_threads(1)
    blocks, steps = (4, 40) if quick else (300, 40)
    batch = 32
    width = _width_for(1e-3, batch)
    model, opt = _model(width)
    batches = [(torch.randn(batch, width), torch.randint(0, 10, (batch,))) for _ in range(16)]
    with tempfile.TemporaryDirectory(prefix="td-bench-anatomy-") as d:
        rep = Reporter(Path(d), 0, heartbeat=False)
        clock = StepClock()
        done = [0]

        def block(anatomy: bool) -> float:
            source = iter(batches * (steps // len(batches) + 1))
            t0 = time.perf_counter()
            for _ in range(steps):
                if anatomy:
                    clock.lap("other")
                x, y = next(source)
                if anatomy:
                    clock.lap("data")
                torch.nn.functional.cross_entropy(model(x), y).backward()
                if anatomy:
                    clock.lap_split("compute", "comm")
                opt.step()
                opt.zero_grad(set_to_none=True)
                if anatomy:
                    clock.lap("optimizer")
                done[0] += 1
                if anatomy and done[0] % LOG_EVERY == 0:
                    clock.lap("other")
                    phases = clock.drain()
                    rep.emit("timing", all_ranks=True, rank=0, step=done[0], steps=LOG_EVERY,
                             seconds=round(sum(phases.values()), 6),
                             phases={k: round(v, 6) for k, v in phases.items()}, samples=LOG_EVERY * batch,
                             clock="host", total={"steps": done[0]})
            return steps / (time.perf_counter() - t0)

        block(False), block(True)  # warm-up (and the reporter's flusher starts)
        ratios, off_rates, on_rates = [], [], []
        for i in range(blocks):
            order = (False, True) if i % 2 == 0 else (True, False)
            got = {anatomy: block(anatomy) for anatomy in order}
            off_rates.append(got[False])
            on_rates.append(got[True])
            ratios.append(got[True] / got[False])
        rep.close()
        written = rep.written

        # The clock's own cost per step, in a loop of nothing else.
        calls = 2000 if quick else 200_000
        bare = StepClock()
        t0 = time.perf_counter()
        for i in range(calls):
            bare.lap("other")
            bare.lap("data")
            bare.lap_split("compute", "comm")
            bare.lap("optimizer")
            if i % LOG_EVERY == 0:
                bare.drain()
        per_step_us = (time.perf_counter() - t0) / calls * 1e6

    cost = 1.0 - median(ratios)
    step_ms = 1e3 / median(off_rates)
    return [
        Result("anatomy: steps/s with anatomy off (1 ms step)", median(off_rates), "steps/s",
               note=f"MLP width {width}, batch {batch}, step {step_ms:.2f} ms"),
        Result("anatomy: steps/s with anatomy on", median(on_rates), "steps/s",
               note=f"{written} timing events written"),
        Result("anatomy: cost in steps/s, on vs off (median of block ratios)", cost * 100, "%",
               f"<= {TARGET * 100:g}%", cost <= TARGET, note=f"{blocks} block pairs of {steps} steps"),
        Result("anatomy: clock cost per step (4 laps, drain every 10)", per_step_us, "us"),
    ]


if __name__ == "__main__":
    from benchmarks._common import print_results

    print_results(run())
