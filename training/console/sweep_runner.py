"""`python -m training.console.sweep_runner SWEEP_DIR`: the small process that starts a sweep's runs.

Who starts the next run of a sequential sweep when the console is gone? This process, spawned by
`training.console.sweeps.start_sweep` in a session of its own with stdio on runner.log (as the
supervisor is), recorded in sweep.json by pid + create_time. It starts each point as an ordinary
run (`start_run(queue=True)`: the box's GPU queue decides when it gets its GPUs), keeps at most
`parallel` of them live, records each in sweep.json, and exits when every point has run. It
trains nothing and speaks no protocol: the runs' own directories say how they went.

SIGTERM (`--stop SWEEP`) ends it between two starts: the points not started are `cancelled`;
the runs already started are the stopper's to stop.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from training.console.runs import start_run
from training.console.sweep_grid import point_profile
from training.errors import TraindeckError
from training.rundir import RunPaths, read_run_json
from training.rundir import processes as pg
from training.rundir.liveness import is_live
from training.rundir.sweep_dir import SweepPaths, SweepRecord, read_sweep, write_sweep

POLL_S = 0.5
PID_WAIT_S = 30.0  # start_sweep records our pid right after the spawn


class SweepRunner:
    def __init__(self, paths: SweepPaths, poll_s: float = POLL_S) -> None:
        self.paths = paths
        self.poll_s = poll_s
        self.stopping = threading.Event()

    def _wait_for_own_pid(self) -> SweepRecord | None:
        """The one writer rule: start_sweep writes our pid after the spawn; we write only after that."""
        deadline = time.monotonic() + PID_WAIT_S
        while time.monotonic() < deadline and not self.stopping.is_set():
            record = read_sweep(self.paths)
            ref = pg.ProcRef.from_json(record.runner) if record is not None else None
            if ref is not None:
                return record if ref.pid == os.getpid() else None  # another runner's sweep: not ours
            time.sleep(0.05)
        return None

    def run(self) -> int:
        record = self._wait_for_own_pid()
        if record is None:
            print(f"sweep runner: {self.paths.sweep_json} never recorded this process; exiting", flush=True)
            return 1
        base_text = self.paths.base_profile.read_text(encoding="utf-8")
        points = list(record.points)
        record = self._write(record, points, state="running")
        live: dict[int, RunPaths] = {}
        while not self.stopping.is_set():
            live = {i: p for i, p in live.items() if is_live(p)}
            pending = [p for p in points if p.state == "pending"]
            if not pending and not live:
                break
            while pending and len(live) < record.parallel and not self.stopping.is_set():
                point = pending.pop(0)
                points[point.index] = started = self._start(record, base_text, point)
                record = self._write(record, points)
                if started.run is not None:
                    live[point.index] = RunPaths(self.paths.root.parent / started.run)
            self.stopping.wait(self.poll_s)
        points = [replace(p, state="cancelled") if p.state == "pending" else p for p in points]
        self._write(record, points, state="stopped" if self.stopping.is_set() else "finished")
        return 0

    def _start(self, record: SweepRecord, base_text: str, point):
        try:
            profile = point_profile(base_text, str(self.paths.base_profile), point.sets)
            argv = [*record.argv, *(a for k, v in point.sets.items() for a in ("--set", f"{k}={v}"))]
            run = start_run(profile, self.paths.root.parent, argv=argv, queue=True,
                            sweep={"id": record.id, "point": point.index})
        except (TraindeckError, OSError) as exc:
            print(f"sweep runner: point {point.index} failed to start: {exc}", flush=True)
            return replace(point, state="failed", error=str(exc)[:500])
        print(f"sweep runner: point {point.index} -> run {run.id}", flush=True)
        return replace(point, state="started", run=run.id)

    def _write(self, record: SweepRecord, points, state: str | None = None) -> SweepRecord:
        if state is not None:
            record = replace(record, state=state, state_t=round(time.time(), 3))
        record = replace(record, points=tuple(points))
        write_sweep(self.paths, record)
        return record


def runs_of(paths: SweepPaths, record: SweepRecord) -> list[RunPaths]:
    """The runs sweep.json names (start_run's ids, beside the sweep directory)."""
    out = []
    for point in record.points:
        if point.run is not None and "/" not in point.run and point.run not in (".", ".."):
            run = RunPaths(paths.root.parent / point.run)
            if read_run_json(run):
                out.append(run)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m training.console.sweep_runner SWEEP_DIR", file=sys.stderr)
        return 2
    runner = SweepRunner(SweepPaths(Path(argv[0])))
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a session of its own has no terminal; belt and braces
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
