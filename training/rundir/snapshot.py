"""The series snapshot: events.jsonl folded up to a byte offset, so attaching costs the same at
10^3 or 10^7 events.

    series.snapshot.npz   beside events.jsonl, atomically replaced (tmp + os.replace)

It holds the `SeriesStore` (each series' bounded multi-resolution buckets and full-resolution
tail, training/rundir/series.py), the run's last MAX_STORY events other than train metrics
(checkpoints, epochs, validation, warnings, states) and its last train metric event (what the viewers' run model and event log fold; they are few), each as written, and where in
events.jsonl it stops: `offset` (just after a complete line) and a fingerprint of the file's
first line. A viewer loads it and reads events.jsonl from `offset` on.

events.jsonl stays the truth. `load_or_rebuild` trusts a snapshot only when it parses, has this
version, its offset is inside the file on a line boundary and the file's first line matches;
anything else (missing, corrupt, from a replaced or truncated file) is rebuilt by folding
events.jsonl from the start and saved, so the next attach is fast again. A snapshot behind the
file (stale) is not wrong: the events after its offset are read as the tail, never hidden.

The supervisor keeps it current as the run goes (`SnapshotWriter`, a helper thread saving every
SAVE_EVERY_S while events arrive); viewers save one when the tail they had to read was long.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from traindeck.numbers import finite_number
from traindeck.untrusted import (
    MAX_JSON_DEPTH,
    bounded_int,
    open_regular,
    parse_json,
    read_bounded,
)
from training.rundir.events_file import READ_CHUNK_BYTES, EventReader
from training.rundir.records import Event, MetricEvent, TimingEvent, as_events, parse_events
from training.rundir.series import Series, SeriesStore

NAME = "series.snapshot.npz"
VERSION = 1
MAX_STORY = 5000  # non-metric events kept (the event log's max_lines)
MAX_LAST = 1 + 4096  # the last train metric and the newest timing event of each rank
SAVE_EVERY_S = 5.0
RESAVE_TAIL_BYTES = 4 << 20  # a viewer that read this much tail saves a fresh snapshot
FINGERPRINT_BYTES = 4096
# MAX_SERIES series of DEFAULT_CAPACITY buckets and DEFAULT_RECENT points, and the story, take
# tens of MB unpacked; a file much larger is not one this module wrote.
MAX_SNAPSHOT_BYTES = 128 << 20
MAX_UNPACKED_BYTES = 512 << 20


def snapshot_path(events: Path) -> Path:
    return Path(events).with_name(NAME)


def fingerprint(events: Path, upto: int) -> str:
    """A hash of events.jsonl's first bytes (at most `upto`, the folded part, which never changes
    while the file is appended to): a replaced file has another."""
    try:
        with open_regular(events) as f:
            head = f.read(min(FINGERPRINT_BYTES, upto))
    except OSError:
        return ""
    return hashlib.sha1(head).hexdigest()


@dataclass
class Folded:
    """events.jsonl folded up to `offset`: the series, the story, the last metric per split."""

    store: SeriesStore = field(default_factory=SeriesStore)
    story: deque = field(default_factory=lambda: deque(maxlen=MAX_STORY))
    last_metric: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    offset: int = 0
    seq: int = 0  # events folded (orders the story and the last metrics for replay)
    fingerprint: str = ""

    def add(self, events: list[Event] | list[dict[str, Any]]) -> None:
        """Fold events typed by records.parse_event (fold_file parses each line once; a dict is
        parsed here). The story keeps each event as written, the file's form."""
        records = list(as_events(events))
        self.store.add_events(records)
        for e in records:
            self.seq += 1
            if type(e) is MetricEvent and e.split == "train":
                self.last_metric["train"] = (self.seq, e.raw)  # the steps: only the last one is replayed
            elif type(e) is TimingEvent:
                # Each rank's newest carries its totals: the step anatomy replays from it alone.
                self.last_metric[f"timing/{e.rank}"] = (self.seq, e.raw)
            else:
                self.story.append((self.seq, e.raw))  # validation results are part of the story

    def replay(self) -> list[dict[str, Any]]:
        """The events a viewer's model and event log fold in place of the whole file (in order)."""
        items = list(self.story) + [m for m in self.last_metric.values()]
        return [e for _, e in sorted(items, key=lambda item: item[0])]

    # ---- the file ------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {}
        series_meta = []
        for i, (key, s) in enumerate(self.store.series.items()):
            arrays[f"b{i}"] = s._b[: s._nb].copy()
            arrays[f"r{i}"] = np.asarray(s.recent, dtype=np.float64).reshape(-1, 4)
            series_meta.append({"key": list(key), "span": s.span, "open": s._open, "count": s.count,
                                "nonfinite": s.nonfinite, "first_nonfinite_step": s.first_nonfinite_step,
                                "last": list(s.last) if s.last else None})
        st = self.store
        meta = {"v": VERSION, "offset": self.offset, "seq": self.seq, "fingerprint": self.fingerprint,
                "capacity": st.capacity, "recent": st.recent, "max_series": st.max_series,
                "dropped_series": st.dropped_series, "last_step": st.last_step, "last_epoch": st.last_epoch,
                "series": series_meta, "story": list(self.story),
                "last_metric": {k: list(v) for k, v in self.last_metric.items()}}
        buf = io.BytesIO()
        np.savez_compressed(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Folded":
        """Raises ValueError (or a zip/json/numpy error, which callers treat alike) when corrupt.

        A snapshot is a file in the run directory, so anyone who can write there can write it:
        every number is checked to be of the type and within the range this module writes, so a
        hostile one is rebuilt from events.jsonl instead of breaking (or bloating) a viewer later."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if sum(info.file_size for info in z.zip.infolist()) > MAX_UNPACKED_BYTES:
                raise ValueError("snapshot unpacks too large")  # a zip bomb
            meta = parse_json(z["meta"].tobytes(), max_depth=MAX_JSON_DEPTH)
            _check(isinstance(meta, dict) and meta.get("v") == VERSION, "snapshot version")
            capacity, recent, max_series = (_int(meta.get(k), lo, hi) for k, lo, hi in (
                ("capacity", 4, 1 << 16), ("recent", 1, 1 << 16), ("max_series", 1, 1 << 12)))
            _check(capacity % 2 == 0, "capacity")
            store = SeriesStore(capacity, recent, max_series)
            store.dropped_series = _int(meta.get("dropped_series"), 0, 1 << 62)
            store.last_step, store.last_epoch = _number(meta.get("last_step")), _number(meta.get("last_epoch"))
            series = meta.get("series")
            _check(isinstance(series, list) and len(series) <= max_series, "series")
            for i, sm in enumerate(series):
                _check(isinstance(sm, dict), "series entry")
                s = Series(store.capacity, store.recent)
                b, r = z[f"b{i}"], z[f"r{i}"]
                if b.ndim != 2 or b.shape[1] != 8 or len(b) > store.capacity or r.ndim != 2 or r.shape[1] != 4:
                    raise ValueError("snapshot series shape")
                _check(b.dtype.kind == "f" and r.dtype.kind == "f" and len(r) <= store.recent, "series arrays")
                s._b[: len(b)] = b
                s._nb = len(b)
                s.recent.extend(tuple(row) for row in r.tolist())
                s.span, s.count = _int(sm.get("span"), 1, 1 << 62), _int(sm.get("count"), 0, 1 << 62)
                s._open = _floats(sm.get("open"), 8)
                s.nonfinite = _int(sm.get("nonfinite"), 0, 1 << 62)
                s.first_nonfinite_step = _number(sm.get("first_nonfinite_step"))
                s.last = _floats(sm.get("last") or None, 4)
                key = sm.get("key")
                _check(isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key), "key")
                store.series[tuple(key)] = s
        story, last_metric = meta.get("story"), meta.get("last_metric")
        _check(isinstance(story, list) and isinstance(last_metric, dict) and len(last_metric) <= MAX_LAST, "story")
        _check(isinstance(meta.get("fingerprint"), str), "fingerprint")
        folded = cls(store=store, offset=_int(meta.get("offset"), 0, 1 << 62), seq=_int(meta.get("seq"), 0, 1 << 62),
                     fingerprint=meta["fingerprint"])
        folded.story.extend(_seq_event(item) for item in story[-MAX_STORY:])
        folded.last_metric = {k: _seq_event(v) for k, v in last_metric.items() if isinstance(k, str)}
        return folded


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"snapshot {what}")


def _int(value: Any, lo: int, hi: int) -> int:
    number = bounded_int(value, lo, hi)
    _check(number is not None, "number")
    return number  # type: ignore[return-value]


def _number(value: Any) -> float | None:
    """None, or a finite number (a step, an epoch) as this module wrote it."""
    _check(value is None or finite_number(value) is not None, "number")
    return value


def _floats(value: Any, n: int) -> Any:
    """None, or n floats (an open bucket: a list; a last point: a tuple). NaN is allowed: a point
    without an epoch holds NaN there."""
    if value is None:
        return None
    _check(isinstance(value, list) and len(value) == n
           and all(isinstance(x, float) or bounded_int(x, -(1 << 62), 1 << 62) is not None for x in value), "numbers")
    return [float(x) for x in value] if n == 8 else tuple(float(x) for x in value)


def _seq_event(item: Any) -> tuple[int, dict[str, Any]]:
    _check(isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict), "event")
    return _int(item[0], 0, 1 << 62), item[1]


def save(events: Path, folded: Folded) -> None:
    """Atomically replace the snapshot beside `events` (a reader sees the old one or the new one)."""
    path = snapshot_path(events)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        # User-only like every file of a run directory, whatever the umask (0600 at creation).
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(folded.to_bytes())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def load(events: Path) -> Folded | None:
    """The snapshot if it is trustworthy for this events.jsonl now, else None."""
    try:
        data = read_bounded(snapshot_path(events), MAX_SNAPSHOT_BYTES)  # no FIFO waited on, no link followed
        if data is None:
            return None
        folded = Folded.from_bytes(data)
        size = os.stat(events).st_size
    except Exception:  # noqa: BLE001 - any damage means: rebuild from the truth
        return None
    if not 0 < folded.offset <= size or folded.fingerprint != fingerprint(events, folded.offset):
        return None
    try:
        with open_regular(events) as f:
            f.seek(folded.offset - 1)
            if f.read(1) != b"\n":
                return None
    except OSError:
        return None
    return folded


def fold_file(events: Path, folded: Folded | None = None, chunk_bytes: int = READ_CHUNK_BYTES) -> Folded:
    """Fold events.jsonl from `folded.offset` (or the start) to its last complete line."""
    folded = folded or Folded()
    reader = EventReader(events, chunk_bytes=chunk_bytes)
    reader.offset = folded.offset
    while True:
        batch = reader.read()
        folded.add(parse_events(batch))
        if reader.at_end:
            break
    folded.offset = reader.offset - reader.pending_bytes
    folded.fingerprint = fingerprint(events, folded.offset) if folded.offset else ""
    return folded


def load_or_rebuild(events: Path) -> tuple[Folded, bool]:
    """(the folded run up to a line boundary, whether it was rebuilt). A rebuilt one is saved."""
    folded = load(events)
    if folded is not None:
        try:
            behind = os.stat(events).st_size - folded.offset
        except OSError:
            behind = 0
        if behind <= RESAVE_TAIL_BYTES:
            return folded, False
        fold_file(events, folded)  # stale: caught up from its offset, and saved
        save(events, folded)
        return folded, True
    folded = fold_file(events)
    if folded.offset:
        save(events, folded)
    return folded, True


class SnapshotWriter:
    """The supervisor's helper: folds events.jsonl as it grows and saves the snapshot every
    SAVE_EVERY_S when something new was folded, and once more on stop."""

    def __init__(self, events: Path, every_s: float = SAVE_EVERY_S) -> None:
        self.events = Path(events)
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="series-snapshot", daemon=True)
        self.folded: Folded | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def step(self) -> bool:
        """Fold what is new and save; False when there was nothing new."""
        if self.folded is None:
            self.folded, rebuilt = load_or_rebuild(self.events)  # a resume continues the run's
            return rebuilt
        before = self.folded.offset
        try:
            size = os.stat(self.events).st_size
        except OSError:
            return False
        if size < before or (before and self.folded.fingerprint != fingerprint(self.events, before)):
            self.folded = None  # replaced or truncated: start over from the truth
            return self.step()
        if size == before:
            return False
        fold_file(self.events, self.folded)
        if self.folded.offset == before:
            return False
        save(self.events, self.folded)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.step()
        self.step()
