"""UI cost and terminal traffic of the run screen, in a separate process as a user runs it:
`run.py --attach RUN` on the slave side of a pseudo-terminal (psutil reads its CPU times, a
thread reads the master side and counts the bytes the app writes to the terminal).

    live   a synthetic run (benchmarks._writer): 8 fake B200s of telemetry at 1 Hz through the
           real TelemetrySampler (TRAINDECK_FAKE_NVML=tests.fixtures.fake_nvml:eight_b200) and
           10 metric events/s; measured at 80x24 and 160x48
    idle   a finished run (2,000 metric events, exit.json), 120x36

CPU is the TUI process only (the writer is another process); figures are scaled to one
minute. Target: under 10% of one core (6 CPU s/min).

    python -m benchmarks.bench_ui_cost [--seconds 25]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks._common import (
    PtyProcess,
    Result,
    SyntheticWriter,
    attach_argv,
    make_run_dir,
    write_metric_lines,
)

TARGET_CORE_FRACTION = 0.10
SETTLE_S = 4.0


def follow_live(cols: int, rows: int, seconds: float, settle_s: float = SETTLE_S) -> tuple[float, float]:
    """(cpu seconds, terminal bytes) of the TUI over `seconds` while following a live run."""
    with tempfile.TemporaryDirectory(prefix="td-bench-ui-") as d:
        runs = Path(d)
        root = runs / "20260101-000000-live"
        root.mkdir()
        writer = SyntheticWriter(root, 10, telemetry=True)
        pty = None
        try:
            make_run_dir(runs, root.name, gpus=8, live_pid=writer.pid)
            writer.wait_ready()
            pty = PtyProcess(attach_argv(root), cols=cols, rows=rows)
            if not pty.wait_started(60):
                raise RuntimeError(f"the TUI did not start: {pty.tail()[-800:]!r}")
            time.sleep(settle_s)
            c0, b0, t0 = pty.cpu_seconds(), pty.bytes, time.monotonic()
            time.sleep(seconds)
            dt = time.monotonic() - t0
            return (pty.cpu_seconds() - c0) * seconds / dt, (pty.bytes - b0) * seconds / dt
        finally:
            if pty is not None:
                pty.stop()
            writer.stop()


def follow_idle(seconds: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="td-bench-ui-") as d:
        runs = Path(d)
        root = make_run_dir(runs, "20260101-000000-done", gpus=8, finished=True)
        write_metric_lines(root / "events.jsonl", 2000)
        pty = PtyProcess(attach_argv(root), cols=120, rows=36)
        try:
            if not pty.wait_started(60):
                raise RuntimeError(f"the TUI did not start: {pty.tail()[-800:]!r}")
            pty.wait_idle(30)
            time.sleep(1.0)
            c0, b0, t0 = pty.cpu_seconds(), pty.bytes, time.monotonic()
            time.sleep(seconds)
            dt = time.monotonic() - t0
            return (pty.cpu_seconds() - c0) * seconds / dt, (pty.bytes - b0) * seconds / dt
        finally:
            pty.stop()


def run(quick: bool = False, seconds: float = 25.0) -> list[Result]:
    settle_s = SETTLE_S
    if quick:  # the smoke test's size: the shape of the figures, not their values
        seconds, settle_s = 1.5, 1.0
    per_min = 60.0 / seconds
    target_cpu_min = TARGET_CORE_FRACTION * 60
    out: list[Result] = []
    for cols, rows in ((80, 24), (160, 48)):
        cpu, nbytes = follow_live(cols, rows, seconds, settle_s)
        out.append(Result(f"TUI CPU following 8-GPU run, 10 ev/s, {cols}x{rows}", cpu * per_min, "CPU s/min",
                          f"< {target_cpu_min:g} s/min", cpu * per_min < target_cpu_min,
                          note=f"{cpu / seconds * 100:.1f}% of one core"))
        out.append(Result(f"terminal traffic, live run, {cols}x{rows}", nbytes * per_min / 1024, "KiB/min",
                          "info", note=f"{nbytes / seconds / 1024:.1f} KiB/s"))
    cpu, nbytes = follow_idle(seconds)
    out.append(Result("TUI CPU on a finished run (idle), 120x36", cpu * per_min, "CPU s/min",
                      f"< {target_cpu_min:g} s/min", cpu * per_min < target_cpu_min,
                      note=f"{cpu / seconds * 100:.1f}% of one core; {nbytes * per_min / 1024:.1f} KiB/min to the terminal"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=25.0)
    args = ap.parse_args()
    for r in run(seconds=args.seconds):
        print(r.line(), flush=True)


if __name__ == "__main__":
    main()
