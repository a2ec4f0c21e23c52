"""Incremental readers for the run directory's append-only files, used by the screens' workers.

events.jsonl and telemetry.jsonl are tailed with `training.rundir.events.EventReader` (telemetry lines
carry "kind": "telemetry"); `TextTail` follows a plain per-rank log file. Worker threads only.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path


class TextTail:
    """Follows a text file: the last `keep` lines on the first read, then whatever is appended."""

    def __init__(self, path: Path, keep: int = 2000, first_read_bytes: int = 1 << 20):
        self.path = Path(path)
        self.keep = keep
        self.first_read_bytes = first_read_bytes
        self.offset: int | None = None
        self._partial = b""
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
            self._partial = b""
        self._inode = st.st_ino
        if st.st_size <= self.offset:
            return [], reset
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(st.st_size - self.offset)
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        text = [line.decode("utf-8", "replace").rstrip("\r") for line in lines]
        return list(deque(text, maxlen=self.keep)), reset
