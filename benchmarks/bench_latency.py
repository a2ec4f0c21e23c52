"""Event latency, worker write -> UI message: a writer process (benchmarks._writer) appends
metric events carrying their write time while the TUI's run screen follows the run directory
(App.run_test, headless, 120x36; 8 fake B200s of telemetry at 1 Hz alongside). The time is
taken where the UI receives the batch: RunScreen.on_run_screen_events_arrived (wrapped here,
in this process only). Rates 10, 100 and 1000 events/s; p50/p95/p99 over the measurement
window; then a 20,000-event burst appended at once and the time until the screen has
consumed all of it. One more row goes through training.report (buffered, flushed by its
thread every <= 0.5 s), the true path of a worker's report.log call.

    python -m benchmarks.bench_latency
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks._common import Result, SyntheticWriter, make_run_dir, percentile, print_results

TARGET_P95_MS = 250.0
BURST = 20_000


class Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.recording = False
        self.max_step = 0
        self.batches = 0

    def on_batch(self, events: list[dict]) -> None:
        now = time.time()
        self.batches += 1
        for e in events:
            if e.get("kind") != "metric":
                continue
            step = e.get("step")
            if isinstance(step, int) and step > self.max_step:
                self.max_step = step
            if self.recording:
                wt = e.get("wt", e.get("t"))
                if isinstance(wt, (int, float)):
                    self.latencies.append(now - wt)


def _install(recorder: Recorder):
    from tui.screens.run_screen import RunScreen

    original = RunScreen.on_run_screen_events_arrived

    def wrapped(self, message):
        recorder.on_batch([record.raw for record in message.records])  # the feed types each event once
        return original(self, message)

    RunScreen.on_run_screen_events_arrived = wrapped
    return lambda: setattr(RunScreen, "on_run_screen_events_arrived", original)


async def _follow(run_dir: Path, recorder: Recorder, measure_s: float, burst: int = 0) -> dict:
    from training.rundir import RunPaths
    from tui.app import make_app

    app = make_app(runs_dir=run_dir.parent, attach=RunPaths(run_dir))
    out: dict = {}
    async with app.run_test(size=(120, 36)) as pilot:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not getattr(app.screen, "loaded", False):
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # past the first catch-up read
        recorder.recording = True
        await asyncio.sleep(measure_s)
        recorder.recording = False
        if burst:
            start = recorder.max_step + 1_000_000
            t0 = time.time()
            lines = "".join(json.dumps({"v": 1, "t": round(t0, 3), "kind": "metric", "step": start + i,
                                        "epoch": 1, "split": "train", "wt": t0,
                                        "values": {"loss": 1.0, "loss/aux": 0.5, "lr": 1e-3}},
                                       separators=(",", ":")) + "\n" for i in range(burst))
            fd = os.open(run_dir / "events.jsonl", os.O_WRONLY | os.O_APPEND)
            os.write(fd, lines.encode())
            os.close(fd)
            target = start + burst - 1
            deadline = time.monotonic() + 120
            while recorder.max_step < target and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            out["burst_s"] = time.time() - t0 if recorder.max_step >= target else float("inf")
        await pilot.pause()
    return out


def measure(rate: float, measure_s: float, burst: int = 0, via_report: bool = False) -> tuple[list[float], dict]:
    with tempfile.TemporaryDirectory(prefix="td-bench-latency-") as d:
        runs = Path(d)
        writer = None
        try:
            # The writer plays the supervisor: the run is live while it is.
            root = runs / "20260101-000000-latency"
            root.mkdir()
            writer = SyntheticWriter(root, rate, telemetry=True, extra=["--via-report"] if via_report else [])
            make_run_dir(runs, root.name, gpus=8, live_pid=writer.pid)
            writer.wait_ready()
            recorder = Recorder()
            restore = _install(recorder)
            try:
                extra = asyncio.run(_follow(root, recorder, measure_s, burst))
            finally:
                restore()
        finally:
            if writer is not None:
                writer.stop()
        return recorder.latencies, extra


def run(quick: bool = False) -> list[Result]:
    measure_s = 2.0 if quick else 8.0
    burst = 500 if quick else BURST
    out: list[Result] = []
    for rate in ((10,) if quick else (10, 100, 1000)):
        lat, extra = measure(rate, measure_s, burst=burst if rate == 10 else 0)
        ms = [x * 1000 for x in lat]
        p95 = percentile(ms, 95)
        out.append(Result(f"event latency write->UI at {rate:g}/s, p95", p95, "ms", f"< {TARGET_P95_MS:g} ms",
                          p95 < TARGET_P95_MS,
                          note=f"p50 {percentile(ms, 50):.0f}, p99 {percentile(ms, 99):.0f} ms, n={len(ms)}"))
        if "burst_s" in extra:
            out.append(Result(f"recovery after a {burst:,}-event burst", extra["burst_s"], "s", "info",
                              note="append at once -> the run screen has received every event"))
    if not quick:
        lat, _ = measure(10, measure_s, via_report=True)
        ms = [x * 1000 for x in lat]
        out.append(Result("event latency report.log()->UI at 10/s, p95", percentile(ms, 95), "ms", "info",
                          note=f"p50 {percentile(ms, 50):.0f}, p99 {percentile(ms, 99):.0f} ms "
                               f"(report's flush thread batches up to 0.5 s)"))
    return out


if __name__ == "__main__":
    print_results(run())
