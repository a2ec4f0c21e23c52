"""The one polling thread under the supervisor's monitors: health, watchdog, checkpoint watch, log tailer.

Each of them is logic a test drives without a thread (`poll_once`, `check`, `poll`) plus the same
daemon thread around it: wait an interval, look once, again until stopped. This base is that
thread, so the four differ only in what one look does:

    class Watcher(PollingThread):
        def poll_step(self) -> bool: ...      # one look; True: there may be more to read at once
    watcher = Watcher(interval_s=0.5, name="traindeck-watcher").start()
    ... watcher.stop()                        # joins, then after_stop(): a last look where one is due

A look that raises never ends the thread: the monitors are advisory and must not take the
supervisor down; `poll_failed` says what happens instead (by default one line on stderr, once).

EventWritingPoller is the base of the two whose looks become events (checkpoint watch, log tailer):
they go to the supervisor's writer when it gives one (it keeps and retries them while the disk is
full), else into events.jsonl itself.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

from training.rundir.events_file import append_events

_Poller = TypeVar("_Poller", bound="PollingThread")


class PollingThread:
    """A daemon thread that calls `poll_step` every `interval_s` until `stop()`."""

    def __init__(self, interval_s: float, name: str):
        self.interval_s = interval_s
        self.thread_name = name
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._error_reported = False

    def poll_step(self) -> bool:
        """One look. True when there may be more to do right away (a log read in chunks)."""
        raise NotImplementedError

    def poll_failed(self, exc: Exception) -> None:
        """A look raised: told once on stderr (the supervisor's log), the thread goes on."""
        if not self._error_reported:
            self._error_reported = True
            what = self.thread_name.removeprefix("traindeck-")
            print(f"{what}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    def after_stop(self, timeout_s: float) -> None:
        """After the thread ended: what a monitor still owes the run (a final read)."""

    def start(self: _Poller) -> _Poller:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.after_stop(timeout_s)

    def _step(self) -> bool:
        try:
            return bool(self.poll_step())
        except Exception as exc:  # noqa: BLE001 - see the module docstring
            self.poll_failed(exc)
            return False

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            # A busy look (more was there than one read takes) goes on at once: a fast script's
            # log is caught up rather than read one chunk per interval.
            while self._step() and not self._stopping.is_set():
                pass



class EventWritingPoller(PollingThread):
    """A polling thread whose looks become events (the checkpoint watch, the log tailer). A failed
    look or write is counted in `errors`, not told: one bad file or parser bug must not end the
    watch for the rest of the run, nor fill the supervisor's log."""

    def __init__(self, interval_s: float, name: str, events_path: Path,
                 append: Callable[[list[dict[str, Any]]], Any] | None):
        super().__init__(interval_s, name)
        self.events_path = Path(events_path)
        self.append = append
        self.events_written = 0
        self.errors = 0

    def poll_failed(self, exc: Exception) -> None:
        self.errors += 1

    def deliver(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        try:
            if self.append is not None:
                self.append(events)
            else:
                append_events(self.events_path, events)
            self.events_written += len(events)
        except OSError:
            self.errors += 1
