"""Reporting cost: time per training.report log call, and the slowdown of a tight synthetic
training loop (a ~1 ms torch matmul step, one thread) that calls report.log every step against
the same loop that does not. The two loops alternate in short blocks (A/B/A/B...), and the
figure is the median over blocks of (time with logging / time without), so a change in the
machine's load hits both sides alike. The logging loop uses a real Reporter on a temporary run
directory with its heartbeat on, exactly what a worker's report.log does (buffer, a daemon
thread flushes; a heartbeat file at most once a second).

Target: slowdown under 1%.

    python -m benchmarks.bench_report
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks._common import Result, median

TARGET = 0.01


def _step_size(target_s: float = 1e-3) -> int:
    import torch

    n = 128
    while n < 2048:
        a = torch.randn(n, n)
        trials = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(10):
                a @ a
            trials.append((time.perf_counter() - t0) / 10)
        if median(trials) >= target_s:
            return n
        n = int(n * 1.1)
    return n


def run(quick: bool = False) -> list[Result]:
    import torch

    from training.report import Reporter

    torch.set_num_threads(1)
    blocks, steps = (4, 50) if quick else (30, 200)
    n = _step_size()
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    with tempfile.TemporaryDirectory(prefix="td-bench-report-") as d:
        rep = Reporter(Path(d), 0, heartbeat=True)
        step = [0]

        def block(log: bool) -> float:
            t0 = time.perf_counter()
            for _ in range(steps):
                c = a @ b
                loss = float(c[0, 0])
                step[0] += 1
                if log:
                    rep.log(step[0], epoch=1, loss=loss, lr=1e-3)
            return time.perf_counter() - t0

        block(False), block(True)  # warm-up (and the flusher thread starts)
        ratios, plain, logged = [], [], []
        for i in range(blocks):
            order = (False, True) if i % 2 == 0 else (True, False)
            got = {log: block(log) for log in order}
            plain.append(got[False])
            logged.append(got[True])
            ratios.append(got[True] / got[False])
        rep.close()
        written = rep.written
        # Per call, on its own (a tight loop of nothing but report.log).
        rep2 = Reporter(Path(d), 0, heartbeat=True)
        calls = 2000 if quick else 50_000
        t0 = time.perf_counter()
        for i in range(calls):
            rep2.log(i, epoch=1, loss=0.5, lr=1e-3)
        per_call = (time.perf_counter() - t0) / calls
        rep2.close()
    step_ms = median(plain) / steps * 1e3
    slowdown = median(ratios) - 1.0
    # The loop's step time drifts with the machine's load; the extra time per step does not
    # depend on the step, so the figure is that extra over a 1 ms step.
    extra_us = slowdown * step_ms * 1e3
    return [
        Result("report.log per call (buffered, heartbeat on)", per_call * 1e6, "us",
               note=f"{calls:,} calls in a tight loop"),
        Result("tight loop slowdown, report.log every step, at a 1 ms step", extra_us / 1000.0 * 100, "%",
               f"< {TARGET * 100:g}%", extra_us / 1000.0 < TARGET,
               note=f"extra {extra_us:.1f} us per step; measured {slowdown * 100:.2f}% at the ~{step_ms:.2f} ms step "
                    f"(matmul {n}x{n}), median of {blocks} A/B block pairs x {steps} steps; {written} events written"),
    ]


def main() -> None:
    for r in run():
        print(r.line(), flush=True)


if __name__ == "__main__":
    main()
