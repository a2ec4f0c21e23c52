"""Compare: seconds from opening the compare screen on 50 finished runs of 10^6 metric events each
until its first complete frame (the plot drawn with every run's curve, the table and the diff
filled), from the runs' series snapshots (issue 34: Aim took over a minute for 50 runs).

The 50 runs are built once and cached under /tmp (TMPDIR): one events.jsonl of 10^6 train metric
events (tests/support/fake_runs.write_metric_lines, 4 values each) and its series snapshot, then
50 run directories, each with a profile.toml of its own (train.lr and train.batch_size differ),
run.json, exit.json, the events file hard-linked (the same 10^6 lines, 150 MiB once on the disk)
and the snapshot copied. Every run is read as a run of its own: its snapshot loaded and checked
against its events.jsonl (size, line boundary, fingerprint), its records parsed.

Measured in a fresh interpreter (App.run_test, headless, 120x36; the app started before the
clock): from pushing CompareScreen to the first paint of the plot with all 50 curves after the
tables are filled. Also the headless `run.py --compare` of the same 50 (a process, wall time).

    python -m benchmarks.bench_compare [--runs 50] [--events 1000000]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import PROJECT_ROOT, PYTHON, Result, base_env

TARGET_S = 2.0


def build_runs(n_runs: int, n_events: int) -> Path:
    """The cached runs directory (built on first use)."""
    from tests.support.fake_runs import make_run_dir, synthetic_profile_toml, write_exit, write_metric_lines
    from training.rundir.snapshot import load_or_rebuild, snapshot_path

    cache = Path(tempfile.gettempdir()) / f"traindeck-bench-compare-{n_runs}x{n_events}"
    runs_dir = cache / "runs"
    done = cache / "complete"
    if done.exists():
        return runs_dir
    shutil.rmtree(cache, ignore_errors=True)
    source = cache / "source.jsonl"
    cache.mkdir(parents=True)
    t0 = 1795856400.0
    write_metric_lines(source, n_events, t0=t0)
    load_or_rebuild(source)  # the snapshot, beside it
    for i in range(n_runs):
        lr, batch = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)[i % 5], 32 * (1 + i // 5)
        toml = synthetic_profile_toml(gpus=0).replace("[train]\n", f"[train]\nlr = {lr}\nbatch_size = {batch}\n")
        created = t0 + i
        paths = make_run_dir(runs_dir, f"20261128-{i // 60:02d}{i % 60:02d}00-synthetic", profile_toml=toml,
                             state="finished", created=created, state_t=created + n_events * 0.01)
        os.link(source, paths.events)
        shutil.copyfile(snapshot_path(source), snapshot_path(paths.events))
        write_exit(paths, returncode=0, state="finished", t=created + n_events * 0.01, seconds=n_events * 0.01)
    done.write_text("ok\n")
    return runs_dir


CHILD = r'''
import asyncio, json, sys, time
from pathlib import Path
from tests.fixtures.fake_nvml import eight_b200
from training.monitor.gpu import GpuBackend
from training.rundir import list_run_dirs
from tui.app import make_app
from tui.screens.compare_screen import CompareScreen
from tui.widgets.compare_plot import ComparePlot

runs_dir = Path(sys.argv[1])
runs = list_run_dirs(runs_dir)
frames = []
original = ComparePlot.render

def render(self):
    out = original(self)
    screen = self.screen
    if not frames and getattr(screen, "loaded", False) and len(self.curves(80)) == len(runs):
        frames.append(time.perf_counter())
    return out

ComparePlot.render = render

async def main():
    app = make_app(runs_dir=runs_dir, gpu_backend=GpuBackend(nvml=eight_b200()))
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(0.5)  # the console itself up first
        t0 = time.perf_counter()
        app.push_screen(CompareScreen(runs))
        while not frames and time.perf_counter() - t0 < 300:
            await pilot.pause(0.01)
        print(json.dumps({"s": frames[0] - t0 if frames else None}))

asyncio.run(main())
'''


def open_seconds(runs_dir: Path) -> float:
    out = subprocess.run([PYTHON, "-c", CHILD, str(runs_dir)], cwd=PROJECT_ROOT, env=base_env(),
                         capture_output=True, text=True, timeout=600)
    import json

    line = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode or not line or json.loads(line[-1])["s"] is None:
        raise RuntimeError(f"the compare screen did not draw: {out.stdout[-500:]} {out.stderr[-2000:]}")
    return json.loads(line[-1])["s"]


def headless_seconds(runs_dir: Path) -> float:
    runs = sorted(p.name for p in runs_dir.iterdir() if not p.name.startswith("sweep-"))
    t0 = time.perf_counter()
    subprocess.run([PYTHON, "run.py", "--runs-dir", str(runs_dir), "--compare", *runs], cwd=PROJECT_ROOT,
                   env=base_env(), capture_output=True, check=True, timeout=600)
    return time.perf_counter() - t0


def run(quick: bool = False, n_runs: int = 50, n_events: int = 1_000_000) -> list[Result]:
    if quick:
        n_runs, n_events = 5, 10_000
    t0 = time.perf_counter()
    runs_dir = build_runs(n_runs, n_events)
    built = time.perf_counter() - t0
    times = sorted(open_seconds(runs_dir) for _ in range(3))
    headless = headless_seconds(runs_dir)
    return [
        Result(f"compare {n_runs} runs x {n_events:,} events: open to the first complete frame (median of 3)",
               times[1], "s", f"<= {TARGET_S:g} s", times[1] <= TARGET_S,
               note=f"min {times[0]:.2f} s, max {times[2]:.2f} s; runs built/cached in {built:.0f} s"),
        Result(f"compare {n_runs} runs x {n_events:,} events: run.py --compare (process, wall)", headless, "s", "info"),
    ]


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args()
    for r in run(n_runs=args.runs, n_events=args.events):
        print(r.line(), flush=True)


if __name__ == "__main__":
    sys.exit(main())
