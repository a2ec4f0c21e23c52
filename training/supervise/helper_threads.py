"""The supervisor's helper threads for one launch: telemetry, health, series snapshot, metrics, checkpoints.

    telemetry         training.monitor.telemetry.TelemetrySampler -> telemetry.jsonl ([telemetry] interval_s)
    health            training.monitor.health.HealthMonitor, the watchdog's checks among its rules,
                      over every node of a `[launch] hosts` run (a node the head started runs none:
                      the head judges the whole run, from the one place that sees every rank)
    series snapshot   training.rundir.snapshot.SnapshotWriter: viewers attach in constant time
    metrics tailer    training.monitor.log_metrics.LogTailer: a custom script's printed metrics
    checkpoint watch  training.monitor.checkpoint_watch.CheckpointWatcher: a custom script's files

Each is a helper: one that cannot start is told (the supervisor's log and a warning event) and
training goes on without it. They are stopped in reverse order when the launcher has exited.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any, Callable

from training.monitor.checkpoint_watch import CHECKPOINT_NAMES, CheckpointScan, CheckpointWatcher
from training.monitor.health import HealthMonitor
from training.monitor.log_metrics import LogMetricParser, LogTailer
from training.monitor.metric_presets import PRESET_CHECKPOINT_NAMES, preset_names
from training.monitor.telemetry import TelemetrySampler
from training.monitor.watchdog import Watchdog, telemetry_gpu_util
from training.placeholders import fill
from training.profile import Profile
from training.rundir import RunPaths, read_run_json
from training.rundir.events_file import make_event
from training.rundir.logs import rank0_stderr, rank0_stdout
from training.rundir.node_views import node_dirs
from training.rundir.snapshot import SnapshotWriter
from training.supervise.health_actions import HealthActions
from training.supervise.launch import LaunchSpec, placeholder_values
from training.supervise.run_processes import RunProcesses
from training.supervise.run_writer import RunWriter
from training.supervise.supervisor_log import log
from training.supervise.visibility import run_gpu_indices


class HelperThreads:
    def __init__(self, paths: RunPaths, writer: RunWriter, processes: RunProcesses, health: HealthActions,
                 since: float):
        self.paths = paths
        self.writer = writer
        self.processes = processes
        self.health = health
        self.since = since  # files written since this supervisor started are this launch's
        self.running: list[Any] = []
        # The checkpoint watcher that finds files by name (no [checkpoint] watch), while it runs.
        self.checkpoint_scan: CheckpointWatcher | None = None

    def start(self, p: Profile, spec: LaunchSpec) -> None:
        if p.telemetry.interval_s > 0:
            self._start("telemetry", lambda: TelemetrySampler(
                self.paths, p.telemetry.interval_s, self.processes.ranks_by_pid,
                gpu_indices=run_gpu_indices(spec), trouble=self.writer.disk))
        self._start("health monitor", lambda: self._health_monitor(p))
        self._start("series snapshot", lambda: SnapshotWriter(self.paths.events))
        if p.is_custom and p.metrics:
            # Rank 0's stdout and, under torchrun, its stderr (where a plain tqdm bar draws), as a
            # direct launch's rank-0.log holds both. One parser each: a bar's drawing spans lines,
            # and the other stream's lines (Lightning's warnings) must not break into it.
            self._start("metrics log tailer", lambda: LogTailer(
                lambda: rank0_stdout(self.paths), LogMetricParser(p.metrics), self.paths.events,
                append=self.writer.append))
            self._start("metrics log tailer (stderr)", lambda: LogTailer(
                lambda: rank0_stderr(self.paths), LogMetricParser(p.metrics), self.paths.events,
                append=self.writer.append))
        if p.is_custom and (p.checkpoint.watch or "checkpoint" not in p.metrics):
            self._start("checkpoint watch", lambda: self._checkpoint_watcher(p, spec))

    def _start(self, what: str, make: Callable[[], Any]) -> None:
        try:
            helper = make()
            if helper is None:
                return
            helper.start()
            self.running.append(helper)
        except Exception as exc:  # noqa: BLE001 - a helper that cannot start must not stop training
            log(f"{what} not started: {exc!r}\n{traceback.format_exc()}")
            self.writer.append([make_event("log", level="warning", message=f"{what} not started: {exc}")])

    def _health_monitor(self, p: Profile) -> HealthMonitor | None:
        if read_run_json(self.paths).get("node"):
            log("health rules and watchdog: the head judges every node of this run")
            return None
        nodes = node_dirs(self.paths, p.launch.hosts)
        watchdog = Watchdog(self.paths, p, emit=self.health.emit,
                            telemetry_lookup=telemetry_gpu_util(self.paths, nodes), nodes=nodes)
        if p.health.stall_after_s > 0:
            watchdog.hang_after_s = p.health.stall_after_s
        # The watchdog's checks are rules of the health engine, which runs them in its thread.
        return HealthMonitor(self.paths, p, emit=self.health.emit, act=self.health.act, watchdog=watchdog,
                             nodes=nodes)

    def _checkpoint_watcher(self, p: Profile, spec: LaunchSpec) -> CheckpointWatcher:
        pattern, scan = self._checkpoint_source(p, spec)
        watcher = CheckpointWatcher(pattern, self.paths.events, self.paths.root, spec.cwd,
                                    since=self.since, append=self.writer.append, scan=scan)
        if scan is not None:
            self.checkpoint_scan = watcher
        return watcher

    def _checkpoint_source(self, p: Profile, spec: LaunchSpec) -> tuple[str | None, CheckpointScan | None]:
        """What the checkpoint watcher follows: `[checkpoint] watch`'s glob where the profile has
        one; else (and where no `[metrics]` checkpoint regex reports them) files and folders with
        a checkpoint's name under the script's working directory, and what its preset's framework
        saves; other runs' directories in the runs directory are not walked, this run's is."""
        if p.checkpoint.watch:
            return fill(p.checkpoint.watch, placeholder_values(self.paths.root)), None
        names = list(CHECKPOINT_NAMES)
        for preset in preset_names(p.metrics):
            names += [n for n in PRESET_CHECKPOINT_NAMES.get(preset, ()) if n not in names]
        runs = self.paths.root.parent
        scan = CheckpointScan(Path(spec.cwd), tuple(names), skip=(runs,), also=(self.paths.root,))
        log(f"checkpoint watch: {', '.join(names)} under {spec.cwd} (no [checkpoint] watch)")
        return None, scan

    def script_reports_checkpoints(self) -> None:
        """The script reports its own checkpoints (traindeck.report): the name scan would tell each twice."""
        if self.checkpoint_scan is not None:
            self.checkpoint_scan.retire()
            self.checkpoint_scan = None
            log("checkpoint watch: the script reports its own checkpoints (traindeck.report); the name scan stops")

    def stop(self) -> None:
        for helper in reversed(self.running):
            try:
                helper.stop()
            except Exception as exc:  # noqa: BLE001
                log(f"stopping {type(helper).__name__}: {exc!r}")
        self.running.clear()
