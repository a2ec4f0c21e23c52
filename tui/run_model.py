"""The one run model: what both viewers know about a run, folded from run.json, events.jsonl,
exit.json and the liveness check (all read by `tui.feed.RunFeed`).

Pure data, no Textual. The run screen folds each batch of the feed into a `RunModel` and
renders `RunModel.header(now)` (a frozen `HeaderInfo`); the headless printer folds the same
events and prints its progress line from the same fields. Times come from the recorded
timestamps; only a live run's elapsed time uses `now`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tui.formats import format_stall, integer
from tui.formats import number as _num

LIVE_STATES = ("starting", "running")
# The watchdog repeats a straggler warning at most every 5 min while the rank stays slow and has
# no "recovered" event for it: a straggler mark older than this has gone quiet and is dropped.
STRAGGLER_SHOW_S = 330.0


@dataclass(frozen=True)
class Alert:
    """A watchdog warning about one rank, as its device panel shows it."""

    kind: str  # "hang" (the rank stopped) or "straggler" (it is slow)
    rank: int
    step: int | None = None
    stalled_s: float | None = None
    t: float | None = None
    culprit: bool = True  # False: a hang where the heartbeats cannot tell which rank is stuck

    def label(self, now: float | None = None) -> str:
        """'HUNG 1:32' (counting on while the run is watched live), 'STALLED?' or 'slow'."""
        if self.kind == "straggler":
            return "slow"
        stalled = self.stalled_s
        if stalled is not None and now is not None and self.t is not None:
            stalled += max(0.0, now - self.t)
        head = "HUNG" if self.culprit else "STALLED?"
        return head if stalled is None else f"{head} {format_stall(stalled)}"


@dataclass(frozen=True)
class HeaderInfo:
    run_id: str = ""
    profile: str = ""
    mode: str = ""
    world_size: int = 0
    device: str = ""
    state: str = "starting"
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    total_steps: int = 0
    samples_per_s: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    rehearsal: bool = False
    paused: bool = False


@dataclass
class ExitInfo:
    returncode: int | None = None
    state: str = ""
    failed_rank: int | None = None
    lines: list[str] = field(default_factory=list)
    hint: str = ""
    message: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExitInfo:
        lines = data.get("error_lines") or data.get("lines") or data.get("errors") or data.get("error") or []
        if isinstance(lines, str):
            lines = lines.splitlines()
        rank = data.get("failed_rank")
        return cls(returncode=data.get("returncode"), state=str(data.get("state") or ""),
                   failed_rank=rank if isinstance(rank, int) else None,
                   lines=[str(x) for x in lines], hint=str(data.get("hint") or ""),
                   message=str(data.get("message") or ""))


@dataclass
class RunModel:
    run_id: str = ""
    profile: str = ""
    mode: str = ""
    world_size: int = 0
    device: str = ""
    rehearsal: bool = False
    created: float | None = None
    # The state comes from exit.json once it exists, else from the liveness check (a supervisor
    # that died without writing its end: failed), else from run.json (the supervisor's state
    # machine), else from the last status event (a run directory without a supervisor).
    run_json_state: str | None = None
    event_state: str | None = None
    state_t: float | None = None
    orphaned: bool = False
    epochs: int = 0
    steps_per_epoch: int = 0
    start_step: int = 0
    running_t: float | None = None
    epoch: int | None = None  # None until an event names one
    step: int | None = None
    samples_per_s: float | None = None
    last_loss: float | None = None
    first_t: float | None = None
    last_t: float | None = None
    last_metric_t: float | None = None
    paused: bool = False
    exit: ExitInfo | None = None
    # The last value of every train and val metric, the best checkpoint, counts of the story.
    train: dict[str, Any] = field(default_factory=dict)
    val: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    checkpoints: int = 0
    warnings: int = 0
    errors: int = 0
    version: int = 0  # bumps when a step, epoch or value changed (the headless progress line)
    # rank -> the watchdog's open warning about it (cleared by its "recovered" event).
    alerts: dict[int, Alert] = field(default_factory=dict)

    # ---- folding ---------------------------------------------------------------------------
    def apply_run_json(self, data: dict[str, Any]) -> None:
        self.run_id = str(data.get("id") or self.run_id)
        self.profile = str(data.get("profile") or self.profile)
        self.mode = str(data.get("mode") or self.mode)
        self.world_size = int(data.get("world_size") or self.world_size or 0)
        self.rehearsal = bool(data.get("rehearsal", self.rehearsal))
        self.created = _num(data.get("created")) or self.created
        state = data.get("state")
        if isinstance(state, str) and state:
            self.run_json_state = state
            self.state_t = _num(data.get("state_t")) or self.state_t

    def apply_exit(self, data: dict[str, Any] | None) -> None:
        """exit.json's content, or None when there is none (again, after a resume)."""
        self.exit = ExitInfo.from_json(data) if isinstance(data, dict) else None

    def apply_orphaned(self, orphaned: bool) -> None:
        """The feed's liveness check: True while run.json claims a live run whose supervisor is gone."""
        self.orphaned = orphaned

    @property
    def state(self) -> str:
        if self.exit is not None:
            if self.exit.state:
                return self.exit.state
            if self.exit.returncode is not None:
                return "finished" if self.exit.returncode == 0 else "failed"
        if self.orphaned:
            return "failed"
        return self.run_json_state or self.event_state or "starting"

    def apply_events(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.apply_event(event)

    def apply_event(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        t = _num(event.get("t"))
        if t is not None:
            self.first_t = t if self.first_t is None else self.first_t
            self.last_t = t if self.last_t is None else max(self.last_t, t)
        epochs = integer(event.get("epochs"))
        if epochs:
            self.epochs = epochs
        if kind == "metric":
            self._metric(event, t)
        elif kind == "epoch":
            self.epoch = integer(event.get("epoch")) if integer(event.get("epoch")) is not None else self.epoch
            self._step_to(integer(event.get("step")))
            self.samples_per_s = _num(event.get("samples_per_s")) or self.samples_per_s
            self.version += 1
        elif kind == "checkpoint":
            self.checkpoints += 1
            if event.get("best") and event.get("value") is not None:
                self.best = event
        elif kind == "status":
            self._status(event, t)
        elif kind == "log":
            self._log(event, t)

    def _step_to(self, step: int | None) -> None:
        if step is not None:
            self.step = step if self.step is None else max(self.step, step)

    def _log(self, event: dict[str, Any], t: float | None) -> None:
        level = event.get("level")
        if level == "warning":
            self.warnings += 1
        elif level == "error":
            self.errors += 1
        if event.get("control") in ("pause", "resume"):
            self.paused = event.get("control") == "pause"
        elif event.get("watchdog"):
            self._watchdog(event, t)

    def _watchdog(self, event: dict[str, Any], t: float | None) -> None:
        kind = event.get("watchdog")
        rank = event.get("rank")
        ranks = [r for r in event.get("ranks") or [] if isinstance(r, int) and not isinstance(r, bool)]
        if isinstance(rank, int) and not isinstance(rank, bool) and rank not in ranks:
            ranks.append(rank)
        if kind == "recovered":
            # One rank moving ends the incident for every rank of it; with no ranks named, all.
            for r in ranks or list(self.alerts):
                self.alerts.pop(r, None)
            return
        if kind not in ("hang", "straggler"):
            return
        step = event.get("step") if isinstance(event.get("step"), int) else None
        stalled = _num(event.get("stalled_s"))
        for r in ranks:
            if kind == "straggler" and self.alerts.get(r, Alert("straggler", r)).kind == "hang":
                continue  # a hung rank stays hung until it recovers
            self.alerts[r] = Alert(kind, r, step=step, stalled_s=stalled, t=t,
                                   culprit=kind == "straggler" or isinstance(rank, int))

    def _metric(self, event: dict[str, Any], t: float | None) -> None:
        self._step_to(integer(event.get("step")))
        epoch = integer(event.get("epoch"))
        if epoch is not None:
            self.epoch = epoch if self.epoch is None else max(self.epoch, epoch)
        values = event.get("values") if isinstance(event.get("values"), dict) else {}
        split = event.get("split", "train")
        if split == "train":
            self.train.update(values)
            self.last_loss = _num(values.get("loss")) if "loss" in values else self.last_loss
            sps = _num(values.get("samples_per_s"))
            if sps is not None:
                self.samples_per_s = sps
            if t is not None:
                self.last_metric_t = t
        elif split == "val":
            self.val.update(values)
        self.version += 1

    def _status(self, event: dict[str, Any], t: float | None) -> None:
        state = event.get("state")
        if not isinstance(state, str):
            return
        self.steps_per_epoch = integer(event.get("steps_per_epoch")) or self.steps_per_epoch
        start_step = integer(event.get("start_step"))
        if state == "running":
            self.running_t = self.running_t or t
            self.world_size = int(event.get("world_size") or self.world_size or 0)
            self.device = str(event.get("device") or self.device)
            self.start_step = start_step or 0
        self._step_to(start_step)
        self.event_state = state
        if self.run_json_state is None:
            self.state_t = t

    # ---- derived ---------------------------------------------------------------------------
    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def current_alerts(self, now: float) -> dict[int, Alert]:
        """The watchdog marks to show at `now`: none once the run has ended, no stale stragglers."""
        if not self.live:
            return {}
        # The recorded time too: a replayed history must not show an old straggler as current.
        now = max(now, self.last_t or now)
        return {r: a for r, a in self.alerts.items()
                if a.kind == "hang" or a.t is None or now - a.t <= STRAGGLER_SHOW_S}

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch if self.epochs and self.steps_per_epoch else 0

    def elapsed(self, now: float) -> float | None:
        if self.created is None:
            return None
        end = now if self.live else (self.state_t or self.last_t or now)
        return max(0.0, end - self.created)

    def eta(self) -> float | None:
        """Remaining seconds at the rate of the steps done since this process started training."""
        if not self.live or not self.total_steps or self.running_t is None or self.last_metric_t is None:
            return None
        done = (self.step or 0) - self.start_step
        spent = self.last_metric_t - self.running_t
        if done <= 0 or spent <= 0:
            return None
        return max(0.0, (self.total_steps - (self.step or 0)) * spent / done)

    def header(self, now: float) -> HeaderInfo:
        return HeaderInfo(
            run_id=self.run_id, profile=self.profile, mode=self.mode, world_size=self.world_size,
            device=self.device, state=self.state, epoch=self.epoch or 0, epochs=self.epochs, step=self.step or 0,
            total_steps=self.total_steps, samples_per_s=self.samples_per_s, elapsed_s=self.elapsed(now),
            eta_s=self.eta(), rehearsal=self.rehearsal, paused=self.paused and self.live)
