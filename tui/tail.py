"""Incremental readers for the run directory's append-only files, used by the screens' workers.

events.jsonl and telemetry.jsonl are tailed with `training.rundir.events_file.EventReader` (telemetry lines
carry "kind": "telemetry"); `TextTail` follows a plain per-rank log file. Worker threads only.
"""

from __future__ import annotations

import os
import re
from collections import deque
from pathlib import Path

from traindeck.untrusted import open_regular

# A log line longer than this is shown cut (with how much was cut): a script that prints one
# endless line, or a progress bar redrawn with \r and never ended with \n, must not grow the
# viewer's memory without bound.
MAX_LINE_BYTES = 64 << 10


# Terminal control sequences in a log: CSI (colours, cursor moves, erase: Rich's live bar, Keras'
# progress bar), OSC (titles, links) and the two-byte escapes. A log view shows the text, not them.
_ESCAPES = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_CONTROLS = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")


def _shown(line: bytes) -> str:
    """What a terminal would show of one log line: a progress bar redrawn with \r shows its last
    drawing, not every one; terminal control sequences are not text."""
    if b"\x1b" in line:
        line = _ESCAPES.sub(b"", line)
    if b"\r" in line:
        drawings = [d for d in line.split(b"\r") if d.strip()]
        line = drawings[-1] if drawings else b""
    return _CONTROLS.sub(b"", line).decode("utf-8", "replace")


class TextTail:
    """Follows a text file: the last `keep` lines on the first read, then whatever is appended.

    Memory stays bounded whatever the file holds: one read takes at most `first_read_bytes` (more
    appended since is skipped to the newest, as the first read does), and a line without its
    newline is held up to MAX_LINE_BYTES (a \r progress bar keeps only its latest drawing)."""

    def __init__(self, path: Path, keep: int = 2000, first_read_bytes: int = 1 << 20):
        self.path = Path(path)
        self.keep = keep
        self.first_read_bytes = first_read_bytes
        self.offset: int | None = None
        self.cut_lines = 0  # lines shown cut at MAX_LINE_BYTES
        self._partial = b""
        self._cut = 0  # bytes of the held line already dropped
        self._inode: int | None = None

    def read(self) -> tuple[list[str], bool]:
        """(new complete lines, reset) where reset means the file started over (truncated/replaced)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return [], False
        reset = False
        if self.offset is None or self._inode != st.st_ino or st.st_size < self.offset:
            reset = self.offset is not None
            self.offset = max(0, st.st_size - self.first_read_bytes)
            self._partial, self._cut = b"", 0
        self._inode = st.st_ino
        if st.st_size - self.offset > self.first_read_bytes:
            # More arrived than one read takes: what a view of the last `keep` lines shows is at the end.
            self.offset = st.st_size - self.first_read_bytes
            self._partial, self._cut = b"", 0
        if st.st_size <= self.offset:
            return [], reset
        try:
            with open_regular(self.path) as f:  # a FIFO or a link in place of a log reads as nothing
                f.seek(self.offset)
                data = f.read(min(self.first_read_bytes, st.st_size - self.offset))
        except OSError:
            return [], reset
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        text = []
        for i, line in enumerate(lines):
            cut = self._cut if i == 0 else 0
            if len(line) > MAX_LINE_BYTES:
                cut, line = cut + len(line) - MAX_LINE_BYTES, line[:MAX_LINE_BYTES]
            shown = _shown(line).rstrip("\r")
            if cut:
                self.cut_lines += 1
                shown += f" [... {cut} bytes cut]"
            text.append(shown)
        if lines:
            self._cut = 0
        self._hold_bounded()
        return list(deque(text, maxlen=self.keep)), reset

    def _hold_bounded(self) -> None:
        """Keep at most MAX_LINE_BYTES of the line still waiting for its newline."""
        if len(self._partial) <= MAX_LINE_BYTES:
            return
        redraw = self._partial.rfind(b"\r")
        if redraw >= 0:  # a progress bar: only its latest drawing matters (the older are not "cut")
            self._partial = self._partial[redraw + 1:]
        if len(self._partial) > MAX_LINE_BYTES:
            self._cut += len(self._partial) - MAX_LINE_BYTES
            self._partial = self._partial[:MAX_LINE_BYTES]
