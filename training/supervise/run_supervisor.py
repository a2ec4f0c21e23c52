"""`python -m training.supervisor RUN_DIR`: one run's state machine, from launch to exit.json.

    [queued --its GPUs free-->] starting --workers up / worker's `status running`--> running
        --launcher exits--> finished | failed;  SIGTERM (stop) in any state --> stopped

    queued: run.py --queue on a shared box whose GPUs are busy; the supervisor holds a ticket in
    the box's GPU queue (training.rundir.gpu_locks) until they are free, nothing launched yet.

Like torch elastic's agent: a validated launch config (`training.supervise.launch.LaunchSpec`), a
`RunState`, and a monitor loop that returns a `RunResult` (training.supervise.outcome). The
supervisor never trains; this module is the state machine alone, each job a part of its own:

    run_writer         its writes to run.json and events.jsonl (a full disk delays them)
    run_processes      the launcher and every descendant: spawn, track, kill, the final sweep
    node_coordination  the other nodes of a `[launch] hosts` run, and the rendezvous report
    health_actions     what a health rule's firing does, and the [notify] command
    helper_threads     telemetry, health, series snapshot, metrics tailer, checkpoint watch

It runs in its own session with stdio on logs/supervisor.log (training.console.runs.start_run spawns it
so), and ignores SIGHUP, so a dropped SSH connection never reaches training.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from training.errors import TraindeckError
from training.monitor.gpu import get_backend
from training.monitor.gpu_leaks import leak_events
from training.profile import Profile, parse_profile
from training.rundir import RunPaths, RunState, hostname, read_run_json
from training.rundir import processes as pg
from training.rundir.events_file import EventReader, make_event
from training.rundir.records import GpuQueuePlace, finish_run
from training.supervise import disk_faults
from training.supervise.diagnosis import diagnose
from training.supervise.gpu_select import GpusBusy, QueueLeft, claim_gpus
from training.supervise.health_actions import HealthActions
from training.supervise.helper_threads import HelperThreads
from training.supervise.launch import PROJECT_ROOT, LaunchSpec, build_launch, format_command, free_port
from training.supervise.node_coordination import OtherNodes, RendezvousReport
from training.supervise.outcome import RunResult, named_for_the_disk
from training.supervise.run_processes import RunProcesses
from training.supervise.run_writer import RunWriter
from training.supervise.supervisor_log import log

POLL_S = 0.2
REFRESH_PROCS_S = 0.5
# How long start_run may take to record the supervisor's pid in run.json before we write it.
HANDOFF_TIMEOUT_S = 5.0


class Supervisor:
    def __init__(self, paths: RunPaths):
        self.paths = paths
        self.state = RunState.STARTING
        self.profile: Profile | None = None
        self.spec: LaunchSpec | None = None
        self.stop_requested = threading.Event()
        # What rank 0 said of itself (its own `status` events): it trains, it saved and stopped.
        self.worker_running = False
        self.worker_stopped = False
        self.started = time.time()
        # The GPUs this run took on a shared box, under their locks (released in finish()).
        self.gpu_claim: Any = None
        # While queued for them (run.py --queue): since when, and the last place + holders written.
        self.queued_since: float | None = None
        self.queue_key: tuple | None = None
        self.writer = RunWriter(paths)
        self.processes = RunProcesses(paths, self.writer)
        self.nodes = OtherNodes(paths, self.writer)
        self.rendezvous = RendezvousReport(self.writer)
        self.health = HealthActions(paths, self.writer, self.nodes, self.stop_requested)
        self.helpers = HelperThreads(paths, self.writer, self.processes, self.health, since=self.started)

    def set_state(self, state: RunState, message: str = "", emit: bool = True, **info: Any) -> None:
        self.state = state
        self.writer.run_json(state=state.value, state_t=round(time.time(), 3))
        if emit:
            info.setdefault("source", "supervisor")
            self.writer.append([make_event("status", state=state.value, message=message, **info)])
        log(f"state {state.value}: {message}")

    # -- before the launch --
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

    def _claim_gpus(self, profile: Profile, queue: bool) -> Any:
        """Select the run's GPUs under the box's GPU locks and hold them for the run's life
        (training.supervise.gpu_select). Without `queue` one look: GpusBusy when they are taken.
        With it, wait in the box's line (state `queued`) until they are free; a stop while
        waiting (SIGTERM: --stop, Ctrl-C of a headless console) leaves the line (QueueLeft)."""
        claim = claim_gpus(profile, self.paths.id, get_backend(), wait=queue, on_wait=self._queued,
                           should_stop=self.stop_requested.is_set, sleep=self.stop_requested.wait)
        if self.queued_since is not None:
            waited = round(time.time() - self.queued_since, 3)
            self.writer.run_json(gpu_queue=None, queued_s=waited)
            log(f"left the GPU queue after {waited:.0f} s: the GPUs are free")
        sel = claim.selection
        if sel.gpus is not None:
            # Indices to read (nvidia-smi's numbers), UUIDs to be sure (CUDA_VISIBLE_DEVICES names them).
            self.writer.run_json(gpus={"select": sel.mode, "indices": list(sel.gpus), "uuids": list(sel.uuids),
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
        self.writer.run_json(gpu_queue=place.to_json())
        self.set_state(RunState.QUEUED, place.describe(), place=waiting.place, waiting_for=waiting.why)

    # -- the run --
    def run(self) -> RunResult:
        self._install_signals()
        self._await_handoff()
        data = read_run_json(self.paths)
        self.writer.run_json(
            id=data.get("id") or self.paths.id, host=data.get("host") or hostname(),
            created=data.get("created") or round(self.started, 3), rehearsal=bool(data.get("rehearsal", False)),
            argv=data.get("argv") or [], supervisor=pg.pid_create_time(),
            launcher=None, processes=[], state=RunState.STARTING.value, state_t=round(time.time(), 3))
        try:
            self.profile = self.health.profile = read_profile(self.paths)
            self.health.notify_with(self.profile)  # before launching: a failed launch notifies too
            self.gpu_claim = self._claim_gpus(self.profile, queue=data.get("queue") is True)
            self.spec = prepare_launch(self.profile, self.paths, self.gpu_claim)
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
        self.writer.run_json(profile=p.name, mode=p.launch.mode, world_size=p.world_size,
                             port=spec.port, env=dict(spec.env), launch_argv=list(spec.argv),
                             rank_offset=spec.rank_offset, cwd=str(spec.cwd))
        command = format_command(spec, with_env=False)
        self.set_state(RunState.STARTING, f"launching {p.launch.mode} x{p.world_size}: {command}",
                       world_size=p.world_size, mode=p.launch.mode, port=spec.port)
        for note in spec.notes:
            self.writer.append([make_event("log", level="info", message=note)])
        if self.stop_requested.is_set():
            return RunResult(RunState.STOPPED, None, message="stopped before launch")
        try:
            self.nodes.start(p, spec)
        except TraindeckError as exc:
            return RunResult(RunState.FAILED, None, None, [str(exc)],
                             "check that `ssh -o BatchMode=yes HOST` logs in without a password from this box; "
                             f"`run.py --check --profile {p.name}` checks every host", f"cannot start the nodes: {exc}")
        try:
            self.processes.spawn(spec)
        except OSError as exc:
            return RunResult(RunState.FAILED, None, None, [str(exc)], None, f"cannot start {spec.argv[0]}: {exc}")
        self.helpers.start(p, spec)
        self.rendezvous.start(p, spec)
        try:
            return self._monitor()
        finally:
            self.rendezvous.stop()
            self.helpers.stop()

    def _monitor(self) -> RunResult:
        launcher = self.processes.launcher
        assert launcher is not None and self.profile is not None and self.spec is not None
        reader = EventReader(self.paths.events)
        # Events from before this launch (a resumed run) say nothing about this one.
        reader.offset = self.paths.events.stat().st_size if self.paths.events.exists() else 0
        last_refresh = 0.0
        while True:
            rc = launcher.poll()
            if rc is not None:
                break
            if self.stop_requested.is_set():
                return self._stop()
            if self.nodes.lost is not None:
                return self._node_dropped()
            now = time.monotonic()
            if now - last_refresh >= REFRESH_PROCS_S:
                last_refresh = now
                self.processes.refresh()
            self._read_worker_events(reader)
            # torchrun starts the workers once every node joined: the first one ends the wait.
            self.rendezvous.publish(workers_up=self.processes.workers() > 0)
            if self.state is RunState.STARTING:
                self._maybe_running()
            if self.health.save_stop_overdue(now):
                log("the worker did not save-stop for the health rule in time: stopping it")
                self.stop_requested.set()
                continue
            self.writer.retry_pending()
            if self.processes.failed_rank_outlived(now):
                log("the launcher did not end the run after a rank failed: stopping it")
                self.processes.kill_everything(grace_s=0.5)
            self.stop_requested.wait(POLL_S)
        self._read_worker_events(reader)
        self.rendezvous.launcher_ended(rc)
        return self._result(rc)

    def _maybe_running(self) -> None:
        """starting -> running: the worker said so; or, without a worker that reports (a custom
        script), its processes are up; or, on a node without rank 0, this node's ranks train."""
        assert self.profile is not None and self.spec is not None
        workers_up = self.processes.workers() >= self.spec.local_procs
        if self.worker_running:
            self.set_state(RunState.RUNNING, "the worker reported running", emit=False)
        elif self.profile.is_custom and workers_up:
            self.set_state(RunState.RUNNING, f"{self.processes.workers()} worker process(es) up")
        elif self.profile.launch.nnodes > 1 and workers_up and (beating := self.processes.local_ranks_beating()):
            # Rank 0 (which reports metrics) may live on another node: this node's ranks training
            # is what "running" means here.
            where = "" if 0 in beating else "; the node with rank 0 reports the metrics"
            self.set_state(RunState.RUNNING, f"rank(s) {', '.join(map(str, beating))} training on this node{where}")

    def _read_worker_events(self, reader: EventReader) -> None:
        for event in reader.read():
            if event.get("kind") == "checkpoint" and event.get("source") not in ("watch", "log"):
                self.helpers.script_reports_checkpoints()
            if event.get("kind") != "status" or event.get("rank") not in (0, None):
                continue
            ours = event.get("source") == "supervisor"
            state = event.get("state")
            if state == RunState.RUNNING.value and not ours:
                self.worker_running = True
            elif state == RunState.STOPPED.value and not ours:
                self.worker_stopped = True

    # -- how it ends --
    def _stop(self) -> RunResult:
        assert self.profile is not None
        grace = self.profile.launch.stop_grace_s
        log(f"stop: SIGTERM to the launcher, {grace}s grace, then SIGKILL")
        stopping = threading.Thread(target=self.nodes.stop, args=(grace,))
        stopping.start()
        self.processes.kill_everything(grace)
        stopping.join()
        rc = self.processes.returncode
        if self.health.stopped_by is not None:
            return self._result(rc)
        return RunResult(RunState.STOPPED, rc, message="stopped on request")

    def _node_dropped(self) -> RunResult:
        """Another node is gone: end this node's ranks first (so its failure is not mistaken for
        theirs), then finish() stops the other nodes."""
        assert self.nodes.lost is not None
        self.processes.kill_everything(grace_s=1.0)
        result = self.nodes.dropped_result(self.nodes.lost)
        log(f"launcher exit {self.processes.returncode} (killed: {result.message})")
        return result

    def _result(self, rc: int | None) -> RunResult:
        assert self.profile is not None
        health_stop = self.health.stopped_result(rc, self.worker_stopped)
        if health_stop is not None:
            return health_stop
        if self.stop_requested.is_set():
            return RunResult(RunState.STOPPED, rc, message="stopped on request")
        if rc == 0:
            if self.worker_stopped:
                return RunResult(RunState.STOPPED, rc, message="saved and stopped")
            return RunResult(RunState.FINISHED, rc, message="finished")
        d = diagnose(self.paths, self.profile, rc, self.processes.first_exit_rank)
        first = d.error[0] if d.error else f"exit code {rc}"
        who = f"rank {d.failed_rank}" if d.failed_rank is not None else "the launcher"
        if self.rendezvous.failed():
            # No worker ever started: the nodes never met, and that is the story.
            return RunResult(RunState.FAILED, rc, None, d.error, d.hint or "start every node with the same profile "
                             "and rdzv_endpoint; the endpoint is HOST:PORT of the first node",
                             f"{self.rendezvous.written.describe(time.time())}; {first}")
        return RunResult(RunState.FAILED, rc, d.failed_rank, d.error, d.hint, f"{who} failed: {first}")

    def finish(self, result: RunResult) -> RunResult:
        """No process of the run may outlive it: sweep, then write exit.json and the final state."""
        if result.state is RunState.FAILED and self.nodes.remote:
            # torchrun's semantics: one node failing ends the run on every node.
            self.nodes.stop(grace_s=self.profile.launch.stop_grace_s if self.profile else 5.0)
        self.nodes.close_followers()
        result = self.nodes.named_by_the_node_where_it_started(result)
        left = self.processes.sweep()
        leaks = self.nodes.name_head(self.processes.gpu_leaks()) + self.nodes.other_nodes_gpu_leaks()
        if leaks:
            self.writer.append(leak_events(leaks))
        info: dict[str, Any] = {"returncode": result.returncode}
        if result.failed_rank is not None:
            info["rank"] = result.failed_rank
        if result.hint:
            info["hint"] = result.hint
        if self.nodes.dropped_node is not None:
            info["node"] = self.nodes.dropped_node
            left = {**left, "failed_node": self.nodes.dropped_node}
        if self.health.stopped_by is not None:
            left = {**left, "health": dict(self.health.stopped_by)}
            info["health"] = self.health.stopped_by["rule"]
        if self.gpu_claim is not None:
            # After the sweep (nothing of the run is left on its GPUs), before exit.json: a run
            # that has ended has let go of its GPUs.
            self.gpu_claim.release()
        result = named_for_the_disk(result, self.paths, self.writer.disk)
        if result.hint and "hint" not in info:
            info["hint"] = result.hint
        # The end records wait for room: what a full disk kept back first, then the status event,
        # exit.json and run.json's final state, each written once.
        self.writer.flush_before_the_end()
        disk = self.writer.disk.summary()
        if disk is not None:
            left = {**left, "disk": disk}
        # Every process the run ever had (all gone now) stays in run.json: post-mortems and tests walk them.
        finish_run(self.paths, result.exit_record(self.started, gpu_leaks=leaks, **left),
                   processes=[r.to_json() for r in self.processes.known.values()],
                   status={"source": "supervisor", **info}, write=self.writer.write_at_end)
        self.health.tell_the_end(result)
        self.state = result.state
        log(f"state {result.state.value}: {result.message}")
        return result


def read_profile(paths: RunPaths) -> Profile:
    """The run's profile.toml, as start_run (or --resume) wrote it."""
    try:
        text = paths.profile.read_text(encoding="utf-8")
    except OSError as exc:
        raise TraindeckError(f"cannot read {paths.profile}: {exc}") from None
    return parse_profile(text, path=paths.profile)


def prepare_launch(profile: Profile, paths: RunPaths, gpu_claim: Any) -> LaunchSpec:
    """The launch on the GPUs claimed, with a free port for a single-node ddp rendezvous."""
    port = None
    if profile.launch.mode == "ddp" and not profile.launch.rdzv_endpoint:
        port = free_port()
    # A custom script runs where the run was started (run.json's "cwd", kept on --resume); a run
    # recorded before that key ran in traindeck's root, and resumes there.
    cwd = read_run_json(paths).get("cwd") or str(PROJECT_ROOT)
    selected = gpu_claim.selection.cuda_visible if gpu_claim is not None else None
    return build_launch(profile, paths, port, cwd=cwd, cuda_visible=selected)


def _become_subreaper() -> bool:
    """Linux: orphaned descendants (a grandchild in its own session whose parent died) are
    re-parented to the supervisor instead of init, so finish() can still find and stop them."""
    try:
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
        launcher = sup.processes.launcher
        if launcher is not None and launcher.poll() is None:
            sup.processes.kill_everything(grace_s=1.0)
        result = RunResult(RunState.FAILED, None, None, [f"{type(exc).__name__}: {exc}"], None,
                           f"supervisor error: {exc}")
    sup.finish(result)
    return 0 if result.state in (RunState.FINISHED, RunState.STOPPED) else 1


if __name__ == "__main__":
    sys.exit(main())
