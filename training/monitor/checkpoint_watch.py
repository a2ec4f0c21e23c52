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
directory when inside that, else absolute. A name that carries the step gives the event its
`step` (the Trainer's `checkpoint-40`, `step=16`, `step_16`); Lightning's `epoch=1-step=16.ckpt`
gives `epoch` 2 too (Lightning counts epochs from 0, traindeck from 1). A directory (the
Trainer's `checkpoint-N/`) is one checkpoint: its size is the sum of its files, and it has
settled when neither that nor any of its files' times has changed for SETTLE_S.

Without `[checkpoint] watch` (and without a `checkpoint` regex in `[metrics]`), a custom script's
checkpoints are found by name instead (`CheckpointScan`): new `*.pt`, `*.pth`, `*.ckpt`,
`*.safetensors` files and `checkpoint-*/` directories anywhere under its working directory, and
what its `[metrics] preset`'s framework saves (metric_presets.PRESET_CHECKPOINT_NAMES). The
walk is bounded (depth, entries), skips hidden folders, caches and other runs' directories, and
never follows a link.

The clock is a parameter (tests drive it).
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import stat
import time
from pathlib import Path
from typing import Any, Callable

from training.monitor.polling import EventWritingPoller
from training.rundir.events_file import make_event

POLL_S = 0.5
SETTLE_S = 1.0

# What identifies one version of a file or a checkpoint directory: (size, mtime_ns, inode).
Signature = tuple[int, int, int]

# Checkpoint names any custom script's files are found by when its profile names none; a name
# ending in "/" is a directory's (the Trainer's output_dir/checkpoint-N/).
CHECKPOINT_NAMES = ("*.pt", "*.pth", "*.ckpt", "*.safetensors", "checkpoint-*/")
# Folders that hold no run's checkpoints and can be large: never walked (nor any hidden one).
SKIP_DIR_NAMES = frozenset({"__pycache__", "node_modules", "site-packages", "dist-packages"})
SCAN_MAX_DEPTH = 6          # lightning_logs/version_0/checkpoints/x.ckpt is 4 deep
SCAN_MAX_ENTRIES = 20_000   # per poll: a working directory full of data files is not walked whole
DIR_MAX_ENTRIES = 2_000     # files summed for one checkpoint directory's size

_STEP_IN_NAME = re.compile(r"(?:^checkpoint-|(?<![a-z])step[=_-]?)(\d+)", re.I)
_LIGHTNING_EPOCH_IN_NAME = re.compile(r"(?<![a-z])epoch=(\d+)", re.I)


def _dir_signature(path: str, st: os.stat_result) -> Signature:
    """A checkpoint directory's version: its files' total size and newest mtime (the directory's
    own mtime counts too: a file added or removed changes it)."""
    total, newest, seen = 0, st.st_mtime_ns, 0
    stack = [path]
    while stack and seen < DIR_MAX_ENTRIES:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    seen += 1
                    if seen > DIR_MAX_ENTRIES:
                        break
                    try:
                        est = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    newest = max(newest, est.st_mtime_ns)
                    if stat.S_ISREG(est.st_mode):
                        total += est.st_size
                    elif stat.S_ISDIR(est.st_mode):
                        stack.append(entry.path)
        except OSError:
            continue
    return (total, newest, st.st_ino)


def _signature(path: str) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode):
        return (st.st_size, st.st_mtime_ns, st.st_ino)
    if stat.S_ISDIR(st.st_mode) and not os.path.islink(path):
        return _dir_signature(path, st)
    return None


def place_in_name(path: str) -> dict[str, int]:
    """The step (and Lightning's epoch, counted from 1) a checkpoint's name carries."""
    name = os.path.basename(os.path.normpath(path))
    found: dict[str, int] = {}
    m = _STEP_IN_NAME.search(name)
    if m is not None:
        found["step"] = int(m.group(1))
    m = _LIGHTNING_EPOCH_IN_NAME.search(name)
    if m is not None:
        found["epoch"] = int(m.group(1)) + 1
    return found


class CheckpointScan:
    """Checkpoints found by name under a working directory, for a profile that names none."""

    def __init__(self, cwd: Path, names: tuple[str, ...] = CHECKPOINT_NAMES, skip: tuple[Path, ...] = (),
                 also: tuple[Path, ...] = (), max_depth: int = SCAN_MAX_DEPTH,
                 max_entries: int = SCAN_MAX_ENTRIES):
        """`skip`: folders not walked (the runs directory, which holds every other run); `also`:
        folders inside a skipped one that are walked all the same (this run's own directory)."""
        self.cwd = Path(cwd)
        self.file_names = tuple(n for n in names if not n.endswith("/"))
        self.dir_names = tuple(n.rstrip("/") for n in names if n.endswith("/"))
        self.skip = {os.path.normpath(p) for p in skip}
        self.also = [Path(p) for p in also]
        self.max_depth = max_depth
        self.max_entries = max_entries
        self.truncated = False  # the last walk stopped at max_entries

    def find(self) -> list[str]:
        found: list[str] = []
        budget = [self.max_entries]
        self.truncated = False
        self._walk(str(self.cwd), 0, found, budget)
        for extra in self.also:
            try:
                depth = len(extra.relative_to(self.cwd).parts)
            except ValueError:
                depth = 0
            self._walk(str(extra), depth, found, budget)
        return sorted(set(found))

    def _walk(self, top: str, depth: int, found: list[str], budget: list[int]) -> None:
        stack = [(top, depth)]
        while stack:
            folder, level = stack.pop()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        budget[0] -= 1
                        if budget[0] < 0:
                            self.truncated = True
                            return
                        name = entry.name
                        try:
                            is_dir = entry.is_dir(follow_symlinks=False)
                            is_file = not is_dir and entry.is_file(follow_symlinks=False)
                        except OSError:
                            continue
                        if is_dir:
                            if any(fnmatch.fnmatchcase(name, n) for n in self.dir_names):
                                found.append(entry.path)  # one checkpoint; its files are not others
                            elif (not name.startswith(".") and name not in SKIP_DIR_NAMES
                                  and os.path.normpath(entry.path) not in self.skip and level + 1 < self.max_depth):
                                stack.append((entry.path, level + 1))
                        elif is_file and any(fnmatch.fnmatchcase(name, n) for n in self.file_names):
                            found.append(entry.path)
            except OSError:
                continue


class CheckpointWatcher(EventWritingPoller):
    def __init__(self, pattern: str | os.PathLike | None, events_path: Path, run_dir: Path, cwd: Path,
                 since: float, poll_s: float = POLL_S, settle_s: float = SETTLE_S,
                 clock: Callable[[], float] = time.monotonic,
                 append: Callable[[list[dict[str, Any]]], Any] | None = None,
                 scan: CheckpointScan | None = None):
        """`append`: where the events go instead of straight into events_path (the supervisor's
        writer, which keeps and retries them while the disk is full). `scan`: find the files by
        name (CheckpointScan) instead of by the glob `pattern`."""
        super().__init__(poll_s, "traindeck-checkpoint-watch", events_path, append)
        self.scan = scan
        pattern = str(pattern or "")
        # Relative to the script's directory, not ours; that directory's name is no pattern.
        self.pattern = pattern if os.path.isabs(pattern) else os.path.join(glob.escape(str(cwd)), pattern)
        self.run_dir = Path(run_dir)
        self.cwd = Path(cwd)
        self.settle_s = settle_s
        self.clock = clock
        self.reported: dict[str, Signature] = {}
        # path -> (signature seen, when it was first seen with that signature)
        self.pending: dict[str, tuple[Signature, float]] = {}
        self.retired = False
        self._baseline(since)

    def _files(self) -> list[str]:
        if self.scan is not None:
            return self.scan.find()
        return sorted(glob.glob(self.pattern, recursive=True))

    def _baseline(self, since: float) -> None:
        for path in self._files():
            sig = _signature(path)
            if sig is not None and sig[1] < since * 1e9:
                self.reported[path] = sig

    def poll_step(self) -> bool:
        self.poll_once()
        return False

    def after_stop(self, timeout_s: float) -> None:
        # The writer is gone: what changed and has not settled is as finished as it will get.
        self.poll_once(final=True)

    def retire(self) -> None:
        """Stop for good, reporting nothing more: the script reports its own checkpoints
        (traindeck.report), so what a name scan finds would tell each of them twice."""
        self.retired = True
        self._stopping.set()

    def poll_once(self, final: bool = False) -> list[dict[str, Any]]:
        """Report the files that settled since the last poll (every changed one when `final`)."""
        if self.retired:
            return []
        now = self.clock()
        events = []
        files = self._files()
        if self.scan is not None:
            # A checkpoint the framework removed before it settled (Lightning keeps its top k and
            # deletes the one it replaces) was still written: reported as last seen.
            present = set(files)
            for path in [p for p in self.pending if p not in present]:
                sig, _ = self.pending.pop(path)
                events.append({**self._event(path, sig), "removed": True})
        for path in files:
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
        self.deliver(events)
        return events

    def _event(self, path: str, sig: Signature) -> dict[str, Any]:
        return make_event("checkpoint", path=self._shown(path), bytes=sig[0], mtime=round(sig[1] / 1e9, 3),
                          source="watch", **place_in_name(path))

    def _shown(self, path: str) -> str:
        full = Path(path)  # absolute: the pattern is
        for base in (self.run_dir, self.cwd):
            try:
                return str(full.relative_to(base))
            except ValueError:
                continue
        return str(full)
