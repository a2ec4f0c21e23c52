"""The one run model: what both viewers know about a run, folded from run.json, events.jsonl,
exit.json and the liveness check (all read by `tui.feed.RunFeed`).

Pure data, no Textual. The run screen folds each batch of the feed into a `RunModel` and
renders `RunModel.header(now)` (a frozen `HeaderInfo`); the headless printer folds the same
events and prints its progress line from the same fields. Times come from the recorded
timestamps; only a live run's elapsed time uses `now`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from traindeck.numbers import finite_number
from training.rundir.node_views import NodeView
from training.rundir.records import (
    CheckpointEvent,
    EpochEvent,
    Event,
    ExitRecord,
    HealthEvent,
    LogEvent,
    MetricEvent,
    RendezvousRecord,
    RunRecord,
    StatusEvent,
    TimingEvent,
    parse_event,
)
from training.rundir.step_anatomy import Anatomy, Throughput, TimingFold, throughput
from tui.formats import format_stall

LIVE_STATES = ("queued", "starting", "running")
# The watchdog repeats a straggler warning at most every 5 min while the rank stays slow and has
# no "recovered" event for it: a straggler mark older than this has gone quiet and is dropped.
STRAGGLER_SHOW_S = 330.0
MAX_CHECKPOINT_MARKS = 2048  # the plot marks at most this many checkpoint steps
# The plot marks at most this many health firings, the newest (the header counts every incident):
# a rule firing all day on a long run is not a list as long as the run.
MAX_HEALTH_MARKS = 2048
# Rewinds kept, the newest: the [health] nan rule's rewind_max stops a run long before this.
MAX_REWINDS = 256


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
class CheckpointMark:
    """The last checkpoint as the header shows it: 'last.pt ep 11 val_loss 0.4123 ★ 2 min ago'."""

    name: str  # the file name, e.g. "last.pt"
    epoch: int | None
    step: int | None
    monitor: str
    value: float | None
    best: bool  # this checkpoint (or one written at its step) is the best so far
    best_value: float | None = None  # else the best one's value and epoch
    best_epoch: int | None = None
    age: str = ""  # coarse ("40 s", "3 min", "2 h"), so the header does not change every second


def format_age(seconds: float | None) -> str:
    """How long ago, coarse: '40 s', '3 min', '2 h', '5 d' ('' when unknown)."""
    if seconds is None:
        return ""
    s = max(0.0, seconds)
    if s < 60:
        return f"{int(s // 10 * 10)} s" if s >= 10 else "now"
    if s < 3600:
        return f"{int(s // 60)} min"
    if s < 86400 * 2:
        return f"{int(s // 3600)} h"
    return f"{int(s // 86400)} d"


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
    health: str = ""  # the newest [health] firing, short: "nan step 25 → save-stop"
    checkpoint: CheckpointMark | None = None
    # A queued run: "#2, waiting for GPU 2 held by pid 4312, user alice, 10.2 GB" ("" otherwise).
    waiting: str = ""
    # While a multi-node run's nodes have not met: "waiting for 1 of 2 nodes at HOST:PORT (12 s)".
    rendezvous: str = ""
    # A `[launch] hosts` run's nodes: "127.0.0.1 head · 127.0.0.2 running" ("" for one node).
    nodes: str = ""
    # Where known (a GPU run of a built-in task): samples/s per GPU and MFU (0..1, never above).
    per_gpu: float | None = None
    mfu: float | None = None


@dataclass
class RunModel:
    run_id: str = ""
    profile: str = ""
    mode: str = ""
    world_size: int = 0
    device: str = ""
    rehearsal: bool = False
    created: float | None = None
    rendezvous: RendezvousRecord | None = None  # run.json's, a multi-node run only
    # A `[launch] hosts` run's nodes (training.rundir.node_views), the head first; () for one node.
    nodes: tuple[NodeView, ...] = ()
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
    epoch: int | None = None  # None until an event names one
    step: int | None = None
    samples_per_s: float | None = None
    last_loss: float | None = None
    paused: bool = False
    # When: training started in this process, the first and last event, the last train metric.
    running_t: float | None = None
    first_t: float | None = None
    last_t: float | None = None
    last_metric_t: float | None = None
    exit: ExitRecord | None = None  # exit.json, parsed in training/rundir/records.py
    # The last value of every train and val metric, the best checkpoint, counts of the story.
    train: dict[str, Any] = field(default_factory=dict)
    val: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    checkpoints: int = 0
    last_checkpoint: CheckpointEvent | None = None
    best_checkpoint: CheckpointEvent | None = None
    # (step, epoch, best) of the most recent checkpoints, for the plot's marks (bounded).
    checkpoint_marks: list[tuple[int | None, int | None, bool]] = field(default_factory=list)
    warnings: int = 0
    errors: int = 0
    version: int = 0  # bumps when a step, epoch or value changed (the headless progress line)
    # rank -> the watchdog's open warning about it (cleared by its "recovered" event).
    alerts: dict[int, Alert] = field(default_factory=dict)
    # The newest MAX_HEALTH_MARKS [health] firings (training.monitor.health), oldest first,
    # updates included: the plot's marks.
    health: list[HealthEvent] = field(default_factory=list)
    # Health incidents (a firing that is no update of an open one): how many, the newest one's first
    # firing, its id, its newest step and how often it fired. The header shows that one.
    health_incidents: int = 0
    health_head: HealthEvent | None = None
    health_head_id: str | None = None
    health_head_step: int | None = None
    health_head_firings: int = 1
    # The newest MAX_REWINDS rewinds of the [health] nan rule: (from_step, to_step), oldest first.
    # The points after to_step before it are superseded (training.rundir.series drops them from the plot).
    rewinds: list[tuple[int, int]] = field(default_factory=list)
    # While queued for GPUs: its place and what it waits for (run.json's gpu_queue, else the last
    # `queued` status event).
    queue_place: int | None = None
    waiting_for: str = ""
    # The step anatomy: every rank's newest timing event (training.rundir.step_anatomy), and what
    # TFLOP/s and MFU are computed from (the worker's running status).
    timing: TimingFold = field(default_factory=TimingFold)
    flops_per_sample: float | None = None
    gpu_model: str = ""
    compute_dtype: str = ""
    gpus: int | None = None
    tokens_per_sample: float | None = None

    # ---- folding ---------------------------------------------------------------------------
    def apply_run_json(self, data: dict[str, Any]) -> None:
        run = RunRecord.from_json(data)
        self.run_id = run.id or self.run_id
        self.profile = run.profile or self.profile
        self.mode = run.mode or self.mode
        self.world_size = run.world_size or self.world_size
        self.rehearsal = run.rehearsal if "rehearsal" in data else self.rehearsal
        self.created = run.created or self.created
        self.rendezvous = run.rendezvous or self.rendezvous
        if run.state:
            self.run_json_state = run.state
            self.state_t = run.state_t or self.state_t
        if run.gpu_queue is not None:
            self.queue_place, self.waiting_for = run.gpu_queue.place, run.gpu_queue.waiting_for

    def apply_exit(self, data: dict[str, Any] | None) -> None:
        """exit.json's content, or None when there is none (again, after a resume)."""
        self.exit = ExitRecord.from_json(data)

    def apply_orphaned(self, orphaned: bool) -> None:
        """The feed's liveness check: True while run.json claims a live run whose supervisor is gone."""
        self.orphaned = orphaned

    @property
    def state(self) -> str:
        if self.exit is not None and self.exit.final_state:
            return self.exit.final_state
        if self.orphaned:
            return "failed"
        return self.run_json_state or self.event_state or "starting"

    def apply_events(self, events: Iterable[Event | dict[str, Any]]) -> None:
        """Events typed as the feed yields them (training.rundir.records); a dict is parsed first."""
        for e in events:
            if isinstance(e, dict):
                e = parse_event(e)
                if e is None:
                    continue
            self._apply(e)

    def apply_event(self, event: Event | dict[str, Any]) -> None:
        e = parse_event(event) if isinstance(event, dict) else event
        if e is not None:
            self._apply(e)

    def _apply(self, e: Event) -> None:
        if e.t is not None:
            self.first_t = e.t if self.first_t is None else self.first_t
            self.last_t = e.t if self.last_t is None else max(self.last_t, e.t)
        if isinstance(e, MetricEvent):
            self._metric(e)
        elif isinstance(e, EpochEvent):
            self.epochs = e.epochs or self.epochs
            self.epoch = e.epoch if e.epoch is not None else self.epoch
            self._step_to(e.step)
            self.samples_per_s = e.samples_per_s or self.samples_per_s
            self.version += 1
        elif isinstance(e, CheckpointEvent):
            self._checkpoint(e)
        elif isinstance(e, StatusEvent):
            self._status(e)
        elif isinstance(e, LogEvent):
            self._log(e)
        elif isinstance(e, TimingEvent):
            self.timing.add(e)
        elif isinstance(e, HealthEvent):
            self.health.append(e)
            if len(self.health) > MAX_HEALTH_MARKS:
                del self.health[: len(self.health) - MAX_HEALTH_MARKS]
            self._health(e)

    def _health(self, e: HealthEvent) -> None:
        incident = e.incident
        if e.update and incident is not None:
            # News about an incident already raised: no new warning.
            if incident == self.health_head_id:
                self.health_head_step = e.step if e.step is not None else self.health_head_step
                self.health_head_firings = e.firings if e.firings is not None else self.health_head_firings + 1
            return
        self.warnings += 1
        self.health_incidents += 1
        self.health_head, self.health_head_id, self.health_head_step, self.health_head_firings = e, incident, e.step, 1

    def _checkpoint(self, e: CheckpointEvent) -> None:
        self.checkpoints += 1
        if e.best and e.raw.get("value") is not None:
            self.best = e.raw  # as written: the summary shows its monitor and value ("nan" too)
        if e.best:
            self.best_checkpoint = e
        self.last_checkpoint = e
        marks = self.checkpoint_marks
        if marks and marks[-1][0] == e.step and marks[-1][1] == e.epoch:
            marks[-1] = (e.step, e.epoch, marks[-1][2] or e.best)  # last.pt and best.pt of one step
        else:
            marks.append((e.step, e.epoch, e.best))
            if len(marks) > MAX_CHECKPOINT_MARKS:
                del marks[: len(marks) - MAX_CHECKPOINT_MARKS]

    def checkpoint_mark(self, now: float) -> CheckpointMark | None:
        """The last checkpoint for the header; its age from `now` (the injected clock)."""
        last = self.last_checkpoint
        if last is None:
            return None
        best = self.best_checkpoint
        is_best = best is not None and (best is last or (best.step == last.step and best.epoch == last.epoch))
        age = format_age(now - last.t) if last.t is not None else ""
        return CheckpointMark(
            name=last.path.rsplit("/", 1)[-1] or "?", epoch=last.epoch, step=last.step, monitor=last.monitor,
            value=last.value, best=is_best, best_value=None if is_best or best is None else best.value,
            best_epoch=None if is_best or best is None else best.epoch, age=age)

    def _step_to(self, step: int | None) -> None:
        if step is not None:
            self.step = step if self.step is None else max(self.step, step)

    def _log(self, e: LogEvent) -> None:
        if e.level == "warning":
            self.warnings += 1
        elif e.level == "error":
            self.errors += 1
        if e.control in ("pause", "resume"):
            self.paused = e.control == "pause"
        elif e.control == "rewind":
            self._rewind(e)
        elif e.watchdog:
            self._watchdog(e)

    def _rewind(self, e: LogEvent) -> None:
        """The worker went back to its last good checkpoint: the step counter continues from its
        step, and what the superseded stretch reported is no longer the run's latest."""
        if e.from_step is None or e.to_step is None:
            return
        self.rewinds.append((e.from_step, e.to_step))
        if len(self.rewinds) > MAX_REWINDS:
            del self.rewinds[: len(self.rewinds) - MAX_REWINDS]
        self.step = e.to_step
        self.last_loss = None
        self.version += 1

    def _watchdog(self, e: LogEvent) -> None:
        ranks = list(e.ranks)
        if e.rank is not None and e.rank not in ranks:
            ranks.append(e.rank)
        if e.watchdog == "recovered":
            # One rank moving ends the incident for every rank of it; with no ranks named, all.
            for r in ranks or list(self.alerts):
                self.alerts.pop(r, None)
            return
        if e.watchdog not in ("hang", "straggler"):
            return
        for r in ranks:
            if e.watchdog == "straggler" and self.alerts.get(r, Alert("straggler", r)).kind == "hang":
                continue  # a hung rank stays hung until it recovers
            self.alerts[r] = Alert(e.watchdog, r, step=e.step, stalled_s=e.stalled_s, t=e.t,
                                   culprit=e.watchdog == "straggler" or e.rank is not None)

    def _metric(self, e: MetricEvent) -> None:
        self._step_to(e.step)
        if e.epoch is not None:
            self.epoch = e.epoch if self.epoch is None else max(self.epoch, e.epoch)
        if e.split == "train":
            self.train.update(e.values)
            if "loss" in e.values:
                self.last_loss = finite_number(e.values.get("loss"))
            self.samples_per_s = finite_number(e.values.get("samples_per_s")) or self.samples_per_s
            if e.t is not None:
                self.last_metric_t = e.t
        elif e.split == "val":
            self.val.update(e.values)
        self.version += 1

    def _status(self, e: StatusEvent) -> None:
        if not e.state:
            return
        self.epochs = e.epochs or self.epochs
        self.steps_per_epoch = e.steps_per_epoch or self.steps_per_epoch
        if e.state == "running":
            self.running_t = self.running_t or e.t
            self.world_size = e.world_size or self.world_size
            self.device = e.device or self.device
            self.start_step = e.start_step or 0
            if e.gpus is not None:  # the built-in worker's: what TFLOP/s and MFU are computed from
                self.flops_per_sample, self.gpus = e.flops_per_sample, e.gpus
                self.gpu_model, self.compute_dtype = e.gpu_model, e.compute_dtype
                self.tokens_per_sample = e.tokens_per_sample
        self._step_to(e.start_step)
        if e.state == "queued":
            self.queue_place, self.waiting_for = e.place, e.waiting_for or self.waiting_for
        self.event_state = e.state
        if self.run_json_state is None:
            self.state_t = e.t

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

    def waiting_text(self) -> str:
        """A queued run's place and what it waits for ("" unless it is queued now)."""
        if self.state != "queued":
            return ""
        place = f"#{self.queue_place}" if self.queue_place is not None else "in line"
        return f"{place}, waiting for {self.waiting_for}" if self.waiting_for else place

    def rendezvous_text(self, now: float) -> str:
        """What a live run's nodes are waiting for ("" once they met, or for one node)."""
        r = self.rendezvous
        if r is None or not self.live or not (r.pending or r.state == "failed"):
            return ""
        return r.describe(now)

    def health_text(self) -> str:
        """The newest health incident as the header shows it ("" when none): its rule, its newest
        step, the action its first firing took, how often it fired, how many incidents before it."""
        e = self.health_head
        if e is None:
            return ""
        step = self.health_head_step
        text = e.rule + (f" step {step}" if step is not None else "")
        if e.action != "warn":
            text += f" → {e.action}"
        if self.health_head_firings > 1:
            text += f" ×{self.health_head_firings}"
        return text + (f" (+{self.health_incidents - 1})" if self.health_incidents > 1 else "")

    def anatomy(self) -> Anatomy | None:
        """While the run trains, each rank's newest logging interval, folded (the Time view, the
        header): where the time goes now. Once it has ended, its whole run: the last interval is
        then only a tail of a few steps with the final evaluation and checkpoint in it."""
        return self.timing.recent() if self.live else self.timing.whole_run()

    def throughput(self) -> Throughput:
        """Samples/s per GPU, TFLOP/s per GPU and MFU, or why not (training.rundir.step_anatomy)."""
        return throughput(self.samples_per_s, self.flops_per_sample, self.gpus or 0, self.gpu_model,
                          self.compute_dtype, ranks=max(1, self.world_size),
                          tokens_per_sample=self.tokens_per_sample)

    def header(self, now: float) -> HeaderInfo:
        speed = self.throughput()
        return HeaderInfo(
            per_gpu=speed.per_gpu if self.gpus else None, mfu=speed.mfu,
            run_id=self.run_id, profile=self.profile, mode=self.mode, world_size=self.world_size,
            device=self.device, state=self.state, epoch=self.epoch or 0, epochs=self.epochs, step=self.step or 0,
            total_steps=self.total_steps, samples_per_s=self.samples_per_s, elapsed_s=self.elapsed(now),
            eta_s=self.eta(), rehearsal=self.rehearsal, paused=self.paused and self.live, health=self.health_text(),
            checkpoint=self.checkpoint_mark(now), waiting=self.waiting_text(), rendezvous=self.rendezvous_text(now),
            nodes=self.nodes_text())

    def nodes_text(self) -> str:
        """The nodes by name, each other node with its own state (the head's is the run's)."""
        return " · ".join(f"{v.host} head" if v.head else f"{v.host} {v.state}" for v in self.nodes)
