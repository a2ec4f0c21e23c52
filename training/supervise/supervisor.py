"""`python -m training.supervisor RUN_DIR`: one run's state machine, from launch to exit.json.

    [queued --its GPUs free-->] starting --workers up / worker's `status running`--> running
        --launcher exits--> finished | failed;  SIGTERM (stop) in any state --> stopped

    queued: run.py --queue on a shared box whose GPUs are busy; the supervisor holds a ticket in
    the box's GPU queue (training.rundir.gpu_locks) until they are free, nothing launched yet.

Like torch elastic's agent: a validated launch config (`training.supervise.launch.LaunchSpec`), a
`RunState`, and a monitor loop that returns a `RunResult`. The supervisor is the only writer of
run.json while it lives (`training.console.runs.stop_run` takes over only once it is dead) and it never
trains: it starts the launcher (torchrun or the worker itself), tracks every descendant by pid +
create_time, runs the telemetry sampler and the custom-script log tailer, and on the way out
makes sure no process of the run is left and says why the run ended (exit.json).

It runs in its own session with stdio on logs/supervisor.log (training.console.runs.start_run spawns it
so), and ignores SIGHUP, so a dropped SSH connection never reaches training.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.errors import TraindeckError
from training.profile import Profile, parse_profile
from training.rundir import (
    RunPaths,
    RunState,
    hostname,
    read_json,
    read_run_json,
    update_run_json,
)
from training.rundir import processes as pg
from training.rundir.events import EventReader, append_events, make_event
from training.rundir.logs import rank0_stdout
from training.rundir.records import ExitRecord, GpuQueuePlace, RunRecord, finish_run
from training.rundir.write_failures import DISK_ERROR_TEXT, WriteTrouble, retry_until_written
from training.supervise import disk_faults
from training.supervise.containment import Containment
from training.supervise.diagnosis import diagnose, rank_text, traceback_summary
from training.supervise.launch import (
    PROJECT_ROOT,
    LaunchSpec,
    build_launch,
    expose_traindeck,
    format_command,
    free_port,
)
from training.supervise.visibility import run_gpu_indices

POLL_S = 0.2
REFRESH_PROCS_S = 0.5
# A rank that died with a traceback while torchrun still waits on the others (a worker deferring
# SIGTERM, a collective that never times out): after this long the supervisor ends it itself.
FAIL_FAST_S = 1.5
# How long start_run may take to record the supervisor's pid in run.json before we write it.
HANDOFF_TIMEOUT_S = 5.0
# A health rule's save-stop goes to the worker at its next logging boundary; a worker that has
# not stopped this long after is stopped by the supervisor.
HEALTH_SAVE_STOP_S = 300.0
# At the end of a multi-node run, how long the head waits for each other node's end (its exit.json
# copied into <run>/nodes/<host>/) before writing its own.
NODE_DRAIN_S = 30.0


# Events the supervisor could not write (a full disk) wait in memory for the disk to come back,
# this many at most (the oldest are dropped, and counted); pending writes are retried this often.
PENDING_EVENTS_MAX = 10_000
RETRY_WRITES_S = 1.0


def log(message: str) -> None:
    try:
        print(time.strftime("%H:%M:%S"), message, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # logs/supervisor.log on a full disk: the run goes on untold
        pass


# ---- the state machine ------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    state: RunState
    returncode: int | None
    failed_rank: int | None = None
    error: list[str] = field(default_factory=list)
    hint: str | None = None
    message: str = ""

    def exit_record(self, started: float, **extra: Any) -> ExitRecord:
        return ExitRecord(state=self.state.value, returncode=self.returncode, failed_rank=self.failed_rank,
                          error=tuple(self.error), hint=self.hint, message=self.message,
                          t=round(time.time(), 3), seconds=round(time.time() - started, 3), extra=extra)


class Supervisor:
    def __init__(self, paths: RunPaths):
        self.paths = paths
        self.state = RunState.STARTING
        self.profile: Profile | None = None
        # The checkpoint watcher that finds files by name (no [checkpoint] watch), while it runs.
        self.checkpoint_scan: Any = None
        self.spec: LaunchSpec | None = None
        self.launcher: subprocess.Popen | None = None
        # GPU UUID -> PIDs NVML lists there before the launch (the leak check's container path).
        self.gpu_baseline: dict[str, list[int]] | None = None
        self.launcher_ref: pg.ProcRef | None = None
        # Everything we ever saw, by pid: the final sweep checks all of them (pid + create_time).
        self.known: dict[int, pg.ProcRef] = {}
        # The alive set as last published; replaced (never mutated) so other threads can read it.
        self.procs: tuple[pg.ProcRef, ...] = ()
        self.stop_requested = threading.Event()
        self.worker_stopped = False
        self.worker_running = False
        self.first_exit_rank: int | None = None
        self.failure_seen_at: float | None = None
        self.started = time.time()
        self._aux: list[Any] = []
        # The run's cgroup where the box allows one, orphan adoption, the end-of-run check.
        self.containment: Containment | None = None
        # A health rule that stopped the run (rule, message, action) and, for a save-stop, when
        # the supervisor stops the run itself if the worker has not.
        self.health_stop: dict[str, str] | None = None
        self.health_deadline: float | None = None
        # The GPUs this run took on a shared box, under their locks (released in finish()).
        self.gpu_claim = None
        # While queued for them (run.py --queue): since when, and the last place + holders written.
        self.queued_since: float | None = None
        self.queue_key: tuple | None = None
        # Rewinds the [health] nan rule asked of the worker in this run (at most health.rewind_max),
        # kept in run.json's "health_rewinds" so a resumed run goes on counting.
        self.rewinds = 0
        self.notifier: Any = None  # the [notify] command's runner (training.monitor.notify), when set
        # A multi-node run's rendezvous until its workers are up (training.supervise.rendezvous),
        # and the record last written to run.json.
        self.rendezvous: Any = None
        self.rendezvous_written: Any = None
        # `[launch] hosts`: the other nodes this head started over SSH (training.supervise.nodes).
        self.remote_nodes: list[Any] = []
        # One follower per other node (training.supervise.node_follow), and the first node that
        # dropped out (its host, what happened), which fails the run on every node.
        self.followers: list[Any] = []
        self.node_lost: Any = None
        self.dropped_node: str | None = None  # the node that failed this run (exit.json's "failed_node")
        # A full or read-only disk: the supervisor's writes that failed, told in its log at most
        # every 30 s; run.json fields and events that did not go through wait here, retried each
        # RETRY_WRITES_S by the main loop and before the end records.
        self.disk = WriteTrouble(warn=log)
        self._pending_lock = threading.Lock()
        self._pending_run_json: dict[str, Any] = {}
        self._pending_events: list[dict[str, Any]] = []
        self._retry_at = 0.0
        self._disk_told: tuple[int, int] | None = None  # the gap last told in events.jsonl
        self.retry_sleep = time.sleep  # between tries of the end records (a test's is instant)

    # -- the supervisor's own writes: a full disk delays them, never ends the run --
    def _write_run_json(self, **fields: Any) -> bool:
        """Merge fields into run.json; on an OSError they wait for the next try (the newest value
        of each field wins), told in the log, rate-limited. True when run.json is up to date."""
        with self._pending_lock:
            self._pending_run_json.update(fields)
        return self._try_write("run.json", self._flush_run_json)

    def _append(self, events: list[dict[str, Any]]) -> bool:
        """Append events after any still waiting (their order holds); on an OSError they wait, at
        most PENDING_EVENTS_MAX of them. The supervisor's threads call this too."""
        with self._pending_lock:
            self._pending_events.extend(events)
            dropped = max(0, len(self._pending_events) - PENDING_EVENTS_MAX)
            if dropped:
                del self._pending_events[:dropped]
        return self._try_write("events.jsonl", self._flush_events, dropped)

    def _flush_run_json(self) -> None:
        """Raises the OSError of a write that did not go through."""
        with self._pending_lock:
            if self._pending_run_json:
                update_run_json(self.paths, **self._pending_run_json)
                self._pending_run_json.clear()

    def _flush_events(self) -> None:
        with self._pending_lock:
            if self._pending_events:
                append_events(self.paths.events, self._pending_events)
                self._pending_events = []

    def _try_write(self, what: str, flush: Any, dropped: int = 0) -> bool:
        try:
            flush()
        except OSError as exc:
            self.disk.failed(what, exc, dropped=dropped)
            return False
        self.disk.ok(what)
        return True

    def _retry_pending_writes(self) -> None:
        """What a full disk kept back, tried again each RETRY_WRITES_S (the main loop's)."""
        now = time.monotonic()
        if now < self._retry_at:
            return
        self._retry_at = now + RETRY_WRITES_S
        with self._pending_lock:
            waiting = bool(self._pending_run_json or self._pending_events)
        if waiting and not (self._try_write("run.json", self._flush_run_json)
                            and self._try_write("events.jsonl", self._flush_events)):
            return
        self._tell_disk_trouble()

    def _tell_disk_trouble(self, at_end: bool = False) -> None:
        """Once the disk is back: one warning event, so every viewer (and the headless summary's
        warning count) knows the run's records have a gap. `at_end`: the end records went
        through, so the disk is back whatever a stopped helper's last write said."""
        summary = self.disk.summary()
        if summary is None or (self.disk.failing and not at_end):
            return
        told = (summary["failed_writes"], summary["dropped"])
        if told == self._disk_told:
            return
        self._disk_told = told
        dropped = f"; {summary['dropped']} record(s) dropped" if summary["dropped"] else ""
        self._append([make_event("log", level="warning", disk=summary,
                                 message=f"the supervisor could not write {', '.join(summary['files'])} for "
                                         f"{summary['seconds']:g} s ({summary['error']}): {summary['failed_writes']} "
                                         f"write(s) retried{dropped}; training went on")])

    # -- helpers --
    def set_state(self, state: RunState, message: str = "", emit: bool = True, **info: Any) -> None:
        self.state = state
        self._write_run_json(state=state.value, state_t=round(time.time(), 3))
        if emit:
            info.setdefault("source", "supervisor")
            self._append([make_event("status", state=state.value, message=message, **info)])
        log(f"state {state.value}: {message}")

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            log("SIGHUP ignored: training continues")
            return
        log(f"signal {signal.Signals(signum).name}: stopping the run")
        self.stop_requested.set()

    def _install_signals(self) -> None:
        # A Python handler rather than SIG_IGN for SIGHUP: an ignored signal would stay ignored in
        # the launcher and workers across exec, a handler resets to the default there.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _await_handoff(self) -> None:
        """start_run records our pid in run.json right after spawning us (it leaves
        "supervisor": {"pid": null} until then); writing run.json before that lands would race its
        read-modify-write, so wait for it, briefly."""
        deadline = time.monotonic() + HANDOFF_TIMEOUT_S
        while time.monotonic() < deadline:
            sup = read_run_json(self.paths).get("supervisor")
            if not (isinstance(sup, dict) and sup.get("pid") is None):
                return
            time.sleep(0.02)

    def _load_profile(self) -> Profile:
        try:
            text = self.paths.profile.read_text(encoding="utf-8")
        except OSError as exc:
            raise TraindeckError(f"cannot read {self.paths.profile}: {exc}") from None
        return parse_profile(text, path=self.paths.profile)

    def _claim_gpus(self, profile: Profile, queue: bool) -> Any:
        """Select the run's GPUs under the box's GPU locks and hold them for the run's life
        (training.supervise.gpu_select). Without `queue` one look: GpusBusy when they are taken.
        With it, wait in the box's line (state `queued`) until they are free; a stop while
        waiting (SIGTERM: --stop, Ctrl-C of a headless console) leaves the line (QueueLeft)."""
        from training.monitor.gpu import get_backend
        from training.supervise.gpu_select import claim_gpus

        claim = claim_gpus(profile, self.paths.id, get_backend(), wait=queue, on_wait=self._queued,
                           should_stop=self.stop_requested.is_set, sleep=self.stop_requested.wait)
        if self.queued_since is not None:
            waited = round(time.time() - self.queued_since, 3)
            self._write_run_json(gpu_queue=None, queued_s=waited)
            log(f"left the GPU queue after {waited:.0f} s: the GPUs are free")
        sel = claim.selection
        if sel.gpus is not None:
            # Indices to read (nvidia-smi's numbers), UUIDs to be sure (CUDA_VISIBLE_DEVICES names them).
            self._write_run_json(gpus={"select": sel.mode, "indices": list(sel.gpus), "uuids": list(sel.uuids),
                                       "cuda_visible_devices": sel.cuda_visible, "lock_dir": claim.lock_dir})
            log(f"GPUs taken ({sel.mode}): {', '.join(map(str, sel.gpus))}; locks in {claim.lock_dir}")
        return claim

    def _queued(self, waiting: Any) -> None:
        """One look of a queued start found its GPUs busy. Viewers read the place and what it waits
        for from run.json ("gpu_queue") and a `queued` status event, written when either changes,
        not on every look (a queue can last hours)."""
        if waiting.key == self.queue_key:
            return
        self.queue_key = waiting.key
        now = round(time.time(), 3)
        if self.queued_since is None:
            self.queued_since = now
        place = GpuQueuePlace(waiting.place, waiting.why, self.queued_since, now)
        self._write_run_json(gpu_queue=place.to_json())
        self.set_state(RunState.QUEUED, place.describe(), place=waiting.place, waiting_for=waiting.why)

    def _prepare(self, profile: Profile) -> LaunchSpec:
        port = None
        if profile.launch.mode == "ddp" and not profile.launch.rdzv_endpoint:
            port = free_port()
        # A custom script runs where the run was started (run.json's "cwd", kept on --resume); a
        # run recorded before that key ran in traindeck's root, and resumes there.
        cwd = read_run_json(self.paths).get("cwd") or str(PROJECT_ROOT)
        selected = self.gpu_claim.selection.cuda_visible if self.gpu_claim is not None else None
        return build_launch(profile, self.paths, port, cwd=cwd, cuda_visible=selected)

    # -- main --
    def run(self) -> RunResult:
        self._install_signals()
        self._await_handoff()
        data = read_run_json(self.paths)
        self._write_run_json(
            id=data.get("id") or self.paths.id, host=data.get("host") or hostname(),
            created=data.get("created") or round(self.started, 3), rehearsal=bool(data.get("rehearsal", False)),
            argv=data.get("argv") or [], supervisor=pg.pid_create_time(),
            launcher=None, processes=[], state=RunState.STARTING.value, state_t=round(time.time(), 3))
        from training.supervise.gpu_select import GpusBusy, QueueLeft

        try:
            self.profile = self._load_profile()
            self.notifier = self._make_notifier(self.profile)  # before launching: a failed launch notifies too
            self.gpu_claim = self._claim_gpus(self.profile, queue=data.get("queue") is True)
            self.spec = self._prepare(self.profile)
        except GpusBusy as exc:
            name = self.profile.name if self.profile else "?"
            hint = (f"'run.py --gpus' shows who holds which GPU; 'run.py --profile {name} --queue' waits for "
                    f"them in line")
            return RunResult(RunState.FAILED, None, None, [str(exc)], hint, f"GPUs busy: {exc}")
        except QueueLeft:
            return RunResult(RunState.STOPPED, None, message="cancelled while queued for GPUs: nothing was launched")
        except (TraindeckError, OSError) as exc:
            return RunResult(RunState.FAILED, None, None, [str(exc)], None, f"cannot launch: {exc}")
        p, spec = self.profile, self.spec
        self._write_run_json(profile=p.name, mode=p.launch.mode, world_size=p.world_size,
                        port=spec.port, env=dict(spec.env), launch_argv=list(spec.argv),
                        rank_offset=spec.rank_offset, cwd=str(spec.cwd))
        command = format_command(spec, with_env=False)
        self.set_state(RunState.STARTING, f"launching {p.launch.mode} x{p.world_size}: {command}",
                       world_size=p.world_size, mode=p.launch.mode, port=spec.port)
        for note in spec.notes:
            self._append([make_event("log", level="info", message=note)])
        if self.stop_requested.is_set():
            return RunResult(RunState.STOPPED, None, message="stopped before launch")
        try:
            self._start_other_nodes(p, spec)
        except TraindeckError as exc:
            return RunResult(RunState.FAILED, None, None, [str(exc)],
                             "check that `ssh -o BatchMode=yes HOST` logs in without a password from this box; "
                             f"`run.py --check --profile {p.name}` checks every host", f"cannot start the nodes: {exc}")
        try:
            self._spawn(spec)
        except OSError as exc:
            return RunResult(RunState.FAILED, None, None, [str(exc)], None, f"cannot start {spec.argv[0]}: {exc}")
        self._start_aux(p)
        self._watch_rendezvous(p, spec)
        try:
            return self._monitor()
        finally:
            self._stop_aux()

    def _spawn(self, spec: LaunchSpec) -> None:
        out_path = spec.launcher_log if spec.uses_torchrun else spec.stdout_log
        assert out_path is not None
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if spec.torchrun_log_dir is not None:
            spec.torchrun_log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        expose_traindeck(spec)
        self.gpu_baseline = self._take_gpu_baseline()
        self.containment = Containment(self.paths, log)
        join_cgroup = self.containment.preexec()
        fd = os.open(out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # umask 077: what torchrun and the workers create in the run (per-rank logs, stack
            # dumps, checkpoints) is user-only, like the rest of the run directory.
            popen = dict(env=spec.environ(), cwd=spec.cwd, stdin=subprocess.DEVNULL, stdout=fd,
                         stderr=subprocess.STDOUT, close_fds=True, umask=0o077)
            try:
                self.launcher = subprocess.Popen(list(spec.argv), preexec_fn=join_cgroup, **popen)
            except subprocess.SubprocessError as exc:
                log(f"the launcher could not join the run's cgroup ({exc}): the process-table scan alone")
                self.containment.spawn_failed()
                self.launcher = subprocess.Popen(list(spec.argv), **popen)
        finally:
            os.close(fd)
            self.containment.spawned()
        role, rank = ("launcher", None) if spec.uses_torchrun else ("worker", 0)
        self.launcher_ref = pg.ref_of(self.launcher.pid, role, rank) or pg.ProcRef(self.launcher.pid, 0.0, role, rank)
        self.known[self.launcher_ref.pid] = self.launcher_ref
        self._write_run_json(launcher=self.launcher_ref.to_json())
        log(f"launcher pid {self.launcher.pid}: {format_command(spec)}")
        disk_faults.launcher_started()  # tests only: a TRAINDECK_TEST_DISK_FULL window counts from here
        self._refresh_procs(force=True)

    def _start_aux(self, p: Profile) -> None:
        # Telemetry and the metrics tailer are helpers: if one cannot start, training goes on and
        # the run's log says why.
        if p.telemetry.interval_s > 0:
            try:
                from training.monitor.telemetry import TelemetrySampler

                sampler = TelemetrySampler(self.paths, p.telemetry.interval_s, self.ranks_by_pid,
                                           gpu_indices=run_gpu_indices(self.spec), trouble=self.disk)
                sampler.start()
                self._aux.append(sampler)
            except Exception as exc:  # noqa: BLE001 - any failure here must not stop training
                self._aux_failed("telemetry", exc)
        try:
            self._start_health(p)
        except Exception as exc:  # noqa: BLE001
            self._aux_failed("health monitor", exc)
        try:
            # The series snapshot beside events.jsonl: viewers attach in constant time.
            from training.rundir.snapshot import SnapshotWriter

            snapshots = SnapshotWriter(self.paths.events)
            snapshots.start()
            self._aux.append(snapshots)
        except Exception as exc:  # noqa: BLE001
            self._aux_failed("series snapshot", exc)
        if p.is_custom and p.metrics:
            try:
                from training.monitor.log_metrics import LogMetricParser, LogTailer

                tailer = LogTailer(self.rank0_stdout, LogMetricParser(p.metrics), self.paths.events,
                                   append=self._append)
                tailer.start()
                self._aux.append(tailer)
            except Exception as exc:  # noqa: BLE001
                self._aux_failed("metrics log tailer", exc)
        if p.is_custom and self.spec is not None and (p.checkpoint.watch or "checkpoint" not in p.metrics):
            try:
                from training.monitor.checkpoint_watch import CheckpointWatcher

                # Files written since this supervisor started are this launch's; older ones are not.
                pattern, scan = self._checkpoint_source(p)
                watcher = CheckpointWatcher(pattern, self.paths.events, self.paths.root, self.spec.cwd,
                                            since=self.started, append=self._append, scan=scan)
                watcher.start()
                self._aux.append(watcher)
                if scan is not None:
                    self.checkpoint_scan = watcher
            except Exception as exc:  # noqa: BLE001
                self._aux_failed("checkpoint watch", exc)

    def _checkpoint_source(self, p: Profile) -> tuple[str | None, Any]:
        """What the checkpoint watcher follows: `[checkpoint] watch`'s glob where the profile has
        one; else (and where no `[metrics]` checkpoint regex reports them) files and folders with
        a checkpoint's name under the script's working directory, and what its preset's framework
        saves; other runs' directories in the runs directory are not walked, this run's is."""
        from training.monitor.checkpoint_watch import CHECKPOINT_NAMES, CheckpointScan
        from training.monitor.metric_presets import PRESET_CHECKPOINT_NAMES, preset_names
        from training.placeholders import fill
        from training.supervise.launch import placeholder_values

        assert self.spec is not None
        if p.checkpoint.watch:
            return fill(p.checkpoint.watch, placeholder_values(self.paths.root)), None
        names = list(CHECKPOINT_NAMES)
        for preset in preset_names(p.metrics):
            names += [n for n in PRESET_CHECKPOINT_NAMES.get(preset, ()) if n not in names]
        runs = self.paths.root.parent
        scan = CheckpointScan(Path(self.spec.cwd), tuple(names), skip=(runs,), also=(self.paths.root,))
        log(f"checkpoint watch: {', '.join(names)} under {self.spec.cwd} (no [checkpoint] watch)")
        return None, scan

    def _start_health(self, p: Profile) -> None:
        """The health rules and the watchdog, over every node of a `[launch] hosts` run (its files
        in nodes/<host>/). A node the head started runs none: the head judges the whole run, so a
        hang is told once, and from the one place that sees every rank."""
        from training.monitor.health import HealthMonitor
        from training.monitor.watchdog import Watchdog, telemetry_gpu_util
        from training.rundir.nodes import node_dirs

        if read_run_json(self.paths).get("node"):
            log("health rules and watchdog: the head judges every node of this run")
            return
        nodes = node_dirs(self.paths, p.launch.hosts)
        emit = self._emit_health
        watchdog = Watchdog(self.paths, p, emit=emit, telemetry_lookup=telemetry_gpu_util(self.paths, nodes),
                            nodes=nodes)
        if p.health.stall_after_s > 0:
            watchdog.hang_after_s = p.health.stall_after_s
        # The watchdog's checks are rules of the health engine, which runs them in its thread.
        health = HealthMonitor(self.paths, p, emit=emit, act=self.health_action, watchdog=watchdog, nodes=nodes)
        health.start()
        self._aux.append(health)

    def _start_other_nodes(self, p: Profile, spec: LaunchSpec) -> None:
        """`[launch] hosts`: start every other host's node over SSH, each with its own supervisor in
        its own session there, all meeting at this node's rendezvous. Any failure stops the ones
        already started and fails the run before this node launches anything."""
        from training.supervise.nodes import node_profile, remote_nodes, start_node

        if len(p.launch.hosts) < 2:
            return
        argv = list(spec.argv)
        endpoint = argv[argv.index("--rdzv-endpoint") + 1]
        for node in remote_nodes(p, self.paths.id, self.paths.root.parent):
            for_nodes = node_profile(p, endpoint, spec.rdzv_id or self.paths.id, host=node.host)
            try:
                answer = start_node(for_nodes, node, self.paths.id, head=p.launch.hosts[0], cwd=str(spec.cwd))
            except TraindeckError:
                self._stop_other_nodes(grace_s=1.0)
                raise
            self.remote_nodes.append(node)
            message = f"node {node.host} started: supervisor pid {answer.get('pid')}, run directory {node.run_dir}"
            log(message)
            self._append([make_event("log", level="info", message=message, node=node.host)])
            self._write_run_json(head_host=p.launch.hosts[0],
                            nodes=[{"host": n.host, "run_dir": n.run_dir} for n in self.remote_nodes])
            self._follow_node(p, node, answer.get("pid"))

    def _follow_node(self, p: Profile, node: Any, supervisor_pid: Any) -> None:
        """One SSH connection that copies the node's files into <run>/nodes/<host>/ and reports
        its liveness and end (nothing is copied when that directory is the node's own)."""
        from training.supervise.node_follow import NodeFollower, shares_run_dir

        copy = self.paths.node(node.host)
        shared = shares_run_dir(copy, self.paths.id, supervisor_pid)
        log(f"following node {node.host}: " + ("its run directory is this one (shared filesystem), liveness only"
                                               if shared else f"copying its files into {copy.root}"))
        self.followers.append(NodeFollower(p.launch, node, copy, shared, self._node_news, log).start())

    def _node_news(self, news: Any) -> None:
        """A follower's report (its thread): a node that dropped out or failed ends the run on every
        node, as torchrun's semantics say; the main loop acts on it."""
        log(f"node {news.host}: {news.what} {news.state or ''} {news.message}".rstrip())
        if news.what == "unreachable":
            self._append([make_event("log", level="warning", message=news.message,
                                                         node=news.host)])
        elif self.node_lost is None and (news.what == "lost" or news.state == RunState.FAILED.value):
            self.node_lost = news

    def _stop_other_nodes(self, grace_s: float) -> None:
        """Stop every node this head started, all at once (each waits out its own grace)."""
        from training.supervise.nodes import stop_node

        if not self.remote_nodes or self.profile is None:
            return
        problems: list[str] = []
        threads = [threading.Thread(target=lambda n=n: problems.append(stop_node(self.profile, n, grace_s)))
                   for n in self.remote_nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for problem in filter(None, problems):
            log(problem)
            self._append([make_event("log", level="warning", message=problem)])

    def _close_followers(self) -> None:
        """Each node's end copied (or NODE_DRAIN_S gone by), then the connections closed: once the
        head writes exit.json, <run>/nodes/ holds what the other nodes had to say."""
        deadline = time.monotonic() + NODE_DRAIN_S
        for follower in self.followers:
            if not follower.close(max(0.0, deadline - time.monotonic())):
                log(f"node {follower.node.host}: its end did not arrive within {NODE_DRAIN_S:g} s")
        self.followers.clear()

    def _watch_rendezvous(self, p: Profile, spec: LaunchSpec) -> None:
        """A multi-node c10d launch waits for the other nodes before any worker starts: watch that
        wait so every viewer can say what it waits for (and whether the endpoint answers at all)."""
        from training.supervise.launch import parse_endpoint, rdzv_backend_of

        backend = rdzv_backend_of(p.launch)
        if not spec.uses_torchrun or p.launch.nnodes < 2 or backend not in ("c10d", "static") or spec.port is None:
            return
        from training.supervise.rendezvous import RendezvousWatch, StoreReader, UncountedReader

        argv = list(spec.argv)
        host, _ = parse_endpoint(argv[argv.index("--rdzv-endpoint") + 1])
        # A static rendezvous keeps no state to count: the watch says only whether it answers.
        reader = StoreReader(host, spec.port, spec.rdzv_id or "") if backend == "c10d" else UncountedReader()
        self.rendezvous = RendezvousWatch(host, spec.port, spec.rdzv_id or "", p.launch.nnodes, reader=reader).start()
        self._publish_rendezvous()

    def _publish_rendezvous(self, workers_up: bool = False, ended: str = "") -> None:
        """run.json's "rendezvous" when a fact changed, and a status event when its state did."""
        watch = self.rendezvous
        if watch is None:
            return
        record = watch.finish(met=True) if workers_up else watch.finish(met=False, error=ended) if ended \
            else watch.current()
        last = self.rendezvous_written
        if record == last:
            return
        self.rendezvous_written = record
        self._write_run_json(rendezvous=record.to_json())
        if last is None or last.state != record.state:
            text = record.describe(time.time())
            log(f"rendezvous: {text}")
            state = RunState.STARTING.value if record.pending else None
            event = make_event("status", state=state, message=text, source="supervisor",
                               rendezvous=record.state) if state else \
                make_event("log", level="info" if record.state == "met" else "error", message=text,
                           rendezvous=record.state)
            self._append([event])
        if workers_up or ended:
            self.rendezvous = None

    def _local_ranks_beating(self) -> list[int]:
        """The global ranks of this node's workers that wrote a heartbeat (they are training)."""
        from training.rundir.heartbeat import read_heartbeats

        mine = set(self.ranks_by_pid().values())
        return sorted(r for r in read_heartbeats(self.paths.root) if r in mine)

    def _make_notifier(self, p: Profile) -> Any:
        if not p.notify.command:
            return None
        from training.monitor.notify import Notifier

        def failed(outcome: Any) -> None:
            message = f"notify command {list(outcome.argv)} {outcome.error}"
            log(message)
            self._append([make_event("log", level="warning", message=message)])

        return Notifier(p.notify, run_id=self.paths.id, run_dir=str(self.paths.root), on_failure=failed)

    def _emit_health(self, events: list[dict[str, Any]]) -> None:
        """The health thread's events into events.jsonl; each firing (a `health` event, a watchdog
        warning with its rule) to the [notify] command too."""
        self._append(events)
        if self.notifier is not None:
            for event in events:
                if event.get("kind") == "health" or (event.get("kind") == "log" and event.get("rule")):
                    self.notifier.health(event)

    def health_action(self, asked: str, finding: Any) -> str:
        """A health rule fired with `asked` (pause, save-stop, stop): do what this run can; returns
        what was done. Only the built-in worker reads control requests, so a custom script gets
        stop for save-stop and a warning for pause. The nan rule's stop is save-stop for a built-in
        task: the worker refuses non-finite weights, so last.pt stays the last good checkpoint."""

        assert self.profile is not None
        custom = self.profile.is_custom
        if asked == "stop" and finding.rule == "nan" and not custom:
            asked = "save-stop"
        if asked == "rewind":
            asked = self._rewind_or_why(finding)
            if asked == "rewind":
                return asked
        if asked in ("pause", "save-stop") and not custom:
            self._send_control(asked)
            log(f"health rule {finding.rule}: {asked} sent to the worker")
            if asked == "save-stop":
                self.health_stop = {"rule": finding.rule, "message": finding.message, "action": asked}
                self.health_deadline = time.monotonic() + HEALTH_SAVE_STOP_S
            return asked
        if asked == "pause":
            return "warn"
        self.health_stop = {"rule": finding.rule, "message": finding.message, "action": "stop"}
        log(f"health rule {finding.rule}: stopping the run")
        self.stop_requested.set()
        return "stop"

    def _send_control(self, action: str) -> None:
        """A control request to rank 0, which reads it on its own node: here, or over SSH on the
        other node of a `[launch] hosts` run where c10d put rank 0 (found by its heartbeat)."""
        from training.rundir.control import send
        from training.rundir.nodes import rank0_host
        from training.supervise.nodes import control_node

        host = rank0_host(self.paths) if self.remote_nodes else None
        node = next((n for n in self.remote_nodes if n.host == host), None)
        if node is None or self.profile is None:
            send(self.paths, action)
            return
        control_node(self.profile, node, action, wait_s=None)
        log(f"control '{action}' sent to rank 0 on {host}")

    def _rewind_or_why(self, finding: Any) -> str:
        """Send the worker a rewind (returns "rewind"), or the action it falls back to: save-stop
        once health.rewind_max rewinds were done or with no checkpoints/last.pt to go back to
        (stop for a custom script, which the profile forbids to rewind in the first place)."""

        assert self.profile is not None
        if self.profile.is_custom:
            return "stop"
        limit = self.profile.health.rewind_max
        # An earlier supervisor of this run (before --resume) may have rewound it already.
        self.rewinds = max(self.rewinds, RunRecord.from_json(read_run_json(self.paths)).health_rewinds)
        if self.rewinds >= limit:
            log(f"health rule {finding.rule}: {self.rewinds} rewinds done (health.rewind_max = {limit}); save-stop")
            return "save-stop"
        if not (self.paths.checkpoints / "last.pt").exists():
            log(f"health rule {finding.rule}: no checkpoints/last.pt to rewind to; save-stop")
            return "save-stop"
        self._send_control("rewind")
        self.rewinds += 1
        self._write_run_json(health_rewinds=self.rewinds)
        log(f"health rule {finding.rule}: rewind {self.rewinds} of {limit} sent to the worker")
        return "rewind"

    def _aux_failed(self, what: str, exc: Exception) -> None:
        log(f"{what} not started: {exc!r}\n{traceback.format_exc()}")
        self._append([make_event("log", level="warning", message=f"{what} not started: {exc}")])

    def _stop_aux(self) -> None:
        if self.rendezvous is not None:
            self.rendezvous.stop()
        for helper in reversed(self._aux):
            try:
                helper.stop()
            except Exception as exc:  # noqa: BLE001
                log(f"stopping {type(helper).__name__}: {exc!r}")
        self._aux.clear()

    def ranks_by_pid(self) -> dict[int, int]:
        return pg.ranks_by_pid(self.procs)

    def rank0_stdout(self) -> Path | None:
        return rank0_stdout(self.paths)

    def _refresh_procs(self, force: bool = False) -> None:
        if self.launcher_ref is None:
            return
        adopted = self.containment.adopted(self.known, self.launcher_ref.pid) if self.containment else []
        pg.remember(self.known, pg.descendants(self.launcher_ref) + adopted)
        current = tuple(pg.alive(self.known.values()))
        if force or set(current) != set(self.procs):
            gone = [r for r in self.procs if r.role == "worker" and r not in current]
            if len(gone) == 1 and self.first_exit_rank is None and self.launcher_ref not in gone:
                # Only a lone exit tells who went first; several in one poll carry no order.
                self.first_exit_rank = gone[0].rank
                self._check_rank_failure(gone[0])
            self.procs = current
            self._write_run_json(processes=[r.to_json() for r in current])

    def _check_rank_failure(self, ref: pg.ProcRef) -> None:
        if ref.rank is None or self.launcher is None or self.launcher.poll() is not None:
            return
        if traceback_summary(rank_text(self.paths, ref.rank)):
            self.failure_seen_at = time.monotonic()
            log(f"rank {ref.rank} exited with a traceback; the launcher has {FAIL_FAST_S}s to notice")

    def _workers_up(self) -> bool:
        assert self.spec is not None
        workers = [r for r in self.procs if r.role == "worker"]
        return len(workers) >= self.spec.local_procs

    def _read_worker_events(self, reader: EventReader) -> None:
        for event in reader.read():
            if event.get("kind") == "checkpoint" and event.get("source") not in ("watch", "log"):
                self._script_reports_checkpoints()
            if event.get("kind") != "status" or event.get("rank") not in (0, None):
                continue
            state = event.get("state")
            if state == RunState.RUNNING.value and not self._is_ours(event):
                self.worker_running = True
            elif state == RunState.STOPPED.value and not self._is_ours(event):
                self.worker_stopped = True

    def _script_reports_checkpoints(self) -> None:
        if self.checkpoint_scan is not None:
            self.checkpoint_scan.retire()
            self.checkpoint_scan = None
            log("checkpoint watch: the script reports its own checkpoints (traindeck.report); the name scan stops")

    @staticmethod
    def _is_ours(event: dict[str, Any]) -> bool:
        return event.get("source") == "supervisor"

    def _monitor(self) -> RunResult:
        assert self.launcher is not None and self.profile is not None and self.spec is not None
        reader = EventReader(self.paths.events)
        # Events from before this launch (a resumed run) say nothing about this one.
        reader.offset = self.paths.events.stat().st_size if self.paths.events.exists() else 0
        last_refresh = 0.0
        while True:
            rc = self.launcher.poll()
            if rc is not None:
                break
            if self.stop_requested.is_set():
                return self._stop()
            if self.node_lost is not None:
                return self._node_dropped(self.node_lost)
            now = time.monotonic()
            if now - last_refresh >= REFRESH_PROCS_S:
                last_refresh = now
                self._refresh_procs()
            self._read_worker_events(reader)
            if self.rendezvous is not None:
                # torchrun starts the workers once every node joined: the first one ends the wait.
                self._publish_rendezvous(workers_up=any(r.role == "worker" for r in self.procs))
            if self.state is RunState.STARTING:
                if self.worker_running:
                    self.set_state(RunState.RUNNING, "the worker reported running", emit=False)
                elif self.profile.is_custom and self._workers_up():
                    workers = sum(1 for r in self.procs if r.role == "worker")
                    self.set_state(RunState.RUNNING, f"{workers} worker process(es) up")
                elif self.profile.launch.nnodes > 1 and self._workers_up() and (beating := self._local_ranks_beating()):
                    # Rank 0 (which reports metrics) may live on another node: this node's
                    # ranks training is what "running" means here.
                    where = "" if 0 in beating else "; the node with rank 0 reports the metrics"
                    self.set_state(RunState.RUNNING, f"rank(s) {', '.join(map(str, beating))} training on "
                                   f"this node{where}")
            if self.health_deadline is not None and now > self.health_deadline:
                log("the worker did not save-stop for the health rule in time: stopping it")
                self.health_deadline = None
                self.stop_requested.set()
                continue
            self._retry_pending_writes()
            if self.failure_seen_at is not None and now - self.failure_seen_at > FAIL_FAST_S:
                log("the launcher did not end the run after a rank failed: stopping it")
                self._kill_everything(grace_s=0.5)
            self.stop_requested.wait(POLL_S)
        self._read_worker_events(reader)
        if self.rendezvous is not None:
            record = self.rendezvous.current()
            self._publish_rendezvous(ended=record.error or f"the launcher exited with {rc} before all "
                                     f"{record.nnodes} nodes joined")
        return self._result(rc)

    def _kill_everything(self, grace_s: float) -> None:
        self._refresh_procs()
        term = [self.launcher_ref] if self.launcher_ref else []
        killed = pg.terminate_then_kill(list(self.known.values()), grace_s, term_first=term)
        if killed:
            log(f"SIGKILL to {len(killed)} process(es): {[r.pid for r in killed]}")
        if self.launcher is not None:
            try:
                self.launcher.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.launcher.kill()
                self.launcher.wait()

    def _stop(self) -> RunResult:
        assert self.profile is not None
        grace = self.profile.launch.stop_grace_s
        log(f"stop: SIGTERM to the launcher, {grace}s grace, then SIGKILL")
        stopping = threading.Thread(target=self._stop_other_nodes, args=(grace,))
        stopping.start()
        self._kill_everything(grace)
        stopping.join()
        rc = self.launcher.returncode if self.launcher else None
        if self.health_stop is not None:
            return self._result(rc)
        return RunResult(RunState.STOPPED, rc, message="stopped on request")

    def _node_dropped(self, news: Any) -> RunResult:
        """Another node's supervisor is gone (or its run failed) while this one trains: end this
        node's ranks first (so its failure is not mistaken for theirs), then finish() stops the
        other nodes. The message names the node and its ranks (from its copied heartbeats)."""
        from training.rundir.heartbeat import read_heartbeats

        self._kill_everything(grace_s=1.0)
        self.dropped_node = news.host
        ranks = sorted(read_heartbeats(self.paths.node(news.host).root))
        rank = news.failed_rank if news.failed_rank is not None else (ranks[0] if ranks else None)
        on = f"rank {', '.join(map(str, ranks))}" if len(ranks) <= 1 else f"ranks {', '.join(map(str, ranks))}"
        where = f"node {news.host} ({on})" if ranks else f"node {news.host}"
        what = "dropped out" if news.what == "lost" else "failed"
        message = f"{where} {what}: {news.message}"
        hint = (f"logs/supervisor.log of the node's run directory on {news.host} says why; every node was stopped"
                if news.what == "lost" else f"nodes/{news.host}/exit.json has the node's error; every node was stopped")
        # No returncode: this node's launcher ended because we killed it, which is not why the run
        # failed (a headless console exits 1, not 137).
        log(f"launcher exit {self.launcher.returncode if self.launcher else None} (killed: {message})")
        return RunResult(RunState.FAILED, None, rank, [], hint, message)

    def _result(self, rc: int) -> RunResult:
        assert self.profile is not None
        if self.health_stop is not None:
            rule, message = self.health_stop["rule"], self.health_stop["message"]
            how = "saved and stopped" if self.worker_stopped else "stopped"
            hint = ("checkpoints/last.pt is the last good checkpoint (--resume goes on from it); "
                    if self.worker_stopped else "") + f"[health] {rule} in the profile sets what the rule does"
            return RunResult(RunState.STOPPED, rc, message=f"{how} by the health rule '{rule}': {message}", hint=hint)
        if self.stop_requested.is_set():
            return RunResult(RunState.STOPPED, rc, message="stopped on request")
        if rc == 0:
            if self.worker_stopped:
                return RunResult(RunState.STOPPED, rc, message="saved and stopped")
            return RunResult(RunState.FINISHED, rc, message="finished")
        d = diagnose(self.paths, self.profile, rc, self.first_exit_rank)
        first = d.error[0] if d.error else f"exit code {rc}"
        who = f"rank {d.failed_rank}" if d.failed_rank is not None else "the launcher"
        rdzv = self.rendezvous_written
        if rdzv is not None and rdzv.state == "failed":
            # No worker ever started: the nodes never met, and that is the story.
            return RunResult(RunState.FAILED, rc, None, d.error, d.hint or "start every node with the same profile "
                             "and rdzv_endpoint; the endpoint is HOST:PORT of the first node",
                             f"{rdzv.describe(time.time())}; {first}")
        return RunResult(RunState.FAILED, rc, d.failed_rank, d.error, d.hint, f"{who} failed: {first}")

    def _take_gpu_baseline(self) -> dict[str, list[int]] | None:
        try:
            from training.monitor.gpu import get_backend
            from training.monitor.gpu_leaks import gpu_baseline

            backend = get_backend()
            return gpu_baseline(backend) if backend.available else None
        except Exception as exc:  # noqa: BLE001 - only the leak check's container path needs it
            log(f"GPU baseline failed: {exc!r}")
            return None

    def _gpu_leaks(self) -> list[dict[str, Any]]:
        """Processes of the run that still hold GPU memory now that it is over (training.monitor.gpu_leaks)."""
        try:
            from training.monitor.gpu import get_backend
            from training.monitor.gpu_leaks import gpu_leaks_after_exit
            from training.rundir.heartbeat import read_heartbeats

            run_uuids = [d.get("uuid") for beat in read_heartbeats(self.paths.root).values()
                         for d in beat.get("devices") or [] if isinstance(d, dict) and d.get("uuid")]
            leaks = gpu_leaks_after_exit(get_backend(), [r.to_json() for r in self.known.values()],
                                         run_uuids=run_uuids, baseline=self.gpu_baseline)
            head = self.profile.launch.hosts[0] if self.profile and self.remote_nodes else None
            return [{**leak, "node": head} for leak in leaks] if head else leaks
        except Exception as exc:  # noqa: BLE001 - a failed check must not cost the run its exit.json
            log(f"GPU leak check failed: {exc!r}")
            return []

    def _named_by_the_node_where_it_started(self, result: RunResult) -> RunResult:
        """After the drain, every node's exit.json is here: a failure that began on another node
        but reached the head first as its own rank's lost peer is named by that node and rank
        (training.supervise.diagnosis.node_root_cause)."""
        from training.supervise.diagnosis import node_root_cause

        if result.state is not RunState.FAILED or not self.remote_nodes:
            return result
        exits = {n.host: read_json(self.paths.node(n.host).exit_json) for n in self.remote_nodes}
        cause = node_root_cause(result.error, exits)
        if cause is None or cause[0] == self.dropped_node:
            return result
        host, data = cause
        error = [str(x) for x in data.get("error") or []]
        rank = data["failed_rank"]
        self.dropped_node = host
        log(f"the failure started on node {host} (rank {rank}); this node's error was collateral: {result.message}")
        return RunResult(RunState.FAILED, result.returncode, rank, error,
                         data.get("hint") or f"nodes/{host}/exit.json has the node's error; every node was stopped",
                         f"rank {rank} on node {host} failed: {error[0]}")

    def _other_nodes_gpu_leaks(self) -> list[dict[str, Any]]:
        """Every other node checks its own GPUs at its end (its exit.json's gpu_leaks, copied here by
        the drain): the head's exit.json lists them with their host, and so do its events. This
        node's own leaks name the head in a multi-node run."""
        if not self.remote_nodes or self.profile is None:
            return []
        leaks = []
        for node in self.remote_nodes:
            data = read_json(self.paths.node(node.host).exit_json)
            found = data.get("gpu_leaks") if isinstance(data, dict) else None
            leaks += [{**leak, "node": node.host} for leak in found or [] if isinstance(leak, dict)]
        return leaks

    def _named_for_the_disk(self, result: RunResult) -> RunResult:
        """A run that failed because the disk was full or read-only (a rank's checkpoint write, or
        the supervisor's own writes still failing at the end) says "disk full" first, with the fix."""
        if result.state is not RunState.FAILED or result.message.startswith("disk full"):
            return result
        text = " ".join([result.message, *result.error])
        if not (any(words in text for words in DISK_ERROR_TEXT) or (self.disk.failing and self.disk.disk_full)):
            return result
        hint = result.hint or (f"free space on the disk of {self.paths.root} (df -h {self.paths.root}), then "
                               f"'run.py --resume {self.paths.id}' goes on from checkpoints/last.pt")
        return RunResult(result.state, result.returncode, result.failed_rank, result.error, hint,
                         f"disk full: {result.message}")

    def finish(self, result: RunResult) -> RunResult:
        """No process of the run may outlive it: sweep, then write exit.json and the final state."""
        if result.state is RunState.FAILED and self.remote_nodes:
            # torchrun's semantics: one node failing ends the run on every node.
            self._stop_other_nodes(grace_s=self.profile.launch.stop_grace_s if self.profile else 5.0)
        self._close_followers()
        result = self._named_by_the_node_where_it_started(result)
        leftovers = pg.alive(self.known.values())
        if leftovers:
            log(f"{len(leftovers)} process(es) outlived the launcher: {[r.pid for r in leftovers]}")
            pg.terminate_then_kill(leftovers, grace_s=1.0)
        # Descendants whose parent died before a scan recorded them were re-parented to us (we are
        # a child subreaper): they are the run's too.
        me = pg.ref_of(os.getpid(), "supervisor")
        orphans = pg.alive(pg.descendants(me)) if me is not None else []
        if orphans:
            log(f"{len(orphans)} unrecorded descendant(s) outlived their parents: {[r.pid for r in orphans]}")
            pg.terminate_then_kill(orphans, grace_s=1.0)
            self.known.update({r.pid: r for r in orphans})
        # Nothing of the run may be left, however it detached: its cgroup, TRAINDECK_RUN_DIR in
        # the process table, the records (training.supervise.containment).
        containment = self.containment or Containment(self.paths, log)
        left = containment.final_check(self.known.values())
        leaks = self._gpu_leaks() + self._other_nodes_gpu_leaks()
        if leaks:
            from training.monitor.gpu_leaks import leak_events

            self._append(leak_events(leaks))
        info: dict[str, Any] = {"returncode": result.returncode}
        if result.failed_rank is not None:
            info["rank"] = result.failed_rank
        if result.hint:
            info["hint"] = result.hint
        if self.dropped_node is not None:
            info["node"] = self.dropped_node
            left = {**left, "failed_node": self.dropped_node}
        # Keep every process the run ever had (all gone now): post-mortems and tests walk them.
        if self.health_stop is not None:
            left = {**left, "health": dict(self.health_stop)}
            info["health"] = self.health_stop["rule"]
        if self.gpu_claim is not None:
            # After the sweep (nothing of the run is left on its GPUs), before exit.json: a run
            # that has ended has let go of its GPUs.
            self.gpu_claim.release()
        result = self._named_for_the_disk(result)
        if result.hint and "hint" not in info:
            info["hint"] = result.hint
        # The end records wait for room (END_RECORDS_WAIT_S at most): what a full disk kept back
        # first, then the status event, exit.json and run.json's final state, each written once.
        retry_until_written("run.json", self._flush_run_json, self.disk, sleep=self.retry_sleep)
        retry_until_written("events.jsonl", self._flush_events, self.disk, sleep=self.retry_sleep)
        self._tell_disk_trouble(at_end=True)
        disk = self.disk.summary()
        if disk is not None:
            left = {**left, "disk": disk}
        finish_run(self.paths, result.exit_record(self.started, gpu_leaks=leaks, **left),
                   processes=[r.to_json() for r in self.known.values()], status={"source": "supervisor", **info},
                   write=lambda what, fn: retry_until_written(what, fn, self.disk, sleep=self.retry_sleep))
        if self.notifier is not None:  # after exit.json: the command may read it
            self.notifier.end(result.state.value, result.message, returncode=result.returncode)
            self.notifier.close()
        self.state = result.state
        log(f"state {result.state.value}: {result.message}")
        return result


def _become_subreaper() -> bool:
    """Linux: orphaned descendants (a grandchild in its own session whose parent died) are
    re-parented to the supervisor instead of init, so finish() can still find and stop them."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m training.supervisor RUN_DIR", file=sys.stderr)
        return 2
    paths = RunPaths(Path(argv[0]).resolve())
    if not paths.root.is_dir():
        print(f"no run directory {paths.root}", file=sys.stderr)
        return 2
    # Our own output belongs in the run (start_run points it there already; a manual start not).
    paths.logs.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.supervisor_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(fd, 1), os.dup2(fd, 2)
    os.close(fd)
    _become_subreaper()
    disk_faults.arm_from_env(paths.root, log)  # tests only: unset, nothing happens
    sup = Supervisor(paths)
    try:
        result = sup.run()
    except Exception as exc:  # noqa: BLE001 - turn any bug into a failed run, never a silent one
        log("supervisor crashed:\n" + traceback.format_exc())
        if sup.launcher is not None and sup.launcher.poll() is None:
            sup._kill_everything(grace_s=1.0)
        result = RunResult(RunState.FAILED, None, None, [f"{type(exc).__name__}: {exc}"], None,
                           f"supervisor error: {exc}")
    sup.finish(result)
    return 0 if result.state in (RunState.FINISHED, RunState.STOPPED) else 1


if __name__ == "__main__":
    sys.exit(main())
