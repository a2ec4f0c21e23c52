"""`run.py --stop`: stop a run, say how long the grace lasts, and claim `stopped` only when
nothing of the run is left.

Every way a run is stopped is here, for the CLI, the console and the viewers alike:

    stop_and_check(paths, now=False, progress=print) -> StopOutcome   # --stop [--now]
    stop_run(paths, grace_s, wait, now=, progress=) -> RunState        # the core: a live supervisor
                                                                      # is asked; a dead one's job done here
    reap_orphans(runs_dir, warn) / reap_orphan(paths)                  # every start: dead supervisors' runs
    reap_dead_run(paths, data, grace_s, progress) -> ReapResult     # supervisor gone
    wait_for_supervisor(paths, sup, timeout_s, grace_s, progress)      # the visible grace
    kill_now(paths, data)                                             # --now with a live supervisor
    format_outcome(paths, outcome) -> (text, exit code)

Every way of finding the run's processes is training.rundir.reaper's: run.json's records, the
run's cgroup (where the box gives one), TRAINDECK_RUN_DIR in the process table, descendants.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from traindeck.numbers import finite_number
from training.console.owned_run import check_owned_run, ownership_problem
from training.errors import TraindeckError
from training.rundir import RunPaths, RunState, hostname, list_run_dirs, read_json, read_run_json, reaper
from training.rundir import processes as pg
from training.rundir.cgroups import RunCgroup, run_key
from training.rundir.liveness import SupervisorStatus, _state_of, supervisor_status
from training.rundir.paths import read_profile_data
from training.rundir.records import ExitRecord, as_dict, finish_run

Progress = Callable[[str], None]

DEFAULT_GRACE_S = 30.0
# On top of the grace period: the supervisor's own SIGKILL sweep and final writes.
STOP_MARGIN_S = 10.0


@dataclass
class StopOutcome:
    state: RunState
    survivors: list[reaper.Survivor] = field(default_factory=list)
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


def reap_dead_run(paths: RunPaths, data: dict[str, Any], grace_s: float,
                   progress: Progress | None = None) -> reaper.ReapResult:
    """Stop every process of a run whose supervisor is gone: SIGTERM, the grace (said), SIGKILL,
    cgroup.kill, then check what is left."""
    cgroup = run_cgroup(paths, data)
    result = reaper.stop_all(paths.root, recorded_procs(data), cgroup, grace_s=grace_s,
                            exclude=_supervisor_pid(data), progress=progress)
    if cgroup is not None and not cgroup.populated():
        cgroup.remove()
    return result


def kill_now(paths: RunPaths, data: dict[str, Any]) -> None:
    """`--stop --now` with a live supervisor: it has the SIGTERM (it records `stopped`); kill
    every process of the run at once instead of waiting out its grace."""
    reaper.kill_and_verify(paths.root, recorded_procs(data), run_cgroup(paths, data),
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
        procs = [reaper.RunProcess(r, "recorded", "", _command(r)) for r in running]
        if not procs:
            return f"waiting for the supervisor to finish the stop ({elapsed:.0f} s so far)"
        return reaper._waiting_line(procs, grace_s - elapsed)

    return reaper.wait_with_progress(left, timeout_s, progress, describe, clock, sleep, poll_s=0.1)


def _command(ref: pg.ProcRef) -> str:
    p = pg.resolve(ref)
    if p is None:
        return "gone"
    return reaper._command(p)


def _grace(paths: RunPaths) -> float:
    value = finite_number(as_dict(read_profile_data(paths).get("launch")).get("stop_grace_s"))  # TOML has inf and nan
    return value if value is not None and value >= 0 else DEFAULT_GRACE_S


def _take_over(paths: RunPaths, data: dict[str, Any], grace_s: float, reason: str,
               progress: Callable[[str], None] | None = None) -> RunState:
    """Finish a run whose supervisor is dead, without it: stop every process of the run (run.json's
    records, its cgroup, TRAINDECK_RUN_DIR in the process table: training.console.stop), then
    record how the run ended. Processes still running mean the run was healthy until now
    (stopped); none mean it had already died with its supervisor (failed)."""
    swept = reap_dead_run(paths, data, grace_s, progress)
    alive_before = swept.found
    recorded = _state_of(data.get("state"))
    if not recorded.is_live and not alive_before:
        return recorded
    state = RunState.STOPPED if alive_before else RunState.FAILED
    sup_pid = as_dict(data.get("supervisor")).get("pid")
    message = (f"stopped after the supervisor (pid {sup_pid}) was gone ({reason})" if alive_before
               else f"the supervisor (pid {sup_pid}) died and the run with it")
    record = ExitRecord(state=state.value, error=() if alive_before else (message,),
                        hint=None if alive_before else "see logs/supervisor.log; resume with run.py --resume " + paths.id,
                        message=message, extra=swept.exit_fields())
    finish_run(paths, record, write_exit=not paths.exit_json.exists() or recorded.is_live, processes=[],
               status={"source": "console"})
    return state


def stop_run(paths: RunPaths, grace_s: float | None = None, wait: bool = True, *, now: bool = False,
             progress: Callable[[str], None] | None = None) -> RunState:
    """Stop a run and everything it started. With a live supervisor: SIGTERM it (it stops the
    launcher, waits the profile's grace, SIGKILLs the rest, writes the state). With a dead one:
    do that here from run.json. `wait=False` returns right after asking a live supervisor; a
    dead one's cleanup always happens before returning. `now` skips the grace; `progress` hears
    what the stop waits for and how long is left (training.console.stop)."""
    data = read_run_json(paths)
    grace = 0.0 if now else (_grace(paths) if grace_s is None else float(grace_s))
    sup = pg.ProcRef.from_json(data.get("supervisor"), "supervisor")
    if isinstance(data.get("host"), str) and data.get("host") and data.get("host") != hostname():
        raise TraindeckError(f"run {paths.id} runs on {data.get('host')}; stop it there.")
    if sup is not None and pg.is_alive(sup):
        pg.signal_procs([sup], signal.SIGTERM)
        if now:
            kill_now(paths, data)
        if not wait:
            return _state_of(data.get("state"))
        left = wait_for_supervisor(paths, sup, (_grace(paths) if now else grace) + STOP_MARGIN_S,
                                            grace, progress)
        if not left:
            after = read_run_json(paths)
            if _state_of(after.get("state")).is_live:
                # It died without recording an end (SIGTERM before its handlers were installed).
                return _take_over(paths, after, grace, "it exited without recording the end", progress)
            return _state_of(after.get("state"))
        # The supervisor did not finish in time: finish its job for it.
        pg.signal_procs(left, signal.SIGKILL)
        pg.wait_gone(left, 5.0)
        return _take_over(paths, read_run_json(paths), 0.0, "it did not stop in time")
    if isinstance(data.get("supervisor"), dict) and data["supervisor"].get("pid") is None \
            and supervisor_status(data) is SupervisorStatus.SPAWNING:
        # start_run is between spawning and recording; the pid appears within moments.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and as_dict(read_run_json(paths).get("supervisor")).get("pid") is None:
            time.sleep(0.05)
        if as_dict(read_run_json(paths).get("supervisor")).get("pid") is not None:
            return stop_run(paths, grace_s, wait, now=now, progress=progress)
    return _take_over(paths, data, grace, "stop requested", progress)


def reap_orphans(runs_dir: Path, warn: Callable[[str], None] | None = None) -> list[RunPaths]:
    """Runs that claim to be live on this host but whose supervisor is gone: kill what is left
    of them and mark them failed. Returns the runs reaped. Every start calls this: a run whose
    files break the reaping is told to `warn` (one line) and left alone, and the start goes on."""
    reaped = []
    for paths in list_run_dirs(runs_dir):
        try:
            if reap_orphan(paths):
                reaped.append(paths)
        except Exception as exc:  # another run's junk (or a full disk there) must not stop this start
            if warn is not None:
                warn(f"warning: {paths.root}: not checked for leftover processes "
                     f"({type(exc).__name__}: {exc})"[:300])
    return reaped


def reap_orphan(paths: RunPaths) -> bool:
    """One run of reap_orphans (also what a viewer calls when it notices the dead supervisor):
    every process of the run is found without the supervisor (training.console.stop) and
    stopped; the run is marked failed. False when the run is not an orphan."""
    if ownership_problem(paths):
        # Another user's run (or a link to one) in a runs directory others can write: its run.json
        # could name any of your processes, pid and create_time alike. Not yours to reap.
        return False
    data = read_run_json(paths)
    if not data or not _state_of(data.get("state")).is_live:
        return False
    if supervisor_status(data).is_live:
        return False
    swept = reap_dead_run(paths, data, 2.0)
    survivors = swept.found
    state = RunState.FAILED
    message = f"orphaned: the supervisor (pid {as_dict(data.get('supervisor')).get('pid')}) died"
    if survivors:
        message += f"; {len(survivors)} leftover process(es) killed"
    if swept.survivors:
        message += f"; {len(swept.survivors)} could not be stopped (exit.json names them under survivors)"
    finish_run(paths, ExitRecord(state=state.value, error=(message,), message=message,
                                 hint="see logs/supervisor.log; resume with run.py --resume " + paths.id,
                                 extra=swept.exit_fields()),
               processes=[], status={"source": "console"})
    return True


def stop_and_check(paths: RunPaths, grace_s: float | None = None, now: bool = False,
                   progress: Progress | None = None) -> StopOutcome:
    """Stop the run (stop_run), then look for anything of it still alive,
    kill it, and name what cannot be killed or only looks like the run's. exit.json gets what
    this last check found."""
    check_owned_run(paths, "--stop")  # it signals the processes run.json names: only a run of yours
    state = stop_run(paths, grace_s=grace_s, now=now, progress=progress)
    data = read_run_json(paths)
    cgroup = run_cgroup(paths, data)
    _killed, survivors = reaper.kill_and_verify(paths.root, recorded_procs(data), cgroup,
                                               exclude=_supervisor_pid(data))
    if cgroup is not None and not cgroup.populated():
        cgroup.remove()
    method = str(data.get("stop_method") or ("cgroup" if cgroup is not None else "process table"))
    record = ExitRecord.from_json(read_json(paths.exit_json, None))
    if record is not None and (survivors or "nothing_left" not in record.extra):
        # The run's end is recorded (run.json's state too): exit.json gets what this sweep found.
        finish_run(paths, record.with_extra(**reaper.ReapResult(method, survivors=survivors).exit_fields()),
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
