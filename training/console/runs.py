"""The client side of runs: start, resume, stop, find, list; used by run.py, the TUI and headless.

Nothing here trains or stays resident. `start_run` spawns `python -m training.supervisor RUN_DIR`
in a new session and returns at once; everything after that is read from the run directory,
so any console (or none) can watch, detach and come back. Liveness is never taken on trust
from run.json: a run is live only while its recorded supervisor (pid + create_time) is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from traindeck.numbers import finite_number
from traindeck.untrusted import json_object_problem
from training import PROJECT_ROOT
from training.errors import RunNotFound, TraindeckError
from training.profile import Profile
from training.rundir import (
    RunPaths,
    RunState,
    create_run_dir,
    hostname,
    list_run_dirs,
    read_json,
    read_run_json,
    update_run_json,
)
from training.rundir import processes as pg
from training.rundir.events_file import append_events, make_event, read_tail
from training.rundir.liveness import (  # noqa: F401 - verified_state, is_live: the console's names too
    SPAWN_WINDOW_S,
    SupervisorStatus,
    _state_of,
    is_live,
    supervisor_status,
    verified_state,
)
from training.rundir.node_views import node_views, other_hosts
from training.rundir.paths import read_profile_data
from training.rundir.records import (
    CheckpointEvent,
    EpochEvent,
    Event,
    ExitRecord,
    MetricEvent,
    RunRecord,
    StatusEvent,
    TimingEvent,
    as_dict,
    as_int,
    create_run_json,
    parse_events,
)
from training.rundir.step_anatomy import TimingFold

TAIL_BYTES = 256 << 10


@dataclass(frozen=True)
class RunSummary:
    id: str
    path: Path
    profile: str
    mode: str
    state: RunState
    live: bool
    created: float | None
    step: int | None
    epoch: int | None
    epochs: int | None
    last_loss: float | None
    rehearsal: bool = False
    # "orphaned" when run.json says live but its supervisor is gone.
    note: str = ""
    returncode: int | None = None
    # A queued run (live): "#2, waiting for GPU 2 held by pid 4312, user alice, 10.2 GB".
    waiting: str = ""
    # A `[launch] hosts` run: one line per node, the head first ("127.0.0.2 (rank 1): running").
    nodes: tuple[str, ...] = ()
    # Where its time went (training.rundir.step_anatomy): "step 12.3 ms: input wait 41% · ...".
    anatomy: str = ""


# ---- small readers ----------------------------------------------------------------------

def _tail_events(path: Path, max_bytes: int = TAIL_BYTES) -> list[Event]:
    """The events of events.jsonl's last `max_bytes`, typed (training.rundir.records)."""
    return parse_events(read_tail(path, max_bytes))


def _progress(paths: RunPaths) -> dict[str, Any]:
    step = epoch = epochs = None
    loss = None
    timing = TimingFold()  # each rank's newest timing event holds its totals: the tail is enough
    for e in _tail_events(paths.events):
        if isinstance(e, TimingEvent):
            timing.add(e)
        if isinstance(e, (MetricEvent, EpochEvent, CheckpointEvent)) and e.step is not None:
            step = e.step if step is None else max(step, e.step)
        if isinstance(e, (MetricEvent, EpochEvent)) and e.epoch is not None:
            epoch = e.epoch
        if isinstance(e, (EpochEvent, StatusEvent)) and e.epochs is not None:
            epochs = e.epochs
        if isinstance(e, MetricEvent) and e.split == "train" and finite_number(e.values.get("loss")) is not None:
            loss = finite_number(e.values.get("loss"))
    whole = timing.whole_run()
    return {"step": step, "epoch": epoch, "epochs": epochs, "last_loss": loss,
            "anatomy": whole.summary() if whole is not None else ""}


# ---- summaries and listing --------------------------------------------------------------

def run_summary(paths: RunPaths) -> RunSummary:
    """One run's row. Every value comes typed (training.rundir.records) from files anyone may have
    edited: a wrong type or a non-finite number is a value missing, not a traceback."""
    data = read_run_json(paths)
    record = RunRecord.from_json(data)
    state, live, note = verified_state(paths, data)
    progress = _progress(paths)
    prof: dict[str, Any] = {}
    if not record.profile or not record.mode or progress["epochs"] is None:
        prof = read_profile_data(paths)
    epochs = progress["epochs"]
    if epochs is None:
        epochs = as_int(as_dict(prof.get("train")).get("epochs"))
    exit_record = ExitRecord.from_json(read_json(paths.exit_json, {}))
    place = record.gpu_queue
    waiting = place.describe() if live and state is RunState.QUEUED and place is not None else ""
    rendezvous = record.rendezvous
    if live and not note and rendezvous is not None and rendezvous.pending:
        note = rendezvous.describe(time.time())
    prof_mode = as_dict(prof.get("launch")).get("mode")
    return RunSummary(
        id=paths.id, path=paths.root, profile=record.profile or _text(prof.get("name")) or "?",
        mode=record.mode or _text(prof_mode) or "?",
        state=state, live=live, created=record.created, step=progress["step"],
        epoch=progress["epoch"], epochs=epochs, last_loss=progress["last_loss"],
        rehearsal=record.rehearsal, note=note,
        returncode=exit_record.returncode if exit_record is not None and not live else None, waiting=waiting,
        nodes=tuple(v.describe() for v in node_views(paths, data, head_state=state.value)),
        anatomy=progress["anatomy"])


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def run_file_problems(paths: RunPaths) -> list[str]:
    """One line per record of the run that exists but is junk ("runs/X/run.json: JSON list, not an
    object"): what a listing warns about instead of a traceback."""
    out = []
    for path in (paths.run_json, paths.exit_json):
        problem = json_object_problem(path)
        if problem is not None:
            out.append(f"{path}: {problem}")
    return out


def list_runs(runs_dir: Path, warn: Callable[[str], None] | None = None) -> list[RunSummary]:
    """Every run's summary, newest first. A run whose run.json is junk (another user's file, a
    crashed editor) is left out with one line to `warn` naming the file; a junk exit.json is
    warned about and the rest of the run is shown. One bad run never hides the others."""
    out = []
    for paths in list_run_dirs(runs_dir):
        problems = run_file_problems(paths)
        if warn is not None:
            for line in problems:
                warn(f"warning: {line}")
        if any(line.startswith(f"{paths.run_json}:") for line in problems):
            continue
        try:
            out.append(run_summary(paths))
        except Exception as exc:  # a reader bug on one run's files must not hide every other run
            if warn is not None:
                warn(f"warning: {paths.root}: skipped ({type(exc).__name__}: {exc})"[:300])
    return out


def format_runs_table(summaries: Iterable[RunSummary]) -> str:
    summaries = list(summaries)
    if not summaries:
        return "no runs yet (start one with: run.py --profile cpu)"
    header = ("RUN", "STATE", "PROFILE", "MODE", "STARTED", "EPOCH", "STEP", "LOSS")
    rows = []
    for s in summaries:
        state = s.state.value + (f" ({s.note})" if s.note else "")
        profile = s.profile + (" (rehearsal)" if s.rehearsal else "")
        started = _started(s.created)
        if s.epoch is not None:
            epoch = f"{s.epoch}/{s.epochs}" if s.epochs else str(s.epoch)
        else:
            epoch = f"-/{s.epochs}" if s.epochs else "-"
        rows.append((s.id, state, profile, s.mode, started, epoch,
                     "-" if s.step is None else str(s.step),
                     "-" if s.last_loss is None else f"{s.last_loss:.4g}"))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {5, 6, 7}  # numbers line up on the right
    lines = []
    for r, s in zip([header, *rows], [None, *summaries], strict=True):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if s is not None and s.waiting:
            # Below its row: what a queued run waits for is longer than any column.
            lines.append(f"  queued {s.waiting}")
        for node in s.nodes if s is not None else ():
            lines.append(f"  node {node}")
        if s is not None and s.anatomy:
            lines.append(f"  time {s.anatomy}")
    return "\n".join(lines)


def _started(created: float | None) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else "-"
    except (OverflowError, OSError, ValueError):  # a time no calendar holds (year 10**9)
        return "-"


# ---- finding ----------------------------------------------------------------------------

def _describe(runs: list[RunPaths], limit: int = 10) -> str:
    if not runs:
        return "none"
    shown = []
    for p in runs[:limit]:
        state, _, note = verified_state(p)
        shown.append(f"{p.id} ({state.value}{', ' + note if note else ''})")
    more = f", and {len(runs) - limit} more" if len(runs) > limit else ""
    return ", ".join(shown) + more


def find_run(runs_dir: Path, spec: str | None, live_only: bool = False) -> RunPaths:
    """A run by id, unique id prefix or path; with no spec, the newest live run."""
    runs = list_run_dirs(runs_dir)
    if spec:
        as_path = Path(spec)
        if as_path.is_dir() and ((as_path / "run.json").exists() or (as_path / "profile.toml").exists()):
            matches = [RunPaths(as_path)]
        else:
            matches = [p for p in runs if p.id == spec] or [p for p in runs if p.id.startswith(spec)]
    else:
        matches = runs
    if live_only:
        matches = [p for p in matches if is_live(p)]
    if spec and len(matches) > 1:
        raise RunNotFound(f"'{spec}' matches {len(matches)} runs: {_describe(matches)}. Give more of the id.")
    if matches:
        return matches[0]
    what = "live run" if live_only else "run"
    named = f" matching '{spec}'" if spec else ""
    raise RunNotFound(f"no {what}{named} in {runs_dir}. Runs: {_describe(runs)}. "
                      f"See them with: run.py --runs")


# ---- starting ---------------------------------------------------------------------------

def spawn_detached(module: str, directory: Path, log: Path, role: str) -> pg.ProcRef:
    """`python -m MODULE DIRECTORY` in a session of its own, output appended to `log`: the
    supervisor of a run, the runner of a sweep. No controlling terminal, so a dropped SSH
    connection (SIGHUP to the console's session) and Ctrl-C in the console never reach it."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    try:
        proc = subprocess.Popen([sys.executable, "-m", module, str(directory.resolve())],
                                cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=fd,
                                stderr=subprocess.STDOUT, close_fds=True, start_new_session=True)
    finally:
        os.close(fd)
    ref = pg.ref_of(proc.pid, role)
    if ref is None:
        # Gone already (it failed at import): record the pid anyway so nobody waits on "spawning".
        proc.wait()
        ref = pg.ProcRef(proc.pid, 0.0, role)
    # No wait(): the console may exit long before the child ends (init reaps it then); while the
    # console lives, subprocess reaps a finished child on its next Popen.
    return ref


def _spawn_supervisor(paths: RunPaths) -> pg.ProcRef:
    paths.logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    return spawn_detached("training.supervisor", paths.root, paths.supervisor_log, "supervisor")


def _write_profile(paths: RunPaths, profile: Profile) -> None:
    fd = os.open(paths.profile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(profile.to_toml())


def start_run(profile: Profile, runs_dir: Path, argv: list[str] | None = None,
              rehearsal: bool = False, cwd: str | os.PathLike | None = None, queue: bool = False,
              sweep: dict[str, Any] | None = None) -> RunPaths:
    """`cwd`: where a custom script runs when the profile sets no `[train] cwd` (default: ours,
    the directory run.py was started from). Recorded in run.json, so --resume runs there too.
    `queue`: the supervisor waits in the box's GPU queue while the GPUs are busy (state `queued`)
    instead of failing the run; recorded in run.json ("queue": true). `sweep`: the run is a point
    of a sweep ({"id", "point"}, training.console.sweep_runner), recorded in run.json as "sweep"."""
    from training.supervise.launch import run_cwd

    paths = create_run_dir(Path(runs_dir), profile.name)
    paths = RunPaths(paths.root.resolve())
    return _record_and_spawn(paths, profile, argv, rehearsal, run_cwd(profile, cwd if cwd is None else Path(cwd).resolve()),
                             queue=bool(queue), **({"sweep": dict(sweep)} if sweep else {}))


def start_node_run(profile: Profile, root: Path, run_id: str, cwd: str, node: dict[str, Any]) -> RunPaths:
    """One other node of a `[launch] hosts` run (training.console.remote_node, over SSH from the
    head): its run directory is RUNS_DIR/<run id>/nodes/<host>, run.json says whose node it is."""
    paths = RunPaths(Path(root).resolve())
    if paths.run_json.exists():
        return _restart_node_run(paths, profile, run_id, cwd)
    for sub in (paths.root, paths.logs, paths.checkpoints, paths.heartbeats):
        sub.mkdir(parents=True, exist_ok=True, mode=0o700)
    return _record_and_spawn(paths, profile, [], False, cwd, run_id=run_id, node=node)


def _restart_node_run(paths: RunPaths, profile: Profile, run_id: str, cwd: str) -> RunPaths:
    """The head's `--resume` starts every node again the way it first started them: the node's
    directory of this run, ended, gets the head's new profile (a new rendezvous port) and a new
    supervisor; its ranks resume from their checkpoints as the head's do."""
    data = read_run_json(paths)
    if data.get("id") != run_id:
        raise TraindeckError(f"{paths.root} holds another run ({data.get('id')}), not {run_id}; a node is "
                             f"started once per run.")
    state, live, _ = verified_state(paths)
    if live:
        raise TraindeckError(f"{paths.root} holds run {run_id} still {state.value} on this node; stop it first.")
    _write_profile(paths, profile)
    try:
        paths.exit_json.unlink()
    except FileNotFoundError:
        pass
    now = round(time.time(), 3)
    update_run_json(paths, state=RunState.STARTING.value, state_t=now, host=hostname(), cwd=str(cwd),
                    supervisor={"pid": None, "create_time": None}, launcher=None, processes=[],
                    resumes=(as_int(data.get("resumes")) or 0) + 1, resumed_at=now)
    append_events(paths.events, [make_event("log", level="info", message="node started again (resume)",
                                            source="console")])
    ref = _spawn_supervisor(paths)
    update_run_json(paths, supervisor={"pid": ref.pid, "create_time": ref.create_time})
    return paths


def _record_and_spawn(paths: RunPaths, profile: Profile, argv: list[str] | None, rehearsal: bool, cwd: Any,
                      run_id: str | None = None, **extra: Any) -> RunPaths:
    _write_profile(paths, profile)
    now = round(time.time(), 3)
    create_run_json(paths, RunRecord(
        id=run_id or paths.id, profile=profile.name, mode=profile.launch.mode, world_size=profile.world_size,
        argv=tuple(argv or ()), host=hostname(), created=now, rehearsal=bool(rehearsal),
        state=RunState.STARTING.value, state_t=now, cwd=str(cwd)), **extra)
    ref = _spawn_supervisor(paths)
    update_run_json(paths, supervisor={"pid": ref.pid, "create_time": ref.create_time})
    return paths


def _last_checkpoint_step(paths: RunPaths) -> int | None:
    step = None
    for e in _tail_events(paths.events, 4 << 20):
        if isinstance(e, CheckpointEvent) and e.path.endswith("last.pt"):
            step = e.step if e.step is not None else step
    return step


def resume_run(paths: RunPaths, queue: bool = False) -> RunPaths:
    """Start the run's supervisor again in its directory. It claims GPUs afresh (the ones the run
    had may be someone else's now); `queue` waits for them in line as on a first start."""
    state, live, note = verified_state(paths)
    if live:
        raise TraindeckError(f"run {paths.id} is still {state.value}; stop it first (run.py --stop {paths.id}) "
                             f"or attach to it (run.py --attach {paths.id}).")
    last = paths.checkpoints / "last.pt"
    data = read_run_json(paths)
    # A `[launch] hosts` run: rank 0 (which saves) may have lived on another node, whose last.pt is
    # on its own disk; the head knows it from that node's copied checkpoint events.
    saved_elsewhere = any(_last_checkpoint_step(paths.node(h)) is not None for h in other_hosts(data))
    if not last.exists() and not saved_elsewhere:
        raise TraindeckError(f"run {paths.id} has no checkpoint to resume from ({last} does not exist); "
                             f"start a new run with run.py --profile instead.")
    if not paths.profile.exists():
        raise TraindeckError(f"run {paths.id} has no profile.toml; it cannot be resumed.")
    step = _last_checkpoint_step(paths)
    if step is None:
        step = max((s for h in other_hosts(data) if (s := _last_checkpoint_step(paths.node(h))) is not None),
                   default=None)
    # The copies of the other nodes' ends belong to the run's earlier life: the head's supervisor
    # starts every node again (training.supervise.node_ssh.start_node) and follows their new ends.
    for stale in [paths.exit_json] + [paths.node(h).exit_json for h in other_hosts(data)]:
        try:
            stale.unlink()
        except FileNotFoundError:
            pass
    now = round(time.time(), 3)
    update_run_json(paths, state=RunState.STARTING.value, state_t=now, host=hostname(),
                    supervisor={"pid": None, "create_time": None}, launcher=None, processes=[],
                    resumes=(as_int(data.get("resumes")) or 0) + 1, resumed_at=now, queue=bool(queue), gpu_queue=None)
    what = f"step {step}" if step is not None else "checkpoints/last.pt"
    append_events(paths.events, [make_event("log", level="info", message=f"resumed from {what}",
                                            step=step, source="console")])
    ref = _spawn_supervisor(paths)
    update_run_json(paths, supervisor={"pid": ref.pid, "create_time": ref.create_time})
    return paths
