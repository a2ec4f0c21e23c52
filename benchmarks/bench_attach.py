"""Attach: seconds from starting the run screen on a finished run until its whole loss history
is drawn (the plot rendered from a store holding every metric event), at 10^4 and 10^6 metric
events, in one run: reading events.jsonl from its start (before, USE_SERIES_SNAPSHOT off), the
first attach with no snapshot (rebuilt from events.jsonl and saved) and the next attach (the
series snapshot plus the tail after its offset: constant in the run's length).

Each attach in a process of its own (App.run_test, headless, 120x36; the app built before the
clock starts): an attach measured in the process that just read 157 MiB twice inherits its heap
and garbage collector (1.09 s at 10^6 that way, where a fresh process takes a third of it).

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
    original = LossPlot.draw_lines

    def draw_lines(self):
        out = original(self)
        s = self.store.get(("train", "loss")) if self.store else None
        if s is not None and s.count >= n and not drawn:
            drawn.append(time.perf_counter())
        return out

    LossPlot.draw_lines = draw_lines
    try:
        app = make_app(runs_dir=root.parent, attach=RunPaths(root), gpu_backend=GpuBackend(nvml=eight_b200()))
        t0 = time.perf_counter()
        async with app.run_test(size=(120, 36)) as pilot:
            while not drawn and time.perf_counter() - t0 < timeout:
                await pilot.pause(0.01)
    finally:
        LossPlot.draw_lines = original
    if not drawn:
        raise TimeoutError(f"the loss history of {n} events was not drawn in {timeout:.0f} s")
    return drawn[0] - t0


def attach_seconds(root: Path, n: int, snapshot: bool) -> float:
    """In a fresh interpreter, as `run.py --attach` would be."""
    import json
    import subprocess
    import sys

    from benchmarks._common import PROJECT_ROOT, base_env

    code = ("import json, sys; from pathlib import Path; from benchmarks.bench_attach import attach_in_process; "
            "print(json.dumps(attach_in_process(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == '1')))")
    proc = subprocess.run([sys.executable, "-c", code, str(root), str(n), "1" if snapshot else "0"],
                          cwd=PROJECT_ROOT, env=base_env(), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"attach of {n} events failed: {proc.stderr[-2000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1]))


def attach_in_process(root: Path, n: int, snapshot: bool) -> float:
    import tui.screens.run_screen as run_screen

    saved = run_screen.USE_SERIES_SNAPSHOT
    run_screen.USE_SERIES_SNAPSHOT = snapshot
    try:
        return asyncio.run(_attach_seconds(root, n))
    finally:
        run_screen.USE_SERIES_SNAPSHOT = saved


def run(quick: bool = False, sizes: tuple[int, ...] = (10_000, 1_000_000),
        before_up_to: int = 1_000_000) -> list[Result]:
    """`before_up_to`: the largest size also attached the old way (events.jsonl from its start):
    at 10^7 that alone is minutes, and the first attach (the snapshot rebuilt) already does it."""
    from training.rundir.snapshot import snapshot_path

    if quick:
        sizes = (1_000, 20_000)
    out: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="td-bench-attach-") as d:
        for n in sizes:
            root = make_run_dir(Path(d), f"20260101-000000-n{n}", gpus=8, finished=True)
            write_metric_lines(root / "events.jsonl", n)
            mib = (root / "events.jsonl").stat().st_size / 2**20
            before = attach_seconds(root, n, snapshot=False) if n <= before_up_to else None
            snapshot_path(root / "events.jsonl").unlink(missing_ok=True)
            rebuild = attach_seconds(root, n, snapshot=True)
            after = attach_seconds(root, n, snapshot=True)
            size_kib = snapshot_path(root / "events.jsonl").stat().st_size / 1024
            if before is not None:
                out.append(Result(f"attach {n:,} metric events ({mib:,.0f} MiB), before: events.jsonl from the start",
                                  before, "s", "info"))
            out.append(Result(f"attach {n:,} metric events, first attach: snapshot rebuilt and saved", rebuild, "s",
                              "info"))
            out.append(Result(f"attach {n:,} metric events, after: series snapshot ({size_kib:,.0f} KiB) + tail",
                              after, "s", f"< {TARGET_S:g} s", after < TARGET_S,
                              note=f"{before / after:.0f}x faster than before" if before is not None
                              else f"{rebuild / after:.0f}x faster than the first attach"))
    return out


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,1000000", help="metric events per run, comma-separated")
    ap.add_argument("--before-up-to", type=int, default=1_000_000)
    args = ap.parse_args()
    for r in run(sizes=tuple(int(x) for x in args.sizes.split(",")), before_up_to=args.before_up_to):
        print(r.line(), flush=True)


if __name__ == "__main__":
    main()
