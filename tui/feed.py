"""The feed: what both viewers read from a run directory, and the one liveness check they use.

Plain Python, no Textual (the headless printer imports it; tests/unit/test_import_hygiene.py
keeps it so). The run screen calls `RunFeed.poll()` from a worker thread and folds each
`FeedBatch` into its `RunModel` and series store; the headless printer reads the same methods in
its loop. Each event is parsed here, once, into its type (training.rundir.records.parse_event):
the model, the series store and the printer take `FeedBatch.records`, the describer the line as
written (`record.raw`, `FeedBatch.events`).

    RunFeed(paths)      run.json and exit.json re-read only when their stat key changes,
                        events.jsonl tailed incrementally, the supervisor checked at most once
                        per LIVENESS_CHECK_S while run.json claims a live run
    TelemetryFeed(paths)  telemetry.jsonl tailed (a long history read from its end), the last
                        HISTORY utilisations per device for the sparklines
    read_last_json_line(path)  the newest telemetry sample, reading only the file's tail
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from traindeck.numbers import finite_number
from traindeck.untrusted import bounded_int, open_regular, read_bounded
from training.rundir import RunPaths, RunState, read_json, read_run_json
from training.rundir.events_file import READ_CHUNK_BYTES, EventReader
from training.rundir.liveness import SupervisorStatus, supervisor_status
from training.rundir.records import Event, parse_events
from training.rundir.snapshot import Folded, load_or_rebuild

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# A psutil look-up costs ~0.1 ms; once a second notices a dead supervisor soon enough.
LIVENESS_CHECK_S = 1.0
HISTORY = 600  # telemetry samples kept per device for the sparklines (5 per cell: tui.widgets._render)
CATCH_UP_CHUNKS = 4
TAIL_FROM_END_BYTES = 4 << 20  # a telemetry file this large is read from its end first
PROFILE_MAX_BYTES = 4 << 20

StatKey = tuple[int, int, int]


def stat_key(path: Path) -> StatKey | None:
    """(inode, size, mtime) of a file, or None when it does not exist: changes on any write or
    atomic replace."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class FeedBatch:
    """What changed in a run directory since the last poll."""

    records: list[Event]  # the new events of a known kind, each typed once (training.rundir.records)
    run_json: dict[str, Any]
    exit_json: dict[str, Any] | None
    caught_up: bool  # events.jsonl has been read to its end
    orphaned: bool = False  # run.json claims a live run, no exit.json, and its supervisor is gone
    # The first batch: events.jsonl folded up to the series snapshot's offset (its store replaces
    # the viewer's); `replay` is its story typed (base.replay(): to the model and the event log),
    # `records` then are the tail.
    base: Folded | None = None
    replay: list[Event] = field(default_factory=list)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The new events as written (the describer's), in order."""
        return [r.raw for r in self.records]


class RunFeed:
    """Stat-keyed reads of one run directory (not thread-safe: one reader, e.g. one worker group)."""

    def __init__(self, paths: RunPaths, chunk_bytes: int = READ_CHUNK_BYTES,
                 monotonic: Callable[[], float] = time.monotonic, snapshot: bool = True) -> None:
        self.paths = paths
        self.snapshot = snapshot
        self._based = not snapshot
        self.events = EventReader(paths.events, chunk_bytes=chunk_bytes)
        self.monotonic = monotonic
        self._run_json_key: StatKey | None = None
        self._run_json: dict[str, Any] = {}
        self._exit_json_key: StatKey | None = None
        self._exit_json: dict[str, Any] | None = None
        self._events_key: StatKey | None = None
        self._caught_up = False
        self._posted = False
        # What the last batch carried: run_json() may be called between polls (the telemetry
        # poll reads the node list from it), so a change is judged against what was posted.
        self._posted_run_json: dict[str, Any] | None = None
        self._posted_exit_json: dict[str, Any] | None = None
        self._orphaned = False
        self._status: SupervisorStatus | None = None
        self._status_checked = float("-inf")

    # ---- the files ---------------------------------------------------------------------------
    def run_json(self) -> dict[str, Any]:
        """run.json, re-read only when it changed."""
        key = stat_key(self.paths.run_json)
        if key != self._run_json_key:
            self._run_json_key = key
            self._run_json = read_run_json(self.paths)
            self._status_checked = float("-inf")  # a new supervisor (a resume) is checked at once
        return self._run_json

    def exit_json(self) -> dict[str, Any] | None:
        """exit.json, or None while there is none; re-read only when it changed."""
        key = stat_key(self.paths.exit_json)
        if key != self._exit_json_key:
            self._exit_json_key = key
            data = read_json(self.paths.exit_json) if key is not None else None
            self._exit_json = data if isinstance(data, dict) else None
        return self._exit_json

    def read_records(self) -> list[Event]:
        """The next chunk of events.jsonl, each event typed (the headless printer's read)."""
        return parse_events(self.events.read())

    def start_from_snapshot(self) -> Folded | None:
        """Once, before the first read: events.jsonl folded up to the series snapshot's offset
        (training.rundir.snapshot: loaded if trustworthy, else rebuilt from events.jsonl and
        saved); reading then goes on from that offset. None when disabled or already started."""
        if self._based or self.events.offset:
            self._based = True
            return None
        self._based = True
        folded, _ = load_or_rebuild(self.paths.events)
        if not folded.offset:
            return None
        self.events.offset = folded.offset
        key = stat_key(self.paths.events)
        self.events._inode = key[0] if key else None
        return folded

    @property
    def at_end(self) -> bool:
        return self.events.at_end

    @property
    def skipped(self) -> int:
        return self.events.skipped

    # ---- liveness ----------------------------------------------------------------------------
    def supervisor(self, now: float | None = None) -> SupervisorStatus:
        """The supervisor's status (training.rundir.liveness), looked up at most once per
        LIVENESS_CHECK_S; `now` is the wall clock a young run is measured against."""
        tick = self.monotonic()
        if self._status is None or tick - self._status_checked >= LIVENESS_CHECK_S:
            self._status = supervisor_status(self.run_json(), now)
            self._status_checked = tick
        return self._status

    def orphaned(self) -> bool:
        """run.json claims a live run, there is no exit.json, and its recorded supervisor is gone."""
        if self.exit_json() is not None:
            return False
        try:
            claimed_live = RunState(self.run_json().get("state")).is_live
        except ValueError:
            claimed_live = False
        return claimed_live and self.supervisor() is SupervisorStatus.DEAD

    # ---- one poll (the run screen's events worker) -------------------------------------------
    def poll(self) -> FeedBatch | None:
        """What is new, or None when nothing is (an idle poll is a few os.stat calls)."""
        run_json, exit_json = self.run_json(), self.exit_json()
        changed = run_json != self._posted_run_json or exit_json != self._posted_exit_json
        orphaned = self.orphaned()
        base = self.start_from_snapshot()
        key = stat_key(self.paths.events)
        if key is not None and key == self._events_key and self._caught_up:
            records: list[Event] = []
            caught_up = True
        else:
            records = parse_events(self.events.read())
            caught_up = self.events.at_end
            self._events_key = key
        post = (records or base is not None or changed or caught_up != self._caught_up or not self._posted
                or orphaned != self._orphaned)
        self._caught_up, self._orphaned = caught_up, orphaned
        if not post:
            return None
        self._posted = True
        self._posted_run_json, self._posted_exit_json = run_json, exit_json
        replay = parse_events(base.replay()) if base is not None else []
        return FeedBatch(records, run_json, exit_json, caught_up, orphaned, base, replay)

    @property
    def caught_up(self) -> bool:
        return self._caught_up

    @property
    def posted(self) -> bool:
        return self._posted


class TelemetryFeed:
    """telemetry.jsonl for the device panels: the newest sample and each device's utilisation history."""

    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths
        self.reader = EventReader(paths.telemetry)
        self.history: dict[str, deque[float | None]] = {}
        self.count: dict[str, int] = {}  # samples ever seen per device: history[0] is sample count - len
        self._interval: float | None = None

    @property
    def interval_s(self) -> float:
        """The profile's telemetry interval (0.25 to 5 s; 1 s when profile.toml does not say)."""
        if self._interval is None:
            try:
                raw = read_bounded(self.paths.profile, PROFILE_MAX_BYTES)  # no FIFO waited on
                data = tomllib.loads(raw.decode("utf-8")) if raw is not None else {}
            except (OSError, ValueError, RecursionError):
                data = {}
            telemetry = data.get("telemetry")
            value = finite_number(telemetry.get("interval_s", 1.0)) if isinstance(telemetry, dict) else None
            self._interval = min(5.0, max(0.25, 1.0 if value is None else value))
        return self._interval

    @property
    def at_end(self) -> bool:
        return self.reader.at_end

    def poll(self) -> dict[str, Any] | None:
        """The newest sample that lists devices among those read now (None: none new)."""
        latest: dict[str, Any] | None = None
        if self.reader.offset == 0:
            latest = self._skip_to_recent()
        for _ in range(CATCH_UP_CHUNKS):
            samples = [s for s in map(sane_sample, self.reader.read()) if s is not None]
            for sample in samples:
                self._remember(sample)
                # The samples after the workers exit list none; keep showing their last numbers.
                if sample.get("gpus") or sample.get("workers"):
                    latest = sample
            if self.reader.at_end:
                break
        return latest

    def _skip_to_recent(self) -> dict[str, Any] | None:
        """A day of 8-GPU samples is hundreds of MB and the sparklines want the last HISTORY:
        read those from the end, then tail from there."""
        from training.monitor.telemetry import read_telemetry

        try:
            size = self.paths.telemetry.stat().st_size
        except OSError:
            return None
        if size < TAIL_FROM_END_BYTES:
            return None
        samples = [s for s in map(sane_sample, read_telemetry(self.paths.telemetry, last_n=HISTORY)) if s is not None]
        self.reader.offset = size
        for sample in samples:
            self._remember(sample)
        return samples[-1] if samples else None

    def _remember(self, sample: dict[str, Any]) -> None:
        if sample.get("gpus") is not None:
            items = [(f"gpu{_label(g.get('index'), i)}", g.get("util")) for i, g in enumerate(sample["gpus"])]
        else:
            items = [(f"cpu{_label(w.get('rank'), i)}", w.get("cpu_percent")) for i, w in enumerate(sample.get("workers") or [])]
        for key, value in items:
            history = self.history.setdefault(key, deque(maxlen=HISTORY))
            self.count[key] = self.count.get(key, 0) + 1
            history.append(finite_number(value))


def _label(value: Any, default: int) -> int:
    """A GPU index or a rank for a panel's name: an int from the sample, else its position."""
    number = bounded_int(value, 0, 1 << 20)
    return default if number is None else number


def sane_sample(sample: dict[str, Any]) -> dict[str, Any] | None:
    """A telemetry sample the panels can draw, or None for one that is not telemetry. The file is
    anyone's to write: "gpus" and "workers" keep only their objects, and a number that is not
    finite (Infinity, 1e999, 10**400) in one of them becomes None (no reading), as a sensor gap does."""
    if sample.get("kind", "telemetry") != "telemetry":
        return None
    for key in ("gpus", "workers"):
        items = sample.get(key)
        if items is None:
            continue
        sample[key] = [{k: _reading(v) for k, v in item.items()}
                       for item in (items if isinstance(items, list) else []) if isinstance(item, dict)]
    for i, gpu in enumerate(sample.get("gpus") or []):
        # What the GPU panel takes as given: an index, a list of throttle reasons, an error text.
        gpu["index"] = _label(gpu.get("index"), i)
        throttle = gpu.get("throttle")
        gpu["throttle"] = [str(r) for r in throttle] if isinstance(throttle, list) else []
        if gpu.get("error") is not None and not isinstance(gpu.get("error"), str):
            gpu["error"] = "?"
        for key in ("processes", "ranks"):  # lists the panel walks: anything else is none
            if key in gpu and not isinstance(gpu[key], list):
                gpu[key] = []
        gpu["processes"] = [p for p in gpu.get("processes") or [] if isinstance(p, dict)]
    return sample


def _reading(value: Any) -> Any:
    """One field of a GPU or worker: a number that is not finite reads as no reading (None)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and finite_number(value) is None:
        return None
    return value


def read_last_json_line(path: Path, max_bytes: int = 256 * 1024) -> dict[str, Any] | None:
    """The last complete JSON object of a JSONL file, reading only its tail (telemetry grows forever)."""
    try:
        with open_regular(path) as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read(max_bytes)
    except OSError:
        return None
    for line in reversed(data.split(b"\n")):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a half-written last line: take the one before
        if isinstance(obj, dict):
            return obj
    return None


def wait_for_exit_code(paths: RunPaths, poll_s: float = 0.2, sleep: Callable[[float], None] = time.sleep) -> int:
    """Block until the run writes exit.json (or its supervisor is gone without it); the exit code
    the headless printer would return (a stopped run: 130)."""
    from tui.headless.lines import exit_code

    feed = RunFeed(paths)
    while True:
        exit_json = feed.exit_json()
        if exit_json is not None:
            return exit_code(exit_json, stopped_by_us=False)
        if feed.orphaned():
            return 1
        sleep(poll_s)
