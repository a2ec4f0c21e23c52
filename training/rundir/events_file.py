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
from typing import Any, BinaryIO

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
from traindeck.untrusted import open_regular

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
        with open_regular(path) as f:
            start = max(0, f.seek(0, os.SEEK_END) - max_bytes)
            f.seek(start)
            lines = f.read(max_bytes).split(b"\n")
    except OSError:
        return []
    if start > 0:
        lines = lines[1:]  # the first line is cut
    return parse_lines(lines)[0]


def read_last_lines(f: BinaryIO, n: int, max_line_bytes: int = MAX_LINE_BYTES,
                    max_total_bytes: int = 64 << 20, block_bytes: int = 64 << 10) -> list[bytes]:
    """The last `n` lines of an open file, oldest first (an unterminated last line counts as one),
    read backwards in blocks: time linear in the bytes read, memory bounded by `max_total_bytes`
    and `max_line_bytes`. A line longer than `max_line_bytes` is junk, not a record: it is left
    out, though its bytes are still walked over (once) to reach the lines before it."""
    if n <= 0:
        return []
    pos = f.seek(0, os.SEEK_END)
    lines: list[bytes] = []  # newest first
    piece: list[bytes] = []  # the parts of the line being put together, newest first
    piece_bytes, too_long, held = 0, False, 0
    after_last_newline = True  # the file's final newline ends a line; it does not start an empty one
    while pos > 0 and len(lines) < n and held <= max_total_bytes:
        step = min(block_bytes, pos)
        pos -= step
        f.seek(pos)
        block = f.read(step)
        end = len(block)
        while len(lines) < n:
            cut = block.rfind(b"\n", 0, end)
            chunk = block[cut + 1:end]
            piece_bytes += len(chunk)
            if piece_bytes > max_line_bytes:
                too_long, piece = True, []
            elif chunk:
                piece.append(chunk)
            if cut < 0:
                break  # the line began in an earlier block
            if not too_long and not (after_last_newline and piece_bytes == 0):
                line = b"".join(reversed(piece))
                lines.append(line)
                held += len(line)
            after_last_newline = False
            piece, piece_bytes, too_long, end = [], 0, False, cut
    if pos == 0 and len(lines) < n and piece_bytes and not too_long:
        lines.append(b"".join(reversed(piece)))  # the file's first line
    lines.reverse()
    return lines


# How much one read() parses at most. Every long-lived follower (the console, the supervisor's
# health thread and series snapshot) holds one chunk's parsed events at a time, and that peak stays
# in its RSS: 4 MB (~25,000 events, two forms) cost the supervisor 60 MiB behind a fast run,
# 512 KB costs 4-8 (issue 35, BENCHMARKS.md "Memory over a long live run").
READ_CHUNK_BYTES = 512 << 10


class EventReader:
    """Tails a JSONL file incrementally.

    `read()` returns the complete new lines parsed since the last call. It copes with the file
    not existing yet, a partial last line (kept until its newline arrives), truncation or
    replacement (starts over), and junk (skipped and counted in `skipped`).
    """

    def __init__(self, path: Path, chunk_bytes: int = READ_CHUNK_BYTES):
        self.path = Path(path)
        self.offset = 0
        self.skipped = 0
        self.chunk_bytes = chunk_bytes
        self._partial = b""
        self._discarding = False  # inside a line that already went over MAX_LINE_BYTES
        self._inode: int | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes read of a last line whose newline has not arrived: `offset - pending_bytes` is
        the end of the last complete line."""
        return len(self._partial)

    def read(self, max_bytes: int | None = None) -> list[dict[str, Any]]:
        try:
            st = os.stat(self.path)
        except OSError:  # missing, or a path that is no path (a file where its directory should be)
            return []
        if self._inode is not None and (st.st_ino != self._inode or st.st_size < self.offset):
            # truncated or replaced: start over
            self.offset, self._partial, self._discarding = 0, b"", False
        self._inode = st.st_ino
        if st.st_size <= self.offset:
            return []
        budget = max_bytes or self.chunk_bytes
        try:
            with open_regular(self.path) as f:  # a FIFO, directory or symlink here reads as nothing
                f.seek(self.offset)
                data = f.read(min(budget, st.st_size - self.offset))
        except OSError:
            return []
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if self._discarding and lines:
            lines.pop(0)  # the rest of a line that went over MAX_LINE_BYTES: not a record
            self._discarding = False
        if len(self._partial) > MAX_LINE_BYTES:
            # Memory stays bounded whatever one line's length; the line is junk, counted once.
            if not self._discarding:
                self.skipped += 1
            self._partial, self._discarding = b"", True
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
