"""The run directory's records as types, parsed in one place: run.json, exit.json, each event kind.

Readers take these instead of re-checking "a number but not a bool" in every module; the files'
keys stay exactly as they are (older runs and outside tools read them):

    RunRecord.from_json(run.json)     id, profile, mode, world_size, host, created, state, supervisor ...
                                      (a queued run's place: GpuQueuePlace)
    ExitRecord.from_json(exit.json)   returncode, state, failed_rank, error, hint, message, t, seconds
    parse_event(line)                 MetricEvent | EpochEvent | CheckpointEvent | StatusEvent | LogEvent
                                      | HealthEvent
    finish_run(paths, record)         the end of a run: the status event, exit.json, run.json's final
                                      state; every writer (supervisor, --stop, orphan reaping, gpu-check)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from traindeck.untrusted import finite_float
from training.rundir.events import append_events, make_event
from training.rundir.paths import RunPaths, update_run_json, write_json_atomic
from training.rundir.processes import ProcRef
from training.rundir.rendezvous import RendezvousRecord, rendezvous_of


def as_int(value: Any) -> int | None:
    """An int that is not a bool, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_float(value: Any) -> float | None:
    """A finite int or float (not a bool) as a float, else None (Infinity, NaN, 10**400 too)."""
    return finite_float(value)


def as_dict(value: Any) -> dict[str, Any]:
    """A JSON object's value that should itself be an object ({"supervisor": {...}}), else {}."""
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
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
                   created=as_float(data.get("created")), state=_str(data.get("state")),
                   state_t=as_float(data.get("state_t")), rehearsal=bool(data.get("rehearsal")),
                   supervisor=ProcRef.from_json(data.get("supervisor"), "supervisor"),
                   argv=tuple(str(a) for a in argv), cwd=_str(data.get("cwd")),
                   health_rewinds=max(0, as_int(data.get("health_rewinds")) or 0),
                   queue=data.get("queue") is True, gpu_queue=GpuQueuePlace.from_json(data.get("gpu_queue")),
                   rendezvous=rendezvous_of(data))


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
        return cls(as_int(data.get("place")), _str(data.get("waiting_for")), as_float(data.get("since")),
                   as_float(data.get("t")))

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
                   message=_str(data.get("message")), t=as_float(data.get("t")),
                   seconds=as_float(data.get("seconds")),
                   extra={k: v for k, v in data.items() if k not in cls.KEYS})

    def to_json(self) -> dict[str, Any]:
        return {"returncode": self.returncode, "state": self.state, "failed_rank": self.failed_rank,
                "error": list(self.error), "hint": self.hint, "message": self.message, "t": self.t,
                "seconds": self.seconds, **self.extra}

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
               write: Callable[[str, Callable[[], Any]], Any] = _write_once) -> ExitRecord:
    """Record the end of a run, in the order readers rely on: the status event first, then
    exit.json, then run.json's final state (and its processes, when given). A reader that stops at
    either file's end (exit.json exists, run.json's state is final: `--runs`, a viewer, a test's
    wait) finds the whole event stream, final status included, already written; a reader that
    sees the final status first finds the files a poll later.
    `status`: the status event's extra fields, or None for no event (the caller has none to add).
    `write(what, fn)` makes each of the three writes: the supervisor's retries one until the disk
    has room (training.rundir.write_failures), so none is written twice or skipped."""
    now = round(time.time(), 3)
    if record.t is None:
        record = ExitRecord(**{**record.__dict__, "t": now})
    if status is not None:
        event = make_event("status", state=record.state, message=record.message, **status)
        write("events.jsonl", lambda: append_events(paths.events, [event]))
    if write_exit:
        write("exit.json", lambda: write_json_atomic(paths.exit_json, record.to_json()))
    fields: dict[str, Any] = {"state": record.state, "state_t": now}
    if processes is not None:
        fields["processes"] = processes
    write("run.json", lambda: update_run_json(paths, **fields))
    return record


# ---- events.jsonl -----------------------------------------------------------------------

@dataclass(frozen=True)
class MetricEvent:
    t: float | None
    step: int | None
    epoch: int | None
    split: str
    values: dict[str, Any]


@dataclass(frozen=True)
class EpochEvent:
    t: float | None
    epoch: int | None
    epochs: int | None
    step: int | None
    seconds: float | None
    samples_per_s: float | None


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class HealthEvent:
    """A [health] rule that fired (training.monitor.health): what it saw and what was done."""

    t: float | None
    rule: str  # "nan", "divergence", "overfit", "throughput"
    value: Any  # a number, or "nan"/"inf"/"-inf" as events store non-finite values
    step: int | None
    rank: int | None
    action: str  # what was done: warn, pause, save-stop, stop
    message: str


Event = Union[MetricEvent, EpochEvent, CheckpointEvent, StatusEvent, LogEvent, HealthEvent]


def parse_event(e: dict[str, Any]) -> Event | None:
    """One events.jsonl record as its type; None for a kind this schema does not know."""
    kind, t = e.get("kind"), as_float(e.get("t"))
    if kind == "metric":
        values = e.get("values") if isinstance(e.get("values"), dict) else {}
        return MetricEvent(t, as_int(e.get("step")), as_int(e.get("epoch")), _str(e.get("split")) or "train", values)
    if kind == "epoch":
        return EpochEvent(t, as_int(e.get("epoch")), as_int(e.get("epochs")), as_int(e.get("step")),
                          as_float(e.get("seconds")), as_float(e.get("samples_per_s")))
    if kind == "checkpoint":
        return CheckpointEvent(t, _str(e.get("path")), as_int(e.get("epoch")), as_int(e.get("step")),
                               _str(e.get("monitor")), as_float(e.get("value")), bool(e.get("best")),
                               as_int(e.get("bytes")), as_float(e.get("seconds")))
    if kind == "status":
        return StatusEvent(t, _str(e.get("state")), _str(e.get("message")), as_int(e.get("epochs")),
                           as_int(e.get("steps_per_epoch")), as_int(e.get("start_step")),
                           as_int(e.get("world_size")), _str(e.get("device")), as_int(e.get("place")),
                           _str(e.get("waiting_for")))
    if kind == "health":
        return HealthEvent(t, _str(e.get("rule")), e.get("value"), as_int(e.get("step")), as_int(e.get("rank")),
                           _str(e.get("action")) or "warn", _str(e.get("message")))
    if kind == "log":
        ranks = tuple(r for r in e.get("ranks") or [] if as_int(r) is not None) \
            if isinstance(e.get("ranks"), list) else ()
        return LogEvent(t, _str(e.get("level")) or "info", _str(e.get("message")), as_int(e.get("rank")),
                        _str(e.get("control")), _str(e.get("watchdog")), ranks, as_int(e.get("step")),
                        as_float(e.get("stalled_s")), as_int(e.get("from_step")), as_int(e.get("to_step")))
    return None
