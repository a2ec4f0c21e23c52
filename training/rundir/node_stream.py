"""The stream that carries another node's run directory to the head: one JSON object a line.

    node (over SSH: remote_node follow DIR)           head (training.supervise.node_follow)
    NodeStream(DIR, offsets).poll() -> messages  -->  NodeMirror(<run>/nodes/<host>).apply(message)

Messages (every one has "kind"):

    {"kind": "append", "file": "events.jsonl" | "telemetry.jsonl", "offset": N, "text": "<whole lines>"}
        the bytes of that file from byte N, complete lines only; the head appends them, so its copy
        is a byte-for-byte prefix of the node's and its size is where a reconnect resumes
    {"kind": "put", "file": "run.json" | "exit.json" | "heartbeats/rank-N.json", "data": {...}}
        a whole JSON file that changed; the head replaces its copy atomically
    {"kind": "alive", "supervisor": "alive" | "dead" | "exited" | ..., "t": ...}
        the node's supervisor as its own host sees it (training.rundir.liveness), at least once a
        second: the head's only way to learn that a node's supervisor is gone without exit.json
        ("dead"; its pid is not the head's to check), and the keep-alive that lets the node notice a dropped connection
    {"kind": "end", "state": ..., "message": ..., "failed_rank": ...}
        exit.json exists and everything before it was sent: the stream is over

With `files=False` (the node's directory is the head's own, on a shared filesystem) only `alive`
and `end` are sent: there is nothing to copy. The mirror accepts only the names above, so a node
can never write outside its own directory on the head.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

from traindeck.untrusted import open_regular
from training.rundir.liveness import supervisor_status
from training.rundir.paths import RunPaths, read_json, read_run_json, write_json_atomic

APPENDED = ("events.jsonl", "telemetry.jsonl")
# At most this much of one file per message: a node that ran for hours before the head connected
# (or reconnected) catches up in bounded lines.
CHUNK_BYTES = 256 << 10
ALIVE_EVERY_S = 1.0
HEARTBEAT_NAME = re.compile(r"heartbeats/rank-\d{1,6}\.json")
PUT_NAMES = ("run.json", "exit.json")


class MirrorGap(Exception):
    """An append does not start where the mirror's copy ends: the stream must resume from there."""


def _text(data: bytes) -> str:
    # Bytes that are not UTF-8 survive the JSON round trip as lone surrogates (see _bytes).
    return data.decode("utf-8", "surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class NodeStream:
    """The node's side: what changed in its run directory since the last poll, as messages."""

    def __init__(self, root: Path, offsets: dict[str, int] | None = None, files: bool = True,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.paths = RunPaths(Path(root))
        self.offsets = {name: int((offsets or {}).get(name, 0)) for name in APPENDED}
        self.files = files
        self.clock = clock
        self.monotonic = monotonic
        self.ended = False
        self._keys: dict[str, tuple[int, int, int] | None] = {}
        self._last_alive: tuple[str, float] | None = None

    def poll(self) -> list[dict[str, Any]]:
        """The messages for what changed since the last poll (the last one is "end")."""
        if self.ended:
            return []
        # The supervisor first, exit.json after: a supervisor that ended normally wrote exit.json
        # before it exited, so "dead" with no exit.json after it means it died without one.
        status = supervisor_status(read_run_json(self.paths), self.clock()).value
        exit_key = _stat_key(self.paths.exit_json)
        if exit_key is not None and status != "alive":
            status = "exited"  # it ended and said so: not a node that dropped out
        out: list[dict[str, Any]] = []
        if self.files:
            out.extend(m for m in map(self._appended, APPENDED) if m is not None)
            out.extend(self._changed_files())
        now = self.monotonic()
        last = self._last_alive
        if last is None or last[0] != status or now - last[1] >= ALIVE_EVERY_S:
            self._last_alive = (status, now)
            out.append({"kind": "alive", "supervisor": status, "t": round(self.clock(), 3)})
        # The end once the supervisor is gone too (it appends the final status event after
        # exit.json) and a poll found nothing more to append.
        if exit_key is not None and status != "alive" and not any(m["kind"] == "append" for m in out):
            record = read_json(self.paths.exit_json) or {}
            out.append({"kind": "end", "state": record.get("state"), "message": record.get("message"),
                        "failed_rank": record.get("failed_rank")})
            self.ended = True
        return out

    def _appended(self, name: str) -> dict[str, Any] | None:
        path = self.paths.root / name
        offset = self.offsets[name]
        try:
            with open_regular(path) as f:  # a FIFO or a link in place of the file sends nothing
                size = f.seek(0, os.SEEK_END)
                if size < offset:
                    return None  # the append-only files never shrink; a replaced one is not ours to guess at
                f.seek(offset)
                data = f.read(min(CHUNK_BYTES, size - offset))
        except OSError:
            return None
        end = data.rfind(b"\n")
        if end < 0:
            return None  # no complete line yet
        data = data[:end + 1]
        self.offsets[name] = offset + len(data)
        return {"kind": "append", "file": name, "offset": offset, "text": _text(data)}

    def _changed_files(self) -> list[dict[str, Any]]:
        names = list(PUT_NAMES)
        try:
            names += sorted(f"heartbeats/{p.name}" for p in self.paths.heartbeats.iterdir()
                            if HEARTBEAT_NAME.fullmatch(f"heartbeats/{p.name}"))
        except OSError:
            pass
        out = []
        for name in names:
            key = _stat_key(self.paths.root / name)
            if key is None or key == self._keys.get(name):
                continue
            data = read_json(self.paths.root / name)
            if isinstance(data, dict):  # a torn read is retried at the next poll
                self._keys[name] = key
                out.append({"kind": "put", "file": name, "data": data})
        return out


class NodeMirror:
    """The head's side: a node's messages written to <run>/nodes/<host>/ with the node's layout.

    A mirror, not a writer of records: nodes/<host>/run.json and exit.json are copies (the same
    JSON) of what that node's own creator, merges and finish_run wrote (training.rundir.records),
    replaced whole as they change there. It never writes the head's run.json or exit.json; the
    head's supervisor reads the copies (training.rundir.node_views) and records the run's end itself."""

    def __init__(self, root: Path) -> None:
        self.paths = RunPaths(Path(root))

    def offsets(self) -> dict[str, int]:
        """Where the stream resumes: the size of each appended file here."""
        out = {}
        for name in APPENDED:
            try:
                out[name] = os.path.getsize(self.paths.root / name)
            except OSError:
                out[name] = 0
        return out

    def _ensure_dirs(self) -> None:
        for folder in (self.paths.root, self.paths.heartbeats):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def apply(self, message: dict[str, Any]) -> None:
        kind, name = message.get("kind"), message.get("file")
        if kind == "append" and name in APPENDED and isinstance(message.get("text"), str):
            path = self.paths.root / name
            size = os.path.getsize(path) if path.exists() else 0
            if message.get("offset") != size:
                raise MirrorGap(f"{name}: the node sent bytes from {message.get('offset')}, the copy here ends at {size}")
            self._ensure_dirs()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                data = _bytes(message["text"])
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
        elif kind == "put" and isinstance(name, str) and (name in PUT_NAMES or HEARTBEAT_NAME.fullmatch(name)) \
                and isinstance(message.get("data"), dict):
            self._ensure_dirs()
            write_json_atomic(self.paths.root / name, message["data"])


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))
