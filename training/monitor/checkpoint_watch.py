"""`[checkpoint] watch = "out/*.pt"`: checkpoint events for files an unmodified script writes.

The supervisor globs the pattern (relative to the directory the script runs in) on a daemon
thread. A file that is new, or rewritten since it was last reported (another size, mtime or
inode: `torch.save` straight over the old file, or a temp file renamed over it), becomes one
checkpoint event once it has settled: the same size and mtime for SETTLE_S, so a multi-GB
save in progress is reported once, when it is done, with its final size. Files last written
before `since` (the supervisor's start: a previous run's, or this run's before a resume) are
the baseline, reported only if rewritten. When the run ends, `stop()` reports what changed and has not settled yet (the
writer is gone, so it is as finished as it will get).

    {"kind": "checkpoint", "path": "out/ckpt.pt", "bytes": 1234, "mtime": 1764000000.5, "source": "watch"}

`path` is relative to the run directory when the file is inside it, else to the working
directory when inside that, else absolute. The clock is a parameter (tests drive it).
"""

from __future__ import annotations

import glob
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from training.rundir.events import append_events, make_event

POLL_S = 0.5
SETTLE_S = 1.0

# What identifies one version of a file: (size, mtime_ns, inode).
Signature = tuple[int, int, int]


def _signature(path: str) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino) if os.path.isfile(path) else None


class CheckpointWatcher:
    def __init__(self, pattern: str | os.PathLike, events_path: Path, run_dir: Path, cwd: Path,
                 since: float, poll_s: float = POLL_S, settle_s: float = SETTLE_S,
                 clock: Callable[[], float] = time.monotonic,
                 append: Callable[[list[dict[str, Any]]], Any] | None = None):
        """`append`: where the events go instead of straight into events_path (the supervisor's
        writer, which keeps and retries them while the disk is full)."""
        self.append = append
        pattern = str(pattern)
        # Relative to the script's directory, not ours; that directory's name is no pattern.
        self.pattern = pattern if os.path.isabs(pattern) else os.path.join(glob.escape(str(cwd)), pattern)
        self.events_path = Path(events_path)
        self.run_dir = Path(run_dir)
        self.cwd = Path(cwd)
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.clock = clock
        self.reported: dict[str, Signature] = {}
        # path -> (signature seen, when it was first seen with that signature)
        self.pending: dict[str, tuple[Signature, float]] = {}
        self.events_written = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._baseline(since)

    def _files(self) -> list[str]:
        return sorted(glob.glob(self.pattern, recursive=True))

    def _baseline(self, since: float) -> None:
        for path in self._files():
            sig = _signature(path)
            if sig is not None and sig[1] < since * 1e9:
                self.reported[path] = sig

    def start(self) -> CheckpointWatcher:
        self._thread = threading.Thread(target=self._run, name="traindeck-checkpoint-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.poll_once(final=True)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - a bad file must not end the watch for the rest of the run
                self.errors += 1

    def poll_once(self, final: bool = False) -> list[dict[str, Any]]:
        """Report the files that settled since the last poll (every changed one when `final`)."""
        now = self.clock()
        events = []
        for path in self._files():
            sig = _signature(path)
            if sig is None or self.reported.get(path) == sig:
                self.pending.pop(path, None)
                continue
            seen = self.pending.get(path)
            if seen is None or seen[0] != sig:
                self.pending[path] = (sig, now)  # new, or still being written: wait for it to settle
                if not final:
                    continue
            elif not final and now - seen[1] < self.settle_s:
                continue
            self.pending.pop(path, None)
            self.reported[path] = sig
            events.append(self._event(path, sig))
        if events:
            try:
                if self.append is not None:
                    self.append(events)
                else:
                    append_events(self.events_path, events)
                self.events_written += len(events)
            except OSError:
                self.errors += 1
        return events

    def _event(self, path: str, sig: Signature) -> dict[str, Any]:
        return make_event("checkpoint", path=self._shown(path), bytes=sig[0], mtime=round(sig[1] / 1e9, 3),
                          source="watch")

    def _shown(self, path: str) -> str:
        full = Path(path)  # absolute: the pattern is
        for base in (self.run_dir, self.cwd):
            try:
                return str(full.relative_to(base))
            except ValueError:
                continue
        return str(full)
