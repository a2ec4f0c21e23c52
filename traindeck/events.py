"""events.jsonl, the writer's half: schema v1 lines, encoded and appended with one write().

training.rundir.events_file adds the readers (and re-exports these), so every writer of events.jsonl, a
user's script through traindeck.report or the supervisor, goes through the same functions.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


def _clean(value: Any) -> Any:
    """JSON has no NaN/Inf; keep them readable as strings rather than writing invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def make_event(kind: str, t: float | None = None, **fields: Any) -> dict[str, Any]:
    event = {"v": SCHEMA_VERSION, "t": round(time.time() if t is None else t, 3), "kind": kind}
    event.update(_clean(fields))
    return event


def encode(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, separators=(",", ":"), allow_nan=False) + "\n").encode()


def open_append(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def append_events(path: Path, events: list[dict[str, Any]]) -> None:
    """Append events with one write() (small batches stay atomic with respect to other writers)."""
    if not events:
        return
    data = b"".join(encode(e) for e in events)
    fd = open_append(Path(path))
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is out (a regular file may take a short write when nearly full)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
