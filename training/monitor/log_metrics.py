"""Turn an unmodified script's printed lines into metric and checkpoint events.

A profile's `[metrics]` table maps a split name ("train", "val", anything) or "checkpoint" to
regexes with named groups:

    [metrics]
    train = ['Epoch (?P<epoch>\\d+)/(?P<epochs>\\d+) - Train Loss: (?P<loss>[\\d.]+), Acc: (?P<acc>[\\d.]+)%']
    val = ['Val Loss: (?P<loss>[\\d.]+)']
    checkpoint = ['Saved best model: (?P<path>\\S*?epoch(?P<epoch>\\d+)\\S*) \\(F1: (?P<f1>[\\d.]+)\\)']

Groups `step` and `epoch` place the point (`epochs` is the total, kept as a field); every other
group is a float value ("78.23%" -> 78.23; a value that is not a number is skipped). Python
group names cannot hold "/", so `loss__color` names the value `loss/color`. One line may match
several patterns (train and val printed on one line share its step and epoch). A line without
a step gets the next step number (last step seen + 1), so the plot still has an x axis.

A checkpoint pattern needs `(?P<path>...)`; a group named `value` (or else the first numeric
group) becomes the checkpoint's monitored value, and the line saying "best" marks it best.

`preset = "hf-trainer"` (or a list: "lightning", "keras", "tqdm") adds what that framework
prints, without a regex (training.monitor.metric_presets); regexes in the same table still apply.

`LogTailer` follows rank 0's growing log on a daemon thread and appends the events to
events.jsonl in batches. It survives the file not existing yet, partial lines, \\r progress
bars, binary junk and endless lines (dropped past 64 KiB, memory stays bounded).
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

from training.monitor.metric_presets import PRESETS, preset_names
from training.monitor.polling import EventWritingPoller
from training.rundir.events_file import make_event

PLACEMENT_GROUPS = ("step", "epoch")
# Groups that describe the point rather than being a value to plot.
META_GROUPS = ("epochs", "total_steps", "path", "monitor", "best")
MAX_LINE_BYTES = 64 * 1024
READ_CHUNK_BYTES = 1 << 20

_NUMBER = re.compile(r"[-+]?(?:\d[\d_,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)\b", re.I)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_BEST = re.compile(r"\bbest\b", re.I)


def parse_number(text: str | None) -> float | None:
    """The first number in `text` ("78.23%" -> 78.23, "1,024" -> 1024.0), or None."""
    if text is None:
        return None
    m = _NUMBER.search(text)
    if m is None:
        return None
    try:
        return float(m.group(0).replace(",", "").replace("_", ""))
    except ValueError:
        return None


def _value_name(group: str, split: str) -> str:
    name = group.replace("__", "/")
    # The worker's val values carry no "val_" prefix; do the same for regexes that name it.
    prefix = split + "_"
    if split != "train" and name.startswith(prefix) and len(name) > len(prefix):
        name = name[len(prefix):]
    return name


class LogMetricParser:
    """Regexes over printed lines -> event dicts (training.rundir.events_file.make_event)."""

    def __init__(self, metrics: dict[str, list[str] | str]):
        self.patterns: list[tuple[str, re.Pattern[str]]] = []
        self.presets = [PRESETS[name]() for name in preset_names(metrics)]
        for split, pats in metrics.items():
            if split == "preset":
                continue
            for pat in [pats] if isinstance(pats, str) else pats:
                self.patterns.append((split, re.compile(pat)))
        self.last_step: int | None = None
        self.last_epoch: int | None = None
        self.epochs: int | None = None
        self.lines = 0
        self.matched_lines = 0

    def feed(self, line: str, t: float | None = None) -> list[dict[str, Any]]:
        self.lines += 1
        # Colour codes go, and so do backspaces (Keras's bar steps back over its own line with them).
        line = _ANSI.sub("", line.rstrip("\r\n")).replace("\b", "")
        preset_events = self._preset_events(line, t)  # a blank line may end a bar's drawing
        if not line.strip():
            return preset_events
        hits = []
        for split, rx in self.patterns:
            m = rx.search(line)
            if m is not None:
                hits.append((split, m))
        if not hits:
            if preset_events:
                self.matched_lines += 1
            return preset_events
        self.matched_lines += 1
        # Placement is shared by the whole line: "Epoch 3 ... Train ... | Val ..." is one point.
        step = epoch = None
        for _, m in hits:
            groups = m.groupdict()
            if step is None:
                step = _as_int(groups.get("step"))
            if epoch is None:
                epoch = _as_int(groups.get("epoch"))
            epochs = _as_int(groups.get("epochs"))
            if epochs is not None:
                self.epochs = epochs
        if epoch is not None:
            self.last_epoch = epoch
        else:
            epoch = self.last_epoch

        events = []
        metric_step: int | None = None
        for split, m in hits:
            if split == "checkpoint":
                event = self._checkpoint(m, line, step, epoch, t)
            else:
                if metric_step is None:
                    metric_step = step if step is not None else (self.last_step or 0) + 1
                event = self._metric(split, m, metric_step, epoch, t)
            if event is not None:
                events.append(event)
        if step is not None:
            self.last_step = step
        elif metric_step is not None and any(e["kind"] == "metric" for e in events):
            self.last_step = metric_step
        return preset_events + events

    def finish(self, t: float | None = None) -> list[dict[str, Any]]:
        """The points a preset still holds when the output ends (the bar's last drawing)."""
        return self._preset_events(None, t)

    def _preset_events(self, line: str | None, t: float | None) -> list[dict[str, Any]]:
        events = []
        for preset in self.presets:
            points = preset.feed(line, self.last_step) if line is not None else _finish(preset)
            for point in points:
                step = point.step if point.step is not None else (self.last_step or 0) + 1
                self.last_step = step
                if point.epoch is not None:
                    self.last_epoch = point.epoch
                if point.epochs is not None:
                    self.epochs = point.epochs
                fields: dict[str, Any] = {"step": step, "split": point.split, "values": point.values,
                                          "source": "log"}
                if self.last_epoch is not None:
                    fields["epoch"] = self.last_epoch
                if self.epochs is not None:
                    fields["epochs"] = self.epochs
                events.append(make_event("metric", t=t, **fields))
        return events

    def _metric(self, split: str, m: re.Match[str], step: int, epoch: int | None,
                t: float | None) -> dict[str, Any] | None:
        values = {}
        for group, text in m.groupdict().items():
            if group in PLACEMENT_GROUPS or group in META_GROUPS:
                continue
            value = parse_number(text)
            if value is not None:
                values[_value_name(group, split)] = value
        if not values:
            return None
        fields: dict[str, Any] = {"step": step, "split": split, "values": values, "source": "log"}
        if epoch is not None:
            fields["epoch"] = epoch
        if self.epochs is not None:
            fields["epochs"] = self.epochs
        return make_event("metric", t=t, **fields)

    def _checkpoint(self, m: re.Match[str], line: str, step: int | None, epoch: int | None,
                    t: float | None) -> dict[str, Any] | None:
        groups = m.groupdict()
        path = (groups.get("path") or "").strip()
        if not path:
            return None
        fields: dict[str, Any] = {"path": path, "source": "log"}
        if epoch is not None:
            fields["epoch"] = epoch
        step = step if step is not None else self.last_step
        if step is not None:
            fields["step"] = step
        monitor = groups.get("monitor")
        for group, text in groups.items():
            if group in ("path", "step", "epoch", "monitor", "best") or text is None:
                continue
            number = parse_number(text)
            name = group.replace("__", "/")
            fields[name] = number if number is not None else text.strip()
            if number is not None and "value" not in fields and group != "epochs":
                fields["value"] = number
                fields["monitor"] = monitor.strip() if monitor else name
        fields["best"] = bool(groups.get("best")) or bool(_BEST.search(line))
        return make_event("checkpoint", t=t, **fields)


def _finish(preset: Any) -> list:
    finish = getattr(preset, "finish", None)
    return finish() if finish is not None else []


def _as_int(text: str | None) -> int | None:
    value = parse_number(text)
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return int(value)


class LogTailer(EventWritingPoller):
    """Follow a growing text log on a daemon thread; parsed events go to events.jsonl.

    `find_log` is asked for the path until it returns one that exists (rank 0's log may not be
    created yet). If the file is replaced or truncated (a restart), reading starts over.
    """

    def __init__(self, find_log: Callable[[], Path | None], parser: LogMetricParser, events_path: Path,
                 poll_s: float = 0.2, append: Callable[[list[dict[str, Any]]], Any] | None = None):
        """`append`: where the events go instead of straight into events_path (the supervisor's
        writer, which keeps and retries them while the disk is full)."""
        super().__init__(poll_s, "traindeck-log-tailer", events_path, append)
        self.find_log = find_log
        self.parser = parser
        self.path: Path | None = None
        self.offset = 0
        self.lines = 0
        self.dropped_long_lines = 0
        self._inode: int | None = None
        self._partial = b""
        self._discarding = False  # inside a line that already went over MAX_LINE_BYTES
        self._io_lock = threading.Lock()

    def poll_step(self) -> bool:
        return self.poll_once()

    def after_stop(self, timeout_s: float) -> None:
        """Read and parse whatever is left, including a final unterminated line."""
        # A fast script can leave more than one chunk unread when it exits: catch up first.
        deadline = time.monotonic() + timeout_s
        while self.poll_once() and time.monotonic() < deadline:
            pass
        self.poll_once(final=True)

    def poll_once(self, final: bool = False) -> bool:
        """Read what is new; returns True if there may be more to read right away."""
        with self._io_lock:
            data, more = self._read_new()
            lines = self._split(data, final)
            events: list[dict[str, Any]] = []
            now = time.time()
            for raw in lines:
                self.lines += 1
                try:
                    events.extend(self.parser.feed(raw.decode("utf-8", errors="replace"), t=now))
                except Exception:
                    self.errors += 1
            if final:
                try:
                    events.extend(self.parser.finish(t=now))
                except Exception:
                    self.errors += 1
            self.deliver(events)
            return more

    def _locate(self) -> Path | None:
        if self.path is None:
            try:
                found = self.find_log()
            except Exception:
                self.errors += 1
                return None
            if found is None:
                return None
            self.path = Path(found)
        return self.path

    def _read_new(self) -> tuple[bytes, bool]:
        path = self._locate()
        if path is None:
            return b"", False
        try:
            st = os.stat(path)
        except OSError:
            return b"", False
        if self._inode is not None and (st.st_ino != self._inode or st.st_size < self.offset):
            self.offset, self._partial, self._discarding = 0, b"", False
        self._inode = st.st_ino
        if st.st_size <= self.offset:
            return b"", False
        try:
            with open(path, "rb") as f:
                f.seek(self.offset)
                data = f.read(READ_CHUNK_BYTES)
        except OSError:
            self.errors += 1
            return b"", False
        self.offset += len(data)
        return data, self.offset < st.st_size

    def _split(self, data: bytes, final: bool) -> list[bytes]:
        # \r ends a line too: progress bars redraw one line with \r and may never print \n.
        data = self._partial + data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        parts = data.split(b"\n")
        self._partial = parts.pop()
        if self._discarding and parts:
            parts.pop(0)  # the tail of an overlong line
            self._discarding = False
        if len(self._partial) > MAX_LINE_BYTES:
            if not self._discarding:
                self.dropped_long_lines += 1
            self._partial, self._discarding = b"", True
        lines = []
        for line in parts:
            if len(line) > MAX_LINE_BYTES:
                self.dropped_long_lines += 1
                continue
            lines.append(line)
        if final and self._partial and not self._discarding:
            lines.append(self._partial)
            self._partial = b""
        return lines
