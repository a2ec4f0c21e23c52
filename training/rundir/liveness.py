"""Whether a run is live: the one check, used by the console, both viewers and the control file.

`queued` (a supervisor waiting for its GPUs) is live like `starting` and `running`.
run.json's `state` is a claim, not a fact: a supervisor killed with SIGKILL (or an OOM kill, or
a reboot) never writes its end. A run is live only while its recorded supervisor (pid +
create_time, checked with psutil) is. Every reader asks here:

    supervisor_status(run_json, now)  -> SupervisorStatus (alive, spawning, remote, unrecorded, dead)
    verified_state(paths)             -> (RunState, live, note): run.json's claim checked
    not_live_reason(paths)            -> why a control request cannot go to this run, or None
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Any

from traindeck.numbers import finite_number
from traindeck.untrusted import json_object_problem
from training.rundir import processes as pg
from training.rundir.paths import RunPaths, RunState, hostname, read_run_json

# Between start_run creating run.json and recording the supervisor's pid there is a moment
# with no pid to check; a run that young counts as live.
SPAWN_WINDOW_S = 30.0


class SupervisorStatus(str, Enum):
    ALIVE = "alive"  # the recorded pid + create_time is a live process
    SPAWNING = "spawning"  # no pid recorded yet, and the run is younger than SPAWN_WINDOW_S
    REMOTE = "remote"  # the run's host is another machine: its process table is not ours to read
    UNRECORDED = "unrecorded"  # no pid recorded, and too old to be spawning (or no time recorded)
    DEAD = "dead"  # the recorded process is gone (or its pid is someone else's now)

    @property
    def is_live(self) -> bool:
        return self in (SupervisorStatus.ALIVE, SupervisorStatus.SPAWNING, SupervisorStatus.REMOTE)


def supervisor_status(run: dict[str, Any], now: float | None = None) -> SupervisorStatus:
    """What run.json's supervisor record says about the process today."""
    if not isinstance(run, dict):
        return SupervisorStatus.UNRECORDED
    host = run.get("host")
    if isinstance(host, str) and host and host != hostname():
        return SupervisorStatus.REMOTE
    ref = pg.ProcRef.from_json(run.get("supervisor"), "supervisor")
    if ref is None:
        created = finite_number(run.get("created"))
        now = time.time() if now is None else now
        if isinstance(run.get("supervisor"), dict) and created is not None and now - created < SPAWN_WINDOW_S:
            return SupervisorStatus.SPAWNING
        return SupervisorStatus.UNRECORDED
    return SupervisorStatus.ALIVE if pg.is_alive(ref) else SupervisorStatus.DEAD


def _state_of(value: Any, default: RunState = RunState.FAILED) -> RunState:
    if not isinstance(value, str):  # a list or a dict from a junk run.json is no state either
        return default
    try:
        return RunState(value)
    except ValueError:
        return default


def verified_state(paths: RunPaths, data: dict[str, Any] | None = None,
                   now: float | None = None) -> tuple[RunState, bool, str]:
    """(state, live, note) with run.json's claim checked against the process table."""
    data = read_run_json(paths) if data is None else data
    now = time.time() if now is None else now
    if not data:
        if json_object_problem(paths.run_json) is not None:
            return RunState.FAILED, False, "run.json unreadable"
        # start_run creates the directory, then writes profile.toml and run.json: a viewer that
        # looks in between must see a run that is starting, not a failed one.
        try:
            young = now - paths.root.stat().st_mtime < SPAWN_WINDOW_S
        except OSError:
            young = False
        return (RunState.STARTING, True, "starting") if young else (RunState.FAILED, False, "no run.json")
    state = _state_of(data.get("state"))
    if not state.is_live:
        return state, False, ""
    status = supervisor_status(data, now)
    if status is SupervisorStatus.REMOTE:
        return state, True, f"on {data.get('host')}"
    if status.is_live:
        return state, True, ""
    return RunState.FAILED, False, "orphaned"


def is_live(paths: RunPaths) -> bool:
    return verified_state(paths)[1]


def not_live_reason(paths: RunPaths) -> str | None:
    """Why a request for the workers cannot reach this run (None: it is live)."""
    if paths.exit_json.exists():
        return "it has already exited"
    data = read_run_json(paths)
    state = data.get("state")
    if isinstance(state, str) and state:
        try:
            if not RunState(state).is_live:
                return f"it is {state}"
        except ValueError:
            pass
    if supervisor_status(data) is SupervisorStatus.DEAD:
        sup = pg.ProcRef.from_json(data.get("supervisor"))
        return f"its supervisor (pid {sup.pid if sup else None}) is gone"
    if state == RunState.QUEUED.value:
        # Live, but nothing of it runs yet: no worker would ever read the request.
        return "it is queued for its GPUs and has no workers yet (run.py --stop cancels it)"
    return None
