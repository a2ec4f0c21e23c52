"""Sweeps from the console's side: start one, find it, say how it stands, stop the rest of it,
and group its runs in `--runs`.

    sweep = start_sweep(profile, runs_dir, grid, sets=["train.epochs=2"], parallel=1, argv=argv)
    find_sweep(runs_dir, "sweep-2026")          # id, unique prefix or path; None when it names no sweep
    sweep_status(sweep)                         # SweepStatus: state, live, counts of its points
    stop_sweep(sweep, progress=print)           # the runner first, then every live run of it

A sweep is runs plus one index (training.rundir.sweep_dir); the detached runner
(training.console.sweep_runner) starts its points, so a sweep survives the console like a run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

from training.console.owned_run import ownership_problem
from training.console.runs import RunSummary, format_runs_table, spawn_detached
from training.console.stop import format_outcome, stop_and_check
from training.console.sweep_grid import expand
from training.errors import TraindeckError
from training.profile import Profile
from training.rundir import RunPaths, hostname, read_run_json
from training.rundir import processes as pg
from training.rundir.liveness import is_live, supervisor_status
from training.rundir.sweep_dir import (
    SweepPaths,
    SweepPoint,
    SweepRecord,
    create_sweep_dir,
    list_sweep_dirs,
    read_sweep,
    sweep_of,
    sweep_runs,
    write_sweep,
)

RUNNER_STOP_S = 10.0


def start_sweep(profile: Profile, runs_dir: Path, grid: list[tuple[str, tuple[str, ...]]], sets: list[str],
                parallel: int = 1, argv: list[str] | None = None) -> SweepPaths:
    """Create the sweep's directory (sweep.json, base.toml) and spawn its runner; return at once.
    `profile` is the base (the --set items applied); each point's values are checked by the caller
    (training.console.sweep_grid.check_points) before anything is created."""
    paths = create_sweep_dir(Path(runs_dir), profile.name)
    fd = os.open(paths.base_profile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(profile.to_toml())
    now = round(time.time(), 3)
    record = SweepRecord(id=paths.id, profile=profile.name, created=now, grid=tuple(grid), sets=tuple(sets),
                         parallel=max(1, int(parallel)),
                         points=tuple(SweepPoint(i, p) for i, p in enumerate(expand(grid))),
                         host=hostname(), state="starting", state_t=now, argv=tuple(argv or ()))
    write_sweep(paths, record)
    # A session of its own, as the supervisor: a dropped SSH connection never stops a sweep.
    ref = spawn_detached("training.console.sweep_runner", paths.root, paths.runner_log, "sweep-runner")
    # The runner waits for this write before its own first one (one writer at a time).
    write_sweep(paths, replace(record, runner={"pid": ref.pid, "create_time": ref.create_time}))
    return paths


def find_sweep(runs_dir: Path, spec: str) -> SweepPaths | None:
    """A sweep by id, unique id prefix or path; None when `spec` names no sweep (it may be a run)."""
    as_path = Path(spec)
    if as_path.is_dir() and (as_path / "sweep.json").exists():
        return SweepPaths(as_path)
    sweeps = list_sweep_dirs(runs_dir)
    matches = [s for s in sweeps if s.id == spec] or [s for s in sweeps if s.id.startswith(spec)]
    if len(matches) > 1:
        raise TraindeckError(f"'{spec}' matches {len(matches)} sweeps: {', '.join(s.id for s in matches[:10])}. "
                             f"Give more of the id.")
    return matches[0] if matches else None


@dataclass(frozen=True)
class SweepStatus:
    id: str
    state: str  # the runner's: starting, running, finished, stopped, failed
    live: bool  # the runner is alive
    points: int
    started: int
    pending: int
    runs_live: int
    keys: tuple[str, ...]

    def describe(self) -> str:
        keys = " x ".join(self.keys)
        return (f"sweep {self.id}: {self.state}, {self.started}/{self.points} started, {self.runs_live} live, "
                f"{self.pending} waiting ({keys})")


def sweep_status(paths: SweepPaths, record: SweepRecord | None = None, runs: list[RunPaths] | None = None) -> SweepStatus:
    record = record or read_sweep(paths)
    if record is None:
        return SweepStatus(paths.id, "failed", False, 0, 0, 0, 0, ())
    runner_live = supervisor_status(record.liveness_record()).is_live
    state = record.state
    if state in ("starting", "running") and not runner_live:
        state = "failed"  # the runner is gone without saying so
    runs = sweep_runs(paths.root.parent, paths.id) if runs is None else runs
    started = sum(1 for p in record.points if p.state == "started")
    pending = sum(1 for p in record.points if p.state == "pending") if runner_live else 0
    return SweepStatus(paths.id, state, runner_live, len(record.points), started, pending,
                       sum(1 for r in runs if is_live(r)), record.keys)


def stop_sweep(paths: SweepPaths, progress: Callable[[str], None] | None = None) -> tuple[str, int]:
    """`--stop SWEEP`: the runner first (no new run starts), then every live run of the sweep, each
    as `--stop RUN` would. Returns (what to print, exit code: 0 only when nothing of it is left)."""
    problem = ownership_problem(RunPaths(paths.root))
    if problem is None and (paths.sweep_json.is_symlink() or os.lstat(paths.sweep_json).st_uid != os.geteuid()):
        problem = f"its sweep.json {paths.sweep_json} is not your own regular file"
    if problem:
        raise TraindeckError(f"--stop refused for sweep {paths.id}: {problem}. Stopping a sweep signals the "
                             f"process sweep.json names; traindeck does it only for a sweep of yours.")
    record = read_sweep(paths)
    if record is None:
        raise TraindeckError(f"{paths.sweep_json} is no sweep record (missing or junk); stop its runs one by one "
                             f"(run.py --runs lists them).")
    runner = pg.ProcRef.from_json(record.runner, "sweep-runner")
    if runner is not None and pg.is_alive(runner) and supervisor_status(record.liveness_record()).is_live:
        if progress:
            progress(f"stopping the sweep runner (pid {runner.pid}): no more runs start")
        pg.terminate_then_kill([runner], RUNNER_STOP_S)  # SIGKILL after the wait: it starts nothing more
        if pg.alive([runner]):
            return f"sweep {paths.id}: its runner (pid {runner.pid}) would not exit; nothing else was stopped", 1
    record = read_sweep(paths) or record
    if record.state in ("starting", "running"):  # the runner was gone (killed) before it said so
        points = tuple(replace(p, state="cancelled") if p.state == "pending" else p for p in record.points)
        write_sweep(paths, replace(record, points=points, state="stopped", state_t=round(time.time(), 3)))
    lines, code = [], 0
    for run in sweep_runs(paths.root.parent, paths.id):
        if not is_live(run):
            continue
        outcome = stop_and_check(run, progress=progress)
        text, run_code = format_outcome(run, outcome)
        lines.append(text)
        code = code or run_code
    cancelled = sum(1 for p in (read_sweep(paths) or record).points if p.state == "cancelled")
    lines.append(f"sweep {paths.id}: stopped ({len(lines)} live runs stopped, {cancelled} not started)")
    return "\n".join(lines), code


def format_runs_grouped(runs_dir: Path, summaries: Iterable[RunSummary]) -> str:
    """`--runs`: the runs of no sweep as one table, then each sweep's line and its runs' table."""
    summaries = list(summaries)
    by_sweep: dict[str, list[RunSummary]] = {}
    alone = []
    for s in summaries:
        entry = sweep_of(read_run_json(RunPaths(s.path)))
        if entry is None:
            alone.append(s)
        else:
            by_sweep.setdefault(entry[0], []).append(s)
    sweeps = list_sweep_dirs(runs_dir)
    if not sweeps and not by_sweep:
        return format_runs_table(summaries)
    parts = [format_runs_table(alone)] if alone else []
    known = {s.id for s in sweeps}
    for sweep in sweeps:
        runs = by_sweep.get(sweep.id, [])
        status = sweep_status(sweep, runs=[RunPaths(s.path) for s in runs])
        parts.append(status.describe() + ("\n" + _indent(format_runs_table(runs)) if runs else ""))
    for sweep_id, runs in by_sweep.items():
        if sweep_id not in known:  # its directory is gone: the runs still say they were one
            parts.append(f"sweep {sweep_id} (no sweep directory)\n" + _indent(format_runs_table(runs)))
    return "\n\n".join(parts)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
