"""events.jsonl: schema v1, the writer primitive and the incremental reader.

One JSON object per line, append-only:

    {"v":1,"t":<unix s>,"kind":"metric","step":120,"epoch":1,"split":"train","values":{"loss":2.12}}
    {"v":1,"t":...,"kind":"epoch","epoch":1,"seconds":35.2,"samples_per_s":5012.0}
    {"v":1,"t":...,"kind":"checkpoint","path":"checkpoints/best.pt","epoch":3,"step":900,
     "monitor":"val_loss","value":1.87,"best":true,"bytes":1234,"seconds":0.4}
    {"v":1,"t":...,"kind":"status","state":"starting|running|finished|failed|stopped","message":"..."}
    {"v":1,"t":...,"kind":"log","level":"info|warning|error","message":"..."}
    {"v":1,"t":...,"kind":"health","rule":"nan","value":"nan","step":40,"rank":null,"action":"stop",
     "asked":"stop","message":"..."}      (training.monitor.health)

Writers write whole lines with one os.write() on an O_APPEND descriptor, so lines from the
supervisor and rank 0 never interleave. Readers skip (and count) lines they cannot parse.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# The writer's half lives in traindeck.events (a user's script writes through it, without the
# name `training`); re-exported here so the engine has one module for events.jsonl.
from traindeck.events import (  # noqa: F401 - re-exports
    SCHEMA_VERSION,
    _clean,
    append_events,
    encode,
    make_event,
    open_append,
    write_all,
)

KINDS = ("metric", "epoch", "checkpoint", "status", "log", "health")
# A line longer than this is not ours (a flood of junk); the reader drops it rather than
# holding it in memory.
MAX_LINE_BYTES = 1 << 20


def parse_lines(lines: list[bytes]) -> tuple[list[dict[str, Any]], int]:
    """(events, skipped): the JSON objects with a "kind" among `lines`; blank lines are not counted."""
    out, skipped = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: junk like "[[[[..." nested deep
            skipped += 1
            continue
        if not isinstance(event, dict) or "kind" not in event:
            skipped += 1
            continue
        out.append(event)
    return out, skipped


def read_tail(path: Path, max_bytes: int) -> list[dict[str, Any]]:
    """The events in the last `max_bytes` of a JSONL file: a huge file costs the same to summarize."""
    try:
        with open(path, "rb") as f:
            start = max(0, f.seek(0, os.SEEK_END) - max_bytes)
            f.seek(start)
            lines = f.read().split(b"\n")
    except OSError:
        return []
    if start > 0:
        lines = lines[1:]  # the first line is cut
    return parse_lines(lines)[0]


class EventReader:
    """Tails a JSONL file incrementally.

    `read()` returns the complete new lines parsed since the last call. It copes with the file
    not existing yet, a partial last line (kept until its newline arrives), truncation or
    replacement (starts over), and junk (skipped and counted in `skipped`).
    """

    def __init__(self, path: Path, chunk_bytes: int = 4 << 20):
        self.path = Path(path)
        self.offset = 0
        self.skipped = 0
        self.chunk_bytes = chunk_bytes
        self._partial = b""
        self._inode: int | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes read of a last line whose newline has not arrived: `offset - pending_bytes` is
        the end of the last complete line."""
        return len(self._partial)

    def read(self, max_bytes: int | None = None) -> list[dict[str, Any]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        if self._inode is not None and (st.st_ino != self._inode or st.st_size < self.offset):
            self.offset, self._partial = 0, b""  # truncated or replaced: start over
        self._inode = st.st_ino
        if st.st_size <= self.offset:
            return []
        budget = max_bytes or self.chunk_bytes
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(min(budget, st.st_size - self.offset))
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE_BYTES:
            self.skipped += 1
            self._partial = b""
        out, skipped = parse_lines(lines)
        self.skipped += skipped
        return out

    @property
    def at_end(self) -> bool:
        try:
            return os.stat(self.path).st_size <= self.offset
        except FileNotFoundError:
            return True


def read_all(path: Path) -> list[dict[str, Any]]:
    reader = EventReader(path)
    out: list[dict[str, Any]] = []
    while True:
        batch = reader.read()
        if not batch and reader.at_end:
            return out
        out.extend(batch)
