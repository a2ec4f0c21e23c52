"""What the run screen knows about a run, folded from run.json, events.jsonl and exit.json.

Pure data, no Textual: the screen's workers read files, the screen folds batches into a
`RunModel`, and `RunModel.header(now)` gives the frozen `HeaderInfo` the header widget renders.
Times come from the recorded timestamps; only a live run's elapsed time uses `now`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

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


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class RunModel:
    run_id: str = ""
    profile: str = ""
    mode: str = ""
    world_size: int = 0
    device: str = ""
    rehearsal: bool = False
    created: float | None = None
    # The state comes from exit.json once it exists, else from run.json (the supervisor's state
    # machine), else from the last status event (a run directory without a supervisor).
    run_json_state: str | None = None
    event_state: str | None = None
    state_t: float | None = None
    epochs: int = 0
    steps_per_epoch: int = 0
    start_step: int = 0
    running_t: float | None = None
    epoch: int = 0
    step: int = 0
    samples_per_s: float | None = None
    last_loss: float | None = None
    last_t: float | None = None
    last_metric_t: float | None = None
    paused: bool = False
    exit: ExitInfo | None = None
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

    @property
    def state(self) -> str:
        if self.exit is not None:
            if self.exit.state:
                return self.exit.state
            if self.exit.returncode is not None:
                return "finished" if self.exit.returncode == 0 else "failed"
        return self.run_json_state or self.event_state or "starting"

    def apply_events(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            kind = event.get("kind")
            t = _num(event.get("t"))
            if t is not None:
                self.last_t = t if self.last_t is None else max(self.last_t, t)
            if kind == "metric":
                self._metric(event, t)
            elif kind == "epoch":
                self.epoch = int(event.get("epoch") or self.epoch)
                self.epochs = int(event.get("epochs") or self.epochs)
                self.step = max(self.step, int(event.get("step") or 0))
                self.samples_per_s = _num(event.get("samples_per_s")) or self.samples_per_s
            elif kind == "status":
                self._status(event, t)
            elif kind == "log" and event.get("control") in ("pause", "resume"):
                self.paused = event.get("control") == "pause"
            elif kind == "log" and event.get("watchdog"):
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
        step = event.get("step")
        if isinstance(step, int):
            self.step = max(self.step, step)
        if isinstance(event.get("epoch"), int):
            self.epoch = max(self.epoch, event["epoch"])
        values = event.get("values") or {}
        if event.get("split", "train") == "train":
            self.last_loss = _num(values.get("loss")) if "loss" in values else self.last_loss
            sps = _num(values.get("samples_per_s"))
            if sps is not None:
                self.samples_per_s = sps
            if t is not None:
                self.last_metric_t = t

    def _status(self, event: dict[str, Any], t: float | None) -> None:
        state = event.get("state")
        if not isinstance(state, str):
            return
        if state == "running":
            self.running_t = self.running_t or t
            self.world_size = int(event.get("world_size") or self.world_size or 0)
            self.device = str(event.get("device") or self.device)
            self.epochs = int(event.get("epochs") or self.epochs)
            self.steps_per_epoch = int(event.get("steps_per_epoch") or self.steps_per_epoch)
            self.start_step = int(event.get("start_step") or 0)
            self.step = max(self.step, self.start_step)
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
        done = self.step - self.start_step
        spent = self.last_metric_t - self.running_t
        if done <= 0 or spent <= 0:
            return None
        return max(0.0, (self.total_steps - self.step) * spent / done)

    def header(self, now: float) -> HeaderInfo:
        return HeaderInfo(
            run_id=self.run_id, profile=self.profile, mode=self.mode, world_size=self.world_size,
            device=self.device, state=self.state, epoch=self.epoch, epochs=self.epochs, step=self.step,
            total_steps=self.total_steps, samples_per_s=self.samples_per_s, elapsed_s=self.elapsed(now),
            eta_s=self.eta(), rehearsal=self.rehearsal, paused=self.paused and self.live)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h >= 24:
        return f"{h // 24}d{h % 24:02d}h"
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_stall(seconds: float) -> str:
    """How long a rank has not stepped: '92 s' like the watchdog's messages, then '2:05'."""
    return f"{seconds:.0f} s" if seconds < 99.5 else format_duration(seconds)


def format_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
