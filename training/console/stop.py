"""`run.py --stop`: stop a run, say how long the grace lasts, and claim `stopped` only when
nothing of the run is left.

The work is shared with training.console.runs (stop_run, the takeover from run.json after a
`kill -9` of the supervisor, the orphan reaper); this module holds what is new in it:

    stop_and_check(paths, now=False, progress=print) -> StopOutcome   # --stop [--now]
    sweep_dead_run(paths, data, grace_s, progress) -> SweepResult     # supervisor gone
    wait_for_supervisor(paths, sup, timeout_s, grace_s, progress)      # the visible grace
    kill_now(paths, data)                                             # --now with a live supervisor
    format_outcome(paths, outcome) -> (text, exit code)

Every way of finding the run's processes is training.rundir.sweep's: run.json's records, the
run's cgroup (where the box gives one), TRAINDECK_RUN_DIR in the process table, descendants.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from training.rundir import RunPaths, RunState, read_json, read_run_json, sweep
from training.rundir import processes as pg
from training.rundir.cgroups import RunCgroup, run_key
from training.rundir.records import ExitRecord, finish_run

Progress = Callable[[str], None]


@dataclass
class StopOutcome:
    state: RunState
    survivors: list[sweep.Survivor] = field(default_factory=list)
    method: str = "process table"

    @property
    def nothing_left(self) -> bool:
        return not self.survivors


def run_cgroup(paths: RunPaths, data: dict[str, Any]) -> RunCgroup | None:
    return RunCgroup.recorded(data.get("cgroup"), run_key(paths.root))


def recorded_procs(data: dict[str, Any]) -> list[pg.ProcRef]:
    """Launcher and every process run.json recorded (not the supervisor: it is stopped apart)."""
    refs: dict[int, pg.ProcRef] = {}
    launcher = pg.ProcRef.from_json(data.get("launcher"), "launcher")
    if launcher is not None:
        refs[launcher.pid] = launcher
    processes = data.get("processes")
    for item in processes if isinstance(processes, list) else []:
        ref = pg.ProcRef.from_json(item)
        if ref is not None:
            refs.setdefault(ref.pid, ref)
    return list(refs.values())


def _supervisor_pid(data: dict[str, Any]) -> set[int]:
    sup = pg.ProcRef.from_json(data.get("supervisor"), "supervisor")
    return {sup.pid} if sup is not None and pg.is_alive(sup) else set()


def sweep_dead_run(paths: RunPaths, data: dict[str, Any], grace_s: float,
                   progress: Progress | None = None) -> sweep.SweepResult:
    """Stop every process of a run whose supervisor is gone: SIGTERM, the grace (said), SIGKILL,
    cgroup.kill, then check what is left."""
    cgroup = run_cgroup(paths, data)
    result = sweep.stop_all(paths.root, recorded_procs(data), cgroup, grace_s=grace_s,
                            exclude=_supervisor_pid(data), progress=progress)
    if cgroup is not None and not cgroup.populated():
        cgroup.remove()
    return result


def kill_now(paths: RunPaths, data: dict[str, Any]) -> None:
    """`--stop --now` with a live supervisor: it has the SIGTERM (it records `stopped`); kill
    every process of the run at once instead of waiting out its grace."""
    sweep.kill_and_verify(paths.root, recorded_procs(data), run_cgroup(paths, data),
                          exclude=_supervisor_pid(data))


def wait_for_supervisor(paths: RunPaths, sup: pg.ProcRef, timeout_s: float, grace_s: float,
                        progress: Progress | None = None, clock: Callable[[], float] = time.monotonic,
                        sleep: Callable[[float], None] = time.sleep) -> list[pg.ProcRef]:
    """Wait for a supervisor that was sent SIGTERM to finish its stop. While the run's processes
    outlive the SIGTERM, say which and how long until the supervisor's SIGKILL (its grace is the
    profile's, the same `grace_s`). Returns [sup] if it is still alive at `timeout_s`."""
    start = clock()
    last_check = [start - 1.0]
    running: list[pg.ProcRef] = []

    def left() -> list[Any]:
        if not pg.is_alive(sup):
            return []
        if clock() - last_check[0] >= 0.5:
            last_check[0] = clock()
            running[:] = pg.alive(recorded_procs(read_run_json(paths)))
        return [sup]

    def describe(_left: list[Any], _remaining: float) -> str:
        elapsed = clock() - start
        procs = [sweep.RunProcess(r, "recorded", "", _command(r)) for r in running]
        if not procs:
            return f"waiting for the supervisor to finish the stop ({elapsed:.0f} s so far)"
        return sweep._waiting_line(procs, grace_s - elapsed)

    return sweep.wait_with_progress(left, timeout_s, progress, describe, clock, sleep, poll_s=0.1)


def _command(ref: pg.ProcRef) -> str:
    p = pg.resolve(ref)
    if p is None:
        return "gone"
    return sweep._command(p)


def stop_and_check(paths: RunPaths, grace_s: float | None = None, now: bool = False,
                   progress: Progress | None = None) -> StopOutcome:
    """Stop the run (training.console.runs.stop_run), then look for anything of it still alive,
    kill it, and name what cannot be killed or only looks like the run's. exit.json gets what
    this last check found."""
    from training.console.owned_run import check_owned_run
    from training.console.runs import stop_run

    check_owned_run(paths, "--stop")  # it signals the processes run.json names: only a run of yours
    state = stop_run(paths, grace_s=grace_s, now=now, progress=progress)
    data = read_run_json(paths)
    cgroup = run_cgroup(paths, data)
    _killed, survivors = sweep.kill_and_verify(paths.root, recorded_procs(data), cgroup,
                                               exclude=_supervisor_pid(data))
    if cgroup is not None and not cgroup.populated():
        cgroup.remove()
    method = str(data.get("stop_method") or ("cgroup" if cgroup is not None else "process table"))
    record = ExitRecord.from_json(read_json(paths.exit_json, None))
    if record is not None and (survivors or "nothing_left" not in record.extra):
        # The run's end is recorded (run.json's state too): exit.json gets what this sweep found.
        finish_run(paths, record.with_extra(**sweep.SweepResult(method, survivors=survivors).exit_fields()),
                   run_json=False)
    return StopOutcome(state, survivors, method)


def format_outcome(paths: RunPaths, outcome: StopOutcome) -> tuple[str, int]:
    """What `--stop` prints, and its exit code: 0 only when nothing of the run is left."""
    if outcome.nothing_left:
        return f"{paths.id}: {outcome.state.value}", 0
    n = len(outcome.survivors)
    lines = [f"{paths.id}: NOT stopped completely: {n} process(es) of the run are still running "
             f"(stop method: {outcome.method}; the run is recorded {outcome.state.value}):"]
    lines += ["  " + s.line() for s in outcome.survivors]
    lines.append(f"  Recorded in {paths.exit_json} under \"survivors\".")
    return "\n".join(lines), 1
