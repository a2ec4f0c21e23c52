"""The run directory's records as types, parsed in one place: run.json, exit.json, each event kind.

Readers take these instead of re-checking "a number but not a bool" in every module; the files'
keys stay exactly as they are (older runs and outside tools read them):

    RunRecord.from_json(run.json)     id, profile, mode, world_size, host, created, state, supervisor ...
                                      (a queued run's place: GpuQueuePlace)
    create_run_json(paths, record)    the one creator of run.json (start_run, gpu-check); every change
                                      after it is a merge (paths.update_run_json)
    ExitRecord.from_json(exit.json)   returncode, state, failed_rank, error, hint, message, t, seconds
    parse_event(line)                 MetricEvent | EpochEvent | CheckpointEvent | StatusEvent | LogEvent
                                      | HealthEvent | TimingEvent: each event parsed once, where it is read (tui.feed,
                                      the series snapshot, --runs); every reader after takes the type.
                                      `raw` is the line as written, for the describer (tui.describe)
    finish_run(paths, record)         the end of a run: the status event, exit.json, run.json's final
                                      state; every writer of exit.json (supervisor, --stop, orphan
                                      reaping, gpu-check)

Numbers follow traindeck.numbers: a metric value keeps NaN and Infinity (`number`), a step, an
epoch, a time or a count is a finite number (`finite_number`) and a step or an epoch an int.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Union

from traindeck.numbers import finite_number, number
from traindeck.untrusted import shown_text
from training.rundir.events_file import append_events, make_event
from training.rundir.paths import RunPaths, update_run_json, write_json_atomic
from training.rundir.processes import ProcRef
from training.rundir.rendezvous import RendezvousRecord, rendezvous_of


def as_int(value: Any) -> int | None:
    """An int that is not a bool, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_dict(value: Any) -> dict[str, Any]:
    """A JSON object's value that should itself be an object ({"supervisor": {...}}), else {}."""
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    """Text to show (traindeck.untrusted.shown_text: no escapes from a neighbour's file); else ""."""
    return shown_text(value) if isinstance(value, str) else ""


def _path_text(value: Any) -> str:
    """A path as recorded (a directory may be named anything): used, not shown."""
    return value if isinstance(value, str) else ""


# ---- run.json ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RunRecord:
    id: str = ""
    profile: str = ""
    mode: str = ""
    world_size: int = 0
    host: str = ""
    created: float | None = None
    state: str = ""
    state_t: float | None = None
    rehearsal: bool = False
    supervisor: ProcRef | None = None  # None until start_run records the pid
    argv: tuple[str, ...] = ()
    cwd: str = ""
    # Rewinds the [health] nan rule asked in this run, over every supervisor it had (--resume,
    # take-over): health.rewind_max bounds the run, not one supervisor's life.
    health_rewinds: int = 0
    queue: bool = False  # started with --queue: the supervisor waits for busy GPUs
    gpu_queue: GpuQueuePlace | None = None  # while queued: its place and what it waits for
    # A multi-node run's rendezvous (training.rundir.rendezvous), None for one node.
    rendezvous: RendezvousRecord | None = None

    @classmethod
    def from_json(cls, data: Any) -> RunRecord:
        data = data if isinstance(data, dict) else {}
        argv = data.get("argv") if isinstance(data.get("argv"), list) else []
        return cls(id=_str(data.get("id")), profile=_str(data.get("profile")), mode=_str(data.get("mode")),
                   world_size=as_int(data.get("world_size")) or 0, host=_str(data.get("host")),
                   created=finite_number(data.get("created")), state=_str(data.get("state")),
                   state_t=finite_number(data.get("state_t")), rehearsal=bool(data.get("rehearsal")),
                   supervisor=ProcRef.from_json(data.get("supervisor"), "supervisor"),
                   argv=tuple(str(a) for a in argv), cwd=_path_text(data.get("cwd")),
                   health_rewinds=max(0, as_int(data.get("health_rewinds")) or 0),
                   queue=data.get("queue") is True, gpu_queue=GpuQueuePlace.from_json(data.get("gpu_queue")),
                   rendezvous=rendezvous_of(data))

    def to_json(self, **extra: Any) -> dict[str, Any]:
        """A new run's run.json: who it is, its supervisor (or nulls until it is spawned), no
        processes yet; `extra` adds keys the creator knows (a node's "node", "queue", ...)."""
        sup = self.supervisor
        data: dict[str, Any] = {
            "id": self.id, "profile": self.profile, "mode": self.mode, "world_size": self.world_size,
            "argv": list(self.argv), "host": self.host, "created": self.created, "rehearsal": self.rehearsal,
            "supervisor": {"pid": sup.pid if sup else None, "create_time": sup.create_time if sup else None},
            "launcher": None, "processes": [], "port": None, "env": {}, "state": self.state,
            "state_t": self.state_t}
        if self.cwd:
            data["cwd"] = self.cwd
        data.update(extra)
        return data


def create_run_json(paths: RunPaths, record: RunRecord, **extra: Any) -> dict[str, Any]:
    """Write a new run's run.json (the one creator; every later change goes through
    paths.update_run_json, the one merge). Returns what was written."""
    data = record.to_json(**extra)
    write_json_atomic(paths.run_json, data)
    return data


@dataclass(frozen=True)
class GpuQueuePlace:
    """run.json's "gpu_queue" while a run waits for its GPUs (the supervisor rewrites it when its
    place or what it waits for changes): {"place": 2, "waiting_for": "GPU 2 held by ...",
    "since": t, "t": t}. Place 1 is next in line."""

    place: int | None
    waiting_for: str
    since: float | None = None
    t: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> GpuQueuePlace | None:
        if not isinstance(data, dict):
            return None
        return cls(as_int(data.get("place")), _str(data.get("waiting_for")), finite_number(data.get("since")),
                   finite_number(data.get("t")))

    def to_json(self) -> dict[str, Any]:
        return {"place": self.place, "waiting_for": self.waiting_for, "since": self.since, "t": self.t}

    def describe(self) -> str:
        """"#2, waiting for GPU 2 held by pid 4312, user alice, 10.2 GB" (the header's, --runs' words)."""
        place = f"#{self.place}" if self.place is not None else "in line"
        return f"{place}, waiting for {self.waiting_for}" if self.waiting_for else place


# ---- exit.json --------------------------------------------------------------------------

@dataclass(frozen=True)
class ExitRecord:
    state: str = ""
    returncode: int | None = None
    failed_rank: int | None = None
    error: tuple[str, ...] = ()  # the failing rank's first error lines
    hint: str | None = None
    message: str = ""
    t: float | None = None
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # gpu_leaks, and keys added later

    KEYS = ("returncode", "state", "failed_rank", "error", "hint", "message", "t", "seconds")

    @classmethod
    def from_json(cls, data: Any) -> ExitRecord | None:
        if not isinstance(data, dict):
            return None
        error = data.get("error") or []
        if isinstance(error, str):
            error = error.splitlines()
        return cls(state=_str(data.get("state")), returncode=as_int(data.get("returncode")),
                   failed_rank=as_int(data.get("failed_rank")),
                   error=tuple(str(x) for x in error) if isinstance(error, (list, tuple)) else (),
                   hint=data.get("hint") if isinstance(data.get("hint"), str) else None,
                   message=_str(data.get("message")), t=finite_number(data.get("t")),
                   seconds=finite_number(data.get("seconds")),
                   extra={k: v for k, v in data.items() if k not in cls.KEYS})

    def to_json(self) -> dict[str, Any]:
        return {"returncode": self.returncode, "state": self.state, "failed_rank": self.failed_rank,
                "error": list(self.error), "hint": self.hint, "message": self.message, "t": self.t,
                "seconds": self.seconds, **self.extra}

    def with_extra(self, **fields: Any) -> ExitRecord:
        """This record with more (or newer) keys beyond KEYS: survivors, nothing_left, ..."""
        return ExitRecord(**{**self.__dict__, "extra": {**self.extra, **fields}})

    @property
    def final_state(self) -> str:
        """The state, or the one the return code implies when exit.json names none."""
        if self.state:
            return self.state
        if self.returncode is not None:
            return "finished" if self.returncode == 0 else "failed"
        return ""


def _write_once(_what: str, write: Callable[[], Any]) -> Any:
    return write()


def finish_run(paths: RunPaths, record: ExitRecord, *, write_exit: bool = True,
               status: dict[str, Any] | None = None, processes: list[dict[str, Any]] | None = None,
               write: Callable[[str, Callable[[], Any]], Any] = _write_once, run_json: bool = True) -> ExitRecord:
    """Record the end of a run, in the order readers rely on: the status event first, then
    exit.json, then run.json's final state (and its processes, when given). A reader that stops at
    either file's end (exit.json exists, run.json's state is final: `--runs`, a viewer, a test's
    wait) finds the whole event stream, final status included, already written; a reader that
    sees the final status first finds the files a poll later.
    `status`: the status event's extra fields, or None for no event (the caller has none to add).
    `write(what, fn)` makes each of the three writes: the supervisor's retries one until the disk
    has room (training.rundir.write_failures), so none is written twice or skipped.
    `run_json=False` (with `status=None`): the run had ended and recorded its end; exit.json gets
    what was found after (--stop's last sweep: its survivors), run.json's state and state_t stay."""
    now = round(time.time(), 3)
    if record.t is None:
        record = ExitRecord(**{**record.__dict__, "t": now})
    if status is not None:
        event = make_event("status", state=record.state, message=record.message, **status)
        write("events.jsonl", lambda: append_events(paths.events, [event]))
    if write_exit:
        write("exit.json", lambda: write_json_atomic(paths.exit_json, record.to_json()))
    if not run_json:
        return record
    fields: dict[str, Any] = {"state": record.state, "state_t": now}
    if processes is not None:
        fields["processes"] = processes
    write("run.json", lambda: update_run_json(paths, **fields))
    return record


# ---- events.jsonl -----------------------------------------------------------------------
# Each kind is a dataclass with slots, read-only by convention (frozen ones cost four times as
# much to make, and the feed makes one per event); `raw` is the event as written (the describer's
# text, the series snapshot's story), never compared or shown in a repr.


@dataclass(slots=True)
class MetricEvent:
    t: float | None
    step: int | None
    epoch: int | None
    split: str
    values: dict[str, Any]  # as written: what the viewers show
    # The values that are numbers (traindeck.numbers.number: NaN and Infinity kept, the text
    # "nan" read as NaN), what the plot and the health rules take; None when "values" is no object.
    numbers: dict[str, float] | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(slots=True)
class EpochEvent:
    t: float | None
    epoch: int | None
    epochs: int | None
    step: int | None
    seconds: float | None
    samples_per_s: float | None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(slots=True)
class CheckpointEvent:
    t: float | None
    path: str
    epoch: int | None
    step: int | None
    monitor: str
    value: float | None
    best: bool
    bytes: int | None
    seconds: float | None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(slots=True)
class StatusEvent:
    t: float | None
    state: str
    message: str
    epochs: int | None
    steps_per_epoch: int | None
    start_step: int | None
    world_size: int | None
    device: str
    # A `queued` status: the place in the box's GPU queue and what the run waits for.
    place: int | None = None
    waiting_for: str = ""
    # The built-in worker's `running` status: FLOPs of one training sample (forward + backward,
    # counted once at start), the GPU model, the dtype the matmuls run in, the GPUs computing.
    flops_per_sample: float | None = None
    gpu_model: str = ""
    compute_dtype: str = ""
    gpus: int | None = None
    tokens_per_sample: float | None = None  # a task with sequences: tokens/s beside samples/s
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(slots=True)
class LogEvent:
    t: float | None
    level: str
    message: str
    rank: int | None
    control: str  # the worker's acknowledgement of a control request ("pause", ...), else ""
    watchdog: str  # "hang", "straggler", "recovered", else ""
    ranks: tuple[int, ...]
    step: int | None
    stalled_s: float | None
    # A rewind (control "rewind"): the step it left and the checkpoint step it went back to.
    from_step: int | None = None
    to_step: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(slots=True)
class HealthEvent:
    """A [health] rule that fired (training.monitor.health): what it saw and what was done."""

    t: float | None
    rule: str  # "nan", "divergence", "overfit", "throughput"
    value: Any  # a number, or "nan"/"inf"/"-inf" as events store non-finite values
    step: int | None
    rank: int | None
    action: str  # what was done: warn, pause, save-stop, stop
    message: str
    # An incident the rule keeps open: its id, whether this firing is news about it (no new
    # alarm), how often it has fired.
    incident: str | None = None
    update: bool = False
    firings: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(slots=True)
class TimingEvent:
    """One rank's step anatomy over a logging interval (training.engine.step_clock, or
    traindeck.report.phase in a user's script): seconds per phase, and the rank's totals since its
    start, so the newest event of each rank is the whole run's anatomy too."""

    t: float | None
    rank: int
    step: int | None
    steps: int  # optimizer steps in the interval
    seconds: float  # the interval's wall time: the phases add up to it
    phases: dict[str, float]  # phase -> seconds (training.rundir.step_anatomy.PHASES)
    samples: int | None  # samples this rank trained on in the interval
    clock: str  # "host" (perf_counter) or "cuda" (CUDA events)
    total_steps: int = 0
    total_seconds: float = 0.0
    total_samples: int | None = None
    total_phases: dict[str, float] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


Event = Union[MetricEvent, EpochEvent, CheckpointEvent, StatusEvent, LogEvent, HealthEvent, TimingEvent]


def _phases(value: Any) -> dict[str, float]:
    """A {phase: seconds} object's finite, non-negative numbers."""
    if not isinstance(value, dict):
        return {}
    out = {}
    for name, seconds in value.items():
        seconds = finite_number(seconds)
        if isinstance(name, str) and seconds is not None and seconds >= 0:
            out[name] = float(seconds)
    return out


def _timing(e: dict[str, Any], t: float | None) -> TimingEvent | None:
    rank, steps, seconds = as_int(e.get("rank")), as_int(e.get("steps")), finite_number(e.get("seconds"))
    if rank is None or rank < 0 or steps is None or steps < 0 or seconds is None or seconds < 0:
        return None
    total = as_dict(e.get("total"))
    return TimingEvent(t, rank, as_int(e.get("step")), steps, float(seconds), _phases(e.get("phases")),
                       as_int(e.get("samples")), _str(e.get("clock")) or "host",
                       max(0, as_int(total.get("steps")) or 0), max(0.0, finite_number(total.get("seconds")) or 0.0),
                       as_int(total.get("samples")), _phases(total.get("phases")), e)


def metric_numbers(values: dict[str, Any]) -> dict[str, float]:
    """The values of a metric event that are numbers (traindeck.numbers.number), NaN kept, as
    floats. When every value already is a float (the common case) that is `values` itself, no copy:
    read-only, like the event."""
    for value in values.values():
        if type(value) is not float:
            break
    else:
        return values
    out = {}
    for name, value in values.items():
        value = number(value)
        if value is not None:
            out[name] = value
    return out


def parse_event(e: dict[str, Any]) -> Event | None:
    """One events.jsonl record as its type; None for a kind this schema does not know."""
    kind, t = e.get("kind"), finite_number(e.get("t"))
    if kind == "metric":  # the hot path (most events): as_int and _str inlined for JSON's exact types
        values = e.get("values")
        if isinstance(values, dict):
            numbers: dict[str, float] | None = metric_numbers(values)
        else:
            values, numbers = {}, None
        step, epoch, split = e.get("step"), e.get("epoch"), e.get("split")
        return MetricEvent(t, step if type(step) is int else as_int(step), epoch if type(epoch) is int else as_int(epoch),
                           split if type(split) is str and split else "train", values, numbers, e)
    if kind == "epoch":
        return EpochEvent(t, as_int(e.get("epoch")), as_int(e.get("epochs")), as_int(e.get("step")),
                          finite_number(e.get("seconds")), finite_number(e.get("samples_per_s")), e)
    if kind == "checkpoint":
        return CheckpointEvent(t, _str(e.get("path")), as_int(e.get("epoch")), as_int(e.get("step")),
                               _str(e.get("monitor")), finite_number(e.get("value")), bool(e.get("best")),
                               as_int(e.get("bytes")), finite_number(e.get("seconds")), e)
    if kind == "status":
        return StatusEvent(t, _str(e.get("state")), _str(e.get("message")), as_int(e.get("epochs")),
                           as_int(e.get("steps_per_epoch")), as_int(e.get("start_step")),
                           as_int(e.get("world_size")), _str(e.get("device")), as_int(e.get("place")),
                           _str(e.get("waiting_for")), finite_number(e.get("flops_per_sample")),
                           _str(e.get("gpu_model")), _str(e.get("compute_dtype")), as_int(e.get("gpus")),
                           finite_number(e.get("tokens_per_sample")), e)
    if kind == "timing":
        return _timing(e, t)
    if kind == "health":
        incident = e.get("incident") if isinstance(e.get("incident"), str) else None
        return HealthEvent(t, _str(e.get("rule")), e.get("value"), as_int(e.get("step")), as_int(e.get("rank")),
                           _str(e.get("action")) or "warn", _str(e.get("message")), incident,
                           e.get("update") is True, as_int(e.get("firings")), e)
    if kind == "log":
        ranks = tuple(r for r in e.get("ranks") or [] if as_int(r) is not None) \
            if isinstance(e.get("ranks"), list) else ()
        return LogEvent(t, _str(e.get("level")) or "info", _str(e.get("message")), as_int(e.get("rank")),
                        _str(e.get("control")), _str(e.get("watchdog")), ranks, as_int(e.get("step")),
                        finite_number(e.get("stalled_s")), as_int(e.get("from_step")), as_int(e.get("to_step")), e)
    return None


def parse_events(events: Iterable[dict[str, Any]]) -> list[Event]:
    """The events of a known kind, each as its type, in order (unknown kinds left out)."""
    return [r for r in map(parse_event, events) if r is not None]


def as_events(events: Iterable[Event | dict[str, Any]]) -> Iterable[Event]:
    """Typed events as they are; a dict (a test's, a tool's) parsed here: what a reader that
    takes either calls (SeriesStore.add_events, RunModel.apply_events)."""
    for e in events:
        if isinstance(e, dict):
            parsed = parse_event(e)
            if parsed is not None:
                yield parsed
        else:
            yield e
