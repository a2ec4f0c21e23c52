"""Writes that fail on a full or read-only disk: told (rate-limited), retried or dropped, never fatal.

The supervisor's own records (run.json, its events, telemetry samples, the metrics tailer's
events) must not cost a healthy run its life when the disk fills for a while: the training
processes keep their data in memory and on their own files, and the disk usually comes back (a
checkpoint of another run deleted, a quota raised). Every writer of the supervisor process takes
one `WriteTrouble`, which

    failed(what, exc)   counts the failure and warns at once, then at most every `every_s`
    ok(what)            after failures: one line saying the writes work again, and after how long
    summary()           for exit.json's "disk" key: what failed, how often, for how long

and `retry_until_written` is the end of a run: exit.json and the final state waiting for room
(training.rundir.records.finish_run), with a deadline so a disk that never comes back does not
keep a supervisor forever.
"""

from __future__ import annotations

import errno
import sys
import threading
import time
from typing import Any, Callable

# The errors a disk gives when it cannot take more: full, over quota, mounted read-only.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
WARN_EVERY_S = 30.0
# How long the end of a run waits for room to write exit.json and run.json's final state.
END_RECORDS_WAIT_S = 6 * 3600.0
RETRY_MAX_SLEEP_S = 5.0


def is_disk_trouble(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def describe(exc: BaseException) -> str:
    """"disk full (No space left on device)", "read-only filesystem (...)", or the error itself."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full ({exc.strerror or exc})"
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return f"read-only filesystem ({exc.strerror or exc})"
    return f"{type(exc).__name__}: {exc}"


# The words a failed rank's error carries when the disk was its cause (what describe() names).
DISK_ERROR_TEXT = ("No space left on device", "Disk quota exceeded", "Read-only file system")


def _stderr(line: str) -> None:
    try:
        print(time.strftime("%H:%M:%S"), line, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr on the same full disk: nowhere left to tell
        pass


class WriteTrouble:
    """Failed writes of one process, per file (`what`), told without flooding its log."""

    def __init__(self, warn: Callable[[str], None] = _stderr, every_s: float = WARN_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.warn = warn
        self.every_s = every_s
        self.clock = clock
        self._lock = threading.Lock()
        # what -> [failures since the last success, first failure (clock), last warning (clock)]
        self._failing: dict[str, list[Any]] = {}
        self.failures = 0  # all failures, over the run
        self.dropped = 0  # records given up (telemetry samples, events beyond the pending bound)
        self.disk_full = False  # a failure was the disk's (ENOSPC, EDQUOT, EROFS)
        self.last_error = ""
        # How long some write kept failing: finished episodes summed, and the one going on now.
        self.trouble_s = 0.0
        self._episode_since: float | None = None
        self.files: set[str] = set()

    @property
    def failing(self) -> bool:
        """Some file's last write failed (the disk has not come back for it yet)."""
        with self._lock:
            return bool(self._failing)

    def failed(self, what: str, exc: BaseException, dropped: int = 0) -> None:
        now = self.clock()
        with self._lock:
            self.failures += 1
            self.dropped += dropped
            self.disk_full = self.disk_full or is_disk_trouble(exc)
            self.last_error = describe(exc)
            self.files.add(what)
            if self._episode_since is None:
                self._episode_since = now
            entry = self._failing.get(what)
            if entry is None:
                entry = self._failing[what] = [0, now, None]
            entry[0] += 1
            due = entry[2] is None or now - entry[2] >= self.every_s
            if due:
                entry[2] = now
            count, since = entry[0], entry[1]
        if due:
            again = "" if count == 1 else f" ({count} failures over {now - since:.0f} s)"
            then = "this record is dropped, the next one tried" if dropped else "the write is retried"
            self._say(f"warning: cannot write {what}: {describe(exc)}{again}; training goes on, {then} "
                      f"(free space on this disk)")

    def ok(self, what: str) -> None:
        with self._lock:
            entry = self._failing.pop(what, None)
            if entry is None:
                return
            now = self.clock()
            took = now - entry[1]
            if not self._failing and self._episode_since is not None:
                self.trouble_s += now - self._episode_since
                self._episode_since = None
        self._say(f"writes to {what} work again after {entry[0]} failure(s) over {took:.1f} s")

    def summary(self) -> dict[str, Any] | None:
        """exit.json's "disk": None when every write went through."""
        with self._lock:
            if not self.failures:
                return None
            ongoing = self.clock() - self._episode_since if self._episode_since is not None else 0.0
            return {"failed_writes": self.failures, "dropped": self.dropped, "full": self.disk_full,
                    "error": self.last_error, "files": sorted(self.files), "still_failing": sorted(self._failing),
                    "seconds": round(self.trouble_s + ongoing, 1)}

    def _say(self, line: str) -> None:
        try:
            self.warn(line)
        except Exception:  # noqa: BLE001 - the warning's own output may be on the full disk
            pass


def retry_until_written(what: str, write: Callable[[], Any], trouble: WriteTrouble,
                        deadline_s: float = END_RECORDS_WAIT_S, sleep: Callable[[float], Any] = time.sleep,
                        clock: Callable[[], float] = time.monotonic) -> bool:
    """Call `write` until it stops raising OSError (backing off to RETRY_MAX_SLEEP_S between
    tries) or `deadline_s` passed; True when it went through."""
    end = clock() + deadline_s
    pause = 0.1
    while True:
        try:
            write()
        except OSError as exc:
            trouble.failed(what, exc)
            if clock() + pause > end:
                trouble._say(f"gave up writing {what} after {deadline_s:.0f} s: {describe(exc)}")
                return False
            sleep(pause)
            pause = min(RETRY_MAX_SLEEP_S, pause * 2)
            continue
        trouble.ok(what)
        return True
