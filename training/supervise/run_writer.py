"""The supervisor's own writes to run.json and events.jsonl, which a full disk delays but never stops.

While the supervisor lives it is the only writer of run.json (training.console.stop.stop_run takes
over only once it is dead), and its threads (health, the log tailer, the checkpoint watch, the
node followers) append events through it too. A write that fails with an OSError (ENOSPC, EROFS)
waits here: run.json fields merged (the newest value of each wins), events in order (at most
PENDING_EVENTS_MAX, the oldest dropped and counted). The main loop retries every RETRY_WRITES_S;
once the disk is back one warning event tells every viewer that the records have a gap. The end
records (exit.json, the final state) wait for room through `write_at_end`.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from training.rundir import RunPaths, update_run_json
from training.rundir.events_file import append_events, make_event
from training.rundir.write_failures import WriteTrouble, retry_until_written
from training.supervise.supervisor_log import log

# Events the supervisor could not write (a full disk) wait in memory for the disk to come back,
# this many at most (the oldest are dropped, and counted); pending writes are retried this often.
PENDING_EVENTS_MAX = 10_000
RETRY_WRITES_S = 1.0


class RunWriter:
    def __init__(self, paths: RunPaths):
        self.paths = paths
        # The writes that failed, told in the supervisor's log at most every 30 s.
        self.disk = WriteTrouble(warn=log)
        self._lock = threading.Lock()
        self.pending_run_json: dict[str, Any] = {}
        self.pending_events: list[dict[str, Any]] = []
        self.retry_at = 0.0
        self._disk_told: tuple[int, int] | None = None  # the gap last told in events.jsonl
        self.retry_sleep: Callable[[float], Any] = time.sleep  # between tries of the end records (a test's is instant)

    def run_json(self, **fields: Any) -> bool:
        """Merge fields into run.json; on an OSError they wait for the next try. True when run.json
        is up to date."""
        with self._lock:
            self.pending_run_json.update(fields)
        return self._try_write("run.json", self.flush_run_json)

    def append(self, events: list[dict[str, Any]]) -> bool:
        """Append events after any still waiting (their order holds). Called from every thread."""
        with self._lock:
            self.pending_events.extend(events)
            dropped = max(0, len(self.pending_events) - PENDING_EVENTS_MAX)
            if dropped:
                del self.pending_events[:dropped]
        return self._try_write("events.jsonl", self.flush_events, dropped)

    def flush_run_json(self) -> None:
        """Raises the OSError of a write that did not go through."""
        with self._lock:
            if self.pending_run_json:
                update_run_json(self.paths, **self.pending_run_json)
                self.pending_run_json.clear()

    def flush_events(self) -> None:
        with self._lock:
            if self.pending_events:
                append_events(self.paths.events, self.pending_events)
                self.pending_events = []

    def _try_write(self, what: str, flush: Callable[[], None], dropped: int = 0) -> bool:
        try:
            flush()
        except OSError as exc:
            self.disk.failed(what, exc, dropped=dropped)
            return False
        self.disk.ok(what)
        return True

    def retry_pending(self) -> None:
        """What a full disk kept back, tried again each RETRY_WRITES_S (the main loop's)."""
        now = time.monotonic()
        if now < self.retry_at:
            return
        self.retry_at = now + RETRY_WRITES_S
        with self._lock:
            waiting = bool(self.pending_run_json or self.pending_events)
        if waiting and not (self._try_write("run.json", self.flush_run_json)
                            and self._try_write("events.jsonl", self.flush_events)):
            return
        self.tell_disk_trouble()

    def tell_disk_trouble(self, at_end: bool = False) -> None:
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
        self.append([make_event("log", level="warning", disk=summary,
                                message=f"the supervisor could not write {', '.join(summary['files'])} for "
                                        f"{summary['seconds']:g} s ({summary['error']}): {summary['failed_writes']} "
                                        f"write(s) retried{dropped}; training went on")])

    def write_at_end(self, what: str, write: Callable[[], Any]) -> bool:
        """One end record, retried until there is room (END_RECORDS_WAIT_S at most)."""
        return retry_until_written(what, write, self.disk, sleep=self.retry_sleep)

    def flush_before_the_end(self) -> None:
        """What a full disk kept back goes first, then the gap is told: before the end records."""
        self.write_at_end("run.json", self.flush_run_json)
        self.write_at_end("events.jsonl", self.flush_events)
        self.tell_disk_trouble(at_end=True)
