"""Attach: seconds from starting the run screen on a finished run until its whole loss history
is drawn (the plot rendered from a store holding every metric event), at 10^4 and 10^6 metric
events, in one run: reading events.jsonl from its start (before, USE_SERIES_SNAPSHOT off), the
first attach with no snapshot (rebuilt from events.jsonl and saved) and the next attach (the
series snapshot plus the tail after its offset: constant in the run's length).

In-process (App.run_test, headless, 120x36), the app built before the clock starts.

    python -m benchmarks.bench_attach
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from benchmarks._common import Result, make_run_dir, write_metric_lines

TARGET_S = 1.0


async def _attach_seconds(root: Path, n: int, timeout: float = 300.0) -> float:
    from tests.fixtures.fake_nvml import eight_b200
    from training.monitor.gpu import GpuBackend
    from training.rundir import RunPaths
    from tui.app import make_app
    from tui.widgets import LossPlot

    drawn: list[float] = []
    original = LossPlot.render

    def render(self):
        out = original(self)
        s = self.store.get(("train", "loss")) if self.store else None
        if s is not None and s.count >= n and not drawn:
            drawn.append(time.perf_counter())
        return out

    LossPlot.render = render
    try:
        app = make_app(runs_dir=root.parent, attach=RunPaths(root), gpu_backend=GpuBackend(nvml=eight_b200()))
        t0 = time.perf_counter()
        async with app.run_test(size=(120, 36)) as pilot:
            while not drawn and time.perf_counter() - t0 < timeout:
                await pilot.pause(0.01)
    finally:
        LossPlot.render = original
    if not drawn:
        raise TimeoutError(f"the loss history of {n} events was not drawn in {timeout:.0f} s")
    return drawn[0] - t0


def attach_seconds(root: Path, n: int, snapshot: bool) -> float:
    import tui.screens.run as run_screen

    saved = run_screen.USE_SERIES_SNAPSHOT
    run_screen.USE_SERIES_SNAPSHOT = snapshot
    try:
        return asyncio.run(_attach_seconds(root, n))
    finally:
        run_screen.USE_SERIES_SNAPSHOT = saved


def run(quick: bool = False) -> list[Result]:
    from training.rundir.snapshot import snapshot_path

    sizes = (1_000, 20_000) if quick else (10_000, 1_000_000)
    out: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="td-bench-attach-") as d:
        for n in sizes:
            root = make_run_dir(Path(d), f"20260101-000000-n{n}", gpus=8, finished=True)
            write_metric_lines(root / "events.jsonl", n)
            mib = (root / "events.jsonl").stat().st_size / 2**20
            before = attach_seconds(root, n, snapshot=False)
            snapshot_path(root / "events.jsonl").unlink(missing_ok=True)
            rebuild = attach_seconds(root, n, snapshot=True)
            after = attach_seconds(root, n, snapshot=True)
            size_kib = snapshot_path(root / "events.jsonl").stat().st_size / 1024
            out.append(Result(f"attach {n:,} metric events ({mib:,.0f} MiB), before: events.jsonl from the start",
                              before, "s", "info"))
            out.append(Result(f"attach {n:,} metric events, first attach: snapshot rebuilt and saved", rebuild, "s",
                              "info"))
            out.append(Result(f"attach {n:,} metric events, after: series snapshot ({size_kib:,.0f} KiB) + tail",
                              after, "s", f"< {TARGET_S:g} s", after < TARGET_S,
                              note=f"{before / after:.0f}x faster than before"))
    return out


def main() -> None:
    for r in run():
        print(r.line(), flush=True)


if __name__ == "__main__":
    main()
