"""What the run does when a health rule fires, and who is told: the supervisor's side of health.

The health engine (training.monitor.health, a thread the supervisor starts) judges; this part acts
for it (`act`): pause, save-stop and rewind travel to rank 0 through the control channel
(training.rundir.control; over SSH when rank 0 is on another node of a `[launch] hosts` run), stop
ends the run here. Only the built-in worker reads control requests, so a custom script gets stop
for save-stop and a warning for pause. Rewinds are counted in run.json ("health_rewinds") so a
resumed run goes on counting towards health.rewind_max.

It also holds the [notify] command's runner (training.monitor.notify): each firing goes to it, and
the run's end once exit.json is written.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from training.monitor.health import Finding
from training.monitor.notify import Notifier
from training.profile import Profile
from training.rundir import RunPaths, RunState, read_run_json
from training.rundir.control import send
from training.rundir.events_file import make_event
from training.rundir.records import RunRecord
from training.supervise.node_coordination import OtherNodes
from training.supervise.node_ssh import control_node
from training.supervise.outcome import RunResult
from training.supervise.run_writer import RunWriter
from training.supervise.supervisor_log import log

# A health rule's save-stop goes to the worker at its next logging boundary; a worker that has
# not stopped this long after is stopped by the supervisor.
HEALTH_SAVE_STOP_S = 300.0


class HealthActions:
    def __init__(self, paths: RunPaths, writer: RunWriter, nodes: OtherNodes, stop_requested: threading.Event):
        self.paths = paths
        self.writer = writer
        self.nodes = nodes
        self.stop_requested = stop_requested
        self.profile: Profile | None = None
        # The rule that stopped the run (rule, message, action) and, for a save-stop, when the
        # supervisor stops the run itself if the worker has not.
        self.stopped_by: dict[str, str] | None = None
        self.save_stop_deadline: float | None = None
        self.rewinds = 0  # asked of the worker by the nan rule in this run (at most health.rewind_max)
        self.notifier: Notifier | None = None

    def notify_with(self, p: Profile) -> None:
        """The [notify] command's runner, before launching: a failed launch notifies too."""
        if not p.notify.command:
            return

        def failed(outcome: Any) -> None:
            message = f"notify command {list(outcome.argv)} {outcome.error}"
            log(message)
            self.writer.append([make_event("log", level="warning", message=message)])

        self.notifier = Notifier(p.notify, run_id=self.paths.id, run_dir=str(self.paths.root), on_failure=failed)

    def emit(self, events: list[dict[str, Any]]) -> None:
        """The health thread's events into events.jsonl; each firing (a `health` event, a watchdog
        warning with its rule) to the [notify] command too."""
        self.writer.append(events)
        if self.notifier is not None:
            for event in events:
                if event.get("kind") == "health" or (event.get("kind") == "log" and event.get("rule")):
                    self.notifier.health(event)

    def act(self, asked: str, finding: Finding) -> str:
        """A health rule fired with `asked` (pause, save-stop, stop, rewind): do what this run can;
        returns what was done. The nan rule's stop is save-stop for a built-in task: the worker
        refuses non-finite weights, so last.pt stays the last good checkpoint."""
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
                self.stopped_by = {"rule": finding.rule, "message": finding.message, "action": asked}
                self.save_stop_deadline = time.monotonic() + HEALTH_SAVE_STOP_S
            return asked
        if asked == "pause":
            return "warn"
        self.stopped_by = {"rule": finding.rule, "message": finding.message, "action": "stop"}
        log(f"health rule {finding.rule}: stopping the run")
        self.stop_requested.set()
        return "stop"

    def _send_control(self, action: str) -> None:
        """A control request to rank 0, which reads it on its own node: here, or over SSH on the
        other node of a `[launch] hosts` run where c10d put rank 0."""
        node = self.nodes.rank0_node()
        if node is None or self.profile is None:
            send(self.paths, action)
            return
        control_node(self.profile, node, action, wait_s=None)
        log(f"control '{action}' sent to rank 0 on {node.host}")

    def _rewind_or_why(self, finding: Finding) -> str:
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
        self.writer.run_json(health_rewinds=self.rewinds)
        log(f"health rule {finding.rule}: rewind {self.rewinds} of {limit} sent to the worker")
        return "rewind"

    def save_stop_overdue(self, now: float) -> bool:
        """The worker did not save-stop in time: the supervisor stops the run (told once)."""
        if self.save_stop_deadline is None or now <= self.save_stop_deadline:
            return False
        self.save_stop_deadline = None
        return True

    def stopped_result(self, rc: int | None, worker_stopped: bool) -> RunResult | None:
        """The run's end when a health rule stopped it (None when none did)."""
        if self.stopped_by is None:
            return None
        rule, message = self.stopped_by["rule"], self.stopped_by["message"]
        how = "saved and stopped" if worker_stopped else "stopped"
        hint = ("checkpoints/last.pt is the last good checkpoint (--resume goes on from it); "
                if worker_stopped else "") + f"[health] {rule} in the profile sets what the rule does"
        return RunResult(RunState.STOPPED, rc, message=f"{how} by the health rule '{rule}': {message}", hint=hint)

    def tell_the_end(self, result: RunResult) -> None:
        """After exit.json (the command may read it)."""
        if self.notifier is not None:
            self.notifier.end(result.state.value, result.message, returncode=result.returncode)
            self.notifier.close()
