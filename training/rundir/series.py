"""Metric series for plots, bounded in memory however long the run.

    store = SeriesStore()
    store.add_events(events)                       # metric events, in batches
    store.names()                                  # [("train", "loss"), ("val", "loss"), ("train", "loss/color"), ...]
    xs, ys = store.view(("train", "loss"), width=100, smoothing=0.6)

Each series keeps the most recent `recent` points at full resolution and, for its whole
history, at most `capacity` buckets (min, max, sum, count, x range). When the buckets are full,
neighbours merge pairwise and each bucket covers twice as many points, so memory is
O(capacity + recent) at 10^3 or 10^9 points. A view reduces whatever it reads to about `width`
groups with min and max per group (spikes stay visible), so a redraw costs the same at any
length. Non-finite values (a loss gone NaN) are not plotted but counted, with the first step.

A rewind (a `log` event with control="rewind", from_step and to_step: the [health] nan rule sent
the worker back to its last good checkpoint) supersedes every point after to_step: each series
drops them, so the plot shows the branch that was kept. events.jsonl keeps them.

The store takes the events typed (training.rundir.records.parse_event, run once where they are
read: tui.feed, the series snapshot); its numbers are traindeck.numbers'.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Iterable

import numpy as np

from training.rundir.records import Event, LogEvent, MetricEvent, parse_event

Key = tuple[str, str]
DEFAULT_CAPACITY = 1024
DEFAULT_RECENT = 2048
MAX_SERIES = 256


class Series:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, recent: int = DEFAULT_RECENT):
        if capacity < 4 or capacity % 2:
            raise ValueError("capacity must be an even number >= 4")
        self.capacity = capacity
        self.recent: deque[tuple[float, float, float, float]] = deque(maxlen=recent)
        # One row per closed bucket: step_lo, step_hi, epoch_sum, t_hi, ymin, ymax, ysum, count
        self._b = np.zeros((capacity, 8), dtype=np.float64)
        self._nb = 0
        self.span = 1  # points per closed bucket
        self._open: list[float] | None = None
        self.count = 0
        self.nonfinite = 0
        self.first_nonfinite_step: float | None = None
        self.last: tuple[float, float, float, float] | None = None  # step, epoch, value, t

    def add(self, step: float, epoch: float, value: float, t: float) -> None:
        if not math.isfinite(value):
            self.nonfinite += 1
            if self.first_nonfinite_step is None:
                self.first_nonfinite_step = step
            return
        self.count += 1
        self.last = (step, epoch, value, t)
        self.recent.append(self.last)
        o = self._open
        if o is None:
            self._open = [step, step, epoch, t, value, value, value, 1.0]
            return
        o[1] = step
        o[2] += epoch
        o[3] = t
        if value < o[4]:
            o[4] = value
        if value > o[5]:
            o[5] = value
        o[6] += value
        o[7] += 1.0
        if o[7] >= self.span:
            self._close()

    def _close(self) -> None:
        if self._nb == self.capacity:
            self._merge()
        self._b[self._nb] = self._open
        self._nb += 1
        self._open = None

    def _merge(self) -> None:
        a, b = self._b[0::2], self._b[1::2]
        merged = np.empty((self.capacity // 2, 8))
        merged[:, 0] = a[:, 0]
        merged[:, 1] = b[:, 1]
        merged[:, 2] = a[:, 2] + b[:, 2]
        merged[:, 3] = b[:, 3]
        merged[:, 4] = np.minimum(a[:, 4], b[:, 4])
        merged[:, 5] = np.maximum(a[:, 5], b[:, 5])
        merged[:, 6] = a[:, 6] + b[:, 6]
        merged[:, 7] = a[:, 7] + b[:, 7]
        self._b[: self.capacity // 2] = merged
        self._nb = self.capacity // 2
        self.span *= 2

    def truncate(self, step: float) -> int:
        """Drop the points after `step` (a rewind superseded them); returns how many were dropped.
        Exact while the series is still held point by point; once buckets have merged, a bucket
        that straddles `step` stays (its x range is cut at `step`)."""
        kept = [p for p in self.recent if p[0] <= step]
        dropped_recent = len(self.recent) - len(kept)
        raw = self.count <= len(self.recent)
        self.recent = deque(kept, maxlen=self.recent.maxlen)
        rows = self._b[: self._nb]
        keep_rows = rows[:, 0] <= step
        dropped_buckets = float(rows[~keep_rows, 7].sum())
        self._b[: int(keep_rows.sum())] = rows[keep_rows]
        self._nb = int(keep_rows.sum())
        if self._nb and self._b[self._nb - 1, 1] > step:
            self._b[self._nb - 1, 1] = step
        o = self._open
        if o is not None:
            if o[0] > step:
                dropped_buckets += o[7]
                self._open = None
            elif o[1] > step:
                o[1] = step
        dropped = dropped_recent if raw else int(dropped_buckets)
        self.count = max(0, self.count - dropped)
        if raw:  # the buckets hold what the recent points hold: rebuild them exactly
            self._b[:] = 0
            self._nb, self.span, self._open, self.count = 0, 1, None, 0
            self.recent = deque(maxlen=self.recent.maxlen)
            for p in kept:
                self.add(*p)
        self.last = self.recent[-1] if self.recent else self._last_bucket()
        return dropped

    def _last_bucket(self) -> tuple[float, float, float, float] | None:
        """The newest bucket as a point (step, epoch, mean value, t): `last` once no raw point is left."""
        row = self._open if self._open is not None else (self._b[self._nb - 1] if self._nb else None)
        if row is None:
            return None
        n = float(row[7])
        return float(row[1]), float(row[2]) / n, float(row[6]) / n, float(row[3])

    @property
    def stored_points(self) -> int:
        """What this series holds in memory: buckets plus the full-resolution tail."""
        return self._nb + (self._open is not None) + len(self.recent)

    def _columns(self, x: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """x, ymin, ymax, ysum, count per stored unit (raw points when they are all still held)."""
        if self.count <= len(self.recent):
            pts = np.asarray(self.recent, dtype=np.float64).reshape(-1, 4)
            xs = pts[:, 0] if x == "step" else pts[:, 3] if x == "time" else pts[:, 1]
            ys = pts[:, 2]
            return xs, ys, ys, ys, np.ones_like(ys)
        rows = self._b[: self._nb]
        if self._open is not None:
            rows = np.vstack([rows, np.asarray(self._open)[None, :]])
        n = rows[:, 7]
        # x by time: a bucket's last point's wall time (the buckets keep no first one).
        xs = (rows[:, 0] + rows[:, 1]) / 2 if x == "step" else rows[:, 3] if x == "time" else rows[:, 2] / n
        return xs, rows[:, 4], rows[:, 5], rows[:, 6], n

    def view(self, width: int, x: str = "step", smoothing: float = 0.0,
             log_y: bool = False) -> tuple[list[float], list[float]]:
        if self.count == 0:
            return [], []
        if x not in ("step", "epoch", "time"):
            raise ValueError("x must be 'step', 'epoch' or 'time' (wall time, unix seconds)")
        width = max(1, int(width))
        xs, ymin, ymax, ysum, n = self._columns(x)
        if x == "epoch":
            keep = np.isfinite(xs)
            xs, ymin, ymax, ysum, n = xs[keep], ymin[keep], ymax[keep], ysum[keep], n[keep]
            if not len(xs):
                return [], []
        smoothing = min(max(float(smoothing), 0.0), 0.99)
        if smoothing > 0:
            ys = _ema(ysum / n, n, smoothing)
            ymin = ymax = ys
            ysum, n = ys.copy(), np.ones_like(ys)
        if len(xs) > width:
            starts = (np.arange(width) * len(xs)) // width
            starts = np.unique(starts)
            ends = np.append(starts[1:], len(xs))
            first_x, last_x = xs[starts], xs[ends - 1]
            gmin = np.minimum.reduceat(ymin, starts)
            gmax = np.maximum.reduceat(ymax, starts)
            if smoothing > 0:
                # A smoothed curve has no spikes to keep: one point per group.
                out_x = (first_x + last_x) / 2
                out_y = np.add.reduceat(ysum, starts) / np.add.reduceat(n, starts)
            else:
                # Min and max of each group, in x order, so the envelope keeps every spike.
                out_x = np.column_stack([first_x, last_x]).ravel()
                out_y = np.column_stack([gmin, gmax]).ravel()
        elif smoothing > 0 or np.array_equal(ymin, ymax):
            out_x, out_y = xs, ysum / n
        else:
            out_x = np.column_stack([xs, xs]).ravel()
            out_y = np.column_stack([ymin, ymax]).ravel()
        if log_y:
            keep = out_y > 0
            out_x, out_y = out_x[keep], np.log10(out_y[keep])
        return out_x.tolist(), out_y.tolist()


def _ema(means: np.ndarray, counts: np.ndarray, alpha: float) -> np.ndarray:
    """Debiased EMA (TensorBoard-style) where a bucket of c points weighs like c raw points,
    so the curve looks the same before and after the buckets merge."""
    out = np.empty_like(means)
    acc = 0.0
    weight = 0.0
    for i in range(len(means)):
        decay = alpha ** counts[i]
        acc = acc * decay + means[i] * (1.0 - decay)
        weight = weight * decay + (1.0 - decay)
        out[i] = acc / weight
    return out


def _order(key: Key) -> tuple:
    split, name = key
    split_rank = {"train": 0, "val": 1}.get(split, 2)
    name_rank = 0 if name == "loss" else 1 if name.startswith("loss/") else 2
    return (name_rank, split_rank, split, name)


class SeriesStore:
    """Every metric series of a run, keyed by (split, name)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, recent: int = DEFAULT_RECENT,
                 max_series: int = MAX_SERIES):
        self.capacity = capacity
        self.recent = recent
        self.max_series = max_series
        self.series: dict[Key, Series] = {}
        self.dropped_series = 0
        self.last_step: float | None = None
        self.last_epoch: float | None = None

    def add(self, split: str, name: str, step: float, value: float, epoch: float | None = None,
            t: float = 0.0) -> None:
        key = (split, name)
        s = self.series.get(key)
        if s is None:
            if len(self.series) >= self.max_series:
                self.dropped_series += 1
                return
            s = self.series[key] = Series(self.capacity, self.recent)
        s.add(float(step), math.nan if epoch is None else float(epoch), value, t)

    def add_events(self, events: Iterable[Event | dict[str, Any]]) -> int:
        """Consume metric events and rewinds (other kinds are ignored), typed as the feed yields
        them (training.rundir.records; a dict is parsed first); returns the points added plus
        those a rewind dropped (non-zero: the plot has changed). A metric's values are its
        `numbers` (traindeck.numbers: NaN counted, not plotted); a point without a step follows
        the last one."""
        added = 0
        for e in events:
            if isinstance(e, dict):
                e = parse_event(e)
            if type(e) is not MetricEvent:
                if type(e) is LogEvent and e.control == "rewind" and e.to_step is not None:
                    added += self.truncate(e.to_step)
                continue
            numbers = e.numbers
            if numbers is None:  # "values" is no object
                continue
            split, epoch = e.split, e.epoch
            step = e.step
            if step is None:
                step = (self.last_step or 0) + 1
            self.last_step = step
            if epoch is not None:
                self.last_epoch = epoch
            t = e.t or 0.0
            # self.add per value, with the point's floats made once per event (the hot path).
            x, x_epoch = float(step), math.nan if epoch is None else float(epoch)
            series = self.series
            for name, value in numbers.items():
                added += 1
                s = series.get((split, name))
                if s is None:
                    if len(series) >= self.max_series:
                        self.dropped_series += 1
                        continue
                    s = series[(split, name)] = Series(self.capacity, self.recent)
                s.add(x, x_epoch, value, t)
        return added

    def truncate(self, step: float) -> int:
        """A rewind to `step`: every series drops its points after it; returns how many."""
        if self.last_step is not None and self.last_step > step:
            self.last_step = step
        return sum(s.truncate(step) for s in self.series.values())

    def names(self) -> list[Key]:
        return sorted(self.series, key=_order)

    def __contains__(self, key: Key) -> bool:
        return key in self.series

    def get(self, key: Key) -> Series | None:
        return self.series.get(key)

    def last(self, key: Key) -> tuple[float, float, float, float] | None:
        s = self.series.get(key)
        return s.last if s else None

    @property
    def stored_points(self) -> int:
        return sum(s.stored_points for s in self.series.values())

    def view(self, key: Key, width: int, x: str = "step", smoothing: float = 0.0,
             log_y: bool = False) -> tuple[list[float], list[float]]:
        s = self.series.get(key)
        if s is None:
            return [], []
        return s.view(width, x=x, smoothing=smoothing, log_y=log_y)
